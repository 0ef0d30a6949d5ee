"""`python -m tests.bench [--only NAME[,NAME...]] [--repeat N] [--quick] [--json FILE]`.

Runs each workload `--repeat` times, every run in a fresh subprocess (so that its peak RSS is
its own, read from `ru_maxrss`, or the daemon's VmHWM for the HTTP workloads) with a fresh
journal in a fresh directory under $TMPDIR; prints one line per run on stderr and the medians
on stdout. `--quick` shrinks every workload (a smoke run; its figures are not the targets').

Workloads: chain-1000, fanout-10000, requests-1000x10, sleep-fanout-1000, shell-fanout-500,
build-100k, resume-100k, api-read, chain-1000-full, fanout-10000-full, and `scaling`
(chain-N and fanout-N for N = 100, 1000, 10000, 100000). Any chain-N, fanout-N, chain-N-full
or fanout-N-full may be named with --only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from tests.bench import report

MAIN = (
    "chain-1000",
    "fanout-10000",
    "requests-1000x10",
    "sleep-fanout-1000",
    "shell-fanout-500",
    "build-100k",
    "resume-100k",
    "api-read",
    "chain-1000-full",
    "fanout-10000-full",
)
SCALING_SIZES = (100, 1_000, 10_000, 100_000)
QUICK_SCALING_SIZES = (100, 1_000, 10_000)
_GENERIC = re.compile(r"(chain|fanout)-(\d+)(-full)?")
CHILD_TIMEOUT = 3600.0
#: the workloads whose runtime is a daemon subprocess (its loop set by SPIND_EVENT_LOOP)
HTTP_WORKLOADS = frozenset({"requests-1000x10", "resume-100k", "api-read"})
#: `--loop`, handed to the child and on to the daemons it starts
LOOP_ENV = "SPIND_BENCH_LOOP"


def resolve(name: str, quick: bool) -> Callable[[Path], Awaitable[dict[str, Any]]]:
    """The coroutine function that runs one workload in a directory. ValueError if unknown."""
    from tests.bench import http_workloads as h
    from tests.bench import workloads as w

    def q(full: int, small: int) -> int:
        return small if quick else full

    fixed: dict[str, Callable[[Path], Awaitable[dict[str, Any]]]] = {
        "chain-1000": lambda d: w.chain(d, q(1000, 100)),
        "fanout-10000": lambda d: w.fanout(d, q(10_000, 2000)),
        "chain-1000-full": lambda d: w.chain(d, q(1000, 100), synchronous="FULL"),
        "fanout-10000-full": lambda d: w.fanout(d, q(10_000, 2000), synchronous="FULL"),
        "requests-1000x10": lambda d: h.requests(d, q(1000, 100)),
        "sleep-fanout-1000": lambda d: w.sleep_fanout(d, q(1000, 200)),
        "shell-fanout-500": lambda d: w.shell_fanout(d, q(500, 100)),
        "build-100k": lambda d: w.build(d, q(100_000, 10_000)),
        "resume-100k": lambda d: h.resume(d, q(1000, 100)),
        "api-read": lambda d: h.api_read(d, q(10_000, 2000)),
    }
    if name in fixed:
        return fixed[name]
    m = _GENERIC.fullmatch(name)
    if m is None:
        raise ValueError(f"unknown workload {name!r}")
    kind, n, full = m.group(1), int(m.group(2)), bool(m.group(3))
    sync = "FULL" if full else "NORMAL"
    if kind == "chain":
        if n not in SCALING_SIZES and n != 10:
            raise ValueError(f"chain-N needs N in {(10, *SCALING_SIZES)}, got {n}")
        return lambda d: w.chain(d, n, synchronous=sync)
    return lambda d: w.fanout(d, n, synchronous=sync)


def expand(names: list[str], quick: bool) -> list[str]:
    out: list[str] = []
    for name in names:
        if name == "scaling":
            sizes = QUICK_SCALING_SIZES if quick else SCALING_SIZES
            out += [f"{kind}-{n}" for kind in ("chain", "fanout") for n in sizes]
        elif name == "all":
            out += [*MAIN, *expand(["scaling"], quick)]
        else:
            resolve(name, quick)  # unknown names fail before anything runs
            out.append(name)
    return list(dict.fromkeys(out))


# ---- the child: one run of one workload


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: `finally` blocks stop daemons, remove files


def child(name: str, quick: bool, keep: bool) -> int:
    import resource

    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    from daemon import eventloop, gcpolicy

    gcpolicy.configure()  # as `spind serve` does
    fn = resolve(name, quick)
    root = Path(tempfile.mkdtemp(prefix=f"spind-bench-{name}-"))
    load = os.getloadavg()[0]  # other work on the machine makes every figure worse
    try:
        choice = cast(eventloop.Choice, os.environ.get(LOOP_ENV, "asyncio"))
        if name in HTTP_WORKLOADS:
            # the runtime is the daemon's (its loop: `event_loop`); the clients' loop is asyncio's
            result = asyncio.run(fn(root))
        else:
            with asyncio.Runner(loop_factory=eventloop.loop_factory(choice)) as runner:
                result = runner.run(fn(root))
        result["loop"] = choice
        result["load1"] = load
        if "peak_rss_mb" not in result:
            result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def run_child(name: str, quick: bool, keep: bool) -> dict[str, Any]:
    args = [sys.executable, "-m", "tests.bench", "--child", name]
    args += ["--quick"] if quick else []
    args += ["--keep"] if keep else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except BaseException:  # timeout, Ctrl-C, SIGTERM: the child stops its daemon and goes
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    for text in out.splitlines():
        if text.startswith("RESULT "):
            result: dict[str, Any] = json.loads(text[len("RESULT ") :])
            return result
    tail = "\n".join((err or out).splitlines()[-30:])
    raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{tail}")


# ---- the parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--only", help="comma-separated workloads (or `scaling`, `all`)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", help="write every run and the medians to this file")
    parser.add_argument("--keep", action="store_true", help="keep each run's directory")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        help="the event loop of the runtime (the daemon's `event_loop`); the HTTP workloads' "
        "clients always run on asyncio's own (default: asyncio)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop:
        os.environ[LOOP_ENV] = args.loop  # the children and the daemons they start read it
    if args.child:
        return child(args.child, args.quick, args.keep)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        names = expand(args.only.split(",") if args.only else ["all"], args.quick)
    except ValueError as exc:
        parser.error(str(exc))
    medians: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    failed = 0
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # the current child is stopped too
    for name in names:
        runs[name] = []
        for i in range(args.repeat):
            t = time.perf_counter()
            try:
                result = run_child(name, args.quick, args.keep)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"FAILED {name}: {exc}", file=sys.stderr, flush=True)
                failed += 1
                break
            runs[name].append(result)
            took = time.perf_counter() - t
            print(
                f"run {i + 1}/{args.repeat} ({took:.0f}s): {report.line(name, result)}",
                file=sys.stderr,
                flush=True,
            )
        if runs[name]:
            medians[name] = report.median_result(runs[name])
            print(report.line(name, medians[name]), flush=True)
    sizes = QUICK_SCALING_SIZES if args.quick else SCALING_SIZES
    if report.has_scaling_rows(medians, sizes):
        print("\n" + report.scaling_table(medians, sizes), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "medians": medians}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
