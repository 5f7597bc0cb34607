"""``jwt``: bearer JWTs (RFC 7519), including RFC 9068 JWT access tokens.

Ownership first: a bearer value that is not a JWT, or a JWT whose (unverified)
``iss`` is another issuer, is *absent* for this authenticator, so several issuers
can sit side by side in one ``any``. Everything else it owns is verified in full:
algorithm from the configured list only (``none`` never), key by ``kid`` from the
configured key source only, signature, ``exp`` (required), ``nbf``, ``iat``, ``iss``,
``aud``, ``typ`` and ``required_claims``, with ``leeway``.

A token bound to a key (``cnf.jkt``, RFC 9449 DPoP) is accepted only as
``Authorization: DPoP`` with a valid proof of that key (``authenticators/dpop.py``);
whether a route takes such tokens at all is its leaf's ``dpop`` option.

``token_from`` says where the token may arrive: the ``Authorization`` header (the
default) and/or a cookie (browser sessions). A cookie is sent by the browser with
cross-site requests too, so a cookie token is read only for ``cookie_methods`` (GET,
HEAD, OPTIONS unless the policy says otherwise: CSRF), never beside another credential
in ``Authorization`` (which one would the upstream believe?), and only when no other
cookie parser could read it differently (``authenticators/cookies.py``). A DPoP-bound
token never comes from a cookie: RFC 9449 binds it to ``Authorization: DPoP``.

A verified token is cached per worker (key: a MAC of the whole token; entry: its
claims and the kid that verified it) until it expires, so a repeated token costs no
cryptography; revocation (``jti``), key withdrawal and scope checks still apply on
every request.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from dataclasses import dataclass

from authz.authenticators import dpop, jose
from authz.authenticators.base import AUTHORIZATION, COOKIE, Authenticator, ConfigError, Context, Lint
from authz.authenticators.bearer import SLOT, BearerChallenges, as_tokens, presented_token, token_layers
from authz.authenticators.cache import SecretKeyer
from authz.authenticators.cookies import CookieError, read_cookie
from authz.authenticators.http_client import url_problem
from authz.authenticators.keysets import (
    HMAC_ALGORITHMS,
    KeysUnavailable,
    RemoteKeySet,
    StaticKeySet,
    VerificationKey,
)
from authz.config import environment_secret
from authz.credentials.x509 import thumbprint
from authz.decision import Identity, IdentityKind, Outcome, OutcomeKind, Reason
from authz.request import SAFE_METHODS, CheckRequest

log = logging.getLogger("authz.jwt")
MAX_TOKEN_BYTES = 8192
MAX_KID_LENGTH = 256


@dataclass(slots=True)
class Verified:
    """A verified token's cache entry: what it proves, derived once."""

    claims: dict
    kid: str | None
    expires: float
    identity: Identity | None = None
    also: tuple[Identity, ...] = ()
    jti: str | None = None
    bound_to: str | None = None
    jkt: str | None = None  # RFC 9449 cnf.jkt: the key whose proof must come with the token


