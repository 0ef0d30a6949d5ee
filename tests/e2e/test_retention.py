"""Finished requests older than `retention` are pruned in the background; unfinished ones stay."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import Daemon, eventually

SPECS = {
    "s.yaml": """
sequences:
  quick:
    request: true
    nodes:
      n: {category: job, type: noop}
  slow:
    request: true
    nodes:
      n: {category: job, type: sleep, with: {duration: 30s}}
"""
}


def test_finished_requests_are_pruned(tmp_path: Path) -> None:
    cfg = tmp_path / "spind.yaml"
    cfg.write_text("retention: 1s\nprune_interval: 500ms\n")
    d = Daemon(tmp_path, SPECS, env={"SPIND_CONFIG": str(cfg)}).start()
    try:
        done = d.start_request("quick")
        assert d.wait_state(done)["state"] == "COMPLETE"
        running = d.start_request("slow")
        d.wait_state(running, "RUNNING")
        eventually(lambda: d.call("GET", f"/api/v1/requests/{done}")[0] == 404, timeout=20)
        with d.db() as db:
            left = {
                t: db.execute(f"SELECT COUNT(*) FROM {t} WHERE request_id=?", (done,)).fetchone()[0]
                for t in ("jobs", "job_log", "events")
            }
        assert left == {"jobs": 0, "job_log": 0, "events": 0}
        assert d.state(running) == "RUNNING"
        assert "pruned" in d.log()
    finally:
        d.close()
