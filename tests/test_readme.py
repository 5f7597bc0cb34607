"""The README's walk-through works as written: its shell commands run against a real
gunicorn serving the example policies, and each curl answers as the text says."""

import os
import re
import subprocess

from tests.conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    walkthrough = text.split("## Five minutes with authz", 1)[1].split("```nginx", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", walkthrough, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #", 1)[0].strip()
            # KEY=… and key_XXXX are placeholders the reader fills in.
            if command and not command.startswith("KEY=") and "key_XXXX" not in command:
                commands.append(command)
    return commands


def test_readme_walkthrough(store, gunicorn, tmp_path):
    server = gunicorn(workers=2, AUTHZ_POLICY_DIR=str(ROOT / "policies"))
    demo = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "authz"), "--db", str(store.path), "keys", "create",
         "--principal", "demo-partner", "--scope", "orders:read", "--env", "test", "--json"],
        capture_output=True, text=True, check=True)
    key = re.search(r'"key": "(sk_test_\w+)"', demo.stdout).group(1)
    env = {**os.environ, "KEY": key, "AUTHZ_DB": str(store.path)}
    statuses = []
    for command in readme_commands():
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=30, check=False)
        assert result.returncode == 0, (command, result.stderr)
        if command.startswith("curl"):
            status = re.match(r"HTTP/1.1 (\d+)", result.stdout)
            statuses.append(int(status.group(1)) if status else result.stdout)
    assert statuses[:4] == [200, 401, 200, 403]
    assert '"reason": "insufficient_scope"' in statuses[4]
