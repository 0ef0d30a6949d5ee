"""The `spind` command: `serve`, `lint`, `plan`, `version`, and the client commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any

from daemon import __version__


def _config_jobs(config_path: str | None) -> tuple[str, dict[str, str]] | int:
    """(specs dir, jobs mapping) from the config, for the offline commands; an int on error."""
    from daemon.config import ConfigError, load_config

    try:
        cfg, _file = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"spind: config: {problem}", file=sys.stderr)
        return 2
    return cfg.specs, dict(cfg.jobs)


def cmd_serve(args: argparse.Namespace) -> int:
    from daemon.app import serve

    overrides: dict[str, Any] = {
        "specs": args.specs,
        "journal": args.journal,
        "listen": args.listen,
        "socket": args.socket,
    }
    return serve(args.config, overrides)


def cmd_lint(args: argparse.Namespace) -> int:
    from daemon.diagnostics import has_errors
    from daemon.jobs.registry import JobFactory
    from daemon.lint import lint
    from daemon.specload import load_dir

    got = _config_jobs(args.config)
    if isinstance(got, int):
        return got
    specs_dir, jobs = got
    directory = args.dir or os.environ.get("SPIND_SPECS") or specs_dir
    specs = load_dir(directory)
    diags = lint(specs, JobFactory(jobs))
    for d in diags:
        print(d.format())
    errors = sum(1 for d in diags if d.is_error)
    warnings = len(diags) - errors
    print(
        f"{directory}: {len(specs.sequences)} sequences in {len(specs.files)} files, "
        f"{errors} errors, {warnings} warnings",
        file=sys.stderr,
    )
    return 1 if has_errors(diags) else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from daemon.plan import plan_command

    got = _config_jobs(args.config)
    if isinstance(got, int):
        return got
    specs_dir, jobs = got
    directory = args.specs or os.environ.get("SPIND_SPECS") or specs_dir
    return asyncio.run(plan_command(directory, jobs, args.type, args.args, args.json))


def _journal_path(args: argparse.Namespace) -> str | int:
    from daemon.config import ConfigError, load_config

    if args.journal:
        return str(args.journal)
    try:
        cfg, _file = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"spind: config: {problem}", file=sys.stderr)
        return 2
    return cfg.journal


def _on_journal(args: argparse.Namespace, command: str, action: Callable[[str], str]) -> int:
    """Run `action` on the journal (`--journal`, else the config's) and print what it returns;
    a failure is printed as `spind COMMAND: problem` with exit status 1."""
    from daemon.backup import BackupError

    journal = _journal_path(args)
    if isinstance(journal, int):
        return journal
    try:
        done = action(journal)
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"spind {command}: {exc}", file=sys.stderr)
        return 1
    print(done)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from daemon.backup import backup

    def run(journal: str) -> str:
        size = backup(journal, args.dest)
        return f"backed up {journal} to {args.dest} ({size} bytes)"

    return _on_journal(args, "backup", run)


def cmd_restore(args: argparse.Namespace) -> int:
    from daemon.backup import restore

    def run(journal: str) -> str:
        restore(args.backup, journal)
        return f"restored {args.backup} to {journal}; start the daemon to resume its chains"

    return _on_journal(args, "restore", run)


def cmd_reload(args: argparse.Namespace) -> int:
    from daemon.client import ApiError, ConnectError
    from daemon.reload import reload

    journal = _journal_path(args)
    if isinstance(journal, int):
        return journal
    try:
        return asyncio.run(reload(args, journal))
    except (ApiError, ConnectError, OSError) as exc:
        print(f"spind reload: {exc}", file=sys.stderr)
        return 2


def cmd_version(args: argparse.Namespace) -> int:
    print(f"spind {__version__}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spind", description="spind: a job-chain daemon")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("--config", help="config file (default: $SPIND_CONFIG, ./spind.yaml)")
    s.add_argument("--specs", help="specs directory ($SPIND_SPECS)")
    s.add_argument("--journal", help="journal file, SQLite ($SPIND_JOURNAL)")
    s.add_argument("--listen", help="HOST:PORT for HTTP, '' to disable ($SPIND_LISTEN)")
    s.add_argument("--socket", help="Unix socket path, '' to disable ($SPIND_SOCKET)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("lint", help="check the specs; exit 1 on errors")
    s.add_argument("dir", nargs="?", help="specs directory (default: the config's specs)")
    s.add_argument("--config", help="config file (for its `jobs:` mapping)")
    s.set_defaults(func=cmd_lint)

    s = sub.add_parser("plan", help="print the chain a request would build; runs nothing")
    s.add_argument("--config", help="config file")
    s.add_argument("--specs", help="specs directory")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("type", help="request type")
    s.add_argument("args", nargs="*", metavar="key=value", help="request args")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("backup", help="copy the live journal (SQLite online backup)")
    s.add_argument("dest", help="backup file to create")
    s.add_argument("--journal", help="journal file (default: from the config)")
    s.add_argument("--config", help="config file")
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser("restore", help="replace a stopped daemon's journal with a backup")
    s.add_argument("backup", help="backup file")
    s.add_argument("--journal", help="journal file (default: from the config)")
    s.add_argument("--config", help="config file")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("reload", help="reload config and specs (SIGHUP) and wait until it is done")
    s.add_argument("--pid", type=int, help="daemon pid (default: from <journal>.lock)")
    s.add_argument("--journal", help="journal file (default: from the config)")
    s.add_argument("--config", help="config file")
    s.add_argument("--socket", help="daemon socket (default $SPIND_SOCKET)")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    s.set_defaults(func=cmd_reload)

    s = sub.add_parser("version", help="print the version")
    s.set_defaults(func=cmd_version)

    try:
        from daemon.cli_client import register
    except ImportError:  # pragma: no cover - the client is part of the package
        pass
    else:
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.func is not cmd_serve:
        # the offline and client commands print their own results; only problems are logged
        from daemon.logsetup import setup_logging

        setup_logging("WARNING", "text")
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
