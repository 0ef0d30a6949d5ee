"""The crash campaign, small: a few seeded kill -9 / SIGTERM cycles of a real daemon, then the
ledger and the journal must agree (tests/bench/crash_campaign.py runs hundreds of cycles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import crash_campaign
from tests.reliability import mix
from tests.reliability.conftest import Spawn

pytestmark = pytest.mark.timeout(170)


def _quiet(_text: str) -> None:
    pass


@pytest.mark.parametrize(
    ("mode", "seed", "loop"),
    [("kill", 11, "asyncio"), ("mixed", 12, "asyncio"), ("mixed", 13, "uvloop")],
)
def test_small_campaign_holds(tmp_path: Path, mode: str, seed: int, loop: str) -> None:
    pytest.importorskip(loop)
    camp, report = crash_campaign.run(5, seed, tmp_path, mode=mode, log=_quiet, event_loop=loop)
    assert report.violations == []
    assert sum(camp.kills.values()) == 5
    assert report.requests >= 1 and report.tries >= report.requests
    assert report.ledger_tries >= report.tries - report.interrupted


def test_checker_sees_what_it_must(spawn: Spawn, tmp_path: Path) -> None:
    """The checker is not vacuous: tampering with the ledger or the journal shows up."""
    d = spawn()
    ledger = tmp_path / "ledger"
    rid = mix.submit(d, {"type": "line", "args": {"ledger": str(ledger), "pause": "0"}})
    assert d.wait_state(rid)["state"] == "COMPLETE"
    assert d.terminate() == 0
    assert mix.check(d.journal, ledger).violations == []
    first = ledger.read_text().splitlines()[0]
    _req, job, _try, _ = first.split()
    with ledger.open("a") as f:
        f.write(first + "\n")  # the same try ran twice
        f.write(f"{rid} {job} 9 start\n")  # a try the journal never heard of
    text = "\n".join(mix.check(d.journal, ledger).violations)
    assert "ran 2 times" in text
    assert "is not in the journal" in text
    # want another final state than the one the journal holds
    rep = mix.check(d.journal, ledger, expected={"line": "FAIL"})
    assert any("want FAIL" in v for v in rep.violations)
