"""Policy problems, each located by file and RFC 6901 JSON pointer."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from authz.errors import AuthzError


def pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer for a path of keys and indexes ('' for the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class PolicyProblem:
    file: str
    pointer: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}: {self.pointer}" if self.pointer else self.file
        return f"{where}: {self.message}"

    def to_json(self) -> dict:
        return {"file": self.file, "pointer": self.pointer, "message": self.message,
                "severity": self.severity}


class PolicyError(AuthzError):
    """The policy cannot be served; ``problems`` lists every reason found."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
