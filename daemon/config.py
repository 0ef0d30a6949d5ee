"""spind's configuration: one YAML file, then `SPIND_*` environment variables, then CLI flags.

The file is `$SPIND_CONFIG` if set, else `$CONFIGURATION_DIRECTORY/spind.yaml` under systemd,
else `./spind.yaml` if present, else none (the defaults below). Under systemd the path defaults
move into the unit's directories (`$STATE_DIRECTORY`, `$RUNTIME_DIRECTORY`,
`$CONFIGURATION_DIRECTORY`). Durations are Go-style strings (`30s`, `720h`) or plain seconds.
Relative paths are relative to the daemon's current directory. Every problem raises
:class:`ConfigError` naming the key and where the bad value came from (file and line, an
environment variable, or a command-line flag). docs/configuration.md documents every key.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import os
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
import yaml

from daemon.duration import DurationError, parse_duration
from daemon.errors import SpindError

#: Largest config file read, in bytes.
MAX_FILE_BYTES = 1024 * 1024
#: Keys that only take effect at start: a SIGHUP reload warns about them and keeps the old value.
RESTART_KEYS = ("listen", "socket", "journal", "synchronous", "tls", "event_loop")
#: Keys given as durations (seconds).
DURATION_KEYS = frozenset({"shutdown_grace", "job_stop_grace", "retention", "prune_interval"})
#: Longest path a Unix socket address can hold (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_JOB_CLASS = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class ConfigError(SpindError):
    """The configuration is invalid."""

    def __init__(
        self, message: str, *, key: str = "", source: str = "", problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.key = key  # of the first problem
        self.source = source
        #: every problem found, each naming its source and key (the message joins them)
        self.problems = list(problems) or [message]


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`log:` -- how spind logs (to stderr; journald under systemd)."""

    format: Literal["text", "json"] = "text"
    level: LogLevel = "INFO"


class TLSConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`tls:` -- serve the TCP listener over HTTPS. Both files must be readable at start."""

    cert: NonEmpty
    key: NonEmpty


class TokenEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One bearer token: the user it identifies and the hex SHA-256 of the token."""

    user: NonEmpty
    sha256: Sha256Hex


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`auth:` -- bearer tokens for TCP clients and the roles of each user.

    Health and version always answer callers without a token (health then says only ok or
    not, and why); `/metrics` does too unless `metrics_public` is false.
    """

    tokens: list[TokenEntry] = []
    roles: dict[str, list[str]] = {}
    admin_roles: list[str] = []
    metrics_public: bool = True

    def user_for_token(self, token: str) -> str | None:
        """The user a bearer token identifies, or None (constant-time per entry)."""
        digest = hash_token(token)
        found = None
        for entry in self.tokens:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry.user
        return found


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything spind reads at start (and again on SIGHUP)."""

    listen: str = "127.0.0.1:32308"
    socket: str = "./var/spind.sock"
    journal: str = "./var/spind.db"
    specs: str = "./specs"
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    max_running_jobs: Positive = 256
    shutdown_grace: Seconds = 10.0
    job_stop_grace: Seconds = 5.0
    work_dir: str | None = None
    output_limit: Positive = 65536
    retention: PositiveSeconds | None = None
    prune_interval: PositiveSeconds = 600.0
    max_body_bytes: Positive = 1048576
    max_jobs_per_request: Positive = 100000
    max_each_elements: Positive = 100000
    max_sequence_depth: Positive = 32
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    tls: TLSConfig | None = None
    auth: AuthConfig | None = None
    jobs: dict[str, str] = {}

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """`listen` as (host, port), brackets removed from an IPv6 host; None if disabled."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def changed_keys(self, other: Config) -> list[str]:
        """Top-level keys whose values differ between the two configs."""
        return [f for f in self.__struct_fields__ if getattr(self, f) != getattr(other, f)]

    def reloadable_diff(self, other: Config) -> list[str]:
        """Changed keys that cannot change while running (a reload keeps their old values).
        `tls` needs a restart to be turned on or off; other certificate files are loaded live."""
        keys = [k for k in self.changed_keys(other) if k in RESTART_KEYS]
        if "tls" in keys and self.tls is not None and other.tls is not None:
            keys.remove("tls")
        return keys


def hash_token(token: str) -> str:
    """The hex SHA-256 of a bearer token, as `auth.tokens[].sha256` wants it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- where values come from -------------------------------------------------------------------

