"""CheckRequest: path normalisation, hosts, client IP through trusted proxies."""

import ipaddress

import pytest

from authz.request import BadRequest, CheckRequest, Headers, TrustedNetworks, normalise_path


@pytest.mark.parametrize(("raw", "expected"), [
    ("/", "/"),
    ("/v1/orders", "/v1/orders"),
    ("/v1//orders///42", "/v1/orders/42"),
    ("/v1/./orders/../orders/42", "/v1/orders/42"),
    ("/%61dmin/%7Euser", "/admin/~user"),          # unreserved characters decoded
    ("/a%2db%5fc%2Ed", "/a-b_c.d"),
    ("/files/a%20b", "/files/a%20b"),               # reserved/other escapes kept…
    ("/files/a%3fb", "/files/a%3Fb"),               # …with upper-case hex
    ("/admin/%2e%2e/public", "/public"),            # encoded dots are dot segments
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a/", "/a/"),
    ("/caf\u00e9", "/caf%E9"),                      # raw non-ASCII re-escaped
])
def test_normalise_path(raw, expected):
    assert normalise_path(raw) == expected


@pytest.mark.parametrize("raw", [
    "/a%2fb", "/a%2Fb",          # encoded slash
    "/a%5cb", "/a\\b",           # backslash, encoded or raw
    "/a%00b", "/a\x00b",         # NUL
    "/a%0d%0aX: y",              # CR LF
    "/..", "/a/../..", "/%2e%2e/etc/passwd",  # above the root
    "/a%zz", "/a%4",             # malformed escapes
    "relative/path", "",
    "/a b",
    "/" + "a" * 9000,
])
def test_unsafe_paths_are_refused(raw):
    with pytest.raises(BadRequest):
        normalise_path(raw)


def test_build_splits_query_and_normalises_host_and_method():
    req = CheckRequest.build("get", "/x/../y?a=1&b=%2F", "API.Example.com:443.", "HTTPS")
    assert (req.method, req.path, req.query, req.scheme) == ("GET", "/y", "a=1&b=%2F", "https")
    assert CheckRequest.build("GET", "/", "API.Example.com.:8443").host == "api.example.com"
    assert CheckRequest.build("GET", "/", "[::1]:8080").host == "[::1]"


@pytest.mark.parametrize("method", ["", "G E T", "GE\r\nT", "ÄPFEL"])
def test_malformed_method_is_refused(method):
    with pytest.raises(BadRequest):
        CheckRequest.build(method, "/")


def test_headers_are_case_insensitive_and_bounded():
    headers = Headers([("X-API-Key", "a"), ("x-api-key", "b")])
    assert headers["X-Api-Key"] == "a, b"
    assert "AUTHORIZATION" not in headers
    with pytest.raises(BadRequest):
        Headers({"Authorization": "x" * 20000})


TRUSTED = TrustedNetworks(["127.0.0.1/32", "10.0.0.0/8"])
PEER = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(("xff", "real_ip", "expected"), [
    (None, None, "127.0.0.1"),                                 # the peer itself
    (None, "203.0.113.7", "203.0.113.7"),                      # nginx X-Real-IP
    ("203.0.113.7", None, "203.0.113.7"),
    ("203.0.113.7, 10.1.1.1", None, "203.0.113.7"),            # skip trusted hops
    ("198.51.100.1, 203.0.113.7, 10.1.1.1", None, "203.0.113.7"),  # spoofed left part ignored
    ("198.51.100.1, 203.0.113.7", "203.0.113.7", "203.0.113.7"),   # $proxy_add_x_forwarded_for
    ("10.2.2.2, 10.1.1.1", None, "10.2.2.2"),                  # all trusted: leftmost
    ("garbage, 10.1.1.1", None, None),                         # unparsable: no answer
    ("[2001:db8::1]:443", None, "2001:db8::1"),
])
def test_client_ip_walks_right_to_left(xff, real_ip, expected):
    got = TRUSTED.client_ip(PEER, xff, real_ip)
    assert (str(got) if got else None) == expected


def test_ipv4_mapped_peer_is_trusted():
    assert ipaddress.ip_address("::ffff:127.0.0.1") in TRUSTED
    assert ipaddress.ip_address("192.0.2.1") not in TRUSTED
