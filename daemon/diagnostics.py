"""Lint findings: what is wrong, where (file, line, column), and in which sequence and node."""

from __future__ import annotations

import enum

import msgspec


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Diagnostic(msgspec.Struct, frozen=True, kw_only=True):
    """One finding. `check` is a stable name for the rule, used by tests and `--json`."""

    severity: Severity
    message: str
    check: str
    file: str = ""
    line: int = 0
    col: int = 0
    sequence: str | None = None
    node: str | None = None

    def format(self) -> str:
        """`path:line:col: error|warning: text (sequence S, node N)`."""
        where = f"{self.file or '<specs>'}:{self.line}:{self.col}"
        ctx = []
        if self.sequence is not None:
            ctx.append(f"sequence {self.sequence}")
        if self.node is not None:
            ctx.append(f"node {self.node}")
        tail = f" ({', '.join(ctx)})" if ctx else ""
        return f"{where}: {self.severity}: {self.message}{tail}"

    @property
    def is_error(self) -> bool:
        return self.severity == Severity.ERROR


def has_errors(diags: list[Diagnostic]) -> bool:
    return any(d.is_error for d in diags)


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    return (d.file, d.line, d.col, d.message)
