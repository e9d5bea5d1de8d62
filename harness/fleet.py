"""The fleet storm: N shards of the reference client against one fake gateway, in simulation.

Every shard is a real ``GatewayClient`` (the reference driver and core) with its own
``shard = [i, N]``; they share one ``MemoryNetwork``, one ``FakeGateway`` (with its
``max_concurrency`` identify buckets and ``session_start_limit``) and one trio run under
``MockClock(autojump_threshold=0)``, so a storm that takes an hour of gateway time runs in seconds.

Waves hit the whole fleet at once:

- ``reconnect``: op 7 to every connection (every shard RESUMEs; no IDENTIFY should happen);
- ``close-4009``: close 4009 (session timed out) on every connection (every shard must
  re-IDENTIFY, so the identify buckets decide how long recovery takes);
- ``restart``: the gateway process dies (every connection dropped, every session lost), stays down
  ``restart_downtime`` seconds, and a fresh gateway takes the same addresses.

A wave starts ``wave_gap`` seconds after the whole fleet is ready again (or after ``wave_timeout``).
The report gives, per phase, the IDENTIFYs sent and accepted per 5 s window, the op 9s the
gateway answered over-limit IDENTIFYs with, RESUMEs, and the time until every shard was ready.

The shards share one identify queue (``coordinated=True``, what a real sharded bot does: a shard
waits for its bucket's next 5 s slot). ``coordinated=False`` leaves each shard to its own
per-shard slot, so shards of one bucket collide and the gateway answers op 9: the storm a
fleet without a coordinator makes.
"""

from __future__ import annotations

import functools
import math
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from gateway_common.errors import UserError
from gateway_common.facts import (
    DISCORD_HEARTBEAT_INTERVAL_MS,
    IDENTIFY_WINDOW,
    OP_IDENTIFY,
    OP_RESUME,
)
from gateway_common.trace import KIND_NOTE, Record, Trace
from harness.client.core import ClientConfig, GatewayClientCore, StateChanged
from harness.faults.memnet import MemoryNetwork
from harness.simulation import run_simulated

HOST = "127.0.0.1"
WAVES = ("reconnect", "close-4009", "restart")


@dataclass(frozen=True)
class FleetConfig:
    shards: int = 100
    max_concurrency: int = 16
    session_start_total: int | None = None  # None: 4 starts per shard
    waves: tuple[str, ...] = WAVES
    # Discord's own interval: a storm is about minutes, not seconds.
    heartbeat_interval_ms: int = DISCORD_HEARTBEAT_INTERVAL_MS
    dispatch_rate: float = 0.0
    wave_gap: float = 30.0
    wave_timeout: float = 3600.0
    restart_downtime: float = 10.0
    coordinated: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise UserError(f"shards: must be at least 1, got {self.shards}")
        if self.max_concurrency < 1:
            raise UserError(f"max_concurrency: must be at least 1, got {self.max_concurrency}")
        for wave in self.waves:
            if wave not in WAVES:
                raise UserError(f"wave {wave!r}: must be one of {', '.join(WAVES)}")


@dataclass
class PhaseReport:
    name: str
    started: float  # simulated seconds since the storm began
    all_ready_after: float | None  # seconds from the phase start until every shard was ready
    identifies_sent: int = 0
    identifies_accepted: int = 0
    identify_rejections: int = 0  # op 9 answers to IDENTIFYs over the bucket limit
    resumes: int = 0
    max_accepted_per_window: int = 0
    identifies_per_window: list[int] = field(default_factory=list)  # accepted, 5 s windows


@dataclass
class FleetReport:
    config: FleetConfig
    phases: list[PhaseReport]
    simulated_seconds: float
    wall_seconds: float
    stopped_shards: int
    trace_records: int

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "phases": [asdict(p) for p in self.phases],
            "simulated_seconds": self.simulated_seconds,
            "wall_seconds": self.wall_seconds,
            "stopped_shards": self.stopped_shards,
            "trace_records": self.trace_records,
        }

    def text(self) -> str:
        c = self.config
        lines = [
            f"fleet storm: {c.shards} shards, max_concurrency {c.max_concurrency}, "
            f"{'coordinated' if c.coordinated else 'uncoordinated'} identify, seed {c.seed}",
            f"{'phase':<12} {'start':>8} {'all ready after':>16} {'IDENTIFY':>9} "
            f"{'accepted':>9} {'op9':>6} {'RESUME':>7} {'max/5s':>7}",
        ]
        for p in self.phases:
            ready = f"{p.all_ready_after:.1f} s" if p.all_ready_after is not None else "never"
            lines.append(
                f"{p.name:<12} {p.started:>7.1f}s {ready:>16} {p.identifies_sent:>9} "
                f"{p.identifies_accepted:>9} {p.identify_rejections:>6} {p.resumes:>7} "
                f"{p.max_accepted_per_window:>7}"
            )
        for p in self.phases:
            windows = p.identifies_per_window
            shown = " ".join(str(n) for n in windows[:24]) + (" ..." if len(windows) > 24 else "")
            lines.append(f"  {p.name} IDENTIFYs accepted per 5 s window: {shown}")
        lines.append(
            f"{self.simulated_seconds:.0f} s simulated in {self.wall_seconds:.1f} s wall; "
            f"{self.trace_records} trace records; {self.stopped_shards} shard(s) stopped"
        )
        return "\n".join(lines)


