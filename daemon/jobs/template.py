"""`{{name}}` substitution of job args into `with:` values.

Every string in a node's `with:` mapping is a template, except a shell job's string `cmd`
(which goes to `/bin/sh -c` and so is never pasted into: its args reach it as environment
variables). `{{ name }}` (spaces allowed) is replaced by the arg's value: a string as it is,
anything else as JSON text. An unknown name is an error, never an empty string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


class TemplateError(ValueError):
    """A `{{name}}` names no arg of the job."""

    def __init__(self, name: str, text: str = "") -> None:
        where = f" in {text!r}" if text else ""
        super().__init__(f"unknown arg {name!r} used as {{{{{name}}}}}{where}")
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
