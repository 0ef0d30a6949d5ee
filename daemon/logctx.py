"""Log context: the request, job, try and trace ids every log line of a task carries.

`loguru.logger.contextualize` does the same, but takes loguru's handler lock twice and runs a
generator per use: ~3 us, paid by every job try (thousands a second) whether or not the try
logs a line. Here the ids live in a ContextVar of our own that costs a dict and a `set` to
enter and a `reset` to leave; a loguru *patcher*, run only for lines that are emitted, copies
them into the record's `extra`. Fields bound with `logger.bind(...)`, `logger.contextualize`
or a call's keyword arguments take precedence over the context's.

Asyncio tasks copy the context when they are created, so a job's task inherits its chain's
request id, and lines of the job's own code carry the job's ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

from loguru import logger

_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar(
    "spind_log_context", default=MappingProxyType({})
)


def push(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add `fields` to the current context; hand the token to `pop` to undo it."""
    return _CONTEXT.set({**_CONTEXT.get(), **fields})


def pop(token: Token[Mapping[str, Any]]) -> None:
    _CONTEXT.reset(token)


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """`fields` on every line logged inside the block (and in tasks created inside it)."""
    token = push(**fields)
    try:
        yield
    finally:
        pop(token)


def current() -> Mapping[str, Any]:
    return _CONTEXT.get()


def patch(record: Any) -> None:
    """loguru patcher: the context's fields into the record's `extra`, bound ones first."""
    fields = _CONTEXT.get()
    if fields:
        extra = record["extra"]
        for key, value in fields.items():
            extra.setdefault(key, value)


def install() -> None:
    """Make loguru's logger run `patch` on every record (idempotent; done at import)."""
    logger.configure(patcher=patch)


install()
