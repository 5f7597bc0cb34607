"""C2SP Wycheproof JOSE vectors (JWS and JWK) through the ``jwt`` authenticator.

Each test group's key set goes where an operator's keys go: asymmetric keys into a
``jwks_file`` of a ``jwt`` authenticator built by the policy loader (so the JWKS
rules — use, key_ops, alg, key strength, ROCA, duplicate kids, mixed sets — apply as
in production). HMAC keys reach authz only as ``secret_env`` text, which cannot hold
Wycheproof's binary keys, so for those groups the authenticator is built with a
placeholder secret and its key source is replaced by the group's keys read through
the same JWK parser (``parse_jwks``, with every rule above). Every vector then goes
through the request path's signature stage: strict compact parsing (``jose``) and
``JwtAuthenticator.signer`` (alg allow-list, kid lookup, key, signature). The claims
stage is not run: the vectors sign the bytes ``foo``, not a JWT claims object.

The bar (issue 11): no vector whose result is ``invalid`` is accepted. Valid vectors
authz refuses on purpose are listed with their reason; corpus defects (an ``invalid``
vector byte-identical to a ``valid`` one with the same key) are listed as such and
checked to be identical. ``json_web_crypto_test.json``'s JWE groups are out of scope:
authz accepts JWS only, and a five-part JWE is refused as a malformed JWT (asserted).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from authz.authenticators import Context, jose
from authz.authenticators.keysets import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, StaticKeySet, parse_jwks
from authz.decision import Outcome
from authz.policy import PolicyError, load_policy
from tests.conftest import write_policy

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
FILES = ("json_web_signature_test.json", "json_web_key_test.json", "json_web_crypto_test.json")
SUPPORTED = set(HMAC_ALGORITHMS) | ASYMMETRIC_ALGORITHMS

# Valid vectors authz refuses on purpose: {(file, tcId): reason}.
REFUSED_VALID: dict[tuple[str, int], str] = {
    **{("json_web_signature_test.json", n): (
        "The JWK says alg PS256 and the token uses PS384: a key's alg restricts it to that algorithm "
        "(RFC 7517 §4.4, RFC 8725 §3.1).") for n in (346, 350)},
    **{("json_web_signature_test.json", n): (
        "The JWK's alg is 'ES521', not a registered JWS algorithm (RFC 7518 §3.1 names ES512 for P-521), "
        "so the key is ignored.") for n in (347, 351)},
    **{("json_web_signature_test.json", n): (
        "A '?' inside a segment is outside the base64url alphabet; JWS segments are strict base64url "
        "(RFC 7515 §2, RFC 4648 §5), so the token is malformed.") for n in (372, 373)},
}
# Invalid vectors byte-identical (token and key) to a valid vector: defects of the corpus.
CORPUS_DEFECTS: dict[tuple[str, int], int] = {
    ("json_web_signature_test.json", 367): 357,  # invalidBase64Padding is ValidMac's token
    ("json_web_signature_test.json", 370): 357,  # invalidBase64PaddingInPayload likewise
}


def _groups() -> list[tuple[str, dict]]:
    found = []
    for name in FILES:
        path = VECTORS / name
        if path.exists():
            found += [(name, g) for g in json.loads(path.read_text())["testGroups"]]
    return found


GROUPS = _groups()
JWS_GROUPS = [(f, g) for f, g in GROUPS if not g["comment"].startswith("jwe")]
VECTOR_IDS = [(f, t["tcId"]) for f, g in JWS_GROUPS for t in g["tests"]]
pytestmark = pytest.mark.skipif(not GROUPS, reason=f"Wycheproof JOSE vectors not found in {VECTORS}")


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _header_alg(token) -> str | None:
    try:
        return json.loads(_b64(token.split(".")[0])).get("alg")
    except (ValueError, AttributeError):
        return None


def _authenticator(group: dict, policy_dir: Path, store, monkeypatch):
    """The group's jwt authenticator, or the PolicyError that refuses its keys."""
    material = group.get("public") or group["private"]
    keys = material.get("keys", [material])
    algorithms = sorted({k["alg"] for k in keys if k.get("alg") in SUPPORTED}
                        or {_header_alg(t["jws"]) for t in group["tests"]} & SUPPORTED) or ["RS256"]
    symmetric = set(algorithms) <= set(HMAC_ALGORITHMS)
    config = {"type": "jwt", "issuer": "https://issuer.example", "audience": "api", "algorithms": algorithms}
    if symmetric:
        monkeypatch.setenv("WYCHEPROOF_PLACEHOLDER", "p" * 64)
        config["secret_env"] = "WYCHEPROOF_PLACEHOLDER"
    else:
        (policy_dir / "keys").mkdir(parents=True, exist_ok=True)
        (policy_dir / "keys" / "set.jwks.json").write_text(json.dumps({"keys": keys}))
        config["jwks_file"] = "keys/set.jwks.json"
    write_policy(policy_dir, {"authenticators": {"wp": config}, "routes": [{"id": "r", "require": "wp"}]})
    try:
        authenticator = load_policy(policy_dir, Context(store=store)).authenticators["wp"]
        if symmetric:
            authenticator.keys = StaticKeySet(parse_jwks({"keys": keys}, algorithms, "wycheproof"))
    except (PolicyError, ValueError) as exc:
        return exc
    return authenticator


