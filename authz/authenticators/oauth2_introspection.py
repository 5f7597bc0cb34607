"""``oauth2_introspection``: opaque OAuth 2.0 access tokens, checked with the
authorization server's RFC 7662 introspection endpoint.

authz authenticates itself to the endpoint (``client_secret_basic`` by default, or
``client_secret_post``) and reads ``active``, ``exp``, ``nbf``, ``aud``, ``scope``,
``client_id``, ``sub``/``username``. Answers are cached per worker under a MAC of
the token — never the token itself —: active ones until ``min(exp, max_ttl)``,
inactive ones for ``negative_ttl`` seconds. Scope and principal constraints are
checked after the cache. An answer with ``cnf.jkt`` (RFC 9449 §6.2) binds the token to a
DPoP key: it is then accepted only as ``Authorization: DPoP`` with a valid proof
(``authenticators/dpop.py``), on leaves that take DPoP. An unreachable endpoint denies with
``upstream_unavailable`` and is logged (without the token). ``timeout`` bounds a whole
call (connect, headers, body); while the endpoint fails, tokens without a cached answer
are denied at once and a background attempt is made at most once a second
(``http_client.Upstream``), so a hanging endpoint holds no worker.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from urllib.parse import quote as urlquote
from urllib.parse import urlencode

from authz.authenticators import dpop
from authz.authenticators.base import AUTHORIZATION, Authenticator, ConfigError, Context
from authz.authenticators.bearer import SLOT, BearerChallenges, as_tokens, presented_token, token_layers
from authz.authenticators.cache import secret_key
from authz.authenticators.http_client import FetchError, Upstream, fetch, url_problem
from authz.config import environment_secret
from authz.decision import Identity, IdentityKind, Outcome, OutcomeKind, Reason
from authz.request import CheckRequest

log = logging.getLogger("authz.introspection")
MAX_TOKEN_BYTES = 8192
_INACTIVE = "inactive"
LEEWAY = 30.0  # clock skew allowed on nbf and on a DPoP proof's iat ahead


class IntrospectionAuthenticator(BearerChallenges, Authenticator):
    type = "oauth2_introspection"
    slots = (AUTHORIZATION,)

    def __init__(self, name: str, config: dict, context: Context) -> None:
        super().__init__(name, config, context)
        self.url: str = config["url"]
        problem = url_problem(self.url)
        if problem:
            raise ConfigError("url", problem)
        self.client_id: str = config["client_id"]
        secret = environment_secret(config["client_secret_env"])
        if not secret:
            raise ConfigError("client_secret_env", f"environment variable {config['client_secret_env']} is not set")
        self.client_auth: str = config.get("client_auth", "client_secret_basic")
        self.timeout = float(config.get("timeout", 2))
        self.max_ttl = float(config.get("max_ttl", 60))
        self.negative_ttl = float(config.get("negative_ttl", 10))
        audience = config.get("audience")
        self.audience = None if audience is None else {audience} if isinstance(audience, str) else set(audience)
        self.realm: str = config.get("realm", name)
        self.cache = context.cache("introspection")
        self.upstream = Upstream(f"authenticator {name}: introspection at {self.url}")
        self._inflight: dict = {}  # token MAC -> Event of the call in flight (bounded by threads)
        self._inflight_lock = threading.Lock()
        self.trust = f"{self.url}\0{self.client_id}\0{sorted(self.audience or [])}"
        if self.client_auth == "client_secret_basic":
            # RFC 6749 §2.3.1: form-encode both parts before Basic.
            pair = f"{urlquote(self.client_id, safe='')}:{urlquote(secret, safe='')}"
            self._headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
            self._extra: dict[str, str] = {}
        else:
            self._headers, self._extra = {}, {"client_id": self.client_id, "client_secret": secret}
        self.dpop_algorithms = tuple(config.get("dpop_algorithms", dpop.DEFAULT_ALGORITHMS))
        try:
            self.proofs = dpop.ProofVerifier(list(self.dpop_algorithms),
                                             float(config.get("dpop_max_age", dpop.DEFAULT_MAX_AGE)), LEEWAY,
                                             context.store)
        except ValueError as exc:
            raise ConfigError("dpop_algorithms", str(exc)) from None

    def authenticate(self, request: CheckRequest) -> Outcome:
        presented = presented_token(request)
        if presented is None:
            return Outcome.absent()
        scheme, token = presented
        return dpop.finish(self._authenticate(request, scheme, token), scheme, request, self.proofs)

    def _authenticate(self, request: CheckRequest, scheme: str, token: str) -> Outcome:
        if not token or len(token) > MAX_TOKEN_BYTES or not token.isascii() or not token.isprintable():
            return Outcome.invalid(SLOT, "malformed bearer token")
        key = secret_key(self.trust, token)
        answer = self.cache.get(key)
        if answer is None:
            if self.upstream.failing:
                # Known to be down: deny at once; a background attempt (at most one per
                # second, with this token) finds it back and caches its answer.
                self.upstream.probe(lambda: self._fetch_into_cache(token, key))
                return Outcome.invalid(SLOT, "introspection endpoint unavailable", Reason.UPSTREAM_UNAVAILABLE)
            answer = self._fetch_into_cache(token, key)
            if answer is None:
                return Outcome.invalid(SLOT, "introspection endpoint unavailable", Reason.UPSTREAM_UNAVAILABLE)
        if answer == _INACTIVE:
            return Outcome.invalid(SLOT, "token is not active")
        try:
            jkt = dpop.bound_key(answer)
        except ValueError as exc:
            return Outcome.invalid(SLOT, str(exc))
        refused = dpop.scheme_problem(scheme, jkt, SLOT)
        if refused is not None:
            return refused
        outcome = self._judge(answer, jkt)
        if jkt is not None and outcome.kind is OutcomeKind.VALID:
            # Last: an accepted proof's jti is spent, so nothing may refuse the request after it.
            refused = self.proofs.problem(request, token, jkt, SLOT)
            if refused is not None:
                return refused
        return outcome

    def _fetch_into_cache(self, token: str, key) -> dict | str | None:
        """Ask the endpoint (bounded by ``timeout`` in total) and cache the answer; None on
        failure. One call per token at a time: concurrent requests with the same token wait
        (at most the timeout) for the call in flight and take its cached answer."""
        with self._inflight_lock:
            event = self._inflight.get(key)
            mine = event is None
            if mine:
                event = self._inflight[key] = threading.Event()
        if not mine:
            event.wait(self.timeout)
            return self.cache.get(key)
        try:
            answer, expires = self._introspect(token)
        except FetchError as exc:
            log.debug("authenticator %s: introspection at %s failed: %s", self.name, self.url, exc)
            self.upstream.done(str(exc))
            return None
        else:
            self.upstream.done(None)
            self.cache.set(key, answer, expires)
            return answer
        finally:
            with self._inflight_lock:
                del self._inflight[key]
            event.set()

    def _introspect(self, token: str) -> tuple[dict | str, float]:
        body = urlencode({"token": token, "token_type_hint": "access_token", **self._extra}).encode()
        reply = fetch(self.url, data=body, timeout=self.timeout, max_bytes=64 * 1024, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json", **self._headers})
        if reply.status != 200:
            raise FetchError(f"HTTP {reply.status}")
        answer = reply.json()
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise FetchError("answer has no boolean 'active'")
        now = time.time()
        if not answer["active"]:
            return _INACTIVE, now + self.negative_ttl
        exp = answer.get("exp")
        expires = now + self.max_ttl
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            expires = min(expires, float(exp))
        return answer, expires

    def _judge(self, answer: dict, jkt: str | None) -> Outcome:
        now = time.time()
        exp, nbf = answer.get("exp"), answer.get("nbf")
        if isinstance(exp, int | float) and exp <= now:
            return Outcome.invalid(SLOT, "token has expired", Reason.CREDENTIAL_EXPIRED)
        if isinstance(nbf, int | float) and nbf > now + 30:
            return Outcome.invalid(SLOT, "token is not valid yet")
        if self.audience is not None and not self.audience & as_tokens(
                [answer["aud"]] if isinstance(answer.get("aud"), str) else answer.get("aud")):
            return Outcome.invalid(SLOT, "token audience is not accepted here")
        scopes = as_tokens(answer.get("scope"))
        user, client_id = token_layers(answer.get("sub") or answer.get("username"), answer.get("client_id"))
        client = Identity(client_id, IdentityKind.CLIENT, self.type, self.name, scopes, jkt=jkt) if client_id else None
        if user is None:
            if client is None:
                return Outcome.invalid(SLOT, "introspection named neither a subject nor a client")
            return Outcome.valid(SLOT, client)
        outcome = Outcome.valid(SLOT, Identity(user, IdentityKind.USER, self.type, self.name, scopes, jkt=jkt))
        if client is not None:
            outcome.also = (client,)
        return outcome

