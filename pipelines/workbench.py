"""Helpers the notebooks call, so the notebooks stay thin: where things are, the logged experiments, what
the response model learned, and the policy's true value under other costs, call capacity and exploration.

Where things are (`workspace`), each overridable by an environment variable (CI runs the notebooks on a
small portfolio and a throw-away MLflow store this way):

| what | variable | default |
|---|---|---|
| the portfolio | CUREFLOW_DATA | data/portfolio in the checkout |
| params.yaml | CUREFLOW_PARAMS | params.yaml in the checkout |
| the MLflow store | MLFLOW_TRACKING_URI | sqlite:///<checkout>/mlflow.db (what `make demo` writes) |
| the model to study | CUREFLOW_MODEL | models:/cureflow@champion |
| notebook outputs | CUREFLOW_OUTPUTS | outputs/notebooks in the checkout |
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.bundle import ScoringBundle
from models.contract import Portfolio
from models.queue import day_queue

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workspace:
    """Paths and URIs a notebook works with."""

    root: Path
    data: Path
    params_path: Path
    tracking_uri: str
    model_uri: str
    outputs: Path


def workspace() -> Workspace:
    """Resolve the notebook's paths (see the module docstring) and point MLflow and params at them."""
    root = ROOT
    params_path = Path(os.environ.get("CUREFLOW_PARAMS") or root / "params.yaml")
    os.environ["CUREFLOW_PARAMS"] = str(params_path)
    tracking = os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return Workspace(root=root, data=Path(os.environ.get("CUREFLOW_DATA") or root / "data" / "portfolio"),
                     params_path=params_path, tracking_uri=tracking,
                     model_uri=os.environ.get("CUREFLOW_MODEL") or "models:/cureflow@champion",
                     outputs=Path(os.environ.get("CUREFLOW_OUTPUTS") or root / "outputs" / "notebooks"))


def history(data: Path, params: dict) -> tuple[Portfolio, pd.Timestamp]:
    """The validated portfolio and the end of its observed history (the simulator's manifest, else the day
    after the latest event)."""
    from models.contract import read_dir
    from models.features import FeatureConfig, prepare
    from pipelines.features import resolve_history_end

    portfolio = read_dir(data)
    return portfolio, resolve_history_end(data, prepare(portfolio, FeatureConfig.from_params(params)))


def experiment_logs(portfolio: Portfolio, params: dict, data: Path) -> pd.DataFrame:
    """Every randomised logged decision with its features at decision time and its 7-day payment label;
    hold-outs (channel none) get window `none` so they form one arm per segment."""
    from models.features import FeatureConfig, prepare
    from pipelines.examples_from_logs import decision_examples
    from pipelines.features import resolve_history_end

    config = FeatureConfig.from_params(params)
    prep = prepare(portfolio, config)
    logs = decision_examples(portfolio, prep, config, params, resolve_history_end(data, prep))
    return logs.assign(window=np.where(logs["channel"] == "none", "none", logs["window"]))


def learned_gains(bundle: ScoringBundle, logs: pd.DataFrame, segment: str = "segment") -> pd.DataFrame:
    """What the response model learned: per segment, the mean predicted gain in the chance of a payment
    within 7 days (action minus no contact) of every channel x window x offer, over the segment's logged
    decisions (their features at decision time), highest first within each segment."""
    space = bundle.response.space
    q = bundle.response.predict_matrix(logs[bundle.feature_names].to_numpy(dtype=np.float64))
    means = pd.DataFrame(q[:, :-1] - q[:, -1:]).groupby(logs[segment].to_numpy()).mean()
    table = means.stack().rename("gain").reset_index()
    table.columns = [segment, "action", "gain"]
    actions = np.array(space.actions[:-1], dtype=object)[table["action"].to_numpy()]
    table = table.assign(channel=actions[:, 0], window=actions[:, 1], offer=actions[:, 2])
    table = table[[segment, "channel", "window", "offer", "gain"]]
    return table.sort_values([segment, "gain"], ascending=[True, False]).reset_index(drop=True)