class IdentifyQueue:
    """The fleet's shared identify scheduler: one IDENTIFY per bucket per 5 s window.

    Pure bookkeeping (no clock of its own): a shard asks for a slot at ``now`` and gets the time
    it may connect to IDENTIFY.
    """

    def __init__(self, max_concurrency: int, window: float = IDENTIFY_WINDOW,
                 margin: float = 0.05) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self.window = window
        self.margin = margin  # the IDENTIFY reaches the gateway a moment after the connect
        self._next_free: dict[int, float] = {}

    def reserve(self, shard_id: int, now: float) -> float:
        bucket = shard_id % self.max_concurrency
        slot = max(now, self._next_free.get(bucket, -math.inf))
        self._next_free[bucket] = slot + self.window + self.margin
        return slot


def coordinated_core_factory(queue: IdentifyQueue) -> Any:
    """A core factory whose shards take identify slots from the shared queue."""

    class FleetShardCore(GatewayClientCore):
        _slot_now = 0.0

        def _identify_after_budget_check(self, now: float) -> None:
            self._slot_now = now
            super()._identify_after_budget_check(now)

        def _next_identify_slot(self) -> float:
            shard_id = self.config.shard[0] if self.config.shard else 0
            return queue.reserve(shard_id, self._slot_now)

    return FleetShardCore


class _Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.network = MemoryNetwork()
        self.trace = Trace(clock=trio.current_time)
        self.gateway_config = GatewayConfig(
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            dispatch_rate=config.dispatch_rate,
            guilds=config.shards,
            recommended_shards=config.shards,
            max_concurrency=config.max_concurrency,
            session_start_total=config.session_start_total or 4 * config.shards,
        )
        self.gateway: OpenedGateway | None = None  # None while it is down
        self.gateway_scope: trio.CancelScope | None = None
        self.ports = (0, 0)  # the listeners' (discovery, resume): a restart takes the same
        self.ready: set[int] = set()
        self.ready_changed = trio.Event()
        self.stopped: set[int] = set()
        self.stopped_during_storm = 0
        self.clients: list[Any] = []
        self.t0 = 0.0

    async def _start_gateway(self, nursery: trio.Nursery, generation: int) -> None:
        rng = random.Random(f"{self.config.seed}:gateway:{generation}")
        gateway = FakeGateway(self.gateway_config, self.trace, rng)
        scope = trio.CancelScope()
        serve = partial(open_gateway, gateway, self.network, host=HOST, port=self.ports[0],
                        resume_port=self.ports[1], backlog=self.config.shards + 16)

        async def run(task_status: trio.TaskStatus[OpenedGateway]) -> None:
            with scope:
                await serve(task_status=task_status)

        opened: OpenedGateway = await nursery.start(run)
        self.ports = (opened.listeners["discovery"].port, opened.listeners["resume"].port)
        self.gateway, self.gateway_scope = opened, scope

    async def _fetch_gateway_bot(self) -> Mapping[str, Any]:
        await trio.lowlevel.checkpoint()
        if self.gateway is None:
            raise OSError("gateway is down")
        return self.gateway.gateway_bot()

    def _on_state(self, shard: int, change: StateChanged) -> None:
        if change.state == "ready":
            self.ready.add(shard)
        elif change.state != "zombie":
            self.ready.discard(shard)
        if change.state == "stopped":
            self.stopped.add(shard)
        self.ready_changed.set()

    async def _wait_all_ready(self, timeout: float) -> float | None:
        started = trio.current_time()
        with trio.move_on_after(timeout):
            while len(self.ready) + len(self.stopped) < self.config.shards or self.stopped:
                if self.stopped and len(self.ready) + len(self.stopped) >= self.config.shards:
                    return None
                self.ready_changed = trio.Event()
                await self.ready_changed.wait()
            return trio.current_time() - started
        return None

    async def run(self) -> tuple[list[tuple[str, float, float | None]], float]:
        from harness.client.driver import GatewayClient

        cfg = self.config
        self.t0 = trio.current_time()
        phases: list[tuple[str, float, float | None]] = []
        queue = IdentifyQueue(cfg.max_concurrency)
        factory = coordinated_core_factory(queue) if cfg.coordinated else None
        async with trio.open_nursery() as nursery:
            await self._start_gateway(nursery, 0)
            assert self.gateway is not None
            gateway_url = self.gateway.gateway_url
            async with trio.open_nursery() as shards:
                for i in range(cfg.shards):
                    client_config = ClientConfig(
                        token=self.gateway_config.token,
                        gateway_url=gateway_url,
                        shard=(i, cfg.shards),
                        compress=None,
                    )
                    client = GatewayClient(
                        client_config,
                        rng=random.Random(f"{cfg.seed}:shard:{i}"),
                        open_stream=self.network.open_stream,
                        fetch_gateway_bot=self._fetch_gateway_bot,
                        core_factory=factory,
                    )
                    client.on_state(functools.partial(self._on_state, i))
                    self.clients.append(client)
                    shards.start_soon(client.run)
                start = trio.current_time()
                phases.append(("start", start - self.t0, await self._wait_all_ready(
                    cfg.wave_timeout)))
                for number, wave in enumerate(cfg.waves, 1):
                    await trio.sleep(cfg.wave_gap)
                    start = trio.current_time()
                    self.trace.record(KIND_NOTE, text=f"fleet: wave {number}: {wave}")
                    self.ready.clear()  # a shard counts again once it is ready after the wave
                    await self._wave(nursery, wave, number)
                    phases.append((wave, start - self.t0,
                                   await self._wait_all_ready(cfg.wave_timeout)))
                end = trio.current_time() - self.t0
                self.stopped_during_storm = len(self.stopped)
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    for client in self.clients:
                        client.stop("storm over")
                shards.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
        return phases, end

    async def _wave(self, nursery: trio.Nursery, wave: str, number: int) -> None:
        assert self.gateway is not None
        controls = self.gateway.gateway.controls
        if wave == "reconnect":
            controls.apply("reconnect", "all")
        elif wave == "close-4009":
            controls.apply("close", "all", code=4009, reason="Session timed out.")
        elif wave == "restart":
            assert self.gateway_scope is not None
            self.gateway_scope.cancel()
            self.gateway = None
            await trio.sleep(self.config.restart_downtime)
            await self._start_gateway(nursery, number)


