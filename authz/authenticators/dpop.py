"""DPoP (RFC 9449): a token bound to a key is good only with a fresh proof signed by it.

A DPoP-bound access token carries ``cnf.jkt``, the RFC 7638 thumbprint of the client's
public key, and arrives as ``Authorization: DPoP <token>`` with a ``DPoP`` header: a
JWT the client signed for this one request, its public key in the ``jwk`` header. A
stolen token is then useless without the private key, and a captured proof is useless
for another request (``htm``, ``htu``), later (``iat``), again (``jti``) or with another
token (``ath``). ``ProofVerifier.check`` holds a proof to RFC 9449 §4.3, in its order:

1. one ``DPoP`` header, one compact JWS of bounded size (strict base64url, ``crit``
   refused: ``jose.parse``);
2. ``typ`` ``dpop+jwt``; ``alg`` from the configured asymmetric list (never ``none`` or
   HS*); ``jwk`` a public EC, OKP or RSA key (any private member refused) that meets the
   key-strength rules and fits ``alg`` (curve, key type);
3. the signature, by PyJWT's algorithm objects (``jose.signature_valid``);
4. ``jti``, ``htm``, ``htu``, ``iat`` present; ``htm`` the method as sent; ``htu`` the
   URL the door saw (scheme, host, port, path; query and fragment ignored), both sides
   normalised per RFC 3986 §6.2.2-6.2.3 (case, percent-decoding once, default port,
   empty path as ``/``), an ``htu`` the request firewall would refuse never matching;
5. ``iat`` no older than ``dpop_max_age`` and no further ahead than ``leeway``;
6. ``ath`` the base64url SHA-256 of the token; the key's thumbprint the token's
   ``cnf.jkt``;
7. with server nonces required, ``nonce`` one this service handed out lately;
8. last, ``jti`` unused: the store records it (per key thumbprint) until the proof
   would be too old anyway, plus ``leeway`` (for replicas' clocks), insert-or-fail
   across every worker and replica.

Server nonces (``DPoP-Nonce``, RFC 9449 §9) are asked for per leaf (``"dpop_nonce":
"required"``): the leaf marks the request (``require_nonce``) before its authenticator
runs, and the proof's ``nonce`` is then checked just before the jti is spent (7.), a
refusal telling ``use_dpop_nonce``; the outcome carries a fresh nonce for the client
either way (``finish``). How nonces are made and checked: ``dpop_nonce.py``. Otherwise
freshness rests on the ``iat`` window and the replay store. Neither the token nor the
proof is ever logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass

import jwt
from jwt.utils import base64url_encode

from authz.authenticators import jose
from authz.authenticators.dpop_nonce import USE_NONCE, NonceMinter
from authz.authenticators.keysets import _PRIVATE, ASYMMETRIC_ALGORITHMS, _algorithms_for
from authz.credentials.key_strength import key_problem
from authz.decision import Outcome, OutcomeKind, Reason
from authz.request import BadRequest, CheckRequest, host_port, normalise_host, normalise_path, split_absolute
from authz.store.interface import CredentialReads

SCHEME = "DPoP"
HEADER = "dpop"
TYP = "dpop+jwt"
MAX_PROOF_BYTES = 8192  # an RSA-8192 proof is about 3.5 kB
MAX_JTI_LENGTH = 256
DEFAULT_ALGORITHMS = ("ES256", "ES384", "ES512", "EdDSA", "PS256", "RS256")
DEFAULT_MAX_AGE = 60.0
REPLAY_SCOPE = "dpop"  # the store's nonce scope for proof ids
# RFC 7638 §3.2: the members a thumbprint is computed over, per key type (lexical order).
THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
# RFC 7518 §6: members only a private (or symmetric) JWK has.
PRIVATE_MEMBERS = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_CACHED_KEYS = 1024

NONCE_REQUIRED = ("dpop", "nonce required")  # request.memo mark set by a leaf with dpop_nonce
INVALID_PROOF = "invalid_dpop_proof"
INVALID_TOKEN = "invalid_token"  # noqa: S105 — an RFC 6750 error code, not a secret


class ProofError(ValueError):
    """The proof (or its binding to the token) is refused; ``code`` is the RFC 9449
    error the ``DPoP`` challenge carries."""

    def __init__(self, message: str, code: str = INVALID_PROOF) -> None:
        super().__init__(message)
        self.code = code


def b64url(data: bytes) -> str:
    return base64url_encode(data).decode("ascii")


def thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url: the required members only, in lexical
    order, as JSON without whitespace."""
    members = THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise ProofError("DPoP proof jwk is not a public EC, OKP or RSA key")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def token_hash(token: str) -> str:
    """RFC 9449 ``ath``: base64url SHA-256 of the access token's ASCII."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class ProofKey:
    key: object
    jkt: str


def proof_key(header: dict, alg: str) -> ProofKey:
    """The public key a proof's ``jwk`` header carries, checked fit for ``alg``."""
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise ProofError("DPoP proof has no jwk header")
    if not PRIVATE_MEMBERS.isdisjoint(jwk):
        raise ProofError("DPoP proof jwk carries private key material")
    jkt = thumbprint(jwk)
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        raise ProofError("DPoP proof jwk is not a usable key") from None
    if isinstance(key, (*_PRIVATE, bytes)):
        raise ProofError("DPoP proof jwk carries private key material")
    problem = key_problem(key)
    if problem is not None:
        raise ProofError(f"DPoP proof key refused: {problem}")
    if alg not in _algorithms_for(key, {alg}):
        raise ProofError(f"DPoP proof key does not fit alg {alg}")
    return ProofKey(key, jkt)


