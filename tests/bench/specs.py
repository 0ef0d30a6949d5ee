"""The request specs the benchmarks run, generated as YAML text (written to a specs directory).

- `line-N` (N = 10, 100, ..., 100000): N `noop` jobs in one line. `line-10` is ten job nodes;
  `line-10N` is ten sequence nodes in a line, each calling `line-N`, so a chain of 100,000 jobs
  comes from a spec of 50 nodes (the builder splices the nested copies into one line).
- `fanout`: `each` over the list arg `items` of the one-job sequence `one-noop`, then `join`.
- `sleep-fanout`: the same over `one-sleep` (`sleep 1s`).
- `shell-fanout`: the same over `one-shell` (`shell` running `true`), 32 copies at a time.
- `sleep-line-N`: like `line-N` with `sleep` jobs of `{{duration}}` (resume-100k).
"""

from __future__ import annotations

from pathlib import Path

LINE_SIZES = (10, 100, 1_000, 10_000, 100_000)


def _line_nodes(kind: str, child: str | None, extra: str = "") -> str:
    out = []
    for i in range(1, 11):
        out.append(f"      n{i}:")
        if child is None:
            out.append("        category: job")
            out.append(f"        type: {kind}")
            out.append(extra)
        else:
            out.append("        category: sequence")
            out.append(f"        type: {child}")
            if extra:
                out.append("        args:\n          - expected: duration")
        if i > 1:
            out.append(f"        deps: [n{i - 1}]")
    return "\n".join(line for line in out if line)


def line_specs() -> str:
    parts = ["sequences:"]
    prev: str | None = None
    for n in LINE_SIZES:
        name = f"line-{n}"
        parts.append(f"  {name}:\n    request: true\n    nodes:\n{_line_nodes('noop', prev)}")
        prev = name
    return "\n".join(parts) + "\n"


def sleep_line_specs(max_n: int = 100) -> str:
    sleep_with = (
        "        args:\n          - expected: duration\n"
        '        with:\n          duration: "{{duration}}"'
    )
    parts = ["sequences:"]
    prev: str | None = None
    for n in LINE_SIZES:
        if n > max_n:
            break
        name = f"sleep-line-{n}"
        nodes = _line_nodes("sleep", prev, sleep_with)
        parts.append(
            f"  {name}:\n    request: true\n"
            "    args:\n      required:\n        - name: duration\n"
            f"    nodes:\n{nodes}"
        )
        prev = name
    return "\n".join(parts) + "\n"


def _fanout(name: str, one: str, job: str, parallel: int | None) -> str:
    par = f"\n        parallel: {parallel}" if parallel else ""
    return f"""  {name}:
    request: true
    args:
      required:
        - name: items
    nodes:
      fan:
        category: sequence
        type: {one}
        each: [items:item]{par}
      join:
        category: job
        type: noop
        deps: [fan]
  {one}:
    args:
      required:
        - name: item
    nodes:
{job}
"""


def _work(job_type: str, with_: str = "") -> str:
    text = f"      work:\n        category: job\n        type: {job_type}"
    return text + (f"\n        with:\n          {with_}" if with_ else "")


def fanout_specs() -> str:
    return (
        "sequences:\n"
        + _fanout("fanout", "one-noop", _work("noop"), None)
        + _fanout("sleep-fanout", "one-sleep", _work("sleep", 'duration: "1s"'), None)
        + _fanout("shell-fanout", "one-shell", _work("shell", 'cmd: ["true"]'), 32)
    )


def write_specs(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lines.yaml").write_text(line_specs())
    (directory / "sleep-lines.yaml").write_text(sleep_line_specs())
    (directory / "fanouts.yaml").write_text(fanout_specs())
    (directory / "resume.yaml").write_text(resume_spec())
    return directory


def items(n: int) -> list[str]:
    """The `items` arg of a fan-out over n elements."""
    return [f"host{i:06d}" for i in range(n)]


def resume_spec() -> str:
    """`resume-100`: 100 `sleep` jobs in a line, the first 50 sleeping `fast`, the rest `slow`."""
    nodes = []
    for i in range(1, 11):
        given = "fast" if i <= 5 else "slow"
        dep = f"\n        deps: [n{i - 1}]" if i > 1 else ""
        nodes.append(
            f"      n{i}:\n        category: sequence\n        type: sleep-line-10\n"
            f"        args:\n          - expected: duration\n            given: {given}{dep}"
        )
    return (
        "sequences:\n  resume-100:\n    request: true\n    args:\n      required:\n"
        "        - name: fast\n        - name: slow\n    nodes:\n" + "\n".join(nodes) + "\n"
    )
