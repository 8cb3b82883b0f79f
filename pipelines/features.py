"""The DVC `features` stage (`cureflow features`): the learning examples of one history.

`build_examples`: `cure_examples`, every overdue account every `example_every_days` days, features at t, label =
cure within H days, only as-of dates whose label window is fully observed (`resolve_history_end`,
`example_dates`); and the logged decisions with their features and 7-day label
(`pipelines.examples_from_logs`). `save_examples` writes them for the train stage, `load_examples` reads them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models import policy
from models.contract import Portfolio
from models.features import FeatureConfig, Prepared, features_at, prepare
from models.files import write_json_atomic, write_parquet_atomic
from models.labels import cure_labels, history_end
from models.logging_policy import BAUConfig
from pipelines.examples_from_logs import decision_examples

EXAMPLE_FILES = {"cure": "cure_examples.parquet", "decisions": "decisions.parquet", "summary": "examples.json"}


@dataclass
class Examples:
    """The learning examples of one history: what the features stage writes and the train stage reads."""

    cure: pd.DataFrame             # as_of, account_id, features, label: every account overdue at each as-of date
    decisions: pd.DataFrame        # logged decisions (randomised; BAU too with response.business_as_usual.use)
    history_end: pd.Timestamp
    n_dates: int


def resolve_history_end(data: Path, prep: Prepared, explicit: str | None = None) -> pd.Timestamp:
    """--history-end (converted to UTC), else the simulator's manifest `end`, else `labels.history_end` (the
    default as-of, `models.as_of.default_as_of`, of the latest payment, contact or instalment due date)."""
    if explicit:
        return pd.Timestamp(explicit).tz_convert("UTC")
    manifest = Path(data) / "manifest.json"
    if manifest.exists():
        end = json.loads(manifest.read_text()).get("end")
        if end:
            return pd.Timestamp(end).tz_convert("UTC")
    return history_end(prep)


def example_dates(prep: Prepared, end: pd.Timestamp, horizon: int, every: int, min_history_days: int = 180):
    """As-of dates every `every` days back from end - H, while at least `min_history_days` of history exist."""
    first = pd.Timestamp(int(prep.inst_due.min()), tz="UTC") + pd.Timedelta(days=min_history_days)
    last = end - pd.Timedelta(days=horizon)
    dates = []
    t = last
    while t >= first:
        dates.append(t)
        t -= pd.Timedelta(days=every)
    return sorted(dates)


def cure_examples(prep: Prepared, config: FeatureConfig, dates, horizon: int,
                  pconf: policy.PolicyConfig | None = None) -> pd.DataFrame:
    """Features and cure labels of every account overdue at each date (past the materiality thresholds
    of `pconf`, as in the work queue; stale accounts are kept: `fit` sets them apart)."""
    frames = []
    for t in dates:
        feats = features_at(prep, t, config)
        arrears = feats["arrears"].to_numpy()
        overdue = arrears > 0 if pconf is None else policy.material(
            arrears, feats["arrears_instalments"].to_numpy(), pconf)
        labels = cure_labels(prep, t, feats["arrears"].to_numpy(), horizon)
        frame = feats.loc[overdue].copy()
        frame.insert(0, "as_of", t)
        frame["label"] = labels[overdue]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def build_examples(portfolio: Portfolio, data: Path, params: dict, history_end_at: str | None = None,
                   log=print) -> Examples:
    """The cure examples (every overdue account every `example_every_days` days, at most `max_examples`)
    and the logged decisions with their features: everything training learns from."""
    cure_p = params["cure"]
    horizon = int(cure_p["horizon_days"])
    config = FeatureConfig.from_params(params)
    started = time.perf_counter()
    prep = prepare(portfolio, config)
    end = resolve_history_end(data, prep, history_end_at)
    dates = example_dates(prep, end, horizon, int(cure_p["example_every_days"]),
                          int(cure_p["min_history_days"]))  # 0 for six months of real data (uci.train)
    examples = cure_examples(prep, config, dates, horizon, policy.PolicyConfig.from_params(params["policy"]))
    if len(examples) > int(cure_p["max_examples"]):
        examples = examples.sample(int(cure_p["max_examples"]), random_state=params["seed"]).sort_index()
    decisions = decision_examples(portfolio, prep, config, params, end, BAUConfig.from_params(params).use)
    log(f"examples: {len(examples):,} from {len(dates)} as-of dates and {len(decisions):,} logged decisions "
        f"in {time.perf_counter() - started:.1f}s")
    return Examples(examples.reset_index(drop=True), decisions, end, len(dates))


def save_examples(examples: Examples, out_dir: Path) -> dict[str, Path]:
    """Write the examples as parquet with a small JSON summary (the DVC features stage's outputs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {key: out_dir / name for key, name in EXAMPLE_FILES.items()}
    write_parquet_atomic(examples.cure, files["cure"])
    write_parquet_atomic(examples.decisions, files["decisions"])
    summary = {"history_end": examples.history_end.isoformat(), "as_of_dates": examples.n_dates,
               "cure_examples": len(examples.cure), "cure_base_rate": float(examples.cure["label"].mean()),
               "logged_decisions": len(examples.decisions)}
    write_json_atomic(summary, files["summary"], newline=True, indent=2)
    return files


def load_examples(directory: Path) -> Examples:
    """Read what `save_examples` wrote; a missing file is a clear error naming it."""
    files = {key: Path(directory) / name for key, name in EXAMPLE_FILES.items()}
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing:
        raise FileNotFoundError(f"training examples not found: {', '.join(missing)} (run `cureflow features`)")
    summary = json.loads(files["summary"].read_text())
    return Examples(pd.read_parquet(files["cure"]), pd.read_parquet(files["decisions"]),
                    pd.Timestamp(summary["history_end"]).tz_convert("UTC"), int(summary["as_of_dates"]))