def _phase_reports(
    records: list[Record], phases: list[tuple[str, float, float | None]], t0: float
) -> list[PhaseReport]:
    out: list[PhaseReport] = []
    for i, (name, started, ready_after) in enumerate(phases):
        end = phases[i + 1][1] if i + 1 < len(phases) else math.inf
        report = PhaseReport(name, round(started, 3),
                             None if ready_after is None else round(ready_after, 3))
        windows: dict[int, int] = {}
        for rec in records:
            ts = float(rec["ts"]) - t0
            if not started - 1e-6 <= ts < end - 1e-6:  # trace times are rounded to 1 µs
                continue
            kind = rec["kind"]
            if kind == "frame_in" and rec.get("op") == OP_IDENTIFY:
                report.identifies_sent += 1
            elif kind == "frame_in" and rec.get("op") == OP_RESUME:
                report.resumes += 1
            elif kind == "identify_budget":
                report.identifies_accepted += 1
                slot = int(max(0.0, ts - started) // IDENTIFY_WINDOW)
                windows[slot] = windows.get(slot, 0) + 1
            elif kind == "note" and "over max_concurrency" in str(rec.get("text")):
                report.identify_rejections += 1
        if windows:
            report.identifies_per_window = [windows.get(k, 0) for k in range(max(windows) + 1)]
            report.max_accepted_per_window = max(windows.values())
        out.append(report)
    return out


def run_fleet(config: FleetConfig) -> FleetReport:
    """Run one storm in a fresh simulated world and report it."""
    started = time.monotonic()
    fleet = _Fleet(config)
    phases, simulated = run_simulated(fleet.run, seed=config.seed)
    records = fleet.trace.records
    return FleetReport(
        config=config,
        phases=_phase_reports(records, phases, fleet.t0),
        simulated_seconds=round(simulated, 3),
        wall_seconds=round(time.monotonic() - started, 3),
        stopped_shards=fleet.stopped_during_storm,
        trace_records=len(records),
    )


if __name__ == "__main__":  # the old spelling of `gateway-harness storm`, for one release
    from harness.cli import main
    from harness.cli.common import warn_deprecated

    warn_deprecated("gateway-harness storm", "python -m harness.fleet", "gateway-harness storm")
    sys.exit(main(["storm", *sys.argv[1:]]))
