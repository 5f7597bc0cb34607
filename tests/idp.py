"""A real identity provider on loopback for the token tests: a JWKS endpoint and an
RFC 7662 introspection endpoint served by ``http.server`` in a thread, with keys made
by ``cryptography``. Tests change what it serves, count what it was asked, and take
it down to simulate an outage — or make it misbehave (``mode``): ``"hang"`` (accepts,
never answers), ``"slow"`` (answers after ``slow_seconds``), ``"drip"`` (answers one
byte a second)."""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://idp.example.com"
AUDIENCE = "https://api.example.com"


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _probably_prime(n: int, rounds: int = 32) -> bool:
    if n < 2 or any(n % p == 0 for p in (2, 3, 5, 7, 11, 13)):
        return n in (2, 3, 5, 7, 11, 13)
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def roca_key() -> rsa.RSAPrivateKey:
    """A real 2048-bit RSA key built the way the Infineon library built them (ROCA,
    CVE-2017-15361): each prime is k·M + (65537^a mod M), M the product of the first
    126 primes (the paper's M for 1984-3936-bit keys)."""
    small = [n for n in range(2, 800) if all(n % d for d in range(2, int(n ** 0.5) + 1))][:126]
    modulus = 1
    for prime in small:
        modulus *= prime
    low, high = -(-(3 << 1022) // modulus), (1 << 1024) // modulus - 1

    def prime() -> int:
        while True:
            candidate = (low + secrets.randbelow(high - low)) * modulus + pow(65537, secrets.randbits(64), modulus)
            if candidate.bit_length() == 1024 and _probably_prime(candidate):
                return candidate

    while True:
        p, q = prime(), prime()
        phi = (p - 1) * (q - 1)
        if p != q and math.gcd(65537, phi) == 1:
            break
    d = pow(65537, -1, phi)
    numbers = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
                                    rsa.RSAPublicNumbers(65537, p * q))
    return numbers.private_key()


def ec_key(curve=None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(private, kid: str | None, alg: str | None = None, **extra) -> dict:
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg or "RS256"].to_jwk(private.public_key()))
    if kid is not None:
        jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    jwk.update(extra)
    return jwk


def public_pem(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def mint(private, alg: str = "RS256", kid: str | None = "k1", headers: dict | None = None, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300,
               "scope": "orders:read"}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    head = dict(headers or {})
    if kid is not None:
        head["kid"] = kid
    return jwt.encode(payload, private, algorithm=alg, headers=head)


def b64(data: bytes | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdentityProvider:
    """Serves ``/jwks`` and ``/introspect``; everything it answers is test-controlled."""

    def __init__(self) -> None:
        self.jwks: dict = {"keys": []}
        self.cache_control: str | None = "max-age=300"
        self.down = False
        self.hits: dict[str, int] = {}
        self.introspection: dict[str, dict] = {}
        self.client_id, self.client_secret = "authz", "s3cret:with/odd&chars"
        self.auth_seen: list[str] = []
        self.mode: str | None = None
        self.slow_seconds = 5.0
        self.released = threading.Event()  # set at stop: hanging and dripping handlers end
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                if provider.mode == "hang":
                    provider.released.wait(60)
                    return
                if provider.mode == "slow" and provider.released.wait(provider.slow_seconds):
                    return
                if provider.mode == "drip":
                    head = (f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(data)}\r\n\r\n").encode()
                    for byte in head + data:
                        if provider.released.wait(1.0):
                            return
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                provider.hits[self.path] = provider.hits.get(self.path, 0) + 1
                if provider.down:
                    return self._send(503, {"error": "down"})
                if self.path == "/jwks":
                    headers = {"Cache-Control": provider.cache_control} if provider.cache_control else {}
                    return self._send(200, provider.jwks, headers)
                return self._send(404, {})

            def do_POST(self) -> None:
                provider.hits[self.path] = provider.hits.get(self.path, 0) + 1
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if provider.down:
                    return self._send(503, {"error": "down"})
                if self.path != "/introspect":
                    return self._send(404, {})
                if not provider._client_ok(self.headers.get("Authorization"), form):
                    return self._send(401, {"error": "invalid_client"})
                return self._send(200, provider.introspection.get(form.get("token", ""), {"active": False}))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _client_ok(self, authorization: str | None, form: dict) -> bool:
        from urllib.parse import unquote

        if authorization and authorization.startswith("Basic "):
            user, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
            self.auth_seen.append("client_secret_basic")
            return (unquote(user), unquote(secret)) == (self.client_id, self.client_secret)
        self.auth_seen.append("client_secret_post")
        return (form.get("client_id"), form.get("client_secret")) == (self.client_id, self.client_secret)

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
