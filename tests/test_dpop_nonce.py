"""DPoP server nonces (RFC 9449 §9) on a leaf with ``"dpop_nonce": "required"``: the
nonce dance (401 ``use_dpop_nonce`` with a fresh ``DPoP-Nonce``, the retry allowed and
answered with a nonce again), nonces that are stale, forged, of another signing key or
of no kind refused, the proof's jti unspent by a nonce refusal, and nonces that need no
store round trip: any engine on the same store accepts what another minted."""

from __future__ import annotations

import secrets
import time

import pytest
from jwt.utils import base64url_decode, base64url_encode

from authz.admin.signing_keys import SigningKeyAdmin
from authz.authenticators import dpop_nonce
from authz.authenticators.dpop_nonce import NonceMinter
from authz.config import Settings
from authz.decision import Reason
from authz.policy import PolicyError
from authz.request import CheckRequest
from authz.service import build_engine
from authz.store import StoreError
from tests.conftest import engine_for, write_policy
from tests.idp import AUDIENCE, ISSUER, mint, public_pem
from tests.test_dpop import ALGS, IDP, TOKEN, URL, proof

NQCHAR = {chr(c) for c in range(0x21, 0x7F)} - {'"', "\\"}  # RFC 9449 §8.1


@pytest.fixture
def signing_key(store):
    SigningKeyAdmin(store).rotate(60)
    return store


def policy(policy_dir, mode="required", nonce="required"):
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    leaf = {"use": "user_jwt"} if mode is None else {"use": "user_jwt", "dpop": mode}
    if nonce is not None:
        leaf["dpop_nonce"] = nonce
    write_policy(policy_dir, {"authenticators": {"user_jwt": {
        "type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
        "public_key_file": "idp.pem", "realm": "api"}},
        "routes": [{"id": "orders", "match": {"paths": ["/orders/*"]}, "require": leaf}]})


@pytest.fixture
def decide(signing_key, policy_dir):
    def make(mode="required", nonce="required"):
        policy(policy_dir, mode, nonce)
        engine = engine_for(signing_key, policy_dir)

        def run(made=None, token=TOKEN, scheme="DPoP"):
            headers = [("Authorization", f"{scheme} {token}")] + ([("DPoP", made)] if made is not None else [])
            return engine.decide(CheckRequest.from_url("GET", URL, headers))

        return run

    return make


def use_nonce(d, detail):
    assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID)
    assert detail in d.detail
    assert d.challenges == [f'DPoP realm="api", {ALGS}, error="use_dpop_nonce", error_description="{d.detail}"']
    assert d.dpop_nonce is not None


def test_the_nonce_dance(decide):
    run = decide()
    first = run(proof(token=TOKEN))
    use_nonce(first, "the server requires a nonce")
    assert len(first.dpop_nonce) == 27 and set(first.dpop_nonce) <= NQCHAR
    retry = run(proof(token=TOKEN, nonce=first.dpop_nonce))
    assert retry.allowed, retry.detail
    assert retry.dpop_nonce == first.dpop_nonce  # the same slot: the same nonce for every client


def test_a_nonce_refusal_does_not_spend_the_jti(decide):
    run = decide()
    jti = secrets.token_urlsafe(8)
    first = run(proof(token=TOKEN, jti=jti))
    use_nonce(first, "requires a nonce")
    assert run(proof(token=TOKEN, jti=jti, nonce=first.dpop_nonce)).allowed
    d = run(proof(token=TOKEN, jti=jti, nonce=first.dpop_nonce))
    assert not d.allowed and "replayed" in d.detail


def forged(nonce: str) -> str:
    raw = bytearray(base64url_decode(nonce))
    raw[-1] ^= 1
    return base64url_encode(bytes(raw)).decode()


@pytest.mark.parametrize(("make", "detail"), [
    (lambda minter: minter.current(time.time() - 2 * dpop_nonce.DEFAULT_LIFETIME), "lacks a current server nonce"),
    (lambda minter: minter.current(time.time() + dpop_nonce.DEFAULT_LIFETIME), "lacks a current server nonce"),
    (lambda minter: forged(minter.current()), "lacks a current server nonce"),
    (lambda minter: minter.current()[:-1], "lacks a current server nonce"),
    (lambda minter: "x" * 27, "lacks a current server nonce"),
    (lambda minter: 12345, "lacks a current server nonce"),
    (lambda minter: "", "lacks a current server nonce"),
], ids=["two-slots-old", "next-slot", "forged-mac", "truncated", "garbage", "number", "empty"])
def test_a_wrong_nonce_is_refused_with_a_fresh_one(decide, signing_key, make, detail):
    run = decide()
    made = make(NonceMinter(signing_key.signing_keys))
    d = run(proof(token=TOKEN, nonce=made))
    use_nonce(d, detail)
    assert d.dpop_nonce != made
    assert run(proof(token=TOKEN, nonce=d.dpop_nonce)).allowed


