"""A trio lock whose uncontended acquire costs no scheduling round.

``trio.Lock.acquire`` always yields once, even when nobody holds the lock. websockets takes
its send lock for every frame sent and for every chunk received (to flush automatic replies,
usually none), so on a simulated day that yield is a third of all scheduler iterations. Held
by another task, this lock waits exactly as ``trio.Lock`` does (FIFO); free, it is taken at
once. Callers still checkpoint where they do real I/O (the stream's ``send_all``).
"""

from __future__ import annotations

from types import TracebackType

import trio


class EagerLock:
    """``async with lock:`` like ``trio.Lock``, without the yield of a free acquire.

    Free, ``async with`` takes it in one coroutine call and no other (the lock is used once
    per frame sent and chunk received). Held, the caller checkpoints for cancellation and
    parks; ``release`` hands the lock to the first parked task, as ``trio.Lock`` does. Unlike
    ``trio.Lock`` it does not check that the releasing task is the one that acquired it, nor
    break the lock when its holder exits without releasing (``async with`` always releases).
    """

    __slots__ = ("_held", "_lot")

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()

    async def acquire(self) -> None:
        if self._held:
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._lot.park()  # woken holding the lock: release hands it over
        else:
            self._held = True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release of an EagerLock nobody holds")
        if self._lot:
            self._lot.unpark(count=1)  # the lock passes to the woken task: still held
        else:
            self._held = False

    def locked(self) -> bool:
        return self._held

    async def __aenter__(self) -> None:
        if self._held:
            await trio.lowlevel.checkpoint_if_cancelled()
            await self._lot.park()
        else:
            self._held = True

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
