"""`validate --repeat N`: every cell N times; pass, fail (every run) or flaky (k of N) (issue 12.2).

A verdict that flips between runs is a finding of its own: the matrix must say so, with each
failing run's evidence, instead of showing whichever run came last.
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.cli.validate import EXIT_FLAKY, matrix_exit_code
from harness.oracle import Verdict
from harness.report import conformance_matrix, matrix_html, matrix_markdown
from harness.report.model import ScenarioResult
from harness.scenario import builtin_scenarios_dir

pytestmark = pytest.mark.timeout(240)

BASELINE = str(builtin_scenarios_dir() / "baseline-steady.toml")

# Our reference client, except that on a coin flip (seeded from the environment, one flip per
# start, counted in a file) it quits right after READY with exit code 0: a bot whose main()
# returns now and then. PR1 fails those runs, whatever the machine's timing.
FLAKY_CLIENT = textwrap.dedent("""
    import fcntl, json, os, random, ssl, sys
    with open(os.environ["FLAKY_COUNTER"], "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        start = len(f.read())
        f.write("x")
    if not flip(os.environ["FLAKY_SEED"], start):
        os.execv(sys.executable, [sys.executable, "-m", "harness", "client"])
    from websockets.sync.client import connect
    env = os.environ
    context = ssl.create_default_context(cafile=env["GATEWAY_HARNESS_CA_FILE"])
    ws = connect(env["GATEWAY_HARNESS_GATEWAY_URL"] + "/?v=10&encoding=json", ssl=context)
    ws.recv()  # HELLO
    ws.send(json.dumps({"op": 2, "d": {"token": env["GATEWAY_HARNESS_TOKEN"], "intents": 513,
                        "properties": {"os": "linux", "browser": "x", "device": "x"}}}))
    while json.loads(ws.recv()).get("t") != "READY":
        pass
    print(f"coin flip {start}: quitting after READY", file=sys.stderr, flush=True)
""")


def flip(seed: str, start: int) -> bool:
    """True: the client's start number ``start`` quits early."""
    return random.Random(f"{seed}:{start}").random() < 0.5


FLIP_SOURCE = "import random\n" + textwrap.dedent('''
    def flip(seed, start):
        return random.Random(f"{seed}:{start}").random() < 0.5
''')


def test_validate_repeat_shows_a_flaky_cell_with_each_failing_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    runs = 3
    # a seed whose flips over three starts are mixed: the same number fail in every order
    seed = next(s for s in range(100) if 0 < sum(flip(str(s), n) for n in range(runs)) < runs)
    failing = sum(flip(str(seed), n) for n in range(runs))
    script = tmp_path / "flaky.py"
    script.write_text(FLIP_SOURCE + FLAKY_CLIENT)
    monkeypatch.setenv("FLAKY_SEED", str(seed))
    monkeypatch.setenv("FLAKY_COUNTER", str(tmp_path / "starts"))
    out_dir = tmp_path / "out"
    code = main(["validate", "--command", f"{sys.executable} {script}", "--name", "flakybot",
                 BASELINE, "--repeat", str(runs), "--jobs", "2", "--out", str(out_dir),
                 "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "m.md")])
    out = capsys.readouterr().out
    assert code == EXIT_FLAKY, out
    # every run is kept, each with its repeat index and its own trace
    entries = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert sorted(e["repeat"] for e in entries) == [1, 2, 3]
    assert len({e["trace"] for e in entries}) == runs
    bad = [e for e in entries if e["outcome"] != "PASS"]
    assert len(bad) == failing and all("PR1" in e["failed_invariants"] for e in bad)
    # the matrix: FLAKY k/N, and under it each failing run with its evidence
    md = (tmp_path / "m.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| baseline-steady |"))
    assert f"⚠️ FLAKY {failing}/{runs} failed: " in row and f"PR1 {failing}" in row
    lines = md.splitlines()
    for e in bad:
        head = f"- baseline-steady / flakybot #{e['repeat']}: "
        [line] = [x for x in lines if x.startswith(head)]
        first = next(v for v in e["verdicts"] if v["status"] == "fail")
        assert line.startswith(f"{head}{first['invariant']}: {first['evidence'][:60]}")
    assert md in out  # the terminal shows the same matrix
    report = (out_dir / "report.html").read_text()
    for e in bad:
        assert f"baseline-steady #{e['repeat']}" in report


def run(outcome: str, repeat: int, *failed: str, error: str | None = None) -> ScenarioResult:
    verdicts = [Verdict(inv, "fail", f"{inv} evidence of run {repeat}") for inv in failed]
    if outcome != "UNJUDGED":
        verdicts.append(Verdict("HB1", "pass", "ok"))
    return ScenarioResult("s", "real", "c", verdicts, error=error, repeat=repeat)


def test_a_cell_passes_fails_or_is_flaky_over_its_runs() -> None:
    cell = conformance_matrix([run("PASS", k) for k in (1, 2, 3)]).cell("s", "c")
    assert (cell.status, cell.short()) == ("pass", "pass x3")
    # failed in every run: named by the invariants that failed in all of them
    every = [run("FAIL", 1, "LV1", "HB2"), run("FAIL", 2, "LV1"), run("FAIL", 3, "LV1", "RS1")]
    cell = conformance_matrix(every).cell("s", "c")
    assert (cell.status, cell.failed, cell.short()) == ("fail", ("LV1",), "FAIL LV1 (3/3)")
    assert matrix_exit_code(every) == 1
    # some runs failed: flaky, with a tally and each failing run's evidence
    mixed = [run("PASS", 1), run("FAIL", 2, "LV1"), run("PASS", 3), run("FAIL", 4, "LV1", "HB2")]
    cell = conformance_matrix(mixed).cell("s", "c")
    assert cell.status == "flaky" and cell.short() == "FLAKY 2/4 failed: LV1 2, HB2 1"
    assert cell.evidence == ("#2: LV1: LV1 evidence of run 2",
                             "#4: LV1: LV1 evidence of run 4 (and HB2)")
    assert matrix_exit_code(mixed) == EXIT_FLAKY
    assert '<td class="flaky" title="#2: LV1: LV1 evidence of run 2' in matrix_html(mixed)
    # a run that broke counts against the cell like a failed one
    broke = [run("PASS", 1), run("PASS", 2, error="client did not start within 60 s")]
    assert conformance_matrix(broke).cell("s", "c").short() == "FLAKY 1/2 failed: ERROR 1"
    # a failed cell beside a flaky one: the failure decides the exit code
    other = [ScenarioResult(r.name, r.mode, "d", r.verdicts, repeat=r.repeat) for r in every]
    assert matrix_exit_code(mixed + other) == 1
    # run once, as before: no counts, no evidence list
    once = ScenarioResult("s", "real", "c", [Verdict("LV1", "fail", "x")])
    assert conformance_matrix([once]).cell("s", "c").short() == "FAIL LV1"
    assert "Flaky cells" not in matrix_markdown([once])