def _accepted(authenticator, token) -> bool:
    if not isinstance(token, str) or isinstance(authenticator, Exception):
        return False  # authz reads compact tokens from a header only; refused keys verify nothing
    try:
        jws = jose.parse_jws(token)
    except jose.TokenError:
        return False
    return not isinstance(authenticator.signer(jws), Outcome)


@pytest.mark.parametrize(("name", "group"), JWS_GROUPS,
                         ids=[f"{f.split('_test')[0]}-{g['comment']}-{g['tests'][0]['tcId']}" for f, g in JWS_GROUPS])
def test_wycheproof_group(name, group, tmp_path, store, monkeypatch):
    authenticator = _authenticator(group, tmp_path / "policies", store, monkeypatch)
    wrong = []
    for vector in group["tests"]:
        key = (name, vector["tcId"])
        accepted = _accepted(authenticator, vector["jws"])
        if vector["result"] == "invalid":
            if key in CORPUS_DEFECTS:
                continue  # checked in test_corpus_defects_are_byte_identical_to_a_valid_vector
            if accepted:
                wrong.append(f"invalid vector {key} ({vector['comment']}) accepted")
        elif key in REFUSED_VALID:
            if accepted:
                wrong.append(f"listed refusal {key} is now accepted: remove it from REFUSED_VALID")
        elif not accepted:
            wrong.append(f"valid vector {key} ({vector['comment']}) refused")
    assert not wrong, "\n".join(wrong)


def test_corpus_defects_are_byte_identical_to_a_valid_vector():
    by_id = {(f, t["tcId"]): (json.dumps(g.get("public") or g["private"], sort_keys=True), t)
             for f, g in GROUPS for t in g["tests"]}
    for (name, tc_id), valid_id in CORPUS_DEFECTS.items():
        key, vector = by_id[(name, tc_id)]
        valid_key, valid = by_id[(name, valid_id)]
        assert (vector["result"], valid["result"]) == ("invalid", "valid")
        assert (key, vector["jws"]) == (valid_key, valid["jws"])


def test_listed_cases_exist():
    assert set(REFUSED_VALID) | set(CORPUS_DEFECTS) <= set(VECTOR_IDS)


def test_the_bar_is_counted():
    """Every invalid JWS/JWK vector is run (none skipped but the listed corpus defects)."""
    invalid = [(f, t["tcId"]) for f, g in JWS_GROUPS for t in g["tests"] if t["result"] == "invalid"]
    assert len(invalid) > 300
    assert len([i for i in invalid if i in CORPUS_DEFECTS]) == len(CORPUS_DEFECTS)


def test_jwe_is_refused_as_a_malformed_jwt():
    jwe = [t for f, g in GROUPS if g["comment"].startswith("jwe") for t in g["tests"]]
    if not jwe:
        pytest.skip("no JWE groups in the corpus")
    for vector in jwe:
        token = vector.get("jwe")
        if isinstance(token, str):
            with pytest.raises(jose.TokenError):
                jose.parse_jws(token)
