"""Job types by name: the built-ins, installed plugins, the config's `jobs:` mapping, and
`module:Class` references written directly as a node's type.

Resolution order (the first that knows the name wins):

1. the built-ins: `shell`, `sleep`, `noop`, `http`;
2. the entry points of group ``spind.jobs`` (``name = "package.module:Class"``);
3. the config's ``jobs:`` mapping, type name -> ``"module:Class"`` (so that specs written for
   another system, with its job names, can be served by Python classes);
4. a type name that is itself a ``module:Class`` reference.

A name that does not resolve to a concrete subclass of :class:`~daemon.jobs.base.Job` (import
error, missing attribute, wrong kind of object) is unknown; `why_unknown` says why. Every
answer is cached: a module is imported once.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from loguru import logger

from daemon.jobs.base import Job
from daemon.jobs.http import HttpJob
from daemon.jobs.noop import NoopJob
from daemon.jobs.shell import ShellJob
from daemon.jobs.sleep import SleepJob

ENTRY_POINT_GROUP = "spind.jobs"

BUILTINS: dict[str, type[Job]] = {
    cls.type_name: cls for cls in (ShellJob, SleepJob, NoopJob, HttpJob)
}


class UnknownJobType(LookupError):
    """No job type has this name."""

    def __init__(self, type_name: str, reason: str = "") -> None:
        super().__init__(reason or f"unknown job type {type_name!r}")
        self.type_name = type_name
        self.reason = reason


def _as_job_class(obj: Any, origin: str) -> tuple[type[Job] | None, str]:
    if not (isinstance(obj, type) and issubclass(obj, Job)):
        return None, f"{origin} is not a subclass of daemon.jobs.Job"
    if inspect.isabstract(obj):
        return None, f"{origin} is abstract (it does not implement run)"
    return obj, ""


def load_reference(ref: str, origin: str) -> tuple[type[Job] | None, str]:
    """Import a ``module:Class`` (or ``module:Outer.Inner``) reference.

    Returns (class, "") or (None, why it is not a job class).
    """
    module_name, _, attr_path = ref.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not module_name or not attr_path:
        return None, f"{origin}: {ref!r} is not a 'module:Class' reference"
    try:
        obj: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        return None, f"{origin}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            return None, f"{origin}: {module_name!r} has no attribute {attr_path!r}"
    return _as_job_class(obj, f"{origin}: {ref}")


class JobFactory:
    """Makes jobs by type name; the linter asks it which `with:` keys a type takes."""

    def __init__(self, config_jobs: Mapping[str, str] | None = None) -> None:
        self._config = dict(config_jobs or {})
        self._cache: dict[str, type[Job] | None] = {}
        self._why: dict[str, str] = {}
        self._eps: dict[str, EntryPoint] | None = None

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self._eps is None:
            found: dict[str, EntryPoint] = {}
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in found:
                    logger.warning(
                        "job type {} has two entry points: using {}, ignoring {}",
                        ep.name,
                        found[ep.name].value,
                        ep.value,
                    )
                    continue
                found[ep.name] = ep
            self._eps = found
        return self._eps

    def _lookup(self, type_name: str) -> tuple[type[Job] | None, str]:
        if not isinstance(type_name, str) or not type_name.strip():
            return None, "the job type is empty"
        if type_name in BUILTINS:
            return BUILTINS[type_name], ""
        ep = self._entry_points().get(type_name)
        if ep is not None:
            origin = f"entry point {type_name} = {ep.value!r} (group {ENTRY_POINT_GROUP})"
            try:
                obj = ep.load()
            except (Exception, SystemExit) as exc:
                return None, f"{origin}: cannot load: {type(exc).__name__}: {exc}"
            return _as_job_class(obj, origin)
        if type_name in self._config:
            return load_reference(self._config[type_name], f"config jobs.{type_name}")
        if ":" in type_name:
            return load_reference(type_name, f"job type {type_name!r}")
        return None, (
            f"unknown job type {type_name!r}: not a built-in ({', '.join(sorted(BUILTINS))}), "
            f"an entry point of group {ENTRY_POINT_GROUP!r}, a name in the config's jobs: "
            "mapping, or a 'module:Class' reference"
        )

    def resolve(self, type_name: str) -> type[Job] | None:
        """The class serving `type_name`, or None if unknown (see `why_unknown`). Never raises."""
        if type_name in self._cache:
            return self._cache[type_name]
        try:
            cls, why = self._lookup(type_name)
        except Exception as exc:  # e.g. a broken installed distribution's metadata
            cls, why = None, f"cannot resolve job type {type_name!r}: {exc}"
        self._cache[type_name] = cls
        if cls is None:
            self._why[type_name] = why
            logger.debug("job type {} is unknown: {}", type_name, why)
        return cls

    def why_unknown(self, type_name: str) -> str:
        """Why `type_name` does not resolve ("" if it does)."""
        if self.resolve(type_name) is not None:
            return ""
        return self._why.get(type_name, f"unknown job type {type_name!r}")

    def make(self, type_name: str, *, name: str, with_: Mapping[str, Any]) -> Job:
        """A fresh job of this type; raises UnknownJobType."""
        cls = self.resolve(type_name)
        if cls is None:
            raise UnknownJobType(type_name, self.why_unknown(type_name))
        return cls(name=name, type_name=type_name, with_=with_)

    def params(self, type_name: str) -> frozenset[str] | None:
        """The `with:` keys the type knows; None if the type is unknown."""
        cls = self.resolve(type_name)
        return None if cls is None else cls.params

    def required_params(self, type_name: str) -> frozenset[str]:
        """The `with:` keys the type requires (empty if the type is unknown)."""
        cls = self.resolve(type_name)
        return frozenset() if cls is None else cls.required_params

    def check_with(self, type_name: str, with_: Mapping[str, Any]) -> list[str]:
        """The type's own static problems of a `with:` mapping (none if the type is unknown)."""
        cls = self.resolve(type_name)
        if cls is None:
            return []
        try:
            return list(cls.check_with(with_))
        except Exception as exc:
            return [f"job type {type_name!r} could not check with: {type(exc).__name__}: {exc}"]

    def known_types(self) -> list[str]:
        """Built-ins first, then every other name that resolves (plugins, config, seen refs)."""
        others = set(self._entry_points()) | set(self._config) | set(self._cache)
        others -= set(BUILTINS)
        return [*BUILTINS, *sorted(t for t in others if self.resolve(t) is not None)]
