"""The ``authz`` CLI: --json for scripts, one-line errors, nothing changed on bad input."""

import json
import re

import bcrypt
import pytest
from click.testing import CliRunner

from authz.cli import main


@pytest.fixture(params=["sqlite", "postgresql"])
def run(request, tmp_path):
    """The CLI on a fresh store: an SQLite file, and a PostgreSQL database."""
    db = tmp_path / "cli.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")

    def run(*args, input=None, ok=True):
        result = CliRunner().invoke(main, ["--db", str(db), *args], input=input)
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result

    run("db", "init")
    return run


def snapshot(run):
    return run("keys", "list", "--json").output + run("users", "list", "--json").output


def test_db_init_is_idempotent(run):
    out = json.loads(run("db", "init", "--json").output)
    assert out["from_version"] == out["version"] >= 1


def test_db_copy_round_trips_sqlite_postgresql_sqlite(tmp_path, pg_url):
    first, last = tmp_path / "first.db", tmp_path / "last.db"

    def cli(*args, ok=True):
        result = CliRunner().invoke(main, list(map(str, args)), input="pw\n")
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    cli("--db", first, "db", "init")
    key = json.loads(cli("--db", first, "keys", "create", "--principal", "partner-a", "--json"))
    signing = json.loads(cli("--db", first, "keys", "create", "--principal", "partner-a", "--signing", "hmac-sha256",
                             "--json"))
    cli("--db", first, "users", "add", "alice", "--password-stdin")
    cli("--db", first, "tokens", "revoke", "--jti", "j-1")
    there = json.loads(cli("db", "copy", "--from", first, "--to", pg_url, "--json"))
    back = json.loads(cli("db", "copy", "--from", pg_url, "--to", last, "--json"))
    assert there["checksum"] == back["checksum"] and there["tables"] == back["tables"]
    assert there["tables"]["api_keys"] == 2 and there["tables"]["signing_keys"] == 1
    listed = json.loads(cli("--db", last, "keys", "list", "--json"))
    assert sorted(k["id"] for k in listed) == sorted([key["id"], signing["id"]])
    # the signing material came along (the checksums compare it): the copy verifies with the same secret
    from authz.store import open_store

    copy = open_store(str(last))
    copied = copy.keys.find_by_id(signing["id"])
    copy.close()
    assert (copied.signing_alg, copied.signing_key) == ("hmac-sha256", signing["signing_secret"])
    assert "is not empty (principals, api_keys" in cli("db", "copy", "--from", first, "--to", pg_url, ok=False)


def test_commands_need_an_initialised_db(tmp_path):
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "none.db"), "keys", "list"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: credential store {tmp_path / 'none.db'} not found: run `authz db init`"


def test_keys_create_prints_the_key_once(run):
    result = run("keys", "create", "--principal", "partner-a", "--scope", "orders:read",
                 "--env", "test", "--allow-ip", "203.0.113.0/24", "--expires-in", "90d")
    key = re.search(r"sk_test_[0-9A-Za-z]{43}", result.output).group(0)
    listing = run("keys", "list").output
    assert key not in listing and key[-4:] in listing
    records = json.loads(run("keys", "list", "--json").output)
    assert records[0]["scopes"] == ["orders:read"] and records[0]["allow_ips"] == ["203.0.113.0/24"]
    assert records[0]["expires_at"] - records[0]["created_at"] == pytest.approx(90 * 86400, abs=5)
    assert "key" not in records[0]


def test_keys_create_json(run):
    out = json.loads(run("keys", "create", "--principal", "p", "--json").output)
    assert out["key"].startswith("sk_live_") and out["id"].startswith("key_") and out["status"] == "active"


