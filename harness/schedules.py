"""Fault schedules, and the Hypothesis strategies that generate them.

A generated schedule is an ordinary :class:`harness.scenario.Scenario`: a handful of fault steps
(byte-level toxics, a proxy going down, protocol-level gateway controls) with start times or
protocol-event triggers, durations and targets, all inside a time horizon, followed by quiet time
in which a correct client must recover. Being a Scenario, a schedule runs through the normal
runner and oracle, and a failing one is written out as a scenario TOML file that replays exactly
(:func:`scenario_toml`).

Use from pytest (sim mode, the reference client or your own ``core_factory`` variant)::

    from hypothesis import given, settings
    from harness.schedules import schedules, run_schedule

    @settings(max_examples=50, deadline=None)
    @given(schedules(horizon=15.0))
    def test_client_survives(scenario):
        result = run_schedule(scenario)
        assert result.passed, result.failed_invariants

Shrinking: every part is drawn so that Hypothesis's simplest choice is the smallest fault. Lists
shrink by deleting steps (the list is the last thing drawn, so deleting never shifts another
draw); times shrink towards 0 s (earlier), durations towards 0.1 s (shorter), each ``one_of``
towards its first branch (a time trigger rather than an event trigger, a one-shot control rather
than a persistent fault, no connection filter), numbers towards the least disruptive value, the
run seed towards 0.

Search: each fault kind (``FAULT_KINDS``) is equally likely; time triggers are drawn as gaps
after the previous time-triggered fault, so faults cluster and hit the client while it recovers
from the last one; byte thresholds are spread over magnitudes so handshake-sized ones are common.

Fairness (a correct client can pass every schedule this module generates):

- no fatal close codes (4004, 4010-4014) and no identify-budget depletion: those demand that the
  client stop, which a generated schedule does not expect;
- the total time persistent faults are switched on is capped (``max_fault_time``) and every
  time-triggered fault ends inside the horizon; the run then lasts ``quiet`` more seconds so the
  client can back off, reconnect and heartbeat again before the run ends;
- the liveness bound (``recovery_bound``) allows a full backoff at the reference client's cap
  (60 s) plus the 1-5 s re-identify wait and one identify slot; a run whose client is not live
  again at its end goes on in simulation until that bound has run out (the world's run-end
  logic), so a client that never comes back fails LV1 rather than leaving it not judged;
- heartbeat-deadline policy changes and session-start-limit changes are not generated (they
  change what "correct" means rather than inject a fault);
- frame faults (``server_frames``) pick only frames whose loss, delay or repetition a correct
  client survives without losing an event it was given: ACKs and server op 1 (dropped, delayed,
  doubled; ACKs also moved behind the next frame) and synthetic dispatches (dropped: a seq gap
  the client cannot know of; delayed, in seq order). Never READY or RESUMED, never a dispatch
  sent twice or out of seq order (a client that keeps each seq once would lose it, and RS3 would
  blame it), never HELLO (20 s before a client may give up on it);
- an op 9 loop (``invalid_session_loop``) lasts at most ``max_duration``: a correct client
  IDENTIFYs once per 5 s (BO2), so it tries once or twice in it and is live soon after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fake_gateway.config import GatewayConfig, scenario_config
from gateway_common.facts import (
    MALFORMED_FRAMES,
    ONE_SHOT_CONTROLS,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
)
from harness.oracle.model import Expectations
from harness.report.model import ScenarioResult
from harness.scenario import (
    GatewayKnobs,
    Scenario,
    Step,
    Trigger,
    parse_scenario,
    scenario_to_toml,
)

DEFAULT_HORIZON = 10.0
DEFAULT_MAX_FAULTS = 4
DEFAULT_MAX_FAULT_TIME = 12.0
DEFAULT_MAX_DURATION = 6.0
# The reference client's backoff cap (60 s), the re-identify wait (<= 5 s), an identify slot (5 s)
# and a connection's handshakes: the longest a correct client may take to be live again.
DEFAULT_RECOVERY_BOUND = 75.0
DEFAULT_QUIET = 15.0
TICK = 0.1  # generated times are whole tenths of a second (readable scenario files)


def fuzz_gateway() -> GatewayKnobs:
    """The gateway knobs generated schedules use by default: a scenario's, but one dispatch a
    second, enough for every seq check and half the simulated traffic."""
    return GatewayKnobs(scenario_config(dispatch_rate=1.0))


# Close codes a generated `close` may use: every non-fatal class (resume and new-session), and an
# empty close frame (None).
SAFE_CLOSE_CODES: tuple[int | None, ...] = (
    4000, None, 1000, 1001, 4001, 4002, 4003, 4005, 4007, 4008, 4009,
)
# Event triggers a step may start on (protocol phases), simplest first.
EVENT_TRIGGERS: tuple[dict[str, Any], ...] = (
    {"after": "ready"},
    {"after": "live"},
    {"after": "hello"},
    {"after": "connection"},
    {"after": "connection", "listener": "resume"},
    {"after": "client_op", "op": 6},  # the client sends RESUME
    {"after": "client_op", "op": 2},  # the client sends IDENTIFY
    {"after": "resumed"},
    {"after": "close"},
)
ONE_SHOT_ACTIONS = (
    "reset",
    "reconnect",
    "close",
    "invalid_session",
    "heartbeat_request",
    "burst",
    "expire_session",
    "invalidate_session",
    "corrupt_compression",
    "malformed_frame",
    "drop_mid_guilds",
)
# One-shots that may also aim at the next connection to open (applied as it opens, before the
# client has said anything: a reset or a close then is a network/server event, while op 7/op 9
# there would be a protocol violation no client can be judged on).
NEXT_CONNECTION_ACTIONS = frozenset({"reset", "close"})
PERSISTENT_ACTIONS = (
    "withhold_acks",
    "go_silent",
    "delay_hello",
    "reject_upgrade",
    "withhold_ready",
    "withhold_resumed",
    "ignore_client_close",
    "reuse_compressor",
    "server_frames",
    "flood",
    "close_on_resume",
    "invalid_session_loop",
)
TOXIC_TYPES = (
    "reset_after",
    "blackhole",
    "latency",
    "timeout",
    "reset_peer",
    "limit_data",
    "slicer",
    "bandwidth",
    "slow_close",
)

# Every fault kind a generated step can be, simplest first: one-shot controls, a proxy going
# down ("proxy"), persistent controls, toxics.
FAULT_KINDS: tuple[str, ...] = (*ONE_SHOT_ACTIONS, "proxy", *PERSISTENT_ACTIONS, *TOXIC_TYPES)


@dataclass(frozen=True)
class ScheduleLimits:
    """The bounds every generated schedule keeps (see the module docstring on fairness)."""

    horizon: float = DEFAULT_HORIZON
    max_faults: int = DEFAULT_MAX_FAULTS
    max_fault_time: float = DEFAULT_MAX_FAULT_TIME
    max_duration: float = DEFAULT_MAX_DURATION
    recovery_bound: float = DEFAULT_RECOVERY_BOUND
    quiet: float = DEFAULT_QUIET

    def __post_init__(self) -> None:
        if self.horizon <= 0:
            raise ValueError(f"horizon must be positive, got {self.horizon}")
        if self.max_faults < 1:
            raise ValueError(f"max_faults must be at least 1, got {self.max_faults}")
        if self.max_duration < TICK or self.max_fault_time < TICK:
            raise ValueError("max_duration and max_fault_time must be at least 0.1 s")

    @property
    def run_duration(self) -> float:
        return self.horizon + self.quiet


# Strategy builders are cached: Hypothesis validates a new strategy object on its first draw, which
# was a third of generation's cost when every draw built its sub-strategies anew.
@cache
def _ticks(low: float, high: float) -> st.SearchStrategy[float]:
    """A time in whole ticks between low and high; shrinks towards low."""
    lo, hi = round(low / TICK), max(round(low / TICK), round(high / TICK))
    return st.integers(lo, hi).map(lambda n: round(n * TICK, 1))


@cache
def triggers(horizon: float = DEFAULT_HORIZON) -> st.SearchStrategy[Trigger]:
    """Start triggers: a time in the horizon (simplest), or a protocol event plus a delay."""
    at = _ticks(0.0, horizon).map(lambda t: Trigger(at=t))
    event = st.builds(
        lambda ev, count, delay: Trigger(count=count, delay=delay, **ev),
        st.sampled_from(EVENT_TRIGGERS),
        st.integers(1, 2),
        _ticks(0.0, 5.0),
    )
    # Two in three steps start at a time: an event trigger may never fire (no second RESUME in
    # a run without losses), which wastes the example.
    return st.one_of(at, at, event)


@cache
def _byte_counts(most: int) -> st.SearchStrategy[int]:
    """Byte thresholds spread evenly over magnitudes (1, 2, 4, ... most), so thresholds inside a
    TLS or WebSocket handshake (a few hundred bytes) are as likely as ones deep in a session."""
    top = max(0, most.bit_length() - 1)
    return st.integers(0, top).map(lambda e: 2**e)


@cache
def _toxic_attributes(toxic_type: str) -> st.SearchStrategy[dict[str, Any]]:
    ints = st.integers
    if toxic_type == "reset_after":
        return st.fixed_dictionaries(
            {"bytes": _byte_counts(4096)},
            optional={"mode": st.sampled_from(["rst", "fin"]), "forward": st.booleans()},
        )
    if toxic_type == "blackhole":
        return st.just({})
    if toxic_type == "latency":
        return ints(100, 5000).flatmap(
            lambda ms: st.fixed_dictionaries({"latency": st.just(ms), "jitter": ints(0, ms // 2)})
        )
    if toxic_type in ("timeout", "reset_peer"):
        return st.fixed_dictionaries({"timeout": ints(0, 5000)})
    if toxic_type == "limit_data":
        return st.fixed_dictionaries({"bytes": _byte_counts(32768)})
    if toxic_type == "slicer":
        return ints(1, 512).flatmap(
            lambda avg: st.fixed_dictionaries(
                {
                    "average_size": st.just(avg),
                    "size_variation": ints(0, avg),
                    "delay": ints(0, 20000),
                }
            )
        )
    if toxic_type == "bandwidth":
        return st.fixed_dictionaries({"rate": ints(1, 64)})
    if toxic_type == "slow_close":
        return st.fixed_dictionaries({"delay": ints(0, 5000)})
    raise ValueError(f"no attribute strategy for toxic {toxic_type!r}")


@cache
def _connection_filter() -> st.SearchStrategy[tuple[int | None, int | None]]:
    """(only_connection, from_connection): no filter, the Nth connection, or the Nth and later."""
    return st.one_of(
        st.just((None, None)),
        st.integers(1, 4).map(lambda n: (n, None)),
        st.integers(1, 4).map(lambda n: (None, n)),
    )


_URL_TARGETS = st.sampled_from(["both", "resume", "discovery"])
_STREAMS = st.sampled_from(["upstream", "downstream"])
_TOXICITIES = st.sampled_from([1.0, 0.5])
_CONN_TARGETS = st.sampled_from(["all", "next"])
_ALL_CONNECTIONS = st.just("all")


def toxic_steps(limits: ScheduleLimits, types: Sequence[str] = TOXIC_TYPES
                ) -> st.SearchStrategy[Step]:
    """A toxic on the discovery and/or resume proxy (Toxiproxy semantics plus our extensions)."""

    toxic_types = st.sampled_from(types)

    @st.composite
    def build(draw: st.DrawFn) -> Step:
        toxic_type = draw(toxic_types)
        only, from_conn = draw(_connection_filter())
        return Step(
            name="",
            kind="toxic",
            start=draw(triggers(limits.horizon)),
            duration=draw(_ticks(TICK, limits.max_duration)),
            type=toxic_type,
            attributes=draw(_toxic_attributes(toxic_type)),
            stream=draw(_STREAMS),
            toxicity=draw(_TOXICITIES),
            target=draw(_URL_TARGETS),
            only_connection=only,
            from_connection=from_conn,
        )

    return build()


def proxy_steps(limits: ScheduleLimits) -> st.SearchStrategy[Step]:
    """A proxy going down (connections refused and cut) for a while."""
    return st.builds(
        lambda start, duration, target: Step(
            name="", kind="proxy", action="down", start=start, duration=duration, target=target
        ),
        triggers(limits.horizon),
        _ticks(TICK, limits.max_duration),
        _URL_TARGETS,
    )


@cache
def _control_params(action: str) -> st.SearchStrategy[dict[str, Any]]:
    if action == "close":
        # No code param: an empty close frame (the gateway's default).
        return st.sampled_from(SAFE_CLOSE_CODES).map(lambda c: {} if c is None else {"code": c})
    if action == "invalid_session":
        return st.fixed_dictionaries(
            {"resumable": st.booleans()}, optional={"close": st.booleans()}
        )
    if action == "reconnect":
        return st.fixed_dictionaries({}, optional={"close_after_ms": st.integers(0, 5000)})
    if action == "heartbeat_request":
        return st.fixed_dictionaries(
            # no d: null (TOML has no null), else a bogus seq or garbage (F10)
            {}, optional={"d": st.one_of(st.integers(-1, 1000), st.just("garbage"))}
        )
    if action == "burst":
        return st.fixed_dictionaries(
            {"count": st.integers(1, 50)},
            optional={"size": st.integers(0, 100_000), "t": st.just("GUILD_CREATE")},
        )
    if action == "server_frames":
        return _server_frames_params()
    if action == "flood":
        return st.fixed_dictionaries(
            {"rate": st.integers(10, 200)}, optional={"size": st.integers(0, 10_000)})
    if action == "drop_mid_guilds":
        return st.fixed_dictionaries({"guilds": st.integers(0, 3)})
    if action == "close_on_resume":
        return st.sampled_from(SAFE_CLOSE_CODES).map(lambda c: {} if c is None else {"code": c})
    if action == "delay_hello":
        return st.fixed_dictionaries({"ms": st.integers(100, 10000)})
    if action == "malformed_frame":
        return st.fixed_dictionaries({"frame": st.sampled_from(MALFORMED_FRAMES)})
    if action == "reject_upgrade":
        return st.fixed_dictionaries(
            {"status": st.sampled_from([503, 502, 500, 429, 404])},
            optional={"listener": st.sampled_from(["resume", "discovery"])},
        )
    return st.just({})


# The dispatches generated schedules may drop or delay: the gateway's synthetic events (never
# READY, RESUMED or a GUILD_CREATE of the start-up stream: see the fairness notes).
SYNTHETIC_EVENT = GatewayConfig().synthetic_event


@cache
def _server_frames_params() -> st.SearchStrategy[dict[str, Any]]:
    """server_frames' picks that are fair to a correct client (module docstring), the lost ACK
    first."""
    count = st.integers(1, 3)
    ms = st.integers(100, 3000)
    return st.one_of(
        st.fixed_dictionaries({"op": st.just(OP_HEARTBEAT_ACK)}, optional={"count": count}),
        st.fixed_dictionaries({"mode": st.just("delay"), "op": st.just(OP_HEARTBEAT_ACK),
                               "ms": ms}, optional={"count": count}),
        st.fixed_dictionaries({"mode": st.sampled_from(["duplicate", "drop", "delay"]),
                               "op": st.just(OP_HEARTBEAT)}, optional={"count": count}),
        st.fixed_dictionaries({"mode": st.just("reorder"), "op": st.just(OP_HEARTBEAT_ACK),
                               "ms": ms}),
        st.fixed_dictionaries({"mode": st.sampled_from(["drop", "delay"]),
                               "t": st.just(SYNTHETIC_EVENT)},
                              optional={"count": count, "ms": st.integers(100, 2000)}),
        st.fixed_dictionaries({"mode": st.just("duplicate"), "op": st.just(OP_HEARTBEAT_ACK)}),
    )


def control_steps(
    limits: ScheduleLimits,
    one_shots: Sequence[str] = ONE_SHOT_ACTIONS,
    persistent: Sequence[str] = PERSISTENT_ACTIONS,
) -> st.SearchStrategy[Step]:
    """A protocol-level fault: one-shot (op 7, op 9, close, reset, ...) or switched on and off."""

    one_shot_actions, persistent_actions = st.sampled_from(one_shots), st.sampled_from(persistent)

    @st.composite
    def one_shot(draw: st.DrawFn) -> Step:
        action = draw(one_shot_actions)
        return Step(
            name="",
            kind="control",
            action=action,
            start=draw(triggers(limits.horizon)),
            params=draw(_control_params(action)),
            conn_target=draw(
                _CONN_TARGETS if action in NEXT_CONNECTION_ACTIONS else _ALL_CONNECTIONS
            ),
        )

    @st.composite
    def switched(draw: st.DrawFn) -> Step:
        action = draw(persistent_actions)
        return Step(
            name="",
            kind="control",
            action=action,
            start=draw(triggers(limits.horizon)),
            duration=draw(_ticks(TICK, limits.max_duration)),
            params=draw(_control_params(action)),
            conn_target="all",
        )

    branches = ([one_shot()] if one_shots else []) + ([switched()] if persistent else [])
    return st.one_of(branches)


def fault_steps(
    limits: ScheduleLimits | None = None, kinds: Sequence[str] | None = None
) -> st.SearchStrategy[Step]:
    """One fault step of any kind in ``kinds`` (default: all of ``FAULT_KINDS``), each kind
    equally likely.

    Simplest first (what shrinking moves towards): one-shot controls (a reset before all), a proxy
    going down, persistent controls, then toxics.
    """
    limits = limits or ScheduleLimits()
    wanted = check_fault_kinds(kinds) if kinds is not None else FAULT_KINDS
    branches: list[st.SearchStrategy[Step]] = []
    for kind in FAULT_KINDS:
        if kind not in wanted:
            continue
        if kind in ONE_SHOT_ACTIONS:
            branches.append(control_steps(limits, one_shots=(kind,), persistent=()))
        elif kind == "proxy":
            branches.append(proxy_steps(limits))
        elif kind in PERSISTENT_ACTIONS:
            branches.append(control_steps(limits, one_shots=(), persistent=(kind,)))
        else:
            branches.append(toxic_steps(limits, types=(kind,)))
    return st.one_of(branches)


def check_fault_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """The kinds, validated (ValueError naming the first unknown one and the known ones)."""
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    if not kinds:
        raise ValueError("name at least one fault kind")
    return tuple(kinds)


def schedules(
    horizon: float = DEFAULT_HORIZON,
    *,
    max_faults: int = DEFAULT_MAX_FAULTS,
    max_fault_time: float = DEFAULT_MAX_FAULT_TIME,
    max_duration: float = DEFAULT_MAX_DURATION,
    recovery_bound: float = DEFAULT_RECOVERY_BOUND,
    quiet: float = DEFAULT_QUIET,
    tls: bool | None = None,
    seeds: st.SearchStrategy[int] | None = None,
    steps: st.SearchStrategy[Step] | None = None,
    kinds: Sequence[str] | None = None,
    gateway: GatewayKnobs | None = None,
    name: str = "fuzz",
    compression: str | None = None,
) -> st.SearchStrategy[Scenario]:
    """Generated disconnect schedules as runnable Scenarios (see the module docstring).

    ``tls``: None draws it (TLS handshakes are where the seed failure lives), True/False fixes it.
    ``compression``: None draws the transport compression, none or zlib-stream (what most real
    clients ask for: a new connection's fresh zlib context is where reuses-zlib-inflater's bug
    lives; shrinks to none); a value fixes it.
    ``seeds``: the run seed strategy (default: any 32-bit seed, shrinking to 0).
    ``steps``: a custom step strategy (default: :func:`fault_steps`).
    ``kinds``: only these fault kinds (names from ``FAULT_KINDS``), e.g. ``("reset", "proxy")``.
    """
    limits = ScheduleLimits(horizon, max_faults, max_fault_time, max_duration, recovery_bound,
                            quiet)
    # Time triggers are drawn as gaps after the previous time-triggered fault, so faults cluster
    # and interact (a fault while the client recovers from the last one); a gap shrinks to 0.
    gap = round(max(TICK, min(horizon, 2 * horizon / max_faults)), 1)
    step_strategy = (
        steps if steps is not None else fault_steps(replace(limits, horizon=gap), kinds)
    )
    seed_strategy = seeds if seeds is not None else st.integers(0, 2**32 - 1)
    tls_strategy = st.booleans() if tls is None else st.just(tls)
    knobs = gateway or fuzz_gateway()
    compression_strategy = (st.sampled_from(("none", "zlib-stream")) if compression is None
                            else st.just(compression))

    step_lists = st.lists(step_strategy, max_size=limits.max_faults)

    @st.composite
    def build(draw: st.DrawFn) -> Scenario:
        # The list comes last: Hypothesis deletes list elements most easily when no other draw
        # follows them.
        use_tls = draw(tls_strategy)
        compress = draw(compression_strategy)
        seed = draw(seed_strategy)
        drawn = draw(step_lists)
        if steps is None:
            drawn = _accumulate_gaps(drawn, limits.horizon)
        return make_schedule(drawn, limits, seed=seed,
                             gateway=replace(knobs, tls=use_tls, compression=compress), name=name)

    return build()


def _accumulate_gaps(steps: Sequence[Step], horizon: float) -> list[Step]:
    """Turn the ``at`` of time-triggered steps from gaps into times (capped at the horizon)."""
    out: list[Step] = []
    clock = 0.0
    for step in steps:
        if step.start.at is not None:
            clock = round(min(horizon, clock + step.start.at), 1)
            step = replace(step, start=replace(step.start, at=clock))
        out.append(step)
    return out


def make_schedule(
    steps: Iterable[Step],
    limits: ScheduleLimits | None = None,
    *,
    seed: int = 0,
    gateway: GatewayKnobs | None = None,
    name: str = "fuzz",
    description: str | None = None,
    tags: Sequence[str] = ("fuzz",),
) -> Scenario:
    """A runnable Scenario from fault steps, applying the fairness limits.

    Steps are named f1, f2, ... in order; time-triggered steps are cut to end inside the horizon
    and durations are cut so their sum stays within ``max_fault_time`` (a persistent step left
    with less than 0.1 s of the budget is dropped).
    """
    limits = limits or ScheduleLimits()
    fitted: list[Step] = []
    budget = limits.max_fault_time
    for i, step in enumerate(steps):
        step = replace(step, name=f"f{i + 1}")
        if step.kind == "control" and step.action in ONE_SHOT_CONTROLS:
            fitted.append(replace(step, duration=None, stop=None))
            continue
        duration = min(step.duration or TICK, limits.max_duration)
        if step.start.at is not None:
            duration = min(duration, max(TICK, limits.horizon - step.start.at))
        duration = round(min(duration, budget), 1)
        if duration < TICK:
            continue  # the fault-time budget is spent: the step is left out
        budget -= duration
        fitted.append(replace(step, duration=duration, stop=None))
    scenario = Scenario(
        name=name,
        description=description or _describe(fitted, seed),
        source="generated",
        tags=tuple(tags),
        seed=seed,
        gateway=gateway or fuzz_gateway(),
        steps=tuple(fitted),
        expect=Expectations(recovery_bound=limits.recovery_bound, duration=limits.run_duration),
    )
    return scenario


def _describe(steps: Sequence[Step], seed: int) -> str:
    if not steps:
        return f"A generated schedule with no faults (run seed {seed}): a quiet session."
    faults = "; ".join(step.describe() for step in steps)
    return (
        f"A generated disconnect schedule (run seed {seed}) with {len(steps)} fault(s): {faults}."
    )


# ------------------------------------------------------------------------------------------------
# Wall-clock campaigns (`gateway-harness fuzz CLIENT`, `fuzz --command`)

# Toxic attributes and control params that are times (ms, slicer's delay µs): they scale with
# the heartbeat interval like the schedule's own times.
_TIME_ATTRIBUTES = frozenset({"latency", "jitter", "timeout", "delay"})
_TIME_PARAMS = frozenset({"ms", "close_after_ms"})


def wallclock_expect(limits: ScheduleLimits, interval: float = 1.0, *,
                     until_bound: bool = False) -> Expectations:
    """LV1's bound and the run's length for a wall-clock schedule against a client beating every
    ``interval`` s. The bound is ``limits.recovery_bound`` (wall-clock seconds: backoff does not
    stretch with the heartbeat) plus two intervals to be seen live and beating. The run lasts
    the horizon plus the quiet time (both in intervals), as in simulation; ``until_bound``: at
    least until the bound has run out after the horizon, so a client that never comes back fails
    LV1 rather than leaving it not judged (a campaign runs a schedule that long again when the
    client was not live at the end of the shorter run: most runs need not pay for it, and a run
    whose event-triggered fault never fires lasts its whole duration)."""
    bound = round(limits.recovery_bound + 2 * interval, 1)
    duration = limits.run_duration * interval
    if until_bound:
        duration = max(duration, limits.horizon * interval + bound + 2 * interval)
    return Expectations(recovery_bound=bound, duration=round(duration, 1))


def wallclock_schedule(scenario: Scenario, limits: ScheduleLimits, interval: float = 1.0, *,
                       until_bound: bool = False) -> Scenario:
    """A generated schedule made fit for a wall-clock run against a client that beats every
    ``interval`` seconds (1 s: whatever HELLO says, the compressed interval; more for a client on
    its own clock, e.g. 41.25 s).

    Schedules are drawn in heartbeat intervals of 1 s; their times (starts, event delays,
    durations, and the time attributes of toxics and controls) scale by ``interval`` / 1 s, and
    HELLO advertises that interval. The expectations are ``wallclock_expect``'s. A schedule
    already made fit keeps its times (``until_bound`` then only lengthens the run).
    """
    if "wallclock" in scenario.tags:
        return replace(scenario, expect=replace(
            scenario.expect, duration=wallclock_expect(limits, interval,
                                                      until_bound=until_bound).duration))
    factor = interval / 1.0

    def scaled(value: float) -> float:
        return round(value * factor, 1)

    def times(table: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
        return {k: (round(v * factor) if k in names and isinstance(v, int | float)
                    and not isinstance(v, bool) else v) for k, v in table.items()}

    steps = []
    for step in scenario.steps:
        start = step.start
        start = replace(start, at=None if start.at is None else scaled(start.at),
                        delay=scaled(start.delay))
        stop = step.stop if step.stop is None else replace(step.stop,
                                                           delay=scaled(step.stop.delay))
        steps.append(replace(
            step, start=start, stop=stop,
            duration=None if step.duration is None else scaled(step.duration),
            attributes=times(step.attributes, _TIME_ATTRIBUTES),
            params=times(step.params, _TIME_PARAMS)))
    gateway = scenario.gateway
    if factor != 1.0:
        config = replace(gateway.config, heartbeat_interval_ms=round(interval * 1000))
        gateway = replace(gateway, config=config)
    return replace(scenario, steps=tuple(steps), gateway=gateway,
                   tags=(*scenario.tags, "wallclock"),
                   expect=replace(wallclock_expect(limits, interval, until_bound=until_bound),
                                  max_concurrency=gateway.config.max_concurrency),
                   description=_describe(steps, scenario.seed or 0))


def run_schedule(
    scenario: Scenario,
    client: str = "reference",
    *,
    out_dir: Path | None = None,
) -> ScenarioResult:
    """Run a schedule in simulation mode (its own seed) and judge it."""
    from harness.world import RunOptions, run_scenario

    return run_scenario(
        scenario, RunOptions(mode="sim", client=client, seed=scenario.seed or 0, out_dir=out_dir)
    )


def schedule_id(scenario: Scenario) -> str:
    """A short content hash of a schedule (steps, knobs, seed): names failure files."""
    text = scenario_toml(replace(scenario, name="x", description="x x x x x"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------------------------
# Writing a schedule as a scenario file


def scenario_toml(scenario: Scenario, comments: Sequence[str] = ()) -> str:
    """The scenario as TOML text that ``load_scenario`` reads back to an equal Scenario
    (``harness.scenario.scenario_to_toml``, with ``comments`` as ``#`` lines at the top)."""
    return scenario_to_toml(scenario, comments=comments)


def write_scenario(scenario: Scenario, path: str | Path, comments: Sequence[str] = ()) -> Path:
    """Write the scenario file and check that it loads back as the same schedule."""
    path = Path(path)
    text = scenario_toml(scenario, comments)
    loaded = parse_scenario(text, path)
    if replace(loaded, path=None) != replace(scenario, path=None, description=loaded.description):
        raise AssertionError(f"{path}: the written scenario does not load back identically")
    path.write_text(text, encoding="utf-8")
    return path
