"""One exception root for everything a caller can act on; each maps to an HTTP status."""

from __future__ import annotations

from typing import Any


class SpindError(Exception):
    """Something went wrong in spind."""

    status: int = 500

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        super().__init__(message or (self.__doc__ or "error").strip())
        self.message = message or (self.__doc__ or "error").strip()
        self.details = details


class BadRequest(SpindError):
    """The request is malformed."""

    status = 400


class Unauthorized(SpindError):
    """No identity: send a bearer token (TCP) or connect over the Unix socket."""

    status = 401


class Forbidden(SpindError):
    """Your identity may not do this."""

    status = 403


class NotFound(SpindError):
    """No such thing."""

    status = 404


class Conflict(SpindError):
    """The request is not in a state that allows this."""

    status = 409


class PayloadTooLarge(SpindError):
    """The body is larger than the limit."""

    status = 413


class Unavailable(SpindError):
    """spind is shutting down or its journal is unavailable; try again later."""

    status = 503


class BuildError(BadRequest):
    """The chain cannot be built from this request type and these args."""


class ArgError(BuildError):
    """An arg is missing, unknown, or of the wrong type."""
