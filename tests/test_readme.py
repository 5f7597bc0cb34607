"""The README's walk-through works as written: its shell commands run against a real
gunicorn serving the example policies, and each curl answers as the text says."""

import os
import re
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.both_stores


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
        [str(ROOT / ".venv" / "bin" / "authz"), "--db", store.url, "keys", "create",
         "--principal", "demo-partner", "--scope", "orders:read", "--env", "test", "--json"],
        capture_output=True, text=True, check=True)
    key = re.search(r'"key": "(sk_test_\w+)"', demo.stdout).group(1)
    env = {**os.environ, "KEY": key, "AUTHZ_DB": store.url}
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


def test_readme_configuration_table_is_the_settings_table():
    """The README's table is rendered from authz/config.py's, so the two cannot drift:
    after changing a setting, paste the output of `python -m authz.config` into it."""
    from authz.config import markdown_table

    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- settings table: generated from authz/config.py -->", 1)[1]
    table = table.split("<!-- end of settings table -->", 1)[0]
    assert table.strip() + "\n" == markdown_table()


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_docs_links_resolve():
    """Every relative link in the README and docs/ names a file that exists, and a
    heading in it when the link has a fragment."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    anchors = {page: {_anchor(h) for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M)} for page in pages}
    broken = []
    for page in pages:
        prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)]+)\)", prose):
            if target.startswith(("http://", "https://")):
                continue
            path, _, fragment = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            if not destination.exists() or (fragment and fragment not in anchors.get(destination, ())):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_repository_cites_only_its_own_documents():
    """Code, tests, benchmarks and deploy files cite docs/, never design notes that a
    clone of this repository does not contain."""
    outside = ("DESIGN" + ".md", "PROXIES" + ".md")
    citing = []
    for folder in ("authz", "tests", "bench", "deploy", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix not in (".pyc", ".db"):
                text = path.read_text(errors="replace")
                citing += [f"{path.relative_to(ROOT)}: {name}" for name in outside if name in text]
    text = (ROOT / "README.md").read_text()
    citing += [f"README.md: {name}" for name in outside if name in text]
    assert citing == []



def test_readme_layout_names_every_part_of_the_package():
    """The Layout section's tree lists each top-level module and package of ``authz/``,
    and nothing that is not there, so a newcomer's map cannot go stale."""
    section = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    tree = section.split("```", 2)[1]
    listed = set()
    for line in tree.splitlines():
        if not line.startswith("  ") or line.startswith("   "):
            continue  # only the entries directly under authz/
        first = line.split()[0]
        listed.add(first)
        if first.endswith(".py"):  # "app.py ...; wsgi.py ...; serve.py ..." names several
            listed.update(re.findall(r"\b\w+\.py\b", line))
    present = {p.name + ("/" if p.is_dir() else "") for p in (ROOT / "authz").iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    assert listed == present, (f"in the package, not in the README's layout: {sorted(present - listed)}; "
                               f"in the layout, not in the package: {sorted(listed - present)}")
