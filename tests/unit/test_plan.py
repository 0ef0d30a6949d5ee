"""`spind plan`: key=value parsing, the tree and JSON views of a chain, and the command's exits.

Chains are built from specs written to tmp_path with the real job factory (built-in types).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from daemon.builder import build, expand
from daemon.chain import Chain, ScopeVars
from daemon.jobs.registry import JobFactory
from daemon.plan import KvError, chain_to_json, job_order, parse_kv, plan_command, render_tree
from daemon.specload import load_dir

ROOT = Path(__file__).resolve().parents[2]

DEPLOY = """
sequences:
  deploy:
    request: true
    timeout: 1h
    failFast: true
    args:
      required:
        - name: hosts
          desc: the hosts
      optional:
        - name: mode
          desc: careful or not
          default: careful
        - name: width
          desc: copies at once
          default: "2"
    nodes:
      lookup:
        category: job
        type: noop
        sets: [pool]
        timeout: 30s
      per-host:
        category: sequence
        type: host-steps
        each: [hosts:host]
        parallel: width
        deps: [lookup]
        retry: 1
        retryWait: 5s
      pick:
        category: conditional
        if: mode
        eq: {careful: verify, default: noop}
        args: [hosts]
        deps: [per-host]
      per-pool:
        category: job
        type: noop
        each: [pool:member]
        deps: [lookup]
      notify:
        category: job
        type: noop
        args: [mode, pool]
        retry: 2
        retryWait: 1m
        deps: [pick, per-pool]
  host-steps:
    args:
      required: [{name: host, desc: one host}]
    nodes:
      drain:
        category: job
        type: noop
        args: [host]
      restart:
        category: job
        type: noop
        args: [host]
        deps: [drain]
  verify:
    args:
      required: [{name: hosts, desc: the hosts}]
    nodes:
      check:
        category: job
        type: noop
        args: [hosts]
