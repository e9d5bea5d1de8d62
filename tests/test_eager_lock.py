"""gateway_common.eager_lock.EagerLock: trio.Lock's mutual exclusion and FIFO hand-over,
without a scheduling round when free (issue 16)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway_common.eager_lock import EagerLock


def test_free_acquire_takes_no_scheduling_round() -> None:
    async def main() -> None:
        lock = EagerLock()
        ran: list[str] = []

        async def other() -> None:
            ran.append("other")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            async with lock:  # free: no yield, so the other task has not run yet
                assert lock.locked()
                assert ran == []
            assert not lock.locked()

    trio.run(main)


def test_waiters_get_the_lock_in_arrival_order_one_at_a_time() -> None:
    async def main() -> None:
        lock = EagerLock()
        order: list[int] = []
        inside = 0

        async def user(i: int) -> None:
            nonlocal inside
            async with lock:
                inside += 1
                assert inside == 1
                order.append(i)
                await trio.sleep(1)
                inside -= 1

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(user, i)
                await trio.testing.wait_all_tasks_blocked()
        assert order == [0, 1, 2, 3]
        assert not lock.locked()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_cancelled_waiter_does_not_take_the_lock() -> None:
    async def main() -> None:
        lock = EagerLock()
        got: list[str] = []

        async def waiter(name: str, scope_box: list[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                async with lock:
                    got.append(name)

        await lock.acquire()
        first: list[trio.CancelScope] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, "cancelled", first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(waiter, "second", [])
            await trio.testing.wait_all_tasks_blocked()
            first[0].cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert lock.locked()
            lock.release()
        assert got == ["second"]
        assert not lock.locked()

    trio.run(main)


def test_release_of_a_free_lock_raises() -> None:
    with pytest.raises(RuntimeError):
        EagerLock().release()