def claim_path(claims: dict, path: str):
    """``realm_access.roles`` → claims["realm_access"]["roles"] (Keycloak-style nesting)."""
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class JwtAuthenticator(BearerChallenges, Authenticator):
    type = "jwt"
    file_options = ("jwks_file", "public_key_file")
    slots = (AUTHORIZATION, COOKIE)

    def __init__(self, name: str, config: dict, context: Context) -> None:
        super().__init__(name, config, context)
        self.issuer: str = config["issuer"]
        audience = config["audience"]
        self.audience: list[str] = [audience] if isinstance(audience, str) else list(audience)
        self.algorithms: list[str] = list(config["algorithms"])
        self.leeway = float(config.get("leeway", 30))
        self.required_claims: list[str] = list(config.get("required_claims", []))
        self.typ: str | None = config.get("typ")
        self.scopes_claim: str | None = config.get("scopes_claim")
        self.roles_claim: str | None = config.get("roles_claim")
        self.principal_claim: str = config.get("principal_claim", "sub")
        self.realm: str = config.get("realm", name)
        self.cache = context.cache("jwt")
        # Everything that decides a verification, folded into the cache key.
        self.trust = json.dumps({k: v for k, v in sorted(config.items()) if k != "description"},
                                sort_keys=True, default=str)
        self.keyer = SecretKeyer(self.trust)
        symmetric = set(self.algorithms) & set(HMAC_ALGORITHMS)
        if symmetric and symmetric != set(self.algorithms):
            raise ConfigError("algorithms", "HS* algorithms cannot be mixed with asymmetric ones "
                                            "(a public key would become an HMAC secret)")
        self.keys = self._key_source(config, context, bool(symmetric))
        self.from_header, self.cookie = token_sources(config.get("token_from", [{"header": "Authorization"}]))
        if "cookie_methods" in config and self.cookie is None:
            raise ConfigError("cookie_methods", "cookie_methods goes with a cookie in token_from")
        self.cookie_methods = frozenset(config.get("cookie_methods", SAFE_METHODS))
        self.dpop_algorithms = tuple(config.get("dpop_algorithms", dpop.DEFAULT_ALGORITHMS))
        try:
            self.proofs = dpop.ProofVerifier(list(self.dpop_algorithms),
                                             float(config.get("dpop_max_age", dpop.DEFAULT_MAX_AGE)),
                                             self.leeway, context.store)
        except ValueError as exc:
            raise ConfigError("dpop_algorithms", str(exc)) from None

    def _key_source(self, config: dict, context: Context, symmetric: bool):
        sources = [k for k in ("jwks_file", "jwks_uri", "public_key_file", "secret_env") if k in config]
        if len(sources) != 1:
            raise ConfigError("jwks_uri", "give exactly one of jwks_file, jwks_uri, public_key_file, secret_env")
        source = sources[0]
        if symmetric != (source == "secret_env"):
            raise ConfigError(source, "secret_env goes with HS* algorithms only, and HS* algorithms "
                                      "with secret_env only")
        label = f"authenticator {self.name}"
        try:
            if source == "secret_env":
                value = environment_secret(config["secret_env"])
                if not value:
                    raise ConfigError(source, f"environment variable {config['secret_env']} is not set")
                return StaticKeySet.from_secret(value.encode(), self.algorithms)
            if source == "jwks_uri":
                problem = url_problem(config["jwks_uri"])
                if problem:
                    raise ConfigError(source, problem)
                return RemoteKeySet(
                    config["jwks_uri"], self.algorithms, label, timeout=float(config.get("timeout", 2)),
                    max_stale=float(config.get("max_stale", 600)),
                    refetch_interval=float(config.get("refetch_interval", 30)),
                )
            path = context.base_dir / config[source]
            if source == "jwks_file":
                keys = StaticKeySet.from_jwks_file(path, self.algorithms, label)
                if not keys.all:
                    raise ConfigError(source, f"{path} has no key usable with {', '.join(self.algorithms)}")
                return keys
            return StaticKeySet.from_pem(path.read_bytes(), self.algorithms)
        except OSError as exc:
            raise ConfigError(source, f"cannot read {exc.filename}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(source, str(exc)) from None

    @classmethod
    def lint(cls, config: dict) -> list[Lint]:
        unsafe = sorted(set(config.get("cookie_methods", ())) - SAFE_METHODS)
        if unsafe:
            return [Lint("cookie_methods", f"a cookie token is taken for {', '.join(unsafe)}: a browser sends the "
                                           "cookie with requests other sites make it send (CSRF); keep it to GET, "
                                           "HEAD, OPTIONS unless the cookie is SameSite=Strict or the upstream "
                                           "checks a CSRF token")]
        return []

    # -- the request ------------------------------------------------------------
    def authenticate(self, request: CheckRequest) -> Outcome:
        presented = presented_token(request) if self.from_header else None
        if self.cookie is not None:
            presented = self._with_cookie(request, presented)
            if isinstance(presented, Outcome):
                return presented
        if presented is None or presented[1].count(".") != 2:
            return Outcome.absent()  # not a JWT: perhaps an opaque token for introspection
        scheme, token = presented
        if scheme == "cookie":
            return from_cookie(self._authenticate(request, scheme, token))
        return dpop.finish(self._authenticate(request, scheme, token), scheme, request, self.proofs)

    def _with_cookie(self, request: CheckRequest, presented: tuple[str, str] | None
                     ) -> tuple[str, str] | Outcome | None:
        """The token to judge once the cookie is considered: the header's, the cookie's
        (scheme ``cookie``), or a refusal. The cookie is read only for ``cookie_methods``
        and only when ``Authorization`` is empty or carries the very same token."""
        name = self.cookie
        try:
            value = read_cookie(request.headers.get("cookie"), name)
        except CookieError as exc:
            if request.method not in self.cookie_methods:
                return presented  # not read for this method: whatever it holds
            return Outcome.invalid(COOKIE.name, str(exc))
        if request.method not in self.cookie_methods:
            if presented is None and value is not None:
                # Told only when nothing else of the route claims a credential.
                return Outcome.absent(COOKIE.name, f"a token in the {name} cookie is not taken for "
                                                   f"{request.method} requests (CSRF): send it in Authorization")
            return presented
        if value is None:
            return presented
        if request.headers.get(SLOT) is not None:
            if presented == ("bearer", value):
                return presented  # the same token in both places: the header's
            return Outcome.invalid(COOKIE.name, f"a token in the {name} cookie and another credential in "
                                                "Authorization: ambiguous, send one")
        if len(value) > MAX_TOKEN_BYTES:
            return Outcome.invalid(COOKIE.name, f"token longer than {MAX_TOKEN_BYTES} bytes")
        if value.count(".") != 2:
            return Outcome.invalid(COOKIE.name, f"the {name} cookie does not hold a JWT")
        return "cookie", value

    def _authenticate(self, request: CheckRequest, scheme: str, token: str) -> Outcome:
        if len(token) > MAX_TOKEN_BYTES:
            return Outcome.invalid(SLOT, f"token longer than {MAX_TOKEN_BYTES} bytes")

        cache_key = self.keyer(token)
        verified = self.cache.get(cache_key)
        if verified is None or not self.keys.knows(verified.kid):
            try:
                jws = jose.parse(token)
            except jose.TokenError as exc:
                return Outcome.invalid(SLOT, str(exc))
            if jws.claims.get("iss") != self.issuer:
                return Outcome.absent()  # another issuer's token: not ours to judge
            result = self._verify(jws)
            if isinstance(result, Verified):
                result = self._derive(result)
            if isinstance(result, Outcome):
                return result
            verified = result
            self.cache.set(cache_key, verified, verified.expires)
        elif verified.expires <= time.time():
            return Outcome.invalid(SLOT, "token has expired", Reason.CREDENTIAL_EXPIRED)
        return self._identity(verified, request, scheme, token)

    def _verify(self, jws: jose.CompactJWS) -> Verified | Outcome:
        signer = self.signer(jws)
        if isinstance(signer, Outcome):
            return signer
        try:
            exp = jose.check_claims(jws.claims, issuer=self.issuer, audience=self.audience, leeway=self.leeway,
                                    required=self.required_claims, now=time.time())
        except jose.TokenError as exc:
            return Outcome.invalid(SLOT, str(exc), Reason.CREDENTIAL_EXPIRED if exc.expired else
                                   Reason.CREDENTIALS_INVALID)
        return Verified(jws.claims, signer.kid, exp + self.leeway)

    def signer(self, jws: jose.CompactJWS) -> VerificationKey | Outcome:
        """The configured key whose signature the token carries (header rules, alg, kid,
        typ, key lookup, signature), or the refusal; claims are checked by the caller."""
        header = jws.header
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return Outcome.invalid(SLOT, f"algorithm {str(alg)[:20]!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
            return Outcome.invalid(SLOT, "malformed kid")
        if self.typ is not None and not _same_typ(header.get("typ"), self.typ):
            return Outcome.invalid(SLOT, f"token typ must be {self.typ}")
        try:
            candidates = self.keys.candidates(kid, alg)
        except KeysUnavailable as exc:
            return Outcome.invalid(SLOT, str(exc), Reason.UPSTREAM_UNAVAILABLE)
        if not candidates:
            return Outcome.invalid(SLOT, "no known key for this token's kid and alg")
        signer = next((c for c in candidates[:8] if jose.signature_valid(jws, alg, c.key)), None)
        if signer is None:
            return Outcome.invalid(SLOT, "signature verification failed")
        return signer

    def _identity(self, verified: Verified, request: CheckRequest, scheme: str, token: str) -> Outcome:
        """Per request: certificate binding, revocation, DPoP; the identity was derived once."""
        refused = dpop.scheme_problem(scheme, verified.jkt, SLOT)
        if refused is not None:
            return refused
        if verified.bound_to is not None:
            # RFC 8705 §3: a bound token is only good with the certificate it names.
            presented = certificate_thumbprints(request)
            if not presented:
                return Outcome.invalid(SLOT, "certificate-bound token without a client certificate")
            if presented != {verified.bound_to}:
                return Outcome.invalid(SLOT, "token is bound to another client certificate")
        jti = verified.jti
        if jti is not None and self.context.store.revocations.is_revoked("jti", jti, self.issuer):
            return Outcome.invalid(SLOT, f"token {jti[:64]} is revoked", Reason.CREDENTIAL_REVOKED)
        if verified.jkt is not None:
            # Last: an accepted proof's jti is spent, so nothing may refuse the request after it.
            refused = self.proofs.problem(request, token, verified.jkt, SLOT)
            if refused is not None:
                return refused
        return Outcome(OutcomeKind.VALID, verified.identity, slot=SLOT, also=verified.also)

    def _derive(self, verified: Verified) -> Verified | Outcome:
        """Fill the entry with the identities the claims prove (once, before caching)."""
        claims = verified.claims
        verified.bound_to = bound_to = _bound_thumbprint(claims)
        try:
            verified.jkt = dpop.bound_key(claims)
        except ValueError as exc:
            return Outcome.invalid(SLOT, str(exc))
        jti = claims.get("jti")
        verified.jti = jti if isinstance(jti, str) else None
        principal = claims.get(self.principal_claim)
        if not isinstance(principal, str) or not principal:
            return Outcome.invalid(SLOT, f"token has no {self.principal_claim} claim")
        if self.scopes_claim:
            scopes = as_tokens(claim_path(claims, self.scopes_claim))
        else:
            scopes = as_tokens(claims.get("scope")) or as_tokens(claims.get("scp"))
        roles = as_tokens(claim_path(claims, self.roles_claim)) if self.roles_claim else frozenset()
        credential = jti[:64] if isinstance(jti, str) else None
        user, client_id = token_layers(principal, claims.get("client_id"), self.principal_claim == "sub")
        if user is None and client_id is not None:  # a client-credentials token: the subject is the client
            verified.identity = Identity(client_id, IdentityKind.CLIENT, self.type, self.name,
                                         scopes, roles, credential, bound_to, verified.jkt)
            return verified
        verified.identity = Identity(principal, IdentityKind.USER, self.type, self.name, scopes, roles, credential,
                                     bound_to, verified.jkt)
        if client_id is not None:
            verified.also = (Identity(client_id, IdentityKind.CLIENT, self.type, self.name, scopes, frozenset(),
                                      credential, bound_to, verified.jkt),)
        return verified



def token_sources(sources: list[dict]) -> tuple[bool, str | None]:
    """(whether ``Authorization`` is read, the cookie read or None) from ``token_from``."""
    headers = [s["header"] for s in sources if "header" in s]
    cookies = [s["cookie"] for s in sources if "cookie" in s]
    if len(cookies) > 1 or len(headers) > 1:
        raise ConfigError("token_from", "name at most one header (Authorization) and one cookie")
    return bool(headers), cookies[0] if cookies else None


def from_cookie(outcome: Outcome) -> Outcome:
    """An outcome about a cookie token, told as such: its slot is the cookie (never a
    header for a proxy to strip) and a valid identity says where its token came from."""
    if outcome.kind is OutcomeKind.ABSENT:
        return outcome
    identity, also = outcome.identity, outcome.also
    if identity is not None:
        identity = dataclasses.replace(identity, token_from=COOKIE.name)
        also = tuple(dataclasses.replace(i, token_from=COOKIE.name) for i in also)
    return dataclasses.replace(outcome, slot=COOKIE.name, identity=identity, also=also)


def _bound_thumbprint(claims: dict) -> str | None:
    cnf = claims.get("cnf")
    value = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    return value if isinstance(value, str) and value else None


def certificate_thumbprints(request: CheckRequest) -> set[str]:
    """RFC 8705 thumbprints of every client certificate the proxy forwarded."""
    found = set()
    for cert in request.client_certs:
        if cert.chain:
            found.add(thumbprint(cert.chain[0]))
        elif cert.sha256:
            found.add(base64.urlsafe_b64encode(bytes.fromhex(cert.sha256)).rstrip(b"=").decode())
    return found


def _same_typ(actual: object, wanted: str) -> bool:
    """RFC 8725 §3.11: compare media types case-insensitively, 'application/' optional."""
    if not isinstance(actual, str):
        return False

    def norm(value: str) -> str:
        value = value.lower()
        return value[len("application/"):] if value.startswith("application/") else value

    return norm(actual) == norm(wanted)
