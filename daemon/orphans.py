"""Recognising the job processes a crashed boot left running: the pure parts.

Every shell job's environment names the journal it belongs to (`ENV_JOURNAL`, the journal's
real path), the boot that started it (`ENV_BOOT`) and its try (`SPIND_REQUEST_ID`,
`SPIND_JOB_ID`, `SPIND_TRY`); the processes it starts inherit them. At start, before any chain
resumes, :mod:`daemon.leftovers` reads `/proc/<pid>/stat` and `/proc/<pid>/environ` of every
process the daemon may signal, and the functions here decide what to stop: the process
groups holding a process of this journal whose try the journal still shows RUNNING under an
earlier boot (a try that a crash interrupted and that is about to be run again). Nothing else
is ever chosen: not another journal's jobs, not this boot's, not leftovers of tries that
ended, and never a group the daemon itself or one of its ancestors belongs to.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import msgspec

#: Environment variable naming the real path of the journal of the daemon that ran the job.
ENV_JOURNAL = "SPIND_JOURNAL_PATH"
#: Environment variable naming the boot (journal `boots` row) that ran the job.
ENV_BOOT = "SPIND_BOOT_ID"
#: Both marker variables: set by the daemon only, never inherited nor set by `with.env`.
MARKER_ENV = (ENV_JOURNAL, ENV_BOOT)

#: (request id, job id, try number, boot id) of a try journaled RUNNING.
TryRef = tuple[str, str, int, str]


class Marker(msgspec.Struct, frozen=True):
    """What a job process's environment says about the try it belongs to."""

    journal: str
    boot: str
    request_id: str
    job_id: str
    try_no: int

    def ref(self) -> TryRef:
        return (self.request_id, self.job_id, self.try_no, self.boot)


class Proc(msgspec.Struct, frozen=True):
    """One process as read from /proc: its state letter, parent, group and marker if any."""

    pid: int
    state: str
    ppid: int
    pgid: int
    marker: Marker | None = None


class Orphan(msgspec.Struct, frozen=True):
    """One process group to stop, with its marked members (pid, marker) in pid order."""

    pgid: int
    members: tuple[tuple[int, Marker], ...]


def marker_env(journal: str, boot: str) -> dict[str, str]:
    """The marker variables a job started by boot `boot` of `journal` carries."""
    return {ENV_JOURNAL: journal, ENV_BOOT: boot}


def parse_environ(data: bytes) -> dict[str, str]:
    """The contents of /proc/<pid>/environ (NUL-separated `NAME=value`) as a mapping.

    Entries without `=` are skipped; the first occurrence of a name wins, as for getenv.
    """
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        name, eq, value = item.partition(b"=")
        if not eq or not name:
            continue
        key = name.decode("utf-8", "surrogateescape")
        env.setdefault(key, value.decode("utf-8", "surrogateescape"))
    return env


def marker_of(env: Mapping[str, str]) -> Marker | None:
    """The marker in an environment, or None unless every part is there and well formed."""
    journal = env.get(ENV_JOURNAL, "")
    boot = env.get(ENV_BOOT, "")
    rid = env.get("SPIND_REQUEST_ID", "")
    jid = env.get("SPIND_JOB_ID", "")
    try_text = env.get("SPIND_TRY", "")
    if not (journal and boot and rid and jid and try_text.isascii() and try_text.isdigit()):
        return None
    return Marker(journal=journal, boot=boot, request_id=rid, job_id=jid, try_no=int(try_text))


def parse_stat(text: str) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) from a /proc/<pid>/stat line, or None if it is malformed.

    The command name (field 2) is in parentheses and may itself hold spaces and parentheses:
    the fields after it start after the last `)`.
    """
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 3:
        return None
    try:
        return fields[0], int(fields[1]), int(fields[2])
    except ValueError:
        return None


def protected_groups(procs: Iterable[Proc], self_pid: int) -> set[int]:
    """The process groups of `self_pid` and of each of its ancestors: never to be signalled."""
    by_pid = {p.pid: p for p in procs}
    out: set[int] = set()
    pid = self_pid
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        proc = by_pid.get(pid)
        if proc is None:
            break
        out.add(proc.pgid)
        pid = proc.ppid
    return out


def orphan_groups(
    procs: Iterable[Proc],
    *,
    journal: str,
    stale_tries: Collection[TryRef],
    protected: Collection[int] = (),
) -> list[Orphan]:
    """The process groups to stop, in pgid order.

    A group is chosen when one of its live processes carries a marker of `journal` whose
    (request, job, try, boot) is in `stale_tries`, the tries the journal shows RUNNING under an
    earlier boot. Groups in `protected`, and groups 0 and 1, are never chosen.
    """
    stale = set(stale_tries)
    groups: dict[int, list[tuple[int, Marker]]] = {}
    for p in procs:
        m = p.marker
        if m is None or m.journal != journal or m.ref() not in stale or not _live(p):
            continue
        if p.pgid <= 1 or p.pgid in protected:
            continue
        groups.setdefault(p.pgid, []).append((p.pid, m))
    return [Orphan(pgid=g, members=tuple(sorted(groups[g]))) for g in sorted(groups)]


def live_groups(procs: Iterable[Proc], pgids: Collection[int]) -> set[int]:
    """Which of `pgids` still hold a process that is neither a zombie nor dead."""
    return {p.pgid for p in procs if p.pgid in pgids and _live(p)}


def _live(p: Proc) -> bool:
    return p.state not in ("Z", "X", "x")
