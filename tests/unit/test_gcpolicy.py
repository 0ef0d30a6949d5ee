"""daemon.gcpolicy: collections paused during start-up, frozen and running again after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from daemon import gcpolicy


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


def test_start_up_pauses_collections_then_freezes_and_resumes_them() -> None:
    gcpolicy.configure()
    assert gc.get_threshold() == gcpolicy.THRESHOLDS
    gcpolicy.pause()
    assert not gc.isenabled()
    kept = [object() for _ in range(10)]
    gcpolicy.freeze()
    assert gc.isenabled()
    assert gc.get_freeze_count() > len(kept)
