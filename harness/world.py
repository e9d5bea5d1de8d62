"""The world: wires the fake gateway, the fault proxies and a client together and runs a scenario.

One function call per run, plain data in and out (DESIGN.md, data flow)::

    result = run_scenario(scenario, RunOptions(mode="sim", seed=7))

The same ``_World`` serves both modes. Only the transport differs:

- ``real``: the gateway listens on 127.0.0.1 TCP, the embedded Toxiproxy-compatible proxies (or a
  real Toxiproxy at ``TOXIPROXY_URL``) sit in front of it, the client connects over real TCP.
- ``sim``: everything runs in one ``trio.run`` under ``MockClock(autojump_threshold=0)`` on a
  ``MemoryNetwork``; trio's scheduler is made deterministic and seeded from the run seed
  (``harness.simulation``).

The gateway is opened on either transport by ``fake_gateway.opened.open_gateway``; the client
is started by a starter from ``harness.world_clients``.

Topology (both modes)::

    client --> proxy "discovery" --> gateway listener "discovery"
           \\-> proxy "resume"    --> gateway listener "resume"

The gateway announces the proxies' addresses (in /gateway/bot and READY's resume_gateway_url), so
every byte the client exchanges with the gateway crosses a proxy where a toxic can act on it.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.tls import TLSFiles, make_tls
from gateway_common.errors import UserError, user_error_in
from gateway_common.facts import (
    LISTENERS,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    POLICY_CONTROLS,
)
from gateway_common.trace import (
    KIND_CONN_OPEN,
    KIND_FAULT,
    KIND_FIRST_CONTACT,
    KIND_NOTE,
    KIND_REST,
    Record,
    Trace,
    write_jsonl,
)
from harness.client_env import ClientEnv, ClientOutcome, ClientStarter
from harness.faults.backend import (
    FaultBackend,
    FaultBackendError,
    ToxicSpec,
    ToxiproxyBackend,
    UnsupportedByRealToxiproxy,
    open_embedded_backend,
    unsupported_by_real_toxiproxy,
)
from harness.faults.memnet import MemoryNetwork
from harness.oracle import INVARIANTS, Verdict, judge
from harness.oracle.liveness import check_lv1, lv1_judged_by
from harness.oracle.view import RunView
from harness.report.model import ScenarioResult
from harness.scenario import Scenario, Step, TriggerWatch, run_settled
from harness.simulation import run_simulated
from harness.world_clients import adapter_starter, reference_starter

PROXY_NAMES = LISTENERS  # one proxy in front of each gateway listener, named after it
SIM_HOST = "127.0.0.1"  # memnet addresses look like TCP ones so TLS certificates match
# How long a client may take from its start to its first connection attempt (wall clock): a
# Node.js client on a busy machine needs seconds; one that needs a minute is not starting.
STARTUP_TIMEOUT_S = 60.0
# Seconds a run keeps of its deadline to stop the client (SIGTERM, SIGKILL 5 s later:
# adapters.process.STOP_GRACE_S) and clear the faults, when it goes on past its duration for LV1.
_STOP_MARGIN = 8.0


@dataclass
class RunOptions:
    mode: str = "real"  # "real" | "sim"
    client: str = "reference"  # "reference", a planted-bug mutant name, or an adapter name
    seed: int = 0
    out_dir: Path | None = None  # where the trace and delivery log are written (None: nowhere)
    toxiproxy_url: str | None = None  # a real Toxiproxy server (real mode only)
    deadline_slack: float = 30.0  # seconds past the scenario's duration before a run is killed
    adapter: Any = None  # harness.adapters.contract.Adapter for third-party clients
    # real mode: seconds from the client's start to its first connection attempt, at most
    startup_timeout: float = STARTUP_TIMEOUT_S
    repeat: int | None = None  # which run of a repeated cell this is (1-based; None: run once)


def run_scenario(scenario: Scenario, options: RunOptions) -> ScenarioResult:
    """Run one scenario to completion in a fresh trio run and judge it."""
    started = time.monotonic()
    seed = options.seed if scenario.seed is None else scenario.seed
    options = RunOptions(**{**options.__dict__, "seed": seed})
    if options.mode not in ("sim", "real"):
        raise UserError(f"--mode: expected real or sim, got {options.mode!r}")
    try:
        if options.mode == "sim":
            result = run_simulated(_run_world, scenario, options, seed=seed)
        else:
            result = trio.run(_run_world, scenario, options)
    except BaseExceptionGroup as group:  # a client that cannot start, raised in a task: one line
        error = user_error_in(group)
        if error is None:
            raise
        raise error from None
    result.duration = time.monotonic() - started
    return result


def harness_error(exc: Exception) -> str:
    """A real run's one-line ERROR for a bug of ours (its traceback goes to stderr): the other
    runs of a `validate` matrix go on, and this one's trace is still written."""
    traceback.print_exception(exc)
    while isinstance(exc, BaseExceptionGroup) and isinstance(exc.exceptions[0], Exception):
        exc = exc.exceptions[0]  # a nursery's group: name what was raised in it
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {Path(where[0].filename).name}:{where[0].lineno}" if where else ""
    return f"harness error (a bug in gateway-harness){at}: {type(exc).__name__}: {exc}"


