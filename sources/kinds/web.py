"""An intranet website: start URLs and sitemaps, the same site only, robots.txt obeyed.

Every page is asked for conditionally (If-None-Match / If-Modified-Since with what the last
run got), so a page that did not change answers 304 and costs no body; its links are kept
from the last time it was read, so the crawl goes on through it. Sitemaps and robots.txt are
asked for the same way. A page that answers 404 or 410 is deleted; one that answers an error
is kept and counted failed.
"""

from __future__ import annotations

import mimetypes
import posixpath
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx
from bs4 import BeautifulSoup
from django.conf import settings

from sources.kinds.base import FoundItem, KnownItem, SourceUnreachable
from sources.options import OptionError, option_bool, option_list, option_number, secret_read

USER_AGENT = "KnowledgeAssistant-Sync"
GONE_STATUSES = (404, 410)
HTML_TYPES = ("text/html", "application/xhtml+xml")
SITEMAP_DEPTH = 3


def auth_header(options: Mapping[str, Any]) -> dict[str, str]:
    """The header a secret file (or variable) holds: `Name: value`, or a bare Authorization."""
    secret = secret_read(options, "header")
    if not secret:
        return {}
    name, colon, value = secret.partition(":")
    if colon and name.strip() and " " not in name.strip():
        return {name.strip(): value.strip()}
    return {"Authorization": secret}


