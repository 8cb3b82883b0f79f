"""The cure model against the three-feature baseline (logistic regression on days past due, arrears and days
since the last payment, `models.baseline`), by days-past-due band, on real payment histories:

- Kiva microloans (`cureflow ingest-kiva`: 616 loans of 2006-2007, USD schedules and dated repayments);
- with `--uci`, also the UCI credit-card file as adapted by `cureflow ingest-uci` (30,000 customers).

Each converted directory is trained exactly as `cureflow train` does (its own params.yaml: the time holdout,
materiality, stale debt set apart); both models score the same holdout rows. The AUC difference has a
percentile bootstrap interval resampling accounts (`params.yaml: kiva.benchmark`). Prints one table per
dataset. Run: .venv/bin/python benchmarks/kiva.py [--uci]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.config import load_params
from models.metrics import DPD_BANDS, FRESH_DAYS_PAST_DUE, debiased_calibration_error, expected_calibration_error
from pipelines import kiva, uci
from pipelines.realdata import auc_difference
from pipelines.train import fit


def band_comparison(holdout: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per days-past-due band, fresh arrears (1-90) and all curable rows: cases, cure rate, both AUCs, the
    difference with its bootstrap interval over accounts, and each model's calibration error (the plug-in ECE,
    and the debiased RMS calibration error the quality gate judges)."""
    dpd = holdout["days_past_due"].to_numpy(dtype=float)
    bands = [("fresh (1-90)", -np.inf, FRESH_DAYS_PAST_DUE), *DPD_BANDS, ("all curable", -np.inf, np.inf)]
    rows = []
    for label, low, high in bands:
        part = holdout[(dpd > low) & (dpd <= high)]
        row = {"band": label, **(auc_difference(part, n_boot, seed) if len(part) else {"n": 0})}
        if len(part):
            y, p, q = (part[c].to_numpy() for c in ("label", "p", "p_baseline"))
            row.update(rate=float(y.mean()), ece=expected_calibration_error(y, p),
                       baseline_ece=expected_calibration_error(y, q), rmsce=debiased_calibration_error(y, p),
                       baseline_rmsce=debiased_calibration_error(y, q))
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def markdown(table: pd.DataFrame) -> str:
    """The comparison as a README table."""
    lines = ["| band | cases (accounts) | cure rate | cureflow AUC | baseline AUC | difference [95% bootstrap] | "
             "ECE cureflow / baseline | debiased RMS calibration error cureflow / baseline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        if not r.get("n"):
            lines.append(f"| {r['band']} | 0 | | | | | | |")
            continue
        diff = (f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]" if r.get("difference") is not None
                and not pd.isna(r["difference"]) else "one class only")
        lines.append(f"| {r['band']} | {int(r['n']):,} ({int(r['accounts']):,}) | {_fmt(r['rate'])} | "
                     f"{_fmt(r['roc_auc'])} | {_fmt(r['baseline_roc_auc'])} | {diff} | "
                     f"{_fmt(r['ece'])} / {_fmt(r['baseline_ece'])} | "
                     f"{_fmt(r['rmsce'])} / {_fmt(r['baseline_rmsce'])} |")
    return "\n".join(lines)


def compare(directory: Path, name: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Train on a converted directory with its own params and compare on its holdout."""
    started = time.perf_counter()
    params = load_params(directory / "params.yaml")
    result = fit(directory, params, log=lambda *_: None)
    table = band_comparison(result.holdout, n_boot, seed)
    print(f"\n## {name}: {len(result.holdout):,} holdout cases from {result.holdout['as_of'].min():%Y-%m-%d} "
          f"({result.metrics.get('stale_n', 0):,.0f} stale set apart); {time.perf_counter() - started:.0f}s\n")
    print(markdown(table))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiva", type=Path, default=kiva.DEFAULT_DATA)
    parser.add_argument("--uci", nargs="?", const=uci.DEFAULT_DATA, type=Path, default=None,
                        help="also the UCI credit-card file (path optional)")
    args = parser.parse_args()
    params = load_params()
    conf = params["kiva"]["benchmark"]
    n_boot, seed = int(conf["bootstrap"]), int(conf["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        kiva.main(args.kiva, Path(tmp) / "kiva", params, log=lambda *_: None)
        compare(Path(tmp) / "kiva", "Kiva microloans", n_boot, seed)
        if args.uci:
            uci.main(args.uci, Path(tmp) / "uci", params, log=lambda *_: None)
            compare(Path(tmp) / "uci", "UCI credit cards (adapted)", n_boot, seed)


if __name__ == "__main__":
    main()