def htu_matches(htu: str, request: CheckRequest) -> bool:
    """Whether ``htu`` names the URL the door saw: scheme, host, port and path, query
    and fragment ignored, both sides normalised alike (RFC 9449 §4.3, RFC 3986
    §6.2.2-6.2.3). What cannot be read unambiguously never matches."""
    try:
        scheme, authority, rest = split_absolute(htu)
        path = normalise_path(rest.partition("#")[0].partition("?")[0] or "/")
        host = normalise_host(authority)
    except BadRequest:
        return False
    if scheme != request.scheme or host != request.host or path != request.path:
        return False
    port = host_port(authority)  # None for none, and for "host:" (the default, RFC 3986 §3.2.3)
    wanted = request.port if request.port is not None else DEFAULT_PORTS.get(request.scheme)
    return (port if port is not None else DEFAULT_PORTS.get(scheme)) == wanted


def bound_key(claims: dict) -> str | None:
    """The ``cnf.jkt`` a token (or an introspection answer, RFC 9449 §6.2) binds it to;
    ``ValueError`` when it has one that is not a non-empty string."""
    cnf = claims.get("cnf")
    if not isinstance(cnf, dict) or "jkt" not in cnf:
        return None
    if not isinstance(cnf["jkt"], str) or not cnf["jkt"]:
        raise ValueError("token cnf.jkt is not a thumbprint")
    return cnf["jkt"]


def scheme_problem(scheme: str, jkt: str | None, slot: str) -> Outcome | None:
    """RFC 9449 §7: a bound token only with the DPoP scheme, the DPoP scheme only with a
    bound token; the refusal, or None."""
    if jkt is not None and scheme != "dpop":
        return Outcome.invalid(slot, "DPoP-bound token sent as a bearer token (use Authorization: DPoP with a "
                                     "DPoP proof)")
    if scheme == "dpop" and jkt is None:
        return Outcome.invalid(slot, "token sent with the DPoP scheme is not DPoP-bound (no cnf.jkt)")
    return None


def as_dpop_failure(outcome: Outcome, scheme: str) -> Outcome:
    """A token sent with the DPoP scheme that failed is told in the DPoP challenge (§7.1)."""
    if scheme == "dpop" and outcome.kind is OutcomeKind.INVALID and outcome.dpop_error is None:
        return dataclasses.replace(outcome, dpop_error=INVALID_TOKEN)
    return outcome


def require_nonce(request: CheckRequest) -> None:
    """A leaf with ``"dpop_nonce": "required"`` is about to ask its authenticator: proofs
    of this request must carry a server nonce."""
    request.memo[NONCE_REQUIRED] = True


def finish(outcome: Outcome, scheme: str, request: CheckRequest, proofs: ProofVerifier) -> Outcome:
    """The outcome of a token-authenticator as the client must hear it: a DPoP failure in
    the DPoP challenge, and where nonces are required a fresh one to answer with
    (``DPoP-Nonce``, on a refusal as on an allow: RFC 9449 §8.2, §9)."""
    outcome = as_dpop_failure(outcome, scheme)
    if scheme == "dpop" and outcome.kind is not OutcomeKind.ABSENT and request.memo.get(NONCE_REQUIRED):
        outcome = dataclasses.replace(outcome, dpop_nonce=proofs.nonces.current())
    return outcome


