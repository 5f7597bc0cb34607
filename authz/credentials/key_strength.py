"""The one bar every public key must clear to be trusted by authz.

A public key enters authz in three ways: in a client certificate chain (leaf,
intermediates and the operator's roots, ``mtls``), in a JWKS (file or URL, ``jwt``)
and as a PEM public key (``jwt`` ``public_key_file``). All three ask ``key_problem``,
so the rules cannot drift apart. The module sits on its own, beside ``x509.py``
(forwarded certificate encodings) rather than inside it or ``keysets.py``, because
it is about key material whatever format carried it, and both of those depend on it.

The rules (NIST SP 800-57 / CA/Browser Forum Baseline Requirements §6.1.5, which the
x509-limbo and Wycheproof corpora also apply):

- RSA: modulus at least 2048 bits and a whole number of bytes, public exponent odd
  and at least 3, and not carrying the ROCA fingerprint (CVE-2017-15361);
- EC: P-256, P-384 or P-521 only;
- Ed25519 and Ed448;
- everything else (DSA, other curves, unknown types) is refused.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

MIN_RSA_BITS = 2048
EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

# ROCA (Nemec et al., CCS 2017): Infineon's library made every RSA prime
# p = k·M + (65537^a mod M), M the product of the first n primes (n ≥ 39 for every key
# size, so M is always divisible by each prime up to 167). A product of two such primes
# therefore has, modulo each small prime r ≤ 167, a residue in the subgroup that 65537
# generates in Z_r^*. Random moduli pass that test for all 38 odd primes with
# probability ≈ 2^-27.8, so a pass is the published fingerprint. Hand-written because
# the only PyPI implementation (roca-detect) has had no release since 2018 and pulls in
# a CLI tool's dependencies; the test itself is these few lines.
_ROCA_PRIMES = tuple(p for p in range(3, 168) if all(p % d for d in range(2, int(p ** 0.5) + 1)))
_ROCA_RESIDUES = tuple((p, frozenset(pow(65537, k, p) for k in range(p - 1))) for p in _ROCA_PRIMES)


def has_roca_fingerprint(modulus: int) -> bool:
    """True when an RSA modulus has the ROCA (CVE-2017-15361) structure."""
    return all(modulus % p in residues for p, residues in _ROCA_RESIDUES)


def key_problem(key: object) -> str | None:
    """Why this public key is refused, or None when it meets the bar."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        bits = numbers.n.bit_length()
        if bits < MIN_RSA_BITS:
            return f"RSA key of {bits} bits (at least {MIN_RSA_BITS} required)"
        if bits % 8:
            return f"RSA modulus of {bits} bits is not a whole number of bytes"
        if numbers.e < 3 or numbers.e % 2 == 0:
            return f"RSA public exponent {numbers.e} is unusable"
        if has_roca_fingerprint(numbers.n):
            return "RSA key has the ROCA fingerprint (CVE-2017-15361)"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            return f"EC curve {key.curve.name} (only P-256, P-384, P-521)"
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA keys are not accepted"
    return f"{type(key).__name__} keys are not accepted"
