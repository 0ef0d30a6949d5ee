"""Who is calling, and may they do this?

Identity: over the Unix socket, the peer's Unix user (SO_PEERCRED); over TCP, the user whose
token's SHA-256 matches `Authorization: Bearer <token>` (compared in constant time; the token is
never logged). Without an auth section every caller is allowed, and the identity (socket peer,
or "anonymous" over TCP) is only recorded.

Permission: reads need any identity; `start` needs the op `start` in the request type's ACL,
stop/suspend/resume/retry/skip need `stop`; an ACL entry with `admin: true` allows every op, and
so do the configured admin roles. A type without an ACL is open to every authenticated user.

Probes: with auth enabled, `GET`/`HEAD` of the health and version endpoints (and of `/metrics`
unless `auth.metrics_public` is false) need no token; such a caller is "anonymous" and the
handler decides what it may see. A token that is sent must be valid, there as everywhere.

Reload: the settings a reload may change (auth, the body limit) are one frozen
:class:`ApiSettings`, held by the app's :class:`LiveSettings` and replaced whole. Each HTTP call
takes them once, when it starts (:func:`api_settings`), and uses that copy to the end: a call in
flight during a reload sees the old settings or the new ones, never a mix.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import pwd
import socket
import struct
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from daemon.api.trace import CALLER
from daemon.errors import Forbidden, Unauthorized
from daemon.spec import ACL

ANONYMOUS = "anonymous"


class TokenEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A token holder: `sha256` is the hex SHA-256 of the token, never the token itself."""

    user: str
    sha256: str


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The `auth` config section; `enabled` is true when the section exists."""

    enabled: bool = False
    tokens: list[TokenEntry] = msgspec.field(default_factory=list)
    roles: dict[str, list[str]] = msgspec.field(default_factory=dict)
    admin_roles: list[str] = msgspec.field(default_factory=list)
    #: `/metrics` answers callers without a token (health and version always do)
    metrics_public: bool = True


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the API reads from the config and a reload may change; replaced whole."""

    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    #: largest request body, in bytes (a larger one is a 413)
    max_body_bytes: int = 1048576


class LiveSettings:
    """The API's current settings. Only the event loop's thread calls `swap`, and a call
    takes its copy once, so swapping the reference is the whole (atomic) update."""

    def __init__(self, settings: ApiSettings) -> None:
        self.current = settings

    def swap(self, settings: ApiSettings) -> ApiSettings:
        """Put `settings` in force for the calls that start from now on; returns the old."""
        old, self.current = self.current, settings
        return old


class Op(enum.StrEnum):
    READ = "read"
    START = "start"
    STOP = "stop"


class Identity(msgspec.Struct, frozen=True):
    user: str
    via: str  # "socket" | "token" | "anonymous"


IDENTITY = web.RequestKey("identity", Identity)
LIVE = web.AppKey("live_settings", LiveSettings)
#: the settings this call took when it started
SETTINGS = web.RequestKey("api_settings", ApiSettings)

#: Routes (by name) that answer without a token when auth is enabled; see `public_routes`.
PROBE_ROUTES = frozenset({"health", "version"})
METRICS_ROUTE = "metrics"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def user_for_uid(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return f"uid:{uid}"


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket, or None (TCP, not Linux)."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if sock is None or opt is None or getattr(sock, "family", None) != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def token_user(settings: AuthSettings, authorization: str | None) -> str | None:
    """The user a bearer token belongs to; every entry is compared, in constant time."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    digest = token_sha256(token).encode()
    found: str | None = None
    for entry in settings.tokens:
        expected = entry.sha256.strip().lower().encode("utf-8", "replace")
        if hmac.compare_digest(digest, expected) and found is None:
            found = entry.user
    return found


def identify(
    settings: AuthSettings, *, is_unix: bool, uid: int | None, authorization: str | None
) -> Identity | None:
    """The caller's identity, or None when there is none (a 401 when auth is enabled)."""
    if is_unix:
        return Identity(user_for_uid(uid) if uid is not None else "local", "socket")
    if settings.enabled:
        user = token_user(settings, authorization)
        return Identity(user, "token") if user is not None else None
    return Identity(ANONYMOUS, "anonymous")


def public_routes(settings: AuthSettings) -> frozenset[str]:
    """Names of the routes a caller without a token may use (all of them without auth)."""
    if settings.metrics_public:
        return PROBE_ROUTES | {METRICS_ROUTE}
    return PROBE_ROUTES


def api_settings(request: web.Request) -> ApiSettings:
    """The settings of this call: those in force when it first asked (the auth middleware
    asks before any handler runs), the same for the rest of the call."""
    settings = request.get(SETTINGS)
    if settings is None:
        settings = request[SETTINGS] = request.app[LIVE].current
    return settings


def authenticated(request: web.Request) -> bool:
    """Whether the caller proved who they are (always true when auth is disabled)."""
    return not api_settings(request).auth.enabled or request[IDENTITY].via != "anonymous"


def may(settings: AuthSettings, user: str, op: Op, acl: list[ACL] | None) -> bool:
    """Whether `user` may do `op` on a request type with this ACL (None: type unknown)."""
    if not settings.enabled:
        return True
    roles = set(settings.roles.get(user, ()))
    if roles & set(settings.admin_roles):
        return True
    if op is Op.READ:
        return True
    if acl is None:
        return False
    if not acl:
        return True
    return any(entry.role in roles and entry.grants(op.value) for entry in acl)


def check(request: web.Request, op: Op, acl: list[ACL] | None, what: str) -> None:
    """Raise Forbidden unless the caller may do `op`; `what` is the refused action, in words."""
    settings = api_settings(request).auth
    ident = request[IDENTITY]
    if not may(settings, ident.user, op, acl):
        raise Forbidden(f"{ident.user} may not {what}", {"user": ident.user, "op": op.value})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = api_settings(request).auth
    sock = request.transport.get_extra_info("socket") if request.transport else None
    is_unix = getattr(sock, "family", None) == socket.AF_UNIX
    ident = identify(
        settings,
        is_unix=is_unix,
        uid=peer_uid(sock) if is_unix else None,
        authorization=request.headers.get("Authorization"),
    )
    if ident is None:
        if "Authorization" in request.headers or not _is_public(request, settings):
            raise Unauthorized()
        ident = Identity(ANONYMOUS, "anonymous")
    request[IDENTITY] = ident
    request[CALLER] = ident.user
    return await handler(request)


def _is_public(request: web.Request, settings: AuthSettings) -> bool:
    """A GET or HEAD of a route that answers without a token (a 404 or 405 is not one)."""
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    return request.method in ("GET", "HEAD") and name in public_routes(settings)
