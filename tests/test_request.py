"""CheckRequest: path normalisation, hosts, client IP through trusted proxies."""

import ipaddress

import pytest

from authz.request import (
    TARGET_RULES,
    BadRequest,
    CheckRequest,
    Headers,
    TrustedNetworks,
    normalise_path,
    split_absolute,
)


@pytest.mark.parametrize(("raw", "expected"), [
    ("/", "/"),
    ("/v1/orders", "/v1/orders"),
    ("/a/", "/a/"),                                 # a trailing slash is not an empty segment
    ("/%61dmin/%7Euser", "/admin/~user"),          # decoded once, as upstream frameworks route
    ("/a%2db%5fc%2Ed", "/a-b_c.d"),
    ("/files/a%20b", "/files/a b"),
    ("/files/a%3fb", "/files/a?b"),
    ("/v1/orders/42%3Aapprove", "/v1/orders/42:approve"),
    ("/caf\u00e9/x", "/caf\u00e9/x"),                # UTF-8 text, raw…
    ("/caf%C3%A9/x", "/caf\u00e9/x"),               # …or percent-encoded: one spelling
    ("/%2e%2e.x/y", "/...x/y"),                    # a segment that merely starts with dots
])
def test_paths_are_decoded_once(raw, expected):
    assert normalise_path(raw) == expected


@pytest.mark.parametrize(("raw", "rule"), [
    ("/admin/../static/x", "dot_segments"), ("/static/./x", "dot_segments"), ("/a/..", "dot_segments"),
    ("/static/%2e%2e/admin", "dot_segments"), ("/static/%2E./admin", "dot_segments"), ("/a/.%2e", "dot_segments"),
    ("/admin//x", "empty_segments"), ("//admin", "empty_segments"), ("/a//", "empty_segments"),
    ("/a%2fb", "encoded_slash"), ("/a%2Fb", "encoded_slash"), ("/a%5cb", "encoded_slash"),
    ("/a%25b", "encoded_percent"), ("/%252e%252e/x", "encoded_percent"),
    ("/..;/admin", "semicolon"), ("/admin;x=1/y", "semicolon"), ("/a;", "semicolon"),
    ("/a\\b", "backslash"),
])
def test_ambiguous_targets_are_refused_unless_relaxed(raw, rule):
    with pytest.raises(BadRequest, match="ambiguous"):
        normalise_path(raw)
    if raw.startswith("/a/..") or raw == "/a/.%2e":
        return  # resolving leaves something else to check: covered below
    assert normalise_path(raw, frozenset({rule})).startswith("/")


def test_relaxed_rules_say_what_is_matched():
    assert normalise_path("/v1//orders///42", frozenset({"empty_segments"})) == "/v1/orders/42"
    assert normalise_path("/v1/./orders/../orders/42", frozenset({"dot_segments"})) == "/v1/orders/42"
    assert normalise_path("/a/b/..", frozenset({"dot_segments"})) == "/a/"
    assert normalise_path("/a%2fb/c", frozenset({"encoded_slash"})) == "/a%2Fb/c"  # still one segment
    assert normalise_path("/a%25b", frozenset({"encoded_percent"})) == "/a%b"
    assert normalise_path("/a;b=1/c", frozenset({"semicolon"})) == "/a;b=1/c"
    with pytest.raises(BadRequest, match="above the root"):
        normalise_path("/%2e%2e/etc/passwd", frozenset({"dot_segments"}))


@pytest.mark.parametrize("raw", [
    "/a%00b", "/a\x00b", "/a%0d%0aX: y", "/a%7f", "/a%C2%85",   # control characters, C1 too
    "/a%ff", "/a%C3", "/a%ED%A0%80",                            # invalid UTF-8 (a lone surrogate too)
    "/a%zz", "/a%4",                                            # malformed escapes
    "relative/path", "", "*",
    "/a b", "/a\tb",
    "/" + "a" * 9000,
])
def test_unreadable_paths_are_refused_whatever_is_relaxed(raw):
    for allow in (frozenset(), frozenset(TARGET_RULES)):
        with pytest.raises(BadRequest):
            normalise_path(raw, allow)


def test_build_splits_query_and_normalises_host():
    req = CheckRequest.build("GET", "/y?a=1&b=%2F", "API.Example.com.:443", "HTTPS")
    assert (req.method, req.path, req.query, req.scheme) == ("GET", "/y", "a=1&b=%2F", "https")
    assert CheckRequest.build("GET", "/", "API.Example.com.:8443").host == "api.example.com"
    assert CheckRequest.build("GET", "/", "[::1]:8080").host == "[::1]"


@pytest.mark.parametrize("host", ["[::1", "a b", "user@evil.example", "a/b", "h\r\nX: y"])
def test_malformed_hosts_are_refused(host):
    with pytest.raises(BadRequest):
        CheckRequest.build("GET", "/", host)


def test_fragment_is_refused_unless_relaxed():
    with pytest.raises(BadRequest, match="'#'"):
        CheckRequest.build("GET", "/static/x#/../../admin/users", "h")
    assert CheckRequest.build("GET", "/static/x#/../../admin", "h", allow=frozenset({"fragment"})).path == "/static/x"


