"""Seeded Monte Carlo: how often BO1's stalled_envelope calls each backoff family 'no backoff'.

python bench/bo1_false_alarms.py [runs] [seed]
"""

from __future__ import annotations

import random
import sys

from harness.oracle.backoff import stalled_envelope
from harness.oracle.model import Tolerances

N_WAITS = 10


def families(rng: random.Random, base: float) -> dict[str, list[float]]:
    cap = 60.0
    full = [rng.uniform(0, min(cap, base * 2**n)) for n in range(N_WAITS)]
    equal = [
        min(cap, base * 2**n) / 2 + rng.uniform(0, min(cap, base * 2**n) / 2)
        for n in range(N_WAITS)
    ]
    dec: list[float] = []
    prev = base
    for _ in range(N_WAITS):
        prev = min(cap, rng.uniform(base, prev * 3))
        dec.append(prev)
    plain = [min(cap, base * 2**n) for n in range(N_WAITS)]
    return {
        "full": full,
        "equal": equal,
        "decorrelated": dec,
        "exponential": plain,
        "BAD fixed 0.5": [0.5] * N_WAITS,
        "BAD random<1": [rng.uniform(0, 1) for _ in range(N_WAITS)],
        "BAD linear": [0.1 * (n + 1) for n in range(20)],
    }


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    tol = Tolerances()
    for base in (0.25, 0.5, 1.0, 2.0):
        hits: dict[str, int] = {}
        for _ in range(runs):
            for name, waits in families(rng, base).items():
                hits[name] = hits.get(name, 0) + (stalled_envelope(waits, tol) is not None)
        print(f"base {base}: " + ", ".join(f"{k} {v}/{runs}" for k, v in hits.items()))


if __name__ == "__main__":
    main()
