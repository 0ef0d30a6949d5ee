"""spind's HTTP control plane: aiohttp app, routes, access control, trace ids, SSE, OpenAPI."""

from daemon.api.app import make_app, start_sites, tcp_port
from daemon.api.auth import AuthSettings, TokenEntry
from daemon.api.protocol import ControlService, FindFilter

__all__ = [
    "AuthSettings",
    "ControlService",
    "FindFilter",
    "TokenEntry",
    "make_app",
    "start_sites",
    "tcp_port",
]
