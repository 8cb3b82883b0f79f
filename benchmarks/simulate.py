"""Time simulate() + write() at scale and report wall time and peak RSS on one line.

    python benchmarks/simulate.py --accounts 1000000 --months 24
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from pipelines.simulate import simulate, write


def _peak_rss_gib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**3 if sys.platform == "darwin" else 1024**2)


def run(accounts: int, months: int, seed: int, out: Path | None) -> str:
    """Simulate and write once; the one-line report."""
    with tempfile.TemporaryDirectory() as scratch:
        target = out or Path(scratch)
        began = time.perf_counter()
        sim = simulate(accounts, months, seed)
        simulated = time.perf_counter()
        write(sim, target)
        done = time.perf_counter()
    rows = sum(len(frame) for frame in sim.tables.values())
    return (f"simulate accounts={accounts} months={months} seed={seed}: wall {done - began:.1f} s "
            f"(simulate {simulated - began:.1f} s, write {done - simulated:.1f} s), "
            f"peak RSS {_peak_rss_gib():.2f} GiB, {rows} table rows, {len(sim.truth_cure)} overdue at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="keep the output here (default: a temp dir)")
    args = parser.parse_args()
    print(run(args.accounts, args.months, args.seed, args.out))


if __name__ == "__main__":
    main()
