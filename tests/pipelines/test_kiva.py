"""Kiva microloans: the converter's choices, and cureflow trained and scoring on data no one here made."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from models.config import load_params
from models.contract import ContractError, read_dir
from pipelines.cli import app
from pipelines.kiva import DEFAULT_DATA, kept, read_loans, to_contract
from pipelines.realdata import auc_difference

needs_real_file = pytest.mark.skipif(not DEFAULT_DATA.exists(), reason="../shared/data holds no Kiva file")


def _loan(loan_id: int, status: str = "paid", schedule=((("2006-08-16T07:00:00Z", 41.67),) * 1)) -> dict:
    return {"id": loan_id, "status": status, "country_code": "KE",
            "terms": {"disbursal_date": "2006-05-03T19:40:18Z",
                      "scheduled_payments": [{"due_date": d, "amount": a} for d, a in schedule]},
            "payments": [{"amount": 20, "processed_date": "2006-08-20T10:00:00Z"}]}


def test_only_funded_loans_with_a_schedule_are_converted():
    loans = [_loan(1), _loan(2, "refunded"), _loan(3, "defaulted"), {**_loan(4), "terms": {"scheduled_payments": []}}]
    out, left = kept(loans)
    assert [loan["id"] for loan in out] == [1, 3]
    assert left == {"status not paid or defaulted": 1, "no repayment schedule": 1}


def test_the_schedule_keeps_its_cents_and_falls_due_on_its_utc_date():
    schedule = (("2006-08-16T07:00:00Z", 41.67), ("2006-09-16T23:30:00Z", 41.66))
    book = to_contract([_loan(7, schedule=schedule)])
    assert book.installments["amount_due"].tolist() == [41.67, 41.66]
    assert book.installments["due_date"].dt.strftime("%Y-%m-%d").tolist() == ["2006-08-16", "2006-09-16"]
    account = book.accounts.iloc[0]
    assert account["account_id"] == "kiva-7" and account["timezone"] == "UTC" and not account["consent_phone"]
    assert account["monthly_amount"] == pytest.approx(41.665) and account["term_months"] == 5
    assert book.payments["paid_at"].iloc[0] == pd.Timestamp("2006-08-20T10:00:00Z")


def test_a_file_that_is_not_the_kiva_json_is_named(tmp_path):
    bad = tmp_path / "loans.json"
    bad.write_text(json.dumps({"loans": [_loan(1), {"id": 2, "status": "paid"}]}))
    with pytest.raises(ContractError) as info:
        read_loans(bad)
    assert info.value.table == "loans.json" and info.value.column == "loans[].terms" and info.value.rows == [1]


def test_auc_difference_interval_covers_the_difference_and_resamples_accounts():
    rng = np.random.default_rng(2)
    n = 600
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame({"account_id": rng.integers(0, 150, n).astype(str), "label": y,
                          "p": y * 0.3 + rng.random(n), "p_baseline": rng.random(n)})
    out = auc_difference(frame, 200, 1)
    assert out["accounts"] == frame["account_id"].nunique() and out["difference"] > 0.1
    assert out["low"] < out["difference"] < out["high"] and out["low"] > 0


@pytest.mark.slow
@needs_real_file
def test_cureflow_trains_and_scores_on_the_kiva_loans(tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "kiva"
    ingested = runner.invoke(app, ["ingest-kiva", "--data", str(DEFAULT_DATA), "--out", str(out)])
    assert ingested.exit_code == 0, ingested.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["loans"] == 1000 and manifest["converted"] == len(read_dir(out).accounts) > 500
    monkeypatch.setenv("CUREFLOW_PARAMS", str(out / "params.yaml"))
    trained = runner.invoke(app, ["train", "--data", str(out), "--out", str(tmp_path / "train"), "--no-register"])
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["fresh_n"] > 200 and "fresh_baseline_roc_auc" in metrics and "dpd_1-30_ece" in metrics
    as_of = "2007-06-01T00:00:00+00:00"
    scored = runner.invoke(app, ["score", "--data", str(out), "--model", str(tmp_path / "train" / "bundle.joblib"),
                                 "--as-of", as_of, "--out", str(tmp_path / "queue.csv"),
                                 "--decision-log", f"sqlite:///{tmp_path / 'decisions.db'}"])
    assert scored.exit_code == 0, scored.output
    queue = pd.read_csv(tmp_path / "queue.csv")
    params = load_params(out / "params.yaml")
    assert len(queue) > 20 and queue["priority"].is_monotonic_decreasing
    assert not queue["reasons"].str.contains("JPY").any() and queue["reasons"].str.contains("USD").any()
    assert params["policy"]["currency"] == "USD"
