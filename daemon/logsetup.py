"""Logging: loguru set up once, stdlib logging routed into it, context fields on every line.

Code logs with ``from loguru import logger`` and binds context with
``logctx.context(request_id=..., job_id=..., try_=...)`` (or ``logger.bind``, or loguru's own
``logger.contextualize``); a stable ``action=`` names each state change. Two formats:

- ``text``: ``2024-05-01 12:00:00.123 INFO     daemon.runner: [req=r1 job=j2 try=1] message``.
  Under systemd (``$JOURNAL_STREAM`` names our stderr) the timestamp is left to journald and
  each line starts with ``<N>``, the syslog priority journald files the line under.
- ``json``: one object per line: ``time``, ``level``, ``logger``, ``message``, the bound fields
  (``try_`` is written ``try``) and ``exception`` when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import types
from collections.abc import Mapping
from typing import Any, TextIO

from loguru import logger

from daemon import logctx

#: Context fields shown in text lines, in this order, under these short names.
CONTEXT_FIELDS = (
    ("request_id", "req"),
    ("job_id", "job"),
    ("try_", "try"),
    ("trace_id", "trace"),
    ("action", "action"),
)
#: syslog priorities of loguru's levels (journald reads the `<N>` prefix).
PRIORITIES = {
    "TRACE": 7,
    "DEBUG": 7,
    "INFO": 6,
    "SUCCESS": 5,
    "WARNING": 4,
    "ERROR": 3,
    "CRITICAL": 2,
}


#: stdlib loggers that log every operation at DEBUG: shown only at TRACE.
CHATTY_LOGGERS = ("aiosqlite",)


class _State:
    handler_id: int | None = None
    stream: TextIO = sys.stderr
    fmt: str = "text"
    journald: bool = False


def _fields(extra: Mapping[str, Any], *, all_fields: bool) -> dict[str, Any]:
    """Bound fields worth showing: ours first, then (JSON only) any other non-private ones.

    Text lines keep to ours: loguru also files `logger.info("{x}", x=1)`'s `x` under extra.
    """
    out = {k: extra[k] for k, _ in CONTEXT_FIELDS if extra.get(k) not in (None, "")}
    if all_fields:
        for k in sorted(extra):
            if k not in out and not k.startswith("_") and extra[k] not in (None, ""):
                out[k] = extra[k]
    return out


def _text_context(extra: Mapping[str, Any]) -> str:
    short = dict(CONTEXT_FIELDS)
    parts = [f"{short[k]}={v}" for k, v in _fields(extra, all_fields=False).items()]
    return f"[{' '.join(parts)}] " if parts else ""


def _traceback(record: Any) -> str:
    exc = record["exception"]
    if exc is None or exc.type is None:
        return ""
    return "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))


def _format_text(record: Any) -> str:
    extra = record["extra"]
    extra["_ctx"] = _text_context(extra)
    extra.setdefault("_logger", record["name"])
    if _State.journald:
        # journald stamps the time itself; every line (traceback too) carries the priority.
        prio = f"<{PRIORITIES.get(record['level'].name, 6)}>"
        extra["_prio"] = prio
        extra["_exc"] = "".join(prio + line + "\n" for line in _traceback(record).splitlines())
        return "{extra[_prio]}{level: <8} {extra[_logger]}: {extra[_ctx]}{message}\n{extra[_exc]}"
    return (
        "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <8} {extra[_logger]}: {extra[_ctx]}{message}\n"
        "{exception}"
    )


def _format_json(record: Any) -> str:
    obj: dict[str, Any] = {
        "time": record["time"].isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "logger": record["extra"].get("_logger", record["name"]),
        "message": record["message"],
    }
    for key, value in _fields(record["extra"], all_fields=True).items():
        obj["try" if key == "try_" else key] = value
    if record["exception"] is not None:
        obj["exception"] = _traceback(record)
    record["extra"]["_json"] = json.dumps(obj, default=str, ensure_ascii=False)
    return "{extra[_json]}\n"


class InterceptHandler(logging.Handler):
    """Hands stdlib log records (aiohttp, aiosqlite, asyncio) to loguru, keeping the caller."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Skip the logging module's own frames so loguru reports the real caller.
        frame: types.FrameType | None = logging.currentframe()
        depth = 0
        while frame is not None and frame.f_code.co_filename in (logging.__file__, __file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).bind(_logger=record.name).log(
            level, record.getMessage()
        )


def on_journald(stream: TextIO, env: Mapping[str, str]) -> bool:
    """True when `$JOURNAL_STREAM` (`dev:inode`) names this very stream, as systemd sets it."""
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False  # not a real file (a StringIO, a closed stream)
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def _normalize_level(level: str) -> str:
    name = level.strip().upper()
    name = "WARNING" if name == "WARN" else name
    if name not in PRIORITIES:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(PRIORITIES)}")
    return name


def _add_handler(level: str) -> None:
    _State.handler_id = logger.add(
        _State.stream,
        level=level,
        format=_format_json if _State.fmt == "json" else _format_text,
        colorize=False,
        diagnose=False,
        backtrace=False,
    )
    logging.getLogger().setLevel(logger.level(level).no)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "TRACE" else logging.INFO)


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    *,
    stream: TextIO | None = None,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Configure loguru (replacing every handler) and route stdlib logging into it.

    `stream` defaults to the `sys.stderr` of the moment of the call.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; expected text or json")
    name = _normalize_level(level)
    logger.remove()
    logctx.install()
    _State.stream = sys.stderr if stream is None else stream
    _State.fmt = fmt
    _State.journald = on_journald(_State.stream, env)
    logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
    _add_handler(name)


def set_level(level: str) -> None:
    """Change the level (SIGHUP reload); the format and stream stay."""
    name = _normalize_level(level)
    if _State.handler_id is not None:
        logger.remove(_State.handler_id)
    _add_handler(name)
