"""The aiohttp application and its listeners (TCP and/or a Unix socket).

Middlewares, outermost first: trace id + access log, errors -> JSON, identity. Handlers and
their permission checks live in :mod:`daemon.api.routes`. The settings a reload may change
(auth, the body limit) sit in `app[LIVE]`; :func:`update_settings` swaps them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable

from aiohttp import web

from daemon.api import openapi
from daemon.api.auth import LIVE, ApiSettings, AuthSettings, LiveSettings, auth_middleware
from daemon.api.errors import error_middleware
from daemon.api.protocol import ControlService
from daemon.api.routes import HEARTBEAT, OPENAPI, ROUTES, SERVICE, STREAMS_STOP
from daemon.api.sse import StreamsStop
from daemon.api.trace import COUNT_CALL, add_trace_header, trace_middleware

SOCKET_MODE = 0o660
#: connections the kernel queues before we accept them (aiohttp's default of 128 makes a burst
#: of local clients fail to connect: a full Unix socket queue answers EAGAIN)
BACKLOG = 1024


def make_app(
    service: ControlService,
    *,
    auth: AuthSettings,
    max_body_bytes: int,
    heartbeat: float = 15.0,
) -> web.Application:
    """The control-plane application; `heartbeat` is the SSE keep-alive interval in seconds.

    `max_body_bytes` is enforced by the handlers that read a body (it can change on reload,
    aiohttp's `client_max_size` cannot), so aiohttp's own limit stays at its default."""
    app = web.Application(
        middlewares=[trace_middleware, error_middleware, auth_middleware],
    )
    app[SERVICE] = service
    app[COUNT_CALL] = service.api_call
    app[LIVE] = LiveSettings(ApiSettings(auth=auth, max_body_bytes=max_body_bytes))
    app[HEARTBEAT] = heartbeat
    app[STREAMS_STOP] = StreamsStop()
    app[OPENAPI] = openapi.document(service.version)
    for r in ROUTES:
        if r.method == "GET":
            streams = r.content_type == "text/event-stream"  # no HEAD: it would never end
            app.router.add_get(r.path, r.handler, name=r.handler.__name__, allow_head=not streams)
        else:
            app.router.add_route(r.method, r.path, r.handler, name=r.handler.__name__)
    app.on_response_prepare.append(add_trace_header)
    app.on_shutdown.append(_stop_streams)
    return app


def update_settings(app: web.Application, *, auth: AuthSettings, max_body_bytes: int) -> None:
    """Reload: calls that start from now on use these settings; calls in flight keep theirs.
    Call it from the event loop's thread."""
    app[LIVE].swap(ApiSettings(auth=auth, max_body_bytes=max_body_bytes))


async def _stop_streams(app: web.Application) -> None:
    """Shutdown: end every event stream so that the runner need not wait for them."""
    app[STREAMS_STOP].set()


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address must be host:port, got {listen!r}")
    return host, int(port)


def unix_socket(path: str) -> socket.socket:
    """A listening-ready Unix socket at `path`, mode 0660; a stale socket file is replaced,
    a live one (another daemon answers) or a non-socket file is an error."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: stale
        else:
            raise RuntimeError(f"{path} is in use by a running process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    return sock


async def start_sites(
    app: web.Application,
    *,
    listen: str | None,
    socket_path: str | None,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
) -> web.AppRunner:
    """Start serving `app`; `runner.addresses` lists what was bound (TCP (host, port) tuples,
    the socket path). `await runner.cleanup()` stops it and removes the socket file."""
    if listen is None and socket_path is None:
        raise ValueError("nothing to listen on: give a listen address or a socket path")
    sock = unix_socket(socket_path) if socket_path else None
    if sock is not None and socket_path is not None:
        app.on_cleanup.append(_remove_socket(socket_path, os.lstat(socket_path).st_ino))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        if listen is not None:
            host, port = parse_listen(listen)
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=BACKLOG)
            await site.start()
        if sock is not None:
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
    except BaseException:
        await runner.cleanup()
        if sock is not None:
            sock.close()
        raise
    return runner


def _remove_socket(path: str, inode: int) -> Callable[[web.Application], Awaitable[None]]:
    async def remove(app: web.Application) -> None:
        with contextlib.suppress(OSError):
            if os.lstat(path).st_ino == inode:
                os.unlink(path)

    return remove


def tcp_port(runner: web.AppRunner) -> int:
    """The first bound TCP port (for tests and logs when listening on port 0)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    raise LookupError("not listening on TCP")
