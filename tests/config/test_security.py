"""Security settings end to end: check --deploy, headers and cookies behind TLS, lockouts over HTTP.

The TLS tests run the real server with the production settings a cluster uses, reached the way
the TLS proxy reaches it (plain HTTP with X-Forwarded-Proto and X-Forwarded-For, from the trusted
proxy's address). The standalone server trusts no proxy: forwarding headers sent straight to it
change nothing. Login throttling in process is tests/accounts/test_login_throttle.py.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from tests.ingestion.test_standalone import ROOT, Server

ADMIN_PASSWORD = "a-long-test-password"
LOCKOUT_MESSAGE = "Too many failed log-ins to this account from your address"
EXPECTED_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
}


def production_env(data_dir: Path) -> dict[str, str]:
    """What deploy/ sets for the app: cluster mode behind the TLS proxy, a real secret key."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        ASSISTANT_DATA_DIR=str(data_dir),
        ASSISTANT_MODE="cluster",
        DEBUG="False",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="assistant.example.internal",
        CSRF_TRUSTED_ORIGINS="https://assistant.example.internal",
        SECURE_BEHIND_TLS="1",
        # The TLS proxy's address, whose X-Forwarded-For is believed; the tests' proxy is here.
        TRUSTED_PROXIES="127.0.0.1",
    )
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no issues" in checked.stdout


# ---- The server behind the TLS proxy -----------------------------------------------------------


