"""The client process runner: deadlines, process-group cleanup, stdout/delivery parsing, env."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway_common.errors import UserError
from harness.adapters.contract import (
    ENV_CA_FILE,
    ENV_DELIVERY_LOG,
    ENV_GATEWAY_URL,
    ENV_REST_URL,
    ENV_TOKEN,
    Adapter,
    env_for,
)
from harness.adapters.process import ClientProcess

pytestmark = pytest.mark.timeout(60)


def py_adapter(tmp_path: Path, code: str, name: str = "script") -> Adapter:
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    return Adapter(name=name, argv=(sys.executable, "-u", str(script)))


def contract_env(tmp_path: Path, delivery: bool = True) -> dict[str, str]:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a real CA; the scripts here never use it\n")
    return env_for(
        "wss://127.0.0.1:4443",
        "https://127.0.0.1:4444/api/v10",
        "MTAwMDAwMDAwMDAwMDAwMDAx.x.y",
        ca,
        tmp_path / "delivery.jsonl" if delivery else None,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_for_file(path: Path) -> str:
    while not path.exists() or not path.read_text().endswith("\n"):
        await trio.sleep(0.02)
    return path.read_text()


async def test_deadline_kills_a_hanging_client_that_ignores_sigterm(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    # Time runs at wall-clock rate, and jumps to the deadline only once the child has set
    # SIG_IGN: however slowly Python starts, SIGTERM never arrives before it is ignored.
    mock_clock.rate = 1.0
    ready = tmp_path / "ready"
    adapter = py_adapter(
        tmp_path,
        f"""
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("hanging", file=sys.stderr, flush=True)
        open({str(ready)!r}, "w").write("ignoring SIGTERM\\n")
        while True:
            time.sleep(1)
        """,
    )
    async with ClientProcess(adapter, contract_env(tmp_path), deadline=60, stop_grace=0.5) as proc:
        await wait_for_file(ready)
        mock_clock.jump(60)
        await proc.wait_exited()
        run = await proc.stop()
    assert run.ended_by == "deadline"
    assert run.killed  # SIGTERM was ignored, so the group needed SIGKILL
    assert run.hung
    assert run.exit_code == -9
    assert run.stderr_tail == ["hanging"]
    assert not alive(run.pid)


async def test_stop_cleans_up_grandchildren_in_the_process_group(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    adapter = py_adapter(
        tmp_path,
        f"""
        import signal, subprocess, sys, time
        # a child that spawns its own child; both ignore SIGTERM so only SIGKILL ends them
        inner = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        outer = (
            "import signal,subprocess,sys,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            f"p = subprocess.Popen([sys.executable, '-c', {{inner!r}}]);"
            "print(p.pid, flush=True); time.sleep(600)"
        )
        child = subprocess.Popen([sys.executable, "-c", outer], stdout=subprocess.PIPE, text=True)
        grandchild = child.stdout.readline().strip()
        with open({str(pids_file)!r}, "w") as f:
            f.write(f"{{child.pid}} {{grandchild}}\\n")
        time.sleep(600)
        """,
    )
    async with ClientProcess(adapter, contract_env(tmp_path), deadline=50, stop_grace=0.5) as proc:
        child, grandchild = map(int, (await wait_for_file(pids_file)).split())
        assert alive(child) and alive(grandchild)
        run = await proc.stop()
    assert run.ended_by == "stop"
    assert not run.killed  # the leader itself exits on SIGTERM
    assert not run.hung
    assert run.exit_code == -15
    # the descendants ignored SIGTERM; the group sweep must still have ended them
    with trio.fail_after(10):
        while alive(child) or alive(grandchild):
            await trio.sleep(0.05)


async def test_a_client_that_ignores_sigterm_when_stopped_is_killed_and_hung(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready"
    adapter = py_adapter(
        tmp_path,
        f"""
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write("ignoring SIGTERM\\n")
        time.sleep(600)
        """,
    )
    async with ClientProcess(adapter, contract_env(tmp_path), deadline=50, stop_grace=0.5) as proc:
        await wait_for_file(ready)
        run = await proc.stop()
    # stopped before its deadline, yet it did not stop when asked: a hang all the same
    assert (run.ended_by, run.killed, run.hung, run.crashed) == ("stop", True, True, False)
    assert run.exit_code == -9
    assert run.to_json()["stop_grace"] == 0.5


async def test_a_slow_clean_shutdown_on_sigterm_is_not_a_hang(tmp_path: Path) -> None:
    # A client that closes its websocket politely on SIGTERM and takes a second over it, as
    # Node and Python clients may on a loaded machine: the default grace must allow for that.
    ready = tmp_path / "ready"
    adapter = py_adapter(
        tmp_path,
        f"""
        import signal, sys, time
        asked = []
        signal.signal(signal.SIGTERM, lambda *_: asked.append(1))
        open({str(ready)!r}, "w").write("handling SIGTERM\\n")
        while not asked:
            time.sleep(0.01)
        print("closing the websocket", file=sys.stderr, flush=True)
        time.sleep(1.0)
        sys.exit(0)
        """,
    )
    async with ClientProcess(adapter, contract_env(tmp_path), deadline=50) as proc:
        await wait_for_file(ready)
        run = await proc.stop()
    assert (run.ended_by, run.killed, run.hung, run.exit_code) == ("stop", False, False, 0)
    assert run.stderr_tail == ["closing the websocket"]


async def test_cancellation_still_kills_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    adapter = py_adapter(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(f"{{child.pid}}\\n")
        time.sleep(600)
        """,
    )
    proc = ClientProcess(adapter, contract_env(tmp_path), stop_grace=0.5)
    with trio.move_on_after(30) as scope:
        async with proc:
            child = int(await wait_for_file(pid_file))
            scope.cancel()  # the runner is cancelled (Ctrl-C, a failed sibling task, a timeout)
            await trio.sleep_forever()
    assert proc.result is not None
    assert proc.result.ended_by == "stop"
    assert not alive(proc.result.pid)
    with trio.fail_after(10):
        while alive(child):
            await trio.sleep(0.05)


