"""The job-type registry: built-ins, entry points, the config mapping, `module:Class` refs."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.jobs import Job, JobContext, JobFactory, UnknownJobType
from daemon.jobs.http import HttpJob
from daemon.jobs.noop import NoopJob
from daemon.jobs.shell import ShellJob
from daemon.jobs.sleep import SleepJob
from daemon.model import JobState

PLUGIN = """
from daemon.jobs.base import Job, JobContext, JobResult
from daemon.model import JobState


class Echo(Job):
    type_name = "echo"
    params = frozenset({"msg", "upper"})
    required_params = frozenset({"msg"})

    async def run(self, ctx: JobContext) -> JobResult:
        return JobResult(state=JobState.COMPLETE, stdout=str(self.with_["msg"]))

    @classmethod
    def check_with(cls, with_):
        return [] if isinstance(with_.get("msg", ""), str) else ["msg: expected a string"]


class Outer:
    class Inner(Echo):
        pass


class Abstract(Job):
    pass


class NotAJob:
    pass


class BadCheck(Echo):
    @classmethod
    def check_with(cls, with_):
        raise RuntimeError("boom")


not_a_class = 42
"""


class Plugin:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mod = f"spind_test_plugin_{uuid.uuid4().hex}"
        self.broken = f"spind_test_broken_{uuid.uuid4().hex}"
        (root / f"{self.mod}.py").write_text(PLUGIN)
        (root / f"{self.broken}.py").write_text("raise RuntimeError('plugin exploded')\n")

    def add_distribution(self, entry_points: dict[str, str]) -> None:
        dist = self.root / "spind_fake_plugin-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: spind-fake-plugin\nVersion: 1.0\n"
        )
        lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        (dist / "entry_points.txt").write_text(f"[spind.jobs]\n{lines}")


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plugin]:
    monkeypatch.syspath_prepend(str(tmp_path))
    p = Plugin(tmp_path)
    yield p
    for name in (p.mod, p.broken):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("shell", ShellJob), ("sleep", SleepJob), ("noop", NoopJob), ("http", HttpJob)],
)
def test_builtins_resolve(name: str, cls: type[Job]) -> None:
    f = JobFactory()
    assert f.resolve(name) is cls
    assert f.why_unknown(name) == ""
    assert f.params(name) == cls.params
    job = f.make(name, name="node", with_={})
    assert isinstance(job, cls)
    assert job.name == "node"
    assert job.job_type == name


@pytest.mark.parametrize(
    ("name", "params", "required"),
    [
        ("shell", {"cmd", "env", "cwd", "timeout", "stdin"}, {"cmd"}),
        ("sleep", {"duration"}, {"duration"}),
        ("noop", set(), set()),
        ("http", {"url", "method", "body", "headers", "expect", "timeout"}, {"url"}),
    ],
)
def test_builtin_params(name: str, params: set[str], required: set[str]) -> None:
    f = JobFactory()
    assert f.params(name) == frozenset(params)
    assert f.required_params(name) == frozenset(required)


@pytest.mark.parametrize("name", ["nope", "", "  ", "Shell"])
def test_unknown_names(name: str) -> None:
    f = JobFactory()
    assert f.resolve(name) is None
    assert f.params(name) is None
    assert f.required_params(name) == frozenset()
    assert f.check_with(name, {"x": 1}) == []
    assert f.why_unknown(name)
    with pytest.raises(UnknownJobType) as info:
        f.make(name, name="n", with_={})
    assert info.value.type_name == name
    assert str(info.value) == f.why_unknown(name)


def test_unknown_reason_lists_where_it_looked() -> None:
    why = JobFactory().why_unknown("ssh-cmd")
    assert "'ssh-cmd'" in why
    assert "shell" in why and "spind.jobs" in why and "module:Class" in why


async def test_direct_module_class_reference(plugin: Plugin) -> None:
    f = JobFactory()
    ref = f"{plugin.mod}:Echo"
    cls = f.resolve(ref)
    assert cls is not None and cls.__name__ == "Echo"
    assert f.params(ref) == frozenset({"msg", "upper"})
    assert f.required_params(ref) == frozenset({"msg"})
    job = f.make(ref, name="n", with_={"msg": "hi"})
    assert job.job_type == ref
    ctx = JobContext(request_id="r", job_id="j", name="n", try_no=1, try_key="r/j/1", args={})
    result = await job.run(ctx)
    assert (result.state, result.stdout) == (JobState.COMPLETE, "hi")
    assert ref in f.known_types()


def test_nested_class_reference(plugin: Plugin) -> None:
    cls = JobFactory().resolve(f"{plugin.mod}:Outer.Inner")
    assert cls is not None and cls.__name__ == "Inner"


@pytest.mark.parametrize(
    ("attr", "reason"),
    [
        ("NotAJob", "not a subclass of daemon.jobs.Job"),
        ("not_a_class", "not a subclass of daemon.jobs.Job"),
        ("Abstract", "abstract"),
        ("Missing", "has no attribute 'Missing'"),
        ("", "not a 'module:Class' reference"),
    ],
)
def test_bad_references_are_unknown_with_a_reason(plugin: Plugin, attr: str, reason: str) -> None:
    f = JobFactory()
    ref = f"{plugin.mod}:{attr}"
    assert f.resolve(ref) is None
    assert reason in f.why_unknown(ref)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("spind_no_such_module_at_all:Job", "cannot import 'spind_no_such_module_at_all'"),
        (":Job", "not a 'module:Class' reference"),
    ],
)
def test_import_errors_are_unknown(ref: str, reason: str) -> None:
    f = JobFactory()
    assert f.resolve(ref) is None
    assert reason in f.why_unknown(ref)


def test_module_raising_on_import_is_unknown(plugin: Plugin) -> None:
    f = JobFactory()
    ref = f"{plugin.broken}:Job"
    assert f.resolve(ref) is None
    assert "RuntimeError: plugin exploded" in f.why_unknown(ref)


def test_config_mapping_serves_foreign_names(plugin: Plugin) -> None:
    f = JobFactory({"ssh-cmd": f"{plugin.mod}:Echo", "broken": f"{plugin.mod}:Nope"})
    cls = f.resolve("ssh-cmd")
    assert cls is not None and cls.__name__ == "Echo"
    assert f.make("ssh-cmd", name="n", with_={"msg": "x"}).job_type == "ssh-cmd"
    assert f.resolve("broken") is None
    assert "config jobs.broken" in f.why_unknown("broken")
    assert f.known_types() == ["shell", "sleep", "noop", "http", "ssh-cmd"]


def test_builtins_win_over_config(plugin: Plugin) -> None:
    f = JobFactory({"shell": f"{plugin.mod}:Echo"})
    assert f.resolve("shell") is ShellJob


def test_resolutions_are_cached(plugin: Plugin) -> None:
    f = JobFactory({"echo": f"{plugin.mod}:Echo"})
    first = f.resolve("echo")
    assert first is not None
    del sys.modules[plugin.mod]
    assert f.resolve("echo") is first
    assert plugin.mod not in sys.modules  # not imported again
    assert JobFactory({"echo": f"{plugin.mod}:Echo"}).resolve("echo") is not first


def test_entry_points(plugin: Plugin) -> None:
    plugin.add_distribution(
        {
            "echo-ep": f"{plugin.mod}:Echo",
            "broken-ep": f"{plugin.broken}:Job",
            "shell": f"{plugin.mod}:Echo",
            "cfg-clash": f"{plugin.mod}:Outer.Inner",
        }
    )
    f = JobFactory({"cfg-clash": f"{plugin.mod}:Echo"})
    cls = f.resolve("echo-ep")
    assert cls is not None and cls.__name__ == "Echo"
    assert f.resolve("shell") is ShellJob  # built-ins first
    clash = f.resolve("cfg-clash")
    assert clash is not None and clash.__name__ == "Inner"  # entry points before config
    assert f.resolve("broken-ep") is None
    assert "entry point broken-ep" in f.why_unknown("broken-ep")
    assert "plugin exploded" in f.why_unknown("broken-ep")
    assert f.known_types() == ["shell", "sleep", "noop", "http", "cfg-clash", "echo-ep"]


def test_check_with_through_the_factory(plugin: Plugin) -> None:
    f = JobFactory({"echo": f"{plugin.mod}:Echo", "bad": f"{plugin.mod}:BadCheck"})
    assert f.check_with("echo", {"msg": "x"}) == []
    assert f.check_with("echo", {"msg": 5}) == ["msg: expected a string"]
    assert f.check_with("shell", {"cmd": 5}) != []
    [problem] = f.check_with("bad", {"msg": "x"})
    assert "RuntimeError: boom" in problem
