"""`update_settings` (what a SIGHUP reload calls) over real HTTP: calls that start afterwards
use the new auth settings and body limit; a call in flight keeps the settings it started with,
whole (its identity and its roles come from the same settings)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from daemon.api.app import update_settings
from daemon.api.auth import AuthSettings, TokenEntry, token_sha256
from tests.integration.fake_service import FakeService, call, serve

ALICE, BOB = "tok-alice", "tok-bob"


def auth(
    roles: dict[str, list[str]], *, metrics_public: bool = True, **tokens: str
) -> AuthSettings:
    return AuthSettings(
        enabled=True,
        tokens=[TokenEntry(user=u, sha256=token_sha256(t)) for u, t in tokens.items()],
        roles=roles,
        metrics_public=metrics_public,
    )


DEPLOYER = {"alice": ["deployers"], "bob": ["deployers"]}
BOTH = auth(DEPLOYER, alice=ALICE, bob=BOB)
BODY = {"type": "deploy", "args": {"app": "a" * 3000}}  # about 3 kB

# (name, settings before, body limit before, settings after, body limit after,
#  (method, path, token, json body), status before, status after)
CASES: list[tuple[str, AuthSettings, int, AuthSettings, int, tuple[Any, ...], int, int]] = [
    ("token added", auth(DEPLOYER, alice=ALICE), 65536, BOTH, 65536,
     ("GET", "/api/v1/requests", BOB, None), 401, 200),
    ("token removed", BOTH, 65536, auth(DEPLOYER, alice=ALICE), 65536,
     ("GET", "/api/v1/requests", BOB, None), 200, 401),
    ("role taken away", BOTH, 65536, auth({"alice": ["deployers"]}, alice=ALICE, bob=BOB), 65536,
     ("POST", "/api/v1/requests", BOB, BODY), 201, 403),
    ("metrics closed", BOTH, 65536, auth(DEPLOYER, metrics_public=False, alice=ALICE, bob=BOB),
     65536, ("GET", "/metrics", None, None), 200, 401),
    ("auth turned off", BOTH, 65536, AuthSettings(), 65536,
     ("GET", "/api/v1/requests", None, None), 401, 200),
    ("body limit raised", BOTH, 2048, BOTH, 8192,
     ("POST", "/api/v1/requests", ALICE, BODY), 413, 201),
    ("body limit lowered", BOTH, 8192, BOTH, 2048,
     ("POST", "/api/v1/requests", ALICE, BODY), 201, 413),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "limit_before", "after", "limit_after", "req", "status_before", "status_after"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_new_settings_apply_to_the_next_call(
    tmp_path: Any,
    before: AuthSettings,
    limit_before: int,
    after: AuthSettings,
    limit_after: int,
    req: tuple[Any, ...],
    status_before: int,
    status_after: int,
) -> None:
    method, path, token, body = req
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        serve(str(tmp_path), auth=before, max_body_bytes=limit_before) as s,
        s.tcp(**headers) as c,
    ):
        first = await call(c, method, path, json=body)
        update_settings(s.runner.app, auth=after, max_body_bytes=limit_after)
        second = await call(c, method, path, json=body)
    assert (first.status, second.status) == (status_before, status_after), second.body
    for reply, limit in ((first, limit_before), (second, limit_after)):
        if reply.status == 413:
            assert reply.json == {
                "error": f"request body larger than {limit} bytes",
                "details": {"maxBytes": limit},
            }


async def test_a_chunked_body_meets_the_limit_in_force(tmp_path: Any) -> None:
    """Without Content-Length the limit is checked while reading: the new one, after a swap."""

    async def chunks() -> Any:
        for _ in range(3):
            yield b" " * 1000  # JSON allows leading white space
        yield b'{"type": "noop"}'

    async with (
        serve(str(tmp_path), auth=BOTH, max_body_bytes=2048) as s,
        s.tcp(Authorization=f"Bearer {ALICE}") as c,
    ):
        first = await call(c, "POST", "/api/v1/requests", data=chunks())
        update_settings(s.runner.app, auth=BOTH, max_body_bytes=4096)
        second = await call(c, "POST", "/api/v1/requests", data=chunks())
    assert first.status == 413 and first.json["details"] == {"maxBytes": 2048}
    assert second.status == 201, second.body


class GatedService(FakeService):
    """`request_type_of` (asked between the identity check and the permission check of a
    stop) waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    async def request_type_of(self, request_id: str) -> str:
        self.reached.set()
        await self.gate.wait()
        return await super().request_type_of(request_id)


@pytest.mark.parametrize(
    ("after", "later_status"),
    [
        (auth({"alice": ["deployers"]}, alice=ALICE), 401),
        (auth({"alice": ["deployers"]}, alice=ALICE, bob=BOB), 403),
    ],
    ids=["token revoked", "role taken away"],
)
async def test_a_call_in_flight_keeps_the_settings_it_started_with(
    tmp_path: Any, after: AuthSettings, later_status: int
) -> None:
    service = GatedService()
    async with serve(str(tmp_path), service, auth=BOTH) as s:
        async with s.tcp(Authorization=f"Bearer {ALICE}") as c:
            created = await call(c, "POST", "/api/v1/requests", json=BODY)
        rid = created.json["id"]
        async with s.tcp(Authorization=f"Bearer {BOB}") as c:
            stop = asyncio.ensure_future(call(c, "PUT", f"/api/v1/requests/{rid}/stop"))
            await asyncio.wait_for(service.reached.wait(), 10)
            update_settings(s.runner.app, auth=after, max_body_bytes=65536)
            service.gate.set()
            in_flight = await stop
            later = await call(c, "PUT", f"/api/v1/requests/{rid}/stop")
    # bob was identified and authorized by the settings of the moment his call started
    assert in_flight.status == 200, in_flight.body
    assert ("stop", rid, "bob") in service.calls
    assert later.status == later_status, later.body
