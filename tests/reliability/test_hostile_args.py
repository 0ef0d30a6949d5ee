"""Hostile request args reach shell jobs only as data: through the real API and daemon, a value
full of `$(...)`, backticks, `;` and newlines arrives byte for byte, as an environment variable
(string `cmd`, `with.env`) or as one argv item (list `cmd`), and nothing in it runs. A NUL in an
arg is a clear error (a failed try naming the arg), never a crash; so is an arg too long for
the kernel to pass to a process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon

pytestmark = pytest.mark.timeout(120)

SPEC = """
sequences:
  echo-args:
    request: true
    args:
      required: [{name: v}, {name: out}]
    nodes:
      via-env:
        category: job
        type: shell
        args: [v, out]
        with:
          cmd: |
            printf "%s" "$SPIND_ARG_v" > "$SPIND_ARG_out.env"
            printf "%s" "$SPIND_ARGS" > "$SPIND_ARG_out.json"
      via-with-env:
        category: job
        type: shell
        args: [v, out]
        with:
          env: {VALUE: "{{v}}"}
          cmd: 'printf "%s" "$VALUE" > "$SPIND_ARG_out.withenv"'
      via-argv:
        category: job
        type: shell
        args: [v, out]
        with:
          cmd: [/bin/sh, -c, 'printf "%s" "$1" > "$2"', sh, "{{v}}", "{{out}}.argv"]
"""

HOSTILE = [
    "$(touch {pwned})",
    "`touch {pwned}`",
    "; touch {pwned}",
    "x\ntouch {pwned}\n",
    "' ; touch {pwned} ; '",
    '" ; touch {pwned} ; "',
    "$(printf x > {pwned})${IFS}`id`",
    "\\$HOME \\\\ \\n",
    "&& touch {pwned} || touch {pwned} | touch {pwned} > {pwned}",
    "*",
    "-n",
    "--help",
    "%s%n%x",
    "{{v}}",
    "$SPIND_ARG_out",
    "\r\n\t\x01\x7f",
    "é ✓ 日本 \U0001f600",
    "",
    "x" * 100_000,
]


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("hostile-args")
    daemon = Daemon(root, {"echo.yaml": SPEC}, env={"SPIND_LOG_LEVEL": "WARNING"})
    daemon.start()
    yield daemon
    daemon.close()


@pytest.mark.parametrize("template", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_arrive_as_literal_text(d: Daemon, tmp_path: Path, template: str) -> None:
    pwned = tmp_path / "pwned"
    value = template.replace("{pwned}", str(pwned))
    out = tmp_path / "out"
    status, body = d.call(
        "POST", "/api/v1/requests", {"type": "echo-args", "args": {"v": value, "out": str(out)}}
    )
    assert status == 201, body
    req = d.wait_state(body["id"])
    assert req["state"] == "COMPLETE", (req, d.log_rows(body["id"]))
    for suffix in ("env", "withenv", "argv"):
        got = Path(f"{out}.{suffix}").read_bytes().decode()
        assert got == value, (suffix, got[:200])
    assert json.loads(Path(f"{out}.json").read_text())["v"] == value
    assert not pwned.exists()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a\x00b", "NUL"),
        ("\x00", "NUL"),
        ("y" * 200_000, "too long"),  # past the kernel's 128 KiB limit on one env string
    ],
    ids=["nul-inside", "nul-only", "over-128k"],
)
def test_values_a_process_cannot_receive_fail_clearly(
    d: Daemon, tmp_path: Path, value: str, words: str
) -> None:
    out = tmp_path / "out"
    status, body = d.call(
        "POST", "/api/v1/requests", {"type": "echo-args", "args": {"v": value, "out": str(out)}}
    )
    if status == 400:
        assert words.lower() in body["error"].lower(), body
        return
    assert status == 201, body
    req = d.wait_state(body["id"])
    assert req["state"] == "FAIL"
    rows = d.log_rows(body["id"])
    assert rows and all(r["state"] == "FAIL" for r in rows if r["name"] == "via-env")
    errors = " | ".join(r["error"] for r in rows)
    assert words.lower() in errors.lower(), errors
    assert d.call("GET", "/api/v1/health")[0] == 200
