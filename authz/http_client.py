"""Small, bounded HTTP for talking to identity providers (JWKS, introspection).

Every call has a timeout and a response size limit, never follows redirects (the
configured URL is the one that was checked to be https), and goes direct to loopback
hosts even when a proxy is configured in the environment.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

USER_AGENT = "authz/0.1"


class FetchError(Exception):
    """The upstream could not be reached or gave an unusable answer."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise FetchError(f"refusing redirect ({code}) to {newurl}")


_PROXIED = urllib.request.build_opener(_NoRedirect())
_DIRECT = urllib.request.build_opener(_NoRedirect(), urllib.request.ProxyHandler({}))


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be used for keys or introspection, or None."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return None
    return "must be an https:// URL (http:// only for loopback hosts)"


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise FetchError(f"answer is not JSON: {exc}") from None


def fetch(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 2.0, max_bytes: int = 1 << 20) -> Reply:
    """GET (or POST when ``data`` is given) ``url``; raises FetchError on any failure."""
    if url_problem(url):
        raise FetchError(f"refusing to fetch {url}: {url_problem(url)}")
    request = urllib.request.Request(  # noqa: S310 — scheme checked just above
        url, data=data, headers={"User-Agent": USER_AGENT, **(headers or {})})
    opener = _DIRECT if is_loopback(urlsplit(url).hostname) else _PROXIED
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(max_bytes + 1)
            status, reply_headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        body = exc.read(max_bytes + 1) if exc.fp else b""
        status, reply_headers = exc.code, exc.headers
    except FetchError:
        raise
    except (OSError, ValueError) as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
    if len(body) > max_bytes:
        raise FetchError(f"answer larger than {max_bytes} bytes")
    return Reply(status, reply_headers, body)
