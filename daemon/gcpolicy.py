"""The cyclic garbage collector's settings for the daemon process.

spind holds many small long-lived objects (every job of every running chain, its scope, its
traverser bookkeeping) and allocates many short-lived ones per job try (tasks, futures,
messages). With CPython's default thresholds (700, 10, 10) a fan-out of 10,000 jobs triggers
hundreds of young collections and several full ones; each full collection walks every live
object and stops the event loop for as long (150 ms measured with one 10,000-job chain held,
about a second with 1,000 resumed chains of 100 jobs): a quarter of the fan-out's time, and
the worst API latency. Almost nothing spind allocates forms reference cycles (what is freed is
freed by reference counting), so collecting rarely loses nothing:

- `configure()`: young collections every 20,000 net allocations instead of 700, full ones as
  rarely as CPython's own 25% rule allows after that.
- `pause()`: no collection while interrupted chains are resumed at start. Loading them makes
  hundreds of thousands of long-lived objects and next to no garbage, and every collection
  on the way walked the growing heap again: 0.54 s of a 2.6 s resume of 1,000 chains of 100
  jobs went to 70 young, 4 middle and 1 full collection, collecting nothing of note.
- `freeze()`: after start-up (imports, specs, resumed chains), move what exists into the
  permanent generation, which collections skip: objects that live as long as the process or
  a resumed chain are never walked again. (They are still freed by reference counting.)
  Collections run again from then on.
"""

from __future__ import annotations

import gc

#: (young, middle, old) thresholds; CPython's default is (700, 10, 10)
THRESHOLDS = (20_000, 20, 10)


def configure() -> None:
    gc.set_threshold(*THRESHOLDS)


def pause() -> None:
    """No collections until `freeze()` (start-up: see the module's doc)."""
    gc.disable()


def freeze() -> None:
    """Exclude everything alive now from later collections, and collect again from now on.
    (No collection first: with 1,000 resumed chains it would stop the start for most of a
    second, and start-up makes next to no cyclic garbage.)"""
    gc.freeze()
    gc.enable()
