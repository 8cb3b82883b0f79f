"""The README's demo figures cannot drift: the README block is the rendering of docs/demo_figures.json, and a
fresh `make demo` reproduces the recorded figures within scripts/readme_figures.py's tolerances."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "scripts" / "readme_figures.py")
figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figures)


def test_the_readme_shows_exactly_the_recorded_figures():
    recorded = json.loads(figures.RECORD.read_text())
    text = figures.README.read_text(encoding="utf-8")
    block = text[text.index(figures.START):text.index(figures.END) + len(figures.END)]
    assert block == figures.render(recorded), "edit the figures with `make readme-figures`, not by hand"


def test_a_change_beyond_the_tolerances_is_named():
    recorded = json.loads(figures.RECORD.read_text())
    assert figures.differences(dict(recorded), recorded) == []
    moved = {**recorded, "roc_auc": recorded["roc_auc"] + 0.05, "policy": recorded["policy"] * 1.2,
             "tiers": {**recorded["tiers"], "letter": recorded["tiers"].get("letter", 0) + recorded["queue_rows"]}}
    problems = figures.differences(moved, recorded)
    assert [p.split(":")[0] for p in problems] == ["roc_auc", "policy", "tier 'letter'"]


@pytest.mark.slow
def test_a_fresh_demo_reproduces_the_readme_figures(tmp_path):
    """`make demo` exactly as a user runs it (its data, outputs, MLflow store and decision log in a temporary
    folder), then its figures against the recorded ones."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'decisions.db'}", "CUREFLOW_QUIET": "1"}
    data, out = tmp_path / "portfolio", tmp_path / "outputs"
    done = subprocess.run(["make", "-s", "demo", f"DEMO_DATA={data}", f"OUT={out}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    problems = figures.differences(figures.collect(data, out), json.loads(figures.RECORD.read_text()))
    assert problems == [], "\n".join(problems)
