"""Run one client under test as a process: its own process group, a deadline, nothing leaked.

Usage (from the runner)::

    env = env_for(gateway_url, rest_url, token, ca_file, delivery_log_path)
    async with ClientProcess(adapter, env, deadline=120) as proc:
        ...                      # drive the scenario; proc.delivery grows live
        run = await proc.stop()  # SIGTERM the group, SIGKILL after STOP_GRACE_S
    run = proc.result            # the same ClientRun, also set when the block ends any other way

Leaving the ``async with`` block by any route (normal end, an exception, trio cancellation,
Ctrl-C) terminates the whole process group before the block returns. The deadline kills a
client that outlives it; ``ClientRun.ended_by == "deadline"`` then says so. A client that ignores
SIGTERM for the grace period is SIGKILLed (``ClientRun.killed``): it did not stop when asked,
a hang either way (``ClientRun.hung``).

Delivery records are gathered from two places, in the order the harness saw them: the client's
delivery log file (tailed while it runs) and stdout lines that start with ``{``. Each record
gets ``rx``: ``trio.current_time()`` when the harness read it, the same clock the trace uses in
wall-clock mode, so the oracle can place deliveries on the trace's timeline.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio

from gateway_common.errors import UserError
from harness.adapters.contract import (
    ENV_DELIVERY_LOG,
    Adapter,
    DeliveryRecord,
    is_delivery_record,
    parse_stdout_line,
)

EndedBy = Literal["exit", "stop", "deadline"]

_MAX_LINE = 1 << 20  # a "line" longer than this is cut: a client must not exhaust our memory
_TAIL_POLL_S = 0.05
_PIPE_DRAIN_S = 2.0  # how long to wait for pipes to close after the group is gone
# SIGTERM to SIGKILL. A client that is still there after this did not stop when asked (a hang).
# Generous: a slow but correct shutdown (closing the websocket politely) must not be a hang. Of
# the built-in clients hikari is the slowest, 0.45 s from SIGTERM to exit (also with both cores
# busy); the rest exit within 0.15 s.
STOP_GRACE_S = 5.0
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour codes some loggers force on

# Process groups still alive, killed at interpreter exit if a run was torn down abnormally
# (e.g. a second Ctrl-C landed inside our own cleanup).
_LIVE_GROUPS: set[int] = set()


def _kill_live_groups() -> None:
    for pgid in list(_LIVE_GROUPS):
        _signal_group(pgid, signal.SIGKILL)


atexit.register(_kill_live_groups)


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal every process in the group; False when the group has no members left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed credentials; nothing more we may do
        return False
    return True


@contextlib.contextmanager
def _unwrap_single_exception_group() -> Iterator[None]:
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@dataclass
class ClientRun:
    """What happened to one client process.

    ``exit_code`` is the OS return code (negative: killed by that signal), None only if the
    process could not be reaped. ``ended_by`` says who ended it: the client itself ("exit"),
    the harness at the end of the scenario ("stop") or the deadline ("deadline": it hung).
    ``killed`` is True when the process outlived SIGTERM by ``stop_grace`` seconds and needed
    SIGKILL.
    """

    name: str
    argv: list[str]
    pid: int
    exit_code: int | None
    ended_by: EndedBy
    killed: bool
    started_at: float
    ended_at: float
    stderr_tail: list[str]
    delivery: list[DeliveryRecord]
    events: list[dict[str, Any]]
    versions: dict[str, str]
    stdout_lines: int = 0
    stderr_lines: int = 0
    stop_grace: float = STOP_GRACE_S

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at

    @property
    def crashed(self) -> bool:
        """It ended on its own with a failure before the harness asked it to stop."""
        return self.ended_by == "exit" and self.exit_code != 0

    @property
    def hung(self) -> bool:
        """It did not end when asked: still running at its deadline, or deaf to SIGTERM."""
        return self.ended_by == "deadline" or self.killed

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "argv": self.argv,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "ended_by": self.ended_by,
            "killed": self.killed,
            "stop_grace": self.stop_grace,
            "duration": round(self.duration, 3),
            "stderr_tail": self.stderr_tail,
            "deliveries": len(self.delivery),
            "versions": self.versions,
        }


@dataclass
class _Output:
    stderr_tail: deque[str]
    delivery: list[DeliveryRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout_lines: int = 0
    stderr_lines: int = 0


class ClientProcess:
    """One run of a client under test. Use as ``async with``; see the module docstring.

    ``env`` is the contract's variables (``env_for(...)``); they are laid over the harness's
    own environment and the adapter's ``env``. ``deadline`` (seconds from start, None = none)
    bounds the run. ``stop_grace`` is how long the group gets between SIGTERM and SIGKILL.
    ``log_dir``, when given, receives the client's full ``stdout.log`` and ``stderr.log``.
    """

    def __init__(
        self,
        adapter: Adapter,
        env: Mapping[str, str],
        *,
        deadline: float | None = None,
        stop_grace: float = STOP_GRACE_S,
        stderr_tail_lines: int = 40,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.adapter = adapter
        self.deadline = deadline
        self.stop_grace = stop_grace
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._env = self._build_env(adapter, env)
        delivery = env.get(ENV_DELIVERY_LOG)
        self.delivery_log_path = Path(delivery) if delivery else None
        self._out = _Output(stderr_tail=deque(maxlen=stderr_tail_lines))
        self._process: trio.Process | None = None
        self._started_at = 0.0
        self._exited = trio.Event()
        self._exited_at: float | None = None  # when the process ended, as our tasks saw it
        self._finished = trio.Event()
        self._pipes_open = 0
        self._pipes_closed = trio.Event()
        self._ended_by: EndedBy | None = None
        self._killed = False
        self._terminating = False
        self._tail_offset = 0
        self.result: ClientRun | None = None
        self._cm: contextlib.AbstractAsyncContextManager[ClientProcess] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("client process not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and not self._exited.is_set()

    @property
    def delivery(self) -> list[DeliveryRecord]:
        """Delivery records seen so far (live; the list grows while the client runs)."""
        return self._out.delivery

    @property
    def events(self) -> list[dict[str, Any]]:
        """Other JSON objects the client printed on stdout so far."""
        return self._out.events

    async def wait_exited(self) -> None:
        """Return when the client process has exited (on its own, stopped or killed)."""
        await self._exited.wait()

    async def wait(self) -> ClientRun:
        """Wait for the client to end on its own (or hit the deadline), then clean up."""
        await self._exited.wait()
        return await self._terminate("exit")

    async def stop(self) -> ClientRun:
        """End the run now: SIGTERM the group, SIGKILL after ``stop_grace``. Idempotent."""
        return await self._terminate("stop")

    async def __aenter__(self) -> ClientProcess:
        if self._cm is not None:
            raise RuntimeError("a ClientProcess runs once")
        self._cm = self._running()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._cm is not None
        return await self._cm.__aexit__(*exc_info)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _build_env(adapter: Adapter, contract_env: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_HARNESS_")}
        env.update(adapter.env)
        env.update(contract_env)
        return env

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[ClientProcess]:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.delivery_log_path is not None:  # start empty: no records from an earlier run
            self.delivery_log_path.parent.mkdir(parents=True, exist_ok=True)
            self.delivery_log_path.write_bytes(b"")
        try:
            self._process = await trio.lowlevel.open_process(
                list(self.adapter.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                cwd=self.adapter.cwd,
                start_new_session=True,  # its own session and process group: pgid == pid
            )
        except OSError as exc:
            raise UserError(
                f"client {self.adapter.name}: cannot start {self.adapter.argv[0]!r}: "
                f"{exc.strerror or exc}"
            ) from None
        _LIVE_GROUPS.add(self._process.pid)
        self._started_at = trio.current_time()
        try:
            # Exceptions leave as they came in (Ctrl-C as KeyboardInterrupt, a runner's own
            # error as itself), not wrapped in the ExceptionGroup of our helper tasks' nursery.
            with _unwrap_single_exception_group():
                async with trio.open_nursery() as nursery:
                    self._pipes_open = 2
                    nursery.start_soon(self._pump, self._process.stdout, "stdout")
                    nursery.start_soon(self._pump, self._process.stderr, "stderr")
                    nursery.start_soon(self._watch_exit)
                    if self.delivery_log_path is not None:
                        nursery.start_soon(self._tail_delivery_log)
                    if self.deadline is not None:
                        nursery.start_soon(self._watch_deadline, self.deadline)
                    try:
                        yield self
                    finally:
                        with trio.CancelScope(shield=True):
                            await self._terminate("stop")
                        nursery.cancel_scope.cancel()
        finally:
            # Reached on every route out, including errors raised by our own tasks.
            with trio.CancelScope(shield=True):
                if self.result is None:
                    await self._terminate("stop")

    async def _watch_exit(self) -> None:
        assert self._process is not None
        await self._process.wait()
        self._exited_at = trio.current_time()
        self._exited.set()

    async def _watch_deadline(self, seconds: float) -> None:
        await trio.sleep_until(self._started_at + seconds)
        if not self._exited.is_set():
            await self._terminate("deadline")

    async def _terminate(self, reason: EndedBy) -> ClientRun:
        if self._terminating:
            await self._finished.wait()
            assert self.result is not None
            return self.result
        self._terminating = True
        proc = self._process
        assert proc is not None
        self._ended_by = "exit" if proc.poll() is not None else reason
        pgid = proc.pid
        with trio.CancelScope(shield=True):
            # SIGTERM even when the leader already exited: its children may still be running.
            _signal_group(pgid, signal.SIGTERM)
            with trio.move_on_after(self.stop_grace):
                await proc.wait()
            if proc.returncode is None:
                self._killed = True
            # Whatever is left in the group (the leader, or grandchildren that ignored SIGTERM).
            _signal_group(pgid, signal.SIGKILL)
            await proc.wait()
            self._exited.set()
            _LIVE_GROUPS.discard(pgid)
            with trio.move_on_after(_PIPE_DRAIN_S):
                await self._pipes_closed.wait()
            self._read_delivery_log_tail()
        self.result = ClientRun(
            name=self.adapter.name,
            argv=list(self.adapter.argv),
            pid=proc.pid,
            exit_code=proc.returncode,
            ended_by=self._ended_by,
            killed=self._killed,
            started_at=self._started_at,
            # a process that ended on its own ended then, not when the harness reaped it
            ended_at=(self._exited_at if self._ended_by == "exit" and self._exited_at is not None
                      else trio.current_time()),
            stderr_tail=list(self._out.stderr_tail),
            delivery=self._out.delivery,
            events=self._out.events,
            versions=self._versions(),
            stdout_lines=self._out.stdout_lines,
            stderr_lines=self._out.stderr_lines,
            stop_grace=self.stop_grace,
        )
        self._finished.set()
        return self.result

    def _versions(self) -> dict[str, str]:
        versions = dict(self.adapter.versions)
        for event in self._out.events:
            lib, version = event.get("lib"), event.get("version")
            if isinstance(lib, str) and isinstance(version, str):
                versions[lib] = version
            runtime = event.get("runtime")
            if isinstance(runtime, str):
                versions["runtime"] = runtime
        return versions

    async def _pump(self, stream: trio.abc.ReceiveStream | None, which: str) -> None:
        assert stream is not None
        log = open(self.log_dir / f"{which}.log", "wb") if self.log_dir else None  # noqa: SIM115
        buf = b""
        try:
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    chunk = b""
                if not chunk:
                    break
                if log is not None:
                    log.write(chunk)
                    log.flush()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                if len(buf) > _MAX_LINE:
                    lines.append(buf)
                    buf = b""
                for line in lines:
                    self._on_line(which, line.decode("utf-8", errors="replace"))
            if buf:
                self._on_line(which, buf.decode("utf-8", errors="replace"))
        finally:
            if log is not None:
                log.close()
            self._pipes_open -= 1
            if self._pipes_open == 0:
                self._pipes_closed.set()

    def _on_line(self, which: str, line: str) -> None:
        line = line.rstrip("\r")
        if which == "stderr":
            self._out.stderr_lines += 1
            self._out.stderr_tail.append(_ANSI_ESCAPE.sub("", line))
            return
        self._out.stdout_lines += 1
        obj = parse_stdout_line(line)
        if obj is None:
            return
        if is_delivery_record(obj):
            self._add_delivery(obj, "stdout")
        else:
            self._out.events.append(obj)

    def _add_delivery(self, record: dict[str, Any], source: str) -> None:
        record.setdefault("session_id", None)
        record["rx"] = round(trio.current_time(), 6)
        record["via"] = source
        self._out.delivery.append(record)

    async def _tail_delivery_log(self) -> None:
        while True:
            self._read_delivery_log_tail()
            await trio.sleep(_TAIL_POLL_S)

    def _read_delivery_log_tail(self) -> None:
        """Read complete new lines of the client's delivery log (a torn last line waits)."""
        path = self.delivery_log_path
        if path is None:
            return
        try:
            with open(path, "rb") as f:
                f.seek(self._tail_offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._tail_offset += end + 1
        for raw in data[: end + 1].splitlines():
            obj = parse_stdout_line(raw.decode("utf-8", errors="replace"))
            if obj is not None and is_delivery_record(obj):
                self._add_delivery(obj, "file")
