"""Training: examples from many as-of dates, the calibrated cure model, the response arms, one bundle.

Steps (each a function, the CLI and dvc call `run`):
1. `cure_examples`: every overdue account every `example_every_days` days, features at t, label = cure
   within H days; only as-of dates whose label window is fully observed.
2. `time_split`: the latest `holdout_fraction` of as-of dates form the holdout; training keeps only dates
   whose label window ends before the holdout starts (no leakage through overlapping windows).
3. Fit `CalibratedLGBM`, evaluate on the holdout, compare with the simulator's truth when it is there.
4. `response_examples` + `fit_arm_table`: the channel x window x offer arms from the logged experiments.
5. Log everything to MLflow, register the pyfunc, move `@champion` only past the quality gate.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from models.bundle import ScoringBundle
from models.config import load_params
from models.contract import Portfolio, read_dir
from models.estimators import CalibratedLGBM
from models.features import CATEGORICAL, FeatureConfig, Prepared, feature_names, features_at, prepare
from models.labels import cure_labels, history_end
from models.metrics import classification_report, gains_table
from models.response import ActionSpace, ResponseModel
from pipelines.logs import decision_examples


@dataclass
class TrainResult:
    bundle: ScoringBundle
    metrics: dict[str, float]
    holdout: pd.DataFrame          # as_of, account_id, label, p
    gains: pd.DataFrame
    truth_gap: pd.DataFrame | None  # account_id, p, p_true at the end of history (simulated data only)
    history_end: pd.Timestamp


def resolve_history_end(data: Path, prep: Prepared, explicit: str | None = None) -> pd.Timestamp:
    """--history-end, else the simulator's manifest, else the day after the latest observed event."""
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


