"""daemon.logsetup: the lines spind writes, captured from the sink stream."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path

import pytest
from loguru import logger

from daemon import logctx
from daemon.logsetup import PRIORITIES, on_journald, set_level, setup_logging

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    chatty = logging.getLogger("aiosqlite").level
    yield
    logger.remove()
    logger.add(sys.stderr)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiosqlite").setLevel(chatty)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize(
    ("context", "prefix"),
    [
        ({}, ""),
        ({"request_id": "r1"}, "[req=r1] "),
        ({"request_id": "r1", "job_id": "j2", "try_": 3}, "[req=r1 job=j2 try=3] "),
        ({"try_": 0, "trace_id": "t9"}, "[try=0 trace=t9] "),
        ({"action": "job_success", "job_id": "j"}, "[job=j action=job_success] "),
        ({"request_id": "", "job_id": None}, ""),
        ({"other": "x"}, ""),  # text lines show our context fields only
    ],
)
@pytest.mark.parametrize("scope", [logctx.context, logger.contextualize])
def test_text_lines_show_bound_context(
    context: dict[str, object], prefix: str, scope: Callable[..., ContextManager[object]]
) -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", stream=out, env={})
    with scope(**context):
        logger.info("started {}", "it")
    (line,) = lines(out)
    assert line.split(" ", 3)[2] == "INFO"
    assert line.endswith(f"{__name__}: {prefix}started it")
    assert re.match(TIME, line)


def test_bind_and_contextualize_combine_and_braces_are_safe() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", stream=out, env={})
    with logger.contextualize(request_id="{r}", job_id="<j>"):
        logger.bind(action="job_fail").warning("a {literal} brace")  # no args: not formatted
    (line,) = lines(out)
    assert "WARNING" in line
    assert line.endswith("[req={r} job=<j> action=job_fail] a {literal} brace")


def test_log_context_yields_to_bound_fields_and_ends_with_its_block() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", stream=out, env={})
    with logctx.context(request_id="r1", job_id="j1", action="outer"):
        with logctx.context(job_id="j2"):
            logger.info("inner")
        logger.bind(job_id="bound").info("bound wins")
        logger.info("kwarg wins", action="kw")
    logger.info("after")
    assert [line.split(": ", 1)[1] for line in lines(out)] == [
        "[req=r1 job=j2 action=outer] inner",
        "[req=r1 job=bound action=outer] bound wins",
        "[req=r1 job=j1 action=kw] kwarg wins",
        "after",
    ]
    assert logctx.current() == {}


def test_tasks_inherit_the_log_context_and_keep_their_own() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", stream=out, env={})

    async def job(n: int) -> None:
        token = logctx.push(job_id=f"j{n}", try_=n)
        try:
            await asyncio.sleep(0)  # interleave with the other task
            logger.info("job line")
        finally:
            logctx.pop(token)

    async def chain() -> None:
        with logctx.context(request_id="r"):
            await asyncio.gather(job(1), job(2))
            logger.info("chain line")

    asyncio.run(chain())
    assert sorted(line.split(": ", 1)[1] for line in lines(out)) == [
        "[req=r job=j1 try=1] job line",
        "[req=r job=j2 try=2] job line",
        "[req=r] chain line",
    ]


def test_levels_filter_and_set_level_changes_them() -> None:
    out = io.StringIO()
    setup_logging("warning", "text", stream=out, env={})
    logger.info("hidden")
    logger.warning("shown 1")
    set_level("DEBUG")
    logger.debug("shown 2")
    set_level("ERROR")
    logger.warning("hidden")
    logger.error("shown 3")
    got = [line.rsplit(": ", 1)[1] for line in lines(out)]
    assert got == ["shown 1", "shown 2", "shown 3"]


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "text"), ("INFO", "xml")])
def test_bad_level_or_format(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        setup_logging(level, fmt, stream=io.StringIO(), env={})


def test_setup_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", "text", stream=first, env={})
    setup_logging("INFO", "text", stream=second, env={})
    logger.info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_json_lines() -> None:
    out = io.StringIO()
    setup_logging("DEBUG", "json", stream=out, env={})
    with logger.contextualize(request_id="r1", job_id="j1", try_=2, trace_id="t"):
        logger.bind(action="job_start").debug("job {name} started", name="deploy")
    logger.info("plain")
    first, second = (json.loads(line) for line in lines(out))
    assert first["message"] == "job deploy started"
    assert first["level"] == "DEBUG"
    assert first["logger"] == __name__
    assert (first["request_id"], first["job_id"], first["try"], first["trace_id"]) == (
        "r1",
        "j1",
        2,
        "t",
    )
    assert first["action"] == "job_start"
    assert first["name"] == "deploy"  # other bound values are kept in JSON
    assert "T" in first["time"]
    assert "try_" not in first
    assert set(second) == {"time", "level", "logger", "message"}


def test_exceptions_in_text_and_json() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", stream=out, env={})
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        logger.exception("failed")
    text = out.getvalue()
    assert "failed\nTraceback (most recent call last):" in text
    assert "RuntimeError: kaput" in text
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out, env={})
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        logger.exception("failed")
    (line,) = lines(out)
    obj = json.loads(line)
    assert obj["level"] == "ERROR"
    assert "RuntimeError: kaput" in obj["exception"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_stdlib_logging_is_routed_into_loguru(fmt: str) -> None:
    out = io.StringIO()
    setup_logging("INFO", fmt, stream=out, env={})
    logging.getLogger("aiohttp.server").warning("from %s", "aiohttp")
    logging.getLogger("aiosqlite").debug("below the level")
    logging.getLogger("asyncio").error("loop trouble")
    got = lines(out)
    assert len(got) == 2
    if fmt == "json":
        objs = [json.loads(line) for line in got]
        assert [(o["logger"], o["level"], o["message"]) for o in objs] == [
            ("aiohttp.server", "WARNING", "from aiohttp"),
            ("asyncio", "ERROR", "loop trouble"),
        ]
    else:
        assert "WARNING  aiohttp.server: from aiohttp" in got[0]
        assert "ERROR    asyncio: loop trouble" in got[1]


def test_journald_stream_gets_priorities_and_no_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "journal-stream"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert on_journald(stream, env)
        setup_logging("DEBUG", "text", stream=stream, env=env)
        with logger.contextualize(job_id="j"):
            logger.debug("d")
            logger.info("i")
            logger.success("s")
            logger.warning("w")
            logger.error("e")
            logger.critical("c")
        try:
            raise ValueError("v")
        except ValueError:
            logger.exception("x")
        stream.flush()
    got = path.read_text().splitlines()
    assert got[:6] == [
        f"<7>DEBUG    {__name__}: [job=j] d",
        f"<6>INFO     {__name__}: [job=j] i",
        f"<5>SUCCESS  {__name__}: [job=j] s",
        f"<4>WARNING  {__name__}: [job=j] w",
        f"<3>ERROR    {__name__}: [job=j] e",
        f"<2>CRITICAL {__name__}: [job=j] c",
    ]
    assert got[6] == f"<3>ERROR    {__name__}: x"
    assert all(line.startswith("<3>") for line in got[7:])  # the traceback too
    assert got[-1] == "<3>ValueError: v"


@pytest.mark.parametrize(
    "value", ["", "garbage", "1:2", "0:0"], ids=["unset", "garbage", "other", "zero"]
)
def test_not_journald_unless_the_stream_matches(tmp_path: Path, value: str) -> None:
    with open(tmp_path / "f", "w") as stream:
        assert not on_journald(stream, {"JOURNAL_STREAM": value} if value else {})
    assert not on_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_priorities_cover_every_loguru_level() -> None:
    assert set(PRIORITIES) == {"TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"}


@pytest.mark.parametrize(("level", "shown"), [("DEBUG", False), ("TRACE", True)])
def test_chatty_stdlib_debug_lines_only_at_trace(level: str, shown: bool) -> None:
    out = io.StringIO()
    setup_logging(level, "text", stream=out, env={})
    logging.getLogger("aiosqlite").debug("executing <function>")
    logging.getLogger("aiosqlite").info("worth seeing")
    logging.getLogger("aiohttp.server").debug("kept at DEBUG")
    text = out.getvalue()
    assert ("executing <function>" in text) is shown
    assert "worth seeing" in text
    assert "kept at DEBUG" in text
