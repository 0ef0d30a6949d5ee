"""What can go wrong with the journal, one class per thing a caller can act on."""

from __future__ import annotations

from daemon.errors import Conflict, SpindError, Unavailable


class JournalError(SpindError):
    """The journal cannot do this."""


class ForeignJournal(JournalError):
    """This file is not a spind journal; spind refuses to open or change it."""


class JournalTooNew(JournalError):
    """This journal was written by a newer spind; upgrade spind or restore a backup."""


class IllegalTransition(JournalError, Conflict):
    """The request or job is not in a state that allows this change."""


class AlreadyExists(JournalError, Conflict):
    """A request with this id or idempotency key is already journaled."""


class JournalUnavailable(JournalError, Unavailable):
    """The journal cannot be written now (disk full, read-only, I/O error); nothing was saved."""
