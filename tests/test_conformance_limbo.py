"""C2SP x509-limbo through the ``mtls`` authenticator, the way a request meets it.

Each case becomes a policy (an ``mtls`` authenticator whose ``ca_file`` holds the
case's trusted certificates and whose ``crl_files`` its CRLs, one route requiring it),
loaded by the policy loader into a ``DecisionEngine``; the peer certificate and the
untrusted intermediates are forwarded as a PEM chain exactly as ``POST /v1/decisions``
forwards ``client_cert``. The case's ``validation_time`` pins the authenticator's
clock and its ``max_chain_depth`` becomes ``AUTHZ_MAX_CHAIN_LENGTH`` (depth + leaf +
root). SUCCESS must be an allow whose principal is the first expected peer name;
FAILURE must be a deny.

Corpora (read from ``../shared/vectors/``, never copied here):
- ``limbo-regenerated.json``: every limbo case; its CLIENT cases are run.
- ``limbo-crl-clientauth.json``: limbo's CRL cases re-issued with clientAuth leaves.
- ``limbo-server-as-client.json``: limbo's server cases re-issued as client cases; a
  server case can fail for a reason that does not exist for a client (it has no
  reference identity), so this set carries more listed disagreements.

Every deliberate disagreement is listed below with its reason, the way
pyca/cryptography lists its limbo exceptions, and is asserted to still disagree, so
the list cannot go stale silently.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from authz.authenticators import Context, mtls
from authz.credentials.x509 import from_pem
from authz.decision import Reason
from authz.engine import DecisionEngine
from authz.policy import PolicyError, load_policy
from authz.request import CheckRequest
from tests.conftest import write_policy

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
CORPORA = ("limbo-regenerated.json", "limbo-crl-clientauth.json", "limbo-server-as-client.json")

# Cases authz answers differently from limbo, on purpose: {id: reason}.
_NO_REFERENCE_IDENTITY = (
    "A client has no reference identity to match (RFC 6125 §6 is for servers; RFC 5280 §6 path "
    "validation does not look at names): the SAN becomes the principal and routes authorise it.")
_CRYPTOGRAPHY_SAME_AS_PYCA = (
    "cryptography's verifier, like Go crypto/x509 and rustls-webpki, does not enforce this "
    "(pyca/cryptography lists the same limbo exception).")
EXCEPTIONS: dict[str, str] = {
    # -- accepted although limbo expects FAILURE ------------------------------------------
    **{f"server-as-client::webpki::{name}": _NO_REFERENCE_IDENTITY for name in (
        "cn::punycode-not-in-san",
        "cn::utf8-vs-punycode-mismatch", "cn::not-in-san", "cn::case-mismatch",
        "san::mismatch-domain-san", "san::mismatch-subdomain-san", "san::mismatch-subdomain-apex-san",
        "san::mismatch-apex-subdomain-san", "san::public-suffix-wildcard-san",
        "san::public-suffix-multi-label-wildcard-san", "san::public-suffix-private-namespace-wildcard-san",
        "san::wildcard-embedded-leftmost-san", "san::wildcard-not-in-leftmost-san",
        "san::wildcard-match-across-labels-san", "san::wildcard-embedded-ulabel-san", "san::unicode-emoji-san",
        "san::san-wildcard-only", "san::san-wildcard-only-tld")},
    "server-as-client::rfc5280::san::underscore-dns": _NO_REFERENCE_IDENTITY + (
        " The DNS-name syntax rule of RFC 5280 §4.2.1.6 is enforced by validators only when matching a host."),
    "server-as-client::rfc5280::san::ip-in-dns": _NO_REFERENCE_IDENTITY + (
        " An IP address written as a dNSName (RFC 5280 §4.2.1.6) only matters when matching a host."),
    "server-as-client::webpki::eku::ee-without-eku": (
        "A client leaf without extendedKeyUsage is unrestricted (RFC 5280 §4.2.1.12); authz requires "
        "clientAuth only where an EKU is present, as the mtls docs say."),
    "server-as-client::webpki::eku::ee-critical-eku": (
        "RFC 5280 §4.2.1.12 allows a critical EKU; only CA/B Forum server certificates forbid it."),
    "server-as-client::rfc5280::serial::zero": (
        "A zero serial violates RFC 5280 §4.1.2.2 but is common in private PKIs; " + _CRYPTOGRAPHY_SAME_AS_PYCA),
    "server-as-client::rfc5280::ski::root-missing-ski": "RFC 5280 §4.2.1.2. " + _CRYPTOGRAPHY_SAME_AS_PYCA,
    "server-as-client::rfc5280::ski::intermediate-missing-ski": "RFC 5280 §4.2.1.2. " + _CRYPTOGRAPHY_SAME_AS_PYCA,
    "server-as-client::rfc5280::aki::intermediate-missing-aki": "RFC 5280 §4.2.1.1. " + _CRYPTOGRAPHY_SAME_AS_PYCA,
    "server-as-client::rfc5280::aki::cross-signed-root-missing-aki": (
        "RFC 5280 §4.2.1.1, tagged pedantic-rfc5280 by limbo. " + _CRYPTOGRAPHY_SAME_AS_PYCA),
    **{f"server-as-client::webpki::aki::{name}": (
        "CA/B Forum BR §7.1.2.1.3 root AKI content; the operator's own root is a trust anchor, whose "
        "extensions RFC 5280 §6.1 does not check. " + _CRYPTOGRAPHY_SAME_AS_PYCA)
       for name in ("root-with-aki-authoritycertissuer", "root-with-aki-authoritycertserialnumber",
                    "root-with-aki-all-fields", "root-with-aki-ski-mismatch")},
    "server-as-client::rfc5280::nc::permitted-dns-match-noncritical": (
        "RFC 5280 §4.2.1.10 says nameConstraints MUST be critical; CA/B Forum allows non-critical and "
        "cryptography follows it (limbo feature rfc5280-incompatible-with-webpki)."),
    "server-as-client::rfc5280::pc::ica-noncritical-pc": (
        "policyConstraints (RFC 5280 §4.2.1.11) are not processed: authz does not use certificate "
        "policies at all (limbo feature has-policy-constraints; pyca skips it too)."),
    # -- refused although limbo expects SUCCESS (fails closed) ----------------------------
    "server-as-client::rfc5280::nc::permitted-dn-match": (
        "directoryName name constraints (RFC 5280 §4.2.1.10) are not supported by cryptography; "
        "a critical one makes the chain fail, which is the safe side."),
    **{f"server-as-client::{name}": (
        "The leaf is named by an iPAddress SAN only; authz derives principals from URI, DNS and email "
        "SANs or the subject CN (principal_from), so no principal, no allow (RFC 5280 §4.2.1.6 allows "
        "such a leaf; authz does not name clients by address).")
       for name in ("rfc5280::nc::permitted-ipv4-match", "rfc5280::nc::permitted-ipv6-match",
                    "webpki::san::exact-localhost-ip-san")},
    "server-as-client::rfc5280::ca-as-leaf": (
        "A CA certificate as the client leaf is refused (CA/B Forum; RFC 5280 §4.2.1.9 leaves it open). "
        + _CRYPTOGRAPHY_SAME_AS_PYCA.replace("does not enforce this", "refuses it")),
    "server-as-client::pathlen::validation-ignores-pathlen-in-leaf": (
        "The leaf asserts cA=TRUE (with a pathLen); refused as a CA in the leaf position, as above."),
    "server-as-client::pathlen::max-chain-depth-1-self-issued": (
        "Self-issued intermediates count towards the chain depth, as they do for pathLen below."),
    "server-as-client::pathlen::self-issued-certs-pathlen": (
        "Self-issued intermediates count towards pathLenConstraint here, unlike RFC 5280 §6.1.4(l); "
        "the stricter count, shared with Go and rustls-webpki."),
}

# Cases that are not client cases even after re-issuing: limbo expects a serverAuth leaf.
NOT_CLIENT = "limbo validates this leaf for serverAuth; authz authenticates clients (clientAuth)"


def _cases() -> list[tuple[str, dict]]:
    found = []
    for corpus in CORPORA:
        path = VECTORS / corpus
        if path.exists():
            found += [(corpus, c) for c in json.loads(path.read_text())["testcases"]
                      if c["validation_kind"] == "CLIENT"]
    return found


CASES = _cases()


def _verdict(case: dict, tmp_path: Path, store, monkeypatch) -> tuple[bool, object]:
    """(allowed, decision or refusal) for one case, through policy load and the engine."""
    policy_dir = tmp_path / "policies"
    certs = policy_dir / "certs"
    certs.mkdir(parents=True)
    (certs / "ca.pem").write_text("".join(case["trusted_certs"]))
    names = case["expected_peer_names"] or []
    config = {"type": "mtls", "ca_file": "certs/ca.pem",
              "principal_from": "san_email" if names and names[0]["kind"] == "RFC822" else "san_dns"}
    for index, crl in enumerate(case["crls"]):
        (certs / f"crl-{index}.pem").write_text(crl)
    if case["crls"]:
        config["crl_files"] = [f"certs/crl-{i}.pem" for i in range(len(case["crls"]))]
    write_policy(policy_dir, {"authenticators": {"mesh": config},
                              "routes": [{"id": "r", "require": "mesh"}]})
    when = case["validation_time"]
    now = dt.datetime.fromisoformat(when).timestamp() if when else time.time()
    monkeypatch.setattr(mtls, "clock", lambda: now)
    depth = case["max_chain_depth"]
    context = Context(store=store, max_chain_length=depth + 2 if depth is not None else 16)
    try:
        engine = DecisionEngine(load_policy(policy_dir, context))
    except PolicyError as exc:
        return False, exc  # a refused configuration authenticates nobody
    chain = case["peer_certificate"] + "".join(case["untrusted_intermediates"])
    decision = engine.decide(CheckRequest.build("POST", "/x", "svc", client_certs=(from_pem("api", chain),)))
    return decision.allowed, decision


@pytest.mark.skipif(not CASES, reason=f"x509-limbo corpora not found in {VECTORS}")
@pytest.mark.parametrize(("corpus", "case"), CASES, ids=[c["id"] for _, c in CASES])
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_limbo_client_case(corpus, case, tmp_path, store, monkeypatch):
    if case["extended_key_usage"] != ["clientAuth"]:
        pytest.skip(NOT_CLIENT)
    allowed, detail = _verdict(case, tmp_path, store, monkeypatch)
    expected = case["expected_result"] == "SUCCESS"
    if case["id"] in EXCEPTIONS:
        assert allowed is not expected, f"listed exception now agrees with limbo; remove it: {case['id']}"
        return
    assert allowed is expected, f"{case['id']}: {getattr(detail, 'detail', detail)}"
    if allowed and case["expected_peer_names"]:
        assert detail.principal.id == case["expected_peer_names"][0]["value"]


def test_every_listed_exception_is_a_case():
    if not CASES:
        pytest.skip(f"x509-limbo corpora not found in {VECTORS}")
    assert set(EXCEPTIONS) <= {c["id"] for _, c in CASES}


def test_no_client_or_crl_case_is_an_exception():
    """The issue's bar: limbo's CLIENT cases and the clientAuth CRL cases agree 100 %."""
    assert not [i for i in EXCEPTIONS if not i.startswith("server-as-client::")]


def test_reason_codes_for_crl_refusals(tmp_path, store, monkeypatch):
    """A revoked leaf is credential_revoked; an unusable CRL is a plain refusal naming the rule."""
    if not (VECTORS / "limbo-crl-clientauth.json").exists():
        pytest.skip(f"limbo-crl-clientauth.json not found in {VECTORS}")
    cases = {c["id"]: c for c in json.loads((VECTORS / "limbo-crl-clientauth.json").read_text())["testcases"]}
    _, revoked = _verdict(cases["adapted-clientauth::crl::revoked-certificate-with-crl"], tmp_path / "a", store,
                          monkeypatch)
    assert (revoked.status, revoked.reason) == (401, Reason.CREDENTIAL_REVOKED)
    _, missing = _verdict(cases["adapted-clientauth::crl::crlnumber-missing"], tmp_path / "b", store, monkeypatch)
    assert (missing.status, missing.reason) == (401, Reason.CREDENTIALS_INVALID)
    assert "CRLNumber is missing (RFC 5280 §5.2.3)" in missing.detail