def compare_runs(run_ids: dict[str, str], metrics: tuple[str, ...] = ("roc_auc", "pr_auc", "brier", "ece", "ks"),
                 ) -> pd.DataFrame:
    """Named MLflow runs side by side: their holdout metrics and every parameter that differs between them."""
    from mlflow import MlflowClient

    from models.registry import configure_mlflow

    configure_mlflow()
    client = MlflowClient()
    runs = {name: client.get_run(run_id).data for name, run_id in run_ids.items()}
    table = pd.DataFrame({name: {f"holdout_{m}": data.metrics.get(f"holdout_{m}") for m in metrics}
                          for name, data in runs.items()})
    params = pd.DataFrame({name: data.params for name, data in runs.items()})
    differ = params[params.nunique(axis=1, dropna=False) > 1]
    return pd.concat([table, differ])


def calibration_curves(holdouts: dict[str, pd.DataFrame], bins: int = 10) -> pd.DataFrame:
    """Mean predicted against observed cure rate in equal-size groups, one column pair per named holdout
    (frames with `label` and `p`, as in TrainResult.holdout)."""
    from pipelines.model_report import calibration_table

    parts = {name: calibration_table(h["label"].to_numpy(), h["p"].to_numpy(), bins).set_index("group")
             for name, h in holdouts.items()}
    return pd.concat(parts, axis=1)


def simulation_truth(data: Path) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The simulator's true chance of payment for every action at the end of history, and that instant;
    a clear error for data that did not come from the simulator."""
    import json

    manifest, truth = Path(data) / "manifest.json", Path(data) / "truth" / "actions.parquet"
    if not (manifest.exists() and truth.exists()):
        raise FileNotFoundError(f"{data} has no simulator truth (manifest.json, truth/actions.parquet): "
                                "what-if values need `cureflow simulate` data")
    return pd.read_parquet(truth), pd.Timestamp(json.loads(manifest.read_text())["end"]).tz_convert("UTC")


def with_policy(bundle: ScoringBundle, costs: dict | None = None, explore: float | None = None,
                phone_capacity: int | str | None = None) -> ScoringBundle:
    """A copy of the bundle with other policy numbers (contact costs merged into the current ones); the
    fitted models are shared, not copied."""
    params = copy.deepcopy(bundle.params)
    if costs:
        params["policy"]["costs"] = {**params["policy"]["costs"], **costs}
    if explore is not None:
        params["policy"]["explore"] = float(explore)
    if phone_capacity is not None:
        params["policy"]["phone_capacity"] = phone_capacity
    return dataclasses.replace(bundle, params=params)


def true_value(bundle: ScoringBundle, portfolio: Portfolio, truth: pd.DataFrame, as_of: pd.Timestamp) -> dict:
    """The day's batch as the bundle's policy numbers make it (exploration and call capacity included),
    valued with the simulator's truth: per overdue account, JPY of (true chance of payment with the chosen
    action - with no contact) x arrears - the action's cost under the same costs; beside the oracle."""
    from pipelines.evaluate import TrueValues

    rows, summary = day_queue(bundle, portfolio, as_of)
    tv = TrueValues.of(bundle, portfolio, truth, as_of)
    chosen = tv.chosen(rows, bundle)
    policy, oracle = tv.value_of(chosen), tv.oracle()
    return {"accounts": len(tv.value), "policy": policy, "oracle": oracle,
            "share_of_oracle": policy / oracle if oracle else float("nan"),
            "calls": summary["calls_kept"], "contacts": int((rows["channel"] != "none").sum()),
            "payment_uplift": tv.uplift(chosen)}


def what_if(bundle: ScoringBundle, portfolio: Portfolio, truth: pd.DataFrame, as_of: pd.Timestamp,
            scenarios: dict[str, dict]) -> pd.DataFrame:
    """`true_value` for each named scenario of `with_policy` arguments, one row each."""
    rows = [{"scenario": name, **true_value(with_policy(bundle, **change), portfolio, truth, as_of)}
            for name, change in scenarios.items()]
    return pd.DataFrame(rows)


def strip_outputs(paths: list[Path]) -> list[Path]:
    """Clear every code cell's outputs and execution count (notebooks are saved without outputs, so a
    diff shows only what changed in the code); returns the notebooks that changed."""
    import nbformat

    changed = []
    for path in map(Path, paths):
        book = nbformat.read(path, as_version=4)
        dirty = any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in book.cells)
        for cell in book.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        if dirty:
            nbformat.write(book, path)
            changed.append(path)
    return changed


if __name__ == "__main__":  # python -m pipelines.workbench notebooks/*.ipynb
    import sys

    for done in strip_outputs(sys.argv[1:]):
        print(f"outputs cleared: {done}")
