"""The DVC pipeline: every stage declares its params, its code (models/ included) and its outputs, and
`dvc repro` runs offline from a fresh copy to a registered model on a tiny configuration (in a temporary
directory: nothing is written into the checkout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from models.config import load_params

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES = ["simulate", "features", "train", "evaluate", "register", "score", "monitor"]


def _param_exists(params: dict, key: str) -> bool:
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_stages_run_from_data_to_registered_model_in_order():
    assert list(PIPELINE) == STAGES
    produced: set[str] = set()
    for name, stage in PIPELINE.items():
        for dep in _paths(stage.get("deps")):
            assert (ROOT / dep).exists() or dep in produced, f"{name}: {dep} is neither code nor an earlier output"
        produced |= set(_paths(stage.get("outs")) + _paths(stage.get("metrics")) + _paths(stage.get("plots")))


def test_every_stage_reads_params_that_exist_and_lists_its_code():
    params = load_params(ROOT / "params.yaml")
    for name, stage in PIPELINE.items():
        for key in stage.get("params", []):
            assert _param_exists(params, key), f"{name}: params.yaml has no {key}"
        deps = _paths(stage["deps"])
        if name != "simulate":
            assert "models" in deps, f"{name} must list models/ so `dvc repro` notices code changes"
        command = stage["cmd"].split()[1]
        code = {"simulate": "pipelines/simulate.py", "features": "pipelines/features.py", "train": "pipelines/train.py",
                "evaluate": "pipelines/evaluate.py", "register": "pipelines/register.py", "score": "serving/batch",
                "monitor": "pipelines/monitor.py"}[command]
        assert code in deps, f"{name}: {code}, the code it runs, is not in its deps"
    for name in ("train", "evaluate", "monitor"):
        assert _paths(PIPELINE[name].get("metrics")), f"{name} declares no metrics"
    assert _paths(PIPELINE["train"].get("plots"))


def _tiny_copy(tmp: Path) -> Path:
    """The pipeline, its code and a tiny params.yaml in a fresh git repository."""
    work = tmp / "repo"
    work.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("models", "pipelines", "serving"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, work / name)
    (work / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, work / ".dvc" / name)
    params = load_params(ROOT / "params.yaml")
    params["simulate"].update(accounts=1500, months=18)
    params["cure"]["n_folds"] = 3
    params["cure"]["lgbm"]["n_estimators"] = 60
    params["response"]["lgbm"]["n_estimators"] = 60
    params["train"]["quality_gate"].update(min_roc_auc=0.5, max_ece=1.0)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CUREFLOW_PARAMS")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"))
    return env


def _dvc(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_dvc_repro_runs_offline_from_a_fresh_copy_to_a_registered_model(tmp_path):
    from mlflow import MlflowClient

    work, env = _tiny_copy(tmp_path), _env(tmp_path)
    done = _dvc(work, env, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in done.stdout, stage
    metrics = json.loads((work / "outputs/train/metrics.json").read_text())
    assert 0.5 < metrics["roc_auc"] <= 1 and 0 <= metrics["ece"] < 1
    assert (work / "outputs/train/report.html").stat().st_size > 10_000
    assert len(pd.read_parquet(work / "outputs/features/cure_examples.parquet")) == json.loads(
        (work / "outputs/features/examples.json").read_text())["cure_examples"]
    evaluation = json.loads((work / "outputs/evaluation.json").read_text())
    assert evaluation["truth"]["violations"] == 0 and evaluation["off_policy"]
    registered = json.loads((work / "outputs/registered.json").read_text())
    assert registered["champion"] and registered["tracking_uri"] == f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(registered["tracking_uri"])
    assert str(client.get_model_version_by_alias("cureflow", "champion").version) == registered["version"]
    queue = pd.read_parquet(work / "outputs/work_queue.parquet")
    monitor = json.loads((work / "outputs/monitor.json").read_text())
    assert monitor["batch_rows"] == len(queue) > 0
    assert "Data and pipelines are up to date" in _dvc(work, env, "status").stdout
    shown = json.loads(_dvc(work, env, "metrics", "show", "--json").stdout)
    assert any("roc_auc" in json.dumps(v) for v in shown.values())

    params = yaml.safe_load((work / "params.yaml").read_text())
    params["cure"]["lgbm"]["num_leaves"] = 15   # a data scientist's change: only training and after rerun
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    changed = json.loads(_dvc(work, env, "status", "--json").stdout)
    assert set(changed) == {"train"}
