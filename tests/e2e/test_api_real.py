"""The control plane of a real daemon, over real TCP, the real Unix socket and curl.

One daemon serves the whole module (TCP on a free loopback port and the Unix socket, no `auth`
section, `max_body_bytes` small). Every test runs through each transport: our own HTTP client
over TCP and over the socket, and curl over both when curl is installed. Requests are told
apart by a `tag` arg unique to each test, since they share one journal.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from daemon.api.routes import ROUTES
from tests.e2e.harness import Daemon, Reply, eventually, free_port, no_500, serving

pytestmark = pytest.mark.timeout(120)

MAX_BODY = 2048
CURL = shutil.which("curl")
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
FINAL = ("COMPLETE", "FAIL", "STOPPED")

TAG = "{name: tag, default: none}"
SPECS = {
    "api.yaml": f"""
sequences:
  greet:
    request: true
    desc: Greet someone.
    args:
      required: [{{name: name, desc: who to greet}}]
      optional: [{{name: mode, default: plain}}, {TAG}]
      static: [{{name: team, default: infra}}]
    nodes:
      hello:
        category: job
        type: shell
        args: [{{expected: name}}]
        with: {{cmd: 'echo "hello, $SPIND_ARG_name"; echo to-stderr >&2'}}
  nap:
    request: true
    desc: Sleep a while.
    args:
      optional: [{{name: seconds, default: "30"}}, {TAG}]
    nodes:
      nap:
        category: job
        type: sleep
        args: [{{expected: seconds}}]
        with: {{duration: "{{{{seconds}}}}s"}}
  breaks:
    request: true
    desc: The middle job fails on its first try in each request, then succeeds.
    args:
      required: [{{name: marker}}]
      optional: [{TAG}]
    nodes:
      first:
        category: job
        type: shell
        with: {{cmd: 'true'}}
      flaky:
        category: job
        type: shell
        args: [{{expected: marker}}]
        deps: [first]
        with:
          cmd: |
            [ -e "$SPIND_ARG_marker" ] && exit 0
            touch "$SPIND_ARG_marker"; echo boom >&2; exit 3
      last:
        category: job
        type: shell
        deps: [flaky]
        with: {{cmd: 'true'}}