class BehindProxy:
    """Requests as the TLS proxy forwards them; Secure cookies are carried by hand, since a
    cookie jar rightly refuses to send them over the plain HTTP hop the proxy uses.

    With `scheme="http"` they are what anyone on the server's own host can send straight to
    it, forwarding headers and all.
    """

    def __init__(self, server: Server, forwarded_for: str, *, scheme: str = "https") -> None:
        self.server = server
        self.cookies: dict[str, str] = {}
        self.headers = {
            "X-Forwarded-Proto": scheme,
            "X-Forwarded-For": forwarded_for,
            "Origin": server.url.replace("http://", f"{scheme}://"),
        }

    def request(self, method: str, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        headers = {**self.headers, **({"Cookie": cookie} if cookie else {})}
        response = httpx.request(
            method, f"{self.server.url}{path}", headers=headers, data=data, timeout=30
        )
        for name, morsel in set_cookies(response).items():
            self.cookies[name] = morsel.value
        return response

    def log_in(self, username: str, password: str) -> httpx.Response:
        form = self.request("GET", "/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token is not None, form.text
        return self.request(
            "POST",
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
        )


def set_cookies(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("tls")
    server = Server(folder / "var")
    server.env.update(
        {
            key: value
            for key, value in production_env(folder / "var").items()
            if key in ("SECRET_KEY", "SECURE_BEHIND_TLS", "TRUSTED_PROXIES", "DEBUG")
        }
    )
    server.env["LOGIN_FAILURES_LIMIT"] = "3"
    server.start()
    yield server
    server.stop()


def test_plain_http_is_sent_to_https_but_probes_are_answered(tls_server: Server) -> None:
    page = httpx.get(f"{tls_server.url}/accounts/login/", timeout=30)
    assert page.status_code == 301
    assert page.headers["location"] == f"https://127.0.0.1:{tls_server.port}/accounts/login/"
    for probe in ("/healthz", "/readyz"):
        answered = httpx.get(f"{tls_server.url}{probe}", timeout=30)
        assert answered.status_code in (200, 503), (probe, answered.status_code)
        assert "location" not in answered.headers
    assert httpx.get(f"{tls_server.url}/healthz", timeout=30).status_code == 200


def test_pages_over_tls_carry_the_security_headers(tls_server: Server) -> None:
    page = BehindProxy(tls_server, "203.0.113.20").request("GET", "/accounts/login/")
    assert page.status_code == 200
    assert page.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    policy = {
        directive.split()[0]: " ".join(directive.split()[1:])
        for directive in page.headers["content-security-policy"].split(";")
        if directive.strip()
    }
    for directive, sources in EXPECTED_POLICY.items():
        assert policy[directive] == sources, (directive, policy)
    assert "unsafe-inline" not in page.headers["content-security-policy"]


def test_session_and_csrf_cookies_are_secure_http_only_and_same_site(tls_server: Server) -> None:
    browser = BehindProxy(tls_server, "203.0.113.21")
    csrf = set_cookies(browser.request("GET", "/accounts/login/"))["csrftoken"]
    assert csrf["secure"]
    assert csrf["samesite"] == "Lax"

    logged_in = browser.log_in("admin", ADMIN_PASSWORD)
    assert logged_in.status_code == 302, logged_in.text
    session = set_cookies(logged_in)["sessionid"]
    assert session["secure"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"
    assert session["max-age"] == str(12 * 3600)
    assert browser.request("GET", "/").status_code == 200


def add_user(server: Server, username: str, password: str) -> None:
    created = subprocess.run(
        [sys.executable, "manage.py", "adduser", username, "--password-stdin"],
        cwd=ROOT,
        env=server.env,
        input=f"{password}\n",
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr


def test_a_locked_out_login_over_http_shows_why_and_refuses_the_right_password(
    tls_server: Server,
) -> None:
    add_user(tls_server, "carol", "carols-long-password")
    # The left X-Forwarded-For entry is whatever the client sent; the proxy appends the truth.
    attacker = BehindProxy(tls_server, "198.51.100.9, 203.0.113.30")
    for _ in range(2):
        refused = attacker.log_in("carol", "wrong-password")
        assert refused.status_code == 200
        assert "did not match" in refused.text
    locked = attacker.log_in("carol", "wrong-password")
    assert locked.status_code == 429
    assert LOCKOUT_MESSAGE in locked.text

    attacker.headers["X-Forwarded-For"] = "198.51.100.10, 203.0.113.30"
    still_locked = attacker.log_in("carol", "carols-long-password")
    assert still_locked.status_code == 429
    assert LOCKOUT_MESSAGE in still_locked.text
    assert "sessionid" not in attacker.cookies

    elsewhere = BehindProxy(tls_server, "203.0.113.31").log_in("carol", "carols-long-password")
    assert elsewhere.status_code == 302


def test_clients_forwarded_by_a_trusted_proxy_are_counted_each_by_their_own_address(
    tls_server: Server,
) -> None:
    add_user(tls_server, "frank", "franks-long-password")
    first = BehindProxy(tls_server, "203.0.113.40")
    second = BehindProxy(tls_server, "203.0.113.41")
    for client in (first, second, first, second):
        refused = client.log_in("frank", "wrong-password")
        assert refused.status_code == 200, "one client's failures were counted against another"
        assert "did not match" in refused.text

    # A left-most entry of the client's own making is not the address that is counted.
    first.headers["X-Forwarded-For"] = "203.0.113.99, 203.0.113.40"
    assert first.log_in("frank", "wrong-password").status_code == 429
    first.headers["X-Forwarded-For"] = "203.0.113.41, 203.0.113.40"
    assert first.log_in("frank", "franks-long-password").status_code == 429

    assert second.log_in("frank", "franks-long-password").status_code == 302


# ---- Forwarding headers from addresses that are not trusted proxies ---------------------------


@pytest.fixture(scope="module")
def standalone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`manage.py serve` with the defaults of a bare checkout: no proxy is trusted."""
    server = Server(tmp_path_factory.mktemp("standalone") / "var")
    server.env.pop("TRUSTED_PROXIES", None)
    server.env.pop("FORWARDED_ALLOW_IPS", None)
    server.env["LOGIN_FAILURES_LIMIT"] = "3"
    server.start()
    yield server
    server.stop()


def test_a_new_x_forwarded_for_per_attempt_does_not_escape_the_lockout(
    standalone_server: Server,
) -> None:
    add_user(standalone_server, "dave", "daves-long-password")
    for attempt in range(2):
        refused = BehindProxy(standalone_server, f"198.51.100.{attempt}", scheme="http").log_in(
            "dave", "wrong-password"
        )
        assert refused.status_code == 200
        assert "did not match" in refused.text
    locked = BehindProxy(standalone_server, "198.51.100.2", scheme="http").log_in(
        "dave", "wrong-password"
    )
    assert locked.status_code == 429
    assert LOCKOUT_MESSAGE in locked.text

    right_password = BehindProxy(standalone_server, "198.51.100.3", scheme="http")
    assert right_password.log_in("dave", "daves-long-password").status_code == 429
    assert "sessionid" not in right_password.cookies
