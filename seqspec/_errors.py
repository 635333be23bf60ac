"""The exception hierarchy, rooted at SpecError, and the located problems it carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


def field_path(path: Sequence) -> str:
    """('layers', 1, 'units') -> 'layers[1].units'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(value: Any) -> str:
    """A value as an error message names it: `the string '20'`, `the number 4.5`, `true`, `a mapping`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)



@dataclass(frozen=True)
class Problem:
    """One thing wrong in a spec, at a place in its file.

    `line` and `column` are 1-based; `field` is the path of the field (`layers[1].units`),
    or "" for a problem with the file itself (a YAML syntax error, binary data).
    """

    path: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(Exception):
    """Root of every error seqspec raises for a user's mistake.

    `problems` lists the located problems (one line each when printed); errors that are not
    about a place in a spec file (a backend that is not installed) have none.
    """

    def __init__(self, message: str = "", problems: Sequence[Problem] = ()):
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not message:
            message = "\n".join(str(p) for p in self.problems)
        super().__init__(message)


class BackendError(SpecError):
    """A backend that cannot be found or cannot compile what the spec asks for."""


class BackendUnavailable(BackendError):
    """A backend whose framework is not installed; the message names the extra to install."""


class WeightsError(SpecError, ValueError):
    """Canonical weights that do not fit a spec's layout: arrays missing, unexpected or misshapen."""


class DataError(SpecError):
    """Training data that is missing or malformed; the message names the file and the problem."""

