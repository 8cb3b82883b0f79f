"""The notebooks: saved without outputs, thin over the library, and executed end to end on a small
portfolio (a real Jupyter kernel, a throw-away MLflow store, nothing written into the checkout)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from models.config import load_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_portfolio.ipynb", "02_retrain_cure_model.ipynb", "03_experiments.ipynb", "04_what_if.ipynb"]
MAX_CELL_LINES = 15


def _code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_four_notebooks_exist_and_the_readme_says_what_each_shows():
    assert [p.name for p in NOTEBOOKS] == EXPECTED
    readme = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert name in readme, name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_saved_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    assert book.metadata["kernelspec"]["name"] == "python3"
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert "widgets" not in book.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_over_the_library(path):
    book = nbformat.read(path, as_version=4)
    assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith("# ")
    sources = [c.source for c in _code_cells(path)]
    assert any(re.search(r"^from (models|pipelines)[. ]", s, re.M) for s in sources)
    for source in sources:
        assert not re.search(r"^\s*(def|class|lambda_)\s", source, re.M), "logic belongs in models/ or pipelines/"
        assert len(source.splitlines()) <= MAX_CELL_LINES, source[:60]


@pytest.fixture
def small_run(trained, tmp_path, monkeypatch) -> Path:
    """Point a notebook at the small simulated portfolio, quick params, the trained bundle, and a store and
    output folder of its own under tmp_path (the kernel inherits this environment)."""
    params = load_params()
    params["cure"]["n_folds"] = 3
    params["cure"]["lgbm"]["n_estimators"] = 60     # notebook 2 trains twice: keep CI quick
    params["response"]["lgbm"]["n_estimators"] = 60
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    monkeypatch.setenv("CUREFLOW_DATA", str(trained["data"]))
    monkeypatch.setenv("CUREFLOW_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CUREFLOW_MODEL", str(trained["bundle_path"]))
    monkeypatch.setenv("CUREFLOW_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path


def _outputs_text(book) -> str:
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_small_portfolio(path, small_run):
    from nbclient import NotebookClient

    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    saved = path.read_bytes()
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(small_run)}}).execute()
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert all(c.outputs for c in code), "every code cell shows something"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before and path.read_bytes() == saved
    text = _outputs_text(book)
    if path.name == "02_retrain_cure_model.ipynb":
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{small_run / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("cureflow").experiment_id])
        assert {r.data.params["cure.lgbm.num_leaves"] for r in runs} == {"31", "15"}
        assert all((r.info.run_name in ("baseline", "fewer leaves")) for r in runs)
        assert "would be promoted" in text or "would NOT be promoted" in text
    if path.name == "01_portfolio.ipynb":
        assert "1,500 accounts" in text
