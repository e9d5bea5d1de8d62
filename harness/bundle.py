"""Bug bundles: one folder per finding of a wall-clock fuzz campaign, fit to attach to an issue.

``write_bundle(out_dir, bug)`` writes ``out_dir/NAME/``:

- ``scenario.toml``: the minimal schedule as a scenario file; ``gateway-harness validate
  --command CMD scenario.toml`` (or ``--client NAME``) runs it as is;
- ``runs/confirm-N/``, ``runs/baseline/``, ``runs/found/``: each run's trace (JSON lines), the
  client's delivery log and its ``stdout.log``/``stderr.log`` (in ``*.client/``);
- ``report.html``: those runs with their timelines and verdicts;
- ``versions.json``: the client library, the harness, Python and Node.js;
- ``REPORT.md``: what happened, which invariant, the evidence lines, the reproduction rate and
  how to replay, in Markdown for the library's issue tracker.

It knows nothing of campaigns: ``harness.campaign`` hands it a ``Bug``.
"""

from __future__ import annotations

import json
import platform
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway_common.trace import load_jsonl
from harness.oracle import invariant_title
from harness.report.model import ScenarioResult
from harness.scenario import Scenario
from harness.schedules import write_scenario

MAX_EVIDENCE_LINES = 12


@dataclass
class BundleRun:
    """One run kept as evidence: ``label`` is its folder under ``runs/`` (found, confirm-1, ...,
    baseline); ``run_dir`` where the world wrote its trace and client logs (copied in if it is
    not there already); ``result`` None if it was interrupted."""

    label: str
    result: ScenarioResult | None
    run_dir: Path | None
    baseline: bool = False


@dataclass
class Bug:
    """A finding, as the bundle shows it."""

    client: str
    invariant: str
    evidence: str  # the failed verdict's evidence (from the run that first failed)
    scenario: Scenario  # the minimal schedule, named (the bundle's folder and scenario.toml)
    found_faults: int  # faults in the generated schedule that first failed
    found_after: float  # s from the campaign's start
    runs: list[BundleRun]
    shrunk: bool = True
    notes: Sequence[str] = ()
    reproduced: int | None = None  # confirming runs that failed the same invariant ...
    confirm_runs: int = 0  # ... of these
    baseline: str | None = "reference"
    baseline_passed: bool | None = None
    replay: Sequence[str] = ()  # gateway-harness arguments naming the client, before the file
    command: str | None = None  # the client's command line, when it is one
    adapter_versions: dict[str, str] = field(default_factory=dict)


def write_bundle(out_dir: Path, bug: Bug) -> Path:
    """Write the bundle folder for ``bug`` under ``out_dir``; its path."""
    from harness.report.html import write_html

    bundle = out_dir / bug.scenario.name
    runs_dir = bundle / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    kept: list[BundleRun] = []
    for run in bug.runs:
        target = runs_dir / run.label
        if run.run_dir is not None and run.run_dir.exists() and run.run_dir != target:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(run.run_dir, target)
        kept.append(replace(run, run_dir=target if target.exists() else None))
    scenario_path = write_scenario(
        bug.scenario, bundle / "scenario.toml",
        comments=(f"Found by gateway-harness fuzz against {bug.client}: {bug.invariant} "
                  f"({invariant_title(bug.invariant, bug.invariant)})",
                  f"Replay: {_replay_line(bug, 'scenario.toml')}"))
    bug = replace(bug, scenario=replace(bug.scenario, path=scenario_path))
    results = [replace(run.result, name=f"{run.label}: {bug.scenario.name}",
                       trace_path=_trace_file(run, bundle))
               for run in kept if run.result is not None]
    if results:
        write_html(results, bundle / "report.html",
                   title=f"gateway-harness fuzz: {bug.invariant} against {bug.client}",
                   meta={"mode": "real", "client": bug.client, "seed": bug.scenario.seed})
    versions = collect_versions(bug, kept)
    (bundle / "versions.json").write_text(json.dumps(versions, indent=2) + "\n",
                                          encoding="utf-8")
    (bundle / "REPORT.md").write_text(report_markdown(bug, kept, versions, bundle),
                                      encoding="utf-8")
    return bundle


def _trace_file(run: BundleRun, bundle: Path) -> Path | None:
    if run.run_dir is None:
        return None
    found = sorted(run.run_dir.glob("*.trace.jsonl"))
    return found[0].relative_to(bundle) if found else None


def _replay_line(bug: Bug, path: str) -> str:
    return shlex.join(["gateway-harness", *bug.replay, path])


# ---- versions ---------------------------------------------------------------------------------


def collect_versions(bug: Bug, runs: Sequence[BundleRun]) -> dict[str, Any]:
    """The client library (what it announced on stdout, else the adapter's pins), its runtime,
    the harness, the harness's Python and, for a Node.js client, Node's version."""
    from importlib.metadata import PackageNotFoundError, version

    client: dict[str, str] = dict(bug.adapter_versions)
    runtime = None
    for run in runs:
        if run.run_dir is None or run.baseline:
            continue
        for log in sorted(run.run_dir.glob("*.client/stdout.log")):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                event = _json_object(line)
                lib, ver = event.get("lib"), event.get("version")
                if isinstance(lib, str) and isinstance(ver, str):
                    client[lib] = ver
                if isinstance(event.get("runtime"), str):
                    runtime = event["runtime"]
    try:
        harness = version("gateway-harness")
    except PackageNotFoundError:
        harness = "unknown"
    out: dict[str, Any] = {"client": bug.client, "client_library": client,
                           "client_runtime": runtime, "gateway-harness": harness,
                           "python": platform.python_version()}
    argv0 = Path(shlex.split(bug.command)[0]).name if bug.command else ""
    if (runtime or "").startswith("node") or argv0 in ("node", "npm", "npx"):
        out["node"] = _node_version()
    return out