def test_rotate_then_revoke(run):
    old = json.loads(run("keys", "create", "--principal", "p", "--json").output)
    rotated = json.loads(run("keys", "rotate", old["id"], "--grace", "7d", "--json").output)
    assert rotated["old"]["status"] == "deprecated"
    assert rotated["old"]["expires_at"] == pytest.approx(rotated["new"]["created_at"] + 7 * 86400, abs=5)
    assert rotated["new"]["key"].startswith("sk_live_")
    text = run("keys", "list").output
    assert f"-> {rotated['new']['id']}" in text and f"<- {old['id']}" in text and "never" in text
    revoked = json.loads(run("keys", "revoke", old["id"], "--json").output)
    assert revoked["status"] == "revoked"


@pytest.mark.parametrize(("args", "message"), [
    (["keys", "create", "--principal", "p", "--expires-in", "soon"], "'soon' is not a duration"),
    (["keys", "create", "--principal", "p", "--allow-ip", "10.0.0.0/33"], "invalid CIDR '10.0.0.0/33'"),
    (["keys", "create", "--principal", "bad name"], "invalid principal name 'bad name'"),
    (["keys", "create", "--principal", "p", "--scope", 'a"b'], "invalid scope"),
    (["keys", "create", "--principal", "p", "--env", "prod"], "'prod' is not one of"),
    (["keys", "revoke", "key_doesnotexist"], "no API key with id 'key_doesnotexist'"),
    (["keys", "rotate", "key_doesnotexist"], "no API key with id 'key_doesnotexist'"),
    (["keys", "rotate", "key_x", "--grace", "-1d"], "is not a duration"),
    (["users", "disable", "nobody"], "no principal named 'nobody'"),
    (["users", "add", "x"], "use --password-stdin"),
])
def test_bad_input_is_one_line_and_changes_nothing(run, args, message):
    before = snapshot(run)
    result = run(*args, ok=False)
    assert message in result.output
    assert result.output.count("Error:") == 1
    assert snapshot(run) == before


def test_users_add_disable_passwd(run):
    run("users", "add", "alice", "--password-stdin", "--scope", "s1", "--role", "admin", input="pw\n")
    result = run("users", "add", "alice", "--password-stdin", input="pw\n", ok=False)
    assert "already exists" in result.output
    users = json.loads(run("users", "list", "--json").output)
    assert users[0]["roles"] == ["admin"] and users[0]["has_password"]
    run("users", "passwd", "alice", "--password-stdin", input="new\n")
    run("users", "disable", "alice")
    assert json.loads(run("users", "list", "--json").output)[0]["disabled"] is True


def test_import_htpasswd(run, tmp_path):
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"# nginx users\nalice:{good}\nbob:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"
                        "carol:$apr1$abcdefgh$0123456789abcdefghijkl\n")
    before = snapshot(run)
    result = run("users", "import-htpasswd", str(htpasswd), ok=False)
    assert "nothing imported: 2 line(s) refused" in result.output
    assert "line 3 (bob): {SHA} is a single unsalted SHA-1" in result.output
    assert "line 4 (carol): MD5-crypt" in result.output
    assert snapshot(run) == before

    out = json.loads(run("users", "import-htpasswd", str(htpasswd), "--skip-unsupported",
                         "--role", "staff", "--json").output)
    assert out["imported"] == ["alice"] and [r["user"] for r in out["refused"]] == ["bob", "carol"]
    users = json.loads(run("users", "list", "--json").output)
    assert [(u["name"], u["roles"]) for u in users] == [("alice", ["staff"])]


