"""Loading spec files: YAML with positions, scalars kept as text, bounded, never raising.

PyYAML composes the document into nodes that carry their marks; we turn that tree into plain
Python (every scalar as the text it is, as Spin Cycle's decoder does, `null` as None), note the
line and column of every key and list item, warn about repeated keys and unknown fields, and
decode each sequence and node into the Structs of :mod:`daemon.spec` one at a time, so that one
bad field costs one error and the rest of the file is still checked.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import yaml

from daemon.diagnostics import Diagnostic, Severity
from daemon.spec import KNOWN_FIELDS, NodeSpec, SequenceSpec

#: Largest spec file read, in bytes.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Most YAML nodes one file may expand to (alias bombs stop here).
MAX_NODES = 200_000
#: Deepest nesting accepted.
MAX_DEPTH = 64

PathKey = tuple[str | int, ...]
Positions = dict[PathKey, tuple[int, int]]

_NULL_TAG = "tag:yaml.org,2002:null"


class _TooBig(Exception):
    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(message)
        self.line = line
        self.col = col


class SpecSet(msgspec.Struct, kw_only=True):
    """Every sequence from a specs directory, with where each field stood and what was found."""

    sequences: dict[str, SequenceSpec] = msgspec.field(default_factory=dict)
    positions: dict[str, Positions] = msgspec.field(default_factory=dict)
    diagnostics: list[Diagnostic] = msgspec.field(default_factory=list)
    files: list[str] = msgspec.field(default_factory=list)

    def where(self, sequence: str, *path: str | int) -> tuple[str, int, int]:
        """File, line and column of a field of a sequence (the nearest known parent if unset)."""
        seq = self.sequences.get(sequence)
        if seq is None:
            return ("", 0, 0)
        pos = self.positions.get(seq.filename, {})
        full: PathKey = ("sequences", sequence, *path)
        while full:
            if full in pos:
                line, col = pos[full]
                return (seq.filename, line, col)
            full = full[:-1]
        return (seq.filename, 1, 1)

    def diag(
        self,
        severity: Severity,
        check: str,
        message: str,
        sequence: str,
        node: str | None = None,
        path: Iterable[str | int] = (),
    ) -> Diagnostic:
        """A finding placed at a field: `path` is relative to the node (or the sequence)."""
        rel: list[str | int] = ["nodes", node] if node is not None else []
        rel.extend(path)
        file, line, col = self.where(sequence, *rel)
        return Diagnostic(
            severity=severity,
            message=message,
            check=check,
            file=file,
            line=line,
            col=col,
            sequence=sequence,
            node=node,
        )


class _Converter:
    """YAML node tree -> plain Python, recording positions and repeated keys."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.positions: Positions = {}
        self.diags: list[Diagnostic] = []
        self.count = 0

    def convert(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(
                f"spec expands to more than {MAX_NODES} YAML nodes (an alias bomb?)",
                node.start_mark.line + 1,
                node.start_mark.column + 1,
            )
        if depth > MAX_DEPTH:
            raise _TooBig(
                f"spec nests deeper than {MAX_DEPTH} levels",
                node.start_mark.line + 1,
                node.start_mark.column + 1,
            )
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _NULL_TAG and node.style is None:
                return None
            return str(node.value)
        if isinstance(node, yaml.SequenceNode):
            out_list = []
            for i, item in enumerate(node.value):
                sub = (*path, i)
                self.positions.setdefault(sub, _mark(item))
                out_list.append(self.convert(item, sub, depth + 1))
            return out_list
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        return None

    def _mapping(self, node: yaml.MappingNode, path: PathKey, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = self.convert(value_node, path, depth + 1)
                for m in merged if isinstance(merged, list) else [merged]:
                    if isinstance(m, dict):
                        for k, v in m.items():
                            out.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                line, col = _mark(key_node)
                self.diags.append(
                    Diagnostic(
                        severity=Severity.ERROR,
                        check="yaml",
                        message="a mapping key must be a plain value, not a list or mapping",
                        file=self.filename,
                        line=line,
                        col=col,
                    )
                )
                continue
            key = str(key_node.value)
            sub = (*path, key)
            if key in out:
                line, col = _mark(key_node)
                self.diags.append(
                    Diagnostic(
                        severity=Severity.WARNING,
                        check="duplicate-key",
                        message=f"key {key!r} is repeated in this mapping; the last one is used",
                        file=self.filename,
                        line=line,
                        col=col,
                        **_seq_node(sub),
                    )
                )
            self.positions[sub] = _mark(key_node)
            out[key] = self.convert(value_node, sub, depth + 1)
        return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _seq_node(path: PathKey) -> dict[str, str | None]:
    seq = str(path[1]) if len(path) > 1 and path[0] == "sequences" else None
    node = str(path[3]) if len(path) > 3 and seq is not None and path[2] == "nodes" else None
    return {"sequence": seq, "node": node}


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")


def _msgspec_path(message: str) -> tuple[str, PathKey]:
    """Split a msgspec error into its text and the path it names (`$.a[0].b` -> ("a", 0, "b"))."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        return message, ()
    where = where.rstrip("`")
    parts: list[str | int] = []
    for m in _PATH_PART.finditer(where[1:] if where.startswith("$") else where):
        if m.group(1) is not None:
            parts.append(m.group(1))
        elif m.group(2) is not None:
            parts.append(int(m.group(2)))
        else:
            break
    return text, tuple(parts)


def _normalize_node(raw: dict[str, Any]) -> None:
    """Accept the older short forms: `args: [a, b]`, `sets: [a]`, `deps: a`, `each: a:b`."""
    for field, key in (("args", "expected"), ("sets", "arg")):
        items = raw.get(field)
        if isinstance(items, list):
            raw[field] = [{key: it} if isinstance(it, str) else it for it in items]
    for field in ("deps", "each"):
        if isinstance(raw.get(field), str):
            raw[field] = [raw[field]]
        elif raw.get(field) is None and field in raw:
            raw[field] = []


def _drop_nulls(raw: dict[str, Any]) -> dict[str, Any]:
    """`field:` with no value means the field's default, as in Spin Cycle's decoder."""
    return {k: v for k, v in raw.items() if v is not None}


class FileResult(msgspec.Struct, kw_only=True):
    filename: str
    sequences: dict[str, SequenceSpec]
    order: list[str]
    positions: Positions
    diagnostics: list[Diagnostic]


def _err(filename: str, message: str, line: int = 1, col: int = 1, **ctx: Any) -> Diagnostic:
    return Diagnostic(
        severity=Severity.ERROR,
        check=ctx.pop("check", "yaml"),
        message=message,
        file=filename,
        line=line,
        col=col,
        **ctx,
    )


def load_text(data: bytes | str, filename: str) -> FileResult:
    """Load one spec file's text. Never raises: every problem is a Diagnostic."""
    result = FileResult(filename=filename, sequences={}, order=[], positions={}, diagnostics=[])
    if isinstance(data, bytes):
        if len(data) > MAX_FILE_BYTES:
            result.diagnostics.append(
                _err(filename, f"spec file is {len(data)} bytes; the limit is {MAX_FILE_BYTES}")
            )
            return result
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            result.diagnostics.append(
                _err(filename, f"spec file is not UTF-8 (byte 0x{data[exc.start]:02x})", line, col)
            )
            return result
    else:
        text = data
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}: {problem}"
        result.diagnostics.append(_err(filename, f"YAML syntax: {problem}", line, col))
        return result
    except RecursionError:
        result.diagnostics.append(_err(filename, f"spec nests deeper than {MAX_DEPTH} levels"))
        return result
    except yaml.YAMLError as exc:
        result.diagnostics.append(_err(filename, f"YAML: {exc}"))
        return result
    if root is None:
        return result
    conv = _Converter(filename)
    try:
        raw = conv.convert(root, (), 0)
    except _TooBig as exc:
        result.diagnostics.append(_err(filename, str(exc), exc.line, exc.col))
        return result
    except RecursionError:
        result.diagnostics.append(_err(filename, f"spec nests deeper than {MAX_DEPTH} levels"))
        return result
    result.positions = conv.positions
    result.diagnostics.extend(conv.diags)
    _decode_file(raw, result)
    return result


def _pos(result: FileResult, path: PathKey) -> tuple[int, int]:
    while path:
        if path in result.positions:
            return result.positions[path]
        path = path[:-1]
    return (1, 1)


def _type_error(result: FileResult, base: PathKey, exc: msgspec.ValidationError) -> None:
    text, rel = _msgspec_path(str(exc))
    full = (*base, *rel)
    line, col = _pos(result, full)
    field = ".".join(str(p) for p in rel) or "value"
    result.diagnostics.append(
        _err(
            result.filename,
            f"{field}: {text.replace('`', '')}",
            line,
            col,
            check="type",
            **_seq_node(full),
        )
    )


def _decode_file(raw: Any, result: FileResult) -> None:
    fn = result.filename
    if not isinstance(raw, dict):
        result.diagnostics.append(_err(fn, "a spec file must be a mapping with a `sequences:` key"))
        return
    _unknown_fields(result, raw, "file", ())
    seqs = raw.get("sequences")
    if seqs is None:
        return
    if not isinstance(seqs, dict):
        line, col = _pos(result, ("sequences",))
        result.diagnostics.append(
            _err(fn, "`sequences` must be a mapping of name -> sequence", line, col)
        )
        return
    for name, body in seqs.items():
        base: PathKey = ("sequences", name)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            line, col = _pos(result, base)
            result.diagnostics.append(
                _err(fn, "a sequence must be a mapping", line, col, check="type", sequence=name)
            )
            continue
        _check_sequence_fields(result, body, base)
        nodes_raw = body.get("nodes")
        nodes: dict[str, NodeSpec | None] = {}
        if isinstance(nodes_raw, dict):
            for node_name, node_body in nodes_raw.items():
                nodes[node_name] = _decode_node(result, base, node_name, node_body)
        elif nodes_raw is not None:
            line, col = _pos(result, (*base, "nodes"))
            result.diagnostics.append(
                _err(
                    fn,
                    "`nodes` must be a mapping of name -> node",
                    line,
                    col,
                    check="type",
                    sequence=name,
                )
            )
        seq_body = {k: v for k, v in body.items() if k != "nodes" and v is not None}
        if isinstance(seq_body.get("args"), dict):
            seq_body["args"] = _drop_nulls(seq_body["args"])
        _acl_ops_words(result, seq_body, base)
        try:
            seq = msgspec.convert(seq_body, SequenceSpec, strict=False)
        except msgspec.ValidationError as exc:
            _type_error(result, base, exc)
            seq = SequenceSpec()
        result.sequences[name] = msgspec.structs.replace(seq, name=name, filename=fn, nodes=nodes)
        result.order.append(name)


def _acl_ops_words(result: FileResult, body: dict[str, Any], base: PathKey) -> None:
    """`ops: stop` or `ops: admin` (a word, not a list): an error on the field, which is dropped.

    Spin Cycle's ACL has `Ops []string`, so its decoder refuses a single word; we do too, with a
    message that says what to write, and drop the field so the rest of the sequence still loads.
    """
    acl = body.get("acl")
    if not isinstance(acl, list):
        return
    body["acl"] = acl = [dict(e) if isinstance(e, dict) else e for e in acl]
    for i, entry in enumerate(acl):
        if not isinstance(entry, dict) or not isinstance(entry.get("ops"), str):
            continue
        word = entry.pop("ops")
        if word.strip() == "admin":
            fix = "write `admin: true` (instead of ops) to grant every op"
        elif word.strip():
            fix = f"write `ops: [{word.strip()}]`"
        else:
            fix = "write `ops: [start, stop]`"
        line, col = _pos(result, (*base, "acl", i, "ops"))
        result.diagnostics.append(
            _err(
                result.filename,
                f"acl.{i}.ops: expected a list of ops (start, stop), got the word {word!r}; {fix}",
                line,
                col,
                check="acl-ops-not-list",
                **_seq_node((*base, "acl", i, "ops")),
            )
        )


def _decode_node(result: FileResult, base: PathKey, node_name: str, body: Any) -> NodeSpec | None:
    npath = (*base, "nodes", node_name)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        line, col = _pos(result, npath)
        result.diagnostics.append(
            _err(
                result.filename,
                "a node must be a mapping",
                line,
                col,
                check="type",
                **_seq_node(npath),
            )
        )
        return None
    _unknown_fields(result, body, "node", npath)
    for field, kind in (("args", "nodearg"), ("sets", "nodeset")):
        items = body.get(field)
        if isinstance(items, list):
            for i, it in enumerate(items):
                if isinstance(it, dict):
                    _unknown_fields(result, it, kind, (*npath, field, i))
    body = _drop_nulls(body)
    _normalize_node(body)
    body["name"] = node_name
    try:
        return msgspec.convert(body, NodeSpec, strict=False)
    except msgspec.ValidationError as exc:
        _type_error(result, npath, exc)
        return None


def _check_sequence_fields(result: FileResult, body: dict[str, Any], base: PathKey) -> None:
    _unknown_fields(result, body, "sequence", base)
    args = body.get("args")
    if isinstance(args, dict):
        _unknown_fields(result, args, "seqargs", (*base, "args"))
        for kind in ("required", "optional", "static"):
            items = args.get(kind)
            if isinstance(items, list):
                for i, it in enumerate(items):
                    if isinstance(it, dict):
                        _unknown_fields(result, it, "seqarg", (*base, "args", kind, i))
    acl = body.get("acl")
    if isinstance(acl, list):
        for i, it in enumerate(acl):
            if isinstance(it, dict):
                _unknown_fields(result, it, "acl", (*base, "acl", i))


def _unknown_fields(result: FileResult, raw: dict[str, Any], kind: str, path: PathKey) -> None:
    known = KNOWN_FIELDS[kind]
    for key in raw:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else f"; known fields: {', '.join(sorted(known))}"
        )
        line, col = _pos(result, (*path, key))
        result.diagnostics.append(
            Diagnostic(
                severity=Severity.WARNING,
                check="unknown-field",
                message=f"unknown field {key!r}{hint}",
                file=result.filename,
                line=line,
                col=col,
                **_seq_node((*path, key)),
            )
        )


