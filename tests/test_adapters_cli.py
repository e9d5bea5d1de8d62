"""`gateway-harness validate`: a user's own client (--command) and a built-in one, end to end."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from harness.adapters.suite import DEFAULT_SUITE, validation_suite
from harness.cli import main
from harness.scenario import builtin_scenarios_dir

pytestmark = pytest.mark.timeout(240)

BASELINE = str(builtin_scenarios_dir() / "baseline-steady.toml")

# A user's own gateway client, as small as it gets: websockets' sync client, one connection,
# heartbeats on HELLO's interval with the last seq, IDENTIFY, dispatches to the delivery log.
MINIMAL_CLIENT = textwrap.dedent("""
    import json, os, random, ssl, threading, time
    from websockets.sync.client import connect

    env = os.environ
    ca = env.get("GATEWAY_HARNESS_CA_FILE")
    context = ssl.create_default_context(cafile=ca) if ca else None
    log = open(env["GATEWAY_HARNESS_DELIVERY_LOG"], "a", buffering=1)
    print(json.dumps({"lib": "minimal-client", "version": "0.1"}), flush=True)
    url = env["GATEWAY_HARNESS_GATEWAY_URL"] + "/?v=10&encoding=json"
    with connect(url, ssl=context) as ws:
        hello = json.loads(ws.recv())
        interval = hello["d"]["heartbeat_interval"] / 1000
        seq = None
        lock = threading.Lock()

        def beat():
            time.sleep(interval * random.random())
            while True:
                with lock:
                    ws.send(json.dumps({"op": 1, "d": seq}))
                time.sleep(interval)

        threading.Thread(target=beat, daemon=True).start()
        with lock:
            ws.send(json.dumps({"op": 2, "d": {"token": env["GATEWAY_HARNESS_TOKEN"],
                                "intents": 513, "properties": {"os": "linux",
                                "browser": "minimal", "device": "minimal"}}}))
        session = None
        for message in ws:
            payload = json.loads(message)
            if payload["op"] == 0:
                seq = payload["s"]
                if payload["t"] == "READY":
                    session = payload["d"]["session_id"]
                log.write(json.dumps({"s": seq, "t": payload["t"], "session_id": session}) + "\\n")
            elif payload["op"] == 1:
                with lock:
                    ws.send(json.dumps({"op": 1, "d": seq}))
""")


@pytest.fixture(scope="module")
def clients_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


def test_validate_runs_a_users_own_command_over_wss_and_judges_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "bot.py"
    script.write_text(MINIMAL_CLIENT)
    results = tmp_path / "results.json"
    matrix = tmp_path / "matrix.md"
    code = main(["validate", "--command", f"{sys.executable} {script}", "--name", "mybot",
                 BASELINE, "--json", str(results), "--markdown", str(matrix)])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(results.read_text())
    [entry] = data["scenarios"]
    assert entry["client"] == "mybot" and entry["name"] == "baseline-steady"
    verdicts = {v["invariant"]: v["status"] for v in entry["verdicts"]}
    assert verdicts["RS3"] == "pass"  # its delivery log was read and judged
    assert verdicts["LV1"] == "pass" and verdicts["HB2"] == "pass"
    assert "| baseline-steady | ✅ pass" in matrix.read_text()
    assert "| scenario | mybot |" in out  # the matrix is printed too


def test_validate_a_built_in_client_installs_it_and_fills_the_matrix(
    tmp_path: Path, clients_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_dir = tmp_path / "report"
    code = main(["validate", "--client", "discord.py", BASELINE, "--clients-dir", str(clients_dir),
                 "--out", str(report_dir), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert "installing discord.py==2.7.1" in captured.err  # first use in this clients dir
    assert code == 0, captured.out
    [entry] = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert entry["client"] == "discord.py"
    assert (report_dir / "report.html").exists()
    assert "discord.py" in (report_dir / "matrix.html").read_text()


def test_validate_needs_a_client(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gateway-harness validate: error: name a client (e.g. --client discord.py), "
                   "or use --all, --command 'CMD' or --app 'CMD'")


def test_validate_unknown_client_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--client", "discrod.py"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown client 'discrod.py'" in err[0]


def test_the_default_suite_loads() -> None:
    # every named built-in scenario still exists (a rename would break `validate`), plus op 9
    # d=true from harness/adapters/validation/
    names = [s.name for s in validation_suite([], [])]
    assert names == [*(name.split("/")[-1] for name in DEFAULT_SUITE), "op9-resumable"]
    assert [s.name for s in validation_suite([], ["op9"])] == ["f01-invalid-session-mid-session",
                                                      "op9-in-answer-to-resume",
                                                      "op9-resumable"]
    # the real-world rows in it name their upstream reports
    real_world = [s for s in validation_suite([], ["real-world"])]
    assert len(real_world) >= 5 and all("#" in s.source for s in real_world)


def test_validate_reference_alone_runs_our_client(tmp_path, capsys: pytest.CaptureFixture[str]):
    suite = builtin_scenarios_dir() / "f16-op7-close-code.toml"
    assert main(["validate", "--client", "reference", str(suite),
                 "--json", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert [s["client"] for s in data["scenarios"]] == ["reference"]
