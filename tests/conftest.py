"""Shared fixtures: hand-made contract tables, and a small simulated portfolio with a trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from models.contract import Portfolio, validate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def account(account_id: str = "A1", **overrides) -> dict:
    """A valid accounts row (salaried, all consents, no holds), with overrides."""
    row = {
        "account_id": account_id, "opened_on": "2022-01-10", "term_months": 108, "monthly_amount": 40000.0,
        "birth_year": 1980, "employment": "salaried", "region": "Tokyo", "timezone": "Asia/Tokyo",
        "consent_phone": True, "consent_sms": True, "consent_email": True, "do_not_contact": False,
        "dispute_open": False, "legal_representative": False, "bankruptcy": False, "vulnerable": False,
    }
    row.update(overrides)
    return row


def monthly_schedule(account_id: str, months: list[str], day: int = 27, amount: float = 40000.0) -> list[dict]:
    """Instalment rows due on `day` of each 'YYYY-MM'."""
    return [{"account_id": account_id, "due_date": f"{m}-{day:02d}", "amount_due": amount} for m in months]


def portfolio(accounts: list[dict], installments: list[dict] = (), payments: list[dict] = (),
              contacts: list[dict] = ()) -> Portfolio:
    """Validate hand-made rows into a Portfolio (empty tables keep the contract's columns)."""
    from models.contract import SPEC

    def frame(name: str, rows) -> pd.DataFrame:
        rows = list(rows)
        if rows:
            return pd.DataFrame.from_records(rows)
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SPEC[name]})

    return validate({"accounts": frame("accounts", accounts), "installments": frame("installments", installments),
                     "payments": frame("payments", payments), "contacts": frame("contacts", contacts)})


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory) -> Path:
    """A small simulated portfolio (1,500 accounts, 18 months) written in the contract."""
    from pipelines.simulate import simulate, write

    out = tmp_path_factory.mktemp("sim") / "portfolio"
    write(simulate(n_accounts=1500, months=18, seed=11), out)
    return out


@pytest.fixture(scope="session")
def trained(sim_dir, tmp_path_factory):
    """A model trained on the small portfolio, registered in a throw-away MLflow SQLite store."""
    from models.config import load_params
    from pipelines.train import run

    root = tmp_path_factory.mktemp("mlflow")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    params = load_params()
    params["cure"]["n_folds"] = 3
    params["cure"]["lgbm"]["n_estimators"] = 150
    params["train"]["quality_gate"]["min_roc_auc"] = 0.5
    params["train"]["quality_gate"]["max_ece"] = 1.0
    # the team's own rule as the baseline (policy.baseline): a call, so the queue has calls to ration
    params["policy"]["baseline"] = {"channel": "phone", "window": "weekday_evening", "offer": "instalment_plan"}
    info = run(sim_dir, root / "train", params=params, log=lambda *_: None)
    yield {"info": info, "tracking_uri": os.environ["MLFLOW_TRACKING_URI"], "root": root,
           "bundle_path": root / "train" / "bundle.joblib", "data": sim_dir}
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old
