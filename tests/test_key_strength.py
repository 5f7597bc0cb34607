"""The one key-strength bar (``authz.credentials.key_strength``) with real keys, and its use for
PEM public keys; JWKS keys and client chains are covered in test_jwt.py and
test_mtls.py, the corpora in test_conformance_*.py."""

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519

from authz.credentials.key_strength import has_roca_fingerprint, key_problem
from authz.policy import PolicyError
from tests.conftest import engine_for, write_policy
from tests.idp import AUDIENCE, ISSUER, public_pem, roca_key, rsa_key


@pytest.mark.parametrize(("make", "problem"), [
    (lambda: rsa_key(2048), None),
    (lambda: rsa_key(3072), None),
    (lambda: ec.generate_private_key(ec.SECP256R1()), None),
    (lambda: ec.generate_private_key(ec.SECP384R1()), None),
    (lambda: ec.generate_private_key(ec.SECP521R1()), None),
    (ed25519.Ed25519PrivateKey.generate, None),
    (ed448.Ed448PrivateKey.generate, None),
    (lambda: rsa_key(1024), "RSA key of 1024 bits (at least 2048 required)"),
    (lambda: rsa_key(2052), "RSA modulus of 2052 bits is not a whole number of bytes"),
    (roca_key, "RSA key has the ROCA fingerprint (CVE-2017-15361)"),
    (lambda: ec.generate_private_key(ec.SECP256K1()), "EC curve secp256k1 (only P-256, P-384, P-521)"),
    (lambda: ec.generate_private_key(ec.SECP192R1()), "EC curve secp192r1 (only P-256, P-384, P-521)"),
    (lambda: dsa.generate_private_key(2048), "DSA keys are not accepted"),
])
def test_key_problem(make, problem):
    assert key_problem(make().public_key()) == problem


def test_roca_fingerprint_has_no_false_positive_on_ordinary_keys():
    assert not any(has_roca_fingerprint(rsa_key().public_key().public_numbers().n) for _ in range(8))
    # A product of two ROCA-structured primes is flagged; one changed residue is not.
    n = roca_key().public_key().public_numbers().n
    assert has_roca_fingerprint(n)
    assert not has_roca_fingerprint(n + 2 * 3 * 5 * 7 * 11 * 13)  # residues mod 17…167 moved


@pytest.mark.parametrize("key", [roca_key, lambda: rsa_key(1024)])
def test_weak_pem_public_keys_are_refused_at_policy_load(store, policy_dir, key):
    (policy_dir / "keys").mkdir()
    (policy_dir / "keys" / "idp.pem").write_bytes(public_pem(key()))
    write_policy(policy_dir, {
        "authenticators": {"user_jwt": {"type": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                        "algorithms": ["RS256"], "public_key_file": "keys/idp.pem"}},
        "routes": [{"id": "r", "require": "user_jwt"}]})
    with pytest.raises(PolicyError, match="the public key is refused: RSA key"):
        engine_for(store, policy_dir)
