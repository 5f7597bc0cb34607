"""Signed API requests (RFC 9421 HTTP Message Signatures) for ``api_key`` authenticators
with ``"signatures": "required"``: a key is accepted only with a fresh signature, made
with the material it was created with, over the request the door saw.

A stolen API key alone is then useless, and a captured request cannot be sent again
(``nonce``), later (``created``), elsewhere (``@target-uri``) or as another method.
``SignatureVerifier.check`` holds the ``Signature-Input`` / ``Signature`` pair to:

1. both headers present, within ``MAX_INPUT_BYTES`` / ``MAX_SIGNATURE_BYTES``, each a
   structured-field Dictionary (RFC 8941, parsed by ``http_sf``) of at most
   ``MAX_LABELS`` members, no label twice;
2. exactly one signature whose ``keyid`` is the key's public id (``key_…``, as ``authz
   keys list`` shows it): signatures by other keys (a proxy's, say) are ignored, two
   by this key refused as ambiguous;
3. its parameters: ``created`` (an Integer) no older than ``max_age`` and no further
   ahead than ``leeway``; ``nonce`` a String of 1 to ``MAX_NONCE_LENGTH`` characters;
   ``alg``, when given, the key's own (``hmac-sha256`` or ``ed25519``); ``expires``,
   when given, not past; nothing else but ``keyid`` and ``tag``;
4. what it covers (at most ``MAX_COMPONENTS``): ``@method``, and ``@target-uri`` or
   both ``@path`` and ``@authority`` (and ``@query`` when the request has a query:
   else it could be changed on the way); a method override header
   (``X-HTTP-Method-Override``…) whenever the request has one; ``content-digest``
   (the whole field, not one member of it) whenever the request has that header.
   authz never sees the body: a covered digest binds the signature to the digest,
   and the upstream (or the proxy) must still check the body against it;
5. the signature itself, over the signature base (RFC 9421 §2.5) built by the
   ``http-message-signatures`` library from the request as the door described it;
6. last, the nonce unused: the store records it (per key) until the signature would
   be too old anyway, insert-or-fail across every worker and replica (the replay
   guard DPoP uses, in its own scope).

**Why the library.** ``http-message-signatures`` (3.x) implements RFC 9421 as published
(not draft-cavage): derived components, structured fields through ``http-sf``,
``hmac-sha256`` and ``ed25519``; the signature base is then written once, by the library.
It fits the hot path, at a price measured here (bench/bench.py, "Signed API key"): one
verify costs the Ed25519 check (about 110 µs) plus 120 to 200 µs of the library's
Python (it parses both headers again and re-serialises ``@signature-params``), so a
signed request's ``decide()`` is about 450 µs at p50 against 200 µs for a DPoP proof,
the nonce's store write included in both. It is handed only the headers the signature
covers and, when a request carries several signatures, a ``Signature-Input`` /
``Signature`` pair narrowed to the chosen label (it refuses several without a ``tag``).

**The URL signed.** The door reports scheme, host, port and path; authz normalises the
path (percent-decoded once). ``@target-uri`` and ``@path`` are rebuilt from that: the
path re-encoded with upper-case escapes for any character outside RFC 3986's
unreserved, sub-delims, ``:`` and ``@``, the host in lower case, the port only when it
is not the scheme's default, the query as sent. A client that signs the URL it sends
in that usual form (what ``requests`` or ``httpx`` send) matches.

**Asking for a signature** (RFC 9421 §5.1): a refusal for a signature reason carries
``accept_signature`` (the ``Accept-Signature`` field) naming what a signature by the
presented key must cover (``@method``, ``@target-uri``, a method override and
``content-digest`` when the request has them), its ``keyid``, ``alg`` and ``created``.
Not ``nonce``: §5.1 makes its value the nonce the signer must use, and authz wants the
client's own fresh one (said in the denial's detail and the docs), never a given one.

Neither the key, its secret nor the signature is ever logged; details name the key id.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from dataclasses import dataclass
from urllib.parse import quote

import http_sf
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from authz.credentials import request_signing
from authz.request import METHOD_OVERRIDE_HEADERS, CheckRequest
from authz.store.interface import CredentialReads
from authz.store.records import ApiKeyMatch

SIGNATURE_INPUT = "signature-input"
SIGNATURE = "signature"
_SHOWN = {SIGNATURE_INPUT: "Signature-Input", SIGNATURE: "Signature"}
CONTENT_DIGEST = "content-digest"
MAX_INPUT_BYTES = 2048
MAX_SIGNATURE_BYTES = 2048  # an Ed25519 signature is 90 bytes as a Byte Sequence
MAX_LABELS = 8
MAX_COMPONENTS = 16
MAX_NONCE_LENGTH = 128
DEFAULT_MAX_AGE = 60.0
DEFAULT_LEEWAY = 5.0
REPLAY_SCOPE = "http-sig"  # the store's nonce scope (DPoP's is "dpop")
DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/-._~!$&'()*+,;=:@"
_ALGORITHMS = {request_signing.HMAC_SHA256: algorithms.HMAC_SHA256, request_signing.ED25519: algorithms.ED25519}
_PARAMETERS = frozenset(("alg", "created", "expires", "keyid", "nonce", "tag"))
# What the Accept-Signature of RFC 9421 §5.1 would ask for: told in the denial's detail.
REQUIRED = '("@method" "@target-uri");created;nonce;keyid'
ACCEPT_LABEL = "sig1"  # the label Accept-Signature asks for (any label is taken)


class SignatureError(ValueError):
    """The request's signature is missing or refused (the denial's detail)."""


def accept_signature(request: CheckRequest, key_id: str, alg: str) -> str:
    """The ``Accept-Signature`` value (RFC 9421 §5.1, serialised by ``http_sf``) asking
    for the signature this request lacked: by the key it presented (``key_id``, ``alg``),
    over what ``coverage_problem`` requires of this very request, with ``created``."""
    components = ["@method", "@target-uri"]
    components += [name for name in METHOD_OVERRIDE_HEADERS if name in request.headers]
    if CONTENT_DIGEST in request.headers:
        components.append(CONTENT_DIGEST)
    members = [(name, {}) for name in components]
    return http_sf.ser({ACCEPT_LABEL: (members, {"keyid": key_id, "alg": alg, "created": True})})


def target_uri(request: CheckRequest) -> str:
    """``@target-uri`` of the request as the door described it (see the module docstring)."""
    default = DEFAULT_PORTS.get(request.scheme)
    authority = request.host if request.port is None or request.port == default \
        else f"{request.host}:{request.port}"
    query = f"?{request.query}" if request.query else ""
    return f"{request.scheme}://{authority}{quote(request.path, safe=_PATH_SAFE)}{query}"


@dataclass(slots=True)
class MessageView:
    """The request as the library reads a message: method, absolute URL, headers."""

    method: str
    url: str
    headers: dict[str, str]


def message_view(request: CheckRequest, fields: tuple[str, ...] = (), **replaced: str) -> MessageView:
    """The request with only the header ``fields`` named (lower case) that it has, plus
    ``replaced`` ones (``signature_input=…``: underscores for dashes)."""
    headers = {name: value for name in fields if (value := request.headers.get(name)) is not None}
    headers.update({name.replace("_", "-"): value for name, value in replaced.items()})
    return MessageView(request.method, target_uri(request), headers)


class _TheKey(HTTPSignatureKeyResolver):
    """The one key a signature may name: the API key's own."""

    def __init__(self, key_id: str, key: object) -> None:
        self.key_id, self.key = key_id, key

    def resolve_public_key(self, key_id: str):
        return self.key if key_id == self.key_id else None

    def resolve_private_key(self, key_id: str):
        raise NotImplementedError("authz only verifies")


