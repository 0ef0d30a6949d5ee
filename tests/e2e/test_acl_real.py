"""Authentication and ACLs of a real daemon with an `auth` section, both ways.

TCP callers are identified by bearer token (the config holds only the token's SHA-256), socket
callers by their Unix user (the tests run as root, which the config gives the `ops` role).
Roles: alice ops, bob viewer, carol boss (an admin role), dave none at all.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from daemon.config import hash_token
from tests.e2e.harness import REPO, Daemon, Reply, free_port, serving
from tests.e2e.test_api_real import CURL, Via, table_counts

pytestmark = pytest.mark.timeout(120)

TOKENS = {user: f"{user}-{uuid.uuid4().hex}" for user in ("alice", "bob", "carol", "dave")}
ME = pwd.getpwuid(os.getuid()).pw_name

CONFIG = f"""
auth:
  tokens:
{"".join(f"    - {{user: {u}, sha256: {hash_token(t)}}}{chr(10)}" for u, t in TOKENS.items())}
  roles:
    alice: [ops]
    bob: [viewer]
    carol: [boss]
    {ME}: [ops]
  admin_roles: [boss]
"""


def nap(name: str, acl: str) -> str:
    return f"""
  {name}:
    request: true
    args:
      optional: [{{name: seconds, default: "60"}}]
{acl}
    nodes:
      nap:
        category: job
        type: sleep
        args: [{{expected: seconds}}]
        with: {{duration: "{{{{seconds}}}}s"}}