"""

DEPLOY_TREE = """\
request deploy  hosts=["a","b"], mode="careful", width="2"  (timeout 1h, failFast)
├─ j2 lookup (noop)  timeout: 30s
├─ per-host: each hosts:host (group g3, parallel 2, 2 copies)
│  ├─ copy (sequence host-steps, scope s4, retry: 1 retryWait: 5s)  host="a"
│  │  ├─ j5 drain (noop)  args: host="a"  after: j2
│  │  └─ j6 restart (noop)  args: host="a"  after: j5
│  └─ copy (sequence host-steps, scope s7, retry: 1 retryWait: 5s)  host="b"
│     ├─ j8 drain (noop)  args: host="b"  after: j2
│     └─ j9 restart (noop)  args: host="b"  after: j8
├─ j10 per-pool (each)  [deferred: waits for each pool]  (each pool:member, job type noop)  \
after: j2
├─ pick: if mode -> sequence verify (scope s11)
│  └─ j12 check (noop)  args: hosts=["a","b"]  after: j6, j9
└─ j13 notify (noop)  args: mode="careful", pool=(run time)  retry: 2 retryWait: 1m  \
after: j10, j12
"""


@pytest.fixture
def specs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "specs"
    d.mkdir()
    (d / "deploy.yaml").write_text(DEPLOY)
    return d


async def deploy_chain(specs_dir: Path, **args: Any) -> Chain:
    specs = load_dir(specs_dir)
    assert specs.diagnostics == []
    return await build(specs.sequences, "deploy", {"hosts": ["a", "b"], **args}, JobFactory())


# ---- key=value


@pytest.mark.parametrize(
    ("words", "want"),
    [
        ([], {}),
        (["a=b"], {"a": "b"}),
        (["a="], {"a": ""}),
        (["a=b=c"], {"a": "b=c"}),
        (["a= spaced "], {"a": " spaced "}),
        (['h=["x","y"]', "n=1"], {"h": ["x", "y"], "n": "1"}),
        (["h=[]"], {"h": []}),
        (["yes=no"], {"yes": "no"}),
    ],
)
def test_parse_kv(words: list[str], want: dict[str, Any]) -> None:
    assert parse_kv(words) == want


@pytest.mark.parametrize(
    ("words", "fragment"),
    [
        (["novalue"], "expected key=value, got 'novalue'"),
        (["=x"], "expected key=value, got '=x'"),
        (["a=1", "a=2"], "arg 'a' is given twice"),
        (["h=[1,2]"], "arg 'h': a value starting with '[' must be a JSON list of strings"),
        (["h=[oops"], "must be a JSON list of strings"),
        (['h=["a",null]'], "must be a JSON list of strings"),
    ],
)
def test_parse_kv_errors(words: list[str], fragment: str) -> None:
    with pytest.raises(KvError) as info:
        parse_kv(words)
    assert fragment in str(info.value)


# ---- the views


async def test_render_tree(specs_dir: Path) -> None:
    chain = await deploy_chain(specs_dir)
    assert render_tree(chain) == DEPLOY_TREE


async def test_render_tree_noop_branch_and_expanded_group(specs_dir: Path) -> None:
    chain = await deploy_chain(specs_dir, mode="fast", width="1")
    text = render_tree(chain)
    assert "pick" not in text  # the noop branch builds nothing
    assert "per-host: each hosts:host (group g3, parallel 1, 2 copies)" in text
    assert 'j11 notify (noop)  args: mode="fast", pool=(run time)' in text
    # expand the deferred node: its copies appear as a group in its place
    values = ScopeVars(chain)
    values.apply_outputs(chain.jobs["j2"], {"pool": ["m1", "m2", "m3"]})
    patch = await expand(chain, "j10", values, JobFactory())
    chain.apply(patch)
    text = render_tree(chain)
    assert "per-pool: each pool:member (group g12, no parallel limit, 3 copies)" in text
    assert text.count('args: member="m') == 3
    assert "j10 per-pool (each)  [deferred: waits for each pool]" in text


async def test_render_tree_of_an_empty_chain(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text(
        "sequences:\n  e:\n    request: true\n    nodes:\n"
        "      c: {category: conditional, if: x, eq: {default: noop}}\n"
        "    args:\n      optional: [{name: x, default: ''}]\n"
    )
    specs = load_dir(tmp_path)
    chain = await build(specs.sequences, "e", {}, JobFactory())
    assert render_tree(chain) == 'request e  x=""\n(no jobs: every node is a noop)\n'


async def test_chain_to_json(specs_dir: Path) -> None:
    chain = await deploy_chain(specs_dir)
    data = chain_to_json(chain)
    again = msgspec.json.decode(msgspec.json.encode(data))
    assert again == data  # plain JSON
    assert (data["request"], data["timeout"], data["failFast"]) == ("deploy", 3600.0, True)
    jobs = {j["id"]: j for j in data["jobs"]}
    assert jobs["j5"] == {
        "id": "j5",
        "name": "drain",
        "type": "noop",
        "args": {"host": "a"},
        "runtimeArgs": [],
        "retry": 0,
        "retryWait": 0.0,
        "sequence": "s4",
        "sequenceName": "host-steps",
        "deferred": False,
    }
    assert jobs["j13"]["runtimeArgs"] == ["pool"]
    assert (jobs["j13"]["retry"], jobs["j13"]["retryWait"]) == (2, 60.0)
    assert jobs["j10"]["deferred"] is True
    assert jobs["j10"]["waitsFor"] == "each pool"
    assert jobs["j10"]["args"] == {}
    # jobs come in an order they can run in
    index = {j["id"]: i for i, j in enumerate(data["jobs"])}
    assert all(index[a] < index[b] for a, b in data["edges"])
    assert len(data["edges"]) == len(chain.edges)
    scopes = {s["id"]: s for s in data["scopes"]}
    assert scopes["s4"] == {
        "id": "s4",
        "sequence": "host-steps",
        "node": "per-host",
        "parent": "s1",
        "group": "g3",
        "retry": 1,
        "retryWait": 5.0,
        "vars": {"host": "a"},
    }
    assert data["groups"] == [
        {"id": "g3", "node": "per-host", "scope": "s1", "parallel": 2, "copies": ["s4", "s7"]}
    ]


def test_job_order_survives_a_cycle() -> None:
    from daemon.chain import ChainJob

    chain = Chain(request_type="r", args={})
    for i in (1, 2, 3, 10):
        chain.jobs[f"j{i}"] = ChainJob(id=f"j{i}", name="n", type="t", scope="s1")
    chain.edges = [("j2", "j3"), ("j3", "j2"), ("j10", "j1")]
    assert job_order(chain) == ["j10", "j1", "j2", "j3"]


# ---- the command


async def run_plan(
    capsys: pytest.CaptureFixture[str], specs: Path, type_: str, words: list[str], as_json: bool
) -> tuple[int, str, str]:
    code = await plan_command(specs, None, type_, words, as_json)
    out, err = capsys.readouterr()
    return code, out, err


async def test_plan_prints_the_tree(specs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run_plan(capsys, specs_dir, "deploy", ['hosts=["a","b"]'], False)
    assert (code, out, err) == (0, DEPLOY_TREE, "")


async def test_plan_prints_json(specs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run_plan(capsys, specs_dir, "deploy", ['hosts=["a"]', "mode=x"], True)
    assert code == 0
    data = msgspec.json.decode(out)
    assert data["args"] == {"hosts": ["a"], "mode": "x", "width": "2"}
    assert [j["name"] for j in data["jobs"]] == ["lookup", "drain", "restart", "per-pool", "notify"]


@pytest.mark.parametrize(
    ("type_", "words", "code", "fragment"),
    [
        ("deploy", [], 2, "missing required arg for 'deploy': hosts"),
        ("deploy", ["hosts=a", "colour=red"], 2, "unknown arg 'colour' for 'deploy'"),
        ("deploy", ["hosts"], 2, "expected key=value, got 'hosts'"),
        ("deploy", ["hosts=[1]"], 2, "must be a JSON list of strings"),
        ("nope", ["hosts=a"], 2, "unknown request type: 'nope'; request types: deploy"),
        ("verify", ["hosts=a"], 2, "not a request type (no `request: true`)"),
        ("deploy", ["hosts=a,b"], 1, "each: arg 'hosts' is a string, expected a list"),
        ("deploy", ['hosts=["a"]', "width=0"], 1, "parallel: arg 'width' is '0'"),
    ],
)
async def test_plan_errors(
    specs_dir: Path,
    capsys: pytest.CaptureFixture[str],
    type_: str,
    words: list[str],
    code: int,
    fragment: str,
) -> None:
    got, out, err = await run_plan(capsys, specs_dir, type_, words, False)
    assert (got, out) == (code, "")
    assert err.startswith("spind plan: ")
    assert fragment in err


async def test_plan_reports_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text(
        textwrap.dedent(
            """\
            sequences:
              r:
                request: true
                nodes:
                  a: {category: job, type: noop, deps: [ghost]}
                  b: {category: job, type: no-such-type}
            """
        )
    )
    code, out, err = await run_plan(capsys, tmp_path, "r", [], False)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert any(line.startswith(f"{tmp_path / 'bad.yaml'}:5:") and "ghost" in line for line in lines)
    assert any("no-such-type" in line and ": error: " in line for line in lines)
    assert lines[-1].startswith("spind plan: ") and "errors in" in lines[-1]


async def test_plan_of_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run_plan(capsys, tmp_path / "absent", "r", [], False)
    assert code == 1
    assert "specs directory does not exist" in err


def test_spind_plan_command_line(specs_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SPIND_CONFIG", None)
    env.pop("SPIND_SPECS", None)
    run = [sys.executable, "-m", "daemon", "plan", "--specs", str(specs_dir), "deploy"]
    ok = subprocess.run(
        [*run, 'hosts=["a","b"]'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (ok.returncode, ok.stdout) == (0, DEPLOY_TREE), ok.stderr
    bad = subprocess.run(
        [*run, "hosts=a", "nope=1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "unknown arg 'nope'" in bad.stderr
