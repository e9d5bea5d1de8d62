"""Benchmarks of the simulated world (issue 6): a simulated day, generated schedules per second,
time to shrink each planted bug, and a 2,500-shard storm.

    python bench/bench_sim.py all
    python bench/bench_sim.py day [--repeat 3]       # 24 h, 1 dispatch/min, 24 faults, vs floor
    python bench/bench_sim.py schedules [--n 300] [--baseline 3c77126]  # per CPU-second, vs
    python bench/bench_sim.py shrink [--examples 1000] [--mutant NAME ...]
    python bench/bench_sim.py storm [--shards 250,2500] [--max-concurrency 16] [--pace both]

Goals (issue 16), each a ratio measured side by side in one run: day <= 2x its floor's CPU
(bench/floor.py: a bare trio loop, the same heartbeats and dispatches); >= 3x the schedules per
CPU-second of the baseline commit; 2,500 shards <= 12x the CPU of 250 (``--pace scaled``: the
identify buckets grow with the fleet, so the storms last as long); each mutant shrunk to <= 3
faults in <= 30 s. Per-core rates divide by the process's CPU time, so other load on the machine
does not count against them; wall times are reported too. Prints a table per section and one
JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # floor.py

from fake_gateway.config import scenario_config  # noqa: E402
from harness.scenario import GatewayKnobs, Step, Trigger  # noqa: E402
from harness.schedules import ScheduleLimits, make_schedule, run_schedule  # noqa: E402


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


# ---- a simulated day ---------------------------------------------------------------------------


def day_schedule() -> Any:
    """24 h of a bot on Discord's real heartbeat (41.25 s) with 1 dispatch a minute, every byte
    through the fault proxies, and one fault an hour of eight kinds in turn."""
    kinds: list[dict[str, Any]] = [
        {"kind": "control", "action": "reset"},
        {"kind": "control", "action": "reconnect"},
        {"kind": "toxic", "type": "latency", "attributes": {"latency": 2000, "jitter": 200},
         "duration": 30.0},
        {"kind": "proxy", "action": "down", "target": "resume", "duration": 20.0},
        {"kind": "control", "action": "invalid_session", "params": {"resumable": True}},
        {"kind": "control", "action": "withhold_acks", "duration": 100.0},
        {"kind": "toxic", "type": "reset_after", "attributes": {"bytes": 1},
         "stream": "upstream", "target": "resume", "duration": 30.0},
        {"kind": "control", "action": "close", "params": {"code": 4000}},
    ]
    steps = []
    for hour in range(24):
        spec = dict(kinds[hour % len(kinds)])
        duration = spec.pop("duration", None)
        steps.append(Step(name="", start=Trigger(at=hour * 3600.0 + 1800.0), duration=duration,
                          **spec))
    limits = ScheduleLimits(horizon=24 * 3600.0, max_faults=24, max_fault_time=3600.0,
                            max_duration=600.0, recovery_bound=120.0, quiet=600.0)
    knobs = GatewayKnobs(scenario_config(heartbeat_interval_ms=41250, dispatch_rate=1 / 60))
    scenario = make_schedule(steps, limits, seed=1, gateway=knobs, name="bench-day")
    return scenario


def warm_up() -> None:
    """Import everything and run one short schedule, so no timing includes import costs."""
    run_schedule(make_schedule([], seed=0))


def _day_counts(records: list[Any]) -> tuple[int, int]:
    """Heartbeats the gateway received and dispatches it sent: what the floor repeats."""
    beats = sum(1 for r in records if r.get("kind") == "frame_in" and r.get("op") == 1)
    sent = sum(1 for r in records if r.get("kind") == "frame_out" and r.get("op") == 0)
    return beats, sent


def bench_day(repeat: int) -> dict[str, Any]:
    """The day and its floor (bench/floor.py with the day's heartbeat and dispatch counts),
    run alternately ``repeat`` times; the best of each, and their ratio. Both count trio
    scheduler iterations, which no other load on the machine changes."""
    from floor import run_floor

    from harness.simulation import IterationCounter, collecting_less, instrumented

    scenario = day_schedule()
    warm_up()
    best: dict[str, Any] = {}
    for _ in range(repeat):
        counter = IterationCounter()
        with instrumented(counter):
            result, wall, cpu = _timed(run_schedule, scenario)
        beats, sent = _day_counts(result.records)
        floor_counter = IterationCounter()
        with collecting_less():  # the garbage collector as in every simulated run
            floor = run_floor(beats, sent, instruments=[floor_counter])
        if not best or cpu < best["cpu_s"]:
            best.update(wall_s=wall, cpu_s=cpu, iterations=counter.iterations)
        if "floor_cpu_s" not in best or floor.cpu_s < best["floor_cpu_s"]:
            best.update(floor_wall_s=floor.wall_s, floor_cpu_s=floor.cpu_s,
                        floor_iterations=floor_counter.iterations)
    simulated = max(float(r["ts"]) for r in result.records)
    ratio_cpu = best["cpu_s"] / best["floor_cpu_s"]
    ratio_wall = best["wall_s"] / best["floor_wall_s"]
    ratio_iter = best["iterations"] / best["floor_iterations"]
    out = {"ratio_cpu": round(ratio_cpu, 2), "ratio_wall": round(ratio_wall, 2),
           "ratio_iterations": round(ratio_iter, 2),
           **{k: round(v, 3) if isinstance(v, float) else v for k, v in best.items()},
           "simulated_s": round(simulated, 1), "heartbeats": beats, "dispatches": sent,
           "trace_records": len(result.records), "faults": len(scenario.steps),
           "outcome": result.outcome, "failed": result.failed_invariants, "repeat": repeat}
    print(f"day: {ratio_cpu:.2f}x the floor's CPU time ({ratio_wall:.2f}x wall, "
          f"{ratio_iter:.2f}x its scheduler iterations; goal <= 2x)")
    print(f"  full stack: {simulated / 3600:.2f} h simulated, {len(scenario.steps)} faults, "
          f"{beats} heartbeats, {sent} dispatches, {len(result.records)} trace records, "
          f"outcome {result.outcome} {result.failed_invariants or ''}: {best['cpu_s']:.2f} s "
          f"CPU, {best['wall_s']:.2f} s wall, {best['iterations']:,} scheduler iterations")
    print(f"  floor (bench/floor.py, the same heartbeats and dispatches on trio memory streams): "
          f"{best['floor_cpu_s']:.2f} s CPU, {best['floor_wall_s']:.2f} s wall, "
          f"{best['floor_iterations']:,} scheduler iterations (best of {repeat} each)")
    return out


# ---- generated schedules per second ------------------------------------------------------------


def bench_schedules(n: int, horizon: float) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, seed, settings

    from harness.schedules import schedules

    drawn: list[Any] = []

    @seed(12345)
    @settings(max_examples=n, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(schedules(horizon))
    def collect(scenario: Any) -> None:
        drawn.append(scenario)

    warm_up()
    _, gen_wall, gen_cpu = _timed(collect)

    def run_all() -> list[Any]:
        return [run_schedule(s) for s in drawn]

    results, wall, cpu = _timed(run_all)
    simulated = sum(max((float(r["ts"]) for r in res.records), default=0.0) for res in results)
    failed = sum(1 for r in results if r.failed_invariants)
    frames, floor_cpu = _schedules_floor(results)
    out = {"schedules": len(drawn), "generate_cpu_s": round(gen_cpu, 3),
           "run_wall_s": round(wall, 3),
           "run_cpu_s": round(cpu, 3), "per_core_per_s": round(len(drawn) / (cpu + gen_cpu), 1),
           "per_s_wall": round(len(drawn) / (wall + gen_wall), 1),
           "simulated_s": round(simulated, 1), "failing": failed,
           "frames": frames, "floor_cpu_s": round(floor_cpu, 3),
           "floor_per_core_per_s": round(len(drawn) / (floor_cpu + gen_cpu), 1)}
    print(f"schedules: {len(drawn)} generated (horizon {horizon:g} s) and run against the "
          f"reference client: {out['per_core_per_s']} per CPU-second "
          f"({out['per_s_wall']}/s wall; generation {gen_cpu:.2f} s CPU, runs {cpu:.2f} s CPU); "
          f"{simulated / max(cpu, 1e-9):.0f}x real time; {failed} failing (goal >= 50/s/core)")
    return out


def _schedules_floor(results: list[Any]) -> tuple[int, float]:
    """The frames the runs moved and the CPU seconds bench/floor.py takes to move as many, one
    ``trio.run`` per schedule: each client frame as a heartbeat the floor answers with an ACK,
    the gateway's other frames as dispatches. No run of the full stack (WebSocket, TLS, proxies,
    gateway and client cores, trace, oracle) can cost less than its floor."""
    from floor import run_floor

    from harness.simulation import collecting_less

    counts = []
    for res in results:
        sent_by_client = sum(1 for r in res.records if r.get("kind") == "frame_in")
        sent_by_gateway = sum(1 for r in res.records if r.get("kind") == "frame_out")
        counts.append((sent_by_client, max(0, sent_by_gateway - sent_by_client)))
    with collecting_less():  # the garbage collector as in every simulated run
        _, _, cpu = _timed(lambda: [run_floor(beats, others, interval=1.0, dispatch_interval=1.0)
                                    for beats, others in counts])
    return sum(2 * beats + others for beats, others in counts), cpu


BASELINE_COMMIT = "3c77126"  # issue 16 was filed against this commit


def _export_tree(commit: str) -> Path:
    """The project as of ``commit``, exported once to /tmp (``git archive``: the shared
    checkout's index and worktree list stay untouched)."""
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parent.parent
    full = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", f"{commit}^{{commit}}"],
                          capture_output=True, text=True)
    if full.returncode != 0:
        raise SystemExit(f"--baseline: {commit!r} is no commit of {root}")
    tree = Path(tempfile.gettempdir()) / f"gateway-harness-baseline-{full.stdout.strip()[:12]}"
    if not (tree / "bench" / "bench_sim.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(root), "archive", full.stdout.strip()],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _tree_schedules(tree: Path, n: int, horizon: float) -> dict[str, Any]:
    import subprocess

    script = Path(__file__).resolve().parent / "tree_schedules.py"
    done = subprocess.run([sys.executable, str(script), str(tree), "--n", str(n),
                           "--horizon", str(horizon)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"schedules on {tree} failed:\n{done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def bench_schedules_vs(n: int, horizon: float, baseline: str) -> dict[str, Any]:
    """Schedules per CPU-second of this tree and of ``baseline``, each in its own process in
    this one run (the machine's load is the same for both), and their ratio."""
    here = Path(__file__).resolve().parent.parent
    base = _tree_schedules(_export_tree(baseline), n, horizon)
    now = _tree_schedules(here, n, horizon)
    ratio = now["per_core_per_s"] / max(base["per_core_per_s"], 1e-9)
    it_ratio = base["iterations_per_schedule"] / max(now["iterations_per_schedule"], 1)
    for label, r in ((f"baseline {baseline}", base), ("this tree", now)):
        print(f"  {label:<18} {r['per_core_per_s']:>6} schedules per CPU-second "
              f"({r['schedules']} drawn, horizon {horizon:g} s; generation "
              f"{r['generate_cpu_s']:.2f} s CPU, runs {r['run_cpu_s']:.2f} s CPU; "
              f"{r['iterations_per_schedule']:,} scheduler iterations per schedule; "
              f"{r['failing']} failing)")
    print(f"schedules: {ratio:.2f}x the schedules per CPU-second of {baseline} "
          f"({it_ratio:.2f}x fewer scheduler iterations per schedule; goal >= 3x). Each tree "
          "draws from its own strategy (seed 12345), so the mixes of faults differ.")
    out = {"ratio": round(ratio, 2), "iterations_ratio": round(it_ratio, 2),
           "baseline_commit": baseline, "baseline": base, "now": now}
    # What the goal asks of the runs: the CPU left per run at 3x the baseline's rate, against
    # the floor of the same frames (a lower bound no full-stack run can beat).
    n, floor = now["schedules"], now["floor_cpu_s"]
    runs_budget = n / (3 * base["per_core_per_s"]) - now["generate_cpu_s"]
    out.update(floor_ratio=round(now["floor_per_core_per_s"] / base["per_core_per_s"], 2),
               runs_vs_floor=round(now["run_cpu_s"] / floor, 2),
               runs_vs_floor_for_3x=round(runs_budget / floor, 2))
    print(f"  floor: the same {now['frames']:,} frames on bare trio memory streams "
          f"(bench/floor.py, one trio.run per schedule) take {floor:.2f} s CPU, so even with "
          f"everything else free this tree could reach {now['floor_per_core_per_s']} per "
          f"CPU-second ({out['floor_ratio']:.2f}x {baseline}); 3x needs the runs within "
          f"{out['runs_vs_floor_for_3x']:.2f}x the floor's CPU, they take "
          f"{out['runs_vs_floor']:.2f}x")
    return out


# ---- time to shrink each planted bug -----------------------------------------------------------


def bench_shrink(
    mutants: list[str], examples: int, horizon: float, seed: int
) -> list[dict[str, Any]]:
    from harness.campaign import CampaignConfig, run_campaign
    from harness.client.mutants import EXPECTED_INVARIANTS, MUTANTS

    rows = []
    for name in mutants or list(MUTANTS):
        config = CampaignConfig(examples=examples, seed=seed, client=name, horizon=horizon,
                                out_dir=None, database=None, baseline="reference")
        result, wall, cpu = _timed(run_campaign, config)
        if result.failures:
            f = result.failures[0]
            row = {"mutant": name, "found": True, "invariant": f.invariant,
                   "expected": f.invariant in EXPECTED_INVARIANTS[name], "faults": f.faults,
                   "found_after_s": round(f.found_after, 2),
                   "three_faults_after_s": None if f.small_after is None
                   else round(f.small_after, 2), "wall_s": round(wall, 2),
                   "cpu_s": round(cpu, 2), "runs": result.examples_run,
                   "schedule": [s.describe() for s in f.scenario.steps]}
        else:
            row = {"mutant": name, "found": False, "wall_s": round(wall, 2),
                   "cpu_s": round(cpu, 2), "runs": result.examples_run}
        rows.append(row)
        if row["found"]:
            print(f"shrink: {name:<28} {row['invariant']:<4} {row['faults']} fault(s), found after "
                  f"{row['found_after_s']:.1f} s, <= 3 faults after "
                  f"{row['three_faults_after_s']} s, done after {wall:.1f} s wall ({cpu:.1f} s "
                  f"CPU, {row['runs']} runs): {'; '.join(row['schedule'])}")
        else:
            print(f"shrink: {name:<28} NOT FOUND in {examples} examples ({wall:.1f} s wall)")
    return rows


# ---- the storm ---------------------------------------------------------------------------------


def bench_storm(shards: int, max_concurrency: int, waves: tuple[str, ...]) -> dict[str, Any]:
    from harness.fleet import FleetConfig, run_fleet

    config = FleetConfig(shards=shards, max_concurrency=max_concurrency, waves=waves)
    report, wall, cpu = _timed(run_fleet, config)
    print(report.text())
    print(f"storm: {shards} shards, max_concurrency {max_concurrency}: {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU (goal <= 30 s)")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), **report.to_json()}


def bench_storms(shard_counts: list[int], max_concurrency: int, waves: tuple[str, ...],
                 paces: tuple[str, ...] = ("scaled", "fixed")) -> dict[str, Any]:
    """Each storm in turn, per pacing; with two or more shard counts, how the cost grows against
    the shard count (goal: 10x the shards within 12x the CPU).

    ``fixed``: every storm has ``max_concurrency`` identify buckets, so each re-IDENTIFY phase
    lasts shards / max_concurrency 5-s windows: 10x the shards is about 7x the simulated time,
    with every shard heartbeating all along, about 70x the shard-seconds of work; no cost per
    shard can make that linear. ``scaled``: the buckets grow with the fleet (Discord gives
    large bots a higher max_concurrency), ``max_concurrency`` for the smallest storm and in
    proportion for the others, so every storm lasts about as long and the shard-seconds grow
    as the shards: the storm the goal is about. Both print the CPU per shard-second too."""
    small, large = min(shard_counts), max(shard_counts)
    out: dict[str, Any] = {}
    for pace in paces:
        runs = {}
        for n in shard_counts:
            mc = max_concurrency if pace == "fixed" else max(1, round(max_concurrency * n / small))
            runs[n] = bench_storm(n, mc, waves)
        result: dict[str, Any] = {"runs": runs}
        out[pace] = result
        if len(shard_counts) < 2:
            continue
        a, b = runs[small], runs[large]
        ratio = b["cpu_s"] / max(a["cpu_s"], 1e-9)
        sim_ratio = b["simulated_seconds"] / max(a["simulated_seconds"], 1e-9)
        records = b["trace_records"] / max(a["trace_records"], 1)
        shard_seconds = (large * b["simulated_seconds"]) / max(small * a["simulated_seconds"], 1e-9)
        result.update(shards_ratio=round(large / small, 2), cpu_ratio=round(ratio, 2),
                      wall_ratio=round(b["wall_s"] / max(a["wall_s"], 1e-9), 2),
                      simulated_ratio=round(sim_ratio, 2), records_ratio=round(records, 2),
                      shard_seconds_ratio=round(shard_seconds, 2),
                      per_record_ratio=round(ratio / records, 2),
                      per_shard_second_ratio=round(ratio / shard_seconds, 2))
    for pace in paces:
        r = out[pace]
        if "cpu_ratio" not in r:
            continue
        a, b = r["runs"][small], r["runs"][large]
        mcs = (f"max_concurrency {a['config']['max_concurrency']} and "
               f"{b['config']['max_concurrency']}")
        print(f"storm ({pace} pacing, {mcs}): {large} shards cost {r['cpu_ratio']:.2f}x the CPU "
              f"of {small} ({large / small:g}x the shards; goal <= {1.2 * large / small:g}x): "
              f"{r['simulated_ratio']:.2f}x the simulated time, {r['shard_seconds_ratio']:.2f}x "
              f"the shard-seconds, {r['records_ratio']:.2f}x the trace records; "
              f"{r['per_shard_second_ratio']:.2f}x the CPU per shard-second, "
              f"{r['per_record_ratio']:.2f}x per record ({b['cpu_s']:.1f} s vs "
              f"{a['cpu_s']:.1f} s CPU)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", nargs="?", default="all",
                   choices=("all", "day", "schedules", "shrink", "storm"))
    p.add_argument("--n", type=int, default=300, help="schedules to run (schedules)")
    p.add_argument("--horizon", type=float, default=10.0)
    p.add_argument("--baseline", default=BASELINE_COMMIT,
                   help="commit whose schedules per CPU-second this tree is compared with")
    p.add_argument("--examples", type=int, default=1000, help="campaign size (shrink)")
    p.add_argument("--seed", type=int, default=1, help="campaign seed (shrink)")
    p.add_argument("--mutant", action="append", default=[], help="only this mutant (shrink)")
    p.add_argument("--repeat", type=int, default=3, help="runs of the day and its floor (day)")
    p.add_argument("--shards", default="250,2500",
                   help="shard counts, comma-separated (storm): each storm, then the ratio")
    p.add_argument("--max-concurrency", type=int, default=16,
                   help="identify buckets of the smallest storm (storm)")
    p.add_argument("--pace", choices=("both", "scaled", "fixed"), default="both",
                   help="scaled: the buckets grow with the shards, so every storm lasts as long; "
                        "fixed: every storm has --max-concurrency (storm)")
    p.add_argument("--waves", default="reconnect,close-4009,restart")
    args = p.parse_args(argv)
    out: dict[str, Any] = {}
    if args.what in ("all", "day"):
        out["day"] = bench_day(args.repeat)
    if args.what in ("all", "schedules"):
        out["schedules"] = bench_schedules_vs(args.n, args.horizon, args.baseline)
    if args.what in ("all", "shrink"):
        out["shrink"] = bench_shrink(args.mutant, args.examples, args.horizon, args.seed)
    if args.what in ("all", "storm"):
        waves = tuple(w for w in args.waves.split(",") if w)
        try:
            counts = [int(n) for n in args.shards.split(",") if n.strip()]
        except ValueError:
            p.error(f"--shards: expected shard counts like 250,2500, got {args.shards!r}")
        paces = ("scaled", "fixed") if args.pace == "both" else (args.pace,)
        out["storm"] = bench_storms(counts, args.max_concurrency, waves, paces)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
