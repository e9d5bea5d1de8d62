from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "gateway-harness" in out


def test_cli_without_command_exits_nonzero():
    proc = subprocess.run([sys.executable, "-m", "harness"], capture_output=True, text=True)
    assert proc.returncode == 2


def test_serve_prints_rest_url_as_the_api_base_the_client_takes(tmp_path):
    """What `serve` prints as rest_url, handed to `client --rest-url`, gets the client live."""
    import json
    import signal

    serve = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--tls", "on", "--tls-dir", str(tmp_path),
         "--heartbeat-interval-ms", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        line = json.loads(serve.stdout.readline())
        assert line["rest_url"].endswith("/api/v10")
        assert line["api_url"] == line["rest_url"]  # the deprecated alias
        # The deadline only catches a hang; the client is live within about 1 s.
        client = subprocess.run(
            [sys.executable, "-m", "harness", "client", "--rest-url", line["rest_url"],
             "--token", line["token"], "--ca-file", line["ca_file"], "--show-state",
             "--run-for", "3"],
            capture_output=True, text=True, timeout=60)
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=20)
    assert client.returncode == 0, client.stderr
    states = [text.split("]", 1)[1].split()[0] for text in client.stderr.splitlines()
              if text.startswith("[")]
    assert "ready" in states


# ---- one spelling per idea; the old spellings work for one release and warn (README "Flags") ----

SCENARIO = "scenarios/baseline-steady.toml"

# (old argv, the new argv it means): both parse to the same settings
RENAMED = [
    (["run", "--report", "out"], ["run", "--out", "out"]),
    (["validate", "--report", "out"], ["validate", "--out", "out"]),
    (["validate", "--no-tls"], ["validate", "--tls", "scenario"]),
    (["serve", "--tls"], ["serve", "--tls", "on"]),
    (["fuzz", "--tls"], ["fuzz", "--tls", "on"]),
    (["fuzz", "--no-tls"], ["fuzz", "--tls", "off"]),
    (["fuzz", "--database", "none"], ["fuzz", "--no-database"]),
    (["fuzz", "--baseline", "none"], ["fuzz", "--no-baseline"]),
]


@pytest.mark.parametrize(("old", "new"), RENAMED, ids=[" ".join(o) for o, _ in RENAMED])
def test_an_old_spelling_means_the_new_one_and_warns_once(
    old: list[str], new: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import build_parser

    parser = build_parser()
    assert vars(parser.parse_args(old)) == vars(parser.parse_args(new))
    [line] = capsys.readouterr().err.splitlines()  # one line, from the old spelling only
    assert line.startswith(f"gateway-harness {old[0]}: warning: ")
    assert "deprecated" in line and " ".join(new[1:]).split()[0] in line


def test_run_report_still_writes_the_html_report(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["run", "--mode", "sim", SCENARIO, "--report", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists()
    assert "--report DIR is deprecated" in capsys.readouterr().err


def test_rejudge_takes_the_scenario_like_every_command_and_the_old_order_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    assert main(["run", "--mode", "sim", SCENARIO, "--out", str(tmp_path)]) == 0
    [trace] = tmp_path.glob("*.trace.jsonl")
    capsys.readouterr()
    new_json, old_json = tmp_path / "new.json", tmp_path / "old.json"
    assert main(["rejudge", SCENARIO, "--trace", str(trace), "--json", str(new_json)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["rejudge", str(trace), "--scenario", SCENARIO, "--json", str(old_json)]) == 0
    assert "use rejudge FILE --trace TRACE" in capsys.readouterr().err
    new, old = (json.loads(p.read_text())["scenarios"] for p in (new_json, old_json))
    assert [(s["name"], s["verdicts"]) for s in new] == [(s["name"], s["verdicts"]) for s in old]
    assert main(["rejudge", SCENARIO]) == 2
    assert capsys.readouterr().err.strip() == (
        "gateway-harness rejudge: error: --trace: required (the trace file to judge)")


def test_validate_still_takes_a_client_named_without_client(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from harness.cli import main

    assert main(["validate", "discrod.py"]) == 2  # taken as a client, as before: unknown
    warning, error = capsys.readouterr().err.splitlines()
    assert warning == ("gateway-harness validate: warning: validate discrod.py is deprecated "
                       "and goes in the next release; use --client discrod.py")
    assert "unknown client 'discrod.py'" in error


def test_validate_suite_still_names_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    # the suite is loaded before any run: a missing file is said, so --suite was taken
    assert main(["validate", "--client", "reference", "--suite", "/nonexistent.toml"]) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.endswith("--suite PATH is deprecated and goes in the next release; "
                            "use PATH (positional)")
    assert error == (
        "gateway-harness validate: error: /nonexistent.toml: no such scenario file or folder")


def test_validate_a_command_that_cannot_start_is_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    # the process is started inside the world's task group: still one line, exit 2
    scenario = str(Path(__file__).parent.parent / "scenarios" / "f01-invalid-session-mid-session"
                   ".toml")
    assert main(["validate", "--command", "/nonexistent/bot", scenario]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "gateway-harness validate: error: client bot: cannot start '/nonexistent/bot': "
        "No such file or directory")
    assert "Traceback" not in err


def test_storm_writes_json_to_a_file_and_the_old_switch_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    small = ["storm", "--shards", "2", "--max-concurrency", "2", "--waves", ""]
    assert main([*small, "--json", str(tmp_path / "storm.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fleet storm: 2 shards")  # the text report, as without --json
    assert json.loads((tmp_path / "storm.json").read_text())["config"]["shards"] == 2
    assert main([*small, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["config"]["shards"] == 2
    assert "--json without FILE" in captured.err


def test_python_m_harness_fleet_still_runs_the_storm_and_warns() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.fleet", "--shards", "2", "--max-concurrency", "2",
         "--waves", ""], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fleet storm: 2 shards")
    assert "use gateway-harness storm" in proc.stderr