class ProofVerifier:
    """Checks the ``DPoP`` proof of a request against the token it came with."""

    def __init__(self, algorithms: list[str], max_age: float, leeway: float, store: CredentialReads) -> None:
        unfit = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if unfit:
            raise ValueError(f"DPoP proofs are signed with asymmetric algorithms only, not {', '.join(unfit)}")
        self.algorithms = tuple(algorithms)
        self.max_age = max_age
        self.leeway = leeway
        self.store = store
        self._keys: dict[bytes, ProofKey] = {}
        self._nonces: NonceMinter | None = None

    @property
    def nonces(self) -> NonceMinter:
        """Server nonces, from the store's signing key (made on first use: a policy
        without ``dpop_nonce`` never needs a signing key)."""
        if self._nonces is None:
            self._nonces = NonceMinter(self.store.signing_keys)  # type: ignore[attr-defined]  (a ServingStore)
        return self._nonces

    def check(self, request: CheckRequest, token: str, bound_to: str) -> None:
        """Raise ``ProofError`` unless the request's proof is valid for ``token``, signed
        by the key whose thumbprint is ``bound_to`` (the token's ``cnf.jkt``), and unused.
        Reached once per request: the request's other readings reuse the verdict."""
        request.once(("dpop", token, bool(request.memo.get(NONCE_REQUIRED))),
                     lambda: self._check(request, token, bound_to), ProofError)

    def problem(self, request: CheckRequest, token: str, bound_to: str, slot: str) -> Outcome | None:
        """``check`` as an outcome: the refusal, with its DPoP error code, or None."""
        try:
            self.check(request, token, bound_to)
        except ProofError as exc:
            return Outcome(OutcomeKind.INVALID, reason=Reason.CREDENTIALS_INVALID, detail=str(exc), slot=slot,
                           dpop_error=exc.code)
        return None

    def _check(self, request: CheckRequest, token: str, bound_to: str) -> None:
        proof = request.headers.get(HEADER)
        if proof is None:
            raise ProofError("no DPoP proof (DPoP header) with a DPoP-bound token")
        proof = proof.strip()
        if "," in proof:  # repeated headers are joined with ", "; a compact JWS has no comma
            raise ProofError("more than one DPoP header")
        if len(proof) > MAX_PROOF_BYTES:
            raise ProofError(f"DPoP proof longer than {MAX_PROOF_BYTES} bytes")
        try:
            jws = jose.parse(proof)
        except jose.TokenError:
            raise ProofError("malformed DPoP proof") from None
        header, claims = jws.header, jws.claims
        if header.get("typ") != TYP:
            raise ProofError(f"DPoP proof typ must be {TYP}")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise ProofError(f"DPoP proof algorithm {str(alg)[:20]!r} is not accepted")
        key = self._key(jws, header, alg)
        if not jose.signature_valid(jws, alg, key.key):
            raise ProofError("DPoP proof signature verification failed")
        jti, htm, htu, iat = (claims.get(name) for name in ("jti", "htm", "htu", "iat"))
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise ProofError("DPoP proof lacks a jti")
        # A JSON NaN compares false with every bound: it would pass the window (below).
        if not isinstance(htm, str) or not isinstance(htu, str) or isinstance(iat, bool) \
                or not isinstance(iat, int | float) or (isinstance(iat, float) and not math.isfinite(iat)):
            raise ProofError("DPoP proof lacks htm, htu or a numeric iat")
        if htm != request.method:
            raise ProofError("DPoP proof is for another method (htm)")
        if not htu_matches(htu, request):
            raise ProofError("DPoP proof is for another URL (htu)")
        now = time.time()
        if iat > now + self.leeway:
            raise ProofError("DPoP proof iat is in the future")
        if iat < now - self.max_age:
            raise ProofError("DPoP proof is too old (iat)")
        if claims.get("ath") != token_hash(token):
            raise ProofError("DPoP proof is for another access token (ath)")
        if key.jkt != bound_to:
            raise ProofError("DPoP proof key is not the key the token is bound to (cnf.jkt)", INVALID_TOKEN)
        if request.memo.get(NONCE_REQUIRED) and not self.nonces.valid(claims.get("nonce")):
            raise ProofError("DPoP proof lacks a current server nonce (nonce)" if "nonce" in claims
                             else "the server requires a nonce in DPoP proofs (nonce)", USE_NONCE)
        replay_id = hashlib.sha256(f"{key.jkt}\n{jti}".encode()).hexdigest()
        # Kept ``leeway`` past the window: a replica whose clock runs ahead (by what the
        # window tolerates) must not purge it while one whose clock is right still takes it.
        if not self.store.nonces.first_use(REPLAY_SCOPE, replay_id, float(iat) + self.max_age + self.leeway):
            raise ProofError("DPoP proof replayed (its jti was used before)")

    def _key(self, jws: jose.CompactJWS, header: dict, alg: str) -> ProofKey:
        """The proof key, remembered per header segment: a client signs every proof
        with the same key, so only the first proof pays for parsing and thumbprinting it."""
        segment = jws.signing_input.partition(b".")[0]
        key = self._keys.get(segment)
        if key is None:
            key = proof_key(header, alg)
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[segment] = key
        return key
