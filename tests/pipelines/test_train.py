"""Training to registry to batch: a real MLflow store, the registered pyfunc, the `cureflow` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from models.bundle import BATCH_COLUMNS
from models.config import load_params
from models.contract import read_dir
from models.features import FeatureConfig, prepare
from models.scoring import example_request
from pipelines.features import cure_examples, example_dates
from pipelines.quality_gate import quality_gate
from pipelines.train import time_split

pytestmark = pytest.mark.slow


def test_training_run_is_logged_and_registered_with_the_champion_alias(trained):
    mlflow.set_tracking_uri(trained["tracking_uri"])
    client = MlflowClient(trained["tracking_uri"])
    run = client.get_run(trained["info"]["run_id"])
    assert run.data.metrics["holdout_roc_auc"] > 0.6
    expected = {"holdout_brier", "holdout_ece", "holdout_ks", "holdout_pr_auc", "holdout_truth_mae"}
    assert expected <= set(run.data.metrics)
    assert run.data.params["cure.horizon_days"] == "30"
    assert len(run.data.tags["data_fingerprint"]) == 64 and run.data.tags["git_commit"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/calibration.png", "evaluation/roc.png", "evaluation/gains.png",
            "evaluation/importance.png", "evaluation/bands.json", "evaluation/band_calibration.png"} <= artifacts
    assert {"holdout_fresh_roc_auc", "holdout_fresh_auc_lift", "holdout_dpd_1-30_ece"} <= set(run.data.metrics)
    champion = client.get_model_version_by_alias("cureflow", "champion")
    assert str(champion.version) == trained["info"]["version"]
    assert champion.tags["quality_gate"] == "passed"


def test_the_run_says_what_ran_and_on_which_data_and_opens_as_model_development(trained):
    client = MlflowClient(trained["tracking_uri"])
    run = client.get_run(trained["info"]["run_id"])
    assert run.info.run_name == "train 2026-11-01 1,500 accounts"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"accounts", "installments", "payments", "contacts"}
    data = read_dir(trained["data"])
    for name, logged in inputs.items():
        tags = {t.key: t.value for t in logged.tags}
        assert tags["mlflow.data.context"] == "training" and int(tags["rows"]) == len(data.tables[name])
        assert tags["sha256"] == data.table_fingerprints()[name] and logged.dataset.digest == tags["sha256"][:32]
        assert logged.dataset.source.endswith(name) or name in logged.dataset.source


def test_registered_pyfunc_answers_a_contract_request(trained):
    mlflow.set_tracking_uri(trained["tracking_uri"])
    model = mlflow.pyfunc.load_model("models:/cureflow@champion")
    assert model.metadata.signature is not None
    out = model.predict(pd.DataFrame({"request": [json.dumps(example_request())]}))
    answer = json.loads(out["answer"].iloc[0])
    assert answer["account_id"] == "A-EXAMPLE" and 0 <= answer["cure_probability"] <= 1


def test_holdout_dates_are_later_than_training_dates_with_a_label_gap(sim_dir):
    params = load_params()
    config = FeatureConfig.from_params(params)
    prep = prepare(read_dir(sim_dir), config)
    end = pd.Timestamp("2026-11-01T00:00:00+09:00")
    dates = example_dates(prep, end, 30, 14)
    assert max(dates) + pd.Timedelta(days=30) <= end
    examples = cure_examples(prep, config, dates, 30)
    assert (examples["arrears"] > 0).all()
    train, holdout = time_split(examples, 0.25, 30)
    assert train["as_of"].max() + pd.Timedelta(days=30) <= holdout["as_of"].min()


GATE = {"min_roc_auc": 0.7, "max_ece": 0.05, "min_band_examples": 200, "min_baseline_lift": 0.0}
GOOD = {"roc_auc": 0.93, "ece": 0.01, "fresh_roc_auc": 0.8, "fresh_auc_lift": 0.05, "fresh_ece": 0.02,
        "fresh_n": 900, "dpd_1-30_ece": 0.03, "dpd_1-30_n": 600, "dpd_31-90_ece": 0.04, "dpd_31-90_n": 300}


def test_quality_gate_names_what_failed():
    ok, why = quality_gate({**GOOD, "fresh_roc_auc": 0.65}, GATE)
    assert not ok and "fresh-arrears roc_auc" in why
    assert quality_gate(GOOD, GATE) == (True, "")


def test_quality_gate_judges_fresh_arrears_not_the_pooled_auc():
    assert not quality_gate({"roc_auc": 0.93, "ece": 0.01}, GATE)[0]  # no fresh-arrears figures: no pass
    ok, why = quality_gate({**GOOD, "fresh_auc_lift": -0.01}, GATE)
    assert not ok and "baseline" in why
    assert not quality_gate({**GOOD, "fresh_auc_lift": 0.0}, GATE)[0]  # a tie with the baseline is no lift


def test_quality_gate_checks_calibration_in_each_fresh_band_large_enough_to_tell():
    ok, why = quality_gate({**GOOD, "dpd_31-90_ece": 0.09}, GATE)
    assert not ok and "dpd_31-90 ece" in why
    assert quality_gate({**GOOD, "dpd_31-90_ece": 0.3, "dpd_31-90_n": 199}, GATE) == (True, "")
    assert not quality_gate({**GOOD, "dpd_31-90_ece": 0.3, "dpd_31-90_n": 200}, GATE)[0]
    assert not quality_gate({**GOOD, "dpd_1-30_ece": 0.06}, GATE)[0]
    assert quality_gate({**GOOD, "dpd_91-180_ece": 0.3, "dpd_91-180_n": 900}, GATE) == (True, "")  # not fresh


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cureflow ARGS` as a user runs it; its decision log goes to a temporary file, not the checkout."""
    log = f"sqlite:///{os.path.join(tempfile.gettempdir(), f'cureflow-test-decisions-{os.getpid()}.db')}"
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "CUREFLOW_DATABASE_URL": log, **(env or {})}, timeout=300)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_score_command_writes_the_work_queue_in_priority_order(trained, tmp_path, suffix):
    out = tmp_path / f"queue{suffix}"
    done = _cli("score", "--data", str(trained["data"]), "--as-of", "2026-11-01T00:00:00+09:00",
                "--out", str(out), "--model", "models:/cureflow@champion",
                env={"MLFLOW_TRACKING_URI": trained["tracking_uri"]})
    assert done.returncode == 0, done.stderr
    rows = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(rows.columns) == list(BATCH_COLUMNS)
    assert rows["priority"].is_monotonic_decreasing
    assert rows["account_id"].is_unique
    assert (rows["model_version"] == f"cureflow/{trained['info']['version']}").all()
    assert not list(tmp_path.glob(".*.tmp"))


