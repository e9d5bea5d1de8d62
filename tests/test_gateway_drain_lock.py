"""The gateway's per-connection drain lock (fake_gateway.server._DrainLock): one drain at a time,
waiters served in order, a cancelled waiter never holds it."""

from __future__ import annotations

import trio
import trio.testing

from fake_gateway.server import _DrainLock


async def _drain(lock: _DrainLock, name: str, log: list[str]) -> None:
    if not lock.try_acquire():
        await lock.wait_acquire()
    try:
        log.append(f"{name} in")
        await trio.sleep(1.0)
        log.append(f"{name} out")
    finally:
        lock.release()


async def test_drains_never_overlap_and_waiters_go_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lock = _DrainLock()
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(_drain, lock, name, log)
            await trio.testing.wait_all_tasks_blocked()
    assert log == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert not lock.held


async def test_a_cancelled_waiter_never_takes_the_lock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lock = _DrainLock()
    log: list[str] = []
    scope = trio.CancelScope()

    async def cancelled_waiter() -> None:
        with scope:
            await _drain(lock, "x", log)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, lock, "a", log)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(cancelled_waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_drain, lock, "b", log)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
    assert log == ["a in", "a out", "b in", "b out"]
    assert not lock.held
    assert lock.try_acquire()
