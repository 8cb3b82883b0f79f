"""The DVC `register` stage (`cureflow register`) and MLflow logging: one run with params, metrics, plots, the
model report, the data's fingerprint and the commit; the pyfunc registered. A version that passes the quality
gate becomes `@challenger`, or `@champion` when the registry has no champion yet; `cureflow promote` compares a
challenger with the champion on the same holdout before `@champion` moves.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import warnings
from pathlib import Path

import joblib
import pandas as pd

from models.config import load_params
from models.registry import artifact_root, configure_mlflow, registry_client, resolve_version
from pipelines.quality_gate import policy_update, quality_gate
from pipelines.trained import OUTPUT_FILES, TrainResult


def git_commit() -> str:
    """The commit of the working tree, or 'unknown' outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _log_run(result: TrainResult, files: dict[str, Path], params: dict):
    """Inside an active run: params (the bundle's own), holdout metrics, tags and every file but the bundle
    (the model report under `report/`, the rest under `evaluation/`)."""
    import mlflow

    mlflow.log_params(_flat_params(result.bundle.params))
    mlflow.log_metrics({f"holdout_{k}": v for k, v in result.metrics.items()})
    mlflow.set_tags({"git_commit": git_commit(), "data_fingerprint": result.bundle.metadata["data_fingerprint"],
                     "history_end": result.history_end.isoformat()})
    for key, path in files.items():
        if key != "bundle" and Path(path).exists():
            mlflow.log_artifact(str(path), artifact_path="report" if key == "report" else "evaluation")
    _log_datasets(result.bundle.metadata)