def _json_object(line: str) -> dict[str, Any]:
    line = line.strip()
    if not line.startswith("{"):
        return {}
    try:
        obj = json.loads(line)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# ---- REPORT.md --------------------------------------------------------------------------------


def report_markdown(bug: Bug, runs: Sequence[BundleRun], versions: dict[str, Any],
                    bundle: Path) -> str:
    """REPORT.md: a summary to paste into the client library's issue tracker."""
    inv, title = bug.invariant, invariant_title(bug.invariant, "the run broke")
    steps = bug.scenario.steps
    lines = [f"# {bug.client}: {inv} ({title}) after {len(steps)} network/gateway fault(s)", ""]
    rate = _rate(bug)
    lines += [f"- **Client**: {_client_line(versions)}",
              f"- **Invariant**: {inv}, {title}",
              f"- **Reproduction**: {rate}",
              f"- **Baseline**: {_baseline_line(bug)}"]
    for note in bug.notes:
        lines.append(f"- **Note**: {note}")
    lines += ["", "## What happened", "",
              f"A fake Discord gateway (protocol-faithful, on loopback, wss with its own CA) ran "
              f"the schedule below against the client; the harness judged the gateway's trace. "
              f"The client broke {inv} ({title}):", "",
              f"> {bug.evidence}", "",
              "## The schedule" + (f" (shrunk from {bug.found_faults} faults)"
                                   if bug.shrunk and bug.found_faults != len(steps) else ""), "",
              "Times are seconds from the client's first connection attempt.", ""]
    lines += [f"{i}. {step.describe()}" for i, step in enumerate(steps, 1)]
    lines += ["", "## Evidence", ""]
    lines += _evidence_section(bug, runs, bundle)
    lines += ["", "## How to replay", "", "```sh",
              _replay_line(bug, "scenario.toml") + f"   # {bug.client}: fails {inv}"]
    if bug.baseline:
        lines.append(f"gateway-harness validate --client {bug.baseline} scenario.toml"
                     f"   # the {bug.baseline} client passes it")
    lines += ["```", "",
              "`scenario.toml` is the whole schedule (gateway knobs, faults, expectations); "
              "`report.html` shows every run's timeline; `runs/*/` hold the traces (JSON "
              "lines), the client's delivery log and its stdout/stderr.", "",
              "## Versions", ""]
    lines += [f"- {key}: {_version_text(value)}" for key, value in versions.items()
              if value not in (None, {}, "")]
    return "\n".join(lines) + "\n"


def _rate(bug: Bug) -> str:
    if bug.reproduced is None or bug.confirm_runs == 0:
        return "not confirmed (no confirming run finished)"
    pct = 100 * bug.reproduced / bug.confirm_runs
    return (f"{bug.reproduced}/{bug.confirm_runs} runs of the minimal schedule failed "
            f"{bug.invariant} ({pct:.0f}%)")


def _baseline_line(bug: Bug) -> str:
    if bug.baseline is None:
        return "none (--no-baseline)"
    if bug.baseline_passed is None:
        return f"the {bug.baseline} client passed the schedule as found; not rerun"
    return (f"the {bug.baseline} client {'passed' if bug.baseline_passed else 'FAILED'} the "
            "minimal schedule")


def _client_line(versions: dict[str, Any]) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in versions.get("client_library", {}).items())
    text = str(versions.get("client"))
    if libs:
        text += f" ({libs})"
    if versions.get("client_runtime"):
        text += f", {versions['client_runtime']}"
    return text


def _version_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _evidence_section(bug: Bug, runs: Sequence[BundleRun], bundle: Path) -> list[str]:
    """The failed verdict's trace lines, from the first confirming run that failed the same
    invariant (else the run that found it)."""
    failing = [run for run in runs if run.result is not None and not run.baseline
               and bug.invariant in run.result.failed_invariants]
    failing.sort(key=lambda run: (not run.label.startswith("confirm"), run.label))
    if not failing:
        return ["No run kept its failing trace."]
    run = failing[0]
    assert run.result is not None
    verdict = next(v for v in run.result.verdicts
                   if v.invariant == bug.invariant and v.status == "fail")
    trace = _trace_file(run, bundle)
    records = run.result.records
    if not records and trace is not None:
        records = load_jsonl(bundle / trace)
    out = [f"From `{trace}` ({run.label}): {verdict.evidence}", "", "```"]
    shown = [i for i in verdict.record_indices if 0 <= i < len(records)][:MAX_EVIDENCE_LINES]
    for i in shown:
        rec = {k: v for k, v in records[i].items() if k != "raw"}
        text = json.dumps(rec, separators=(",", ":"), default=str)
        out.append(f"line {i + 1}: {text[:240]}{'...' if len(text) > 240 else ''}")
    if len(verdict.record_indices) > len(shown):
        out.append(f"... and {len(verdict.record_indices) - len(shown)} more trace lines")
    if not shown:
        out.append("(the verdict cites no trace line)")
    out.append("```")
    if run.result.stderr_tail:
        tail = run.result.stderr_tail.splitlines()[-8:]
        out += ["", "The client's stderr, last lines:", "", "```", *tail, "```"]
    return out
