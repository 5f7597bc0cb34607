"""RFC 9449's own example verifies: the proof of §7.1 (Figure 13), made by the RFC's
authors with their P-256 key for ``GET https://resource.example.org/protectedresource``
and the access token ``Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU``, at iat 1562262618.

The values below are the RFC's text, copied as data; the clock is set to the proof's
time. Changing any one thing the proof covers (method, URL, token, key binding, a
signature byte, the time) is refused, and the proof verifies only once."""

from __future__ import annotations

import pytest

from authz.authenticators import dpop
from authz.request import CheckRequest

# RFC 9449 §7.1, Figure 13 (the DPoP header of a request to a protected resource).
PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0Rs"
    "cEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2"
    "In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90"
    "ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFF"
    "byJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"  # §7.1, Figure 12
ATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"  # §7.1: base64url(SHA-256(TOKEN))
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"  # §6.1: the example key's RFC 7638 thumbprint
URL = "https://resource.example.org/protectedresource"
IAT = 1562262618


@pytest.fixture
def verifier(store, monkeypatch):
    monkeypatch.setattr(dpop.time, "time", lambda: IAT + 1.0)
    return dpop.ProofVerifier(["ES256"], max_age=300, leeway=5, store=store)


def request(proof: str = PROOF, method: str = "GET", url: str = URL) -> CheckRequest:
    return CheckRequest.from_url(method, url, [("Authorization", f"DPoP {TOKEN}"), ("DPoP", proof)])


def test_the_rfc_hashes_and_thumbprint():
    assert dpop.token_hash(TOKEN) == ATH
    header = {"typ": "dpop+jwt", "alg": "ES256",
              "jwk": {"kty": "EC", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                      "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA", "crv": "P-256"}}
    assert dpop.proof_key(header, "ES256").jkt == JKT


def test_the_rfc_example_proof_verifies_once(verifier):
    verifier.check(request(), TOKEN, JKT)
    with pytest.raises(dpop.ProofError, match="replayed"):
        verifier.check(request(), TOKEN, JKT)  # a new request: its memo is empty, the store remembers


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1:]


@pytest.mark.parametrize(("change", "message"), [
    (lambda: (request(method="POST"), TOKEN, JKT), "another method"),
    (lambda: (request(url=URL + "2"), TOKEN, JKT), "another URL"),
    (lambda: (request(url="http://resource.example.org/protectedresource"), TOKEN, JKT), "another URL"),
    (lambda: (request(), TOKEN + "x", JKT), "another access token"),
    (lambda: (request(), TOKEN, "x" + JKT[1:]), "not the key the token is bound to"),
    (lambda: (request(_flip(PROOF, len(PROOF) - 20)), TOKEN, JKT), "signature"),
])
def test_anything_the_example_covers_changed_is_refused(verifier, change, message):
    with pytest.raises(dpop.ProofError, match=message):
        verifier.check(*change())


@pytest.mark.parametrize(("now", "message"), [(IAT + 301.0, "too old"), (IAT - 6.0, "in the future")])
def test_the_example_outside_its_window_is_refused(store, monkeypatch, now, message):
    monkeypatch.setattr(dpop.time, "time", lambda: now)
    with pytest.raises(dpop.ProofError, match=message):
        dpop.ProofVerifier(["ES256"], max_age=300, leeway=5, store=store).check(request(), TOKEN, JKT)


def test_the_example_is_refused_when_its_algorithm_is_not_configured(store, monkeypatch):
    monkeypatch.setattr(dpop.time, "time", lambda: IAT + 1.0)
    with pytest.raises(dpop.ProofError, match="not accepted"):
        dpop.ProofVerifier(["EdDSA"], max_age=300, leeway=5, store=store).check(request(), TOKEN, JKT)