#: Environment variables and the key each sets. Every scalar top-level key has one.
ENV_VARS: dict[str, tuple[str, ...]] = {
    **{
        "SPIND_" + name.upper(): (name,)
        for name in Config.__struct_fields__
        if name not in ("log", "tls", "auth", "jobs")
    },
    "SPIND_LOG_FORMAT": ("log", "format"),
    "SPIND_LOG_LEVEL": ("log", "level"),
}
_OPTIONAL_KEYS = frozenset({"work_dir", "retention"})
_OVERRIDE_ALIASES = {"log_level": ("log", "level"), "log_format": ("log", "format")}

Path = tuple[str | int, ...]


class _Sources:
    """Where each key's value came from, to name it in an error; and the problems found so far
    (a check records every problem it finds, so that one run names them all)."""

    def __init__(self) -> None:
        self.by_path: dict[Path, str] = {}
        self._problems: list[tuple[str, str, str]] = []  # (message, key, source)

    def problem(self, path: Path, text: str) -> None:
        key = _dotted(path)
        where = self.get(path)
        self._problems.append((f"{where}: {key}: {text}", key, where))

    def raise_problems(self) -> None:
        """Raise one ConfigError holding every problem recorded, if any."""
        if self._problems:
            raise self.error()

    def error(self) -> ConfigError:
        """The ConfigError of the problems recorded (at least one)."""
        messages = [m for m, _, _ in self._problems]
        _, key, where = self._problems[0]
        if len(messages) == 1:
            text = messages[0]
        else:
            text = f"{len(messages)} problems:\n" + "\n".join(f"  {m}" for m in messages)
        return ConfigError(text, key=key, source=where, problems=messages)

    def set(self, path: Path, where: str) -> None:
        # A new source replaces the old one for the key and everything below it.
        for p in [p for p in self.by_path if p[: len(path)] == path]:
            del self.by_path[p]
        self.by_path[path] = where

    def get(self, path: Path) -> str:
        while path:
            if path in self.by_path:
                return self.by_path[path]
            path = path[:-1]
        return "the defaults"


def _first_dir(env: Mapping[str, str], name: str) -> str | None:
    """systemd passes several directories colon-separated; spind uses the first."""
    value = env.get(name, "")
    first = value.split(":", 1)[0]
    return first or None


def _locate(path: str | None, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(file, how it was chosen). A file named explicitly must exist; a default one may not."""
    if path:
        return path, "the command line"
    if env.get("SPIND_CONFIG"):
        return env["SPIND_CONFIG"], "$SPIND_CONFIG"
    conf_dir = _first_dir(env, "CONFIGURATION_DIRECTORY")
    candidate = os.path.join(conf_dir, "spind.yaml") if conf_dir else "spind.yaml"
    if os.path.exists(candidate):
        return candidate, "the default location"
    return None, ""


def default_config_path(env: Mapping[str, str]) -> str | None:
    """The file `load_config` would read without an explicit path (None: defaults only)."""
    return _locate(None, env)[0]


def _systemd_defaults(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for var, key, name in (
        ("RUNTIME_DIRECTORY", "socket", "spind.sock"),
        ("STATE_DIRECTORY", "journal", "spind.db"),
        ("CONFIGURATION_DIRECTORY", "specs", "specs"),
    ):
        d = _first_dir(env, var)
        if d:
            out[key] = os.path.join(d, name)
    return out


# --- reading the file -------------------------------------------------------------------------


def _read_file(path: str, how: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} (from {how}): not found; create it (an empty file means all "
            "defaults) or point SPIND_CONFIG elsewhere",
            source=path,
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file {path} (from {how}): cannot read it: {exc.strerror or exc}", source=path
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {path}: larger than {MAX_FILE_BYTES} bytes", source=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: the config file is not UTF-8", source=path) from None


def _parse_yaml(text: str, path: str) -> tuple[dict[str, Any], dict[Path, tuple[int, int]]]:
    """The document as plain Python, plus the line and column of every mapping key."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"{where}: YAML syntax: {exc.problem or exc}", source=path) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", source=path) from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1:1: the config file must be a mapping of keys (e.g. `listen: ...`), "
            f"not a {type(data).__name__}",
            source=path,
        )
    positions: dict[Path, tuple[int, int]] = {}
    assert node is not None
    _walk_positions(node, (), positions, path)
    return data, positions


