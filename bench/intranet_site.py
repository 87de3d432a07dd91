"""An intranet site on loopback for the web sources' tests and bench_sources: pages with
ETag and Last-Modified (answering 304 to conditional requests), a sitemap, robots.txt, an
optional required header, and counts of the bodies it sent."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Page:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    modified: float = 1_700_000_000.0

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


@dataclass
class IntranetSite:
    """Pages by path; `gone` paths answer 410, any other unknown path 404."""

    pages: dict[str, Page] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    robots: str = "User-agent: *\nDisallow: /private/\n"
    required_header: tuple[str, str] | None = None
    page_bodies_sent: int = 0
    not_modified: int = 0
    requests: int = 0
    down: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def html(self, path: str, title: str, text: str, links: tuple[str, ...] = ()) -> None:
        anchors = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
        body = (
            f"<!doctype html><html><head><title>{title}</title></head><body><main>"
            f"<h1>{title}</h1><p>{text}</p><ul>{anchors}</ul></main></body></html>"
        )
        self.pages[path] = Page(body.encode("utf-8"))

    def sitemap(self) -> bytes:
        urls = "".join(
            f"<url><loc>{self.url}{path}</loc></url>"
            for path in sorted(self.pages)
            if path not in ("/sitemap.xml",)
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
        ).encode()

    def reset_counts(self) -> None:
        with self._lock:
            self.page_bodies_sent = self.not_modified = self.requests = 0

    def start(self) -> IntranetSite:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                site._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
        if self.down:
            request.send_error(503)
            return
        if self.required_header is not None:
            name, value = self.required_header
            if request.headers.get(name) != value:
                request.send_error(401)
                return
        path = request.path.split("?", 1)[0]
        if path == "/robots.txt":
            self._send(request, Page(self.robots.encode(), "text/plain"), count=False)
        elif path == "/sitemap.xml":
            self._send(request, Page(self.sitemap(), "application/xml"), count=False)
        elif path in self.pages:
            self._send(request, self.pages[path], count=True)
        elif path in self.gone:
            request.send_error(410)
        else:
            request.send_error(404)

    def _send(self, request: BaseHTTPRequestHandler, page: Page, *, count: bool) -> None:
        if request.headers.get("If-None-Match") == page.etag:
            with self._lock:
                self.not_modified += 1
            request.send_response(304)
            request.send_header("ETag", page.etag)
            request.end_headers()
            return
        request.send_response(200)
        request.send_header("Content-Type", page.content_type)
        request.send_header("Content-Length", str(len(page.body)))
        request.send_header("ETag", page.etag)
        request.send_header("Last-Modified", formatdate(page.modified, usegmt=True))
        request.end_headers()
        request.wfile.write(page.body)
        if count:
            with self._lock:
                self.page_bodies_sent += 1