def _dictionary(request: CheckRequest, name: str, limit: int) -> dict:
    value = request.headers.get(name)
    if value is None:
        raise SignatureError("request is not signed (RFC 9421 Signature-Input and Signature headers); "
                             f"sign {REQUIRED} with the API key's id as keyid")
    shown = _SHOWN[name]
    if len(value) > limit:
        raise SignatureError(f"{shown} header longer than {limit} bytes")

    def duplicate(key: str, context: str) -> None:
        raise ValueError(f"label {key[:20]!r} appears twice")

    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary", on_duplicate_key=duplicate)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise SignatureError(f"malformed {shown} header (not a structured-field Dictionary)") from None
    if len(parsed) > MAX_LABELS:
        raise SignatureError(f"more than {MAX_LABELS} signatures")
    return parsed


@dataclass(frozen=True, slots=True)
class Chosen:
    """The one signature made by the key: its label, covered components (name, the
    names of its parameters), parameters, and the pair narrowed to it, serialised."""

    label: str
    components: tuple[tuple[str, tuple[str, ...]], ...]
    params: dict
    signature_input: str
    signature: str


def choose(request: CheckRequest, key_id: str) -> Chosen:
    """The request's one signature whose ``keyid`` is ``key_id``, well-formed."""
    inputs = _dictionary(request, SIGNATURE_INPUT, MAX_INPUT_BYTES)
    signatures = _dictionary(request, SIGNATURE, MAX_SIGNATURE_BYTES)
    mine = [label for label, (_, params) in inputs.items() if params.get("keyid") == key_id]
    if not mine:
        raise SignatureError(f"no signature with keyid \"{key_id}\" (the API key's id)")
    if len(mine) > 1:
        raise SignatureError(f"more than one signature with keyid \"{key_id}\": ambiguous")
    label = mine[0]
    members, params = inputs[label]
    if not isinstance(members, list) or not all(isinstance(name, str) for name, _ in members):
        raise SignatureError(f"Signature-Input {label[:20]!r} is not a list of component names")
    if len(members) > MAX_COMPONENTS:
        raise SignatureError(f"signature covers more than {MAX_COMPONENTS} components")
    if label not in signatures or not isinstance(signatures[label][0], bytes):
        raise SignatureError(f"no Signature (a byte sequence) for label {label[:20]!r}")
    components = tuple((name, tuple(item_params)) for name, item_params in members)
    if len(inputs) == 1 and len(signatures) == 1:  # the usual case: the headers are already the pair
        return Chosen(label, components, params, request.headers[SIGNATURE_INPUT], request.headers[SIGNATURE])
    return Chosen(label, components, params, http_sf.ser({label: inputs[label]}),
                  http_sf.ser({label: signatures[label]}))