async def test_stdout_json_lines_become_delivery_records_and_events(tmp_path: Path) -> None:
    adapter = py_adapter(
        tmp_path,
        """
        import json, os
        print("library banner { not json")
        print('{"lib": "fakelib", "version": "1.2.3", "runtime": "python 3"}')
        print('{"s": 1, "t": "READY", "session_id": "abc"}')
        print("   {\\"s\\": 2, \\"t\\": \\"MESSAGE_CREATE\\"}")
        print('{"note": "resumed"}')
        print('{"s": "3", "t": "X"}')   # s must be an integer: not a delivery record
        print('{"s": 3, "t": "TYPING_START", "ts": 1.5}', end="")  # last line, no newline
        """,
    )
    async with ClientProcess(adapter, contract_env(tmp_path, delivery=False)) as proc:
        run = await proc.wait()
    assert run.ended_by == "exit" and run.exit_code == 0 and not run.crashed
    assert [(r["s"], r["t"]) for r in run.delivery] == [
        (1, "READY"),
        (2, "MESSAGE_CREATE"),
        (3, "TYPING_START"),
    ]
    assert run.delivery[0]["session_id"] == "abc"
    assert run.delivery[2]["ts"] == 1.5
    assert all(r["via"] == "stdout" and isinstance(r["rx"], float) for r in run.delivery)
    assert {"note": "resumed"} in run.events
    assert run.versions == {"fakelib": "1.2.3", "runtime": "python 3"}
    assert run.stdout_lines == 7


async def test_delivery_log_file_is_read_live_while_the_client_runs(tmp_path: Path) -> None:
    adapter = py_adapter(
        tmp_path,
        """
        import json, os, time
        with open(os.environ["GATEWAY_HARNESS_DELIVERY_LOG"], "a") as f:
            f.write(json.dumps({"s": 1, "t": "READY", "session_id": "s1"}) + "\\n")
            f.write(json.dumps({"s": 2, "t": "GUILD_CREATE", "session_id": "s1"}) + "\\n")
            f.write('{"s": 3, "t": "MESSAGE_CREA')  # torn line: killed mid-write
            f.flush()
            time.sleep(600)
        """,
    )
    env = contract_env(tmp_path)
    # left over from an earlier run with the same path: must not count for this one
    Path(env[ENV_DELIVERY_LOG]).write_text('{"s": 99, "t": "STALE"}\n')
    async with ClientProcess(adapter, env, stop_grace=0.5) as proc:
        with trio.fail_after(30):
            while len(proc.delivery) < 2:
                await trio.sleep(0.02)
        assert proc.running  # seen live, not only after the run
        run = await proc.stop()
    assert [(r["s"], r["t"], r["via"]) for r in run.delivery] == [
        (1, "READY", "file"),
        (2, "GUILD_CREATE", "file"),
    ]
    assert run.delivery[0]["rx"] <= run.delivery[1]["rx"] <= run.ended_at


async def test_a_crashing_client_reports_its_stderr_tail(tmp_path: Path) -> None:
    adapter = py_adapter(
        tmp_path,
        """
        import sys
        for i in range(100):
            print(f"log line {i}", file=sys.stderr)
        raise SystemExit("fatal: gateway said 4004")
        """,
    )
    async with ClientProcess(adapter, contract_env(tmp_path), stderr_tail_lines=5) as proc:
        run = await proc.wait()
    assert run.crashed and run.exit_code == 1
    assert run.stderr_lines == 101
    assert run.stderr_tail == [
        "log line 96", "log line 97", "log line 98", "log line 99", "fatal: gateway said 4004",
    ]


