"""Pure parts of the built-in job types: outputs-file parsing, env names, `with:` checks."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.jobs.http import HttpJob
from daemon.jobs.noop import NoopJob
from daemon.jobs.shell import OutputsError, ShellJob, env_name, parse_outputs
from daemon.jobs.sleep import SleepJob


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("a=1\n", {"a": 1}),
        ('hosts=["a","b"]\n', {"hosts": ["a", "b"]}),
        ('cfg={"k": [1, 2.5, null]}', {"cfg": {"k": [1, 2.5, None]}}),
        ("flag=true\nnothing=null", {"flag": True, "nothing": None}),
        ('quoted="x y"', {"quoted": "x y"}),
        ("name=db1.example.com", {"name": "db1.example.com"}),
        ("raw=[not json", {"raw": "[not json"}),
        ("url=http://h/p?a=b=c", {"url": "http://h/p?a=b=c"}),
        ("empty=", {"empty": ""}),
        ("  spaced  =  v  ", {"spaced": "v"}),
        ("\n# a comment\n\n  # indented comment\nk=v\n\n", {"k": "v"}),
        ("crlf=1\r\nnext=two\r\n", {"crlf": 1, "next": "two"}),
        ("k=1\nk=2", {"k": 2}),
        ("my-arg=$(rm -rf /)", {"my-arg": "$(rm -rf /)"}),
    ],
)
def test_parse_outputs(text: str, expected: dict[str, Any]) -> None:
    assert parse_outputs(text) == expected


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("no equals sign", 1),
        ("a=1\n\n=value", 3),
        ("two words=1", 1),
        ("ok=1\n# fine\ngarbage", 3),
    ],
)
def test_parse_outputs_bad_line(text: str, line: int) -> None:
    with pytest.raises(OutputsError, match=f"line {line}: expected key=value"):
        parse_outputs(text)


@pytest.mark.parametrize(
    ("arg", "var"),
    [
        ("host", "SPIND_ARG_host"),
        ("my-arg", "SPIND_ARG_my_arg"),
        ("a.b c", "SPIND_ARG_a_b_c"),
        ("Ünï", "SPIND_ARG__n_"),
        ("x1_Y", "SPIND_ARG_x1_Y"),
    ],
)
def test_env_name(arg: str, var: str) -> None:
    assert env_name(arg) == var


@pytest.mark.parametrize(
    ("cls", "with_", "problems"),
    [
        (ShellJob, {"cmd": ["ls", "-l"]}, []),
        (ShellJob, {"cmd": "ls -l | wc"}, []),
        (ShellJob, {"cmd": ["sleep", 1]}, []),
        (ShellJob, {}, []),  # missing keys are the linter's, from required_params
        (ShellJob, {"cmd": []}, ["cmd: the list is empty"]),
        (ShellJob, {"cmd": "  "}, ["cmd is empty"]),
        (ShellJob, {"cmd": ["ls", ["x"]]}, ["cmd item 1: expected a string, got list"]),
        (ShellJob, {"cmd": {"a": 1}}, ["cmd: expected a list"]),
        (ShellJob, {"cmd": "x", "env": ["A=1"]}, ["env: expected a mapping, got list"]),
        (ShellJob, {"cmd": "x", "env": {"A": {"b": 1}}}, ["env A: expected a string"]),
        (ShellJob, {"cmd": "x", "cwd": ["/"]}, ["cwd: expected a string"]),
        (ShellJob, {"cmd": "x", "stdin": {"a": 1}}, ["stdin: expected a string"]),
        (ShellJob, {"cmd": "x", "timeout": "10s"}, []),
        (ShellJob, {"cmd": "x", "timeout": "{{t}}"}, []),
        (ShellJob, {"cmd": "x", "timeout": "10"}, ["timeout: invalid duration"]),
        (SleepJob, {"duration": "2s"}, []),
        (SleepJob, {"duration": "{{d}}"}, []),
        (SleepJob, {"duration": "two"}, ["duration: invalid duration"]),
        (NoopJob, {}, []),
        (HttpJob, {"url": "http://x/"}, []),
        (HttpJob, {"url": "http://x/", "expect": "201"}, []),
        (HttpJob, {"url": "http://x/", "expect": ["200", 204]}, []),
        (HttpJob, {"url": "http://x/", "expect": "ok"}, ["expect: 'ok' is not a status code"]),
        (HttpJob, {"url": "http://x/", "expect": 700}, ["expect: 700 is not a status code"]),
        (HttpJob, {"url": "http://x/", "expect": []}, ["expect: the list is empty"]),
        (HttpJob, {"url": ["http://x/"]}, ["url: expected a string"]),
        (HttpJob, {"url": "http://x/", "headers": "A: b"}, ["headers: expected a mapping"]),
        (HttpJob, {"url": "http://x/", "body": {"a": 1}}, []),
        (HttpJob, {"url": "http://x/", "timeout": "x"}, ["timeout: invalid duration"]),
    ],
)
def test_check_with(cls: type[ShellJob], with_: dict[str, Any], problems: list[str]) -> None:
    found = cls.check_with(with_)
    assert len(found) == len(problems), found
    for got, want in zip(found, problems, strict=True):
        assert got.startswith(want)
