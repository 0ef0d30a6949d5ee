"""What a chain's traverser is given: the journal's view of its chain, then its inbox messages.

The traverser changes the state of its chain only in its loop, one message at a time: work that
waits (a journal write, a job try, an expansion), timers and control calls report back through
the inbox with one of these messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.jobs.base import JobResult
from daemon.model import JobState

#: states of a job that will not run again: its successors may start
DONE = frozenset({JobState.COMPLETE, JobState.SKIPPED})


@dataclass
class ChainState:
    """What the journal says about a chain when its traverser starts."""

    state: dict[str, JobState]
    tries: dict[str, int] = field(default_factory=dict)
    epoch: dict[str, int] = field(default_factory=dict)
    budget: dict[str, int] = field(default_factory=dict)
    scope_tries: dict[str, int] = field(default_factory=dict)


# ---- inbox messages


@dataclass
class TryEnded:
    job_id: str
    try_no: int
    result: JobResult
    reason: str | None  # why we stopped it, if we did


@dataclass
class LaunchFailed:
    job_id: str
    error: BaseException


@dataclass
class Written:
    apply: Callable[[], None]


@dataclass
class WriteFailed:
    what: str
    error: BaseException


@dataclass
class Timer:
    apply: Callable[[], None]


@dataclass
class Control:
    kind: str  # "stop" | "suspend" | "shutdown"
    grace: float = 0.0
    reason: str = ""


@dataclass
class Wake:
    pass


Message = TryEnded | LaunchFailed | Written | WriteFailed | Timer | Control | Wake