def cure_examples(prep: Prepared, config: FeatureConfig, dates, horizon: int) -> pd.DataFrame:
    """Features and cure labels of every account overdue at each date."""
    frames = []
    for t in dates:
        feats = features_at(prep, t, config)
        overdue = feats["arrears"].to_numpy() > 0
        labels = cure_labels(prep, t, feats["arrears"].to_numpy(), horizon)
        frame = feats.loc[overdue].copy()
        frame.insert(0, "as_of", t)
        frame["label"] = labels[overdue]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def time_split(examples: pd.DataFrame, holdout_fraction: float, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on early as-of dates, test on the latest ones; a gap of H days keeps label windows apart."""
    dates = np.sort(examples["as_of"].unique())
    cut = dates[int(np.floor(len(dates) * (1 - holdout_fraction)))]
    holdout = examples[examples["as_of"] >= cut]
    train = examples[examples["as_of"] + pd.Timedelta(days=horizon) <= cut]
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def response_split(examples: pd.DataFrame, holdout_fraction: float, horizon_days: int):
    """Earlier decision days train the response model; the latest days are held out for evaluation,
    with a gap of K days so no training label window overlaps the held-out decisions."""
    if examples.empty:
        return examples, examples, pd.Timestamp.max.tz_localize("UTC")
    days = np.sort(examples["decided_at"].unique())
    cut = days[int(np.floor(len(days) * (1 - holdout_fraction)))]
    train = examples[examples["contacted_at"] + pd.Timedelta(days=horizon_days) <= cut]
    return train.reset_index(drop=True), examples[examples["decided_at"] >= cut].reset_index(drop=True), cut


def fit_response(examples: pd.DataFrame, names: list[str], params: dict, space: ActionSpace) -> ResponseModel:
    """The response model on logged decisions (features at decision time, action, propensity, label)."""
    if examples.empty:
        raise ValueError("the contact history holds no randomised decision (none has a propensity)")
    model = ResponseModel(params["response"]["lgbm"], space, CATEGORICAL, int(params["seed"]))
    return model.fit(examples[names], examples["action"].to_numpy(), examples["label"].to_numpy(),
                     examples["propensity"].to_numpy(dtype=np.float64), examples["reached"].to_numpy())


def truth_gap(data: Path, bundle: ScoringBundle, portfolio: Portfolio, end: pd.Timestamp) -> pd.DataFrame | None:
    """On simulated data: the model's cure chance at the end of history beside the simulator's truth."""
    truth_file = Path(data) / "truth" / "cure.parquet"
    if not truth_file.exists():
        return None
    truth = pd.read_parquet(truth_file)
    feats = bundle.features(portfolio, end)
    feats = feats[feats["arrears"] > 0]
    p = bundle.cure.predict_proba(feats[bundle.feature_names].to_numpy(dtype=np.float64))[:, 1]
    ours = pd.DataFrame({"account_id": feats["account_id"].to_numpy(), "p": p})
    return ours.merge(truth[["account_id", "p_cure_30"]].rename(columns={"p_cure_30": "p_true"}), on="account_id")


def fit(data: Path, params: dict | None = None, history_end_at: str | None = None,
        log=print) -> TrainResult:
    """Everything but MLflow: examples, split, cure model, holdout metrics, arms, bundle."""
    params = params or load_params()
    cure_p = params["cure"]
    horizon = int(cure_p["horizon_days"])
    config = FeatureConfig.from_params(params)
    started = time.perf_counter()
    portfolio = read_dir(data)
    prep = prepare(portfolio, config)
    end = resolve_history_end(data, prep, history_end_at)
    dates = example_dates(prep, end, horizon, int(cure_p["example_every_days"]))
    examples = cure_examples(prep, config, dates, horizon)
    if len(examples) > int(cure_p["max_examples"]):
        examples = examples.sample(int(cure_p["max_examples"]), random_state=params["seed"]).sort_index()
    train, holdout = time_split(examples, float(cure_p["holdout_fraction"]), horizon)
    log(f"examples: {len(examples):,} from {len(dates)} as-of dates "
        f"({len(train):,} train, {len(holdout):,} holdout) in {time.perf_counter() - started:.1f}s")
    names = feature_names(config)
    model = CalibratedLGBM(cure_p["lgbm"], int(cure_p["n_folds"]), cure_p["calibration"], cure_p.get("monotone"),
                           CATEGORICAL, int(cure_p["early_stopping_rounds"]), int(params["seed"]))
    model.fit(train[names], train["label"].to_numpy(), groups=train["account_id"].to_numpy())
    p = model.predict_proba(holdout[names])[:, 1]
    metrics = classification_report(holdout["label"].to_numpy(), p)
    log(f"cure model: {model.n_iterations_} trees; holdout ROC AUC {metrics['roc_auc']:.3f}, "
        f"Brier {metrics['brier']:.4f}, ECE {metrics['ece']:.4f}")
    decisions = decision_examples(portfolio, prep, config, params, end)
    resp_train, resp_holdout, resp_cut = response_split(
        decisions, float(params["response"]["holdout_fraction"]), int(params["response"]["horizon_days"]))
    space = ActionSpace(tuple(w.name for w in config.windows))
    try:
        response = fit_response(resp_train, names, params, space)
        log(f"response model: {len(resp_train):,} logged decisions before {resp_cut.isoformat()[:10]}, "
            f"{len(resp_holdout):,} held out")
    except ValueError as err:
        response = None
        log(f"no response model ({err}): every account gets no contact, except what exploration draws, "
            f"until randomised decisions are logged")
    bundle = ScoringBundle(params=params, feature_names=names, cure=model, response=response,
                           metadata={"history_end": end.isoformat(), "data": str(data),
                                     "data_fingerprint": portfolio.fingerprint(),
                                     "response_holdout_from": resp_cut.isoformat(),
                                     "cure_holdout_from": holdout["as_of"].min().isoformat()})
    gap = truth_gap(data, bundle, portfolio, end)
    if gap is not None and len(gap):
        metrics["truth_mae"] = float(np.mean(np.abs(gap["p"] - gap["p_true"])))
        metrics["truth_n"] = float(len(gap))
        log(f"gap to the simulator's true cure chance: mean |p - p_true| = {metrics['truth_mae']:.4f} "
            f"over {len(gap):,} accounts overdue at the end")
    hold = holdout[["as_of", "account_id", "label"]].assign(p=p)
    return TrainResult(bundle, metrics, hold, gains_table(hold["label"], hold["p"]), gap, end)


def git_commit() -> str:
    """The commit of the working tree, or 'unknown' outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_outputs(result: TrainResult, out_dir: Path) -> dict[str, Path]:
    """Write the bundle, metrics, holdout predictions and plots under out_dir (the DVC outputs)."""
    from pipelines import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"bundle": out_dir / "bundle.joblib", "metrics": out_dir / "metrics.json",
             "gains": out_dir / "gains.csv"}
    joblib.dump(result.bundle, files["bundle"])
    files["metrics"].write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
    result.gains.to_csv(files["gains"], index=False)
    y, p = result.holdout["label"].to_numpy(), result.holdout["p"].to_numpy()
    files["calibration"] = plots.calibration_plot(y, p, out_dir / "calibration.png")
    files["roc"] = plots.roc_plot(y, p, out_dir / "roc.png")
    files["gains_plot"] = plots.gains_plot(result.gains, out_dir / "gains.png")
    gain = result.bundle.cure.booster_.feature_importance(importance_type="gain")
    files["importance"] = plots.importance_plot(result.bundle.feature_names, gain, out_dir / "importance.png")
    return files


