"""Clients the world can run: the in-process reference client (and its planted-bug mutants) and
third-party clients as processes under the adapter contract.

Each starter starts its client inside the world's nursery and returns a ``stop`` coroutine that
ends the client and hands back what the oracle needs (the delivery log, the stderr tail).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from harness.client import ClientConfig, GatewayClient
from harness.client_env import ClientEnv, ClientOutcome, ClientStarter, ClientStop

if TYPE_CHECKING:
    from harness.adapters.process import ClientRun


def known_reference_clients() -> tuple[str, ...]:
    """``reference`` plus the planted-bug mutants (when the mutants module exists)."""
    try:
        from harness.client.mutants import MUTANTS
    except ModuleNotFoundError:
        return ("reference",)
    return ("reference", *MUTANTS)


def reference_config(env: ClientEnv, **overrides: Any) -> ClientConfig:
    """The reference client's configuration for ``env``; ``overrides`` are other
    ``ClientConfig`` fields (a test's faster backoff, a shard, ...)."""
    config = ClientConfig(
        token=env.token,
        gateway_url=env.gateway_url,
        rest_url=env.rest_url,
        ca_file=env.ca_file,
        compress=env.compress,  # type: ignore[arg-type]
    )
    return replace(config, **overrides)


def make_reference_client(env: ClientEnv, rng: random.Random, *, name: str = "reference",
                          delivery_log: str | Path | None = None,
                          **overrides: Any) -> GatewayClient:
    """The reference client (or the planted-bug mutant ``name``) pointed at ``env``: through
    its memnet ``open_stream`` and ``fetch_gateway_bot`` in simulation, over TCP otherwise."""
    kwargs: dict[str, Any] = {}
    if env.open_stream is not None:
        kwargs["open_stream"] = env.open_stream
    if env.fetch_gateway_bot is not None:
        kwargs["fetch_gateway_bot"] = env.fetch_gateway_bot
    if name != "reference":
        from harness.client.mutants import MUTANTS

        kwargs["core_factory"] = MUTANTS[name]
    return GatewayClient(reference_config(env, **overrides), rng=rng, delivery_log=delivery_log,
                         **kwargs)


def reference_starter(name: str) -> ClientStarter:
    async def start(nursery: trio.Nursery, env: ClientEnv) -> ClientStop:
        return await _start_reference(nursery, env, name)

    return start


async def _start_reference(nursery: trio.Nursery, env: ClientEnv, name: str) -> ClientStop:
    client = make_reference_client(env, random.Random(f"{env.seed}:client"), name=name)
    delivered: list[dict[str, Any]] = []
    client.on_delivery(lambda rec: delivered.append({**rec, "rx": trio.current_time()}))
    scope = trio.CancelScope()
    done = trio.Event()
    errors: list[str] = []

    async def runner() -> None:
        with scope:
            try:
                await client.run()
            except Exception as exc:  # the client's own bug: judged as a crash, trace kept
                errors.append(f"the reference client raised {_describe_exception(exc)}")
        done.set()
        if env.on_exit is not None:
            env.on_exit()

    nursery.start_soon(runner)

    async def stop() -> ClientOutcome:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await client.aclose()
            scope.cancel()
            await done.wait()
        return ClientOutcome(delivery_log=delivered, crash=errors[0] if errors else None,
                             info={"counters": client.counters()})

    return stop


def _describe_exception(exc: BaseException) -> str:
    """``KeyError: 'guild_id' at harness/client/core.py:123``: the exception itself, out of the
    nurseries' ExceptionGroups that wrap it, and where it was raised."""
    leaves: list[BaseException] = []

    def collect(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                collect(inner)
        else:
            leaves.append(e)

    collect(exc)
    leaf = leaves[0] if leaves else exc
    text = f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
    frames = traceback.extract_tb(leaf.__traceback__)
    if frames:
        where = Path(frames[-1].filename)
        with contextlib.suppress(ValueError):
            where = where.relative_to(Path.cwd())
        text += f" at {where}:{frames[-1].lineno}"
    if len(leaves) > 1:
        text += f" (and {len(leaves) - 1} more)"
    return text


def adapter_starter(adapter: Any) -> ClientStarter:
    """Run a third-party client (``harness.adapters.contract.Adapter``) as a process."""

    async def start(nursery: trio.Nursery, env: ClientEnv) -> ClientStop:
        from harness.adapters.contract import env_for
        from harness.adapters.process import ClientProcess

        if env.open_stream is not None:
            from gateway_common.errors import UserError

            raise UserError(f"client {adapter.name}: third-party clients run in --mode real only")
        # The delivery log goes beside the client's logs (kept or removed with the run's
        # folders); a folder of its own only without one, removed when the client ends.
        own_dir: Path | None = None
        log_dir = env.log_dir
        if log_dir is None:
            own_dir = log_dir = Path(tempfile.mkdtemp(prefix="gateway-harness-client-"))
        log_path = env.delivery_log_path or log_dir / "delivery.jsonl"
        contract = env_for(env.gateway_url, env.rest_url or "", env.token,
                           env.ca_file or "", log_path)
        proc = ClientProcess(adapter, contract, deadline=env.deadline, log_dir=env.log_dir)
        entered = trio.Event()
        finished = trio.Event()
        release = trio.Event()

        async def hold() -> None:
            try:
                async with proc:
                    entered.set()
                    async with trio.open_nursery() as watch:
                        watch.start_soon(tell_exit)
                        await release.wait()
                        watch.cancel_scope.cancel()
            finally:
                if own_dir is not None:
                    shutil.rmtree(own_dir, ignore_errors=True)
            finished.set()

        async def tell_exit() -> None:
            await proc.wait_exited()
            if env.on_exit is not None and not release.is_set():
                env.on_exit()

        nursery.start_soon(hold)
        await entered.wait()

        async def stop() -> ClientOutcome:
            with trio.CancelScope(shield=True):
                run = await proc.stop()
                release.set()
                await finished.wait()
            tail = list(run.stderr_tail)
            if run.ended_by != "stop" or run.killed:
                # A crash or a hang is the client's failure, judged from the trace like any
                # other; the report says how the process ended.
                killed = ", killed after ignoring SIGTERM" if run.killed else ""
                tail.append(f"[gateway-harness: client ended by {run.ended_by}{killed}, "
                            f"exit code {run.exit_code}]")
            return ClientOutcome(delivery_log=list(proc.delivery) or None,
                                 stderr_tail="\n".join(tail), crash=_process_crash(run),
                                 exited=run.ended_by == "exit", info=run.to_json())

        return stop

    return start


def _process_crash(run: ClientRun) -> str | None:
    """PR1's evidence against a client process that ended on its own (whatever its exit code)
    or hung, or None. A hang is a
    process that did not stop when asked: deaf to SIGTERM for the grace period (SIGKILLed), or
    still running at its deadline. A client that hangs mid-run but exits on SIGTERM is the
    oracle's to judge (heartbeats, liveness), not PR1's."""
    last = f"last stderr line: {run.stderr_tail[-1] if run.stderr_tail else 'no stderr'}"
    if run.ended_by == "exit":  # exit code 0 too: a gateway client is meant to keep running
        return (f"the client process exited on its own with code {run.exit_code} "
                f"after {run.duration:.1f} s; {last}")
    if not run.hung:
        return None
    what = ("was still running at its deadline" if run.ended_by == "deadline"
            else "was stopped by the harness")
    how = (f"did not exit within {run.stop_grace:g} s of SIGTERM; killed" if run.killed
           else "exited on SIGTERM")
    return f"the client process hung: it {what} and {how}; {last}"
