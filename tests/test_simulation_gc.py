"""A simulated run collects less garbage while it runs (harness.simulation.collecting_less), and
leaves the process's garbage collector as it found it, also when the run fails (issue 16)."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio

from harness.simulation import RUN_GC_THRESHOLDS, run_simulated


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_run_uses_the_run_thresholds_and_restores_the_process_settings() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    async def main() -> None:
        seen.append(gc.get_threshold())
        await trio.sleep(1)

    run_simulated(main, seed=1)
    assert seen == [RUN_GC_THRESHOLDS]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_garbage_from_before_the_run_is_collectable_again_after_it() -> None:
    gc.collect()
    dropped = _cycle()  # garbage already, not yet collected: the run freezes it with the rest

    async def main() -> None:
        await trio.sleep(1)

    run_simulated(main, seed=1)
    gc.collect()
    assert dropped() is None


def test_a_failing_run_restores_the_process_settings_too() -> None:
    before = gc.get_threshold()

    async def main() -> None:
        await trio.sleep(1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_simulated(main, seed=1)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_callers_own_freeze_is_kept() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()

        async def main() -> None:
            await trio.sleep(1)

        run_simulated(main, seed=1)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_a_run_with_many_live_tasks_gets_a_young_generation_to_match() -> None:
    """A fleet's thousands of tasks: the young generation grows with them (YOUNG_PER_TASK
    allocations each), so a young collection comes after as much simulated time as with a few
    shards; the process's thresholds are back afterwards."""
    from harness.simulation import YOUNG_PER_TASK

    before = gc.get_threshold()
    seen: dict[str, tuple[int, int, int]] = {}

    async def main() -> None:
        seen["few"] = gc.get_threshold()
        async with trio.open_nursery() as nursery:
            for _ in range(10_000):
                nursery.start_soon(trio.sleep, 10)
            await trio.sleep(1)
            seen["many"] = gc.get_threshold()

    run_simulated(main, seed=1)
    assert seen["few"] == RUN_GC_THRESHOLDS
    # (regrown each time the tasks outgrow it by a quarter)
    assert 10_000 * YOUNG_PER_TASK / 1.25 <= seen["many"][0] <= 10_000 * YOUNG_PER_TASK
    assert seen["many"][1:] == RUN_GC_THRESHOLDS[1:]
    assert gc.get_threshold() == before
