"""The HTML model report: written beside the bundle and logged to the MLflow run, self-contained, with the
holdout metrics, calibration, gains, importance, response by segment and the policy's evaluation."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.model_report import calibration_table


def test_calibration_table_splits_cases_into_equal_groups_by_predicted_chance():
    rng = np.random.default_rng(3)
    p = rng.random(1003)
    y = (rng.random(1003) < p).astype(int)
    table = calibration_table(y, p)
    assert table["cases"].sum() == 1003 and table["cases"].max() - table["cases"].min() <= 1
    assert table["mean predicted"].is_monotonic_increasing
    assert table["observed"].iloc[-1] > table["observed"].iloc[0]


@pytest.fixture(scope="module")
def page(trained) -> str:
    return (trained["root"] / "train" / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_report_has_every_section_and_stands_alone(page, trained):
    for title in ("Cure model on the time holdout", "Calibration", "Gains", "What drives the cure chance",
                  "Response by lifestyle segment", "The policy's evaluation", "Parameters"):
        assert title in page, title
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 4
    assert not re.search(r'(src|href)="https?://', page), "the page must not load anything from elsewhere"
    assert f"{trained['info']['metrics']['roc_auc']:.3f}" in page
    assert "<script" not in page


@pytest.mark.slow
def test_report_shows_metrics_and_calibration_by_band_beside_the_baseline(page, trained):
    metrics = trained["info"]["metrics"]
    for words in ("By days past due and by arrears", "baseline ROC AUC", "lift over baseline", "31-90",
                  "over 4 instalments", 'alt="calibration by days-past-due band"'):
        assert words in page, words
    assert f"{metrics['fresh_roc_auc']:.3f}" in page and f"{metrics['dpd_1-30_ece']:.3f}" in page


@pytest.mark.slow
def test_report_evaluates_the_policy_off_policy_and_against_the_truth(page, trained):
    from models.contract import read_dir
    from models.registry import load_bundle
    from pipelines.evaluate import truth_values

    for words in ("logging policy", "IPS", "SNIPS", "DR", "the oracle", "best single action",
                  "share of the oracle's gain"):
        assert words in page, words
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    actions = pd.read_parquet(trained["data"] / "truth" / "actions.parquet")
    truth = truth_values(bundle, read_dir(trained["data"]), actions, pd.Timestamp(bundle.metadata["history_end"]),
                         bundle.policy_config.explore)
    assert f"<td>{truth['policy']:,.3f}</td>" in page and f"<td>{truth['oracle']:,.3f}</td>" in page


@pytest.mark.slow
def test_response_by_segment_matches_the_weighted_rate_and_the_model(trained):
    from models.contract import read_dir
    from models.registry import load_bundle
    from pipelines.model_report import response_by_segment
    from pipelines.workbench import experiment_logs

    bundle = load_bundle(str(trained["bundle_path"])).bundle
    logs = experiment_logs(read_dir(trained["data"]), bundle.params, trained["data"])
    logs = logs[logs["decided_at"] >= pd.Timestamp(bundle.metadata["response_holdout_from"])].reset_index(drop=True)
    table = response_by_segment(bundle, logs)
    assert table["n"].sum() == len(logs)
    assert table["predicted"].between(0, 1).all()
    row = table.sort_values("n").iloc[-1]
    cell = logs[(logs["segment"] == row["segment"]) & (logs["channel"] == row["channel"])]
    w = 1 / cell["propensity"]
    assert row["rate"] == pytest.approx(float((w * cell["label"]).sum() / w.sum()))
    assert row["rate_low"] <= row["rate"] <= row["rate_high"]


@pytest.mark.slow
def test_report_is_logged_to_the_training_run(trained):
    client = MlflowClient(trained["tracking_uri"])
    artifacts = {a.path for a in client.list_artifacts(trained["info"]["run_id"], "report")}
    assert artifacts == {"report/report.html"}
