"""Listeners: TCP on port 0, the Unix socket's mode, stale and live socket files, cleanup."""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

import aiohttp
import pytest

from daemon.api import AuthSettings, make_app, start_sites, tcp_port
from daemon.api.app import parse_listen
from tests.integration.fake_service import FakeService, call, serve, short_dir


def _app() -> Any:
    return make_app(FakeService(), auth=AuthSettings(), max_body_bytes=1024)


async def test_socket_mode_port_zero_and_cleanup(tmp_path: Any) -> None:
    async with serve(str(tmp_path)) as s:
        mode = stat.S_IMODE(os.stat(s.socket_path).st_mode)
        port = tcp_port(s.runner)
        assert s.socket_path in s.runner.addresses
        async with s.tcp() as c:
            assert (await call(c, "GET", "/api/v1/version")).status == 200
    assert mode == 0o660
    assert port > 0
    assert not os.path.exists(s.socket_path)


async def test_a_stale_socket_file_is_replaced(tmp_path: Any) -> None:
    async with short_dir(str(tmp_path)) as d:
        path = os.path.join(d, "spind.sock")
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(path)
        dead.close()  # the file stays, nobody listens
        runner = await start_sites(_app(), listen=None, socket_path=path)
        try:
            async with s_unix(path) as c:
                assert (await call(c, "GET", "/api/v1/version")).status == 200
        finally:
            await runner.cleanup()


async def test_a_live_socket_or_another_file_is_left_alone(tmp_path: Any) -> None:
    async with serve(str(tmp_path)) as s:
        with pytest.raises(RuntimeError, match="in use"):
            await start_sites(_app(), listen=None, socket_path=s.socket_path)
        async with s.unix() as c:  # the first daemon still answers
            assert (await call(c, "GET", "/api/v1/version")).status == 200
    plain = tmp_path / "not-a-socket"
    plain.write_text("keep me")
    with pytest.raises(RuntimeError, match="not a socket"):
        await start_sites(_app(), listen=None, socket_path=str(plain))
    assert plain.read_text() == "keep me"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("bad", ["8080", ":8080", "host:", "host:http", "host:70000"])
def test_parse_listen_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_listen(bad)


async def test_nothing_to_listen_on() -> None:
    with pytest.raises(ValueError, match="nothing to listen on"):
        await start_sites(_app(), listen=None, socket_path=None)


def s_unix(path: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession("http://spind", connector=aiohttp.UnixConnector(path=path))
