"""Wiring and lifecycle of `spind serve`: start in order, run, reload on SIGHUP, stop in order.

Start: logging -> journal (refused if foreign or too new) -> boot row -> job processes and
temporary files left by a crashed boot cleaned up -> specs loaded and linted (refused with
errors) -> interrupted chains resumed -> listeners accept -> READY=1.
Stop (SIGTERM/SIGINT): STOPPING=1 -> refuse API writes (503) -> running jobs get the grace
period, then are interrupted and their chains SUSPENDED -> listeners closed -> journal closed.
A signal handler only sets an event; everything else runs in the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import ssl
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from loguru import logger

from daemon import __version__, gcpolicy, leftovers
from daemon.api.app import make_app, start_sites
from daemon.api.auth import AuthSettings
from daemon.backup import JournalLock
from daemon.builder import Limits
from daemon.config import Config, ConfigError, load_config
from daemon.events import EventBus
from daemon.jobs.registry import JobFactory
from daemon.journal.errors import JournalError
from daemon.journal.store import Journal
from daemon.logsetup import set_level, setup_logging
from daemon.metrics import Metrics, loop_lag_monitor
from daemon.runtime import Runtime
from daemon.runtime_env import RuntimeEnv, Settings, Slots
from daemon.sdnotify import Notifier, watchdog_loop
from daemon.service import Service
from daemon.specstore import SpecStore

#: exit codes: 0 clean stop, 1 failure while running, 2 refused to start
EXIT_OK, EXIT_FAIL, EXIT_REFUSED = 0, 1, 2


def auth_settings(cfg: Config) -> AuthSettings:
    if cfg.auth is None:
        return AuthSettings(enabled=False)
    return AuthSettings(
        enabled=True,
        tokens=list(cfg.auth.tokens),  # type: ignore[arg-type]
        roles={k: list(v) for k, v in cfg.auth.roles.items()},
        admin_roles=list(cfg.auth.admin_roles),
        metrics_public=cfg.auth.metrics_public,
    )


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssl(cfg: Config) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls.cert, cfg.tls.key)
    return ctx


class Daemon:
    def __init__(self, cfg: Config, config_file: str | None, overrides: dict[str, Any]) -> None:
        self.cfg = cfg
        self.config_file = config_file
        self.overrides = overrides
        self.notifier = Notifier(unset_env=True)
        self.metrics = Metrics()
        self.stop_event = asyncio.Event()
        self.signals = 0
        self.reloads: asyncio.Queue[None] = asyncio.Queue()
        self.bg: set[asyncio.Task[Any]] = set()

    # ---- entry

    async def run(self) -> int:
        cfg = self.cfg
        if cfg.auth is None and cfg.listen:
            host = cfg.listen_address[0] if cfg.listen_address else ""
            if not _loopback(host):
                logger.error(
                    "refusing to listen on {} without an `auth` section in the config: "
                    "without auth spind listens only on loopback and the Unix socket",
                    cfg.listen,
                )
                return EXIT_REFUSED
        self.lock = JournalLock(cfg.journal)
        try:
            locked = self.lock.acquire()
        except OSError as exc:
            logger.error("journal {}: cannot create its lock file: {}", cfg.journal, exc)
            return EXIT_REFUSED
        if not locked:
            logger.error("journal {}: another spind daemon is running on it", cfg.journal)
            return EXIT_REFUSED
        try:
            return await self._run_locked()
        finally:
            self.lock.release()

    async def _run_locked(self) -> int:
        cfg = self.cfg
        try:
            self.journal = await Journal.open(cfg.journal, synchronous=cfg.synchronous)
        except JournalError as exc:
            logger.error("journal {}: {}", cfg.journal, exc.message)
            return EXIT_REFUSED
        except OSError as exc:
            logger.error("journal {}: {}", cfg.journal, exc)
            return EXIT_REFUSED
        try:
            return await self._run_open()
        finally:
            await asyncio.shield(self.journal.close())

    async def _run_open(self) -> int:
        cfg = self.cfg
        boot = await self.journal.start_boot(os.getpid(), __version__)
        self.journal.writer.on_commit = self.metrics.journal_committed
        logger.info("spind {} starting, boot {}, journal {}", __version__, boot, cfg.journal)
        journal_id = os.path.realpath(self.journal.path)
        tmp_dir = leftovers.tmp_dir_for(self.journal.path)
        try:
            await self._clean_up_earlier_boots(journal_id, tmp_dir)
        except (JournalError, OSError) as exc:
            logger.error("cannot clean up after earlier boots ({}): {}", tmp_dir, exc)
            return EXIT_REFUSED
        self.factory = JobFactory(cfg.jobs)
        self.specs = SpecStore(cfg.specs, self.factory)
        diags = self.specs.load()
        for d in diags:
            (logger.error if d.is_error else logger.warning)("spec: {}", d.format())
        if not self.specs.ok:
            logger.error(
                "refusing to start: {} spec errors in {}", len(self.specs.errors), cfg.specs
            )
            return EXIT_REFUSED
        self.metrics.spec_reload(True)
        self.bus = EventBus()
        self.env = RuntimeEnv(
            self.journal,
            self.factory,
            limits=self._limits(cfg),
            slots=Slots(cfg.max_running_jobs),
            settings=Settings(
                work_dir=cfg.work_dir,
                output_limit=cfg.output_limit,
                job_stop_grace=cfg.job_stop_grace,
                tmp_dir=str(tmp_dir),
                journal=journal_id,
                boot_id=boot,
            ),
            publish=self.bus.publish,
            metrics=self.metrics,
        )
        self.runtime = Runtime(self.env, self.specs.sequences)
        resumed = await self.runtime.resume_all()
        gcpolicy.freeze()  # what start-up made lives on: later collections skip it
        self.metrics.chains_resumed.inc(resumed)
        if resumed:
            logger.info("resumed {} interrupted chains", resumed, action="resume")
        self.service = Service(
            self.runtime,
            self.specs,
            self.bus,
            metrics=self.metrics,
            loop_lag_ms=lambda: self.metrics.current_lag_ms,
        )
        app = make_app(self.service, auth=auth_settings(cfg), max_body_bytes=cfg.max_body_bytes)
        try:
            runner = await start_sites(
                app,
                listen=cfg.listen or None,
                socket_path=cfg.socket or None,
                ssl_context=_ssl(cfg),
            )
        except (OSError, ValueError, ssl.SSLError) as exc:
            logger.error("cannot listen: {}", exc)
            await self.runtime.shutdown(0.0)
            return EXIT_REFUSED
        where = ", ".join(str(a) for a in runner.addresses)
        if cfg.auth is None:
            logger.warning(
                "no `auth` section: every local caller is trusted; listening only on "
                "loopback and the Unix socket ({})",
                where,
            )
        logger.info("listening on {}", where, action="ready")
        self._install_signals()
        self._start_background()
        self.notifier.ready(status=self._status_text())
        code = await self._wait()
        self.exit_code = code
        await self._shutdown(runner)
        return self.exit_code

    async def _clean_up_earlier_boots(self, journal_id: str, tmp_dir: Path) -> None:
        """Before anything resumes: stop the job processes of tries a crash left running (so
        that their new tries never overlap them), then remove earlier boots' output files."""
        stale = await self.journal.stale_running_tries()
        stopped = await leftovers.stop_orphans(
            journal=journal_id, stale_tries=stale, grace=self.cfg.job_stop_grace
        )
        if stopped:
            logger.info(
                "stopped {} process groups left running by earlier boots",
                len(stopped),
                action="orphans_stopped",
            )
        removed = leftovers.prepare_tmp_dir(tmp_dir)
        if removed:
            logger.info("removed {} output files of earlier boots from {}", removed, tmp_dir)

    @staticmethod
    def _limits(cfg: Config) -> Limits:
        return Limits(
            max_jobs=cfg.max_jobs_per_request,
            max_each_elements=cfg.max_each_elements,
            max_depth=cfg.max_sequence_depth,
        )

    # ---- signals and background loops

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reloads.put_nowait, None)

    def _on_stop_signal(self, sig: int) -> None:
        self.signals += 1
        self.stop_event.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.bg.add(task)

    def _start_background(self) -> None:
        self._spawn(loop_lag_monitor(self.metrics), "loop-lag")
        interval = self.notifier.watchdog_interval()
        if interval:
            self._spawn(watchdog_loop(self.notifier, interval, lambda: True), "watchdog")
        self._spawn(self._status_loop(), "status")
        self._spawn(self._reload_loop(), "reload")
        self._spawn(self._prune_loop(), "prune")

    async def _wait(self) -> int:
        stop = asyncio.ensure_future(self.stop_event.wait())
        done, _ = await asyncio.wait({stop, *self.bg}, return_when=asyncio.FIRST_COMPLETED)
        if stop in done:
            logger.info("stop signal received: shutting down", action="shutdown")
            return EXIT_OK
        stop.cancel()
        for task in done:
            exc = task.exception()
            logger.error("background task {} died: {!r}", task.get_name(), exc)
        return EXIT_FAIL

    def _status_text(self) -> str:
        requests, jobs = self.runtime.counts()
        return f"{requests} requests running, {jobs} jobs running"

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self.notifier.status(self._status_text())
            try:
                self.metrics.set_requests(await self.journal.count_by_state())
            except JournalError as exc:
                logger.warning("cannot count requests: {}", exc.message)
            stats = self.journal.stats
            if not stats.healthy:
                self.notifier.status(f"journal unavailable: {stats.last_error}")

    async def _reload_loop(self) -> None:
        while True:
            await self.reloads.get()
            while not self.reloads.empty():  # a SIGHUP storm is one reload, not one per signal
                self.reloads.get_nowait()
            self.notifier.reloading()
            try:
                self._reload()
            except Exception:
                logger.exception("reload failed")
            self.notifier.ready(status=self._status_text())

    def _reload(self) -> None:
        logger.info("reloading config and specs", action="reload")
        try:
            new, _file = load_config(self.config_file, overrides=self.overrides)
        except ConfigError as exc:
            logger.error("reload: config error, keeping the old config: {}", exc.message)
            new = self.cfg
        fixed = self.cfg.reloadable_diff(new)
        if fixed:
            logger.warning("reload: {} cannot change without a restart", ", ".join(fixed))
        set_level(new.log.level)
        self.env.slots.limit = max(1, new.max_running_jobs)
        self.env.limits = self._limits(new)
        if new.jobs != self.cfg.jobs:
            self.factory = JobFactory(new.jobs)
            self.env.factory = self.factory
            self.specs.job_types = self.factory
        if new.specs != self.cfg.specs:
            self.specs.directory = type(self.specs.directory)(new.specs)
        self.cfg = new
        diags = self.specs.load()
        errors = [d for d in diags if d.is_error]
        for d in errors:
            logger.error("reload: spec: {}", d.format())
        if errors:
            logger.error("reload: {} spec errors: keeping the old specs", len(errors))
        else:
            logger.info("reload: {} sequences loaded", len(self.specs.sequences()))
        self.metrics.spec_reload(not errors)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.prune_interval)
            if self.cfg.retention is None:
                continue
            cutoff = time.time() - self.cfg.retention
            try:
                while True:
                    n = await self.journal.prune_finished(cutoff, batch=200)
                    if n:
                        logger.info("pruned {} finished requests", n, action="prune")
                    if n < 200:
                        break
                    await asyncio.sleep(0.05)
            except JournalError as exc:
                logger.warning("prune failed: {}", exc.message)

    # ---- shutdown

    async def _shutdown(self, runner: Any) -> None:
        self.notifier.stopping(status="stopping: interrupting running jobs")
        grace = self.cfg.shutdown_grace if self.signals < 2 else 0.0
        self.runtime.shutting_down = True
        shutdown = asyncio.ensure_future(self.runtime.shutdown(grace))
        while not shutdown.done():
            # a second SIGTERM/SIGINT cuts the grace period short
            self.stop_event.clear()
            waiter = asyncio.ensure_future(self.stop_event.wait())
            await asyncio.wait({shutdown, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not shutdown.done() and self.signals >= 2:
                await self.runtime.shutdown(0.0)
        limit = grace + self.cfg.job_stop_grace + 30.0
        try:
            await asyncio.wait_for(shutdown, limit)
        except TimeoutError:
            logger.error("shutdown did not finish in {:.0f}s: exiting anyway", limit)
            self.exit_code = EXIT_FAIL
        await runner.cleanup()
        for task in self.bg:
            task.cancel()
        for task in self.bg:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        logger.info("stopped", action="stopped")


def _join_threads(timeout: float) -> None:
    """Wait for the threads still winding down (the journal connections' threads end just after
    they close): a signal blocked in this thread could still be delivered to one of them."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))


def serve(config_path: str | None, overrides: dict[str, Any]) -> int:
    """`spind serve`: returns the process exit code."""
    try:
        cfg, file = load_config(config_path, overrides=overrides)
    except ConfigError as exc:
        setup_logging("INFO", "text")
        logger.error("config: {}", exc.message)
        return EXIT_REFUSED
    setup_logging(cfg.log.level, cfg.log.format)
    if file:
        logger.info("config {}", file)
    gcpolicy.configure()
    # Closing the loop puts back the default action of the signals it handled (death): a late
    # SIGTERM, SIGINT or SIGHUP while the daemon winds down must not turn a clean stop into
    # death by signal. Block them before the loop closes, ignore them (dropping any pending)
    # once it has.
    late = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    try:
        with asyncio.Runner() as runner:
            try:
                return runner.run(Daemon(cfg, file, overrides).run())
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, late)
                _join_threads(timeout=2.0)
    finally:
        for sig in late:
            signal.signal(sig, signal.SIG_IGN)