async def test_the_client_sees_the_contract_environment(tmp_path: Path) -> None:
    adapter = py_adapter(
        tmp_path,
        """
        import json, os
        keys = ["GATEWAY_HARNESS_GATEWAY_URL", "GATEWAY_HARNESS_REST_URL", "GATEWAY_HARNESS_TOKEN",
                "GATEWAY_HARNESS_CA_FILE", "GATEWAY_HARNESS_DELIVERY_LOG", "SSL_CERT_FILE",
                "NODE_EXTRA_CA_CERTS", "ADAPTER_EXTRA"]
        print(json.dumps({"env": {k: os.environ.get(k) for k in keys}}))
        """,
    )
    adapter = Adapter(adapter.name, adapter.argv, env={"ADAPTER_EXTRA": "1"})
    env = contract_env(tmp_path)
    async with ClientProcess(adapter, env, log_dir=tmp_path / "logs") as proc:
        run = await proc.wait()
    seen = run.events[0]["env"]
    ca = str((tmp_path / "ca.pem").resolve())
    assert seen == {
        ENV_GATEWAY_URL: "wss://127.0.0.1:4443",
        ENV_REST_URL: "https://127.0.0.1:4444/api/v10",
        ENV_TOKEN: "MTAwMDAwMDAwMDAwMDAwMDAx.x.y",
        ENV_CA_FILE: ca,
        ENV_DELIVERY_LOG: str((tmp_path / "delivery.jsonl").resolve()),
        "SSL_CERT_FILE": ca,
        "NODE_EXTRA_CA_CERTS": ca,
        "ADAPTER_EXTRA": "1",
    }
    assert json.loads((tmp_path / "logs" / "stdout.log").read_text()) == {"env": seen}


async def test_a_missing_command_is_a_user_error(tmp_path: Path) -> None:
    adapter = Adapter.from_command("/nonexistent/bot --flag", name="mybot")
    assert adapter.argv == ("/nonexistent/bot", "--flag")
    with pytest.raises(UserError, match="client mybot: cannot start '/nonexistent/bot'"):
        async with ClientProcess(adapter, contract_env(tmp_path)):
            pass


def test_env_for_rejects_urls_that_break_the_contract(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="REST URL must end in /api/v10"):
        env_for("wss://127.0.0.1:1", "https://127.0.0.1:2/api", "t", tmp_path / "ca.pem")
    with pytest.raises(UserError, match="gateway URL must start with ws:// or wss://"):
        env_for("https://127.0.0.1:1", "https://127.0.0.1:2/api/v10", "t", tmp_path / "ca.pem")


async def test_ctrl_c_in_the_harness_kills_the_client_group(tmp_path: Path) -> None:
    # A harness process (as `gateway-harness validate` would be) running a client that spawned
    # a child; Ctrl-C (SIGINT) to the harness must leave neither behind.
    pids = tmp_path / "pids"
    client = tmp_path / "client.py"
    client.write_text(textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}\\n")
        time.sleep(600)
    """))
    harness_script = tmp_path / "harness_main.py"
    harness_script.write_text(textwrap.dedent(f"""
        import sys, trio
        from harness.adapters.contract import Adapter, env_for
        from harness.adapters.process import ClientProcess

        async def main():
            adapter = Adapter("sleepy", (sys.executable, {str(client)!r}))
            env = env_for("wss://127.0.0.1:1", "https://127.0.0.1:2/api/v10", "t", "ca.pem")
            async with ClientProcess(adapter, env, stop_grace=0.5):
                await trio.sleep_forever()

        try:
            trio.run(main)
        except KeyboardInterrupt:
            sys.exit(130)
    """))
    proc = await trio.lowlevel.open_process([sys.executable, str(harness_script)], cwd=tmp_path)
    try:
        client_pid, child_pid = map(int, (await wait_for_file(pids)).split())
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(90):
            assert await proc.wait() == 130
    finally:
        if proc.returncode is None:
            proc.kill()
    with trio.fail_after(30):
        while alive(client_pid) or alive(child_pid):
            await trio.sleep(0.05)


async def test_an_error_in_the_runner_comes_out_as_itself_and_the_client_is_gone(
    tmp_path: Path,
) -> None:
    adapter = py_adapter(tmp_path, "import time; time.sleep(600)")
    proc = ClientProcess(adapter, contract_env(tmp_path), stop_grace=0.5)
    with pytest.raises(LookupError, match="scenario step failed"):
        async with proc:
            raise LookupError("scenario step failed")
    assert proc.result is not None and proc.result.ended_by == "stop"
    assert not alive(proc.result.pid)
