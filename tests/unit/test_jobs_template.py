"""`{{name}}` substitution: rendering, unknown names, and collecting names for the linter."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.jobs.template import (
    TemplateError,
    UrlValueError,
    has_placeholder,
    names,
    render,
    render_url,
    render_value,
    url_part,
)

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


# --- URLs: values percent-encoded for where they land --------------------------------------

URL_ARGS: dict[str, Any] = {
    "id": "42",
    "evil": "a b/../x?y=1#z",
    "amp": "a&b=c",
    "plus": "a+b",
    "pct": "100%2F",
    "semi": "..;",
    "uni": "café",
    "n": 3,
    "list": ["a", "b"],
    "host": "db1.example",
    "hostport": "db1:8443",
    "v6": "[::1]",
    "user": "me@corp",
    "pw": "p:w/d",
    "base": "https://api.example:8443/v2",
    "baseq": "https://api.example/v2?token=t",
    "empty": "",
    "dot": ".",
    "dots": "..",
}
EVIL = "a%20b%2F..%2Fx%3Fy%3D1%23z"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("http://h/items/{{id}}", "http://h/items/42"),
        # a path value is one segment: / ? # and spaces cannot end it or start a query
        ("http://h/items/{{evil}}/info", f"http://h/items/{EVIL}/info"),
        ("http://h/items/v{{evil}}.json", f"http://h/items/v{EVIL}.json"),
        ("http://h/{{semi}}/x", "http://h/..%3B/x"),
        ("http://h/{{pct}}", "http://h/100%252F"),
        ("http://h/{{plus}}", "http://h/a%2Bb"),
        ("http://h/{{uni}}", "http://h/caf%C3%A9"),
        ("http://h/{{n}}/{{list}}", "http://h/3/%5B%22a%22%2C%22b%22%5D"),
        ("http://h/a/{{empty}}/b", "http://h/a//b"),
        # a query value or key is one value or key: & = + # cannot add parameters
        ("http://h/s?q={{evil}}&k=1", f"http://h/s?q={EVIL}&k=1"),
        ("http://h/s?k={{amp}}", "http://h/s?k=a%26b%3Dc"),
        ("http://h/s?{{amp}}=1", "http://h/s?a%26b%3Dc=1"),
        ("http://h/s?q={{plus}}", "http://h/s?q=a%2Bb"),
        ("http://h/s?q={{dots}}", "http://h/s?q=.."),
        ("http://h/s#{{evil}}", f"http://h/s#{EVIL}"),
        # host and port: pasted, if they look like one
        ("http://{{host}}/x", "http://db1.example/x"),
        ("http://{{hostport}}/x", "http://db1:8443/x"),
        ("http://{{host}}:{{n}}/x", "http://db1.example:3/x"),
        ("http://{{v6}}:80/", "http://[::1]:80/"),
        ("http://{{host}}?q={{evil}}", f"http://db1.example?q={EVIL}"),
        # userinfo: every reserved character encoded
        ("http://{{user}}:{{pw}}@h/", "http://me%40corp:p%3Aw%2Fd@h/"),
        # a value that starts the URL is its base, pasted as it is; what follows is encoded
        ("{{base}}/items/{{evil}}", f"https://api.example:8443/v2/items/{EVIL}"),
        ("{{base}}", "https://api.example:8443/v2"),
        ("{{baseq}}&q={{evil}}", f"https://api.example/v2?token=t&q={EVIL}"),
        # the literal text is left as it is
        ("http://h/a b/{{id}}?x=%2F&y=1+2#f", "http://h/a b/42?x=%2F&y=1+2#f"),
        ("http://h/../{{id}}/./", "http://h/../42/./"),
        ("http://h/{{dots}}x/{{dot}}{{id}}", "http://h/..x/.42"),
    ],
)
def test_render_url(template: str, expected: str) -> None:
    assert render_url(template, URL_ARGS) == expected


@pytest.mark.parametrize(
    ("template", "error", "needle"),
    [
        ("http://h/{{dots}}/x", UrlValueError, "path segment '..'"),
        ("http://h/a/{{dots}}", UrlValueError, "path segment '..'"),
        ("http://h/a/{{dots}}?q=1", UrlValueError, "path segment '..'"),
        ("http://h/{{dot}}/x", UrlValueError, "path segment '.'"),
        ("http://h/{{dot}}{{dot}}/x", UrlValueError, "path segment '..'"),
        ("http://h/.{{dot}}/x", UrlValueError, "path segment '..'"),
        ("http://{{evil}}/x", UrlValueError, "stands in the URL's host"),
        ("http://{{user}}/x", UrlValueError, "stands in the URL's host"),
        ("http://{{empty}}/x", UrlValueError, "stands in the URL's host"),
        ("http://h/{{missing}}", TemplateError, "unknown arg 'missing'"),
    ],
)
def test_render_url_refuses(template: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error) as info:
        render_url(template, URL_ARGS)
    assert needle in str(info.value)
    assert isinstance(info.value, TemplateError)  # the http job reports both the same way


@pytest.mark.parametrize(
    ("before", "after", "part"),
    [
        ("", "/x", "base"),
        ("http:", "//h/", "base"),
        ("http://", "/x", "host"),
        ("http://h:", "/x", "host"),
        ("http://", ":pw@h/x", "userinfo"),
        ("http://u:", "@h/x", "userinfo"),
        ("http://u@", "/x", "host"),
        ("http://", "/a@b", "host"),  # an @ in the path is not the userinfo's
        ("http://h/", "", "path"),
        ("http://h/a/b", "?x", "path"),
        ("http://h?", "", "query"),
        ("http://h/a?x=", "&y", "query"),
        ("http://h/a?x=/y/", "", "query"),
        ("http://h/a#", "", "fragment"),
        ("http://h/a?x#", "", "fragment"),
        ("http://h/a#x?y/", "", "fragment"),
    ],
)
def test_url_part(before: str, after: str, part: str) -> None:
    assert url_part(before, after) == part
