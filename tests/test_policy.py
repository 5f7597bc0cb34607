"""Policy loading: precise errors (file, JSON pointer, sentence) and route matching."""

import json

import pytest

from authz.admin import Admin
from authz.authenticators import Context
from authz.policy import PolicyError, load_policy
from authz.request import CheckRequest
from tests.conftest import engine_for, write_policy

BASE = {
    "authenticators": {"staff": {"type": "basic"}, "public": {"type": "anonymous"}},
    "routes": [{"id": "r", "require": "staff"}],
}


def problems(store, directory) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy(directory, Context(store=store))
    return [str(p) for p in info.value.problems]


def test_unknown_authenticator_with_did_you_mean(store, policy_dir):
    doc = dict(BASE, routes=[{"id": "r", "require": {"any": ["public", {"use": "staf"}]}}])
    path = write_policy(policy_dir, doc)
    assert problems(store, policy_dir) == [
        f"{path}: /routes/0/require/any/1/use: unknown authenticator 'staf' (did you mean 'staff'?)"
    ]


def test_duplicates_across_files_name_the_first_file(store, policy_dir):
    first = write_policy(policy_dir, BASE, "10-a.json")
    second = write_policy(policy_dir, BASE, "20-b.json")
    assert problems(store, policy_dir) == [
        f"{second}: /authenticators/staff: authenticator 'staff' is already defined in {first}",
        f"{second}: /authenticators/public: authenticator 'public' is already defined in {first}",
        f"{second}: /routes/0/id: route id 'r' is already used in {first}",
    ]


def test_every_schema_error_is_reported_in_plain_words(store, policy_dir):
    doc = {
        "authenticators": {"k": {"type": "api_key", "allow_qeury": True}, "x": {"type": "magic"}},
        "routes": [
            {"id": "r", "match": {"methods": ["G ET"]}, "require": "k"},
            {"require": "k"},
        ],
        "rutes": [],
    }
    path = write_policy(policy_dir, doc)
    found = problems(store, policy_dir)
    assert (f"{path}: /authenticators/k: unknown field 'allow_qeury' (did you mean 'allow_query'?); "
            "allowed: description, realm, header, allow_query, environments, publishable, signatures, "
            "signature_max_age, signature_leeway") in found
    assert any(p.startswith(f"{path}: /authenticators/x/type: \"magic\" is not one of") for p in found)
    assert any(p.startswith(f"{path}: /routes/0/match/methods/0: \"G ET\" is not a valid value") for p in found)
    assert f"{path}: /routes/1: missing required field 'id'" in found
    assert any(p.startswith(f"{path}: unknown field 'rutes' (did you mean 'routes'?)") for p in found)


def test_invalid_json_names_line_and_column(store, policy_dir):
    path = policy_dir / "broken.json"
    path.write_text('{\n  "routes": [\n    {"id": "x",}\n  ]\n}')
    assert problems(store, policy_dir) == [
        f"{path}: invalid JSON at line 3 column 16: Expecting property name enclosed in double quotes"
    ]


def test_missing_or_empty_directory(store, tmp_path):
    assert problems(store, tmp_path / "nope") == [f"{tmp_path / 'nope'}: policy directory not found"]
    (tmp_path / "empty").mkdir()
    assert problems(store, tmp_path / "empty") == [
        f"{tmp_path / 'empty'}: no *.json policy files in this directory"
    ]


def test_unreadable_file(store, policy_dir):
    write_policy(policy_dir, BASE)
    dangling = policy_dir / "zz-gone.json"
    dangling.symlink_to(policy_dir / "missing-target.json")
    assert problems(store, policy_dir) == [f"{dangling}: cannot read: No such file or directory"]


def test_unnormalised_path_pattern_is_an_error(store, policy_dir):
    doc = dict(BASE, routes=[{"id": "r", "match": {"paths": ["/a//b", "/x/../y", "/ok/**"]}, "require": "staff"}])
    path = write_policy(policy_dir, doc)
    found = problems(store, policy_dir)
    assert len(found) == 2
    assert found[0].startswith(f"{path}: /routes/0/match/paths/0: path '/a//b' can never match: ambiguous")
    assert found[1].startswith(f"{path}: /routes/0/match/paths/1:")


def test_pointer_escapes_per_rfc6901(store, policy_dir):
    doc = {"authenticators": {"a/b~c": {"type": "basic"}}, "routes": [{"id": "r", "require": "x"}]}
    write_policy(policy_dir, doc)
    assert any("/authenticators/a~1b~0c" in p for p in problems(store, policy_dir))


