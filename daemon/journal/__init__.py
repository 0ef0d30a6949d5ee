"""The journal: SQLite (WAL) record of every request, chain, job try and event.

`Journal` lives in :mod:`daemon.journal.store`; it is loaded on first use here so that
`python -m daemon.journal.schema --regen` does not import the schema module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.journal.errors import (
    AlreadyExists,
    ForeignJournal,
    IllegalTransition,
    JournalError,
    JournalTooNew,
    JournalUnavailable,
)
from daemon.journal.rows import (
    JobRow,
    LoadedRequest,
    RequestFilter,
    RequestRecord,
    TryEnd,
    WriterStats,
)

if TYPE_CHECKING:
    from daemon.journal.store import Journal

__all__ = [
    "AlreadyExists",
    "ForeignJournal",
    "IllegalTransition",
    "JobRow",
    "Journal",
    "JournalError",
    "JournalTooNew",
    "JournalUnavailable",
    "LoadedRequest",
    "RequestFilter",
    "RequestRecord",
    "TryEnd",
    "WriterStats",
]


def __getattr__(name: str) -> Any:
    if name == "Journal":
        from daemon.journal.store import Journal

        return Journal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
