"""Where models live: the MLflow tracking store, the registered `cureflow` pyfunc, and loading a bundle.

Tracking defaults to a local SQLite store (`mlflow.db`) with artifacts in `mlartifacts/`, both in the
working directory, unless MLFLOW_TRACKING_URI says otherwise. Nothing here runs at import time.
"""

from __future__ import annotations

import os
import re
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


SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # models:/, runs:/, sqlite:///, https://, ...


def hide_password(uri: str) -> str:
    """A store's URI fit for a message or a summary: the password of the URI's user, if any, shown as `***`
    (the MLflow store here, the batch's source in `serving.sources.describe`)."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", uri)


class ModelNotFound(LookupError):
    """No model at the URI: a missing file or directory, an alias not set, a version or run not in the store."""


def registry_client():
    """An MLflow client on the tracking store of `configure_mlflow` (its registry is the same store)."""
    from mlflow import MlflowClient

    uri = configure_mlflow()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def load_bundle(uri: str = DEFAULT_MODEL_URI, client=None):
    """Load the scoring bundle from `models:/name@alias`, `models:/name/3`, `runs:/...`, an MLflow model
    directory, or a bundle.joblib file; stamps it with the registered version where there is one.

    An alias is resolved once, to a version, and that version is loaded: resolving it again afterwards
    could label the old model with the new number if the alias moved in between."""
    path = Path(uri)
    if not SCHEME.match(uri) and not path.exists():
        raise ModelNotFound(f"no model at {uri}: not a file or directory here (a bundle.joblib, an MLflow model "
                            f"directory, or a URI such as {DEFAULT_MODEL_URI})")
    if path.suffix == ".joblib" and path.is_file():
        bundle = joblib.load(path)
        return LoadedModel(bundle, uri, bundle.model_version, bundle.run_id)
    import mlflow
    from mlflow.exceptions import MlflowException

    client = client or registry_client()
    version = registered_version(client, uri)
    if version is None and uri.startswith("models:/") and "@" in uri:
        raise ModelNotFound(f"{uri}: the alias is not set in the registry at {hide_password(client.tracking_uri)}")
    try:
        model = mlflow.pyfunc.load_model(f"models:/{version}" if version else uri)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ModelNotFound(f"{uri}: not found in the tracking store at {hide_password(client.tracking_uri)} "
                            f"({err.message.splitlines()[0][:200]})") from None
    bundle = model.unwrap_python_model().bundle
    if version:
        bundle.model_version = version
    return LoadedModel(bundle, uri, bundle.model_version, bundle.run_id)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/name@alias` -> (name, alias, None); `models:/name/3` -> (name, None, '3'); else a ValueError."""
    if not uri.startswith("models:/"):
        raise ValueError(f"not a registry URI (models:/name@alias or models:/name/3): {uri!r}")
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    name, _, version = ref.partition("/")
    if not version.isdigit():
        raise ValueError(f"not a model version URI: {uri!r}")
    return name, None, version


def resolve_version(client, uri: str) -> str | None:
    """The version number a registry URI points to; None when its alias (or the model) is not set."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    if version:
        return version
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def registered_version(client, uri: str) -> str | None:
    """`cureflow/3` for `models:/cureflow@alias` or `models:/cureflow/3`; None for an alias not set and for
    any other URI (a file, `runs:/...`, a logged model's `models:/m-...`)."""
    try:
        name = parse_model_uri(uri)[0]
    except ValueError:
        return None
    version = resolve_version(client, uri)
    return f"{name}/{version}" if version else None
