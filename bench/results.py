"""bench/RESULTS.md: ``bench.py`` writes the file; each later script puts its own section back."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(heading: str, section: str) -> None:
    """Put ``section`` (starting with ``## <heading>``) at the end of RESULTS.md, in place
    of an earlier section of that heading."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    text = re.sub(rf"\n## {re.escape(heading)}.*?(?=\n## |\Z)", "\n", text, flags=re.S).rstrip("\n")
    RESULTS.write_text(text + "\n\n" + section)
