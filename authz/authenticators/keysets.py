"""Where a ``jwt`` authenticator gets its verification keys.

Keys come only from the operator's configuration — a JWKS file or URL, a PEM public
key, or an HMAC secret in the environment — never from a token (``jku``, ``x5u``,
``jwk``, ``x5c`` are ignored; ``kid`` is only a lookup key). Keys unfit for
signature verification are dropped with a warning: ``use: enc``, an ``alg`` not
configured, a key below the bar of ``authz.credentials.key_strength`` (RSA under 2048 bits or not
byte-aligned, ROCA, curves other than P-256/384/521), a curve that does not match its
algorithm, HMAC secrets shorter than the hash. Keys sharing a ``kid`` are ambiguous
and all of them are dropped with a warning; a keyset mixing symmetric (``oct``) and
asymmetric keys is refused as a whole (a public key must never be confusable with an
HMAC secret).

``RemoteKeySet`` caches a JWKS for the TTL of its ``Cache-Control: max-age``
(default five minutes), refreshes in the background before it expires, keeps using
the known keys for ``max_stale`` seconds while the IdP is unreachable and not a
moment longer, and refetches for an unknown ``kid`` at most once per
``refetch_interval`` so forged kids cannot turn into a request storm. No request
waits on the network while usable keys exist; one fetch is in flight at a time
(single flight, ``http_client.Upstream``), each bounded by a total deadline
(``timeout``); while the IdP fails, requests with no usable key are denied at once
(``upstream_unavailable``) and a background attempt is made at most once a second.
An unknown ``kid`` is ``credentials_invalid`` only when the most recent fetch
succeeded without it; when the most recent attempt failed, authz cannot know the token
is bad and answers ``upstream_unavailable`` (``KeysUnavailable``) — on every worker
alike, since every worker whose interval has passed tries again itself.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from authz.authenticators.http_client import FetchError, Upstream, fetch
from authz.credentials.key_strength import EC_CURVES, MIN_RSA_BITS, key_problem

log = logging.getLogger("authz.jwks")

HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}  # minimum secret bytes
RSA_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
EC_ALGORITHMS = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
EDDSA = {"EdDSA"}
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS | set(EC_ALGORITHMS) | EDDSA
_MAX_STALE_CEILING = 7 * 86400


class KeysUnavailable(Exception):
    """No usable key material: the JWKS endpoint is unreachable and known keys are too old."""


@dataclass(frozen=True)
class VerificationKey:
    """A key a token's signature is checked with: an IdP's public key or a shared secret
    (authz's own keys, which sign the X-Auth-Token, live in the store)."""

    kid: str | None
    key: object
    algorithms: frozenset[str]


def _algorithms_for(key: object, wanted: Iterable[str]) -> set[str]:
    """The configured algorithms this key may verify."""
    wanted = set(wanted)
    if isinstance(key, bytes):
        return {a for a in wanted & set(HMAC_ALGORITHMS) if len(key) >= HMAC_ALGORITHMS[a]}
    if key_problem(key) is not None:
        return set()
    if isinstance(key, rsa.RSAPublicKey):
        return wanted & RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = EC_CURVES.get(key.curve.name)
        return {a for a in wanted & set(EC_ALGORITHMS) if EC_ALGORITHMS[a] == curve}
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return wanted & EDDSA
    return set()


def parse_jwks(document: object, algorithms: Iterable[str], source: str) -> dict[str | None, list[VerificationKey]]:
    """Usable verification keys of a JWKS, by kid; unfit keys are logged and skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS (an object with a 'keys' list)")
    algorithms = set(algorithms)
    kinds = {jwk.get("kty") == "oct" for jwk in document["keys"] if isinstance(jwk, dict)}
    if len(kinds) > 1:
        # Wycheproof jws_mixedSymmetryKeyset: which key a token meets would depend on its
        # header alone; refuse the set rather than guess (RFC 8725 §3.1).
        raise ValueError("the JWKS mixes symmetric (oct) and asymmetric keys; refused")
    found: dict[str | None, list[VerificationKey]] = {}
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        label = f"{source} key {kid or '#' + str(index)}"
        if jwk.get("use", "sig") != "sig":
            log.warning("%s ignored: use is %r, not 'sig'", label, jwk.get("use"))
            continue
        if "key_ops" in jwk and "verify" not in (jwk.get("key_ops") or []):
            log.warning("%s ignored: key_ops does not allow 'verify'", label)
            continue
        alg = jwk.get("alg")
        if alg is not None and alg not in algorithms:
            log.warning("%s ignored: alg %r is not among the configured algorithms", label, alg)
            continue
        if jwk.get("kty") == "oct" and not algorithms & set(HMAC_ALGORITHMS):
            log.warning("%s ignored: a symmetric key where asymmetric algorithms are configured", label)
            continue
        try:
            key = jwt.PyJWK(jwk).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            log.warning("%s ignored: %s", label, exc)
            continue
        if isinstance(key, _PRIVATE):
            log.warning("%s: a JWKS should not carry private keys; using its public half", label)
            key = key.public_key()
        problem = key_problem(key) if not isinstance(key, bytes) else None
        if problem is not None:
            log.warning("%s ignored: %s", label, problem)
            continue
        usable = _algorithms_for(key, {alg} if alg else algorithms)
        if not usable:
            log.warning("%s ignored: unfit for %s (RSA < %d bits, wrong curve or short secret)",
                        label, "/".join(sorted(algorithms)), MIN_RSA_BITS)
            continue
        found.setdefault(kid, []).append(VerificationKey(kid, key, frozenset(usable)))
    for kid in [k for k, keys in found.items() if k is not None and len(keys) > 1]:
        # RFC 7517 §4.5: kids should be distinct; two keys under one kid leave the choice
        # to whichever verifies first. Ambiguous keys are no keys (Wycheproof DuplicateKid).
        log.warning("%s: %d keys share kid %r; all of them ignored", source, len(found[kid]), kid)
        del found[kid]
    return found


_PRIVATE = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


class StaticKeySet:
    """Keys fixed at policy load: a JWKS file, a PEM public key or an HMAC secret."""

    def __init__(self, keys: dict[str | None, list[VerificationKey]]) -> None:
        self.keys = keys
        self.all = [k for ks in keys.values() for k in ks]

    @classmethod
    def from_jwks_file(cls, path, algorithms, source: str) -> StaticKeySet:
        return cls(parse_jwks(json.loads(path.read_text()), algorithms, source))

    @classmethod
    def from_pem(cls, data: bytes, algorithms) -> StaticKeySet:
        key = load_pem_public_key(data)
        problem = key_problem(key)
        if problem is not None:
            raise ValueError(f"the public key is refused: {problem}")
        usable = _algorithms_for(key, algorithms)
        if not usable:
            raise ValueError("the public key fits none of the configured algorithms "
                             f"(RSA needs ≥ {MIN_RSA_BITS} bits, EC keys their curve)")
        return cls({None: [VerificationKey(None, key, frozenset(usable))]})

    @classmethod
    def from_secret(cls, secret: bytes, algorithms) -> StaticKeySet:
        usable = _algorithms_for(secret, algorithms)
        if usable != set(algorithms):
            need = max(HMAC_ALGORITHMS[a] for a in algorithms)
            raise ValueError(f"the secret is {len(secret)} bytes; {'/'.join(sorted(algorithms))} "
                             f"needs at least {need}")
        return cls({None: [VerificationKey(None, secret, frozenset(usable))]})

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        keys = self.keys.get(kid) if kid is not None else None
        if keys is None:
            # No kid, or a kid we do not know: single-key sources still verify.
            keys = self.keys.get(None, []) if kid is not None else self.all
        return [k for k in keys if alg in k.algorithms]

    def knows(self, kid: str | None) -> bool:
        return kid in self.keys or None in self.keys


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.I)


def ttl_from(cache_control: str | None, default: float) -> float:
    if not cache_control:
        return default
    if re.search(r"no-store|no-cache", cache_control, re.I):
        return 1.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else default


class RemoteKeySet:
    """A JWKS fetched from ``jwks_uri`` (see the module docstring for the rules)."""

    def __init__(self, url: str, algorithms, source: str, *, timeout: float = 2.0,
                 default_ttl: float = 300.0, max_ttl: float = 86400.0, max_stale: float = 600.0,
                 refetch_interval: float = 30.0) -> None:
        self.url = url
        self.algorithms = frozenset(algorithms)
        self.source = source
        self.timeout = timeout
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.max_stale = min(max_stale, _MAX_STALE_CEILING)
        self.refetch_interval = refetch_interval
        self.keys: dict[str | None, list[VerificationKey]] | None = None
        self.fetched_at = 0.0
        self.expires_at = 0.0
        self.last_attempt = float("-inf")
        self.fetches = 0
        self._lock = threading.Lock()
        self.upstream = Upstream(f"{source}: JWKS fetch from {url}")

    # -- fetching -------------------------------------------------------------
    # The network is never touched with ``_lock`` held: the lock guards only the swap of
    # the key map, so requests keep verifying with known keys while a fetch hangs.
    def _fetch_claimed(self) -> bool:
        """One fetch, after ``upstream.claim()``; on success replaces the keys."""
        self.last_attempt = time.monotonic()
        self.fetches += 1
        error = None
        try:
            reply = fetch(self.url, headers={"Accept": "application/json"}, timeout=self.timeout)
            if reply.status != 200:
                raise FetchError(f"HTTP {reply.status}")
            keys = parse_jwks(reply.json(), self.algorithms, self.source)
            ttl = min(max(ttl_from(reply.headers.get("Cache-Control"), self.default_ttl), 1.0), self.max_ttl)
            now = time.monotonic()
            with self._lock:
                self.keys, self.fetched_at, self.expires_at = keys, now, now + ttl
            return True
        except (FetchError, ValueError) as exc:
            error = str(exc)
            return False
        finally:
            self.upstream.done(error)

    def _fetch_now(self) -> bool:
        """Fetch in this thread, or wait (at most the timeout) for the fetch in flight."""
        if self.upstream.claim():
            return self._fetch_claimed()
        self.upstream.wait(self.timeout)
        return False

    def _refresh_in_background(self) -> None:
        self.upstream.probe(self._fetch_claimed)

    # -- lookup ---------------------------------------------------------------
    def _usable(self, now: float) -> dict[str | None, list[VerificationKey]] | None:
        keys = self.keys
        return keys if keys is not None and now < self.expires_at + self.max_stale else None

    def _current(self) -> dict[str | None, list[VerificationKey]]:
        now = time.monotonic()
        keys = self._usable(now)
        if keys is not None:
            # Fresh, or stale within the grace the operator allowed: serve; refresh in
            # the background near expiry and after it (paced while failing).
            if now >= self.expires_at - (self.expires_at - self.fetched_at) * 0.1:
                self._refresh_in_background()
            return keys
        if self.upstream.failing:
            # Known to be down: deny at once, let a background attempt find it back.
            self._refresh_in_background()
            raise KeysUnavailable(f"JWKS {self.url} unreachable and no usable cached keys")
        # Nothing usable yet: fetch now (single flight; the others wait for it).
        self._fetch_now()
        keys = self._usable(time.monotonic())
        if keys is None:
            raise KeysUnavailable(f"JWKS {self.url} unreachable and no usable cached keys")
        return keys

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        keys = self._current()
        found = keys.get(kid, []) if kid is not None else [k for ks in keys.values() for k in ks]
        if not found and kid is not None:
            # An unknown kid may be a key the IdP just rotated in: look once per interval.
            if self.upstream.failing:
                self._refresh_in_background()  # paced; finds the IdP back without a request waiting
            elif time.monotonic() - self.last_attempt >= self.refetch_interval and self._fetch_now():
                found = self.keys.get(kid, []) if self.keys else []
            if not found and (self.upstream.failing or self.last_attempt > self.fetched_at):
                # The latest attempt failed: the IdP may well have this key; do not make
                # the client throw a good token away (500, never 401).
                raise KeysUnavailable(f"JWKS {self.url} unreachable; kid {kid[:64]!r} not among the cached keys")
        return [k for k in found if alg in k.algorithms]

    def knows(self, kid: str | None) -> bool:
        keys = self.keys or {}
        return kid in keys if kid is not None else bool(keys)
