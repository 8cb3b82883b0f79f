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
    """The file's mapping; a missing file or one that is not a YAML mapping is a FileNotFoundError or a
    ValueError naming the file (and where YAML found the problem)."""
    source = f"params file {path}" + (f" (from {PARAMS_ENV})" if os.environ.get(PARAMS_ENV) == path else "")
    try:
        with open(path, encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source} not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{source} is not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{source} must hold a mapping of sections (policy:, cure:, ...), not {type(params).__name__}")
    return params


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed params.yaml (a fresh deep copy, so callers may change it freely)."""
    import copy

    return copy.deepcopy(_load(str(path or default_params_path())))
