"""InlineReader on a real SQLite file: small reads answer on the calling thread, reads over the
step budget are interrupted and handed on (and remembered by key), SQLite errors hand on
without being remembered, and the connection is never left inside a transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.journal import inline
from daemon.journal.inline import InlineReader
from daemon.journal.reads import snapshot


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA query_only = ON")


@pytest.fixture
def reader(tmp_path: Path) -> InlineReader:
    path = tmp_path / "j.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"v{i}") for i in range(20_000)))
    conn.close()
    return InlineReader.open(path, _configure)


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM t WHERE v LIKE 'v%'").fetchone()[0])


def _one(conn: sqlite3.Connection) -> str:
    return str(conn.execute("SELECT v FROM t WHERE k = 7").fetchone()[0])


def _bad(conn: sqlite3.Connection) -> Any:
    return conn.execute("SELECT * FROM no_such_table").fetchall()


def _count_in_snapshot(conn: sqlite3.Connection) -> int:
    return snapshot(conn, _count)


CASES: list[tuple[str, Callable[[sqlite3.Connection], Any], bool, Any, bool]] = [
    # name, read, answered inline, value, remembered as too big
    ("a point read", _one, True, "v7", False),
    ("a scan over the budget", _count, False, None, True),
    ("a scan over the budget in a snapshot", _count_in_snapshot, False, None, True),
    ("an SQLite error", _bad, False, None, False),
]


@pytest.mark.parametrize(
    ("name", "fn", "inline_ok", "value", "remembered"), CASES, ids=[c[0] for c in CASES]
)
def test_reads(
    reader: InlineReader,
    name: str,
    fn: Callable[[sqlite3.Connection], Any],
    inline_ok: bool,
    value: Any,
    remembered: bool,
) -> None:
    assert reader.run(fn, "key") == (inline_ok, value)
    assert not reader._conn.in_transaction
    assert (reader.inline_reads, reader.sent_to_thread) == ((1, 0) if inline_ok else (0, 1))
    # the same key again: straight on if it was too big, else tried here again
    again = reader.run(_one, "key")
    assert again == ((False, None) if remembered else (True, "v7"))
    # a read under another key is not affected, and the budget starts afresh
    assert reader.run(_one, "other") == (True, "v7")


def test_a_read_without_a_key_is_tried_every_time(reader: InlineReader) -> None:
    assert reader.run(_count, None) == (False, None)
    assert reader.run(_count, None) == (False, None)
    assert reader.run(_one, None) == (True, "v7")
    assert (reader.inline_reads, reader.sent_to_thread) == (1, 2)


def test_a_budget_large_enough_answers_the_scan(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"v{i}") for i in range(20_000)))
    conn.close()
    big = InlineReader(sqlite3.connect(path), budget=10_000_000)
    assert big.run(_count, "k") == (True, 20_000)


def test_the_memory_of_large_reads_is_bounded(
    reader: InlineReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline, "REMEMBER", 2)
    for key in ("a", "b", "c"):
        assert reader.run(_count, key) == (False, None)
    # "a" was forgotten (oldest first): tried here again, and small reads under it answer
    assert reader.run(_one, "a") == (True, "v7")
    assert reader.run(_one, "c") == (False, None)


def test_other_exceptions_pass_through(reader: InlineReader) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        raise ValueError("a bug in a read")

    with pytest.raises(ValueError, match="a bug"):
        reader.run(broken, "k")
