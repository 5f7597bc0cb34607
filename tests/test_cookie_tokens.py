"""A JWT from a cookie (``token_from``): taken for safe methods only unless the policy says
otherwise (CSRF, with a ``policy check`` warning), never beside another credential in
``Authorization``, never when another cookie parser could read another value, never
DPoP-bound; shown as ``token_from: cookie`` in the identity, never logged. Through
real doors (nginx, Caddy, Envoy's HTTP and gRPC checks) at the end."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from authz.authenticators import dpop
from authz.authenticators.cookies import CookieError, read_cookie
from authz.cli import main
from authz.decision import Reason
from authz.policy import PolicyError
from authz.request import CheckRequest
from tests.conftest import engine_for, logged_decisions, write_policy
from tests.doors import DOORS, door_stack
from tests.idp import AUDIENCE, ISSUER, ec_key, mint, public_jwk, public_pem, rsa_key

IDP = rsa_key()
OTHER_IDP = rsa_key()
URL = "https://api.example.com/app/orders"
# A day long: collected with the whole suite, the tokens must outlive the tests before them.
TOKEN = mint(IDP, kid=None, exp=int(time.time()) + 86400)
SECOND = mint(IDP, kid=None, sub="bob", exp=int(time.time()) + 86400)


def config(**options) -> dict:
    return {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
            "public_key_file": "idp.pem", "realm": "app",
            "token_from": [{"header": "Authorization"}, {"cookie": "access_token"}], **options}


def policy(authenticator: dict | None = None, leaf: object = "web", **route) -> dict:
    return {"authenticators": {"web": authenticator or config()},
            "routes": [{"id": "app", "match": {"paths": ["/app/**"]}, "require": leaf, **route}]}


@pytest.fixture
def decider(store, policy_dir):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))

    def make(document: dict | None = None):
        write_policy(policy_dir, document or policy())
        engine = engine_for(store, policy_dir)

        def decide(cookie=None, authorization=None, method="GET", extra=()):
            headers = [] if cookie is None else [("Cookie", cookie)]
            if authorization is not None:
                headers.append(("Authorization", authorization))
            return engine.decide(CheckRequest.from_url(method, URL, [*headers, *extra]))

        return decide

    return make


# -- the parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "value"), [
    (None, None),
    ("", None),
    ("session=1", None),
    ("access_token=", None),                                    # a logged-out browser's
    ("access_token=a.b.c", "a.b.c"),
    ("theme=dark; access_token=a.b.c; lang=en", "a.b.c"),
    ("prefs=a,b; access_token=a.b.c", "a.b.c"),                # another cookie's comma is its own business
    ("my_access_token=x; access_token=a.b.c", "a.b.c"),
    ("access_token = a.b.c", "a.b.c"),
])
def test_the_cookie_is_read(header, value):
    assert read_cookie(header, "access_token") == value


@pytest.mark.parametrize(("header", "why"), [
    ("access_token=a.b.c; access_token=d.e.f", "more than once"),
    ("access_token=a.b.c; access_token=a.b.c", "more than once"),
    ("access_token=a.b.c; Access_Token=d.e.f", "more than once"),    # ASP.NET: names case-insensitive
    ("access_token=a.b.c; access.token=d.e.f", "more than once"),    # PHP reads '.' as '_'
    ("access_token=a.b.c; access%5Ftoken=d.e.f", "more than once"),  # PHP decodes names
    ("access_token=a.b.c,access_token=d.e.f", "more than once"),     # two Cookie headers, comma-joined
    ("access_token=a.b.c,session=x", "ambiguous"),                   # werkzeug would read 'a.b.c,session=x'
    ("session=x,access_token=a.b.c", "ambiguous"),                   # werkzeug reads it as session's value
    ('access_token="a.b.c"', "ambiguous"),                           # quoted: parsers unquote differently
    ('access_token="a.b\\.c"', "ambiguous"),
    ("Access_Token=a.b.c", "ambiguous"),                             # not the configured name, but read as it
    ("access_token=a.b.c%2e", "characters no token has"),
    ("access_token=a b.c", "ambiguous"),
    ("access_token=" + "a" * 17000, "longer than"),
    ("; ".join(f"c{i}=1" for i in range(300)) + "; access_token=a.b.c", "more than 200 cookies"),
])
def test_what_two_parsers_could_read_differently_is_refused(header, why):
    with pytest.raises(CookieError, match=why) as raised:
        read_cookie(header, "access_token")
    assert "d.e.f" not in str(raised.value) and "a.b.c" not in str(raised.value)  # never the value


# -- the authenticator -------------------------------------------------------------------------


def test_a_cookie_token_is_allowed_and_says_where_it_came_from(decider):
    d = decider()(cookie=f"theme=dark; access_token={TOKEN}")
    assert d.allowed and d.methods == ["jwt"] and d.principal.id == "alice"
    assert d.principal.token_from == "cookie" and d.principal.to_json()["token_from"] == "cookie"
    assert "token_from" not in decider()(authorization=f"Bearer {TOKEN}").principal.to_json()


def test_the_header_is_still_read_and_is_the_default(decider, store, policy_dir):
    assert decider()(authorization=f"Bearer {TOKEN}").allowed
    header_only = decider(policy(config(token_from=[{"header": "Authorization"}])))
    assert header_only(authorization=f"Bearer {TOKEN}").allowed
    d = header_only(cookie=f"access_token={TOKEN}")
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_MISSING)  # a cookie is nobody's credential here
    default = {k: v for k, v in config().items() if k != "token_from"}
    assert decider(policy(default))(cookie=f"access_token={TOKEN}").status == 401


def test_a_cookie_only_authenticator_does_not_read_authorization(decider):
    decide = decider(policy(config(token_from=[{"cookie": "access_token"}])))
    assert decide(cookie=f"access_token={TOKEN}").allowed
    d = decide(authorization=f"Bearer {TOKEN}")
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert "Authorization header is not accepted" in d.detail


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_take_the_cookie(decider, method):
    assert decider()(cookie=f"access_token={TOKEN}", method=method).allowed


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "get", "TRACE"])
def test_other_methods_refuse_the_cookie_and_say_why(decider, method):
    d = decider()(cookie=f"access_token={TOKEN}", method=method)
    assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID)
    assert f"not taken for {method} requests (CSRF)" in d.detail and "a cookie" in d.detail


def test_an_override_to_a_safe_method_does_not_open_the_cookie(decider):
    # Every reading must allow: the POST as sent refuses the cookie.
    d = decider()(cookie=f"access_token={TOKEN}", method="POST", extra=[("X-HTTP-Method-Override", "GET")])
    assert not d.allowed and "CSRF" in d.detail


def test_on_other_methods_the_header_still_works_beside_the_cookie(decider):
    d = decider()(cookie=f"access_token={SECOND}", authorization=f"Bearer {TOKEN}", method="POST")
    assert d.allowed and d.principal.id == "alice" and d.principal.token_from is None


def test_cookie_methods_opens_unsafe_methods_and_policy_check_warns(decider, policy_dir):
    document = policy(config(cookie_methods=["GET", "POST"]))
    decide = decider(document)
    assert decide(cookie=f"access_token={TOKEN}", method="POST").allowed
    assert not decide(cookie=f"access_token={TOKEN}", method="HEAD").allowed  # only those listed
    result = CliRunner().invoke(main, ["policy", "check", str(policy_dir)])
    assert result.exit_code == 0, result.output
    assert "/authenticators/web/cookie_methods" in result.output and "CSRF" in result.output
    write_policy(policy_dir, policy())
    quiet = CliRunner().invoke(main, ["policy", "check", str(policy_dir)])
    assert quiet.exit_code == 0 and "CSRF" not in quiet.output


@pytest.mark.parametrize("authorization", [f"Bearer {SECOND}", "Basic YWxpY2U6cHc=", f"DPoP {TOKEN}",
                                           "Bearer opaque-token"])
def test_another_credential_in_authorization_is_ambiguous(decider, authorization):
    d = decider()(cookie=f"access_token={TOKEN}", authorization=authorization)
    assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID)
    assert "ambiguous" in d.detail


def test_the_same_token_in_both_places_is_the_headers(decider):
    d = decider()(cookie=f"access_token={TOKEN}", authorization=f"Bearer {TOKEN}")
    assert d.allowed and d.principal.token_from is None


@pytest.mark.parametrize(("cookie", "detail"), [
    (f"access_token={TOKEN}; access_token={SECOND}", "more than once"),
    (f'access_token="{TOKEN}"', "ambiguous"),
    (f"access_token={TOKEN},other=1", "ambiguous"),
    ("access_token=not-a-jwt", "does not hold a JWT"),
    ("access_token=" + "a." * 4100 + "b", "longer than 8192"),
])
def test_a_malformed_cookie_denies_with_a_clear_detail(decider, cookie, detail):
    d = decider()(cookie=cookie)
    assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID)
    assert detail in d.detail


def test_a_bad_cookie_token_denies_as_a_bad_header_token_does(decider):
    decide = decider()
    expired = mint(IDP, kid=None, exp=int(time.time()) - 600)
    d = decide(cookie=f"access_token={expired}")
    assert (d.status, d.reason) == (401, Reason.CREDENTIAL_EXPIRED)
    forged = mint(OTHER_IDP, kid=None)
    assert decide(cookie=f"access_token={forged}").reason == Reason.CREDENTIALS_INVALID
    foreign = mint(IDP, kid=None, iss="https://elsewhere.example")
    assert decide(cookie=f"access_token={foreign}").reason == Reason.CREDENTIALS_MISSING  # not ours


def test_a_dpop_bound_token_from_a_cookie_is_refused(decider):
    bound = mint(IDP, kid=None, cnf={"jkt": dpop.thumbprint(public_jwk(ec_key(), None, "ES256"))})
    d = decider()(cookie=f"access_token={bound}")
    assert (d.status, d.reason) == (401, Reason.CREDENTIALS_INVALID) and "DPoP-bound" in d.detail


@pytest.mark.parametrize(("document", "message"), [
    (policy(leaf={"use": "web", "dpop": "allowed"}), "dpop goes on a leaf whose authenticator reads no cookie"),
    (policy(config(token_from=[{"header": "Authorization"}], cookie_methods=["GET"])),
     "cookie_methods goes with a cookie in token_from"),
    (policy(config(token_from=[{"cookie": "a"}, {"cookie": "b"}])), "at most one header"),
])
def test_combinations_refused_at_load(store, policy_dir, document, message):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, document)
    with pytest.raises(PolicyError, match=message):
        engine_for(store, policy_dir)


@pytest.mark.parametrize("token_from", [[], [{"header": "X-Token"}], [{"cookie": "bad name"}],
                                        [{"cookie": "a", "header": "Authorization"}]])
def test_the_schema_refuses_malformed_sources(store, policy_dir, token_from):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, policy(config(token_from=token_from)))
    with pytest.raises(PolicyError, match="token_from"):
        engine_for(store, policy_dir)


def test_strip_credentials_never_names_the_cookie_header(decider):
    d = decider(policy(strip_credentials=True))(cookie=f"access_token={TOKEN}")
    assert d.allowed and d.strip_headers == []


# -- real doors ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory, new_store):
    with door_stack(tmp_path_factory, new_store, "cookie-doors", {
            "idp.pem": public_pem(IDP),
            "policy.json": {"authenticators": {"web": config()},
                            "routes": [{"id": "app", "match": {"paths": ["/app/**"]}, "require": "web"}]}}) as started:
        yield started


@pytest.mark.both_stores
@pytest.mark.parametrize("door", list(DOORS))
def test_a_cookie_token_through_every_door(stack, door):
    via = DOORS[door]
    cookie = {"Cookie": f"theme=dark; access_token={TOKEN}"}
    assert via(stack, "GET", "/app/orders", cookie) == (200, "alice", "jwt")
    assert via(stack, "POST", "/app/orders", cookie)[0] == 401                       # CSRF
    assert via(stack, "GET", "/app/orders", {"Cookie": f"access_token={TOKEN}; access_token={SECOND}"})[0] == 401
    assert via(stack, "GET", "/app/orders", {**cookie, "Authorization": f"Bearer {SECOND}"})[0] == 401


@pytest.mark.both_stores
def test_the_cookie_is_never_logged(stack):
    via = DOORS["nginx"]
    assert via(stack, "GET", "/app/orders", {"Cookie": f"access_token={TOKEN}"})[0] == 200
    assert via(stack, "GET", "/app/orders", {"Cookie": f"access_token={TOKEN}; access_token={SECOND}"})[0] == 401
    text = logged_decisions(stack["store"], 2, "more than once")
    for secret in (TOKEN, SECOND, TOKEN.split(".")[2], SECOND.split(".")[2]):
        assert secret not in text


def _raw(server, lines: list[str]) -> int:
    """One request to /auth-request with ``lines`` as headers, as sent (repeats kept)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = ["GET /auth-request HTTP/1.1", "Host: 127.0.0.1", "X-Original-Method: GET",
                "X-Original-URI: /app/orders", "X-Original-Host: api.example.com", *lines, "Connection: close"]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.both_stores
def test_several_cookie_headers_are_refused_on_every_server(server, policy_dir):
    """HTTP/1.1 clients must send one Cookie header (RFC 6265 §5.4). gunicorn joins
    several with ',' (which no cookie parser splits on: refused), granian with ';' (one
    cookie list, read whole); either way two values of the token cookie are refused."""
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, policy())
    started = server(workers=1)
    assert _raw(started, [f"Cookie: theme=dark; access_token={TOKEN}"]) == 200
    assert _raw(started, [f"Cookie: access_token={TOKEN}", f"Cookie: access_token={SECOND}"]) == 401
    assert _raw(started, [f"Cookie: access_token={SECOND}", f"Cookie: access_token={TOKEN}"]) == 401
    joined = _raw(started, ["Cookie: theme=dark", f"Cookie: access_token={TOKEN}"])
    assert joined == (401 if started.kind == "gunicorn" else 200)