def test_the_previous_slot_is_still_good(signing_key):
    minter = NonceMinter(signing_key.signing_keys)
    now = time.time()
    earlier = minter.current(now - dpop_nonce.DEFAULT_LIFETIME)
    assert minter.valid(earlier, now) and minter.valid(minter.current(now), now)
    assert not minter.valid(earlier, now + dpop_nonce.DEFAULT_LIFETIME)


def test_nonces_are_stateless_and_shared_by_every_engine_on_the_store(decide, signing_key, policy_dir):
    """Another engine (another worker, another replica) on the same store's signing key
    accepts a nonce the first one minted; a rotated key's nonces are refused."""
    run = decide()
    nonce = run(proof(token=TOKEN)).dpop_nonce
    policy(policy_dir)
    other = engine_for(signing_key, policy_dir)
    d = other.decide(CheckRequest.from_url("GET", URL, [("Authorization", f"DPoP {TOKEN}"),
                                                       ("DPoP", proof(token=TOKEN, nonce=nonce))]))
    assert d.allowed, d.detail
    SigningKeyAdmin(signing_key).rotate(60)
    fresh = engine_for(signing_key, policy_dir)  # a process that reads the new key
    d = fresh.decide(CheckRequest.from_url("GET", URL, [("Authorization", f"DPoP {TOKEN}"),
                                                       ("DPoP", proof(token=TOKEN, nonce=nonce))]))
    use_nonce(d, "lacks a current server nonce")
    assert d.dpop_nonce != nonce


def test_leaves_without_dpop_nonce_ignore_the_claim_and_send_none(decide):
    run = decide(nonce=None)
    d = run(proof(token=TOKEN, nonce="anything"))
    assert d.allowed and d.dpop_nonce is None
    assert run(proof(token=TOKEN)).dpop_nonce is None


def test_a_bearer_token_on_an_allowed_leaf_needs_no_nonce(decide):
    run = decide(mode="allowed")
    d = run(token=mint(IDP, kid=None), scheme="Bearer")
    assert d.allowed and d.dpop_nonce is None
    d = run(proof(token=TOKEN))
    assert 'error="use_dpop_nonce"' in d.challenges[-1] and d.dpop_nonce is not None


def test_other_failures_also_carry_a_nonce(decide):
    """A proof refused for another reason (htm) on a nonce route: the client learns the
    nonce at once rather than on its next try."""
    run = decide()
    d = run(proof(token=TOKEN, htm="POST"))
    assert 'error="invalid_dpop_proof"' in d.challenges[0] and d.dpop_nonce is not None


def test_without_a_signing_key_nonces_deny(store, policy_dir):
    policy(policy_dir)
    d = engine_for(store, policy_dir).decide(CheckRequest.from_url(
        "GET", URL, [("Authorization", f"DPoP {TOKEN}"), ("DPoP", proof(token=TOKEN))]))
    assert (d.allowed, d.status, d.reason) == (False, 500, Reason.INTERNAL_ERROR)


def test_a_server_refuses_to_start_without_a_signing_key(store, policy_dir):
    policy(policy_dir)
    with pytest.raises(StoreError, match="dpop_nonce"):
        build_engine(Settings(db_path=store.url, policy_dir=policy_dir), store)


def test_dpop_nonce_goes_on_a_dpop_leaf(store, policy_dir):
    policy(policy_dir, mode=None)
    with pytest.raises(PolicyError, match="dpop_nonce goes on a leaf that takes DPoP"):
        engine_for(store, policy_dir)


def test_a_nonce_leaf_after_one_without_on_the_same_authenticator_fails_closed(signing_key, policy_dir):
    """The authenticator runs once per request: when a leaf without nonces asked it
    first, a later leaf that requires them cannot have its nonce checked, so it refuses."""
    (policy_dir / "idp.pem").write_bytes(public_pem(IDP))
    write_policy(policy_dir, {"authenticators": {"user_jwt": {
        "type": "jwt", "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
        "public_key_file": "idp.pem", "realm": "api"}},
        "routes": [{"id": "orders", "require": {"all": [
            {"use": "user_jwt", "dpop": "required"},
            {"use": "user_jwt", "dpop": "required", "dpop_nonce": "required"}]}}]})
    d = engine_for(signing_key, policy_dir).decide(CheckRequest.from_url(
        "GET", URL, [("Authorization", f"DPoP {TOKEN}"), ("DPoP", proof(token=TOKEN))]))
    assert (d.allowed, d.status) == (False, 401) and "needs DPoP proofs with a server nonce" in d.detail