def _walk_positions(
    node: yaml.Node, path: Path, out: dict[Path, tuple[int, int]], file: str
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            sub = (*path, key)
            mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if sub in out:
                first = out[sub][0]
                raise ConfigError(
                    f"{file}:{mark[0]}:{mark[1]}: {_dotted(sub)}: key appears twice "
                    f"(also on line {first})",
                    key=_dotted(sub),
                    source=file,
                )
            out[sub] = mark
            _walk_positions(value_node, sub, out, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _walk_positions(item, (*path, i), out, file)


def _dotted(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


# --- checking ---------------------------------------------------------------------------------


def _struct_of(tp: Any) -> tuple[type[msgspec.Struct] | None, bool]:
    """The Struct a field holds (directly, optionally or in a list) and whether in a list."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp, False
    if typing.get_origin(tp) is list:
        return _struct_of(typing.get_args(tp)[0])[0], True
    for arg in typing.get_args(tp):
        found, in_list = _struct_of(arg)
        if found is not None:
            return found, in_list
    return None, False


def _check_unknown(raw: Any, cls: type[msgspec.Struct], path: Path, sources: _Sources) -> None:
    """Name an unknown key with the closest known one (msgspec would only say "unknown")."""
    if not isinstance(raw, dict):
        return
    hints = typing.get_type_hints(cls, include_extras=True)
    known = list(cls.__struct_fields__)
    for key, value in raw.items():
        if key not in known:
            sub = (*path, str(key))
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else f"; known keys: {', '.join(known)}"
            _fail(sources, sub, f"unknown key{hint}")
            continue
        inner, in_list = _struct_of(hints[key])
        if inner is None:
            continue
        if in_list and isinstance(value, list):
            for i, item in enumerate(value):
                _check_unknown(item, inner, (*path, key, i), sources)
        else:
            _check_unknown(value, inner, (*path, key), sources)


def _fail(sources: _Sources, path: Path, problem: str) -> None:
    """Record a problem (raised with the others by `_Sources.raise_problems`)."""
    sources.problem(path, problem)


def _seconds(value: Any) -> Any:
    """A duration string or a number of seconds -> float seconds (anything else unchanged)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return parse_duration(value)
    return value


def _normalize(raw: dict[str, Any], sources: _Sources) -> None:
    for key in DURATION_KEYS & raw.keys():
        try:
            raw[key] = _seconds(raw[key])
        except DurationError as exc:
            _fail(sources, (key,), str(exc))
    log = raw.get("log")
    if isinstance(log, dict):
        if isinstance(log.get("level"), str):
            level = log["level"].upper()
            log["level"] = "WARNING" if level == "WARN" else level
        if isinstance(log.get("format"), str):
            log["format"] = log["format"].lower()
    if isinstance(raw.get("synchronous"), str):
        raw["synchronous"] = raw["synchronous"].upper()
    auth = raw.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("tokens"), list):
        for i, entry in enumerate(auth["tokens"]):
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                entry["sha256"] = digest = entry["sha256"].strip().lower()
                if not re.fullmatch(r"[0-9a-f]{64}", digest):
                    _fail(
                        sources,
                        ("auth", "tokens", i, "sha256"),
                        "expected the 64 hex digits of the token's SHA-256 "
                        "(print it with daemon.config.hash_token)",
                    )
    jobs = raw.get("jobs")
    if isinstance(jobs, dict):
        for name, target in jobs.items():
            if not isinstance(target, str) or not _JOB_CLASS.match(target):
                _fail(sources, ("jobs", str(name)), f'expected "module:Class", got {target!r}')


_MSGSPEC_AT = re.compile(r"^(?P<text>.*) - at `\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]|\[\.\.\.\]")


def _msgspec_path(where: str) -> Path:
    """`.auth.tokens[0].sha256` -> ("auth", "tokens", 0, "sha256"); stops at a dict key `[...]`."""
    out: list[str | int] = []
    for m in _PATH_PART.finditer(where):
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        else:
            break
    return tuple(out)


def _convert(raw: dict[str, Any], sources: _Sources) -> Config:
    try:
        return msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        m = _MSGSPEC_AT.match(str(exc))
        text, where = (m.group("text"), m.group("path")) if m else (str(exc), "")
        path = _msgspec_path(where)
        value = _lookup(raw, path)
        for word, plain in (("`array`", "a list"), ("`object`", "a mapping")):
            text = text.replace(word, plain)
        problem = text.replace("`", "")
        problem = problem[:1].lower() + problem[1:]
        if value is not _MISSING:
            problem += f" (got {value!r})"
            if isinstance(value, int | float) and "str" in text:
                problem += "; quote the value in YAML"
        _fail(sources, path, problem)
        raise sources.error() from None


_MISSING = object()


def _lookup(raw: Any, path: Path) -> Any:
    for p in path:
        if isinstance(raw, dict) and p in raw:
            raw = raw[p]
            continue
        if not (isinstance(raw, list) and isinstance(p, int) and p < len(raw)):
            return _MISSING
        raw = raw[p]
    return raw


def _check_values(cfg: Config, sources: _Sources) -> None:
    if cfg.listen:
        host, sep, port = cfg.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            _fail(sources, ("listen",), f'expected "HOST:PORT" or "" (got {cfg.listen!r})')
    if len(os.fsencode(cfg.socket)) > MAX_SOCKET_PATH:
        _fail(sources, ("socket",), f"a Unix socket path is limited to {MAX_SOCKET_PATH} bytes")
    for key in ("journal", "specs"):
        if not getattr(cfg, key):
            _fail(sources, (key,), "must not be empty")
    if cfg.tls is not None:
        for key in ("cert", "key"):
            file = getattr(cfg.tls, key)
            try:
                with open(file, "rb") as f:
                    f.read(1)
            except OSError as exc:
                _fail(sources, ("tls", key), f"cannot read {file}: {exc.strerror or exc}")
    if cfg.auth is not None:
        seen: dict[str, str] = {}
        for i, entry in enumerate(cfg.auth.tokens):
            if entry.sha256 in seen:
                _fail(
                    sources,
                    ("auth", "tokens", i, "sha256"),
                    f"the same token is already listed for user {seen[entry.sha256]!r}",
                )
            seen[entry.sha256] = entry.user


# --- loading ----------------------------------------------------------------------------------


def _set(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        sub = raw.get(part)
        if not isinstance(sub, dict):
            sub = raw[part] = {}
        raw = sub
    raw[path[-1]] = value


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Config, str | None]:
    """Read the config: defaults < file < `SPIND_*` environment < `overrides` (CLI flags).

    Returns the config and the file read (None: no file). Raises ConfigError.
    """
    env = os.environ if env is None else env
    sources = _Sources()
    raw: dict[str, Any] = {}
    for key, value in _systemd_defaults(env).items():
        raw[key] = value
        sources.set((key,), "the systemd directory defaults")
    file, how = _locate(path, env)
    if file is not None:
        data, positions = _parse_yaml(_read_file(file, how), file)
        for p, (line, col) in positions.items():
            sources.by_path[p] = f"{file}:{line}:{col}"
        raw.update(data)
    for var, key_path in ENV_VARS.items():
        if var in env:
            text = env[var]
            _set(raw, key_path, None if text == "" and key_path[0] in _OPTIONAL_KEYS else text)
            sources.set(key_path, f"environment variable {var}")
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        key_path = _OVERRIDE_ALIASES.get(name) or tuple(name.split("."))
        _set(raw, key_path, value)
        sources.set(key_path, f"command-line option for {name}")
    # every unknown key and malformed value at once; then the types (msgspec stops at the
    # first wrong one); then every value the types cannot check
    _check_unknown(raw, Config, (), sources)
    _normalize(raw, sources)
    sources.raise_problems()
    cfg = _convert(raw, sources)
    _check_values(cfg, sources)
    sources.raise_problems()
    return cfg, file