def _none_judged(why: str) -> list[Verdict]:
    """Every trace invariant not judged, for ``why``."""
    return [Verdict(inv.code, "not_judged", why) for inv in INVARIANTS if inv.check is not None]


async def _run_world(scenario: Scenario, options: RunOptions) -> ScenarioResult:
    world = _World(scenario, options)
    return await world.run()


class _World:
    def __init__(self, scenario: Scenario, options: RunOptions) -> None:
        self.scenario = scenario
        self.options = options
        self.sim = options.mode == "sim"
        self.trace = Trace(clock=trio.current_time)
        self.t0 = 0.0
        self.network = MemoryNetwork() if self.sim else None
        seed = options.seed
        self.gateway_rng = random.Random(f"{seed}:gateway")
        knobs = scenario.gateway
        self.config = GatewayConfig(**knobs.config_overrides())
        hello_ms = getattr(options.adapter, "hello_interval_ms", None)
        if hello_ms is not None:  # the client beats on its own clock: tell it the real interval
            self.config.heartbeat_interval_ms = hello_ms
        self.app = _is_app(options.adapter)  # an unmodified app (issue 18)
        if self.app:
            self.config.accept_any_token = True  # it brings its own token
        self.gateway = FakeGateway(self.config, self.trace, self.gateway_rng)
        self.backend: FaultBackend | None = None
        self._proxy_urls: dict[str, str] = {}
        self._live_steps: dict[str, Step] = {}
        self._switched_on: set[str] = set()  # steps switched on at least once
        self._steps_over = trio.Event()  # set when _steps_done() first holds
        # The scenario's clock starts at the client's first connection attempt (real mode; in
        # simulation the client starts with the world). t0 moves there when it happens.
        self._contact = trio.Event()
        self._startup_over = trio.Event()  # first contact, or the client ended before it
        self._client_started = 0.0
        self._startup_error: str | None = None
        self._deadline_scope: trio.CancelScope | None = None
        # _normalised_records' copies, made once per record (the run polls them as it settles)
        self._normalised: list[Record] = []
        self._normalised_t0 = self.t0
        self._deadline_text = (f"{scenario.expect.duration + options.deadline_slack:g} s"
                               + ("" if self.sim else f" + {options.startup_timeout:g} s to start"))

    # ---- the run -----------------------------------------------------------------------------

    async def run(self) -> ScenarioResult:
        self.t0 = trio.current_time()
        if self.sim:  # the in-process client starts with the world, at virtual time 0
            self._contact.set()
            self._startup_over.set()
        if self.sim and self.options.adapter is None:
            # The in-process reference client writes no files and simulation's TLS material is
            # fixed: one directory per process, not a mkdtemp and rmtree per run (on a slow
            # filesystem they cost more than a short run's simulation).
            return await self._run_and_judge(_sim_process_dir())
        # Run-time files (TLS material, client logs without an out_dir) live in tmp and go with
        # the run; the trace and delivery log are kept only where the caller asked (out_dir).
        tmp = Path(tempfile.mkdtemp(prefix="gateway-harness-run-"))
        try:
            return await self._run_and_judge(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def _run_and_judge(self, tmp: Path) -> ScenarioResult:
        scenario, options = self.scenario, self.options
        out_dir = options.out_dir
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        outcome = ClientOutcome()
        error: str | None = None
        deadline = scenario.expect.duration + options.deadline_slack
        if not self.sim:  # until first contact; then duration + slack from it (on_record)
            deadline += options.startup_timeout
        with trio.move_on_after(deadline) as deadline_scope:
            self._deadline_scope = deadline_scope
            try:
                outcome = await self._run_inside(tmp, out_dir or tmp)
            except UserError:
                raise
            except FaultBackendError as exc:
                error = f"fault backend: {exc}"
            except OSError as exc:
                error = f"network: {exc}"
            except Exception as exc:
                # a user's mistake (raised in a task) is still one line; a simulated run
                # replays from its seed, so its bug surfaces as it is
                if self.sim or (isinstance(exc, ExceptionGroup) and user_error_in(exc)):
                    raise
                error = harness_error(exc)
        if deadline_scope.cancelled_caught:
            error = (f"the run did not finish within its deadline ({self._deadline_text}); "
                     "it was killed")
        records = self._normalised_records()
        delivery = outcome.delivery_log
        if delivery is not None:
            delivery = [self._normalise_delivery(rec) for rec in delivery]
        trace_path = None
        if out_dir is not None:
            trace_path = out_dir / f"{self._file_stem()}.trace.jsonl"
            write_jsonl(trace_path, records)
            if delivery is not None:
                write_jsonl(trace_path.with_name(trace_path.name.replace(".trace.", ".delivery.")),
                            delivery)
        if self._startup_error is not None and error is None:
            error = self._startup_error
            # A client that never tried proves nothing either way: no verdict is judged.
            verdicts = _none_judged(f"the run did not complete: {error}")
        else:
            try:
                verdicts = judge(records, delivery, scenario.expect)
            except Exception as exc:
                if self.sim:
                    raise
                oracle_error = harness_error(exc)
                error = error or oracle_error
                verdicts = _none_judged(f"the oracle failed: {oracle_error}")
        verdicts.append(_process_verdict(outcome, scenario.expect.outcome == "stop", error))
        return ScenarioResult(
            name=scenario.name,
            mode=options.mode,
            client=options.client,
            verdicts=verdicts,
            trace_path=trace_path,
            records=records,
            delivery_log=delivery,
            stderr_tail=outcome.stderr_tail,
            error=error or outcome.error,
            description=scenario.description,
            source=scenario.source,
            tags=scenario.tags,
            seed=options.seed,
            scenario_path=scenario.path,
            recovery_bound=scenario.expect.recovery_bound,
            repeat=options.repeat,
        )

    def _file_stem(self) -> str:
        """NAME.MODE.CLIENT, and .runK for the K-th run of a repeated cell."""
        options = self.options
        stem = f"{self.scenario.name}.{options.mode}.{options.client}"
        return stem if options.repeat is None else f"{stem}.run{options.repeat}"

    async def _run_inside(self, tmp: Path, out_dir: Path) -> ClientOutcome:
        scenario, options = self.scenario, self.options
        knobs = scenario.gateway
        tls = None
        if knobs.tls or options.adapter is not None:  # third-party shims trust our CA: wss
            # sim: fixed RSA material, so handshakes have the same size in every process
            tls = _sim_tls(tmp / "tls") if self.sim else make_tls(tmp / "tls")
            if self.app:  # a certificate for Discord's names; ca_file keeps the system's roots
                from harness.adapters.app.mode import app_tls

                tls = app_tls(tmp / "tls")
        async with trio.open_nursery() as nursery:
            # The REST server is TCP: simulation answers /gateway/bot without HTTP.
            opened: OpenedGateway = await nursery.start(partial(
                open_gateway, self.gateway, self.network, tls=tls,
                rest_port=None if self.sim else 0))
            async with self._open_backend() as backend:
                self.backend = backend
                for name in PROXY_NAMES:
                    listen = f"{SIM_HOST}:0"
                    info = await backend.create_proxy(name, str(opened.listeners[name]), listen)
                    self._proxy_urls[name] = f"{opened.scheme}://{info.listen}"
                if self.app:  # Discord's own URLs, which the app's redirect sends to the proxies
                    from harness.adapters.app import mode

                    opened.announce(mode.ANNOUNCED_GATEWAY_URL, mode.ANNOUNCED_RESUME_URL)
                else:
                    opened.announce(self._proxy_urls["discovery"], self._proxy_urls["resume"])
                self.trace.record(
                    KIND_NOTE, text=f"world: {options.mode} mode, seed {options.seed}, "
                    f"discovery {self._proxy_urls['discovery']}, "
                    f"resume {self._proxy_urls['resume']}, client {options.client}")
                self._watch_first_contact()
                await self._arm_steps(nursery)
                env = ClientEnv(
                    gateway_url=self._proxy_urls["discovery"],
                    rest_url=opened.rest_url,
                    resume_url=self._proxy_urls["resume"],
                    token=self.config.token,
                    ca_file=opened.ca_file,
                    open_stream=self.network.open_stream if self.network is not None else None,
                    fetch_gateway_bot=opened.fetch_gateway_bot if self.sim else None,
                    seed=options.seed,
                    delivery_log_path=None,
                    compress=None if knobs.compression == "none" else knobs.compression,
                    log_dir=out_dir / f"{self._file_stem()}.client",
                    expects_stop=scenario.expect.outcome == "stop",
                    deadline=(scenario.expect.duration + options.deadline_slack / 2
                              + (0.0 if self.sim else options.startup_timeout)),
                    on_exit=self._startup_over.set,
                )
                starter = client_starter(options)
                self._client_started = trio.current_time()
                stop = await starter(nursery, env)
                if not self.sim:
                    with trio.move_on_after(options.startup_timeout):
                        await self._startup_over.wait()
                if self._contact.is_set():
                    await self._wait_until_settled()
                else:
                    self.trace.record(KIND_NOTE, text="world: the client made no connection "
                                      "attempt; stopping it")
                # Marks the end of the observed run (the timeline's right edge): what follows is
                # the harness shutting the client down.
                self.trace.record(KIND_NOTE, text="world: run over, stopping the client")
                outcome = await stop()
                if not self._contact.is_set():
                    # the starter's own diagnosis first (app mode: the hook never loaded)
                    self._startup_error = outcome.error or _startup_error(
                        outcome, options.startup_timeout)
                with trio.CancelScope(shield=True):
                    await self._clear_steps()
            nursery.cancel_scope.cancel()
        return outcome

    async def _wait_until_settled(self) -> None:
        """Sleep until the scenario's duration, or earlier once the verdicts can no longer change
        (every fault has come and gone and the client is live again: ``run_settled``).

        A client not live again by then, whose backoff allowance (LV1's ``lv1_judged_by``) runs
        past the duration, gets the run extended until LV1 can judge it, by at most
        ``_extension_limit()``: past that LV1 fails it, naming the allowance that ran on."""
        end = self.t0 + self.scenario.expect.duration
        hard_end = end + self._extension_limit()
        poll = max(0.25, self.config.heartbeat_interval / 2)
        start = trio.current_time()
        polls = 0
        if not self._steps_done():
            # run_settled reads the whole trace: no polling (and no wakeups) while faults are
            # pending; then poll on the same grid as from the start.
            with trio.move_on_at(end):
                await self._steps_over.wait()
            polls = int((trio.current_time() - start) // poll)
        while True:
            while trio.current_time() < end:
                polls += 1
                await trio.sleep_until(min(start + polls * poll, end))
                now = trio.current_time()
                if not self._steps_done():
                    continue
                records = self._normalised_records()
                if not _may_have_settled(self.scenario, records):
                    continue
                if run_settled(self.scenario, records, now - self.t0):
                    return
            later = self._lv1_judged_by()
            if later is None or later <= end + 1e-9 or end >= hard_end:
                return
            end = min(later, hard_end)
            if self.sim and self._deadline_scope is not None:  # virtual time: room to stop
                self._deadline_scope.deadline = max(self._deadline_scope.deadline,
                                                    end + self.options.deadline_slack)
            self.trace.record(KIND_NOTE, text=(
                f"world: the run goes on to {end - self.t0:.2f} s, past its duration: LV1 "
                "allows the client its next backoff step after the last fault cleared"))

    def _extension_limit(self) -> float:
        """Seconds a run may go on past its duration for LV1 (``_wait_until_settled``).

        On the wall clock, the room its deadlines leave: the run's (duration + deadline slack
        from first contact) and the client process's (duration + half the slack + the start-up
        timeout from its start), less ``_STOP_MARGIN`` to stop the client and clear the faults:
        22 s with the default 30 s slack. (nextcord drew a 23.8 s wait, uniform(0, 32), after
        five failed attempts in offline-reconnect-backoff; 10 s ended that run first.) In
        simulation, where a virtual minute costs a fraction of a second, as long as LV1 may need:
        the recovery bound plus the largest backoff allowance (a generated schedule's bound is
        75 s, longer than its run: a client that never comes back must fail LV1, not leave it
        not judged)."""
        options = self.options
        if self.sim:
            exp = self.scenario.expect
            return max(options.deadline_slack / 3,
                       exp.recovery_bound + exp.tolerances.backoff_cap)
        run_room = options.deadline_slack - _STOP_MARGIN
        process_room = (self._client_started + options.deadline_slack / 2
                        + options.startup_timeout - self.t0 - _STOP_MARGIN)
        return max(0.0, min(run_room, process_room))

    def _lv1_judged_by(self) -> float | None:
        """When (trio time) LV1 can judge the run so far (None: no such time, or it already
        passes: the client is live again, so a longer run changes nothing)."""
        now = trio.current_time()
        records = [*self._normalised_records(),
                   {"ts": round(now - self.t0, 6), "kind": KIND_NOTE, "text": "judged by?"}]
        view = RunView(records)
        exp = self.scenario.expect
        judged_by = lv1_judged_by(view, exp)
        if judged_by is None or check_lv1(view, exp).status == "pass":
            return None
        return self.t0 + judged_by

    def _watch_first_contact(self) -> None:
        """Start the scenario's clock at the client's first connection attempt: its first TCP
        connect (both proxies dial the gateway's listener as they accept one) or its first
        REST request, whichever the gateway sees first. Recorded as ``first_contact``."""
        if self.sim:
            return

        def on_record(rec: Record) -> None:
            kind = rec.get("kind")
            if self._contact.is_set() or kind not in (KIND_CONN_OPEN, KIND_REST):
                return
            self.t0 = float(rec["ts"])
            allowed = self.scenario.expect.duration + self.options.deadline_slack
            if self._deadline_scope is not None:
                self._deadline_scope.deadline = self.t0 + allowed
            self._deadline_text = f"{allowed:g} s from the client's first contact"
            self._contact.set()
            self._startup_over.set()
            where = ({"via": "connect", "conn": rec.get("conn")} if kind == KIND_CONN_OPEN
                     else {"via": "rest", "path": rec.get("path")})
            self.trace.record(KIND_FIRST_CONTACT, ts=self.t0,
                              waited=round(self.t0 - self._client_started, 3), **where)

        self.trace.subscribe(on_record)

    def _steps_done(self) -> bool:
        """Every step has switched on, and only steps meant to last are still on (a cheap
        necessary condition of ``run_settled``)."""
        return len(self._switched_on) == len(self.scenario.steps) and all(
            step.persistent_until_end for step in self._live_steps.values())

    # ---- parts ---------------------------------------------------------------------------------

    def _open_backend(self) -> Any:
        if self.options.toxiproxy_url and not self.sim:
            return _toxiproxy_backend(self.options.toxiproxy_url)
        return open_embedded_backend(network=self.network, seed=self.options.seed)

    # ---- fault steps ----------------------------------------------------------------------------

    async def _arm_steps(self, nursery: trio.Nursery) -> None:
        """Arm every step. A time is counted from the client's first contact. A step at 0 that
        acts on a connection's bytes (a toxic, a gateway control) is switched on here, before
        the client starts, so it is in place for its very first bytes; its duration still
        counts from first contact. A proxy going down at 0 waits for first contact: refusing
        the first connect would hide the very attempt that starts the clock."""
        watches: list[tuple[Step, TriggerWatch]] = []
        for step in self.scenario.steps:
            if step.start.is_time:
                ahead = float(step.start.at or 0.0) == 0.0 and step.kind != "proxy"
                if ahead and not await self._switch(step, on=True):
                    continue
                nursery.start_soon(self._run_timed_step, step, ahead)
            else:
                watches.append((step, TriggerWatch(step.start)))

        def on_record(rec: Record) -> None:
            for step, watch in watches:
                if watch.feed(rec):
                    nursery.start_soon(self._run_step, step, trio.current_time() + step.start.delay)

        if watches:
            self.trace.subscribe(on_record)

    async def _run_timed_step(self, step: Step, switched_on: bool) -> None:
        await self._contact.wait()
        if switched_on:
            await self._hold(step)
        else:
            await self._run_step(step, self.t0 + float(step.start.at or 0.0))

    async def _run_step(self, step: Step, at: float) -> None:
        await trio.sleep_until(at)
        if not await self._switch(step, on=True):
            return
        await self._hold(step)

    async def _hold(self, step: Step) -> None:
        """Keep a switched-on step on for its duration or until its stop trigger, then off."""
        if step.one_shot:
            return
        if step.duration is not None:
            await trio.sleep(step.duration)
        elif step.stop is not None:
            fired = trio.Event()
            watch = TriggerWatch(step.stop)

            def on_record(rec: Record) -> None:
                if watch.feed(rec):
                    fired.set()

            self.trace.subscribe(on_record)
            try:
                await fired.wait()
            finally:
                self.trace.unsubscribe(on_record)
            await trio.sleep(step.stop.delay)
        else:
            return  # stays on until the run ends
        await self._switch(step, on=False)

    async def _clear_steps(self) -> None:
        """Switch off whatever is still on, so the client is stopped on a clean network."""
        for step in list(self._live_steps.values()):
            await self._switch(step, on=False, at_end=True)

    async def _switch(self, step: Step, on: bool, at_end: bool = False) -> bool:
        """Switch one step and record it. False if the step could not be applied.

        "on" is recorded before the fault acts and "off" after it has gone, so every effect of
        a fault falls inside its window in the trace.
        """
        params = step.fault_params()
        extra = {"at_end": True} if at_end else {}

        def record(state: str) -> None:
            self.trace.record(KIND_FAULT, name=step.name, state=state, fault_kind=step.kind,
                              params=params, **extra)

        if on:
            record("on")
        try:
            await self._apply(step, on)
        except UnsupportedByRealToxiproxy as exc:
            self.trace.record(KIND_NOTE, text=f"step {step.name}: skipped: {exc}")
            record("off")
            return False
        except UserError as exc:
            if not on or at_end:
                raise
            # e.g. a connection target that has already closed: the fault had nothing to act
            # on. Say so in the trace rather than pretending it ran.
            self.trace.record(KIND_NOTE, text=f"step {step.name}: not applied: {exc}")
            record("off")
            return False
        if on:
            self._switched_on.add(step.name)
        if step.one_shot or not on:
            self._live_steps.pop(step.name, None)
            record("off")
        else:
            self._live_steps[step.name] = step
        if self._steps_done():
            self._steps_over.set()
        return True

    async def _apply(self, step: Step, on: bool) -> None:
        backend = self.backend
        assert backend is not None
        if step.kind == "toxic":
            for proxy in _proxies_for(step.target):
                if on:
                    await backend.add_toxic(proxy, _toxic_spec(step))
                else:
                    await backend.remove_toxic(proxy, step.name)
        elif step.kind == "proxy":
            for proxy in _proxies_for(step.target):
                await backend.set_enabled(proxy, not on)
        else:
            kwargs = dict(step.params)
            if not step.one_shot:
                kwargs["on"] = on
            self.gateway.controls.apply(step.action or "", step.conn_target, **kwargs)

    # ---- results ---------------------------------------------------------------------------------

    def _normalised_records(self) -> list[Record]:
        """Trace records with times relative to the start of the run: 0.0 is the client's first
        contact (the world's start in simulation, or when the client never made one). What the
        harness did before it (set-up notes, faults switched on ahead) is placed at 0.0.

        Each record is copied once (records are never changed once traced); a new list each
        call."""
        if self._normalised_t0 != self.t0:  # first contact moved the start: copy them again
            self._normalised, self._normalised_t0 = [], self.t0
        out, t0 = self._normalised, self.t0
        for rec in itertools.islice(self.trace.records, len(out), None):
            rec = dict(rec)
            rec["ts"] = max(0.0, round(rec["ts"] - t0, 6))
            out.append(rec)
        return list(out)

    def _normalise_delivery(self, rec: Record) -> Record:
        rec = dict(rec)
        if isinstance(rec.get("rx"), int | float):
            rec["rx"] = round(rec["rx"] - self.t0, 6)
        return rec


_SIM_DIR: Path | None = None
_SIM_TLS: dict[Path, TLSFiles] = {}


def _sim_process_dir() -> Path:
    """This process's directory for simulated runs' files, removed when the process ends."""
    global _SIM_DIR
    if _SIM_DIR is None or not _SIM_DIR.is_dir():
        _SIM_DIR = Path(tempfile.mkdtemp(prefix="gateway-harness-sim-"))
        atexit.register(shutil.rmtree, _SIM_DIR, ignore_errors=True)
    return _SIM_DIR


def _sim_tls(directory: Path) -> TLSFiles:
    """Simulation's fixed TLS material (and its server context, which holds no per-run
    state a client could see: clients resume no TLS sessions), written and loaded once."""
    from harness.sim_tls import sim_tls

    if directory.parent != _SIM_DIR:  # a run's own directory: nothing to share
        return sim_tls(directory)
    tls = _SIM_TLS.get(directory)
    if tls is None or not Path(tls.ca_file).exists():
        tls = _SIM_TLS[directory] = sim_tls(directory)
    return tls


def _startup_error(outcome: ClientOutcome, timeout: float) -> str:
    """The run error of a client that made no connection attempt: it ended first, or it ran
    past the start-up deadline; with the last line it wrote on stderr."""
    info = outcome.info
    tail = info.get("stderr_tail") if isinstance(info.get("stderr_tail"), list) else None
    last = (tail[-1] if tail else "no stderr") if tail is not None else None
    if info.get("ended_by") == "exit":
        what = (f"client did not start: its process exited with code {info.get('exit_code')} "
                f"before any connection attempt")
    elif outcome.crash is not None and tail is None:  # the in-process reference client
        return f"client did not start: {outcome.crash}"
    else:
        what = (f"client did not start within {timeout:g} s (no connection attempt, no REST "
                f"request; see --startup-timeout)")
    return what + (f"; last stderr line: {last}" if last is not None else "")


def _may_have_settled(scenario: Scenario, records: list[Record], beats: int = 2) -> bool:
    """False when ``run_settled`` (with ``beats``) cannot hold yet, read in one pass over the
    records instead of the oracle's whole view of them.

    Unless the scenario expects the client to stop, ``run_settled`` needs ``beats`` heartbeats
    at or after the moment the last fault cleared, on one live connection, each ACKed later.
    That moment is no earlier than any fault's "off" record (a policy control's aside: it opens
    no fault window), so at least ``beats`` heartbeats at or after the latest such record, and
    an ACK after the ``beats``-th of them, are needed."""
    if scenario.expect.outcome == "stop":
        return True
    cleared = 0.0
    for rec in records:
        if (rec["kind"] == KIND_FAULT and rec.get("state") == "off"
                and (rec.get("params") or {}).get("action") not in POLICY_CONTROLS):
            cleared = max(cleared, float(rec["ts"]))
    seen = 0
    for rec in records:
        kind = rec["kind"]
        if seen < beats:
            if kind == "frame_in" and rec.get("op") == OP_HEARTBEAT and rec["ts"] >= cleared:
                seen += 1
        elif kind == "frame_out" and rec.get("op") == OP_HEARTBEAT_ACK:
            return True
    return False


def _process_verdict(outcome: ClientOutcome, expects_stop: bool, error: str | None) -> Verdict:
    """PR1: the client keeps running until the harness stops it. A crash or a hang is a
    failure the wire cannot show (a dead process may leave a socket the kernel keeps open)."""
    if error is not None:
        return Verdict("PR1", "not_judged", f"the run did not complete: {error}")
    if outcome.crash is None:
        return Verdict("PR1", "pass", "the client ran until the harness stopped it")
    if expects_stop and outcome.exited:
        return Verdict("PR1", "pass", f"{outcome.crash} (the scenario expects it to stop)")
    return Verdict("PR1", "fail", outcome.crash)


def _proxies_for(target: str) -> tuple[str, ...]:
    return PROXY_NAMES if target == "both" else (target,)


def _toxic_spec(step: Step) -> ToxicSpec:
    return ToxicSpec(type=step.type or "noop", stream=step.stream, name=step.name,
                     toxicity=step.toxicity, attributes=dict(step.attributes),
                     only_connection=step.only_connection, from_connection=step.from_connection)


def needs_our_extensions(scenario: Scenario) -> str | None:
    """What in ``scenario`` only our embedded proxy can do ("step X: toxic type 'blackhole'"),
    or None: through a real Toxiproxy those steps would be skipped, so the run would not test
    what the scenario is about."""
    found = [f"step {step.name}: {reason}" for step in scenario.steps if step.kind == "toxic"
             and (reason := unsupported_by_real_toxiproxy(_toxic_spec(step)))]
    return "; ".join(found) or None


def _toxiproxy_backend(url: str) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def opened() -> Any:
        # Named per process: parallel jobs share the one server.
        backend = ToxiproxyBackend(url, name_prefix=f"gateway-harness-{os.getpid()}-")
        try:
            for name in PROXY_NAMES:  # leftovers from an earlier run would clash
                try:
                    await backend.delete_proxy(name)
                except FaultBackendError:
                    pass
            yield backend
        finally:
            with trio.CancelScope(shield=True):
                for name in PROXY_NAMES:
                    try:
                        await backend.delete_proxy(name)
                    except FaultBackendError:
                        pass
                await backend.close()

    return opened()


def _is_app(adapter: Any) -> bool:
    from harness.adapters.app.mode import is_app

    return is_app(adapter)


def client_starter(options: RunOptions) -> ClientStarter:
    """The function that starts the client this run is about."""
    if options.adapter is not None:
        if _is_app(options.adapter):
            from harness.adapters.app.starter import app_starter

            return app_starter(options.adapter)
        return adapter_starter(options.adapter)
    return reference_starter(options.client)


def transcript_hash(records: list[Record]) -> str:
    """A hash of the full transcript (what determinism checks compare)."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def default_jobs() -> int:
    """Scenarios mostly wait on heartbeat intervals, so two per core keep a machine busy."""
    return max(1, min(4, 2 * (os.cpu_count() or 1)))