class WebReader:
    def __init__(self, location: str, options: Mapping[str, Any], *, state: Mapping[str, Any]):
        self.start_urls = [line.strip() for line in location.splitlines() if line.strip()]
        self.start_urls += option_list(options, "start_urls")
        self.sitemaps = option_list(options, "sitemap")
        if not self.start_urls and not self.sitemaps:
            raise OptionError("A web source needs a start URL (--url) or a sitemap option.")
        first = urlsplit((self.start_urls or self.sitemaps)[0])
        if first.scheme not in ("http", "https") or not first.netloc:
            raise OptionError(f"“{(self.start_urls or self.sitemaps)[0]}” is not an http(s) URL.")
        self.site = (first.scheme, first.netloc)
        self.include = option_list(options, "include")
        self.exclude = option_list(options, "exclude")
        self.max_pages = int(option_number(options, "max_pages", 10_000))
        self.obey_robots = option_bool(options, "robots", True)
        self.options = options
        self._state: dict[str, Any] = {"cached": dict(state.get("cached", {}))}
        self.body_downloads = 0

    def state(self) -> dict[str, Any]:
        return self._state

    # Scope

    def _in_scope(self, url: str) -> bool:
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self.site:
            return False
        path = parts.path or "/"
        if self.include and not any(fnmatchcase(path, pattern) for pattern in self.include):
            return False
        return not any(fnmatchcase(path, pattern) for pattern in self.exclude)

    # Crawl

    def items(self, known: Mapping[str, KnownItem]) -> Iterator[FoundItem]:
        headers = {"User-Agent": USER_AGENT, **auth_header(self.options)}
        with httpx.Client(
            headers=headers, timeout=settings.SOURCE_WEB_TIMEOUT_S, follow_redirects=False
        ) as client:
            self.client = client
            robots = self._robots()
            queue: deque[str] = deque(self.start_urls)
            for sitemap in self.sitemaps:
                queue.extend(self._sitemap_urls(sitemap, depth=0))
            # Pages found before but linked from nowhere now are asked for too: only the
            # site may say that they are gone.
            queue.extend(known)
            visited: set[str] = set()
            first = True
            while queue and len(visited) < self.max_pages:
                url = urldefrag(queue.popleft())[0]
                if url in visited or not self._in_scope(url):
                    continue
                visited.add(url)
                if robots is not None and not robots.can_fetch(USER_AGENT, url):
                    continue
                found, links = self._page(url, known.get(url), required=first)
                first = False
                if found is not None:
                    yield found
                queue.extend(link for link in links if link not in visited)
            unreached = (urldefrag(url)[0] for url in queue)
            if any(url not in visited and self._in_scope(url) for url in unreached):
                # Pages not reached are not gone: nothing this run did not ask for is deleted.
                yield FoundItem(
                    key="",
                    error=f"The crawl stopped at max_pages ({self.max_pages}); "
                    "pages beyond it were neither read nor deleted.",
                    keeps_prefix="",
                )

    def _page(
        self, url: str, known: KnownItem | None, *, required: bool
    ) -> tuple[FoundItem | None, list[str]]:
        conditional = {}
        if known is not None:
            if known.extra.get("etag"):
                conditional["If-None-Match"] = known.extra["etag"]
            if known.extra.get("last_modified"):
                conditional["If-Modified-Since"] = known.extra["last_modified"]
        try:
            with self.client.stream("GET", url, headers=conditional) as response:
                if response.status_code == 304 and known is not None:
                    links = list(known.extra.get("links", []))
                    return FoundItem(
                        key=url, signature=known.signature, extra=dict(known.extra)
                    ), links
                if response.status_code in GONE_STATUSES:
                    return FoundItem(key=url, gone=True), []
                if response.is_redirect:
                    target = urljoin(url, response.headers.get("Location", ""))
                    return None, [target]
                if response.status_code != 200:
                    reason = f"{url} answered HTTP {response.status_code}."
                    if required:
                        raise SourceUnreachable(f"The site cannot be read: {reason}")
                    return FoundItem(key=url, error=reason), []
                body = self._body(response)
        except httpx.HTTPError as error:
            reason = f"{url} cannot be reached: {error.__class__.__name__}: {error}"
            if required:
                raise SourceUnreachable(f"The site cannot be reached: {reason}") from None
            return FoundItem(key=url, error=reason), []
        if body is None:
            return FoundItem(key=url, error=f"{url} is larger than the upload limit."), []
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        links = (
            self._links(url, body) if content_type in ("text/html", "application/xhtml+xml") else []
        )
        extra = {
            "etag": response.headers.get("ETag", ""),
            "last_modified": response.headers.get("Last-Modified", ""),
            "links": links,
        }
        return (
            FoundItem(
                key=url,
                name=_page_name(url, content_type),
                source_path=url,
                signature=extra["etag"] or extra["last_modified"],
                data=body,
                extra=extra,
            ),
            links,
        )

    def _body(self, response: httpx.Response) -> bytes | None:
        self.body_downloads += 1
        chunks = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > settings.UPLOAD_MAX_BYTES:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _links(self, url: str, body: bytes) -> list[str]:
        soup = BeautifulSoup(body, "html.parser")
        links = []
        for anchor in soup.find_all("a", href=True):
            target = urldefrag(urljoin(url, str(anchor["href"])))[0]
            if self._in_scope(target):
                links.append(target)
        return list(dict.fromkeys(links))

    # Sitemaps and robots.txt, asked for conditionally too

    def _cached_get(self, url: str, *, required: bool) -> str | None:
        """The text at `url`, from the last run's copy when the site answers 304."""
        cached = self._state["cached"].get(url, {})
        conditional = {}
        if cached.get("etag"):
            conditional["If-None-Match"] = cached["etag"]
        if cached.get("last_modified"):
            conditional["If-Modified-Since"] = cached["last_modified"]
        try:
            response = self.client.get(url, headers=conditional)
        except httpx.HTTPError as error:
            raise SourceUnreachable(
                f"The site cannot be reached: {url}: {error.__class__.__name__}: {error}"
            ) from None
        if response.status_code == 304 and "text" in cached:
            return str(cached["text"])
        if response.status_code != 200:
            if required or response.status_code >= 500:
                raise SourceUnreachable(
                    f"The site cannot be read: {url} answered HTTP {response.status_code}."
                )
            self._state["cached"].pop(url, None)
            return None
        self._state["cached"][url] = {
            "etag": response.headers.get("ETag", ""),
            "last_modified": response.headers.get("Last-Modified", ""),
            "text": response.text,
        }
        return response.text

    def _robots(self) -> RobotFileParser | None:
        if not self.obey_robots:
            return None
        text = self._cached_get(f"{self.site[0]}://{self.site[1]}/robots.txt", required=False)
        if text is None:
            return None
        robots = RobotFileParser()
        robots.parse(text.splitlines())
        return robots

    def _sitemap_urls(self, url: str, *, depth: int) -> list[str]:
        text = self._cached_get(url, required=depth == 0)
        if text is None or depth > SITEMAP_DEPTH:
            return []
        try:
            root = ElementTree.fromstring(text.encode("utf-8"))
        except ElementTree.ParseError as error:
            raise SourceUnreachable(f"The sitemap {url} is not valid XML: {error}.") from None
        locations = [
            (element.text or "").strip()
            for element in root.iter()
            if element.tag.rsplit("}", 1)[-1] == "loc"
        ]
        if root.tag.rsplit("}", 1)[-1] == "sitemapindex":
            urls: list[str] = []
            for inner in locations:
                urls.extend(self._sitemap_urls(inner, depth=depth + 1))
            return urls
        return [location for location in locations if location]


def _page_name(url: str, content_type: str) -> str:
    """A file name for the parser: the URL's last segment, with the type's extension."""
    path = urlsplit(url).path
    name = posixpath.basename(path.rstrip("/")) or "index"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:150] or "page"
    if content_type in HTML_TYPES:
        return name if name.lower().endswith((".html", ".htm")) else f"{name}.html"
    if "." not in name:
        name += mimetypes.guess_extension(content_type) or ".txt"
    return name