def test_score_command_names_the_table_column_and_rows_of_bad_input(trained, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    p = read_dir(trained["data"])
    for name, frame in p.tables.items():
        if name == "payments":
            frame = frame.copy()
            frame.loc[3, "amount"] = -5.0
        frame.to_parquet(bad / f"{name}.parquet")
    done = _cli("score", "--data", str(bad), "--out", str(tmp_path / "q.parquet"), "--model",
                str(trained["bundle_path"]))
    assert done.returncode == 2
    assert "payments.amount" in done.stderr and "3" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "q.parquet").exists()


def test_same_data_model_and_as_of_give_the_same_queue(trained):
    from models.registry import load_bundle
    from serving.batch import score_portfolio

    bundle = load_bundle(str(trained["bundle_path"])).bundle
    portfolio = read_dir(trained["data"])
    as_of = pd.Timestamp("2026-10-20T12:00:00+09:00")
    a = score_portfolio(bundle, portfolio, as_of, progress=False)
    b = score_portfolio(bundle, portfolio, as_of, chunk_size=97, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert np.isfinite(a["cure_probability"]).all()


def test_phone_capacity_keeps_the_most_valuable_calls_and_reports_an_extra_hour(trained, tmp_path):
    out = tmp_path / "queue.parquet"
    unlimited = tmp_path / "unlimited.parquet"
    common = ["--data", str(trained["data"]), "--as-of", "2026-11-01T00:00:00+09:00", "--model",
              str(trained["bundle_path"]), "--explore", "0"]
    assert _cli("score", *common, "--out", str(unlimited), "--phone-capacity", "unlimited").returncode == 0
    calls = (pd.read_parquet(unlimited)["channel"] == "phone").sum()
    assert calls >= 1, "the fixture portfolio should propose a call"
    done = _cli("score", *common, "--out", str(out), "--phone-capacity", "0")
    assert done.returncode == 0, done.stderr
    rows = pd.read_parquet(out)
    assert (rows["channel"] == "phone").sum() == 0
    moved = rows[rows["blocked"].str.contains('"CAPACITY"')]
    assert len(moved) == calls and (moved["channel"] != "phone").all()
    summary = json.loads((tmp_path / "queue.parquet.summary.json").read_text())
    assert summary["calls_proposed"] == calls and summary["calls_kept"] == 0
    assert summary["value_of_one_more_collector_hour"] > 0


def test_trains_and_scores_data_without_any_experiment(sim_dir, tmp_path):
    from models.contract import write_dir
    from pipelines.train import fit

    p = read_dir(sim_dir)
    contacts = p.contacts[p.contacts["channel"] != "none"].assign(propensity=np.nan, experiment_id=None)
    plain = tmp_path / "plain"
    write_dir(type(p)(p.accounts, p.installments, p.payments, contacts.reset_index(drop=True)), plain)
    params = load_params()
    params["cure"]["n_folds"] = 3
    messages = []
    result = fit(plain, params, history_end_at="2026-11-01T00:00:00+09:00", log=messages.append)
    assert result.bundle.response is None
    assert any("no response model" in m for m in messages)
    rows = result.bundle.score(p, pd.Timestamp("2026-11-01T00:00:00+09:00"), explore=0.0)
    assert len(rows) and rows.loc[rows["tier"].isin(["no contact", "review by a person", "hold: legal",
                                                      "hold: promise to pay"]), "channel"].eq("none").all()
    assert (rows["expected_gain"] == 0).all()


@pytest.mark.parametrize(("option", "value", "says"), [("--as-of", "2026-11-01T00:00:00", "UTC offset"),
                                                      ("--as-of", "yesterday-ish", "yesterday-ish"),
                                                      ("--phone-capacity", "-3", "capacity")])
def test_score_command_names_a_bad_option_without_a_traceback(trained, tmp_path, option, value, says):
    args = ["score", "--data", str(trained["data"]), "--out", str(tmp_path / "q.parquet"), "--model",
            str(trained["bundle_path"]), option, value]
    done = _cli(*args)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
