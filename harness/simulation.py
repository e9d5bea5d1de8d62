"""Simulation: one ``trio.run`` on virtual time, its task scheduling a function of one seed, so
the same seed gives the same transcript (DESIGN.md, "one clock, one seed").

    result = run_simulated(main, arg, seed=7)
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
import trio.testing

T = TypeVar("T")

# Instruments every simulated run gets (``instrumented``): benchmarks count scheduler iterations.
_instruments: list[trio.abc.Instrument] = []


def run_simulated(async_fn: Callable[..., Awaitable[T]], *args: Any, seed: int) -> T:
    """``trio.run(async_fn, *args)`` under ``MockClock(autojump_threshold=0)`` (time jumps
    ahead whenever every task waits), tasks scheduled in an order drawn from ``seed``."""
    seed_trio_scheduler(seed)
    with collecting_less():
        return trio.run(async_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0),
                        instruments=[*_instruments, _YoungGenerationSizer()])


# Young-generation size and the collections between older ones while a simulated run goes on
# (CPython's defaults: 700, 10, 10).
RUN_GC_THRESHOLDS = (50_000, 20, 50)


@contextmanager
def collecting_less() -> Iterator[None]:
    """Fewer cyclic garbage collections, none of them over what existed before, for the block.

    A simulated run allocates and drops objects at a great rate (tasks, cancel scopes, frames,
    trace records): with CPython's default thresholds a collection every 700 allocations
    promotes short-lived objects into the old generations, whose full collections then walk
    every live object, the process's modules and a fleet's thousands of clients included, again
    and again (a 1,000-shard storm spent 30 % of its CPU there, and the share grows with the
    shards). The objects that existed before the run are frozen (``gc.freeze``: never walked,
    never collected) and the young generation is larger, so most garbage dies young and
    cheaply; both are undone afterwards. Nothing is left uncollected: the thresholds only
    space collections out. A caller that froze objects itself keeps its own freeze.
    """
    old = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    gc.set_threshold(*RUN_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        if freeze:
            gc.unfreeze()


# Young-generation allocations per live trio task, once the tasks are many (a fleet).
YOUNG_PER_TASK = 20


class _YoungGenerationSizer(trio.abc.Instrument):
    """Grows the young generation with the run's live tasks: ``YOUNG_PER_TASK`` allocations
    each, at least ``RUN_GC_THRESHOLDS[0]``.

    A fleet's every shard keeps a few tasks (and their cancel scopes, events and buffers)
    alive for simulated seconds at a time. With a fixed young generation, 10x the shards
    allocate it full in a tenth of the simulated time, so ten times as many of those objects
    are still alive at a young collection: they are walked, promoted, and walked again by the
    middle generation's collections, which grow with the live heap (a 2,500-shard storm spent
    14 % of its CPU collecting, a 250-shard one 4 %). Sized by the live tasks, a young
    collection comes after the same simulated time whatever the fleet's size. A single
    client's run (a few dozen tasks) keeps ``RUN_GC_THRESHOLDS``. Only grows during a run;
    ``collecting_less`` puts the process's thresholds back afterwards.
    """

    def __init__(self) -> None:
        self.live = 0
        self.young = RUN_GC_THRESHOLDS[0]

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live += 1
        if self.live * YOUNG_PER_TASK > self.young * 1.25:
            self.young = self.live * YOUNG_PER_TASK
            gc.set_threshold(self.young, *gc.get_threshold()[1:])

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live -= 1


@contextmanager
def instrumented(*instruments: trio.abc.Instrument) -> Iterator[None]:
    """Add ``instruments`` to every simulated run started inside the block."""
    _instruments.extend(instruments)
    try:
        yield
    finally:
        for instrument in instruments:
            _instruments.remove(instrument)


class IterationCounter(trio.abc.Instrument):
    """Counts trio scheduler iterations (one per I/O wait): what a simulated run costs,
    independent of how fast or loaded the machine is."""

    def __init__(self) -> None:
        self.iterations = 0

    def before_io_wait(self, timeout: float) -> None:
        self.iterations += 1


def seed_trio_scheduler(seed: int) -> None:
    """Make trio's choice among runnable tasks a function of ``seed``.

    trio shuffles each batch of runnable tasks with a module-level ``random.Random``. Its
    documented hook is for Hypothesis: the ``hypothesis`` entry point (trio >= 0.25.1,
    ``_hypothesis_plugin_setup``) makes that shuffle deterministic and ``register_random``s the
    generator, which Hypothesis then seeds (to 0) only inside a ``@given`` example. A run
    outside Hypothesis (``gateway-harness run --mode sim``, the fleet storm) and seeding from
    the run seed have no public route, so this sets the two private names that hook sets, and
    nothing else touches them. Checked against trio 0.11 to 0.35 (``_core/_run.py``: the
    ``_ALLOW_DETERMINISTIC_SCHEDULING`` flag, the ``_r`` generator, the batch sorted by task
    creation order then ``_r.shuffle``d); if trio renames them, transcripts stop replaying
    (tests/test_runner.py's determinism test notices).
    """
    import trio._core._run as trio_run

    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio_run._r.seed(seed)
