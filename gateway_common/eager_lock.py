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
    """``async with lock:`` like ``trio.Lock``, without the yield of a free acquire."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()