def test_policy_check(tmp_path):
    from tests.conftest import ROOT

    result = CliRunner().invoke(main, ["policy", "check", str(ROOT / "policies"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True
    (tmp_path / "p.json").write_text('{"routes": [{"id": "r", "require": "ghost"}]}')
    result = CliRunner().invoke(main, ["policy", "check", str(tmp_path)])
    assert result.exit_code == 1 and "/routes/0/require: unknown authenticator 'ghost'" in result.output


def test_tokens_revoke(run, tmp_path):
    import time

    from tests.idp import mint, rsa_key

    out = json.loads(run("tokens", "revoke", "--jti", "abc", "--issuer", "https://idp", "--json").output)
    assert out["value"] == "abc" and out["issuer"] == "https://idp"
    assert out["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=5)
    token = mint(rsa_key(), jti="from-token", exp=int(time.time()) + 600)
    (tmp_path / "t.jwt").write_text(token)
    out = json.loads(run("tokens", "revoke", "--token", str(tmp_path / "t.jwt"), "--json").output)
    assert (out["value"], out["issuer"]) == ("from-token", "https://idp.example.com")
    assert out["expires_at"] == pytest.approx(time.time() + 600 + 300, abs=5)
    listed = json.loads(run("tokens", "list", "--json").output)
    assert [r["value"] for r in listed] == ["abc", "from-token"]
    (tmp_path / "bad.jwt").write_text("not-a-token")
    assert "not a JWT" in run("tokens", "revoke", "--token", str(tmp_path / "bad.jwt"), ok=False).output
    assert "give --jti or --token" in run("tokens", "revoke", ok=False).output
    expired = mint(rsa_key(), jti="old", exp=int(time.time()) - 3600)
    (tmp_path / "old.jwt").write_text(expired)
    assert "already expired" in run("tokens", "revoke", "--token", str(tmp_path / "old.jwt"), ok=False).output


def test_certs_add_revoke_list(run, tmp_path):
    from tests.pki import Pki

    pki = Pki()
    leaf = pki.leaf()
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    out = json.loads(run("certs", "add", "--principal", "payments-api", "--file", str(tmp_path / "leaf.pem"),
                         "--json").output)
    assert out["fingerprint"] == leaf.sha256 and out["kind"] == "service"
    colons = ":".join(leaf.sha256[i:i + 2] for i in range(0, 64, 2)).upper()
    assert "already registered to payments-api" in run("certs", "add", "--principal", "x", "--fingerprint",
                                                        colons, ok=False).output
    out = json.loads(run("certs", "revoke", "--fingerprint", colons, "--json").output)
    assert out["value"] == leaf.sha256
    issuer = pki.intermediate.cert.subject.rfc4514_string()
    out = json.loads(run("certs", "revoke", "--issuer", issuer, "--serial", "0x00ABCDEF", "--json").output)
    assert (out["issuer"], out["value"]) == (issuer, "abcdef")
    listed = json.loads(run("certs", "list", "--json").output)
    assert [r["principal"] for r in listed["registered"]] == ["payments-api"]
    assert {r["value"] for r in listed["revoked"]} == {leaf.sha256, "abcdef"}


@pytest.mark.parametrize(("args", "message"), [
    (["certs", "add", "--principal", "p"], "give exactly one of --fingerprint or --file"),
    (["certs", "add", "--principal", "p", "--fingerprint", "abc"], "is not a SHA-256 fingerprint"),
    (["certs", "revoke", "--serial", "01"], "give exactly one of"),
    (["certs", "revoke", "--issuer", "not a dn", "--serial", "01"], "is not an RFC 4514 distinguished name"),
    (["certs", "revoke", "--issuer", "CN=x", "--serial", "xyz"], "is not a hexadecimal serial number"),
])
def test_certs_bad_input(run, args, message):
    before = run("certs", "list", "--json").output
    assert message in run(*args, ok=False).output
    assert run("certs", "list", "--json").output == before


@pytest.fixture
def bad_files(tmp_path):
    """Files and paths that the bad inputs below name."""
    broken = tmp_path / "broken"
    (broken / "tests").mkdir(parents=True)
    (broken / "p.json").write_text('{"routes": [{"id": "a"}, {"id": "b"}]}')  # two problems
    (broken / "tests" / "t.json").write_text('{"cases": []}')
    (tmp_path / "not-a-cert.pem").write_text("not a certificate")
    (tmp_path / "not-a-db").write_text("not an SQLite database" * 100)
    (tmp_path / "htpasswd").write_text("alice:$1$xyz$abc\n")
    (tmp_path / "token").write_text("not-a-token")
    (tmp_path / "tests.json").write_text("{not JSON")
    (tmp_path / "shapeless.json").write_text('{"cases": 5}')
    (tmp_path / "fixture.json").write_text('{"fixtures": {"keys": [{"name": "k"}]}, "cases": []}')
    return {"broken": broken, "missing": tmp_path / "missing", "nodb": tmp_path / "no-dir" / "authz.db",
            "notdb": tmp_path / "not-a-db", "notcert": tmp_path / "not-a-cert.pem", "htpasswd": tmp_path / "htpasswd",
            "token": tmp_path / "token", "tests": tmp_path / "tests.json", "shapeless": tmp_path / "shapeless.json",
            "fixture": tmp_path / "fixture.json", "policies": "policies"}


EXPLAIN = ["policy", "explain", "GET", "https://h/x"]
# Every command with bad input: (arguments, what the message says, lines it may take:
# one, or one per policy problem).
EVERY_COMMAND_BAD_INPUT = [
    (["--db", "{notdb}", "db", "init"], "is not an SQLite database", 1),
    (["--db", "{nodb}", "keys", "list"], "not found: run `authz db init`", 1),
    (["db", "copy", "--from", "{nodb}", "--to", "{missing}"], "not found: run `authz db init`", 1),
    (["keys", "create", "--principal", "p", "--expires-in", "soon"], "'soon' is not a duration", 1),
    (["keys", "create", "--principal", "p", "--expires-in", "9999999999d"], "longer than 100 years", 1),
    (["keys", "revoke", "key_nope"], "no API key with id 'key_nope'", 1),
    (["keys", "rotate", "key_nope"], "no API key with id 'key_nope'", 1),
    (["keys", "show", "key_nope"], "no API key with id 'key_nope'", 1),
    (["keys", "usage", "key_nope"], "no API key with id 'key_nope'", 1),
    (["keys", "usage", "key_nope", "--since", "1 week"], "'1 week' is not a duration", 1),
    (["keys", "list", "--unused-since", "ages"], "'ages' is not a duration", 1),
    (["keys", "expiring", "--within", "14x"], "'14x' is not a duration", 1),
    (["keys", "anomalies", "--ack", "an_nope"], "no anomaly with id 'an_nope'", 1),
    (["keys", "update", "key_nope", "--on-anomaly", "deny"], "no API key with id 'key_nope'", 1),
    (["webhooks", "secret", "--bits", "8"], "No such option '--bits'", 1),
    (["webhooks", "deliver"], "AUTHZ_WEBHOOK_URL is not set", 1),
    (["webhooks", "list", "--state", "lost"], "'lost' is not one of", 1),
    (["users", "add", "bad name", "--password-stdin"], "invalid principal name 'bad name'", 1),
    (["users", "passwd", "nobody", "--password-stdin"], "no user named 'nobody'", 1),
    (["users", "disable", "nobody"], "no principal named 'nobody'", 1),
    (["users", "enable", "nobody"], "no principal named 'nobody'", 1),
    (["--db", "{nodb}", "users", "list"], "not found: run `authz db init`", 1),
    (["users", "import-htpasswd", "{htpasswd}"], "MD5-crypt", 1),
    (["users", "import-htpasswd", "{missing}"], "does not exist", 1),
    (["certs", "add", "--principal", "svc", "--file", "{notcert}"], "is not a PEM or DER certificate", 1),
    (["certs", "revoke", "--file", "{notcert}"], "is not a PEM or DER certificate", 1),
    (["--db", "{notdb}", "certs", "list"], "not readable", 1),
    (["tokens", "revoke", "--token", "{token}"], "not a JWT", 1),
    (["tokens", "revoke", "--jti", "x", "--for", "later"], "'later' is not a duration", 1),
    (["--db", "{nodb}", "tokens", "list"], "not found: run `authz db init`", 1),
    (["--db", "{notdb}", "signing-keys", "rotate"], "not readable", 1),
    (["--db", "{nodb}", "signing-keys", "list"], "not found: run `authz db init`", 1),
    ([*EXPLAIN, "--policy-dir", "{broken}"], "/routes/0: missing required field 'require'", 2),
    ([*EXPLAIN, "--policy-dir", "{missing}"], "policy directory not found", 1),
    (["policy", "explain", "GET", "not a url", "--policy-dir", "{policies}"], "not an absolute http(s) URL", 1),
    ([*EXPLAIN, "-H", "no colon", "--policy-dir", "{policies}"], "is not 'Name: value'", 1),
    ([*EXPLAIN, "--as-key", "key_nope", "--policy-dir", "{policies}"], "no API key with id 'key_nope'", 1),
    ([*EXPLAIN, "--as-user", "nobody", "--policy-dir", "{policies}"], "no user named 'nobody'", 1),
    ([*EXPLAIN, "--cert", "{missing}", "--policy-dir", "{policies}"], "does not exist", 1),
    (["--db", "{nodb}", *EXPLAIN, "--policy-dir", "{policies}"], "not found: run `authz db init`", 1),
    (["policy", "test", "--policy-dir", "{broken}"], "/routes/1: missing required field 'require'", 2),
    (["policy", "test", "{tests}", "--policy-dir", "{policies}"], "not JSON", 1),
    (["policy", "test", "{shapeless}", "--policy-dir", "{policies}"], '"cases": [objects]', 1),
    (["policy", "test", "{fixture}", "--policy-dir", "{policies}"], "a fixture lacks 'principal'", 1),
    (["policy", "test", "--policy-dir", "{missing}"], "no test files given", 1),
    (["policy", "init", "--profile", "partner", "{notcert}"], "is a file", 1),
    (["serve", "--bind", "nowhere"], "give HOST:PORT", 1),
    (["grpc", "--bind", "256.0.0.1:1", "--policy-dir", "{policies}"], "cannot listen on 256.0.0.1:1", 2),
    (["grpc", "--policy-dir", "{broken}"], "/routes/0: missing required field 'require'", 3),
]


@pytest.mark.parametrize(("args", "message", "lines"), EVERY_COMMAND_BAD_INPUT,
                         ids=[" ".join(a for a in args if not a.startswith(("{", "--"))) + f" [{m[:20]}]"
                              for args, m, _ in EVERY_COMMAND_BAD_INPUT])
def test_bad_input_on_every_command_is_one_line_never_a_traceback(run, bad_files, args, message, lines):
    """Click's usage lines aside, the error is one ``Error:`` line (a broken policy: a
    line per problem, as `policy check` lists them), exit non-zero, and no exception
    escapes the command (which would be a traceback outside the test runner)."""
    result = run(*[a.format(**bad_files) for a in args], input="pw\n", ok=False)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    said = [line for line in result.output.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert said[0].startswith("Error: ") and result.output.count("Error:") == 1, result.output
    assert len(said) == lines and message in result.output, result.output


def test_policy_check_keeps_listing_every_problem(bad_files):
    result = CliRunner().invoke(main, ["policy", "check", str(bad_files["broken"])])
    assert result.exit_code == 1
    assert [line.split(": ")[-1] for line in result.output.splitlines()] == ["missing required field 'require'"] * 2
    assert all(line.startswith("error: ") for line in result.output.splitlines())


def test_every_command_is_covered_by_a_bad_input():
    """A new command must come with its bad input above."""
    def commands(group, prefix=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, (*prefix, name))
            else:
                yield (*prefix, name)

    covered = {("policy", "check")}  # its own output: test_policy_check_keeps_listing_every_problem
    for args, _, _ in EVERY_COMMAND_BAD_INPUT:
        words = [a for a in args if not a.startswith(("{", "-"))]
        covered |= {tuple(words[:2]), tuple(words[:1])}
    missing = sorted(" ".join(c) for c in commands(main) if c not in covered)
    assert not missing, f"no bad-input case for: {missing}"
