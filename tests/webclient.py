"""A tiny cookie-keeping HTTP client for the web mailbox tests (stdlib only, real sockets)."""

from __future__ import annotations

import http.client
import re
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from shared.weblogin import create_login_secret


class WebClient:
    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.headers = headers or {}

    def request(self, method: str, path: str, form: dict[str, Any] | list[tuple[str, str]] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        status, headers_out, raw = self.fetch(method, path, form, headers)
        return status, headers_out, raw.decode("utf-8", "replace")

    def fetch(self, method: str, path: str, form: dict[str, Any] | list[tuple[str, str]] | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """The response body as bytes (attachments)."""
        sent = {**self.headers, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form, doseq=True)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    jar: SimpleCookie = SimpleCookie()
                    jar.load(value)
                    for key, morsel in jar.items():
                        if morsel["max-age"] == "0" or morsel.value == "":
                            self.cookies.pop(key, None)
                        else:
                            self.cookies[key] = morsel.value
            headers_out: dict[str, str] = {}
            for k, v in response.getheaders():
                headers_out[k.lower()] = headers_out[k.lower()] + "\n" + v if k.lower() in headers_out else v
            return response.status, headers_out, text
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], str]:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, Any] | list[tuple[str, str]],
             **kw: Any) -> tuple[int, dict[str, str], str]:
        return self.request("POST", path, form=form, **kw)

    def csrf(self) -> str:
        return self.cookies.get("mail_csrf", "")

    def login(self, state_dir: Path) -> None:
        secret = create_login_secret(state_dir)
        status, headers, _ = self.get(f"/mail/login?secret={secret}")
        assert status == 303, status
        assert urlsplit(headers["location"]).path == "/mail"


def live_region(page: str) -> str:
    found = re.search(r'<div id="live">(.*)</div></main>', page, re.S)
    assert found, page[:500]
    return found.group(1)


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
