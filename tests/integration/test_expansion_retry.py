"""A deferred node whose expansion fails is a failed job like any other: its sequence is
retried when the sequence has tries left (the retry runs the jobs before it again, which may
set what it expands over), and the request fails only when none are left. Through the real
runtime and journal, with real shell jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.model import JobState, RequestState
from tests.bench.harness import Rig

# `list` sets `hosts`: the text "not-a-list" on its first `good_after - 1` runs, then a list
SPECS = """
sequences:
  expand-retry:
    request: true
    args:
      required: [{name: counter}, {name: goodAfter}]
    nodes:
      body:
        category: sequence
        type: list-then-each
        args: [{expected: counter}, {expected: goodAfter}]
        retry: 1
  list-then-each:
    args:
      required: [{name: counter}, {name: goodAfter}]
    nodes:
      list:
        category: job
        type: shell
        with:
          cmd: >-
            n=$(($(cat "$SPIND_ARG_counter" 2>/dev/null || echo 0) + 1));
            echo $n > "$SPIND_ARG_counter";
            if [ $n -ge "$SPIND_ARG_goodAfter" ]; then echo 'hosts=["a","b"]' >> "$SPIND_OUTPUT";
            else echo 'hosts="not-a-list"' >> "$SPIND_OUTPUT"; fi
        args: [{expected: counter}, {expected: goodAfter}]
        sets: [{arg: hosts}]
      each-host:
        category: sequence
        type: one-host
        each: ["hosts:host"]
        deps: [list]
  one-host:
    args:
      required: [{name: host}]
    nodes:
      work:
        category: job
        type: noop
"""


@pytest.mark.parametrize(
    ("good_after", "state", "list_runs"),
    [
        (1, RequestState.COMPLETE, 1),  # expands at once
        (2, RequestState.COMPLETE, 2),  # fails to expand, the sequence retry fixes it
        (3, RequestState.FAIL, 2),  # fails to expand twice: no tries left
    ],
)
async def test_a_failed_expansion_retries_its_sequence(
    tmp_path: Path, good_after: int, state: RequestState, list_runs: int
) -> None:
    counter = tmp_path / "counter"
    async with Rig.open(tmp_path, log=False, extra_specs={"t.yaml": SPECS}) as rig:
        rid = await rig.create("expand-retry", counter=str(counter), goodAfter=str(good_after))
        assert await rig.finish(rid) == state
        loaded = await rig.journal.load_request(rid)
        assert loaded is not None
        assert int(counter.read_text()) == list_runs
        names = {jid: job.name for jid, job in loaded.chain.jobs.items()}
        work = [jid for jid, name in names.items() if name == "work"]
        deferred = next(jid for jid, name in names.items() if name == "each-host")
        log = await rig.journal.job_log(rid)
        failed_expansions = [r for r in log if r.job_id == deferred and r.state == JobState.FAIL]
        assert len(failed_expansions) == list_runs - (1 if state == RequestState.COMPLETE else 0)
        assert all("list" in r.error or "hosts" in r.error for r in failed_expansions)
        if state == RequestState.COMPLETE:
            assert len(work) == 2
            assert all(loaded.jobs[j].state == JobState.COMPLETE for j in work)
        else:
            assert work == []
            assert loaded.jobs[deferred].state == JobState.FAIL
