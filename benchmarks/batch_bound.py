"""The nightly batch against its bound: a bare read-and-aggregate of the same files, side by side in one run.

    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db \\
    nice -n 10 python benchmarks/batch_bound.py --data outputs/bench/p1M --model outputs/train/bundle.joblib

For each portfolio directory (simulate one with `cureflow simulate --accounts N --months 24 --out DIR`):

- (a) the bound: read every table file the batch reads (the contract columns, pyarrow's multi-threaded parquet
  reader) and aggregate the history per account the way a competent engineer would with pyarrow and numpy:
  account codes by a hash lookup of `account_id` in the accounts table (`pyarrow.compute.index_in`), then
  `np.bincount` / `np.maximum.at` for, per account, the instalments' count, sum due and latest due date,
  the payments' count, sum paid and latest payment, the contacts' count, outbound attempts, promises and latest
  contact; best of `--repeat` runs, after one untimed run (warm page cache, like the batch's own file reads);
- (b) `cureflow score` end to end as a subprocess: wall time from process start to the report, peak RSS, and
  the stage times the run writes into its summary (`timings`);
- (c) the ratio (b) / (a).

`--stages` also times the batch's stages in this process on the same files (reading, validation and
fingerprints, features, scoring, rows, decision records, report) with the code `cureflow score` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

AS_OF = "2026-11-01T00:00:00+09:00"
SPEC_COLUMNS = None  # filled from models.contract.SPEC in main (the columns the batch reads)


def _ns(column: pa.ChunkedArray) -> np.ndarray:
    """A date or timestamp column as int64 (its unit's ticks; NaT as the int64 minimum)."""
    return column.cast(pa.int64()).to_numpy()


def read_and_aggregate(data: Path, columns: dict[str, list[str]]) -> tuple[float, dict]:
    """(a) Read the four parquet files and aggregate the history per account; seconds and a few totals."""
    began = time.perf_counter()
    tables = {name: pq.read_table(data / f"{name}.parquet", columns=[c for c in cols if c in
                                                                        pq.read_schema(data / f"{name}.parquet").names])
              for name, cols in columns.items()}
    ids = tables["accounts"]["account_id"].combine_chunks()
    n = len(ids)

    def codes(name: str) -> np.ndarray:
        return pc.index_in(tables[name]["account_id"], value_set=ids).to_numpy(zero_copy_only=False)

    out = {}
    inst, pay, con = tables["installments"], tables["payments"], tables["contacts"]
    def count_sum_latest(prefix: str, acc: np.ndarray, amounts, instants) -> None:
        out[f"{prefix}_count"] = np.bincount(acc, minlength=n)
        out[f"{prefix}_sum"] = np.bincount(acc, weights=amounts.to_numpy(), minlength=n)
        latest = np.full(n, np.iinfo(np.int64).min)
        np.maximum.at(latest, acc, _ns(instants))
        out[f"{prefix}_latest"] = latest

    count_sum_latest("inst", codes("installments"), inst["amount_due"], inst["due_date"])
    count_sum_latest("pay", codes("payments"), pay["amount"], pay["paid_at"])
    acc = codes("contacts")
    out["con_count"] = np.bincount(acc, minlength=n)
    outbound = pc.equal(con["direction"], "outbound").to_numpy(zero_copy_only=False)
    out["con_outbound"] = np.bincount(acc, weights=outbound, minlength=n)
    promise = pc.equal(con["outcome"], "promise_to_pay").to_numpy(zero_copy_only=False)
    out["con_promises"] = np.bincount(acc, weights=promise, minlength=n)
    latest = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(latest, acc, _ns(con["contacted_at"]))
    out["con_latest"] = latest
    seconds = time.perf_counter() - began
    rows = sum(t.num_rows for name, t in tables.items() if name != "accounts")
    return seconds, {"accounts": n, "history_rows": rows,
                     "arrears_accounts": int((out["inst_sum"] > out["pay_sum"]).sum())}


def end_to_end(data: Path, model: str, work: Path) -> dict:
    """(b) One `cureflow score` run: wall time, peak RSS, the stage times it writes into its summary."""
    out = work / f"{data.name}.parquet"
    command = [sys.executable, "-m", "pipelines.cli", "score", "--data", str(data), "--as-of", AS_OF, "--out",
               str(out), "--model", model, "--decision-log", f"sqlite:///{work / (data.name + '.decisions.db')}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    return {"wall_s": wall, "accounts": summary["accounts"], "overdue": summary["overdue"],
            "peak_rss_gib": peak / 2**20, "peak_is_new": peak > before, "stages": summary["timings"]}


def stages(data: Path, model: str, work: Path) -> dict:
    """The batch's stages in this process, one after another (no background thread), with the functions
    `cureflow score` runs: model load, reading, the contract check and fingerprints, preparing the arrays,
    the decision (arrears of every account, then the features, models, rules, policy, reasons and answers of
    the overdue ones), the rows, capacity, the decision log, the work queue, summary and report."""
    import pandas as pd

    from models.bundle import BATCH_COLUMNS
    from models.queue import capacity_step, in_priority_order
    from models.registry import load_bundle
    from serving import sources
    from serving.batch import morning_report, write_atomic
    from serving.batch.records import record_decisions
    from serving.batch.rows import with_feature_text

    seconds: dict[str, float] = defaultdict(float)

    def timed(name: str, work, *args, **kwargs):
        began = time.perf_counter()
        result = work(*args, **kwargs)
        seconds[name] += time.perf_counter() - began
        return result

    started = time.perf_counter()
    loaded = timed("load the model", load_bundle, model)
    bundle, as_of = loaded.bundle, pd.Timestamp(AS_OF)
    config = bundle.feature_config
    tables = timed("read (Arrow)", sources.read_tables, data)
    chunks, parts = sources.chunks(tables, 100_000), []
    while (chunk := timed("check the contract + fingerprint", next, chunks, None)) is not None:
        prep = timed("prepare (arrays, local times, order)", chunk.prepare, config)
        decisions = timed("decide (arrears of every account; features, models, rules, policy, reasons of the "
                          "overdue)", bundle.decide, prep, as_of, None, None)
        parts.append(timed("rows (frame, features as JSON)", lambda d=decisions: with_feature_text(d.frame(True))))
    rows = timed("capacity", lambda: capacity_step(in_priority_order(parts, ("_features",)),
                                                   bundle.policy_config.phone_capacity,
                                                   bundle.policy_config.calls_per_hour))
    rows, capacity_summary, values = rows
    timed("decision log (build and write the records)", record_decisions,
          f"sqlite:///{work / 'stages.decisions.db'}", rows, loaded, "run-bench", 2000)
    queue = rows.loc[:, list(BATCH_COLUMNS)]
    timed("write the work queue", write_atomic, queue, work / "stages.parquet")
    timed("summary + report", morning_report.write, work / "stages.parquet", queue, values, capacity_summary,
          {"run_id": "run-bench", "engine": "local", "source": str(data), "as_of": as_of.isoformat(),
           "model_version": loaded.version, "accounts": tables["accounts"].num_rows, "chunk_size": 100_000,
           "chunks": len(parts), "chunks_resumed": 0, "decision_records_new": len(rows)}, {}, started)
    return dict(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="portfolio directories (parquet)")
    parser.add_argument("--model", default="models:/cureflow@champion")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the bound (the best is kept)")
    parser.add_argument("--stages", action="store_true", help="also time the batch's stages in this process")
    args = parser.parse_args()
    from models.contract import SPEC

    columns = {name: list(spec) for name, spec in SPEC.items()}
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as scratch:
        for data in args.data:
            read_and_aggregate(data, columns)  # warm the page cache, as for the batch's read
            bound, totals = min((read_and_aggregate(data, columns) for _ in range(args.repeat)),
                                key=lambda r: r[0])
            e2e = end_to_end(data, args.model, Path(scratch))
            print(f"\n== {data}: {totals['accounts']:,} accounts, {totals['history_rows']:,} history rows, "
                  f"{e2e['overdue']:,} overdue")
            print(f"(a) bare read-and-aggregate: {bound:.2f} s (best of {args.repeat}; "
                  f"{totals['arrears_accounts']:,} accounts with more due than paid)")
            print(f"(b) cureflow score end to end: {e2e['wall_s']:.2f} s wall, peak RSS {e2e['peak_rss_gib']:.2f} GiB"
                  f"{'' if e2e['peak_is_new'] else ' (at most: an earlier child peaked higher)'}; "
                  f"stages {e2e['stages']}")
            print(f"(c) ratio (b) / (a): {e2e['wall_s'] / bound:.2f}")
            if args.stages:
                for name, value in stages(data, args.model, Path(scratch)).items():
                    print(f"  {name}: {value:.2f} s")


if __name__ == "__main__":
    main()
