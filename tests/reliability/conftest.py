"""Fixtures of the reliability tests: real daemons that are always killed on teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon
from tests.reliability import mix

Spawn = Callable[..., Daemon]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """`spawn(specs=None, config=None, env=None, start=True, port=None)`: a daemon in its own
    directory under tmp_path (the mix's specs by default, INFO logs; TCP on 127.0.0.1:port if
    given); every one is killed at teardown."""
    daemons: list[Daemon] = []

    def make(
        specs: dict[str, str] | None = None,
        *,
        config: str | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
        root: Path | None = None,
        port: int | None = None,
    ) -> Daemon:
        d = Daemon(
            root or tmp_path / f"d{len(daemons)}",
            mix.specs() if specs is None else specs,
            config=config,
            env={"SPIND_LOG_LEVEL": "INFO", **(env or {})},
            port=port,
        )
        daemons.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in daemons:
        d.close()