"""


SPECS = {
    "acl.yaml": "sequences:"
    + nap("guarded", "    acl: [{role: ops, ops: [start, stop]}]")
    + nap("startonly", "    acl: [{role: ops, ops: [start]}, {role: viewer, ops: [stop]}]")
    + nap("dbaonly", "    acl: [{role: dba, admin: true}]")
    + nap("open", "")
}


def as_user(d: Daemon, user: str | None, *, tcp: bool = True, curl: bool = False) -> Via:
    """`user` calling over TCP with their token (None: no token), or over the socket."""
    name = ("curl-" if curl else "") + ("tcp" if tcp else "socket")
    return Via(name, d, TOKENS[user] if user is not None else None)


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("acl-real"), SPECS, port=free_port(), config=CONFIG)
    with serving(daemon):
        yield daemon


def start(caller: Via, rtype: str) -> Reply:
    return caller("POST", "/api/v1/requests", {"type": rtype, "args": {}})


def started(d: Daemon, rtype: str) -> str:
    """A running request of `rtype`, started by carol (admin)."""
    r = start(as_user(d, "carol"), rtype)
    assert r.status == 201, r.raw
    rid = str(r.json["id"])
    d.wait_state(rid, "RUNNING")
    return rid


def assert_error(r: Reply, status: int, needle: str) -> None:
    assert r.status == status, (r.status, r.raw)
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json) == {"error", "details"} and needle in r.json["error"], r.json


# --- 401 -------------------------------------------------------------------------------------

NEEDS_CURL = pytest.mark.skipif(CURL is None, reason="no curl")
# (health, version and, by default, metrics answer without a token: test_auth_probes.py)
CALLS = [
    ("GET", "/api/v1/requests"),
    ("GET", "/api/v1/requests/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ("POST", "/api/v1/requests"),
    ("PUT", "/api/v1/requests/01ARZ3NDEKTSV4RRFFQ69G5FAV/stop"),
    ("GET", "/api/v1/status/running"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/nothing-here"),
]
BAD_AUTH = [
    None,
    "Bearer wrong-token",
    "Bearer ",
    f"Basic {TOKENS['alice']}",
    f"Bearer {hash_token(TOKENS['alice'])}",  # the hash in the config is not the token
    f"Bearer {TOKENS['alice']}x",
]


@pytest.mark.parametrize(
    "curl", [False, pytest.param(True, marks=pytest.mark.skipif(not CURL, reason="no curl"))]
)
@pytest.mark.parametrize("authorization", BAD_AUTH)
def test_tcp_without_a_valid_token_is_401(d: Daemon, authorization: str | None, curl: bool) -> None:
    caller = as_user(d, None, curl=curl)
    before = table_counts(d)["requests"]
    for method, path in CALLS:
        headers = {} if authorization is None else {"Authorization": authorization}
        body = {"type": "open"} if method == "POST" else None
        r = caller(method, path, body, headers=headers)
        assert_error(r, 401, "")
        assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
        assert r.headers["x-request-id"]
    assert table_counts(d)["requests"] == before
    assert TOKENS["alice"] not in d.log()


def test_a_valid_token_identifies_its_user(d: Daemon) -> None:
    for user in TOKENS:
        r = start(as_user(d, user), "open")
        assert r.status == 201 and r.json["user"] == user, r.raw
        assert as_user(d, user).put(r.json["id"], "stop").status == 200
    # the scheme is case-insensitive and spaces around the token do not matter
    headers = {"Authorization": f"bearer   {TOKENS['dave']} "}
    r = as_user(d, None)("GET", "/api/v1/version", headers=headers)
    assert r.status == 200


# --- 403 and allowed, both ways ---------------------------------------------------------------

START = [
    ("alice", "guarded", 201),
    ("bob", "guarded", 403),
    ("dave", "guarded", 403),
    ("carol", "guarded", 201),  # boss is an admin role
    ("alice", "startonly", 201),
    ("bob", "startonly", 403),  # may stop it, not start it
    ("alice", "dbaonly", 403),
    ("carol", "dbaonly", 201),
    ("bob", "open", 201),  # no acl: every authenticated user
    ("dave", "open", 201),
]


@pytest.mark.parametrize(("user", "rtype", "status"), START)
def test_start_needs_the_start_op(d: Daemon, user: str, rtype: str, status: int) -> None:
    before = table_counts(d)["requests"]
    r = start(as_user(d, user), rtype)
    if status == 403:
        assert_error(r, 403, f"{user} may not start requests of type '{rtype}'")
        assert r.json["details"] == {"user": user, "op": "start"}
        assert table_counts(d)["requests"] == before
        return
    assert r.status == 201 and r.json["user"] == user, r.raw
    assert as_user(d, "carol").put(r.json["id"], "stop").status == 200


CHANGE = [
    ("bob", "guarded", 403),
    ("dave", "guarded", 403),
    ("alice", "guarded", 200),
    ("carol", "guarded", 200),
    ("alice", "startonly", 403),  # may start it, not stop it
    ("bob", "startonly", 200),
    ("alice", "dbaonly", 403),
    ("carol", "dbaonly", 200),
    ("dave", "open", 200),
]


@pytest.mark.parametrize(("user", "rtype", "status"), CHANGE)
def test_stop_suspend_resume_retry_skip_need_the_stop_op(
    d: Daemon, user: str, rtype: str, status: int
) -> None:
    rid = started(d, rtype)
    caller = as_user(d, user)
    if status == 403:
        for action, body in (
            ("stop", None),
            ("suspend", None),
            ("resume", None),
            ("retry", None),
            ("jobs/j2/skip", {"reason": "no"}),
        ):
            r = caller.put(rid, action, body)
            assert_error(r, 403, f"{user} may not stop or change requests of type '{rtype}'")
            assert r.json["details"] == {"user": user, "op": "stop"}
        assert d.state(rid) == "RUNNING"
        # reads need only an identity
        assert caller.get(rid)["id"] == rid
        assert caller("GET", f"/api/v1/requests/{rid}/log").status == 200
        assert as_user(d, "carol").put(rid, "stop").status == 200
        return
    r = caller.put(rid, "suspend")
    assert r.status == 200 and r.json["state"] == "SUSPENDED", r.raw
    r = caller.put(rid, "resume")
    assert r.status == 200, r.raw
    r = caller.put(rid, "stop")
    assert r.status == 200 and r.json["state"] == "STOPPED", r.raw
    assert f"stopped by {user}" == r.json["reason"]
    r = caller.put(rid, "retry")
    assert r.status == 200, r.raw
    d.wait_state(rid, "RUNNING")
    assert caller.put(rid, "stop").status == 200


def test_socket_callers_are_their_unix_user(d: Daemon) -> None:
    me = as_user(d, None, tcp=False)
    r = start(me, "guarded")
    assert r.status == 201, r.raw
    rid = r.json["id"]
    assert r.json["user"] == ME  # root, when the tests run as root
    assert_error(start(me, "dbaonly"), 403, f"{ME} may not start requests of type 'dbaonly'")
    # a bearer token means nothing on the socket: the peer's uid decides
    carol = {"Authorization": f"Bearer {TOKENS['carol']}"}
    r = me("POST", "/api/v1/requests", {"type": "dbaonly"}, headers=carol)
    assert r.status == 403
    found = me("GET", f"/api/v1/requests?user={ME}&type=guarded").json
    assert rid in [v["id"] for v in found]
    assert me.put(rid, "stop").status == 200
    other = started(d, "dbaonly")
    assert_error(me.put(other, "stop"), 403, f"{ME} may not stop")
    assert as_user(d, "carol").put(other, "stop").status == 200


def test_denials_are_logged_with_the_trace_id(d: Daemon) -> None:
    t401, t403 = f"deny-401-{uuid.uuid4().hex[:6]}", f"deny-403-{uuid.uuid4().hex[:6]}"
    r = as_user(d, None)("GET", "/api/v1/requests", headers={"X-Request-Id": t401})
    assert r.status == 401 and r.headers["x-request-id"] == t401
    r = as_user(d, "bob")(
        "POST", "/api/v1/requests", {"type": "guarded"}, headers={"X-Request-Id": t403}
    )
    assert r.status == 403 and r.headers["x-request-id"] == t403
    log = d.log().splitlines()
    denied401 = [x for x in log if f"trace={t401} " in x]
    denied403 = [x for x in log if f"trace={t403} " in x]
    assert any("action=access_denied] 401 GET /api/v1/requests" in x for x in denied401), log
    assert any("http_access] GET /api/v1/requests 401" in x for x in denied401), denied401
    assert any(
        "action=access_denied] 403 POST /api/v1/requests: bob may not start" in x for x in denied403
    ), denied403
    assert any("http_access] POST /api/v1/requests 403" in x and "user=bob" in x for x in denied403)
    assert all(t not in d.log() for t in TOKENS.values())


# --- the CLI over TCP with a token -----------------------------------------------------------


def spind(d: Daemon, *argv: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIND_")}
    env["PYTHONPATH"] = str(REPO)
    if token is not None:
        env["SPIND_TOKEN"] = token
    url = ["--url", f"http://127.0.0.1:{d.port}"]
    cmd = [sys.executable, "-m", "daemon", argv[0], *url, *argv[1:]]
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_cli_over_tcp_uses_the_token(d: Daemon) -> None:
    no = spind(d, "find", "--json")
    assert no.returncode == 2 and "(HTTP 401)" in no.stderr, no.stderr
    assert re.search(r"trace id: [0-9a-f]{32}", no.stderr)
    denied = spind(d, "start", "guarded", token=TOKENS["bob"])
    assert denied.returncode == 2
    assert "bob may not start requests of type 'guarded' (HTTP 403)" in denied.stderr
    ok = spind(d, "start", "guarded", "seconds=30", token=TOKENS["alice"])
    assert ok.returncode == 0, ok.stderr
    rid = ok.stdout.strip()
    assert d.request(rid)["user"] == "alice"
    stopped = spind(d, "stop", rid, token=TOKENS["bob"])
    assert stopped.returncode == 2 and "(HTTP 403)" in stopped.stderr
    stopped = spind(d, "stop", rid, "--token", TOKENS["alice"])
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"{rid} STOPPED", stopped
