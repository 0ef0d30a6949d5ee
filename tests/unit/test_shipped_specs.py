"""The example specs in specs/: they load and lint clean, build with the real job factory, and
their jobs (real shell and sleep jobs, run here one at a time) do what the comments say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from daemon.builder import build, expand
from daemon.chain import Chain, ChainJob, JobKind, ScopeVars
from daemon.jobs.base import JobContext, JobResult
from daemon.jobs.registry import JobFactory
from daemon.lint import lint
from daemon.model import JobState
from daemon.plan import job_order, plan_command
from daemon.specload import SpecSet, load_dir

SPECS = Path(__file__).resolve().parents[2] / "specs"

#: request type -> (args, the jobs' names in run order, deferred node names)
CASES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    "hello-world": ({"name": "world"}, ["say-hello"], []),
    "fanout-hosts": ({"hosts": "web1,web2,web3"}, ["split-hosts", "drain", "report"], ["drain"]),
    "conditional": ({"target": "db1"}, ["change"], []),
    "sequence-retry": ({}, ["prepare", "flaky"], []),
    "sleep": ({"seconds": "600"}, ["sleep"], []),
}


@pytest.fixture(scope="module")
def specs() -> SpecSet:
    return load_dir(SPECS)


def test_specs_load_and_lint_clean(specs: SpecSet) -> None:
    assert [d.format() for d in specs.diagnostics] == []
    assert [d.format() for d in lint(specs, JobFactory())] == []
    assert sorted(Path(f).name for f in specs.files) == [
        "conditional.yaml",
        "fanout.yaml",
        "hello-world.yaml",
        "sequence-retry.yaml",
        "sleep.yaml",
    ]


def test_every_request_is_covered_and_documented(specs: SpecSet) -> None:
    requests = sorted(n for n, s in specs.sequences.items() if s.request)
    assert requests == sorted(CASES)
    for name, seq in specs.sequences.items():
        assert seq.desc, f"sequence {name} has no desc"
        for kind in (seq.args.required, seq.args.optional, seq.args.static):
            for arg in kind:
                assert arg is not None and arg.desc, f"an arg of {name} has no desc"


async def built(specs: SpecSet, request: str, args: dict[str, Any] | None = None) -> Chain:
    return await build(specs.sequences, request, args or CASES[request][0], JobFactory())


@pytest.mark.parametrize("request_type", sorted(CASES))
async def test_builds(specs: SpecSet, request_type: str) -> None:
    args, names, deferred = CASES[request_type]
    chain = await built(specs, request_type, args)
    assert chain.args.items() >= args.items()
    assert [chain.jobs[j].name for j in job_order(chain)] == names
    assert sorted(j.name for j in chain.jobs.values() if j.kind == JobKind.DEFERRED) == deferred


async def run(chain: Chain, values: ScopeVars, job: ChainJob, request_id: str = "r1") -> JobResult:
    """One real try of a job, with the args the runtime would give it."""
    made = JobFactory().make(job.type, name=job.name, with_=job.with_)
    ctx = JobContext(
        request_id=request_id,
        job_id=job.id,
        name=job.name,
        try_no=1,
        try_key=f"{request_id}/{job.id}/1",
        args=values.job_args(job),
    )
    result = await made.run(ctx)
    if result.state == JobState.COMPLETE:
        values.apply_outputs(job, result.outputs)
    return result


def named(chain: Chain, name: str) -> list[ChainJob]:
    return [chain.jobs[j] for j in job_order(chain) if chain.jobs[j].name == name]


async def test_hello_world_greets(specs: SpecSet) -> None:
    chain = await built(specs, "hello-world", {"name": "it's $HOME; `x`"})
    [job] = chain.jobs.values()
    result = await run(chain, ScopeVars(chain), job)
    assert (result.state, result.stdout) == (JobState.COMPLETE, "hello, it's $HOME; `x`\n")


async def test_fanout_splits_then_expands_two_at_a_time(specs: SpecSet) -> None:
    chain = await built(specs, "fanout-hosts", {"hosts": "web1, web2,,web3"})
    values = ScopeVars(chain)
    [split] = named(chain, "split-hosts")
    result = await run(chain, values, split)
    assert result.state == JobState.COMPLETE, result.stderr
    assert result.outputs == {"hosts": ["web1", "web2", "web3"]}
    [drain] = named(chain, "drain")
    patch = await expand(chain, drain.id, values, JobFactory())
    chain.apply(patch)
    values.apply_patch(patch)
    [group] = chain.groups.values()
    assert (group.node, group.parallel, len(group.copies)) == ("drain", 2, 3)
    stops = named(chain, "stop-traffic")
    assert [values.job_args(j) for j in stops] == [{"host": h} for h in ("web1", "web2", "web3")]
    out = await run(chain, values, stops[1])
    assert out.stdout == "stopping traffic to web2\n"
    [report] = named(chain, "report")
    assert sorted(p for p, s in chain.edges if s == report.id) == sorted(
        j.id for j in named(chain, "wait-idle")
    )


async def test_fanout_rejects_a_hostile_host_name(specs: SpecSet) -> None:
    chain = await built(specs, "fanout-hosts", {"hosts": 'a,b"],"x'})
    [split] = named(chain, "split-hosts")
    result = await run(chain, ScopeVars(chain), split)
    assert result.state == JobState.FAIL
    assert "bad host name" in result.stderr


@pytest.mark.parametrize(
    ("dry_run", "jobs"),
    [(None, ["change"]), ("no", ["change"]), ("yes", []), ("maybe", []), ("", [])],
)
async def test_conditional_branches(specs: SpecSet, dry_run: str | None, jobs: list[str]) -> None:
    args = {"target": "db1"} | ({} if dry_run is None else {"dryRun": dry_run})
    chain = await built(specs, "conditional", args)
    assert [j.name for j in chain.jobs.values()] == jobs


async def test_sequence_retry_fails_once_then_succeeds(specs: SpecSet, tmp_path: Path) -> None:
    chain = await built(specs, "sequence-retry", {"workdir": str(tmp_path)})
    values = ScopeVars(chain)
    [flaky] = named(chain, "flaky")
    scope = chain.scopes[flaky.scope]
    assert (scope.node, scope.retry, scope.retry_wait) == ("flaky-pair", 2, 1.0)
    first = await run(chain, values, flaky, request_id="req-7")
    assert first.state == JobState.FAIL
    assert (tmp_path / "spind-sequence-retry-req-7").exists()
    second = await run(chain, values, flaky, request_id="req-7")
    assert second.state == JobState.COMPLETE
    assert not (tmp_path / "spind-sequence-retry-req-7").exists()


async def test_sleep_takes_its_duration_from_the_arg(specs: SpecSet) -> None:
    chain = await built(specs, "sleep", {"seconds": "0"})
    [job] = chain.jobs.values()
    assert job.with_ == {"duration": "{{seconds}}s"}
    assert (await run(chain, ScopeVars(chain), job)).state == JobState.COMPLETE
    bad = await built(specs, "sleep", {"seconds": "soon"})
    result = await run(bad, ScopeVars(bad), next(iter(bad.jobs.values())))
    assert result.state == JobState.FAIL
    assert "duration" in result.error


def doc_examples() -> list[tuple[list[str], str]]:
    """(`spind plan` words, the output shown) of every example in docs/specs.md."""
    lines = (SPECS.parent / "docs" / "specs.md").read_text().splitlines()
    blocks: list[list[str]] = []
    inside = False
    for line in lines:
        if line.startswith("```"):
            inside = not inside
            if inside:
                blocks.append([])
        elif inside:
            blocks[-1].append(line)
    out = []
    for block in blocks:
        for part in re.split(r"\n(?=\$ )", "\n".join(block)):
            if part.startswith("$ spind plan "):
                command, _, shown = part.partition("\n")
                out.append((command.split()[3:], shown.strip("\n") + "\n"))
    return out


@pytest.mark.parametrize(("words", "shown"), doc_examples())
async def test_docs_show_what_plan_prints(
    words: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await plan_command(SPECS, None, words[0], words[1:], False) == 0
    assert capsys.readouterr().out == shown


def test_docs_have_examples() -> None:
    assert len(doc_examples()) >= len(CASES)
