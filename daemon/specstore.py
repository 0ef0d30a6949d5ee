"""The specs the daemon serves: loaded and linted at start and on reload (SIGHUP).

A reload that finds errors keeps the old specs and remembers the errors for health; chains
already built keep the specs they were built from (the chain holds its own copy).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from daemon.diagnostics import Diagnostic, has_errors
from daemon.lint import JobTypeLookup, lint
from daemon.spec import SequenceSpec
from daemon.specload import SpecSet, load_dir


class SpecStore:
    def __init__(self, directory: str | Path, job_types: JobTypeLookup | None) -> None:
        self.directory = Path(directory)
        self.job_types = job_types
        self.current = SpecSet()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        #: how many loads (the first and every reload) have finished, for `spind reload`
        self.loads = 0

    def load(self) -> list[Diagnostic]:
        """Load and lint; adopt the new specs only when they have no errors."""
        specs = load_dir(self.directory)
        diags = lint(specs, self.job_types)
        errors = [d.format() for d in diags if d.is_error]
        self.warnings = [d.format() for d in diags if not d.is_error]
        if has_errors(diags):
            self.errors = errors
        else:
            self.current = specs
            self.errors = []
        self.loads += 1
        return diags

    def sequences(self) -> Mapping[str, SequenceSpec]:
        return self.current.sequences

    @property
    def ok(self) -> bool:
        return not self.errors
