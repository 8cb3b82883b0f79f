"""Benchmark: the project's response learner on a real randomised e-mail experiment (Hillstrom, 64,000 customers).

The three arms (men's e-mail, women's e-mail, no e-mail) are the actions and a visit within two weeks is the
outcome. For each seed of `params.yaml: hillstrom` a random half (stratified by arm and visit) is held out and
three learners are trained on the other half with the same LightGBM settings (`params.yaml: response.lgbm`):
- `cureflow`: `models.response.ResponseModel`, the next-best-action engine's own learner, weighted by the
  known randomisation probabilities (each arm's share of the file). The file does not say who opened an
  e-mail, so reach is not observed: every e-mail counts as reaching (`reached=None`), and the funnel
  r x (c - d) reduces to c(x, e-mail) learned on every e-mailed customer beside p0(x) on the hold-outs.
- `two-model`: one classifier per arm (T-learner); `class transformation`: per e-mail, z = treated visitor or
  untreated non-visitor, uplift = 2 P(z) - 1.
On the held-out half: Qini and AUUC of each e-mail's predicted uplift over no e-mail (normalised as
scikit-uplift: 0 random, 1 perfect), and the visit rate of each learner's policy (the arm with the highest
predicted visit chance, or none) by inverse propensity weighting, against sending everyone the e-mail with
the best visit rate on the training half, and of the safe policy (`models.safe`, what `cureflow train` builds):
the response model refit on 75% of the training half, the baseline (the best single arm by doubly robust
value) and the departure margin chosen on the other 25%, so it sends the model's choice only where that
held-out evidence says it beats the baseline. Spread: mean ± sd over seeds and a 95% interval by the corrected
resampled t (Nadeau and Bengio 2003: the seeds' halves overlap, so the plain t interval is far too narrow).
A difference is a win or a loss only when its interval excludes zero; otherwise it is parity.

    .venv/bin/python benchmarks/hillstrom.py --data ../shared/data/hillstrom/hillstrom.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.config import load_params
from pipelines.realdata import (
    ARMS,
    EMAILS,
    HILLSTROM_DATA,
    LEARNERS,
    read_hillstrom,
    score_seed,
    summary,
)


def verdict(diff) -> str:
    """Win or loss only when the interval excludes zero."""
    if not diff.excludes_zero:
        return "parity"
    return "win" if diff.mean > 0 else "loss"


def _cell(values: pd.Series, ratio: float) -> str:
    s = summary(values, ratio)
    return f"{s.mean:.4f} ± {s.sd:.4f} [{s.ci[0]:.4f}, {s.ci[1]:.4f}]"


def print_ranking(results: pd.DataFrame, ratio: float) -> None:
    """Qini and AUUC per learner and e-mail, then cureflow's paired differences with each baseline."""
    for metric in ("qini", "auuc"):
        for name in LEARNERS:
            cells = "   ".join(f"{email} {_cell(results[f'{name}|{metric}|{email}'], ratio)}" for email in EMAILS)
            print(f"{metric} {name:<21} {cells}")
    for base in LEARNERS[1:]:
        for metric in ("qini", "auuc"):
            parts = []
            for email in EMAILS:
                d = summary(results[f"cureflow|{metric}|{email}"] - results[f"{base}|{metric}|{email}"], ratio)
                parts.append(f"{email} {d.mean:+.4f} [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}] {verdict(d)}")
            print(f"cureflow - {base}, {metric}: " + "   ".join(parts))


def print_policies(results: pd.DataFrame, ratio: float, frame: pd.DataFrame) -> None:
    """Visit rate per customer of each policy, and of each learner's policy against the best single e-mail."""
    best = EMAILS[int(results["best single|arm|"].mode()[0])]
    print(f"policy value, visits per customer on the held-out half (inverse propensity weighted); "
          f"all halves: no e-mail {frame.loc[frame['arm'] == 2, 'visit'].mean():.4f}")
    print(f"  everyone the best single e-mail ({best}, chosen on each training half): "
          f"{_cell(results['best single|value|'], ratio)}")
    for name in (*LEARNERS, "cureflow, safe"):
        shares = ", ".join(f"{label} {results[f'{name}|share|{label}'].mean():.0%}" for label in (*EMAILS, "none"))
        gain = summary(results[f"{name}|gain|"], ratio)
        print(f"  {name:<21} {_cell(results[f'{name}|value|'], ratio)}  sends {shares}; "
              f"over the best single e-mail {gain.mean:+.4f} [{gain.ci[0]:+.4f}, {gain.ci[1]:+.4f}] {verdict(gain)}")
    print(f"  the safe policy departed from its baseline in {results['cureflow, safe|departs|'].sum():.0f} of "
          f"{len(results)} seeds (a margin with a positive lower bound on the checking quarter)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HILLSTROM_DATA, help="the hillstrom.csv file")
    parser.add_argument("--seeds", type=int, default=None, help="use the first N seeds of params.yaml hillstrom")
    args = parser.parse_args()
    params = load_params()
    started = time.perf_counter()
    frame = read_hillstrom(args.data)
    propensity = np.bincount(frame["arm"], minlength=len(ARMS)) / len(frame)
    rates = frame.groupby("arm")["visit"].mean()
    print(f"{len(frame):,} customers; " + ", ".join(
        f"{ARMS[a]} {propensity[a]:.4f} of them, visit rate {rates[a]:.4f}" for a in range(len(ARMS))))
    seeds = list(params["hillstrom"]["seeds"])[: args.seeds]
    test = float(params["hillstrom"]["test_fraction"])
    ratio = test / (1 - test)
    print(f"{len(seeds)} seeds, {test:.0%} held out each; mean ± sd over seeds [95% corrected resampled t]")
    results = pd.DataFrame([score_seed(frame, propensity, params, seed) for seed in seeds])
    print_ranking(results, ratio)
    print_policies(results, ratio, frame)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
