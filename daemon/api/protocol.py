"""What the HTTP control plane needs from the daemon: the ControlService protocol.

The runtime implements it; the routes call exactly one of its methods per endpoint (the events
stream also asks for the request's type first, so that a missing request is a 404 before the
stream starts). Everything here is typed data from :mod:`daemon.model`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec

from daemon.chain import Chain
from daemon.model import (
    Event,
    HealthView,
    JobLogRow,
    RequestDetail,
    RequestState,
    RequestTypeView,
    RequestView,
    RunningJob,
)
from daemon.spec import ACL


class FindFilter(msgspec.Struct, kw_only=True, frozen=True):
    """A search over requests, newest first. Empty fields match everything."""

    type: str = ""
    user: str = ""
    states: list[RequestState] = msgspec.field(default_factory=list)
    args: dict[str, str] = msgspec.field(default_factory=dict)
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0


class ControlService(Protocol):
    """The daemon as the API sees it. Errors are :class:`daemon.errors.SpindError` subclasses."""

    shutting_down: bool
    version: str

    async def create_request(
        self,
        *,
        type: str,
        args: dict[str, Any],
        user: str,
        trace_id: str,
        idempotency_key: str | None,
        body_hash: str,
    ) -> tuple[RequestView, bool]:
        """(view, created). A replayed idempotency key with the same body returns the first
        request and False; with another body it raises Conflict. Unknown types and bad args
        raise BadRequest (ArgError names the arg)."""
        ...

    async def plan(self, *, type: str, args: dict[str, Any]) -> Chain:
        """The chain a request would build; journals nothing."""
        ...

    async def get_request(self, request_id: str) -> RequestDetail: ...

    async def find_requests(self, f: FindFilter) -> list[RequestView]: ...

    async def stop(self, request_id: str, *, user: str) -> RequestView: ...

    async def suspend(self, request_id: str, *, user: str) -> RequestView: ...

    async def resume(self, request_id: str, *, user: str) -> RequestView: ...

    async def retry(self, request_id: str, *, user: str, jobs: list[str] | None) -> RequestView: ...

    async def skip(
        self, request_id: str, job_id: str, *, user: str, reason: str
    ) -> RequestView: ...

    async def job_log(self, request_id: str, job_id: str | None) -> list[JobLogRow]: ...

    def events(self, request_id: str, after_seq: int = 0) -> AsyncIterator[Event]:
        """Journal backlog after `after_seq`, then live events; ends once the request is
        COMPLETE, FAIL or STOPPED."""
        ...

    def running(self) -> list[RunningJob]: ...

    def request_types(self) -> list[RequestTypeView]: ...

    def request_type_acl(self, type: str) -> list[ACL] | None:
        """The type's ACL entries; None for an unknown type."""
        ...

    async def request_type_of(self, request_id: str) -> str: ...

    def health(self) -> HealthView: ...

    def metrics(self) -> tuple[bytes, str]:
        """(Prometheus exposition body, its content type)."""
        ...

    def api_call(self, method: str, route: str, status: int) -> None:
        """Count one answered HTTP call (`route`: the route's template, never the raw path)."""
        ...
