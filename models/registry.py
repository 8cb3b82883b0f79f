"""Where models live: the MLflow tracking store, the registered `cureflow` pyfunc, and loading a bundle.

Tracking defaults to a local SQLite store (`mlflow.db`) with artifacts in `mlartifacts/`, both in the
working directory, unless MLFLOW_TRACKING_URI says otherwise. Nothing here runs at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import joblib

DEFAULT_MODEL_URI = "models:/cureflow@champion"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, `mlartifacts/` beside the database file; None lets other stores decide."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


def configure_mlflow() -> str:
    """Point the MLflow client at the tracking store; returns its URI."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@dataclass
class LoadedModel:
    """A bundle and where it came from."""

    bundle: object
    uri: str
    version: str
    run_id: str


def load_bundle(uri: str = DEFAULT_MODEL_URI):
    """Load the scoring bundle from `models:/name@alias`, `models:/name/3`, `runs:/...`, an MLflow model
    directory, or a bundle.joblib file; stamps it with the registered version where there is one."""
    path = Path(uri)
    if path.suffix == ".joblib" and path.exists():
        bundle = joblib.load(path)
        return LoadedModel(bundle, uri, bundle.model_version, bundle.run_id)
    import mlflow
    from mlflow import MlflowClient

    configure_mlflow()
    model = mlflow.pyfunc.load_model(uri)
    bundle = model.unwrap_python_model().bundle
    version = registered_version(MlflowClient(), uri)
    if version:
        bundle.model_version = version
    return LoadedModel(bundle, uri, bundle.model_version, bundle.run_id)


def registered_version(client, uri: str) -> str | None:
    """`cureflow/3` for a registry URI (alias or number), None for anything else."""
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return f"{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, _, version = ref.partition("/")
    return f"{name}/{version}" if version.isdigit() else None
