"""The fast validator and jsonschema agree on every document: the fast one only says
yes or no, so it must never accept what jsonschema refuses (nor refuse what it accepts)."""

import copy
import json
import random

import pytest

from authz.policy import schema
from tests.conftest import ROOT

POLICY = json.loads((ROOT / "policies" / "api.json").read_text())
EXTRA = {
    "authenticators": {
        "jwt": {"type": "jwt", "issuer": "https://idp.example.com", "audience": ["a", "b"], "algorithms": ["RS256"],
                "jwks_uri": "https://idp.example.com/jwks", "leeway": 30, "scopes_claim": "scope"},
        "intro": {"type": "oauth2_introspection", "url": "https://as.example.com/i", "client_id": "c",
                  "client_secret_env": "S", "timeout": 2},
        "mesh": {"type": "mtls", "ca_file": "keys/ca.pem", "principal_from": "san_uri", "cert_sources": ["nginx"],
                 "proxy_verified": "require"},
    },
    "routes": [{"id": "x", "match": {"hosts": ["*.example.com"], "paths": ["/x/**"], "methods": ["GET", "M-SEARCH"]},
                "require": {"all": ["mesh", {"use": "jwt", "scopes": ["a"], "bind_certificate": True}]},
                "identity_token": True}],
}
ODD_VALUES = [None, True, 0, -1, 10**9, 1.5, "", "x" * 300, "GET", "get", "G ET", "/a//b", [], [1], {}, {"x": 1},
              "https://ok.example.com", "http://remote.example.com", "*", "**"]


def documents():
    base = copy.deepcopy(POLICY)
    base["authenticators"].update(EXTRA["authenticators"])
    base["routes"] += EXTRA["routes"]
    yield base
    rng = random.Random(7)
    for _ in range(600):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            mutate(doc, rng)
        yield doc


def mutate(doc, rng):
    """Replace, delete or add one value somewhere in the document."""
    parent, key = pick(doc, rng)
    roll = rng.random()
    if roll < 0.2 and isinstance(parent, dict):
        parent.pop(key, None)
    elif roll < 0.35 and isinstance(parent, dict):
        parent["unknown_" + str(rng.randint(0, 9))] = rng.choice(ODD_VALUES)
    elif isinstance(parent, list | dict):
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))


def pick(doc, rng):
    node, parent, key = doc, None, None
    for _ in range(rng.randint(1, 6)):
        if isinstance(node, dict) and node:
            parent, key = node, rng.choice(list(node))
        elif isinstance(node, list) and node:
            parent, key = node, rng.randrange(len(node))
        else:
            break
        node = parent[key]
    return (parent, key) if parent is not None else (doc, "routes")


def test_fast_validator_is_in_use():
    assert schema.fast_validator() is not None


def test_fast_and_full_validators_agree():
    fast = schema.fast_validator()
    full = schema.validator()
    accepted = refused = 0
    for doc in documents():
        valid = not list(full.iter_errors(doc))
        assert fast(doc) is valid, json.dumps(doc)[:400]
        accepted += valid
        refused += not valid
    assert accepted > 20 and refused > 300  # both directions were exercised


@pytest.mark.parametrize("doc", [
    {"routes": [{"id": "r", "match": {"methods": ["G ET"]}, "require": "k"}],
     "authenticators": {"k": {"type": "api_key"}}},
    {"routes": [{"id": "r", "require": "k", "typo": 1}], "authenticators": {"k": {"type": "api_key"}}},
    {"routes": [], "authenticators": {"k": {"type": "nope"}}},
])
def test_a_refused_document_still_gets_precise_messages(doc):
    assert schema.validate("p.json", doc)
