"""Issue 16, review R: what a hostile reading of DPoP proofs (RFC 9449) and signed API
requests (RFC 9421) found, each as the request an attacker would send, refused. The
signature findings that fit its fixtures are in tests/test_signatures.py."""

from __future__ import annotations

from authz.decision import Reason
from tests.test_dpop import TOKEN, decider, proof  # noqa: F401  (decider: the fixture)


def test_a_proof_whose_iat_is_nan_is_refused(decider):  # noqa: F811
    """JSON as Python reads it allows ``NaN``, and NaN compares false with everything: a
    proof whose ``iat`` is NaN was neither too old nor in the future, so a proof made in
    advance (by malware holding the key for a moment) stayed good for ever. A number
    that is not finite is no time."""
    decide = decider()
    for iat in (float("nan"), float("inf"), float("-inf"), 10 ** 400, -(10 ** 400)):
        d = decide(TOKEN, proof(token=TOKEN, iat=iat))
        assert (d.allowed, d.status, d.reason) == (False, 401, Reason.CREDENTIALS_INVALID), iat
        assert "iat" in d.detail

