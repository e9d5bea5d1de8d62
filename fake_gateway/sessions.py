"""Sessions, their sequence numbers and replay buffers, and the IDENTIFY limits.

Sans-I/O: every method that depends on time takes `now`; ids come from the `random.Random`
the gateway was given.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway_common.facts import OP_DISPATCH

LIVE = "live"
INVALIDATED = "invalidated"
EXPIRED = "expired"


@dataclass(frozen=True)
class Dispatch:
    s: int
    t: str
    d: Any

    def payload(self) -> dict[str, Any]:
        return {"op": OP_DISPATCH, "t": self.t, "s": self.s, "d": self.d}


@dataclass
class Session:
    """One gateway session: created by IDENTIFY, carried across connections by RESUME."""

    session_id: str
    shard: tuple[int, int] | None
    intents: int
    guild_ids: list[int]
    replay_capacity: int
    seq: int = 0
    state: str = LIVE
    conn_id: int | None = None
    detached_at: float | None = None
    resumes: int = 0
    buffer: deque[Dispatch] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.buffer = deque(maxlen=self.replay_capacity)

    @property
    def alive(self) -> bool:
        return self.state == LIVE

    @property
    def shard_id(self) -> int:
        return self.shard[0] if self.shard else 0

    @property
    def num_shards(self) -> int:
        return self.shard[1] if self.shard else 1

    def next_dispatch(self, t: str, d: Any) -> Dispatch:
        """Give the next seq to a dispatch and keep it for replay."""
        self.seq += 1
        dispatch = Dispatch(self.seq, t, d)
        self.buffer.append(dispatch)
        return dispatch

    def replay_after(self, seq: int) -> list[Dispatch] | None:
        """Dispatches with s > seq in order, or None if seq is in the future or already dropped."""
        if seq > self.seq or seq < 0:
            return None
        if seq == self.seq:
            return []
        oldest = self.buffer[0].s if self.buffer else self.seq + 1
        if seq + 1 < oldest:
            return None
        return [d for d in self.buffer if d.s > seq]

    def routes(self, guild_id: int | None) -> bool:
        """Whether a dispatch about `guild_id` goes to this session (section 9)."""
        if guild_id is None:
            return self.shard_id == 0
        return shard_for_guild(guild_id, self.num_shards) == self.shard_id


def shard_for_guild(guild_id: int, num_shards: int) -> int:
    return (guild_id >> 22) % num_shards


# Ended sessions (expired, invalidated) kept, the latest first: a RESUME of one still gets the
# answer its end calls for (4009 for an expired one with expired_resume_response = "close_4009")
# and /_harness/state shows how it ended. An older one is forgotten (its RESUME gets op 9, as an
# unknown session's does), so a long-running gateway holds at most this many however many
# connections it served. As many as Discord's default daily start budget (one day of IDENTIFYs).
ENDED_SESSIONS_KEPT = 1000


class SessionStore:
    def __init__(self, rng: random.Random, replay_capacity: int,
                 ended_kept: int = ENDED_SESSIONS_KEPT) -> None:
        self._rng = rng
        self.replay_capacity = replay_capacity
        self.ended_kept = ended_kept
        self.sessions: dict[str, Session] = {}
        self._detached: list[tuple[float, str]] = []  # (detached_at, session_id), a heap
        self._ended: deque[str] = deque()  # ids of the ended sessions still kept, oldest first

    def create(self, shard: tuple[int, int] | None, intents: int, guild_ids: list[int]) -> Session:
        session_id = f"{self._rng.getrandbits(128):032x}"
        session = Session(session_id, shard, intents, guild_ids, self.replay_capacity)
        self.sessions[session_id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def live(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.alive]

    def ended(self, session: Session) -> None:
        """The session can never be resumed again (it expired or was invalidated): let go of its
        replay buffer now, and of the oldest ended session beyond `ended_kept`."""
        session.buffer.clear()
        self._ended.append(session.session_id)
        while len(self._ended) > self.ended_kept:
            self.sessions.pop(self._ended.popleft(), None)

    def note_detached(self, session: Session) -> None:
        """Remember when a session lost its connection (its TTL runs from then)."""
        assert session.detached_at is not None
        heapq.heappush(self._detached, (session.detached_at, session.session_id))

    def _still_detached(self, detached_at: float, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is not None and session.alive and session.conn_id is None \
                and session.detached_at == detached_at:
            return session
        return None

    def due_expiry(self, now: float, ttl: float) -> list[Session]:
        due = []
        heap = self._detached
        while heap and heap[0][0] + ttl <= now:
            detached_at, session_id = heapq.heappop(heap)
            session = self._still_detached(detached_at, session_id)
            if session is not None:
                due.append(session)
        return due

    def next_expiry(self, ttl: float) -> float | None:
        """O(1) amortised: stale heap entries (resumed, invalidated) are dropped on the way."""
        heap = self._detached
        while heap:
            detached_at, session_id = heap[0]
            if self._still_detached(detached_at, session_id) is not None:
                return detached_at + ttl
            heapq.heappop(heap)
        return None


class IdentifyLimiter:
    """`max_concurrency` buckets keyed by shard_id % max_concurrency, one IDENTIFY per window."""

    def __init__(self, max_concurrency: int, window: float) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self.window = window
        self._last: dict[int, float] = {}

    def bucket(self, shard_id: int) -> int:
        return shard_id % self.max_concurrency

    def try_acquire(self, shard_id: int, now: float) -> bool:
        key = self.bucket(shard_id)
        last = self._last.get(key)
        if last is not None and now < last + self.window:
            return False
        self._last[key] = now
        return True


class SessionStartLimit:
    """The daily IDENTIFY budget reported by /gateway/bot as `session_start_limit`."""

    def __init__(self, total: int, window: float) -> None:
        self.total = total
        self.window = window
        self.used = 0
        self.window_start: float | None = None
        self.forced_remaining: int | None = None  # a fault: report (and enforce) this value

    def _roll(self, now: float) -> None:
        if self.window_start is not None and now >= self.window_start + self.window:
            self.used = 0
            self.window_start = None

    def remaining(self, now: float) -> int:
        self._roll(now)
        if self.forced_remaining is not None:
            return self.forced_remaining
        return max(0, self.total - self.used)

    def reset_after_ms(self, now: float) -> int:
        self._roll(now)
        if self.window_start is None:
            return int(self.window * 1000)
        return max(0, int((self.window_start + self.window - now) * 1000))

    def consume(self, now: float) -> bool:
        """Take one start; False if none is left."""
        if self.remaining(now) <= 0:
            return False
        if self.window_start is None:
            self.window_start = now
        self.used += 1
        if self.forced_remaining is not None:
            self.forced_remaining -= 1
        return True
