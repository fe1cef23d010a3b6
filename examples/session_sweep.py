"""One script for every machine: the first run serves, later runs work for it.

    python examples/session_sweep.py            # here: serves, works, prints the result
    python examples/session_sweep.py            # on another machine (with the status file
                                                # copied there): works, then exits

Pass SHOAL_BIND=tcp://0.0.0.0:5555 to let other machines in (default: this one only).
"""

import math
import sys

import shoal


def estimate_pi(samples: int) -> float:
    """A Monte-Carlo estimate; shoal.random() is seeded per call, so reruns agree."""
    rng = shoal.random()
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1 for _ in range(samples))
    return 4 * inside / samples


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "pi"
    with shoal.session(name, workers=2, seed=7) as ex:
        estimates = list(ex.map(estimate_pi, [20_000] * 16))
        mean = sum(estimates) / len(estimates)
        print(f"pi ~ {mean:.4f} from {len(estimates)} calls (error {abs(mean - math.pi):.4f})")