def log_and_register(result: TrainResult, files: dict[str, Path], params: dict, log=print) -> dict:
    """One MLflow run: params, metrics, plots, fingerprint, commit; the pyfunc registered; alias if gated."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from models.pyfunc import CureflowModel
    from models.registry import artifact_root, configure_mlflow
    from models.scoring import example_request

    uri = configure_mlflow()
    name = params["mlflow"]["experiment"]
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root(uri))
    mlflow.set_experiment(name)
    model_name = params["mlflow"]["model_name"]
    with mlflow.start_run() as run:
        mlflow.log_params(_flat_params(params))
        mlflow.log_metrics({f"holdout_{k}": v for k, v in result.metrics.items()})
        mlflow.set_tags({"git_commit": git_commit(), "data_fingerprint": result.bundle.metadata["data_fingerprint"],
                         "history_end": result.history_end.isoformat()})
        for key, path in files.items():
            if key != "bundle":
                mlflow.log_artifact(str(path), artifact_path="evaluation")
        result.bundle.run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            bundle_path = Path(tmp) / "bundle.joblib"
            joblib.dump(result.bundle, bundle_path)
            example = pd.DataFrame({"request": [json.dumps(example_request(result.bundle))]})
            signature = infer_signature(example, pd.DataFrame({"answer": ["{}"]}))
            info = mlflow.pyfunc.log_model(name="model", python_model=CureflowModel(),
                                           artifacts={"bundle": str(bundle_path)}, signature=signature,
                                           input_example=example, registered_model_name=model_name,
                                           code_paths=[str(Path(__file__).resolve().parent.parent / "models")])
    version = str(info.registered_model_version)
    passed, why = quality_gate(result.metrics, params["train"]["quality_gate"])
    client = MlflowClient()
    client.set_model_version_tag(model_name, version, "quality_gate", "passed" if passed else f"failed: {why}")
    if passed:
        client.set_registered_model_alias(model_name, "champion", version)
    log(f"MLflow run {run.info.run_id}: registered {model_name} version {version}"
        f"{'; alias @champion set' if passed else f'; NOT promoted ({why})'}")
    return {"run_id": run.info.run_id, "version": version, "champion": passed, "tracking_uri": uri}


def quality_gate(metrics: dict[str, float], gate: dict) -> tuple[bool, str]:
    """Pass when holdout ROC AUC >= min_roc_auc and ECE <= max_ece."""
    problems = []
    if metrics["roc_auc"] < float(gate["min_roc_auc"]):
        problems.append(f"roc_auc {metrics['roc_auc']:.3f} < {gate['min_roc_auc']}")
    if metrics["ece"] > float(gate["max_ece"]):
        problems.append(f"ece {metrics['ece']:.3f} > {gate['max_ece']}")
    return (not problems, "; ".join(problems))


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def run(data: Path, out_dir: Path, params: dict | None = None, register: bool = True,
        history_end_at: str | None = None, log=print) -> dict:
    """The whole training stage: fit, write outputs, log to MLflow and register."""
    params = params or load_params()
    result = fit(data, params, history_end_at, log=log)
    files = save_outputs(result, out_dir)
    info = {"metrics": result.metrics, "out_dir": str(out_dir)}
    if register:
        info.update(log_and_register(result, files, params, log=log))
        result.bundle.model_version = f"{params['mlflow']['model_name']}/{info['version']}"
        joblib.dump(result.bundle, files["bundle"])  # the DVC output, now stamped with run and version
    return info

