"""Schemathesis against the OpenAPI document a real daemon serves, every endpoint.

Generated requests, valid and invalid, go to a real daemon on a loopback TCP port while a chain
runs. Every response must pass schemathesis' checks: no 5xx, the status and content type the
document lists, a body that matches its schema; a schema-invalid request must be refused (4xx);
a schema-valid one accepted, except `POST /requests` with a made-up request type (the document
cannot list the types: they change on reload). Examples per endpoint: RELIABILITY_EXAMPLES
(default 15); a longer run: `RELIABILITY_EXAMPLES=500 pytest tests/reliability/test_api_fuzz.py`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from tests.e2e.harness import Daemon, free_port
from tests.reliability import mix

EXAMPLES = int(os.environ.get("RELIABILITY_EXAMPLES", "15"))
pytestmark = pytest.mark.timeout(120 + EXAMPLES)
SEEN: Counter[int] = Counter()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("fuzz")
    d = Daemon(root, mix.specs(), env={"SPIND_LOG_LEVEL": "WARNING"}, port=free_port())
    d.start()
    ledger = root / "ledger"
    rid = mix.submit(d, {"type": "slow", "args": {"ledger": str(ledger), "secs": "4"}})
    assert d.proc is not None
    state = {"daemon": d, "chain": rid, "ledger": ledger, "rss": rss_kb(d.proc.pid)}
    yield state
    d.close()


@pytest.fixture(scope="module")
def api_schema(served: dict[str, Any]) -> Any:
    d: Daemon = served["daemon"]
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{d.port}/api/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_endpoint(case: Any) -> None:
    op = case.operation
    excluded = (
        [positive_data_acceptance] if (op.method, op.path) == ("post", "/api/v1/requests") else []
    )
    response = case.call(timeout=30)
    SEEN[response.status_code] += 1
    case.validate_response(response, excluded_checks=excluded)
    if response.status_code >= 400:
        assert response.json()["error"], response.text


def test_after_the_fuzzing(served: dict[str, Any]) -> None:
    """Runs after the generated cases (same module): the chain that ran meanwhile completed,
    the daemon stayed up with bounded memory, and no 5xx was seen."""
    d: Daemon = served["daemon"]
    assert d.wait_state(served["chain"], timeout=60)["state"] == "COMPLETE"
    assert d.proc is not None and d.proc.poll() is None
    assert not [s for s in SEEN if s >= 500], SEEN
    print(f"\nfuzz: {sum(SEEN.values())} generated calls, statuses {dict(sorted(SEEN.items()))}")
    grown = rss_kb(d.proc.pid) - served["rss"]
    assert grown < 64 * 1024, f"RSS grew by {grown} kB"
    assert mix.check(d.journal, served["ledger"], allow_unfinished=True).violations == []
