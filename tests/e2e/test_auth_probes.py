"""Health, version and metrics of a real daemon with an `auth` section, called without a token.

Load balancers, systemd probes and Prometheus send no token: `/api/v1/health` and
`/api/v1/version` answer them anyway (health with only `ok` and a coarse `reason`), `/metrics`
too unless `auth.metrics_public: false`. Everything else still needs a token, a token that is
sent must be valid, and a caller with a token (or on the Unix socket) gets the full health view.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import hash_token
from tests.e2e.harness import Daemon, Reply, eventually, free_port, no_500, serving
from tests.e2e.test_api_real import CURL, Via

pytestmark = pytest.mark.timeout(120)

TOKEN = f"probe-{uuid.uuid4().hex}"
AUTH = f"""
shutdown_grace: 60s
auth:
  tokens:
    - {{user: alice, sha256: {hash_token(TOKEN)}}}
  roles: {{alice: [ops]}}
"""
SPECS = {
    "nap.yaml": """
sequences:
  nap:
    request: true
    nodes:
      nap: {category: job, type: sleep, with: {duration: 120s}}
"""
}
FULL_HEALTH = {"ok", "journalWritable", "loopLagMs", "specsOk", "specsErrors", "runningJobs"}
VALID = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token"}


def _tcp(d: Daemon, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
    return d.send(method, path, headers=headers, tcp=True)


@pytest.fixture(scope="module", params=["default", "metrics_public: true", "metrics_public: false"])
def d(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    extra = "" if request.param == "default" else f"  {request.param}\n"
    root = tmp_path_factory.mktemp("probes")
    daemon = Daemon(root, SPECS, port=free_port(), config=AUTH + extra)
    with serving(daemon):
        yield daemon


def metrics_public(d: Daemon) -> bool:
    assert d.config is not None
    return "metrics_public: false" not in d.config.read_text()


# (method, path, headers, status when metrics are public, status when not)
CALLS = [
    ("GET", "/api/v1/health", None, 200, 200),
    ("HEAD", "/api/v1/health", None, 200, 200),
    ("GET", "/api/v1/version", None, 200, 200),
    ("HEAD", "/api/v1/version", None, 200, 200),
    ("GET", "/metrics", None, 200, 401),
    ("HEAD", "/metrics", None, 200, 401),
    ("GET", "/metrics", VALID, 200, 200),
    ("GET", "/api/v1/health", VALID, 200, 200),
    # a token that is sent must be valid, on the open endpoints too
    ("GET", "/api/v1/health", WRONG, 401, 401),
    ("GET", "/api/v1/version", WRONG, 401, 401),
    ("GET", "/metrics", WRONG, 401, 401),
    # only GET and HEAD of those are open: the rest is a 401 before it is a 405 or a 404
    ("POST", "/api/v1/health", None, 401, 401),
    ("POST", "/api/v1/health", VALID, 405, 405),
    ("GET", "/api/v1/health/", None, 401, 401),
    ("GET", "/api/v1/openapi.json", None, 401, 401),
    ("GET", "/api/v1/requests", None, 401, 401),
    ("GET", "/api/v1/status/running", None, 401, 401),
    ("GET", "/api/v1/request-list", None, 401, 401),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "public", "private"),
    CALLS,
    ids=[f"{m} {p} {'none' if h is None else h['Authorization'][7:11]}" for m, p, h, _, _ in CALLS],
)
def test_which_calls_need_a_token(
    d: Daemon, method: str, path: str, headers: dict[str, str] | None, public: int, private: int
) -> None:
    r = _tcp(d, method, path, headers)
    want = public if metrics_public(d) else private
    assert r.status == want, (method, path, r.status, r.raw)
    if r.status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    if method == "HEAD":
        assert r.raw == b""
    elif r.status >= 400:
        assert set(r.json) == {"error", "details"}


def test_health_without_a_token_says_only_ok(d: Daemon) -> None:
    anonymous = _tcp(d, "GET", "/api/v1/health")
    assert anonymous.status == 200 and anonymous.json == {"ok": True}, anonymous.raw
    full = _tcp(d, "GET", "/api/v1/health", VALID)
    assert set(full.json) >= FULL_HEALTH and full.json["ok"] is True
    status, on_socket = d.call("GET", "/api/v1/health")  # socket callers are identified
    assert status == 200 and set(on_socket) >= FULL_HEALTH
    version = _tcp(d, "GET", "/api/v1/version")
    assert version.json == _tcp(d, "GET", "/api/v1/version", VALID).json
    assert set(version.json) == {"version", "api"}


def test_metrics_body_is_prometheus_text(d: Daemon) -> None:
    r = _tcp(d, "GET", "/metrics", None if metrics_public(d) else VALID)
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    assert b"# TYPE " in r.raw


@pytest.mark.skipif(CURL is None, reason="no curl")
def test_a_curl_probe_needs_no_token(d: Daemon) -> None:
    r = Via("curl-tcp", d)("GET", "/api/v1/health")
    assert r.status == 200 and r.json == {"ok": True}


def test_anonymous_health_hides_spec_errors_and_says_why_it_is_not_ok(tmp_path: Path) -> None:
    """Spec errors (file paths, messages) and shutdown: the probe sees ok/reason, no details."""
    d = Daemon(tmp_path, SPECS, port=free_port(), config=AUTH)
    d.start()
    try:
        broken = d.specs_dir / "secret-broken.yaml"
        broken.write_text("sequences:\n  x:\n    nodes: {a: {category: nope}}\n")
        d.signal(signal.SIGHUP)
        full = eventually(
            lambda: (r := _tcp(d, "GET", "/api/v1/health", VALID)).json["specsOk"] is False and r
        )
        assert str(broken) in "".join(full.json["specsErrors"])
        anonymous = _tcp(d, "GET", "/api/v1/health")
        assert anonymous.status == 200 and anonymous.json == {"ok": True}
        assert b"secret-broken" not in anonymous.raw

        rid = d.start_request("nap")
        d.wait_state(rid, "RUNNING")
        d.signal(signal.SIGTERM)  # the nap keeps the daemon in its 60s grace period
        eventually(lambda: _tcp(d, "GET", "/api/v1/health").status == 503)
        anonymous = _tcp(d, "GET", "/api/v1/health")
        assert anonymous.json == {"ok": False, "reason": "shutting down"}, anonymous.raw
        full = _tcp(d, "GET", "/api/v1/health", VALID)
        assert full.status == 503 and full.json["shuttingDown"] is True
        assert str(broken) in "".join(full.json["specsErrors"])
        d.signal(signal.SIGTERM)  # a second one cuts the grace short
        assert d.wait_exit(30) == 0
        no_500(d)
    finally:
        d.close()
