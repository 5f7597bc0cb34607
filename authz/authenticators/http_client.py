"""Small, bounded HTTP for talking to identity providers (JWKS, introspection).

Every call has a total deadline — connect, headers and body together, not per read,
so an upstream that drips a byte a second cannot hold a worker — and a response size
limit, never follows redirects (the configured URL is the one that was checked to be
https), and goes direct to loopback hosts even when a proxy is configured in the
environment.

``Upstream`` keeps one upstream's failures apart from everything else: one fetch in
flight at a time (single flight), and while it fails, at most one attempt per
``RETRY_SECONDS``, made in the background so that no request waits on it.
"""

from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

from authz import background

USER_AGENT = "authz/0.1"
RETRY_SECONDS = 1.0
log = logging.getLogger("authz.upstream")


class FetchError(Exception):
    """The upstream could not be reached or gave an unusable answer."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise FetchError(f"refusing redirect ({code}) to {newurl}")


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline: each read may wait only for what is left."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline
        self._raw = sock.makefile("rb", buffering=0)  # counts as a user of the socket, as http.client expects

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete answer before the deadline")
        self._sock.settimeout(remaining)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """The connected socket as http.client sees it: its reader obeys the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def _with_deadline(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
    class Connection(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, deadline: float, **kwargs) -> None:
            self._deadline = deadline
            super().__init__(*args, **kwargs)

        def connect(self) -> None:
            self.timeout = max(self._deadline - time.monotonic(), 0.001)
            super().connect()
            self.sock = _DeadlineSocket(self.sock, self._deadline)  # type: ignore[assignment]

    return Connection


_HTTP = _with_deadline(http.client.HTTPConnection)
_HTTPS = _with_deadline(http.client.HTTPSConnection)


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTP, deadline=self.deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__(context=ssl.create_default_context())
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPS, deadline=self.deadline), req, context=self._context)


def _opener(direct: bool, deadline: float) -> urllib.request.OpenerDirector:
    handlers = [_NoRedirect(), _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline)]
    if direct:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


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
    deadline = time.monotonic() + timeout
    opener = _opener(is_loopback(urlsplit(url).hostname), deadline)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(max_bytes + 1)
            status, reply_headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        body = exc.read(max_bytes + 1) if exc.fp else b""
        status, reply_headers = exc.code, exc.headers
    except FetchError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise FetchError(f"no complete answer within {timeout:g} s") from None
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
    if len(body) > max_bytes:
        raise FetchError(f"answer larger than {max_bytes} bytes")
    return Reply(status, reply_headers, body)


class Upstream:
    """Single flight and retry pacing for one upstream (a JWKS URL, an introspection
    endpoint), per process.

    ``claim()`` grants the right to fetch now — refused while a fetch is in flight or,
    after a failure, until ``retry`` seconds have passed — and ``done()`` returns it.
    While the upstream fails, callers that hold no usable answer are refused at once
    (``failing``) and the next attempt runs in the background (``probe``): a request
    pays the deadline only on the first failure of an episode. Each episode is logged
    once when it begins and once when it ends.
    """

    def __init__(self, label: str, retry: float = RETRY_SECONDS) -> None:
        self.label = label
        self.retry = retry
        self.failures = 0
        self.attempts = 0
        self._next_attempt = 0.0
        self._inflight: threading.Event | None = None
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def claim(self) -> bool:
        with self._lock:
            if self._inflight is not None or time.monotonic() < self._next_attempt:
                return False
            self._inflight = threading.Event()
            self._next_attempt = time.monotonic() + self.retry  # holds even if done() is late
            self.attempts += 1
            return True

    def done(self, error: str | None) -> None:
        with self._lock:
            event, self._inflight = self._inflight, None
            failures_before = self.failures
            if error is None:
                self.failures, self._next_attempt = 0, 0.0
            else:
                self.failures += 1
                self._next_attempt = time.monotonic() + self.retry
        if event is not None:
            event.set()
        if error is not None and failures_before == 0:
            log.warning("%s failed: %s; requests that need it are denied (upstream_unavailable) "
                        "unless a usable cached answer exists; retrying at most every %g s in the background",
                        self.label, error, self.retry)
        elif error is None and failures_before:
            log.warning("%s answers again (after %d failed attempts)", self.label, failures_before)

    def wait(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the fetch in flight, if any."""
        event = self._inflight
        if event is not None:
            event.wait(timeout)

    def probe(self, attempt: Callable[[], None]) -> None:
        """Run ``attempt`` (which must call ``done``) in the background, if a claim is granted."""
        if self.claim():
            background.start(f"authz-fetch {self.label}", attempt)
