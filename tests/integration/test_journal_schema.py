"""Opening journal files: creation, modes, migrations, and refusing what is not ours."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from daemon.journal import ForeignJournal, Journal, JournalTooNew, JournalUnavailable, schema
from daemon.journal import queries as q
from daemon.journal._migrations import MIGRATIONS
from tests.integration.journal_helpers import make_chain, make_record, open_journal


def _fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """Content hash, mtime, and the sibling files: what "unchanged" means for a refused file."""
    st = path.stat()
    siblings = sorted(p.name for p in path.parent.iterdir())
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, siblings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_journal_file_and_dir_modes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spind" / "journal.db"
    j = await Journal.open(path)
    try:
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
        # SQLite gives its WAL and shared-memory files the journal's mode
        assert _mode(path.with_name("journal.db-wal")) == 0o600
        assert _mode(path.with_name("journal.db-shm")) == 0o600
    finally:
        await j.close()


async def test_existing_directory_is_not_changed(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    j = await Journal.open(tmp_path / "j.db")
    await j.close()
    assert _mode(tmp_path) == 0o750


async def test_pragmas(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.db", synchronous="full")
    try:

        def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int, int, int]:
            return (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
                conn.execute("PRAGMA busy_timeout").fetchone()[0],
                conn.execute("PRAGMA application_id").fetchone()[0],
            )

        assert await j.writer.submit(pragmas) == (
            "wal",
            2,
            1,
            schema.BUSY_TIMEOUT_MS,
            q.APPLICATION_ID,
        )
    finally:
        await j.close()
    with pytest.raises(ValueError, match="synchronous must be one of"):
        await Journal.open(tmp_path / "k.db", synchronous="OFF")


async def test_reopen_applies_nothing_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = await open_journal(path)
    await j.create_request(make_record("R1"), make_chain())
    await j.close()
    writer_db, reader_db, applied = await schema.open_connections(path)
    await writer_db.close()
    await reader_db.close()
    assert applied == []
    j = await open_journal(path)
    try:
        assert await j.get_view("R1") is not None
    finally:
        await j.close()


async def test_foreign_sqlite_file_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('x')")
    conn.commit()
    conn.close()
    before = _fingerprint(path)
    with pytest.raises(ForeignJournal, match=r"not a spind journal.*tables: customers"):
        await Journal.open(path)
    assert _fingerprint(path) == before


async def test_sqlite_file_with_other_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 42")
    conn.close()
    before = _fingerprint(path)
    with pytest.raises(ForeignJournal, match="application_id 0x2a"):
        await Journal.open(path)
    assert _fingerprint(path) == before


@pytest.mark.parametrize(
    "content",
    [
        b"hello, this is a text file\n" * 10,
        b"SQLite format 2\x00" + b"\x00" * 100,
        b"SQLite format 3\x00" + b"\xff" * 200,  # the right magic, then garbage
    ],
)
async def test_non_sqlite_file_is_refused_unchanged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(content)
    before = _fingerprint(path)
    with pytest.raises(ForeignJournal, match=r"spind will not"):
        await Journal.open(path)
    assert _fingerprint(path) == before


async def test_empty_file_becomes_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.touch()
    j = await open_journal(path)
    try:
        await j.create_request(make_record("R1"), make_chain())
    finally:
        await j.close()


async def test_directory_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(JournalUnavailable, match="is a directory"):
        await Journal.open(tmp_path)


async def test_journal_from_the_future_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = await open_journal(path)
    await j.close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (900, '900_future', 0)"
    )
    conn.commit()
    conn.close()
    before = _fingerprint(path)
    with pytest.raises(JournalTooNew, match=r"has migration 900_future, unknown .* knows up to 0"):
        await Journal.open(path)
    assert _fingerprint(path) == before


def test_migrations_packaged() -> None:
    """The embedded copy that the journal applies is exactly migrations/*.sql."""
    files = schema.read_migrations_dir(schema.repo_migrations_dir())
    assert files, "no migrations found"
    assert files == MIGRATIONS, "run: python -m daemon.journal.schema --regen"
    assert schema.render_module(files) == Path(schema.__file__).with_name(
        "_migrations.py"
    ).read_text(encoding="utf-8")


def _normalized(statements: list[str]) -> list[str]:
    out = []
    for sql in statements:
        sql = re.sub(r"--[^\n]*", "", sql)
        sql = re.sub(r"\s+", " ", sql)
        sql = re.sub(r"\s*([(),])\s*", r"\1", sql)
        out.append(sql.strip().lower())
    return sorted(out)


def test_migrations_match_schema_snapshot(tmp_path: Path) -> None:
    migrated = schema.migrated_schema(schema.embedded_migrations())
    snapshot = (schema.repo_migrations_dir() / "schema.sql").read_text(encoding="utf-8")
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for stmt in schema.split_statements(snapshot):
            conn.execute(stmt)
        from_snapshot = schema.schema_statements(conn)
    finally:
        conn.close()
    assert _normalized(migrated) == _normalized(from_snapshot), (
        "run: python -m daemon.journal.schema --regen"
    )
    assert schema.render_snapshot(migrated) == snapshot


async def test_a_real_journal_has_the_snapshot_schema(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = await Journal.open(path)
    await j.close()
    conn = sqlite3.connect(path)
    try:
        on_disk = schema.schema_statements(conn)
        applied = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    finally:
        conn.close()
    assert _normalized(on_disk) == _normalized(schema.migrated_schema(schema.embedded_migrations()))
    assert applied == [(m.version, m.name) for m in schema.embedded_migrations()]


def test_failed_migration_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    good = schema.embedded_migrations()
    broken = [*good, schema.Migration(len(good) + 1, "099_broken", "CREATE TABLE x (;")]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError):
            schema.migrate(conn, path, broken)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0
        assert schema.schema_statements(conn) == []
        assert schema.migrate(conn, path, good) == [m.name for m in good]
        assert conn.execute("PRAGMA application_id").fetchone()[0] == q.APPLICATION_ID
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"001_a": "", "003_c": ""}, "numbered 1, 2, 3"),
        ({"002_b": ""}, "numbered 1, 2, 3"),
        ({"1_a": ""}, "bad migration name"),
        ({"001_Upper": ""}, "bad migration name"),
    ],
)
def test_parse_migrations_refuses_bad_sets(files: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schema.parse_migrations(files)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "CREATE TABLE a (x);\nCREATE TABLE b (y);\n",
            ["CREATE TABLE a (x);", "CREATE TABLE b (y);"],
        ),
        ("-- only a comment\n", []),
        (
            "CREATE TRIGGER t BEFORE UPDATE ON a\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n",
            ["CREATE TRIGGER t BEFORE UPDATE ON a\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND;"],
        ),
        ("INSERT INTO a VALUES ('x;y');\n", ["INSERT INTO a VALUES ('x;y');"]),
    ],
)
def test_split_statements(sql: str, expected: list[str]) -> None:
    assert schema.split_statements(sql) == expected


def test_split_statements_refuses_unterminated() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        schema.split_statements("CREATE TABLE a (x)\n")


def test_events_are_append_only(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        schema.migrate(conn, tmp_path, schema.embedded_migrations())
        conn.execute("INSERT INTO requests (id, type, user, args, state, created_at)"
                     " VALUES ('R', 't', 'u', '{}', 'PENDING', 0)")  # fmt: skip
        conn.execute(
            "INSERT INTO events (request_id, kind, state, at) VALUES ('R', 'request', 'PENDING', 0)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET state = 'X'")
    finally:
        conn.close()
