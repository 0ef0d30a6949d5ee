"""`{{name}}` substitution: rendering, unknown names, and collecting names for the linter."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.jobs.template import TemplateError, has_placeholder, names, render, render_value

ARGS: dict[str, Any] = {
    "host": "db1",
    "my-arg": "dash",
    "n": 3,
    "hosts": ["a", "b"],
    "cfg": {"k": True},
    "none": None,
    "brace": "{{host}}",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("{{host}}", "db1"),
        ("{{ host }}", "db1"),
        ("{{  host}}", "db1"),
        ("pre-{{host}}-post", "pre-db1-post"),
        ("{{host}}{{host}}", "db1db1"),
        ("{{my-arg}}", "dash"),
        ("{{n}}", "3"),
        ("{{hosts}}", '["a","b"]'),
        ("{{cfg}}", '{"k":true}'),
        ("{{none}}", "null"),
        # a value is pasted once, never rendered again
        ("{{brace}}", "{{host}}"),
        # not placeholders: left as they are
        ("{host}", "{host}"),
        ("{{}}", "{{}}"),
        ("{{ two words }}", "{{ two words }}"),
        ("$(echo {{host}})", "$(echo db1)"),
    ],
)
def test_render(text: str, expected: str) -> None:
    assert render(text, ARGS) == expected


@pytest.mark.parametrize("text", ["{{missing}}", "a {{ host }} b {{nope}}"])
def test_render_unknown_name_raises_naming_it(text: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(text, ARGS)
    assert info.value.name in ("missing", "nope")
    assert repr(info.value.name) in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{{host}}", "db1"),
        ({"a": "{{n}}", "b": ["x{{host}}", 5]}, {"a": "3", "b": ["xdb1", 5]}),
        ({"{{host}}": "k"}, {"{{host}}": "k"}),  # keys stay
        (7, 7),
        (None, None),
    ],
)
def test_render_value(value: Any, expected: Any) -> None:
    assert render_value(value, ARGS) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no placeholders", set()),
        ("{{a}} and {{ b }}", {"a", "b"}),
        ({"cmd": ["x", "{{a}}"], "env": {"K": "{{b}}-{{c}}"}}, {"a", "b", "c"}),
        ([{"deep": [["{{d}}"]]}], {"d"}),
        ({"n": 5, "t": True, "z": None}, set()),
        ("{{ two words }}", set()),
    ],
)
def test_names(value: Any, expected: set[str]) -> None:
    assert names(value) == expected


@pytest.mark.parametrize(("text", "expected"), [("{{x}}", True), ("{x}", False), ("", False)])
def test_has_placeholder(text: str, expected: bool) -> None:
    assert has_placeholder(text) is expected