def route_for(store, policy_dir, routes, method="GET", target="/", host="api.example.com"):
    write_policy(policy_dir, {"authenticators": {"p": {"type": "anonymous"}}, "routes": routes})
    policy = load_policy(policy_dir, Context(store=store))
    route = policy.routes.match(CheckRequest.build(method, target, host))
    return route.id if route else None


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("/v1/orders", "/v1/orders", True),
    ("/v1/orders", "/v1/orders/", False),
    ("/v1/orders/*", "/v1/orders/42", True),
    ("/v1/orders/*", "/v1/orders/42/items", False),
    ("/v1/orders/*", "/v1/orders/", False),
    ("/v1/orders/**", "/v1/orders", True),
    ("/v1/orders/**", "/v1/orders/42/items", True),
    ("/v1/orders/**", "/v1/ordersX", False),
    ("/a/**/z", "/a/z", True),
    ("/a/**/z", "/a/b/c/z", True),
    ("/files/*.png", "/files/cat.png", True),
    ("/files/*.png", "/files/cat.png/x", False),
    ("/**", "/anything/at/all", True),
    ("/admin/**", "/%61dmin/x", True),                # matched decoded, as upstreams route
    ("/v1/orders/*:approve", "/v1/orders/42%3Aapprove", True),
    ("/café/**", "/caf%C3%A9/x", True),
])
def test_path_globs(store, policy_dir, pattern, path, matches):
    got = route_for(store, policy_dir, [{"id": "r", "match": {"paths": [pattern]}, "require": "p"}], target=path)
    assert (got == "r") is matches


@pytest.mark.parametrize(("hosts", "host", "matches"), [
    (["api.example.com"], "API.example.com:8443", True),
    (["api.example.com"], "www.example.com", False),
    (["*.example.com"], "a.b.example.com", True),
    (["*.example.com"], "example.com", False),
    (["*.example.com"], "badexample.com", False),
])
def test_hosts(store, policy_dir, hosts, host, matches):
    got = route_for(store, policy_dir, [{"id": "r", "match": {"hosts": hosts}, "require": "p"}], host=host)
    assert (got == "r") is matches


def test_first_match_in_file_then_route_order(store, policy_dir):
    write_policy(policy_dir, {"routes": [{"id": "second", "require": "p"}]}, "20-b.json")
    doc = {"authenticators": {"p": {"type": "anonymous"}}, "routes": [
        {"id": "get-only", "match": {"methods": ["GET"], "paths": ["/x"]}, "require": "p"},
        {"id": "first", "match": {"paths": ["/x"]}, "require": "p"},
    ]}
    write_policy(policy_dir, doc, "10-a.json")
    policy = load_policy(policy_dir, Context(store=store))
    assert policy.routes.match(CheckRequest.build("GET", "/x")).id == "get-only"
    assert policy.routes.match(CheckRequest.build("DELETE", "/x")).id == "first"
    assert policy.routes.match(CheckRequest.build("DELETE", "/y")).id == "second"


def test_revision_is_a_content_hash(store, policy_dir):
    write_policy(policy_dir, BASE)
    first = load_policy(policy_dir, Context(store=store)).revision
    assert load_policy(policy_dir, Context(store=store)).revision == first
    write_policy(policy_dir, json.loads(json.dumps(BASE)) | {"description": "changed"})
    assert load_policy(policy_dir, Context(store=store)).revision != first


def test_example_policies_load(store):
    from tests.conftest import ROOT

    policy = load_policy(ROOT / "policies", Context(store=store))
    assert [r.id for r in policy.routes.routes][:2] == ["health", "orders-read"]


METHOD_POLICY = {
    "authenticators": {"key": {"type": "api_key"}, "public": {"type": "anonymous"}},
    "routes": [
        {"id": "read", "match": {"paths": ["/docs/**"], "methods": ["GET", "HEAD"]}, "require": "public"},
        {"id": "write", "match": {"paths": ["/docs/**"], "methods": ["POST", "DELETE"]},
         "require": {"use": "key", "scopes": ["docs:write"]}},
    ],
}


@pytest.mark.parametrize(("method", "override", "allowed", "reason"), [
    ("GET", None, True, None),
    ("get", None, False, "no_route"),                        # methods are case-sensitive, as sent
    ("GET", "DELETE", False, "credentials_missing"),         # a framework may act on the override
    ("POST", "GET", False, "credentials_missing"),           # …and on the method itself
    ("GET", "HEAD", True, None),                             # both allowed
    ("GET", "delete", False, "credentials_missing"),          # read as DELETE too (frameworks upper-case)
    ("HEAD", None, True, None),
])
def test_method_overrides_must_be_allowed_too(store, policy_dir, method, override, allowed, reason):
    write_policy(policy_dir, METHOD_POLICY)
    engine = engine_for(store, policy_dir)
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        headers = {header: override} if override else {}
        decision = engine.decide(CheckRequest.build(method, "/docs/a", "h", headers=headers))
        assert decision.allowed is allowed, (header, decision.detail)
        assert decision.reason == reason if reason else decision.reason is None


def test_method_override_with_the_credentials_for_both(store, policy_dir):
    write_policy(policy_dir, METHOD_POLICY)
    _, key = Admin(store).keys.create("writer", ["docs:write"])
    decision = engine_for(store, policy_dir).decide(
        CheckRequest.build("POST", "/docs/a", "h", headers={"X-API-Key": key, "X-HTTP-Method-Override": "DELETE"}))
    assert decision.allowed and decision.route == "write"
