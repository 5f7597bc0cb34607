"""Client certificates as each proxy forwards them (docs/proxies.md, "Client certificates"), read into
``ForwardedCert`` values. Adapters call ``from_headers`` only for trusted peers.

- ``nginx``: ``X-SSL-Client-Cert`` (ingress-nginx: ``ssl-client-cert``), URL-encoded PEM
  (``$ssl_client_escaped_cert``) or the deprecated tab-continued PEM, always with
  ``X-SSL-Client-Verify`` (``ssl-client-verify``) beside it: ``NONE`` alone means no
  certificate (absent), a certificate without the verify header is refused;
- ``xfcc``: Envoy's ``X-Forwarded-Client-Cert``, the rightmost element only: ``Cert``,
  ``Chain`` (URL-encoded PEM), or ``Hash`` alone (fingerprint pinning);
- ``traefik``: ``X-Forwarded-Tls-Client-Cert``, base64 DER per certificate, leaf first,
  joined by ``,``;
- ``rfc9440``: ``Client-Cert: :b64:`` and ``Client-Cert-Chain: :b64:, :b64:``.

A header that is present but unreadable yields a ``ForwardedCert`` with ``error`` set:
the ``mtls`` authenticator refuses it rather than treating it as absent.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

from authz.credentials.x509 import MAX_CHAIN, Unreadable, b64_der, make, pem_chain
from authz.request import ForwardedCert, Headers

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _nginx(headers: Headers) -> ForwardedCert | None:
    """nginx sets the certificate and ``$ssl_client_verify`` side by side; a certificate
    header without the verify header was not set by the door (a client can copy any
    service's public certificate into a header), so it is refused, never believed."""
    value = headers.get("x-ssl-client-cert") or headers.get("ssl-client-cert")
    verify = headers.get("x-ssl-client-verify") or headers.get("ssl-client-verify")
    verify = verify.strip() if verify else None
    if not value:
        return ForwardedCert("nginx", proxy_verify=verify) if verify else None
    if not verify:
        raise Unreadable("a certificate header without nginx's X-SSL-Client-Verify beside it: "
                         "the door did not set it")
    text = unquote(value) if "%" in value else value
    return make("nginx", pem_chain(text), verify)


def split_quoted(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (backslash escapes inside)."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise Unreadable("unbalanced quotes")
    parts.append("".join(current))
    return parts


def _unquote_value(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_xfcc(value: str) -> dict[str, list[str]]:
    """The rightmost XFCC element (the one our trusted hop appended), keys lower-cased."""
    element = split_quoted(value, ",")[-1]
    fields: dict[str, list[str]] = {}
    for pair in split_quoted(element, ";"):
        if not pair.strip():
            continue
        key, eq, raw = pair.partition("=")
        if not eq:
            raise Unreadable(f"XFCC pair without '=': {key.strip()[:20]!r}")
        fields.setdefault(key.strip().lower(), []).append(_unquote_value(raw))
    return fields


def _xfcc(headers: Headers) -> ForwardedCert | None:
    value = headers.get("x-forwarded-client-cert")
    if not value:
        return None
    fields = parse_xfcc(value)
    if "chain" in fields:
        chain = pem_chain(unquote(fields["chain"][0]))
        if "cert" in fields and pem_chain(unquote(fields["cert"][0]))[0] != chain[0]:
            raise Unreadable("XFCC Cert and Chain disagree on the leaf")
        return make("xfcc", chain)
    if "cert" in fields:
        return make("xfcc", pem_chain(unquote(fields["cert"][0])))
    if "hash" in fields and _HEX64.fullmatch(fields["hash"][0]):
        return ForwardedCert("xfcc", (), fields["hash"][0].lower())
    raise Unreadable("XFCC element carries neither Cert, Chain nor a SHA-256 Hash")


def _traefik(headers: Headers) -> ForwardedCert | None:
    value = headers.get("x-forwarded-tls-client-cert")
    if not value:
        return None
    parts = [p for p in unquote(value).split(",") if p.strip()]
    if not parts or len(parts) > MAX_CHAIN:
        raise Unreadable("empty or too long certificate list")
    return make("traefik", tuple(b64_der(p) for p in parts))


def _sf_binary(item: str) -> bytes:
    item = item.strip()
    if len(item) < 2 or item[0] != ":" or item[-1] != ":":
        raise Unreadable("not a structured-field byte sequence (:base64:)")
    return b64_der(item[1:-1])


def _rfc9440(headers: Headers) -> ForwardedCert | None:
    value = headers.get("client-cert")
    if not value:
        return None
    chain = [_sf_binary(value)]
    extra = headers.get("client-cert-chain")
    if extra:
        chain.extend(_sf_binary(item) for item in extra.split(","))
    if len(chain) > MAX_CHAIN:
        raise Unreadable(f"more than {MAX_CHAIN} certificates")
    return make("rfc9440", tuple(chain))


_READERS = {"nginx": _nginx, "xfcc": _xfcc, "traefik": _traefik, "rfc9440": _rfc9440}


_CERT_HEADERS = ("x-ssl-client-cert", "ssl-client-cert", "x-ssl-client-verify", "ssl-client-verify",
                 "x-forwarded-client-cert", "x-forwarded-tls-client-cert", "client-cert", "client-cert-chain")


def from_headers(headers: Headers) -> tuple[ForwardedCert, ...]:
    """Every client certificate the request's headers describe, one per source."""
    values = headers.values_of(_CERT_HEADERS)
    if not any(values):
        return ()
    return _parse(values)


@lru_cache(maxsize=4096)
def _parse(values: tuple[str | None, ...]) -> tuple[ForwardedCert, ...]:
    """Parsing is pure, and a client sends the same certificate again and again:
    remember the last few thousand header sets (certificates are public data)."""
    headers = Headers((name, value) for name, value in zip(_CERT_HEADERS, values, strict=True) if value)
    found = []
    for source, read in _READERS.items():
        try:
            cert = read(headers)
        except Unreadable as exc:
            cert = ForwardedCert(source, error=str(exc))
        if cert is not None:
            found.append(cert)
    return tuple(found)
