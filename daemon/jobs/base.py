"""The job protocol: what the runtime gives a job (JobContext), what it gets back (JobResult),
and the Job base class every job type derives from.

The runtime makes a fresh Job for every try: ``factory.make(type_name, name=..., with_=...)``,
then ``deserialize(data)`` if ``create()`` serialized something when the chain was built, then
``run(ctx)``. ``stop()`` may be called at any time from another task and must make ``run()``
return soon with state STOPPED. Built-in types never raise out of ``run()``: bad input and
failures become FAIL results with a clear error.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from daemon.duration import DurationError, parse_duration
from daemon.jobs.template import has_placeholder
from daemon.model import JobState

#: The states a try can end in.
FINAL_STATES = frozenset({JobState.COMPLETE, JobState.FAIL, JobState.STOPPED})


class JobContext(msgspec.Struct, kw_only=True):
    """Everything a job try needs to know about itself."""

    request_id: str
    job_id: str
    #: the node name
    name: str
    #: 1-based try number of this job (counts across sequence retries too)
    try_no: int
    #: stable idempotency key f"{request_id}/{job_id}/{try_no}"
    try_key: str
    #: the job's args, resolved when the try started
    args: dict[str, Any]
    #: where shell jobs run by default (None = the daemon's cwd)
    work_dir: str | None = None
    #: bytes of stdout/stderr tail kept per stream
    output_limit: int = 64 * 1024
    #: seconds between SIGTERM and SIGKILL
    stop_grace: float = 10.0
    #: where jobs make their temporary files (None = the system's temporary directory)
    tmp_dir: str | None = None
    #: real path of the daemon's journal and id of its boot ("" outside a daemon): shell jobs
    #: carry them in their environment (daemon.orphans)
    journal: str = ""
    boot_id: str = ""


class JobResult(msgspec.Struct, kw_only=True):
    """How a try ended. `outputs` are the args the job set at run time."""

    state: JobState
    exit: int | None = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.state not in FINAL_STATES:
            raise ValueError(f"a job try cannot end in state {self.state}")


class Job(abc.ABC):
    """Base class of every job type.

    Subclasses set `type_name` (the name they are registered under), `params` (the `with:` keys
    they know) and `required_params`, and implement `run`. The linter reports unknown and
    missing `with:` keys from `params` and `required_params`; `check_with` reports the other
    static problems (a value of the wrong shape), skipping values that hold `{{name}}`.
    """

    type_name: ClassVar[str] = ""
    params: ClassVar[frozenset[str]] = frozenset()
    required_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, name: str, type_name: str, with_: Mapping[str, Any]) -> None:
        self.name = name
        #: the type name the spec used (may differ from the class's registered `type_name`)
        self.job_type = type_name
        self.with_: dict[str, Any] = dict(with_)

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        """Called once when the chain is built; returns the args the job sets then."""
        return {}

    def serialize(self) -> bytes:
        """What this job needs, from `create`, to run later (in a fresh instance)."""
        return b""

    def deserialize(self, data: bytes) -> None:
        """Restore what `serialize` returned (by default there is nothing to restore)."""
        return None

    @abc.abstractmethod
    async def run(self, ctx: JobContext) -> JobResult:
        """Run one try."""

    async def stop(self) -> None:
        """Make a running `run()` return soon with state STOPPED (by default: nothing to do,
        for a job whose run() returns at once)."""
        return None

    def status(self) -> str:
        """Live, human-readable status."""
        return ""

    @classmethod
    def check_with(cls, with_: Mapping[str, Any]) -> list[str]:
        """Static problems of a node's `with:` mapping, as messages (none by default)."""
        return []


class OutputTail:
    """Keeps the last `limit` bytes of a stream and counts what it cut."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.cut = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        over = len(self._buf) - self.limit
        if over > 0:
            del self._buf[:over]
            self.cut += over

    @property
    def total(self) -> int:
        return self.cut + len(self._buf)

    def text(self) -> str:
        """The tail as UTF-8 (bad bytes replaced), with a note of the bytes cut in front."""
        data = bytes(self._buf)
        cut = self.cut
        if cut:
            # do not start in the middle of a UTF-8 character
            skip = 0
            while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
                skip += 1
            data = data[skip:]
            cut += skip
        text = data.decode("utf-8", errors="replace")
        return f"[... {cut} bytes cut]\n{text}" if cut else text


def scalar_text(value: Any) -> str | None:
    """A YAML/JSON scalar as text (specs keep scalars as text already); None if not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def check_duration(with_: Mapping[str, Any], key: str) -> list[str]:
    """Problems of a duration-valued `with:` key (absent or templated values pass)."""
    value = with_.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{key}: expected a duration such as 30s, got {type(value).__name__}"]
    if has_placeholder(value):
        return []
    try:
        parse_duration(value)
    except DurationError as exc:
        return [f"{key}: {exc}"]
    return []
