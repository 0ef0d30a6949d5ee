"""`{{name}}` substitution of job args into `with:` values.

Every string in a node's `with:` mapping is a template, except a shell job's string `cmd`
(which goes to `/bin/sh -c` and so is never pasted into: its args reach it as environment
variables). `{{ name }}` (spaces allowed) is replaced by the arg's value: a string as it is,
anything else as JSON text. An unknown name is an error, never an empty string.

URLs (:func:`render_url`) are the exception to "as it is": a value is percent-encoded for the
part of the URL it lands in, so that it can never change the URL's path or query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, unquote

import msgspec

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
#: What a value may hold where it lands in a URL's host and port (`http://{{host}}:8080/`).
_HOST_VALUE = re.compile(r"[A-Za-z0-9._~:\[\]-]+")
_ENDS_AUTHORITY = re.compile(r"[/?#]")

UrlPart = Literal["base", "userinfo", "host", "path", "query", "fragment"]


class TemplateError(ValueError):
    """A `{{name}}` names no arg of the job."""

    def __init__(self, name: str, text: str = "") -> None:
        where = f" in {text!r}" if text else ""
        super().__init__(f"unknown arg {name!r} used as {{{{{name}}}}}{where}")
        self.name = name


class UrlValueError(TemplateError):
    """An arg's value cannot stand where its `{{name}}` is in a URL (the message says why)."""

    def __init__(self, name: str, message: str) -> None:
        ValueError.__init__(self, message)
        self.name = name


def to_text(value: Any) -> str:
    """An arg value as text: a string as it is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def render(text: str, args: Mapping[str, Any]) -> str:
    """Replace every `{{ name }}` in `text` with the value of arg `name`."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in args:
            raise TemplateError(name, text)
        return to_text(args[name])

    return _PLACEHOLDER.sub(sub, text)


def render_value(value: Any, args: Mapping[str, Any]) -> Any:
    """`render` applied to every string nested in lists and mapping values (keys stay)."""
    if isinstance(value, str):
        return render(value, args)
    if isinstance(value, Mapping):
        return {k: render_value(v, args) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, args) for v in value]
    return value


def has_placeholder(text: str) -> bool:
    return _PLACEHOLDER.search(text) is not None


def names(value: Any) -> set[str]:
    """Every name used as `{{name}}` in any string nested in `value` (mapping values, lists)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        cur = stack.pop()
        if isinstance(cur, str):
            found.update(m.group(1) for m in _PLACEHOLDER.finditer(cur))
        elif isinstance(cur, Mapping):
            stack.extend(cur.values())
        elif isinstance(cur, list | tuple):
            stack.extend(cur)
    return found


def url_part(before: str, after: str) -> UrlPart:
    """Where text put between `before` (the URL so far) and `after` (the rest of the template)
    lands. "base": the scheme is not over yet, so the text starts the URL (`{{api}}/v1/items`)."""
    scheme_end = before.find("://")
    if scheme_end < 0:
        return "base"
    rest = before[scheme_end + 3 :]
    if "#" in rest:
        return "fragment"
    if "?" in rest:
        return "query"
    if "/" in rest:
        return "path"
    authority_rest = _ENDS_AUTHORITY.split(after, maxsplit=1)[0]
    return "userinfo" if "@" in authority_rest else "host"


def _url_value(part: UrlPart, name: str, text: str) -> str:
    if part == "base":
        return text
    if part == "host":
        if not _HOST_VALUE.fullmatch(text):
            raise UrlValueError(
                name,
                f"{{{{{name}}}}} stands in the URL's host, and its value {text!r} is not a host "
                "name, address or port (letters, digits, . - _ ~ : [ ])",
            )
        return text
    return quote(text, safe="", errors="surrogatepass")


def render_url(template: str, args: Mapping[str, Any]) -> str:
    """Render a URL template: the literal text stays as written, each value is percent-encoded
    for where it lands (all but letters, digits and `-._~`), so that it is one path segment,
    one query key or value, or part of the userinfo or fragment, and never more.

    Exceptions: a value that starts the URL (before the scheme's `://`, as `{{base}}/items`) is
    pasted as it is, being the URL's own beginning; a value in the host or port must look like
    one; a value that would make a whole path segment `.` or `..` is refused.
    """
    out = ""
    segments: list[tuple[int, int, str]] = []  # where values landed in the path
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        out += template[pos : m.start()]
        pos = m.end()
        name = m.group(1)
        if name not in args:
            raise TemplateError(name, template)
        part = url_part(out, template[pos:])
        text = _url_value(part, name, to_text(args[name]))
        if part == "path" and text:
            segments.append((len(out), len(out) + len(text), name))
        out += text
    out += template[pos:]
    for start, end, name in segments:
        seg_start = out.rfind("/", 0, start) + 1
        found = _ENDS_AUTHORITY.search(out, end)
        segment = out[seg_start : found.start() if found else len(out)]
        if unquote(segment) in (".", ".."):
            raise UrlValueError(
                name,
                f"{{{{{name}}}}} would make the URL path segment {segment!r}, which moves "
                "within the path; refused",
            )
    return out
