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