def coverage_problem(request: CheckRequest, components: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    """Why what the signature covers is not enough, or None. Derived components count
    bare only (``"@method";req`` is not the request's method); ``content-digest`` whole
    (bare, ``;sf``, ``;bs``), not one member of it (``;key="sha-256"``: a second digest
    added beside it, of another body, would not be covered)."""
    covered = {name for name, params in components
               if not params or (not name.startswith("@") and "key" not in params)}
    if "@method" not in covered:
        return "signature does not cover @method"
    if "@target-uri" not in covered and not {"@path", "@authority"} <= covered:
        return "signature covers neither @target-uri nor @path with @authority"
    if request.query and "@target-uri" not in covered and "@query" not in covered:
        return "request has a query the signature does not cover (@query, or @target-uri)"
    # A framework that honours an override runs another method than the one signed.
    override = next((name for name in METHOD_OVERRIDE_HEADERS if name in request.headers and name not in covered), None)
    if override is not None:
        return f"request has a method override ({override}) the signature does not cover"
    if CONTENT_DIGEST in request.headers and CONTENT_DIGEST not in covered:
        return "request has a Content-Digest the signature does not cover"
    return None


class SignatureVerifier:
    """Checks the RFC 9421 signature a request carries for the API key it presents."""

    def __init__(self, max_age: float, leeway: float, store: CredentialReads) -> None:
        self.max_age = max_age
        self.leeway = leeway
        self.store = store

    def check(self, request: CheckRequest, match: ApiKeyMatch) -> None:
        """Raise ``SignatureError`` unless the request is signed by ``match``'s material
        as the module docstring says, its nonce unused. Reached once per request: the
        request's other readings reuse the verdict (the nonce is spent once)."""
        request.once(("http-sig", match.id), lambda: self._check(request, match), SignatureError)

    def _check(self, request: CheckRequest, match: ApiKeyMatch) -> None:
        if match.signing_alg is None or match.signing_key is None:
            raise SignatureError(f"API key {match.id} has no signing key, and this authenticator takes signed "
                                 "requests only (authz keys create --signing-public-key / --signing hmac-sha256)")
        chosen = choose(request, match.id)
        params = chosen.params
        unknown = set(params) - _PARAMETERS
        if unknown:
            raise SignatureError(f"unknown signature parameter {sorted(unknown)[0][:20]!r}")
        created, nonce, alg = params.get("created"), params.get("nonce"), params.get("alg")
        if type(created) is not int:
            raise SignatureError("signature has no created time (an Integer)")
        if not isinstance(nonce, str) or not 0 < len(nonce) <= MAX_NONCE_LENGTH:
            raise SignatureError(f"signature has no nonce (a String of 1 to {MAX_NONCE_LENGTH} characters)")
        if alg is not None and alg != match.signing_alg:
            raise SignatureError(f"signature alg {str(alg)[:20]!r} is not the key's ({match.signing_alg})")
        problem = coverage_problem(request, chosen.components)
        if problem is not None:
            raise SignatureError(problem)
        now = time.time()
        if created > now + self.leeway:
            raise SignatureError("signature created time is in the future")
        if created < now - self.max_age:
            raise SignatureError(f"signature is too old (created more than {self.max_age:g}s ago)")
        self._verify(request, match, chosen)
        replay_id = hashlib.sha256(f"{match.id}\n{nonce}".encode()).hexdigest()
        if not self.store.nonces.first_use(REPLAY_SCOPE, replay_id, created + self.max_age + self.leeway):
            raise SignatureError("signature replayed (its nonce was used before)")

    def _verify(self, request: CheckRequest, match: ApiKeyMatch, chosen: Chosen) -> None:
        verify_signature(request, chosen, match.id, match.signing_alg, match.signing_key,  # type: ignore[arg-type]
                         self.max_age, self.leeway)


def verify_signature(request: CheckRequest, chosen: Chosen, key_id: str, alg: str, stored: str, max_age: float,
                     leeway: float) -> None:
    """``chosen``'s signature over the base the library builds from ``request``, by the
    key ``stored`` (as ``authz.credentials.request_signing`` keeps it); any failure is a
    ``SignatureError``. Coverage, window and nonce are the caller's (``SignatureVerifier``)."""
    fields = tuple(name for name, _ in chosen.components if not name.startswith("@"))
    view = message_view(request, fields, signature_input=chosen.signature_input, signature=chosen.signature)
    try:
        key = request_signing.verification_key(alg, stored)
        verifier = HTTPMessageVerifier(signature_algorithm=_ALGORITHMS[alg], key_resolver=_TheKey(key_id, key))
        verifier.max_clock_skew = datetime.timedelta(seconds=leeway)
        verifier.verify(view, max_age=datetime.timedelta(seconds=max_age))
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        reason = str(exc)[:200] or "the signature does not match"
        raise SignatureError(f"signature verification failed: {reason}") from None
    except Exception:  # a malformed stored key, an unexpected input: deny, never crash
        raise SignatureError("signature verification failed") from None
