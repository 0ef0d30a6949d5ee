"""daemon.config: file < environment < CLI, systemd defaults, and an error naming key and file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from daemon.config import (
    ENV_VARS,
    RESTART_KEYS,
    AuthConfig,
    Config,
    ConfigError,
    TLSConfig,
    TokenEntry,
    default_config_path,
    hash_token,
    load_config,
)
from daemon.errors import SpindError

TOKEN_HASH = hashlib.sha256(b"s3cret").hexdigest()


def write(tmp_path: Path, text: str, name: str = "spind.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_no_file_gives_the_documented_defaults() -> None:
    cfg, used = load_config(env={})
    assert used is None
    assert cfg == Config()
    assert (cfg.listen, cfg.socket, cfg.journal, cfg.specs) == (
        "127.0.0.1:32308",
        "./var/spind.sock",
        "./var/spind.db",
        "./specs",
    )
    assert (cfg.synchronous, cfg.max_running_jobs, cfg.shutdown_grace) == ("NORMAL", 256, 10.0)
    assert (cfg.log.format, cfg.log.level, cfg.tls, cfg.auth, cfg.jobs) == (
        "text",
        "INFO",
        None,
        None,
        {},
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: 0.0.0.0:8080\n", {"listen": "0.0.0.0:8080"}),
        ('listen: "[::1]:8080"\n', {"listen": "[::1]:8080"}),
        ('listen: ""\n', {"listen": ""}),
        ('socket: ""\n', {"socket": ""}),
        ("journal: /srv/spind.db\n", {"journal": "/srv/spind.db"}),
        ("synchronous: full\n", {"synchronous": "FULL"}),
        ("max_running_jobs: 4\n", {"max_running_jobs": 4}),
        ("shutdown_grace: 30s\n", {"shutdown_grace": 30.0}),
        ("shutdown_grace: 1m30s\n", {"shutdown_grace": 90.0}),
        ("shutdown_grace: 0\n", {"shutdown_grace": 0.0}),
        ("job_stop_grace: 2.5\n", {"job_stop_grace": 2.5}),
        ("job_stop_grace: 500ms\n", {"job_stop_grace": 0.5}),
        ("retention: 720h\n", {"retention": 720 * 3600.0}),
        ("retention: null\n", {"retention": None}),
        ("prune_interval: 1m\n", {"prune_interval": 60.0}),
        ("work_dir: /tmp\n", {"work_dir": "/tmp"}),
        ("output_limit: 1024\n", {"output_limit": 1024}),
        ("max_body_bytes: 10\n", {"max_body_bytes": 10}),
        ("max_jobs_per_request: 7\n", {"max_jobs_per_request": 7}),
        ("max_each_elements: 8\n", {"max_each_elements": 8}),
        ("max_sequence_depth: 9\n", {"max_sequence_depth": 9}),
        ("jobs:\n  deploy: mypkg.jobs:Deploy\n", {"jobs": {"deploy": "mypkg.jobs:Deploy"}}),
        ("", {}),
        ("# only a comment\n", {}),
    ],
)
def test_file_values(tmp_path: Path, text: str, expected: dict[str, Any]) -> None:
    cfg, used = load_config(write(tmp_path, text), env={})
    assert used == str(tmp_path / "spind.yaml")
    for key, value in expected.items():
        assert getattr(cfg, key) == value
    untouched = {k for k in Config.__struct_fields__ if k not in expected}
    for key in untouched:
        assert getattr(cfg, key) == getattr(Config(), key)


@pytest.mark.parametrize(
    ("text", "level", "fmt"),
    [
        ("log:\n  level: debug\n", "DEBUG", "text"),
        ("log:\n  level: warn\n", "WARNING", "text"),
        ("log:\n  format: JSON\n", "INFO", "json"),
        ("log: {format: json, level: ERROR}\n", "ERROR", "json"),
    ],
)
def test_log_section(tmp_path: Path, text: str, level: str, fmt: str) -> None:
    cfg, _ = load_config(write(tmp_path, text), env={})
    assert (cfg.log.level, cfg.log.format) == (level, fmt)


def test_tls_and_auth(tmp_path: Path) -> None:
    cert = write(tmp_path, "CERT", "cert.pem")
    key = write(tmp_path, "KEY", "key.pem")
    text = f"""
tls:
  cert: {cert}
  key: {key}
auth:
  tokens:
    - user: alice
      sha256: {TOKEN_HASH.upper()}
    - user: bob
      sha256: {hash_token("other")}
  roles:
    alice: [ops, admin]
  admin_roles: [admin]