def spec_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Every `*.yaml` / `*.yml` file under `directory`, recursively, in a stable order."""
    root = Path(directory)
    if root.is_file():
        return [root]
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".yaml", ".yml")]
    return sorted(found, key=lambda p: str(p))


def load_paths(paths: Iterable[str | os.PathLike[str]], display_root: str | None = None) -> SpecSet:
    """Load files into one namespace; a sequence defined twice is an error on the later file."""
    out = SpecSet()
    for p in paths:
        path = Path(p)
        name = str(path) if display_root is None else os.path.relpath(path, display_root)
        try:
            data = path.read_bytes()
        except OSError as exc:
            out.diagnostics.append(_err(name, f"cannot read spec file: {exc.strerror or exc}"))
            continue
        _merge(out, load_text(data, name))
    return out


def load_dir(directory: str | os.PathLike[str]) -> SpecSet:
    """Load every spec file under a directory (see :func:`spec_files`)."""
    root = Path(directory)
    if not root.exists():
        out = SpecSet()
        out.diagnostics.append(_err(str(root), "specs directory does not exist"))
        return out
    return load_paths(spec_files(root))


def _merge(out: SpecSet, res: FileResult) -> None:
    out.files.append(res.filename)
    out.positions[res.filename] = res.positions
    out.diagnostics.extend(res.diagnostics)
    for name in res.order:
        seq = res.sequences[name]
        if name in out.sequences:
            first = out.sequences[name].filename
            line, col = _pos(res, ("sequences", name))
            out.diagnostics.append(
                _err(
                    res.filename,
                    f"sequence {name!r} is already defined in {first}",
                    line,
                    col,
                    check="duplicate-sequence",
                    sequence=name,
                )
            )
            continue
        out.sequences[name] = seq
