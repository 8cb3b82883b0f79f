"""The quality gate's calibration check by simulation: how often the plug-in ECE and the debiased RMS calibration
error (what the gate judges, `models.metrics.debiased_calibration_error`) stay within `max_ece` (0.05), for a
perfectly calibrated model and for models miscalibrated by a known amount, on as many cases as a band holds.

Predictions are uniform on [0.05, 0.85] (a band's spread); outcomes are drawn from the true chance:

- calibrated: the prediction itself (true ECE 0);
- uniform gap g: the prediction + g everywhere (true ECE = true RMS error = g: the case where the RMS error is
  no larger than the ECE, so the hardest for it);
- local gap g: overconfident at the top: the top 30% of predictions (three of the ten bins) - g / 0.3, the
  rest calibrated (true ECE g, true RMS error g / sqrt(0.3) = 1.83 g).

The true figures are the population ones over the same ten equal-mass bins (computed from the true chances of
a million cases).

A calibrated model should pass (its fail rate is a false alarm); a model whose true ECE is above 0.05 should
fail; one at 0.05 sits on the line (about half and half for an unbiased measure). Prints a Markdown table.

Run: .venv/bin/python benchmarks/calibration_gate.py [--cases 200 357 1000] [--draws 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from models.config import load_params
from models.metrics import debiased_calibration_error, expected_calibration_error

GAPS = (0.03, 0.05, 0.08, 0.10)
LOCAL_SHARE = 0.3


def scenarios() -> list[tuple[str, str, float]]:
    """(name, kind, gap)."""
    return ([("calibrated", "uniform", 0.0)] + [(f"uniform gap {g:.2f}", "uniform", g) for g in GAPS]
            + [(f"local gap {g:.2f} (top 30%)", "local", g) for g in GAPS])


def chances(n: int, kind: str, gap: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and the true chances of one holdout of n cases."""
    p = rng.uniform(0.05, 0.85, n)
    if kind == "uniform":
        return p, p + gap
    return p, np.where(p >= np.quantile(p, 1 - LOCAL_SHARE), p - gap / LOCAL_SHARE, p)


def truth(kind: str, gap: float, bins: int = 10) -> tuple[float, float]:
    """The population ECE and RMS calibration error over `bins` equal-mass bins (a million cases)."""
    p, q = chances(1_000_000, kind, gap, np.random.default_rng(0))
    order = np.argsort(p)
    gaps = np.array([q[idx].mean() - p[idx].mean() for idx in np.array_split(order, bins)])
    return float(np.abs(gaps).mean()), float(np.sqrt((gaps ** 2).mean()))


def draw(n: int, kind: str, gap: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes and predictions of one holdout of n cases."""
    p, q = chances(n, kind, gap, rng)
    return (rng.random(n) < q).astype(float), p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[200, 357, 1000])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    limit = float(load_params()["train"]["quality_gate"]["max_ece"])
    started = time.perf_counter()
    print(f"Share of {args.draws:,} draws within max_ece {limit} (passing the gate's calibration check), seed "
          f"{args.seed}: plug-in ECE / debiased RMS error (mean reading of each in brackets)\n")
    print("| model | true ECE | true RMS | " + " | ".join(f"{n:,} cases" for n in args.cases) + " |")
    print("|---|---|---|" + "---|" * len(args.cases))
    for name, kind, gap in scenarios():
        ece, rms = truth(kind, gap)
        cells = []
        for n in args.cases:
            rng = np.random.default_rng([args.seed, n, int(round(gap * 1000)), kind == "local"])
            reads = np.array([(expected_calibration_error(y, p), debiased_calibration_error(y, p))
                              for y, p in (draw(n, kind, gap, rng) for _ in range(args.draws))])
            ok = (reads <= limit).mean(axis=0)
            cells.append(f"{ok[0]:.0%} / **{ok[1]:.0%}** ({reads[:, 0].mean():.3f} / {reads[:, 1].mean():.3f})")
        print(f"| {name} | {ece:.3f} | {rms:.3f} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
