"""JWS compact parsing: as strict as PyJWT's own decoder (GHSA-hxm8-2xgr-2p9m), and
the header rules of RFC 7515 that a verifier must apply."""

import base64

import pytest
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

from authz.authenticators import jose
from tests.idp import b64, mint, rsa_key

SEGMENTS = [b"", b"e30", b"e30=", b"e30==", b"e30===", b"eyJhIjoxfQ", b"eyJhIjoxfQ==", b"!!!!", b"ab$d",
            b"abc", b"ab", b"a", b"abcd", b"abcde", b"ab=c", b"YQ", b"YR", b"YQ=", b"YQ==",
            b"eyJhbGciOiJSUzI1NiJ9", b"e30.", b"e3 0", b"e30\n", b"_-_-", b"+/+/"]


@pytest.mark.parametrize("segment", SEGMENTS)
def test_segment_rules_match_pyjwt(segment):
    try:
        expected = PyJWS._decode_base64url_segment(segment, "x")
    except DecodeError:
        expected = None
    try:
        got = jose.decode_segment(segment)
    except jose.TokenError:
        got = None
    assert got == expected


def test_critical_and_unencoded_payload_headers_are_refused():
    body = b64({"iss": "i", "exp": 1})
    with pytest.raises(jose.TokenError, match="critical"):
        jose.parse(f"{b64({'alg': 'RS256', 'crit': ['exp'], 'exp': 1})}.{body}.c2ln")
    with pytest.raises(jose.TokenError, match="unencoded"):
        jose.parse(f"{b64({'alg': 'RS256', 'b64': False})}.{body}.c2ln")


@pytest.mark.parametrize("token", ["a.b", "a.b.c.d", "é.e30.e30", "W10.e30.", "e30.W10.", "e30.bnVsbA.",
                                   "e30.eyJhIjp9.", b64(b"[" * 5000) + ".e30."])
def test_malformed(token):
    with pytest.raises(jose.TokenError):
        jose.parse(token)


def test_signature_check_uses_the_algorithm_asked():
    key = rsa_key()
    jws = jose.parse(mint(key, kid=None))
    assert jose.signature_valid(jws, "RS256", key.public_key())
    assert not jose.signature_valid(jws, "RS384", key.public_key())
    assert not jose.signature_valid(jws, "ES256", key.public_key())
    tampered = jose.CompactJWS(jws.header, jws.claims, jws.signing_input + b"x", jws.signature)
    assert not jose.signature_valid(tampered, "RS256", key.public_key())


def test_padded_signature_is_accepted_like_pyjwt():
    key = rsa_key()
    head, body, sig = mint(key, kid=None).split(".")
    padded = sig + "=" * (-len(sig) % 4)
    assert jose.signature_valid(jose.parse(f"{head}.{body}.{padded}"), "RS256", key.public_key())
    assert base64.urlsafe_b64decode(padded)  # sanity: it is the same signature
