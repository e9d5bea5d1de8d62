"""Run ``bench_sim.py schedules`` of any checkout of this project, counting trio scheduler
iterations: ``bench_sim.py schedules`` runs it on a baseline commit and on this tree, each in
its own process, so the two rates are measured side by side in one run (issue 16).

    python bench/tree_schedules.py TREE --n 300 --horizon 10

TREE's own packages are imported (it goes first on sys.path), whatever is installed. Prints
TREE's bench_sim line, then one JSON line: its figures plus ``iterations`` (per schedule).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tree", type=Path)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--horizon", type=float, default=10.0)
    args = p.parse_args(argv)
    tree = args.tree.resolve()
    sys.path[:0] = [str(tree), str(tree / "bench")]
    import trio

    class Iterations(trio.abc.Instrument):
        count = 0

        def before_io_wait(self, timeout: float) -> None:
            Iterations.count += 1

    run = trio.run

    def counted_run(*a: Any, **kw: Any) -> Any:  # every run of the tree's simulation
        kw["instruments"] = [*kw.get("instruments", ()), Iterations()]
        return run(*a, **kw)

    trio.run = counted_run  # type: ignore[assignment]
    import bench_sim

    warm_up = bench_sim.warm_up

    def warm_up_uncounted() -> None:
        warm_up()
        Iterations.count = 0

    bench_sim.warm_up = warm_up_uncounted
    # Newer trees also time a floor of their runs: its trio runs are not the tree's to count.
    floor = getattr(bench_sim, "_schedules_floor", None)
    if floor is not None:

        def floor_uncounted(results: Any) -> Any:
            before = Iterations.count
            try:
                return floor(results)
            finally:
                Iterations.count = before

        bench_sim._schedules_floor = floor_uncounted
    out = bench_sim.bench_schedules(args.n, args.horizon)
    out["iterations_per_schedule"] = round(Iterations.count / max(out["schedules"], 1))
    out["tree"] = str(tree)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
