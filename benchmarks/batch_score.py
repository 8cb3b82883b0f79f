"""The nightly batch at portfolio scale: end to end, per stage, against the raw LightGBM floor and MLflow pyfunc.

    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db \\
    python benchmarks/batch_score.py --data /tmp/bench/p100k /tmp/bench/p1M --model models:/cureflow@champion

For each portfolio directory (simulate one with `cureflow simulate --accounts N --months 24 --out DIR`), one run
of each measurement:

- end to end: `cureflow score` as a subprocess (read, validate, score, capacity, decision log, work queue, summary
  and report), wall time, accounts per second and peak RSS;
- stages, in this process on the same chunks: validation, features, the bundle's LightGBM calls (cure predict,
  cure contributions for the reasons, response model predictions and contributions) and the rest of
  `ScoringBundle.score` (rules, policy, answers);
- the floor: the cure model's raw `Booster.predict` on the same feature matrix (every overdue account at once),
  against the time the batch spent on that very prediction;
- `mlflow.pyfunc` predict of the registered model on the real-time requests of the overdue accounts (on the first
  portfolio only: building JSON requests for a million accounts is not what the pyfunc is for).
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

import lightgbm
import numpy as np
import pandas as pd

AS_OF = "2026-11-01T00:00:00+09:00"


def end_to_end(data: Path, model: str, work: Path, chunk_size: int) -> dict:
    """One `cureflow score` run: wall time, peak RSS of the process, and the stage times it reports."""
    out = work / f"{data.name}.parquet"
    command = [sys.executable, "-m", "pipelines.cli", "score", "--data", str(data), "--as-of", AS_OF, "--out",
               str(out), "--model", model, "--chunk-size", str(chunk_size),
               "--decision-log", f"sqlite:///{work / (data.name + '.decisions.db')}"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    return {"wall_s": wall, "accounts": summary["accounts"], "overdue": summary["overdue"],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
            "stages": summary["timings"]}


class PredictTimer:
    """Wraps `lightgbm.Booster.predict` to add up seconds and rows per (model, kind) while installed: `predict`
    (scores), `pred_leaf` (the leaves behind the bundle's path contributions), `pred_contrib` (TreeSHAP)."""

    def __init__(self, names: dict[int, str]):
        self.names, self.seconds, self.rows = names, defaultdict(float), defaultdict(int)
        self._original = lightgbm.Booster.predict

    def __enter__(self) -> PredictTimer:
        timer, original = self, self._original

        def predict(booster, data, *args, **kwargs):
            began = time.perf_counter()
            result = original(booster, data, *args, **kwargs)
            kind = next((k for k in ("pred_contrib", "pred_leaf") if kwargs.get(k)), "predict")
            key = f"{timer.names.get(id(booster), 'response')} {kind}"
            timer.seconds[key] += time.perf_counter() - began
            timer.rows[key] += len(data)
            return result

        lightgbm.Booster.predict = predict
        return self

    def __exit__(self, *exc) -> None:
        lightgbm.Booster.predict = self._original


def stages(data: Path, bundle, chunk_size: int) -> tuple[dict, np.ndarray]:
    """Seconds per stage over the whole portfolio, and the overdue accounts' feature matrix."""
    from models.features import features_at
    from serving import sources

    as_of = pd.Timestamp(AS_OF)
    seconds: dict[str, float] = defaultdict(float)
    began = time.perf_counter()
    tables = sources.read_tables(data)
    seconds["read (arrow)"] = time.perf_counter() - began
    matrices = []
    with PredictTimer({id(bundle.cure.booster_): "cure"}) as timer:
        chunks = sources.chunks(tables, chunk_size)
        while True:
            began = time.perf_counter()
            chunk = next(chunks, None)
            seconds["validate + fingerprint"] += time.perf_counter() - began
            if chunk is None:
                break
            began = time.perf_counter()
            prep = chunk.prepare(bundle.feature_config)  # as the batch prepares it
            feats = features_at(prep, as_of, bundle.feature_config)
            seconds["features"] += time.perf_counter() - began
            matrices.append(feats.loc[feats["arrears"] > 0, bundle.feature_names].to_numpy(dtype=np.float64))
            began = time.perf_counter()
            bundle.score_prepared(chunk.prepare(bundle.feature_config), as_of, keep_features=True)
            seconds["score_prepared (prepare, features again, predictions, rules, policy, answers)"] += \
                time.perf_counter() - began
    for key, value in timer.seconds.items():
        seconds[f"  of which LightGBM {key} ({timer.rows[key]:,} rows)"] = value
    return dict(seconds), np.vstack(matrices)


def floor(bundle, X: np.ndarray) -> dict:
    """The cure model's bare LightGBM predict on the whole matrix at once (and its leaves)."""
    booster = bundle.cure.booster_
    began = time.perf_counter()
    booster.predict(X, raw_score=True)
    raw = time.perf_counter() - began
    began = time.perf_counter()
    booster.predict(X, pred_leaf=True)
    return {"rows": len(X), "raw_predict_s": raw, "pred_leaf_s": time.perf_counter() - began}


def pyfunc(data: Path, model: str) -> dict:
    """mlflow.pyfunc predict of the registered model on the overdue accounts' real-time requests."""
    import mlflow

    from models.answers import requests_from_portfolio
    from models.contract import read_dir
    from models.registry import configure_mlflow, load_bundle

    configure_mlflow()
    portfolio = read_dir(data)
    rows = load_bundle(model).bundle.score(portfolio, pd.Timestamp(AS_OF), explore=0.0)
    requests = requests_from_portfolio(portfolio, pd.Timestamp(AS_OF), list(rows["account_id"]))
    frame = pd.DataFrame({"request": [json.dumps(r) for r in requests]})
    loaded = mlflow.pyfunc.load_model(model)
    began = time.perf_counter()
    loaded.predict(frame)
    seconds = time.perf_counter() - began
    return {"requests": len(frame), "seconds": seconds, "accounts_per_s": len(frame) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="portfolio directories, smallest first")
    parser.add_argument("--model", default="models:/cureflow@champion")
    parser.add_argument("--chunk-size", type=int, default=None, help="default params.yaml batch.chunk_size")
    parser.add_argument("--skip-stages", action="store_true", help="end to end only")
    args = parser.parse_args()
    from models.registry import load_bundle
    from serving.batch import batch_params

    args.chunk_size = args.chunk_size or int(batch_params()["chunk_size"])
    bundle = load_bundle(args.model).bundle
    with tempfile.TemporaryDirectory() as scratch:
        for data in args.data:
            e2e = end_to_end(data, args.model, Path(scratch), args.chunk_size)
            print(f"\n== {data}: {e2e['accounts']:,} accounts, {e2e['overdue']:,} overdue")
            print(f"end to end: {e2e['wall_s']:.1f} s wall, {e2e['accounts'] / e2e['wall_s']:,.0f} accounts/s, "
                  f"peak RSS {e2e['peak_rss_gib']:.2f} GiB; stages {e2e['stages']}")
            if args.skip_stages:
                continue
            seconds, X = stages(data, bundle, args.chunk_size)
            for name, value in seconds.items():
                print(f"  {name}: {value:.1f} s")
            bare = floor(bundle, X)
            inside = seconds[next(k for k in seconds if "cure predict" in k)]
            print(f"floor: cure Booster.predict on {bare['rows']:,} x {X.shape[1]} in {bare['raw_predict_s']:.3f} s; "
                  f"the batch's cure prediction {inside:.3f} s = {inside / bare['raw_predict_s']:.2f} x the floor; "
                  f"pred_leaf on the same matrix {bare['pred_leaf_s']:.3f} s")
        print(f"\nthreads: LightGBM default (OpenMP), {os.cpu_count()} cores")
    result = pyfunc(args.data[0], args.model)
    print(f"mlflow.pyfunc predict ({args.data[0].name}): {result['requests']:,} overdue accounts' requests in "
          f"{result['seconds']:.1f} s = {result['accounts_per_s']:,.0f} accounts/s")


if __name__ == "__main__":
    main()
