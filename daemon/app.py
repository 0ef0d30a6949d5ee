"""Wiring and lifecycle of `spind serve`: start in order, run, reload on SIGHUP, stop in order.

Start: logging -> journal (refused if foreign or too new) -> boot row -> job processes and
temporary files left by a crashed boot cleaned up -> specs loaded and linted (refused with
errors) -> interrupted chains resumed -> listeners accept -> READY=1.
Reload (SIGHUP): the config is read again and, when valid, every live key is put in force in
one step of the event loop (no await in between); when invalid, the old config stays and the
error shows in health (`configErrors`) until a reload succeeds. Then the specs are reloaded.
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
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
from loguru import logger

from daemon import __version__, eventloop, gcpolicy, leftovers
from daemon.api.app import make_app, start_sites, update_settings
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


def _open_without_auth(cfg: Config) -> bool:
    """Whether `cfg` has no auth section yet listens on TCP beyond loopback (refused)."""
    if cfg.auth is not None or not cfg.listen:
        return False
    host = cfg.listen_address[0] if cfg.listen_address else ""
    return not _loopback(host)


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_tls_pair(live: ssl.SSLContext, cert: str, key: str, scratch_dir: Path) -> None:
    """Put the certificate chain and key of these files in force in `live`, or raise and
    leave it as it was. Both files are read once into private copies (mode 0600) that a
    scratch context loads first: OpenSSL would otherwise take a new certificate into `live`
    and then refuse a key that does not match it, breaking every later handshake."""
    scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="tls-", suffix=".pem", dir=scratch_dir)
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp: mode 0600
            out.write(Path(cert).read_bytes())
            out.write(b"\n")
            out.write(Path(key).read_bytes())
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(name)
        live.load_cert_chain(name)
    finally:
        os.unlink(name)


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
        #: set by a reload so that the prune loop re-reads its interval at once
        self.prune_wake = asyncio.Event()
        self.bg: set[asyncio.Task[Any]] = set()
        #: the TCP listener's TLS context (None without `tls`); a reload loads new files into it
        self.ssl_context: ssl.SSLContext | None = None
        #: where a reload copies the certificate and key it loads (the journal's private dir)
        self.tls_scratch = Path(".")

    # ---- entry

    async def run(self) -> int:
        cfg = self.cfg
        if _open_without_auth(cfg):
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
        self.journal.on_read = self.metrics.journal_read
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
        gcpolicy.pause()  # resuming makes many long-lived objects and no garbage
        try:
            resumed = await self.runtime.resume_all()
        finally:
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
        self.app = app = make_app(
            self.service, auth=auth_settings(cfg), max_body_bytes=cfg.max_body_bytes
        )
        self.tls_scratch = tmp_dir
        try:
            self.ssl_context = _ssl(cfg)
            runner = await start_sites(
                app,
                listen=cfg.listen or None,
                socket_path=cfg.socket or None,
                ssl_context=self.ssl_context,
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
        """Config, then specs. Synchronous: nothing else runs in the loop meanwhile, so no API
        call or chain sees a half-applied reload."""
        logger.info("reloading config and specs", action="reload")
        errors = self._reload_config()
        self.service.config_errors = errors
        self.metrics.config_reload(not errors)
        diags = self.specs.load()
        spec_errors = [d for d in diags if d.is_error]
        for d in spec_errors:
            logger.error("reload: spec: {}", d.format())
        if spec_errors:
            logger.error("reload: {} spec errors: keeping the old specs", len(spec_errors))
        else:
            logger.info("reload: {} sequences loaded", len(self.specs.sequences()))
        self.metrics.spec_reload(not spec_errors)

    def _reload_config(self) -> list[str]:
        """Read the config again and put it in force; on errors keep the old one, log each
        error (they name the file and key) and return them."""
        try:
            new, file = load_config(self.config_file, overrides=self.overrides)
        except ConfigError as exc:
            errors = exc.problems  # each names the file (or variable), line and key
        else:
            new = self._keep_restart_keys(new)
            errors = self._reload_refusals(new, file or "the config") or self._reload_tls(new)
            if not errors:
                self._apply(new)
                return []
        for error in errors:
            logger.error("reload: {}; keeping the old config", error, action="reload")
        return errors

    def _keep_restart_keys(self, new: Config) -> Config:
        """`new` with the old values of the keys only a restart changes (warned about)."""
        fixed = self.cfg.reloadable_diff(new)
        kept = {k: getattr(self.cfg, k) for k in fixed}
        if new.log.format != self.cfg.log.format:
            fixed.append("log.format")
            kept["log"] = msgspec.structs.replace(new.log, format=self.cfg.log.format)
        if fixed:
            logger.warning(
                "reload: {} cannot change without a restart: keeping the running values",
                ", ".join(fixed),
            )
        return msgspec.structs.replace(new, **kept)

    def _reload_tls(self, new: Config) -> list[str]:
        """Load the certificate and key again (renewed in place, or other files) into the
        listener's TLS context: handshakes from now on use them, connections already open keep
        theirs. The pair is read once and checked on a scratch context first, so that a
        half-written or mismatched pair leaves the running one in force."""
        if self.ssl_context is None or new.tls is None:
            return []
        try:
            load_tls_pair(self.ssl_context, new.tls.cert, new.tls.key, self.tls_scratch)
        except (OSError, ssl.SSLError) as exc:
            return [f"tls: cannot load certificate {new.tls.cert} and key {new.tls.key}: {exc}"]
        logger.info("reload: TLS certificate loaded from {}", new.tls.cert, action="reload")
        return []

    def _reload_refusals(self, new: Config, file: str) -> list[str]:
        """Errors of a valid config that the running daemon must not take anyway."""
        if _open_without_auth(new):  # `listen` is the running one (a restart key)
            return [
                f"{file}: auth: the section cannot be removed while listening on {new.listen}: "
                "without auth spind listens only on loopback and the Unix socket"
            ]
        return []

    def _apply(self, new: Config) -> None:
        """Put a valid config in force: build what can fail first, then swap without awaiting."""
        old = self.cfg
        auth = auth_settings(new)
        limits = self._limits(new)
        settings = msgspec.structs.replace(
            self.env.settings,
            work_dir=new.work_dir,
            output_limit=new.output_limit,
            job_stop_grace=new.job_stop_grace,
        )
        factory = JobFactory(new.jobs) if new.jobs != old.jobs else self.factory
        set_level(new.log.level)
        self.env.slots.set_limit(new.max_running_jobs)
        self.env.limits = limits
        self.env.settings = settings
        self.factory = self.env.factory = self.specs.job_types = factory
        if new.specs != old.specs:
            self.specs.directory = Path(new.specs)
        update_settings(self.app, auth=auth, max_body_bytes=new.max_body_bytes)
        self.cfg = new
        self.prune_wake.set()
        if new.auth != old.auth:
            if new.auth is None:
                logger.warning("reload: no `auth` section any more: every local caller is trusted")
            else:
                logger.info(
                    "reload: auth settings in force: {} tokens, {} users with roles",
                    len(new.auth.tokens),
                    len(new.auth.roles),
                )
        changed = old.changed_keys(new)
        logger.info("reload: config in force; changed: {}", ", ".join(changed) or "nothing")

    async def _prune_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            # a reload wakes this up: a new `prune_interval` counts from the last run
            self.prune_wake.clear()
            delay = last + self.cfg.prune_interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.prune_wake.wait(), delay)
                continue
            last = loop.time()
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
        for problem in exc.problems:
            logger.error("config: {}", problem)
        return EXIT_REFUSED
    setup_logging(cfg.log.level, cfg.log.format)
    if file:
        logger.info("config {}", file)
    try:
        factory = eventloop.loop_factory(cfg.event_loop)
    except eventloop.LoopUnavailable as exc:
        logger.error("config: {}", exc.message)
        return EXIT_REFUSED
    logger.info("event loop: {}", cfg.event_loop)
    gcpolicy.configure()
    # Closing the loop puts back the default action of the signals it handled (death): a late
    # SIGTERM, SIGINT or SIGHUP while the daemon winds down must not turn a clean stop into
    # death by signal. Block them before the loop closes, ignore them (dropping any pending)
    # once it has.
    late = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            try:
                return runner.run(Daemon(cfg, file, overrides).run())
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, late)
                _join_threads(timeout=2.0)
    finally:
        for sig in late:
            signal.signal(sig, signal.SIG_IGN)
