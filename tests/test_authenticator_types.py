"""An authenticator type declares what the rest of authz must know about it (the files
its options name, its credential slots, its lints): a new type is picked up by the
loader, snapshots, reload watching, the engine and ``authz policy check`` without an
edit to any of them."""

from __future__ import annotations

from authz.authenticators import CREDENTIAL_SLOTS, NON_HEADER_SLOTS, TYPES, Authenticator, Context, Lint
from authz.decision import Outcome
from authz.engine import DecisionEngine
from authz.policy import lint, schema
from authz.policy.loader import load_policy, read_policy_dir
from authz.policy.reloader import PolicyReloader
from authz.request import CheckRequest
from tests.conftest import write_policy


class NameListAuthenticator(Authenticator):
    """A made-up type that reads a list of names from a file its config names."""

    type = "name_list"
    file_options = ("names_file",)

    def __init__(self, name: str, config: dict, context: Context) -> None:
        super().__init__(name, config, context)
        self.names = (context.base_dir / config["names_file"]).read_text().split()

    @classmethod
    def lint(cls, config: dict) -> list[Lint]:
        return [Lint("names_file", "a list of names is no credential")]

    def authenticate(self, request: CheckRequest) -> Outcome:
        return Outcome.absent()


def _with_new_type(monkeypatch, policy_dir):
    monkeypatch.setitem(TYPES, NameListAuthenticator.type, NameListAuthenticator)
    monkeypatch.setattr(schema, "validate", lambda file, document: [])  # the schema knows the shipped types only
    (policy_dir / "lists").mkdir()
    (policy_dir / "lists" / "names.txt").write_text("ada\n")
    write_policy(policy_dir, {"authenticators": {"names": {"type": "name_list", "names_file": "lists/names.txt"}},
                              "routes": [{"id": "all", "require": "names"}]})


def test_a_new_types_file_is_snapshotted_and_watched(monkeypatch, store, policy_dir):
    _with_new_type(monkeypatch, policy_dir)
    context = Context(store=store)
    policy = load_policy(policy_dir, context)
    assert policy.contents["lists/names.txt"] == b"ada\n"  # what a snapshot restores

    engine = DecisionEngine(policy)
    reloader = PolicyReloader(engine, policy_dir, context, interval=3600)
    assert not reloader.check()
    (policy_dir / "lists" / "names.txt").write_text("ada\nbo\n")
    assert reloader.check()  # the file was watched
    assert engine.policy.authenticators["names"].names == ["ada", "bo"]
    assert engine.policy.revision != policy.revision
    snapshot = store.policy_snapshots.latest(str(policy_dir.resolve()))
    assert snapshot.revision == engine.policy.revision and snapshot.files["lists/names.txt"] == b"ada\nbo\n"


def test_a_new_types_lints_are_reported(monkeypatch, store, policy_dir):
    _with_new_type(monkeypatch, policy_dir)
    source = read_policy_dir(policy_dir)
    found = lint.warnings(source, load_policy(policy_dir, Context(store=store)))
    assert [(p.pointer, p.message) for p in found] == [
        ("/authenticators/names/names_file", "a list of names is no credential")]


def test_credential_slots_come_from_the_types():
    assert CREDENTIAL_SLOTS == {"authorization": "Authorization", "x-api-key": "X-API-Key"}
    assert list(CREDENTIAL_SLOTS) == ["authorization", "x-api-key"]  # the first unclaimed one is named
    assert sorted(NON_HEADER_SLOTS) == ["client_cert", "cookie", "query"]
