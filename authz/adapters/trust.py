"""Who may ask for a decision: a peer inside ``AUTHZ_TRUSTED_PROXIES`` and, when
``AUTHZ_PROXY_SECRET`` is set, carrying that secret — the same gate for the WSGI doors
(``X-Authz-Proxy-Secret`` header) and the gRPC server (``x-authz-proxy-secret``
metadata). Anything else is a 403 ``untrusted_proxy`` before the request is read.
"""

from __future__ import annotations

import hmac
from functools import lru_cache

from authz.config import Settings
from authz.decision import Decision, Reason
from authz.request import IPAddress, parse_ip

SECRET_HEADER = "HTTP_X_AUTHZ_PROXY_SECRET"  # noqa: S105 — a header name, not a secret


def refusal(settings: Settings, peer: IPAddress | None, secret: str | None,
            carrier: str = "X-Authz-Proxy-Secret") -> Decision | None:
    """The deny for an untrusted caller, or None for a trusted one.

    ``secret`` is what the caller presented ("" for nothing), or None to check the
    network only (scrapers and probes do not carry the proxy secret); ``carrier`` names
    the header or metadata it came in, for the detail."""
    if peer not in settings.trusted:
        return Decision.deny(403, Reason.UNTRUSTED_PROXY, f"peer {peer} is not a trusted proxy")
    if secret is not None and settings.proxy_secret is not None and not hmac.compare_digest(
            secret.encode(), settings.proxy_secret.encode()):
        return Decision.deny(403, Reason.UNTRUSTED_PROXY, f"missing or wrong {carrier}")
    return None


@lru_cache(maxsize=1024)
def _peer(remote_addr: str | None) -> IPAddress | None:
    return parse_ip(remote_addr)


def check_peer(settings: Settings, environ: dict, secret: bool = True) -> tuple[IPAddress | None, Decision | None]:
    """Return (peer address, None) for a trusted WSGI caller, else (peer, deny decision).

    ``secret=False`` checks the network only (``/metrics`` and ``/readyz``)."""
    peer = _peer(environ.get("REMOTE_ADDR"))
    return peer, refusal(settings, peer, environ.get(SECRET_HEADER, "") if secret else None)
