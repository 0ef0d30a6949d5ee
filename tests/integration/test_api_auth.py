"""Access control over real HTTP: bearer tokens on TCP, the peer's Unix user on the socket."""

from __future__ import annotations

import os
import pwd
from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon.api.auth import AuthSettings, TokenEntry, token_sha256
from tests.integration.fake_service import Served, call, capture_logs, serve

TOKENS = {
    "alice": "tok-alice-deployer",
    "bob": "tok-bob-starter",
    "carol": "tok-carol-nobody",
    "dave": "tok-dave-sre",
    "erin": "tok-erin-owner",
}
ROLES = {"alice": ["deployers"], "bob": ["starters"], "dave": ["sre"], "erin": ["owners"]}
ME = pwd.getpwuid(os.getuid()).pw_name


def settings(**roles: list[str]) -> AuthSettings:
    return AuthSettings(
        enabled=True,
        tokens=[TokenEntry(user=u, sha256=token_sha256(t)) for u, t in TOKENS.items()],
        roles={**ROLES, **roles},
        admin_roles=["sre"],
    )


@pytest.fixture
async def srv(tmp_path: Any) -> AsyncIterator[Served]:
    async with serve(str(tmp_path), auth=settings()) as s:
        yield s


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


async def _request(s: Served, type_: str) -> str:
    """A request made by dave (admin), for the stop tests."""
    async with s.tcp(**bearer("dave")) as c:
        r = await call(
            c,
            "POST",
            "/api/v1/requests",
            json={"type": type_, "args": {"app": "a"} if type_ == "deploy" else {}},
        )
    assert r.status == 201, r.body
    return str(r.json["id"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {TOKENS['alice']}"},
        {"Authorization": TOKENS["alice"]},
        {"Authorization": f"Bearer {TOKENS['alice']}x"},
    ],
)
async def test_tcp_without_a_valid_token_is_401(srv: Served, headers: dict[str, str]) -> None:
    async with srv.tcp(**headers) as c:
        read = await call(c, "GET", "/api/v1/requests")
        write = await call(c, "POST", "/api/v1/requests", json={"type": "noop"})
        nowhere = await call(c, "GET", "/api/v1/nosuch")
    assert (read.status, write.status, nowhere.status) == (401, 401, 401)
    assert read.headers["www-authenticate"].startswith("Bearer")
    assert "token" in read.json["error"]
    assert srv.service.calls == []


@pytest.mark.parametrize("user", list(TOKENS))
async def test_reads_need_only_an_identity(srv: Served, user: str) -> None:
    async with srv.tcp(**bearer(user)) as c:
        for path in (
            "/api/v1/requests",
            "/api/v1/status/running",
            "/api/v1/request-list",
            "/api/v1/version",
            "/api/v1/health",
            "/metrics",
        ):
            r = await call(c, "GET", path)
            assert r.status == 200, (path, r.body)


@pytest.mark.parametrize(
    ("user", "type_", "status"),
    [
        ("alice", "deploy", 201),  # deployers: start, stop
        ("bob", "deploy", 201),  # starters: start
        ("carol", "deploy", 403),  # no role
        ("erin", "deploy", 201),  # owners: admin in the type's ACL
        ("dave", "deploy", 201),  # sre: a config admin role
        ("carol", "noop", 201),  # no ACL: any authenticated user
        ("carol", "nosuch", 400),  # unknown type: the service's 400, not a 403
    ],
)
async def test_start_follows_the_type_acl(srv: Served, user: str, type_: str, status: int) -> None:
    args = {"app": "a"} if type_ == "deploy" else {}
    async with srv.tcp(**bearer(user)) as c:
        r = await call(c, "POST", "/api/v1/requests", json={"type": type_, "args": args})
        dry = await call(
            c, "POST", "/api/v1/requests?dryRun=true", json={"type": type_, "args": args}
        )
    assert r.status == status, r.body
    assert dry.status == (200 if status == 201 else status)
    if status == 201:
        assert r.json["user"] == user
    if status == 403:
        assert r.json["error"] == f"{user} may not start requests of type 'deploy'"
        assert len(srv.service.requests) == 0


@pytest.mark.parametrize(
    ("user", "type_", "status"),
    [
        ("alice", "deploy", 200),
        ("bob", "deploy", 403),  # may start, may not stop
        ("carol", "deploy", 403),
        ("erin", "deploy", 200),
        ("dave", "deploy", 200),
        ("carol", "noop", 200),
    ],
)
@pytest.mark.parametrize("action", ["stop", "suspend"])
async def test_changes_need_stop(
    srv: Served, user: str, type_: str, status: int, action: str
) -> None:
    rid = await _request(srv, type_)
    async with srv.tcp(**bearer(user)) as c:
        r = await call(c, "PUT", f"/api/v1/requests/{rid}/{action}")
        skip = await call(c, "PUT", f"/api/v1/requests/{rid}/jobs/j1/skip", json={"reason": "r"})
        missing = await call(c, "PUT", f"/api/v1/requests/{'0' * 26}/{action}")
    assert r.status == status, r.body
    assert skip.status == status
    assert missing.status == 404
    if status == 200:
        assert srv.service.calls[-1][0] == "skip" and srv.service.calls[-1][3] == user


async def test_socket_peer_is_the_identity(tmp_path: Any) -> None:
    async with serve(str(tmp_path), auth=settings()) as s, s.unix() as c:
        read = await call(c, "GET", "/api/v1/requests")
        denied = await call(
            c, "POST", "/api/v1/requests", json={"type": "deploy", "args": {"app": "a"}}
        )
        # a token sent over the socket changes nothing: the peer is who it is
        still = await call(
            c,
            "POST",
            "/api/v1/requests",
            json={"type": "deploy", "args": {"app": "a"}},
            headers=bearer("alice"),
        )
    assert read.status == 200
    assert denied.status == 403 and still.status == 403
    assert denied.json["details"] == {"user": ME, "op": "start"}
    async with serve(str(tmp_path), auth=settings(**{ME: ["deployers"]})) as s, s.unix() as c:
        r = await call(c, "POST", "/api/v1/requests", json={"type": "deploy", "args": {"app": "a"}})
    assert r.status == 201 and r.json["user"] == ME


async def test_401_and_403_are_logged_with_the_trace_id_and_never_the_token(srv: Served) -> None:
    with capture_logs() as logs:
        async with srv.tcp(
            **{"X-Request-Id": "t-401", "Authorization": "Bearer s3cret-guess"}
        ) as c:
            await call(c, "GET", "/api/v1/requests")
        async with srv.tcp(**{"X-Request-Id": "t-403", **bearer("carol")}) as c:
            await call(c, "POST", "/api/v1/requests", json={"type": "deploy", "args": {"app": "a"}})
    denied = {
        r["extra"]["trace_id"]: r for r in logs if r["extra"].get("action") == "access_denied"
    }
    assert set(denied) == {"t-401", "t-403"}
    assert denied["t-401"]["extra"]["status"] == 401
    assert denied["t-403"]["extra"]["status"] == 403
    text = " ".join(str(r["message"]) + str(r["extra"]) for r in logs)
    assert "s3cret-guess" not in text and TOKENS["carol"] not in text
    access = [r for r in logs if r["extra"].get("action") == "http_access"]
    assert [(r["extra"]["trace_id"], r["extra"]["user"]) for r in access] == [
        ("t-401", "-"),
        ("t-403", "carol"),
    ]