"""
}
#: job ids of `breaks` (the builder numbers jobs from j2: j1 is the request's root)
FIRST, FLAKY, LAST = "j2", "j3", "j4"


# --- transports ------------------------------------------------------------------------------


def _parse_curl(out: bytes) -> Reply:
    """`curl -i` output -> Reply (skipping any interim 1xx responses)."""
    while True:
        head, _, rest = out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if 100 <= status < 200 and rest.startswith(b"HTTP/"):
            out = rest
            continue
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Reply(status, headers, rest)


@dataclass(frozen=True)
class Via:
    """One way to reach the daemon: `socket`, `tcp`, `curl-socket` or `curl-tcp`; over TCP
    with `token`, every call carries it as a bearer token."""

    name: str
    d: Daemon
    token: str | None = None

    @property
    def user(self) -> str:
        """Who the daemon says the caller is (no auth: the socket peer, or anonymous)."""
        return "root" if self.name.endswith("socket") else "anonymous"

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if self.token is not None and self.name.endswith("tcp"):
            headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        if not self.name.startswith("curl"):
            return self.d.send(method, path, raw=raw, headers=headers, tcp=self.name == "tcp")
        return self.curl(method, path, raw=raw, headers=headers)

    def curl(
        self,
        method: str,
        path: str,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        assert CURL is not None
        cmd = [CURL, "-sS", "-i", "--path-as-is", "--max-time", "30", "-X", method]
        cmd += ["-H", "Expect:"]  # no 100-continue round trip for larger bodies
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        if raw is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        if self.name == "curl-socket":
            cmd += ["--unix-socket", str(self.d.socket), f"http://spind{path}"]
        else:
            cmd.append(f"http://127.0.0.1:{self.d.port}{path}")
        proc = subprocess.run(cmd, input=raw or b"", capture_output=True, timeout=40)
        assert proc.returncode == 0, (cmd[:12], proc.returncode, proc.stderr)
        return _parse_curl(proc.stdout)

    # helpers used by many tests

    def create(self, type: str, **args: Any) -> dict[str, Any]:
        r = self("POST", "/api/v1/requests", {"type": type, "args": args})
        assert r.status == 201, (r.status, r.raw)
        return dict(r.json)

    def get(self, rid: str) -> dict[str, Any]:
        r = self("GET", f"/api/v1/requests/{rid}")
        assert r.status == 200, (r.status, r.raw)
        return dict(r.json)

    def wait(self, rid: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        want = states or FINAL
        return dict(eventually(lambda: (r := self.get(rid))["state"] in want and r, timeout))

    def put(self, rid: str, action: str, body: Any = None) -> Reply:
        return self("PUT", f"/api/v1/requests/{rid}/{action}", body)


TRANSPORTS = [
    pytest.param("socket"),
    pytest.param("tcp"),
    pytest.param("curl-socket", marks=pytest.mark.skipif(CURL is None, reason="no curl")),
    pytest.param("curl-tcp", marks=pytest.mark.skipif(CURL is None, reason="no curl")),
]


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("api-real")
    daemon = Daemon(root, SPECS, port=free_port(), config=f"max_body_bytes: {MAX_BODY}\n")
    with serving(daemon):
        yield daemon


@pytest.fixture(params=TRANSPORTS)
def via(request: pytest.FixtureRequest, d: Daemon) -> Via:
    return Via(request.param, d)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:12]


def marker(d: Daemon) -> str:
    return str(d.root / f"marker-{uuid.uuid4().hex}")


def is_utc(value: Any) -> bool:
    return isinstance(value, str) and RFC3339_UTC.fullmatch(value) is not None


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value)


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def table_counts(d: Daemon) -> dict[str, int]:
    with closing(d.db()) as conn:
        names = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] not in ("boots", "schema_migrations")
        ]
        return {n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}


def sse_blocks(raw: bytes) -> list[dict[str, str]]:
    """An SSE body -> its events as {field: value}; comment-only blocks are left out."""
    out = []
    for block in raw.decode().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            out.append(fields)
    return out


# --- endpoints -------------------------------------------------------------------------------


def test_request_list_version_and_health(via: Via) -> None:
    r = via("GET", "/api/v1/request-list")
    assert r.status == 200 and r.headers["content-type"].startswith("application/json")
    types = {t["name"]: t for t in r.json}
    assert set(types) == {"greet", "nap", "breaks"}
    assert types["greet"]["desc"] == "Greet someone."
    kinds = {a["name"]: (a["kind"], a["default"], a["desc"]) for a in types["greet"]["args"]}
    assert kinds == {
        "name": ("required", None, "who to greet"),
        "mode": ("optional", "plain", ""),
        "tag": ("optional", "none", ""),
        "team": ("static", "infra", ""),
    }

    r = via("GET", "/api/v1/version")
    assert r.status == 200 and r.json["api"] == "v1"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", r.json["version"])

    r = via("GET", "/api/v1/health")
    assert r.status == 200
    assert r.json["ok"] is True and r.json["journalWritable"] is True
    assert r.json["shuttingDown"] is False and r.json["specsOk"] is True
    assert isinstance(r.json["loopLagMs"], float)


def test_create_get_and_log_have_spin_cycle_shapes(via: Via, tag: str) -> None:
    r = via("POST", "/api/v1/requests", {"type": "greet", "args": {"name": "ops", "tag": tag}})
    assert r.status == 201, r.raw
    view = r.json
    rid = view["id"]
    assert ULID.fullmatch(rid)
    assert r.headers["location"] == f"/api/v1/requests/{rid}"
    assert view["type"] == "greet" and view["user"] == via.user
    assert view["state"] in ("PENDING", "RUNNING")
    assert view["args"] == {"name": "ops", "mode": "plain", "tag": tag, "team": "infra"}
    assert is_utc(view["createdAt"]) and view["finishedAt"] is None
    assert view["totalJobs"] == 1 and view["finishedJobs"] == 0

    detail = via.wait(rid)
    assert detail["state"] == "COMPLETE"
    for key in ("createdAt", "startedAt", "finishedAt"):
        assert is_utc(detail[key]), (key, detail[key])
    assert utc(detail["createdAt"]) <= utc(detail["startedAt"]) <= utc(detail["finishedAt"])
    assert detail["finishedJobs"] == detail["totalJobs"] == 1
    assert detail["edges"] == []
    [job] = detail["jobs"]
    assert {k: job[k] for k in ("name", "type", "state", "tries")} == {
        "name": "hello",
        "type": "shell",
        "state": "COMPLETE",
        "tries": 1,
    }
    assert re.fullmatch(r"j\d+", job["id"]) and job["sequenceId"]

    r = via("GET", f"/api/v1/requests/{rid}/log")
    assert r.status == 200
    [row] = r.json
    assert {k: row[k] for k in ("requestId", "jobId", "name", "type", "try", "state")} == {
        "requestId": rid,
        "jobId": job["id"],
        "name": "hello",
        "type": "shell",
        "try": 1,
        "state": "COMPLETE",
    }
    assert row["exit"] == 0 and row["error"] == ""
    assert row["stdout"] == "hello, ops\n" and row["stderr"] == "to-stderr\n"
    assert is_utc(row["startedAt"]) and is_utc(row["finishedAt"])

    r = via("GET", f"/api/v1/requests/{rid}/log/{job['id']}")
    assert r.status == 200 and r.json == [row]


def test_dry_run_returns_the_chain_and_starts_nothing(via: Via, d: Daemon) -> None:
    before = table_counts(d)
    body = {"type": "breaks", "args": {"marker": "/nonexistent"}}
    r = via("POST", "/api/v1/requests?dryRun=true", body)
    assert r.status == 200, r.raw
    plan = r.json
    assert plan["type"] == "breaks" and plan["args"]["marker"] == "/nonexistent"
    assert [(j["id"], j["name"]) for j in plan["jobs"]] == [
        (FIRST, "first"),
        (FLAKY, "flaky"),
        (LAST, "last"),
    ]
    assert plan["edges"] == [[FIRST, FLAKY], [FLAKY, LAST]]
    assert table_counts(d) == before
    r = via("POST", "/api/v1/requests?dryRun=false", body)
    assert r.status == 201
    assert table_counts(d)["requests"] == before["requests"] + 1
    via.wait(r.json["id"])


def test_find_filters(via: Via, d: Daemon, tag: str) -> None:
    ok1 = via.create("greet", name="a", tag=tag)["id"]
    via.wait(ok1)
    bad = via.create("breaks", marker=marker(d), tag=tag)["id"]
    via.wait(bad)
    ok2 = via.create("greet", name="b", tag=tag)["id"]
    via.wait(ok2)
    created = [utc(via.get(i)["createdAt"]) for i in (ok1, bad, ok2)]

    def find(query: str) -> list[str]:
        r = via("GET", f"/api/v1/requests?arg=tag={tag}" + query)
        assert r.status == 200, r.raw
        for view in r.json:
            assert set(view) >= {"id", "type", "state", "user", "args", "createdAt"}
        return [v["id"] for v in r.json]

    mid1 = quote(rfc3339(created[0] + (created[1] - created[0]) / 2))
    mid2 = quote(rfc3339(created[1] + (created[2] - created[1]) / 2))
    cases = [
        ("", [ok2, bad, ok1]),  # newest first
        ("&type=greet", [ok2, ok1]),
        ("&type=breaks", [bad]),
        ("&state=FAIL", [bad]),
        ("&state=COMPLETE&state=FAIL", [ok2, bad, ok1]),
        ("&state=complete,stopped", [ok2, ok1]),
        ("&state=RUNNING", []),
        (f"&user={via.user}", [ok2, bad, ok1]),
        ("&user=somebody-else", []),
        ("&arg=name=b", [ok2]),
        ("&arg=name=b&arg=mode=plain", [ok2]),
        ("&arg=name=zzz", []),
        (f"&since={mid1}", [ok2, bad]),
        (f"&until={mid2}", [bad, ok1]),
        (f"&since={mid1}&until={mid2}", [bad]),
        ("&limit=1", [ok2]),
        ("&limit=2&offset=1", [bad, ok1]),
        ("&offset=3", []),
    ]
    got = {query: find(query) for query, _ in cases}
    assert got == dict(cases)


def test_idempotency_key_replays_or_conflicts(via: Via, tag: str) -> None:
    key = {"Idempotency-Key": f"idem-{tag}"}
    first = via("POST", "/api/v1/requests", {"type": "greet", "args": {"name": tag}}, headers=key)
    assert first.status == 201 and "idempotent-replayed" not in first.headers
    # the same body, spaced and ordered differently
    raw = b'{ "args" : {"name": "%s"},\n "type": "greet" }' % tag.encode()
    again = via("POST", "/api/v1/requests", raw=raw, headers=key)
    assert again.status == 200, again.raw
    assert again.json["id"] == first.json["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = via("POST", "/api/v1/requests", {"type": "greet", "args": {"name": "x"}}, headers=key)
    assert other.status == 409, other.raw
    assert "Idempotency-Key" in other.json["error"] or "idempotency" in other.json["error"]
    via.wait(first.json["id"])


def test_retry_named_jobs_runs_them_again(via: Via, d: Daemon) -> None:
    rid = via.create("breaks", marker=marker(d))["id"]
    failed = via.wait(rid)
    assert failed["state"] == "FAIL"
    assert {j["id"]: j["state"] for j in failed["jobs"]} == {
        FIRST: "COMPLETE",
        FLAKY: "FAIL",
        LAST: "PENDING",
    }
    r = via.put(rid, "retry", {"jobs": [FLAKY]})
    assert r.status == 200, r.raw
    assert r.json["id"] == rid and r.json["state"] in ("PENDING", "RUNNING", "COMPLETE")
    done = via.wait(rid)
    assert done["state"] == "COMPLETE"
    tries = {j["id"]: j["tries"] for j in done["jobs"]}
    assert tries == {FIRST: 1, FLAKY: 2, LAST: 1}
    rows = via("GET", f"/api/v1/requests/{rid}/log/{FLAKY}").json
    assert [(x["try"], x["state"], x["exit"]) for x in rows] == [(1, "FAIL", 3), (2, "COMPLETE", 0)]
    assert rows[0]["stderr"] == "boom\n" and rows[0]["error"]
    # a finished request cannot be stopped
    r = via.put(rid, "stop")
    assert r.status == 409 and "COMPLETE" in r.json["error"]


def test_retry_without_body_retries_the_failed_jobs(via: Via, d: Daemon) -> None:
    rid = via.create("breaks", marker=marker(d))["id"]
    assert via.wait(rid)["state"] == "FAIL"
    r = via.put(rid, "retry")
    assert r.status == 200, r.raw
    done = via.wait(rid)
    assert done["state"] == "COMPLETE" and done["finishedJobs"] == 3
    assert [j["tries"] for j in done["jobs"]] == [1, 2, 1]


def test_skip_marks_the_job_done_and_the_chain_goes_on(via: Via, d: Daemon) -> None:
    rid = via.create("breaks", marker=marker(d))["id"]
    assert via.wait(rid)["state"] == "FAIL"
    r = via.put(rid, f"jobs/{FLAKY}/skip", {"reason": "done by hand"})
    assert r.status == 200, r.raw
    done = via.wait(rid)
    assert done["state"] == "COMPLETE"
    states = {j["id"]: (j["state"], j["tries"]) for j in done["jobs"]}
    assert states == {FIRST: ("COMPLETE", 1), FLAKY: ("SKIPPED", 1), LAST: ("COMPLETE", 1)}
    # the events of a request that ended, was skipped past and ended again: all of them, and
    # `end` carries the final state (it used to stop at the first FAIL)
    r = via("GET", f"/api/v1/requests/{rid}/events")
    assert r.status == 200
    blocks = sse_blocks(r.raw)
    assert blocks[-1]["event"] == "end"
    assert json.loads(blocks[-1]["data"]) == {"requestId": rid, "state": "COMPLETE"}
    events = [json.loads(b["data"]) for b in blocks[:-1]]
    request_states = [e["state"] for e in events if e["kind"] == "request"]
    assert request_states == ["PENDING", "RUNNING", "FAIL", "RUNNING", "COMPLETE"]
    skip = [e for e in events if e["kind"] == "skip"]
    assert len(skip) == 1 and skip[0]["jobId"] == FLAKY and "done by hand" in skip[0]["detail"]


def test_events_in_order_end_and_resume_from_last_event_id(via: Via) -> None:
    rid = via.create("nap", seconds="0.5")["id"]
    r = via("GET", f"/api/v1/requests/{rid}/events")  # live: opened while it runs
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers.get("x-request-id")
    blocks = sse_blocks(r.raw)
    assert blocks[-1]["event"] == "end"
    assert json.loads(blocks[-1]["data"]) == {"requestId": rid, "state": "COMPLETE"}
    events = blocks[:-1]
    ids = [int(b["id"]) for b in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    data = [json.loads(b["data"]) for b in events]
    assert all(e["seq"] == i and e["requestId"] == rid for e, i in zip(data, ids, strict=True))
    assert all(b["event"] == e["kind"] for b, e in zip(events, data, strict=True))
    assert [(e["kind"], e["jobId"], e["state"]) for e in data] == [
        ("request", None, "PENDING"),
        ("request", None, "RUNNING"),
        ("job", "j2", "RUNNING"),
        ("job", "j2", "COMPLETE"),
        ("request", None, "COMPLETE"),
    ]
    assert all(is_utc(e["at"]) for e in data)

    # reconnecting with Last-Event-ID (or ?after=) gives only what came after it
    r = via("GET", f"/api/v1/requests/{rid}/events", headers={"Last-Event-ID": str(ids[2])})
    again = sse_blocks(r.raw)
    assert [int(b["id"]) for b in again[:-1]] == ids[3:] and again[-1]["event"] == "end"
    r = via("GET", f"/api/v1/requests/{rid}/events?after={ids[-1]}")
    assert [b.get("event") for b in sse_blocks(r.raw)] == ["end"]


def test_running_status_then_stop(via: Via, tag: str) -> None:
    rid = via.create("nap", seconds="60", tag=tag)["id"]
    via.wait(rid, "RUNNING")

    def running_job() -> dict[str, Any] | None:
        jobs = via("GET", "/api/v1/status/running").json
        return next((j for j in jobs if j["requestId"] == rid), None)

    job = eventually(running_job)
    assert job["jobId"] == "j2" and job["name"] == "nap" and job["type"] == "sleep"
    assert job["try"] == 1 and job["requestType"] == "nap" and job["user"] == via.user
    assert re.fullmatch(r"sleeping 1m, [\d.]+s left", job["status"]), job
    assert is_utc(job["startedAt"])

    r = via.put(rid, "stop")
    assert r.status == 200, r.raw
    assert r.json["state"] == "STOPPED" and via.user in r.json["reason"]
    eventually(lambda: running_job() is None)
    r = via.put(rid, "stop")
    assert r.status == 409 and r.json["details"] == {"state": "STOPPED"}
    rows = via("GET", f"/api/v1/requests/{rid}/log").json
    assert [(x["try"], x["state"]) for x in rows] == [(1, "STOPPED")]


def test_suspend_and_resume(via: Via) -> None:
    rid = via.create("nap", seconds="60")["id"]
    via.wait(rid, "RUNNING")
    r = via.put(rid, "resume")
    assert r.status == 409 and "RUNNING" in r.json["error"]
    r = via.put(rid, "suspend")
    assert r.status == 200 and r.json["state"] == "SUSPENDED", r.raw
    assert via.put(rid, "suspend").status == 409
    r = via.put(rid, "resume")
    assert r.status == 200 and r.json["state"] in ("PENDING", "RUNNING"), r.raw
    job = eventually(
        lambda: next(
            (j for j in via("GET", "/api/v1/status/running").json if j["requestId"] == rid),
            None,
        )
    )
    assert job["try"] == 2  # the suspended try was interrupted; resume starts a new one
    assert via.put(rid, "stop").status == 200
    rows = via("GET", f"/api/v1/requests/{rid}/log").json
    assert [(x["try"], x["state"]) for x in rows] == [(1, "INTERRUPTED"), (2, "STOPPED")]


def test_openapi_documents_every_route(via: Via) -> None:
    r = via("GET", "/api/v1/openapi.json")
    assert r.status == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json
    assert doc["openapi"].startswith("3.")
    for route in ROUTES:
        assert route.method.lower() in doc["paths"].get(route.path, {}), route.path
        # and the route really is served under that path
        path = route.path.replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV").replace("{job_id}", "j2")
        assert via("OPTIONS", path).status == 405


def test_metrics_are_prometheus_text(via: Via) -> None:
    r = via("GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.raw.decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE spind_")}
    assert len(names) >= 5, names
    samples = [line for line in text.splitlines() if line.startswith("spind_")]
    assert samples and all(len(s.split()) >= 2 for s in samples)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_every_try_commit_and_call(tmp_path: Path) -> None:
    """A daemon of its own (nothing else runs): the tries of one request, the journal's
    commits and the API calls that made it are all counted."""
    daemon = Daemon(tmp_path, SPECS, port=free_port())
    with serving(daemon):
        via = Via("socket", daemon)
        before = _samples(via("GET", "/metrics").raw.decode())
        rid = via.create("breaks", marker=marker(daemon))["id"]
        assert via.wait(rid)["state"] == "FAIL"  # first COMPLETE, flaky FAIL (no retry)
        after = _samples(via("GET", "/metrics").raw.decode())

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("spind_job_tries_total", type="shell", outcome="COMPLETE") == 1
    assert delta("spind_job_tries_total", type="shell", outcome="FAIL") == 1
    assert delta("spind_job_duration_seconds_count", type="shell") == 2
    assert delta("spind_job_duration_seconds_bucket", type="shell", le="+Inf") == 2
    assert delta("spind_job_duration_seconds_sum", type="shell") > 0
    assert after[("spind_jobs_running", ())] == 0
    post = {"method": "POST", "route": "/api/v1/requests", "status": "201"}
    assert delta("spind_api_requests_total", **post) == 1
    assert delta("spind_api_requests_total", method="GET", route="/metrics", status="200") == 1
    commits = delta("spind_journal_commit_seconds_count")
    assert commits >= 3  # the request, its tries' starts and ends (some share a commit)
    assert delta("spind_journal_batch_size_count") == commits
    assert delta("spind_journal_batch_size_sum") >= commits
    # waiting for the request read it (small: on the loop's own connection)
    assert delta("spind_journal_reads_total", where="loop") >= 1


# --- errors ----------------------------------------------------------------------------------

UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
BIG = "x" * (MAX_BODY + 100)

#: (what, method, path, raw body, status, text the error must contain, details it must hold)
ERRORS: list[tuple[str, str, str, bytes | None, int, str, dict[str, Any] | None]] = [
    ("malformed JSON", "POST", "/api/v1/requests", b'{"type": ', 400, "malformed JSON", None),
    ("no body", "POST", "/api/v1/requests", None, 400, "body is required", None),
    ("type not a string", "POST", "/api/v1/requests", b'{"type": 5}', 400, "`type`", {
        "field": "type"
    }),
    ("args not an object", "POST", "/api/v1/requests", b'{"type": "greet", "args": [1]}', 400,
     "`args`", {"field": "args"}),
    ("unknown field", "POST", "/api/v1/requests", b'{"type": "greet", "argz": {}}', 400,
     "`argz`", {"field": "argz"}),
    ("unknown type", "POST", "/api/v1/requests", b'{"type": "nosuch"}', 400,
     "unknown request type 'nosuch'", None),
    ("missing arg", "POST", "/api/v1/requests", b'{"type": "greet"}', 400, "name",
     {"missing": ["name"]}),
    ("unknown arg", "POST", "/api/v1/requests",
     b'{"type": "greet", "args": {"name": "x", "colour": "red"}}', 400, "'colour'",
     {"arg": "colour"}),
    ("static arg", "POST", "/api/v1/requests",
     b'{"type": "greet", "args": {"name": "x", "team": "y"}}', 400, "static", {"arg": "team"}),
    ("number arg", "POST", "/api/v1/requests", b'{"type": "greet", "args": {"name": 5}}', 400,
     "'name' must be a string", {"arg": "name"}),
    ("null arg", "POST", "/api/v1/requests", b'{"type": "greet", "args": {"name": null}}', 400,
     "'name' must be a string", {"arg": "name"}),
    ("bad dryRun", "POST", "/api/v1/requests?dryRun=perhaps", b'{"type": "greet"}', 400,
     "dryRun", None),
    ("bad state filter", "GET", "/api/v1/requests?state=DONE", None, 400, "DONE", None),
    ("bad since", "GET", "/api/v1/requests?since=yesterday", None, 400, "since", None),
    ("bad limit", "GET", "/api/v1/requests?limit=0", None, 400, "limit", None),
    ("unknown query", "GET", "/api/v1/requests?colour=red", None, 400, "colour", None),
    ("bad retry body", "PUT", "/api/v1/requests/{done}/retry", b'{"jobs": ["../j"]}', 400,
     "jobs[0]", {"field": "jobs[0]"}),
    ("blank skip reason", "PUT", "/api/v1/requests/{done}/jobs/j2/skip", b'{"reason": " "}',
     400, "reason", {"field": "reason"}),
    ("bad after", "GET", "/api/v1/requests/{done}/events?after=x", None, 400, "after",
     None),
    ("unknown request", "GET", f"/api/v1/requests/{UNKNOWN_ID}", None, 404, UNKNOWN_ID, None),
    ("unknown request log", "GET", f"/api/v1/requests/{UNKNOWN_ID}/log", None, 404, "", None),
    ("unknown request events", "GET", f"/api/v1/requests/{UNKNOWN_ID}/events", None, 404, "",
     None),
    ("stop unknown", "PUT", f"/api/v1/requests/{UNKNOWN_ID}/stop", None, 404, "", None),
    ("dot-dot id", "GET", "/api/v1/requests/..%2Fx", None, 404, "not a request id",
     {"id": "../x"}),
    ("dot-dot path", "GET", "/api/v1/requests/../../etc/passwd", None, 404, "not found", None),
    ("4 KB id", "GET", "/api/v1/requests/" + "A" * 4096, None, 404, "not a request id", None),
    ("4 KB job id", "GET", "/api/v1/requests/{done}/log/" + "j" * 4096, None, 404,
     "not a job id", None),
    ("unknown route", "GET", "/api/v1/nothing-here", None, 404, "not found", None),
    ("wrong method", "DELETE", "/api/v1/requests/{done}", None, 405, "method not allowed",
     {"allowed": ["GET", "HEAD"]}),
    ("GET on stop", "GET", "/api/v1/requests/{done}/stop", None, 405, "method not allowed",
     {"allowed": ["PUT"]}),
    ("stop finished", "PUT", "/api/v1/requests/{done}/stop", None, 409, "already ended",
     {"state": "COMPLETE"}),
    ("body too large", "POST", "/api/v1/requests",
     b'{"type": "greet", "args": {"name": "%s"}}' % BIG.encode(), 413, str(MAX_BODY),
     {"maxBytes": MAX_BODY}),
    ("retry body too large", "PUT", "/api/v1/requests/{done}/retry",
     b'{"jobs": ["j2"], "pad": "%s"}' % BIG.encode(), 413, str(MAX_BODY), None),
]  # fmt: skip


@pytest.fixture(scope="module")
def done(d: Daemon) -> str:
    """A request that completed."""
    rid = d.start_request("greet", name="done")
    d.wait_state(rid)
    return rid


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "needle", "details"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
def test_errors_are_json_with_a_usable_message(
    via: Via,
    d: Daemon,
    done: str,
    method: str,
    path: str,
    raw: bytes | None,
    status: int,
    needle: str,
    details: dict[str, Any] | None,
) -> None:
    before = table_counts(d)["requests"]
    r = via(method, path.replace("{done}", done), raw=raw, headers={"X-Request-Id": "err-1"})
    assert r.status == status, r.raw
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"] == "err-1"
    body = r.json
    assert set(body) == {"error", "details"}
    assert isinstance(body["error"], str) and len(body["error"]) > 5
    assert needle in body["error"], body
    if details is not None:
        assert {k: body["details"][k] for k in details} == details, body
    if status == 405:
        assert r.headers["allow"]
    assert table_counts(d)["requests"] == before  # no error created anything


# --- trace ids -------------------------------------------------------------------------------


def test_trace_id_is_echoed_logged_and_kept_by_the_request(via: Via, d: Daemon) -> None:
    trace = f"trace-{via.name}.{uuid.uuid4().hex[:8]}"
    r = via(
        "POST",
        "/api/v1/requests",
        {"type": "greet", "args": {"name": "traced"}},
        headers={"X-Request-Id": trace},
    )
    assert r.status == 201 and r.headers["x-request-id"] == trace
    rid = r.json["id"]
    assert r.json["traceId"] == trace
    assert via.wait(rid)["traceId"] == trace
    lines = [line for line in d.log().splitlines() if f"trace={trace} " in line]
    assert any("http_access] POST /api/v1/requests 201" in line for line in lines), lines
    assert any(f"req={rid}" in line and "request_created" in line for line in lines), lines
    # a read carries its own id, in the header and the access log line
    r = via("GET", f"/api/v1/requests/{rid}", headers={"X-Request-Id": trace + "-get"})
    assert r.headers["x-request-id"] == trace + "-get"
    assert f"trace={trace}-get action=http_access] GET /api/v1/requests/{rid} 200" in d.log()


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "slash/ed", "é"])
def test_an_invalid_trace_id_is_replaced_by_a_fresh_one(via: Via, d: Daemon, bad: str) -> None:
    r = via("GET", "/api/v1/version", headers={"X-Request-Id": bad})
    assert r.status == 200
    fresh = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh), fresh
    assert f"trace={fresh} action=http_access] GET /api/v1/version 200" in d.log()
    r2 = via("GET", "/api/v1/version", headers={"X-Request-Id": bad})
    assert r2.headers["x-request-id"] != fresh


def test_no_500_anywhere(d: Daemon) -> None:
    """Everything above left no 500 and no unexpected error in the daemon's log."""
    no_500(d)


