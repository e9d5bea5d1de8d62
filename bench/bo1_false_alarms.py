"""Seeded Monte Carlo: how often BO1's no-backoff rule calls each backoff family 'no backoff'.

python bench/bo1_false_alarms.py [runs] [seed]

Correct families (plain exponential, full, equal and decorrelated jitter) at bases 0.1-2 s and
caps 2-60 s, and bad ones (a fixed 0.5 s wait, random uniform(0, 1) waits, a linear ramp from
0.1 s by 0.1 s), each over 10, 20 and 40 waits. Prints, per base, wait count and family, how
many runs BO1 failed (for a correct family the worst cap), and for the bad families how many
waits it took to fail every one.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable

from harness.oracle.backoff import no_backoff
from harness.oracle.model import Tolerances

BASES = (0.1, 0.25, 0.5, 1.0, 2.0)
CAPS = (2.0, 10.0, 60.0)
WAIT_COUNTS = (10, 20, 40)
Family = Callable[[random.Random, float, float, int], list[float]]


def full(rng: random.Random, base: float, cap: float, n: int) -> list[float]:
    return [rng.uniform(0, min(cap, base * 2**k)) for k in range(n)]


def equal(rng: random.Random, base: float, cap: float, n: int) -> list[float]:
    return [min(cap, base * 2**k) / 2 + rng.uniform(0, min(cap, base * 2**k) / 2) for k in range(n)]


def decorrelated(rng: random.Random, base: float, cap: float, n: int) -> list[float]:
    out: list[float] = []
    prev = base
    for _ in range(n):
        prev = min(cap, rng.uniform(base, prev * 3))
        out.append(prev)
    return out


def exponential(rng: random.Random, base: float, cap: float, n: int) -> list[float]:
    return [min(cap, base * 2**k) for k in range(n)]


CORRECT: dict[str, Family] = {
    "exponential": exponential,
    "full": full,
    "equal": equal,
    "decorrelated": decorrelated,
}
BAD: dict[str, Callable[[random.Random, int], list[float]]] = {
    "fixed 0.5": lambda rng, n: [0.5] * n,
    "random<1": lambda rng, n: [rng.uniform(0, 1) for _ in range(n)],
    "linear 0.1": lambda rng, n: [0.1 * (k + 1) for k in range(n)],
}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    tol = Tolerances()
    for n in WAIT_COUNTS:
        for base in BASES:
            parts = []
            for name, fam in CORRECT.items():
                worst = max(
                    sum(no_backoff(fam(rng, base, cap, n), tol) is not None for _ in range(runs))
                    for cap in CAPS
                )
                parts.append(f"{name} {worst}/{runs}")
            print(f"{n} waits, base {base}: " + ", ".join(parts), flush=True)
    bad_runs = max(1, runs // 10)
    for name, make in BAD.items():
        rates = []
        for n in (5, 6, 10, 19, 20, 40):
            hits = sum(no_backoff(make(rng, n), tol) is not None for _ in range(bad_runs))
            rates.append(f"{n} waits {hits}/{bad_runs}")
        print(f"BAD {name}: " + ", ".join(rates), flush=True)


if __name__ == "__main__":
    main()