"""
    cfg, _ = load_config(write(tmp_path, text), env={})
    assert cfg.tls == TLSConfig(cert=cert, key=key)
    assert cfg.auth == AuthConfig(
        tokens=[
            TokenEntry(user="alice", sha256=TOKEN_HASH),
            TokenEntry(user="bob", sha256=hash_token("other")),
        ],
        roles={"alice": ["ops", "admin"]},
        admin_roles=["admin"],
    )
    assert cfg.auth.user_for_token("s3cret") == "alice"
    assert cfg.auth.user_for_token("other") == "bob"
    assert cfg.auth.user_for_token("wrong") is None


def test_hash_token_is_hex_sha256() -> None:
    assert hash_token("s3cret") == TOKEN_HASH
    assert len(hash_token("")) == 64


# Each bad config: the text, then pieces the message must contain (key, file:line, the problem).
BAD_FILES = [
    ("listn: 1\n", ["listn", ":1:1", "did you mean `listen`"]),
    ("log:\n  levl: x\n", ["log.levl", ":2:3", "did you mean `level`"]),
    ("tls:\n  cert: a\n  key: b\n  chain: c\n", ["tls.chain", ":4:3", "unknown key"]),
    (
        "auth:\n  tokens:\n    - user: a\n      sha256: " + "0" * 64 + "\n      role: x\n",
        ["auth.tokens[0].role", ":5:7", "unknown key"],
    ),
    ("zzz: 1\n", ["zzz", "known keys: listen"]),
    ("max_running_jobs: 0\n", ["max_running_jobs", ":1:1", ">= 1", "got 0"]),
    ("max_running_jobs: -3\n", ["max_running_jobs", ">= 1"]),
    ("max_running_jobs: many\n", ["max_running_jobs", "expected int", "'many'"]),
    ("max_running_jobs: true\n", ["max_running_jobs", "got bool"]),
    ("output_limit: 0\n", ["output_limit", ">= 1"]),
    ("max_body_bytes: 0\n", ["max_body_bytes", ">= 1"]),
    ("max_jobs_per_request: 0\n", ["max_jobs_per_request"]),
    ("max_each_elements: 0\n", ["max_each_elements"]),
    ("max_sequence_depth: 0\n", ["max_sequence_depth"]),
    ("shutdown_grace: 3x\n", ["shutdown_grace", "invalid duration"]),
    ("shutdown_grace: -5s\n", ["shutdown_grace", "negative"]),
    ("shutdown_grace: -5\n", ["shutdown_grace", ">= 0"]),
    ("retention: 0s\n", ["retention", "> 0"]),
    ("prune_interval: 0\n", ["prune_interval", "> 0"]),
    ("shutdown_grace: [1]\n", ["shutdown_grace", "got [1]"]),
    ("synchronous: EXTRA\n", ["synchronous", "EXTRA"]),
    ("synchronous: off\n", ["synchronous", "got False"]),  # YAML 1.1 reads off as false
    ("log:\n  level: LOUD\n", ["log.level", ":2:3", "LOUD"]),
    ("log:\n  format: xml\n", ["log.format", "xml"]),
    ("log: verbose\n", ["log", "expected a mapping"]),
    ("listen: 1:30\n", ["listen", "got 90", "quote the value"]),  # YAML 1.1 sexagesimal
    ("listen: localhost\n", ["listen", "HOST:PORT"]),
    ("listen: ':8080'\n", ["listen", "HOST:PORT"]),
    ("listen: host:99999\n", ["listen", "HOST:PORT"]),
    ("socket: /" + "s" * 120 + "\n", ["socket", "107 bytes"]),
    ('journal: ""\n', ["journal", "must not be empty"]),
    ('specs: ""\n', ["specs", "must not be empty"]),
    ("tls:\n  cert: /nonexistent/c.pem\n  key: /nonexistent/k.pem\n", ["tls.cert", ":2:3"]),
    ("tls:\n  cert: /etc/hostname\n", ["tls", "missing required field key"]),
    ("auth:\n  tokens:\n    - user: a\n      sha256: abc\n", ["auth.tokens[0].sha256", ":4:7"]),
    ("auth:\n  tokens:\n    - sha256: " + "a" * 64 + "\n", ["auth.tokens[0]", "user"]),
    (
        "auth:\n  tokens:\n"
        f"    - {{user: a, sha256: {TOKEN_HASH}}}\n    - {{user: b, sha256: {TOKEN_HASH}}}\n",
        ["auth.tokens[1].sha256", "already listed for user 'a'"],
    ),
    ("auth:\n  roles:\n    alice: admin\n", ["auth.roles", "expected a list"]),
    ("jobs:\n  deploy: nocolon\n", ["jobs.deploy", ":2:3", "module:Class"]),
    ("jobs:\n  deploy: 5\n", ["jobs.deploy", "module:Class"]),
    ("jobs: [a]\n", ["jobs", "expected a mapping"]),
    ("[1, 2]\n", ["must be a mapping", "list"]),
    ("just text\n", ["must be a mapping", "str"]),
    ("listen: [\n", ["YAML syntax", ":2:1"]),
    ("listen: a:1\nlisten: b:2\n", ["listen", ":2:1", "twice", "line 1"]),
    ("&a [*a]\n", ["must be a mapping"]),
]


@pytest.mark.parametrize(("text", "pieces"), BAD_FILES)
def test_bad_file_raises_config_error_naming_key_and_file(
    tmp_path: Path, text: str, pieces: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert path in message
    for piece in pieces:
        assert piece in message, message
    assert isinstance(info.value, SpindError)


SEVERAL_PROBLEMS = [
    # (file, the problems' keys and lines in order): every problem of a stage at once
    (
        "listn: a:1\nshutdown_grace: 3x\njobs:\n  deploy: nocolon\nlog:\n  levl: x\n",
        [
            ("listn", ":1:1"),
            ("log.levl", ":6:3"),
            ("shutdown_grace", ":2:1"),
            ("jobs.deploy", ":4:3"),
        ],
    ),
    (
        'listen: localhost\njournal: ""\nspecs: ""\n',
        [("listen", ":1:1"), ("journal", ":2:1"), ("specs", ":3:1")],
    ),
    # a wrong type stops the types' stage (msgspec names the first one): one problem
    ("max_running_jobs: many\noutput_limit: none\n", [("max_running_jobs", ":1:1")]),
]


@pytest.mark.parametrize(("text", "found"), SEVERAL_PROBLEMS)
def test_every_problem_of_a_stage_is_reported(
    tmp_path: Path, text: str, found: list[tuple[str, str]]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = info.value.problems
    assert len(problems) == len(found), problems
    for problem, (key, line) in zip(problems, found, strict=True):
        assert problem.startswith(f"{path}{line}: {key}: "), problem
    assert info.value.key == found[0][0]
    message = str(info.value)
    assert all(p in message for p in problems)
    if len(found) > 1:
        assert message.startswith(f"{len(found)} problems:")


def test_tls_file_must_be_readable(tmp_path: Path) -> None:
    key = write(tmp_path, "KEY", "key.pem")
    cert = tmp_path / "certdir"
    cert.mkdir()
    path = write(tmp_path, f"tls:\n  cert: {cert}\n  key: {key}\n")
    with pytest.raises(ConfigError, match=r"tls\.cert: cannot read .*certdir") as info:
        load_config(path, env={})
    assert info.value.key == "tls.cert"
    assert info.value.source.startswith(path + ":2:")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"listen: \xff\xfe\n", r"spind\.yaml:1: the config file is not UTF-8"),
        (b"a: " + b"x" * (1024 * 1024 + 10), "larger than"),
    ],
)
def test_unreadable_contents(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "spind.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_config(str(path), env={})


def test_missing_or_unreadable_config_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"nope\.yaml \(from the command line\): not found"):
        load_config(missing, env={})
    with pytest.raises(ConfigError, match=r"nope\.yaml \(from \$SPIND_CONFIG\): not found"):
        load_config(env={"SPIND_CONFIG": missing})
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(str(tmp_path), env={})  # a directory


# --- precedence --------------------------------------------------------------------------------


def test_environment_overrides_file_and_cli_overrides_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:1\nmax_running_jobs: 5\nlog: {level: ERROR}\n")
    env = {"SPIND_CONFIG": path, "SPIND_MAX_RUNNING_JOBS": "6", "SPIND_LOG_LEVEL": "debug"}
    cfg, used = load_config(env=env)
    assert used == path
    assert (cfg.listen, cfg.max_running_jobs, cfg.log.level) == ("127.0.0.1:1", 6, "DEBUG")
    cfg, _ = load_config(
        env=env, overrides={"max_running_jobs": 7, "listen": None, "log_level": "WARNING"}
    )
    assert (cfg.listen, cfg.max_running_jobs, cfg.log.level) == ("127.0.0.1:1", 7, "WARNING")
    cfg, _ = load_config(env=env, overrides={"log.format": "json"})
    assert cfg.log.format == "json"


def test_explicit_path_wins_over_spind_config(tmp_path: Path) -> None:
    a = write(tmp_path, "max_running_jobs: 1\n", "a.yaml")
    b = write(tmp_path, "max_running_jobs: 2\n", "b.yaml")
    cfg, used = load_config(b, env={"SPIND_CONFIG": a})
    assert (cfg.max_running_jobs, used) == (2, b)


@pytest.mark.parametrize(
    ("var", "value", "key", "expected"),
    [
        ("SPIND_LISTEN", "0.0.0.0:9", "listen", "0.0.0.0:9"),
        ("SPIND_LISTEN", "", "listen", ""),
        ("SPIND_SOCKET", "/run/x.sock", "socket", "/run/x.sock"),
        ("SPIND_SOCKET", "", "socket", ""),
        ("SPIND_JOURNAL", "/var/lib/x.db", "journal", "/var/lib/x.db"),
        ("SPIND_SPECS", "/etc/specs", "specs", "/etc/specs"),
        ("SPIND_SYNCHRONOUS", "full", "synchronous", "FULL"),
        ("SPIND_MAX_RUNNING_JOBS", "12", "max_running_jobs", 12),
        ("SPIND_WORK_DIR", "/srv", "work_dir", "/srv"),
        ("SPIND_WORK_DIR", "", "work_dir", None),
        ("SPIND_SHUTDOWN_GRACE", "45s", "shutdown_grace", 45.0),
        ("SPIND_SHUTDOWN_GRACE", "3", "shutdown_grace", 3.0),
        ("SPIND_RETENTION", "24h", "retention", 86400.0),
        ("SPIND_RETENTION", "", "retention", None),
        ("SPIND_OUTPUT_LIMIT", "100", "output_limit", 100),
    ],
)
def test_environment_variables(var: str, value: str, key: str, expected: object) -> None:
    cfg, _ = load_config(env={var: value})
    assert getattr(cfg, key) == expected


@pytest.mark.parametrize(
    ("var", "value", "fmt", "level"),
    [("SPIND_LOG_FORMAT", "json", "json", "INFO"), ("SPIND_LOG_LEVEL", "trace", "text", "TRACE")],
)
def test_log_environment_variables(var: str, value: str, fmt: str, level: str) -> None:
    cfg, _ = load_config(env={var: value})
    assert (cfg.log.format, cfg.log.level) == (fmt, level)


def test_every_documented_environment_variable_exists() -> None:
    documented = {
        "SPIND_LISTEN",
        "SPIND_SOCKET",
        "SPIND_JOURNAL",
        "SPIND_SPECS",
        "SPIND_SYNCHRONOUS",
        "SPIND_MAX_RUNNING_JOBS",
        "SPIND_LOG_FORMAT",
        "SPIND_LOG_LEVEL",
        "SPIND_WORK_DIR",
    }
    assert documented <= ENV_VARS.keys()


@pytest.mark.parametrize(
    ("env", "overrides", "pieces"),
    [
        ({"SPIND_MAX_RUNNING_JOBS": "lots"}, {}, ["SPIND_MAX_RUNNING_JOBS", "max_running_jobs"]),
        ({"SPIND_MAX_RUNNING_JOBS": "0"}, {}, ["SPIND_MAX_RUNNING_JOBS", ">= 1"]),
        ({"SPIND_LOG_LEVEL": "chatty"}, {}, ["SPIND_LOG_LEVEL", "log.level", "CHATTY"]),
        ({"SPIND_SHUTDOWN_GRACE": "soon"}, {}, ["SPIND_SHUTDOWN_GRACE", "invalid duration"]),
        ({"SPIND_LISTEN": "nohost"}, {}, ["SPIND_LISTEN", "HOST:PORT"]),
        ({}, {"max_runing_jobs": 3}, ["max_runing_jobs", "did you mean `max_running_jobs`"]),
        ({}, {"max_running_jobs": 0}, ["command-line", "max_running_jobs", ">= 1"]),
    ],
)
def test_bad_environment_or_flag_names_its_source(
    env: dict[str, str], overrides: dict[str, Any], pieces: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env, overrides=overrides)
    for piece in pieces:
        assert piece in str(info.value), str(info.value)


def test_environment_fixes_a_bad_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "max_running_jobs: 0\n")
    cfg, _ = load_config(path, env={"SPIND_MAX_RUNNING_JOBS": "3"})
    assert cfg.max_running_jobs == 3


# --- locating the file and systemd defaults ------------------------------------------------------

SYSTEMD_ENV = {
    "STATE_DIRECTORY": "/var/lib/spind",
    "RUNTIME_DIRECTORY": "/run/spind",
    "CONFIGURATION_DIRECTORY": "/etc/spind",
}


def test_systemd_directories_move_the_path_defaults() -> None:
    cfg, used = load_config(env=SYSTEMD_ENV)
    assert used is None  # /etc/spind/spind.yaml is absent here
    assert (cfg.socket, cfg.journal, cfg.specs) == (
        "/run/spind/spind.sock",
        "/var/lib/spind/spind.db",
        "/etc/spind/specs",
    )


def test_systemd_directory_lists_use_the_first_entry() -> None:
    cfg, _ = load_config(env={"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"})
    assert cfg.journal == "/var/lib/a/spind.db"


def test_file_and_environment_win_over_systemd_defaults(tmp_path: Path) -> None:
    write(tmp_path, "journal: /srv/j.db\n")
    env = {**SYSTEMD_ENV, "CONFIGURATION_DIRECTORY": str(tmp_path), "SPIND_SOCKET": "/tmp/s"}
    cfg, used = load_config(env=env)
    assert used == str(tmp_path / "spind.yaml")
    assert (cfg.journal, cfg.socket, cfg.specs) == ("/srv/j.db", "/tmp/s", f"{tmp_path}/specs")


def test_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_config_path({}) is None
    (tmp_path / "spind.yaml").write_text("max_running_jobs: 3\n")
    assert default_config_path({}) == "spind.yaml"
    cfg, used = load_config(env={})
    assert (cfg.max_running_jobs, used) == (3, "spind.yaml")
    # Under systemd the checkout file is not considered, only the configuration directory.
    conf = tmp_path / "etc"
    conf.mkdir()
    assert default_config_path({"CONFIGURATION_DIRECTORY": str(conf)}) is None
    (conf / "spind.yaml").write_text("")
    assert default_config_path({"CONFIGURATION_DIRECTORY": str(conf)}) == f"{conf}/spind.yaml"
    assert default_config_path({"SPIND_CONFIG": "/x.yaml"}) == "/x.yaml"


def test_relative_paths_are_kept_relative_to_the_current_directory(tmp_path: Path) -> None:
    cfg, _ = load_config(write(tmp_path, "journal: data/j.db\n"), env={})
    assert cfg.journal == "data/j.db"
    assert not os.path.isabs(cfg.journal)


# --- reload ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "restart_needed"),
    [
        ({}, []),
        ({"max_running_jobs": 3, "specs": "/x", "retention": 60.0}, []),
        ({"listen": "127.0.0.1:1"}, ["listen"]),
        (
            {"socket": "/s", "journal": "/j", "synchronous": "FULL"},
            ["socket", "journal", "synchronous"],
        ),
        ({"tls": TLSConfig(cert="/c", key="/k"), "jobs": {"a": "m:C"}}, ["tls"]),
        ({"auth": AuthConfig(admin_roles=["x"])}, []),
    ],
)
def test_reloadable_diff(changes: dict[str, Any], restart_needed: list[str]) -> None:
    old = Config()
    new = Config(**changes)
    assert old.reloadable_diff(new) == restart_needed
    assert sorted(old.changed_keys(new)) == sorted(changes)
    assert set(restart_needed) <= set(RESTART_KEYS)


@pytest.mark.parametrize(
    ("old_tls", "new_tls", "restart_needed"),
    [
        (None, TLSConfig(cert="/c", key="/k"), ["tls"]),  # turned on
        (TLSConfig(cert="/c", key="/k"), None, ["tls"]),  # turned off
        (TLSConfig(cert="/c", key="/k"), TLSConfig(cert="/c2", key="/k2"), []),  # loaded live
    ],
)
def test_tls_needs_a_restart_only_to_turn_on_or_off(
    old_tls: TLSConfig | None, new_tls: TLSConfig | None, restart_needed: list[str]
) -> None:
    assert Config(tls=old_tls).reloadable_diff(Config(tls=new_tls)) == restart_needed


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:32308", ("127.0.0.1", 32308)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("", None),
    ],
)
def test_listen_address(listen: str, address: tuple[str, int] | None) -> None:
    assert Config(listen=listen).listen_address == address


def test_example_config_loads_and_documents_every_key() -> None:
    root = Path(__file__).resolve().parents[2]
    example = root / "systemd" / "spind.yaml.example"
    cfg, _ = load_config(str(example), env={})
    assert cfg.listen  # the example sets real values, not an empty file
    text = example.read_text()
    doc = (root / "docs" / "configuration.md").read_text()
    for key in Config.__struct_fields__:
        assert f"{key}:" in text, f"{key} missing from spind.yaml.example"
        assert f"`{key}`" in doc, f"{key} missing from docs/configuration.md"
    for var in ENV_VARS:
        assert var in doc, f"{var} missing from docs/configuration.md"