# --- shutting down ---------------------------------------------------------------------------


def test_writes_are_503_while_shutting_down(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS, port=free_port(), config="shutdown_grace: 60s\n")
    d.start()
    try:
        rid = d.start_request("nap", seconds="120")
        d.wait_state(rid, "RUNNING")
        other = d.start_request("greet", name="before")
        d.wait_state(other)
        d.signal(signal.SIGTERM)
        vias = [Via("socket", d), Via("tcp", d)]
        if CURL is not None:
            vias += [Via("curl-socket", d), Via("curl-tcp", d)]

        def refused() -> bool:
            return vias[0]("POST", "/api/v1/requests", {"type": "greet"}).status == 503

        eventually(refused)
        for via in vias:
            r = via("POST", "/api/v1/requests", {"type": "greet", "args": {"name": "x"}})
            assert r.status == 503 and "shutting down" in r.json["error"], (via.name, r.raw)
            assert r.headers["x-request-id"]
            for action in ("stop", "suspend", "retry"):
                r = via.put(rid, action)
                assert r.status == 503 and r.json["error"], (via.name, action, r.raw)
            assert via.put(other, "jobs/j2/skip", {"reason": "r"}).status == 503
            # reads still work; health says why it is not ok
            assert via.get(rid)["state"] == "RUNNING"
            health = via("GET", "/api/v1/health")
            assert health.status == 503 and health.json["shuttingDown"] is True
            # a dry run writes nothing, so it is still answered
            r = via("POST", "/api/v1/requests?dryRun=true", {"type": "nap"})
            assert r.status == 200, r.raw
        assert d.proc is not None and d.proc.poll() is None  # still in its grace period
        d.signal(signal.SIGTERM)  # a second one cuts the grace short
        assert d.wait_exit(30) == 0
        with closing(d.db()) as conn:
            state = conn.execute("SELECT state FROM requests WHERE id = ?", (rid,)).fetchone()[0]
            tries = conn.execute(
                "SELECT state FROM job_log WHERE request_id = ? ORDER BY try", (rid,)
            ).fetchall()
            count = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
        assert state == "SUSPENDED" and [t[0] for t in tries] == ["INTERRUPTED"]
        assert count == 2  # nothing was created during the grace period
        no_500(d)
    finally:
        d.close()
