"""Shared by the Spin Cycle conformance tests: where the suite lives, and its cases.

The suite (Spin Cycle's own tests, transcribed) sits next to the repository, in
`../shared/conformance/spincycle`; a test module that needs it skips itself when it is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SPINCYCLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "spincycle"
SPINCYCLE_SPECS = SPINCYCLE_DIR / "specs"


def spincycle_available() -> bool:
    return (SPINCYCLE_DIR / "cases.yaml").is_file()


def spincycle_cases(*kinds: str) -> list[dict[str, Any]]:
    """The cases of the given kinds (all if none given), in file order; [] without the suite."""
    if not spincycle_available():
        return []
    cases: list[dict[str, Any]] = yaml.safe_load((SPINCYCLE_DIR / "cases.yaml").read_text())[
        "cases"
    ]
    return [c for c in cases if not kinds or c["kind"] in kinds]
