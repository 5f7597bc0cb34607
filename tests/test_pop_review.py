"""Issue 16, review R: what a hostile reading of DPoP proofs (RFC 9449) and signed API
requests (RFC 9421) found, each as the request an attacker would send, refused. The
signature findings that fit its fixtures are in tests/test_signatures.py."""

from __future__ import annotations

import time

import pytest

from authz.decision import Reason
from tests.test_dpop import TOKEN, decider, proof  # noqa: F401  (decider: the fixture)

# Each finding here depends on the store (a NaN expiry, a purge, a failed write): once
# more on PostgreSQL, where the NaN proof was allowed.
pytestmark = pytest.mark.both_stores


def test_a_proof_whose_iat_is_nan_is_refused(decider):  # noqa: F811
    """JSON as Python reads it allows ``NaN``, and NaN compares false with everything: a
    proof whose ``iat`` is NaN was neither too old nor in the future, so a proof made in
    advance (by malware holding the key for a moment) stayed good for ever. A number
    that is not finite is no time."""
    decide = decider()
    for iat, said in ((float("nan"), "malformed"), (float("inf"), "malformed"), (float("-inf"), "malformed"),
                      (10 ** 400, "iat"), (-(10 ** 400), "iat")):
        d = decide(TOKEN, proof(token=TOKEN, iat=iat))
        assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID), iat
        assert said in d.detail, (iat, d.detail)  # NaN and ±Infinity are no JSON (jose refuses them)


def test_a_proof_is_remembered_as_long_as_another_replica_may_accept_it(decider, store, monkeypatch):  # noqa: F811
    """The jti was kept until ``iat + dpop_max_age`` only. A replica whose clock runs
    ahead (by less than ``leeway``) purges it that much early, while one whose clock is
    right still takes the proof: a replay inside the window. Kept ``leeway`` longer, it
    outlives every clock the window already tolerates."""
    decide = decider(dpop_max_age=120)  # leeway: the jwt authenticator's default, 30 s
    made = proof(token=TOKEN, iat=int(time.time()) - 100)
    assert decide(TOKEN, made).allowed
    # Another replica, its clock 25 s ahead, writes a one-time value of its own: its
    # purge drops what has expired by its clock.
    nonces = store.nonces
    module = __import__(type(nonces).__module__, fromlist=["time"])
    ahead = time.time() + 25
    monkeypatch.setattr(module.time, "time", lambda: ahead)
    nonces._next_purge = 0.0
    assert nonces.first_use("review", "another replica's value", ahead + 60)
    monkeypatch.undo()
    d = decide(TOKEN, made)
    assert not d.allowed and "replayed" in d.detail, d.detail


def drop_nonces(store) -> None:
    """Break the replay guard for real: its table gone, every write to it fails."""
    with store.database.write() as tx:
        tx.execute("DROP TABLE nonces")


def test_a_proof_whose_jti_cannot_be_recorded_is_denied(decider, store):  # noqa: F811
    """The store cannot say whether the jti was used: deny (500), never allow."""
    decide = decider()
    drop_nonces(store)
    d = decide(TOKEN, proof(token=TOKEN))
    assert (d.allowed, d.status) == (False, 500), d.detail