def test_absolute_form_must_name_the_host():
    req = CheckRequest.build("GET", "http://API.example.com/x?q", "api.example.com")
    assert (req.host, req.path, req.query) == ("api.example.com", "/x", "q")
    with pytest.raises(BadRequest, match="another host"):
        CheckRequest.build("GET", "http://docs.example.com/admin", "api.example.com")
    with pytest.raises(BadRequest):
        CheckRequest.build("GET", "ftp://api.example.com/x", "api.example.com")


def test_methods_are_kept_exactly_as_sent():
    assert CheckRequest.build("get", "/").method == "get"
    assert CheckRequest.build("M-SEARCH", "/").method == "M-SEARCH"


@pytest.mark.parametrize("method", ["", "G E T", "GE\r\nT", "ÄPFEL", "GET/1"])
def test_malformed_method_is_refused(method):
    with pytest.raises(BadRequest):
        CheckRequest.build(method, "/")


def test_method_overrides_are_collected_and_checked():
    req = CheckRequest.build("POST", "/", headers={"X-HTTP-Method-Override": "DELETE", "X-Method-Override": "DELETE"})
    assert req.other_readings == (("DELETE", "/"),)
    for headers in ({"X-HTTP-Method-Override": "DELETE, GET"},  # not a method
                    {"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "PUT"}):  # which one wins? refused
        with pytest.raises(BadRequest):
            CheckRequest.build("POST", "/", headers=headers)


@pytest.mark.parametrize(("method", "target", "readings"), [
    ("GET", "/x", ()),
    ("get", "/x", (("GET", "/x"),)),                              # frameworks upper-case the method
    ("HEAD", "/x", (("GET", "/x"),)),                             # and answer HEAD with the GET handler
    ("GET", "/x/", (("GET", "/x"),)),                             # and route /x/ as /x
    ("GET", "/", ()),
    ("POST", "/x?_method=delete", (("DELETE", "/x"), ("delete", "/x"))),
])
def test_other_readings(method, target, readings):
    assert CheckRequest.build(method, target).other_readings == readings


def test_headers_are_case_insensitive_and_bounded():
    headers = Headers([("X-API-Key", "a"), ("x-api-key", "b")])
    assert headers["X-Api-Key"] == "a, b"
    assert "AUTHORIZATION" not in headers
    with pytest.raises(BadRequest):
        Headers({"Authorization": "x" * 20000})


def test_environ_headers_are_picked_out_of_the_process_environment_and_bounded():
    # granian copies os.environ into every request's environ: only HTTP_* are headers.
    environ = {"PATH": "/usr/bin", "HOME": "/root", "REMOTE_ADDR": "127.0.0.1", "HTTP_X_API_KEY": "k",
               "HTTP_X_AUTHZ_PROXY_SECRET": "s", "HTTPX": "not a header", "http_lower": "nor this"}
    headers = Headers.from_environ(environ, frozenset({"HTTP_X_AUTHZ_PROXY_SECRET"}))
    assert dict(headers.items()) == {"x-api-key": "k"}
    with pytest.raises(BadRequest, match="header X_FORWARDED_FOR longer than 16384"):
        Headers.from_environ({**environ, "HTTP_X_FORWARDED_FOR": "1" * 16385})


TRUSTED = TrustedNetworks(["127.0.0.1/32", "10.0.0.0/8"])


def test_trusted_networks_keep_their_answers_right():
    # Answers are kept per address; a random walk over addresses, repeated and past the
    # bound, gives what comparing with every network gives.
    import random

    from authz import request

    rng = random.Random(13)
    trusted = TrustedNetworks(["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"])
    pool = [ipaddress.ip_address(rng.choice([f"10.{rng.randrange(3)}.0.{rng.randrange(256)}",
                                             f"192.0.2.{rng.randrange(256)}", f"::ffff:10.0.0.{rng.randrange(9)}",
                                             f"2001:db8::{rng.randrange(99):x}", f"2001:db9::{rng.randrange(9):x}"]))
            for _ in range(6000)]
    for address in pool + pool[:500]:
        assert (address in trusted) == request.in_networks(address, trusted.networks), address
    assert len(trusted._known) <= 4096
    assert None not in trusted
    assert request.parse_ip("not an address") is None and request.parse_ip("not an address") is None
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


@pytest.mark.parametrize("query", ["_method=DELETE", "a=1&_method=DELETE", "_m%65thod=DELETE",
                                   "%5f%6d%65%74%68%6f%64=DELETE", ".method=DELETE", "%20method=DELETE",
                                   "[method=DELETE"])
def test_method_override_in_the_query(query):
    # names decoded as Node's URLSearchParams and PHP read them (PHP: '.', ' ', '[' → '_')
    assert CheckRequest.build("POST", "/x?" + query).other_readings == (("DELETE", "/x"),)


def test_query_override_refusals():
    assert CheckRequest.build("GET", "/x?my_method=DELETE").other_readings == ()
    for query in ("_method=DEL%20ETE", "_method=PUT&_method=PATCH"):
        with pytest.raises(BadRequest):
            CheckRequest.build("POST", "/x?" + query)


@pytest.mark.parametrize("url", ["http://api.example.com?/admin/x", "http://api.example.com#/admin"])
def test_absolute_url_without_a_path_start_is_refused(url):
    with pytest.raises(BadRequest):
        split_absolute(url)
