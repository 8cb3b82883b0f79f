"""Reading params.yaml: the one place every tunable number comes from."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PARAMS_ENV = "CUREFLOW_PARAMS"


def default_params_path() -> Path:
    """`$CUREFLOW_PARAMS` if set, else params.yaml in the working directory, else the one beside the code."""
    if os.environ.get(PARAMS_ENV):
        return Path(os.environ[PARAMS_ENV])
    local = Path.cwd() / "params.yaml"
    if local.exists():
        return local
    return Path(__file__).resolve().parent.parent / "params.yaml"


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed params.yaml (a fresh deep copy, so callers may change it freely)."""
    import copy

    return copy.deepcopy(_load(str(path or default_params_path())))