def _log_datasets(meta: dict) -> None:
    """The four contract tables the bundle learned from, as MLflow datasets (context `training`): their
    location, row count and sha256 fingerprint (the data stays where it is; only its identity is logged)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for name, info in meta.get("tables", {}).items():
        with warnings.catch_warnings():  # a local path matches two equivalent local sources; either will do
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str((Path(meta.get("data", "")) / name).resolve()))
        mlflow.log_input(MetaDataset(source, name=name, digest=info["sha256"][:32]), context="training",
                         tags={"rows": str(info["rows"]), "sha256": info["sha256"]})


def run_name_of(result: TrainResult) -> str:
    """What ran, for the MLflow runs list: `train 2026-11-01 20,000 accounts`."""
    meta = result.bundle.metadata
    accounts = meta.get("tables", {}).get("accounts", {}).get("rows")
    zone = result.bundle.params.get("calendar", {}).get("default_timezone", "UTC")
    day = pd.Timestamp(meta["history_end"]).tz_convert(zone).date().isoformat()
    return f"train {day}" + (f" {accounts:,} accounts" if accounts is not None else "")


def _experiment(params: dict) -> str:
    """Point MLflow at the tracking store and the experiment (created with its artifacts beside a SQLite
    store, and tagged as model development so MLflow 3's UI opens on the training runs, not on GenAI
    traces); returns the tracking URI."""
    import mlflow

    uri = configure_mlflow()
    name = params["mlflow"]["experiment"]
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_root(uri))
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get("mlflow.experimentKind") != "custom_model_development":
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind",
                                                 "custom_model_development")
    return uri


def log_run(result: TrainResult, files: dict[str, Path], params: dict, run_name: str | None = None) -> str:
    """One MLflow run with everything but the model (a notebook's experiment, to compare with others);
    returns its run id. `log_and_register` is the same run plus the registered model."""
    import mlflow

    _experiment(params)
    with mlflow.start_run(run_name=run_name or run_name_of(result)) as run:
        _log_run(result, files, params)
    return run.info.run_id


def log_and_register(result: TrainResult, files: dict[str, Path], params: dict, log=print) -> dict:
    """One MLflow run: params, metrics, plots, report, fingerprint, commit; the pyfunc registered. Past the
    quality gate the version becomes `@challenger`, or `@champion` when there is no champion yet.

    With `train.policy_updates` on, a retrain whose cure model fails the gate still registers what it learned
    about actions: the registered
    bundle is its policy on the champion's cure model (`quality_gate.policy_update`), which passed the gate;
    the version is tagged `cure_model_from` and becomes `@challenger`, for `cureflow promote` to judge its
    policy against the champion's. The run's metrics stay those of the retrained cure model."""
    import mlflow
    from mlflow.models import infer_signature

    from models.pyfunc import CureflowModel
    from models.scoring import example_request

    uri = _experiment(params)
    model_name = params["mlflow"]["model_name"]
    client = registry_client()
    gate = quality_gate(result.metrics, params["train"]["quality_gate"])
    bundle, kept = result.bundle, None
    if not gate[0] and params["train"].get("policy_updates", False):
        champion = _champion(client, model_name)
        update = policy_update(result.bundle, champion)
        if update is not None:
            bundle, kept = update, (champion.model_version, gate[1])
    with mlflow.start_run(run_name=run_name_of(result)) as run:
        _log_run(result, files, params)
        bundle.run_id = result.bundle.run_id = run.info.run_id
        if kept is not None:
            mlflow.set_tag("cure_model_from", kept[0])
        with tempfile.TemporaryDirectory() as tmp:
            bundle_path = Path(tmp) / "bundle.joblib"
            joblib.dump(bundle, bundle_path)
            example = pd.DataFrame({"request": [json.dumps(example_request(bundle))]})
            signature = infer_signature(example, pd.DataFrame({"answer": ["{}"]}))
            info = mlflow.pyfunc.log_model(name="model", python_model=CureflowModel(),
                                           artifacts={"bundle": str(bundle_path)}, signature=signature,
                                           input_example=example, registered_model_name=model_name,
                                           code_paths=[str(Path(__file__).resolve().parent.parent / "models")])
    version = str(info.registered_model_version)
    if kept is not None:
        client.set_model_version_tag(model_name, version, "cure_model_from",
                                     f"{kept[0]}: the retrained cure model failed the quality gate ({kept[1]})")
        gate = (True, "")
    aliases = set_aliases(client, model_name, version, gate)
    what = f"; its policy on the cure model of {kept[0]} (the retrained one failed the gate: {kept[1]})" if kept else ""
    log(f"MLflow run {run.info.run_id}: registered {model_name} version {version}{what}; {aliases['message']}")
    return {"run_id": run.info.run_id, "version": version, "champion": "champion" in aliases["set"],
            "challenger": "challenger" in aliases["set"], "tracking_uri": uri,
            "cure_model_from": kept[0] if kept else None}


def _champion(client, model_name: str):
    """The `@champion` bundle, None when the registry has none."""
    from models.registry import ModelNotFound, load_bundle

    try:
        return load_bundle(f"models:/{model_name}@champion", client).bundle
    except ModelNotFound:
        return None


def set_aliases(client, model_name: str, version: str, gate: tuple[bool, str]) -> dict:
    """Tag the version with the quality gate's verdict; past the gate make it `@challenger`, or `@champion`
    when no champion exists (a fresh registry: the demo and the service need one)."""
    passed, why = gate
    client.set_model_version_tag(model_name, version, "quality_gate", "passed" if passed else f"failed: {why}")
    if not passed:
        return {"set": [], "message": f"NOT a challenger ({why})"}
    champion = resolve_version(client, f"models:/{model_name}@champion")
    if champion is None:
        client.set_registered_model_alias(model_name, "champion", version)
        client.set_model_version_tag(model_name, version, "promotion", "first champion: the registry had none")
        return {"set": ["champion"], "message": "alias @champion set (the registry had no champion)"}
    client.set_registered_model_alias(model_name, "challenger", version)
    return {"set": ["challenger"], "message": f"alias @challenger set; `cureflow promote` compares it with "
                                              f"@champion (version {champion})"}


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def register_dir(train_dir: Path, evaluation: Path | None = None, params: dict | None = None,
                 log=print) -> dict:
    """The DVC register stage: log and register what the train stage wrote under `train_dir` (with
    `evaluation`, the JSON of `cureflow evaluate`, among the run's artifacts). The quality gate and the
    MLflow names come from the current params; the logged params are those the bundle was trained with."""
    train_dir = Path(train_dir)
    files = {key: train_dir / name for key, name in OUTPUT_FILES.items()}
    missing = [str(files[k]) for k in ("bundle", "metrics", "holdout", "gains") if not files[k].exists()]
    if missing:
        raise FileNotFoundError(f"training outputs not found: {', '.join(missing)} (run `cureflow train`)")
    if evaluation is not None:
        files["evaluation"] = Path(evaluation)
    bundle = joblib.load(files["bundle"])
    result = TrainResult(bundle, json.loads(files["metrics"].read_text()), pd.read_parquet(files["holdout"]),
                         pd.read_csv(files["gains"]), None, pd.Timestamp(bundle.metadata["history_end"]))
    return log_and_register(result, files, params or load_params(), log=log)
