"""Training with the business-as-usual decisions: they join the response model's training rows only where
the estimated rule overlaps; the held-out decisions the safe policy bounds on stay randomised; with nothing
usable there is no response model; the same seed gives the same model."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from models.config import load_params
from models.contract import read_dir
from models.features import FeatureConfig, feature_names, prepare
from pipelines.examples_from_logs import RULE_INPUTS, decision_examples, logged_decisions
from pipelines.train import fit_response_model

END = pd.Timestamp("2026-11-01T00:00:00+09:00")


@pytest.fixture(scope="module")
def setup(sim_dir):
    params = load_params()
    params["response"]["business_as_usual"].update(use=True, max_calibration_error=0.25)  # ~500 BAU decisions here
    config = FeatureConfig.from_params(params)
    portfolio = read_dir(sim_dir)
    decisions = decision_examples(portfolio, prepare(portfolio, config), config, params, END, business_as_usual=True)
    return params, config, portfolio, decisions


def _fit(decisions, params, config, use: bool):
    params = copy.deepcopy(params)
    params["response"]["business_as_usual"]["use"] = use
    lines: list[str] = []
    out = fit_response_model(decisions, feature_names(config), params, config, log=lines.append)
    return (*out, lines)


def test_only_randomised_decisions_are_logged_unless_asked(setup):
    params, config, portfolio, decisions = setup
    plain = logged_decisions(portfolio, config, params, END)
    assert plain["propensity"].notna().all() and not set(RULE_INPUTS) & set(plain.columns)
    bau = decisions[decisions["propensity"].isna()]
    assert len(bau) and len(decisions) == len(plain) + len(bau)
    assert set(RULE_INPUTS) <= set(decisions.columns) and (bau["channel"] != "none").all()


def test_business_as_usual_joins_training_but_never_the_holdout(setup):
    params, config, _, decisions = setup
    response, train, holdout, cut, lines = _fit(decisions, params, config, use=True)
    _, train0, holdout0, cut0, _ = _fit(decisions, params, config, use=False)
    assert cut == cut0 and len(holdout) == len(holdout0) and len(train) == len(train0)
    assert holdout["propensity"].notna().all() and train["propensity"].notna().all()  # the safe policy's data
    bau = response.business_as_usual_
    assert bau["decisions"] == (decisions["propensity"].isna()
                                & (decisions["contacted_at"] + pd.Timedelta(days=7) <= cut)).sum()
    assert bau["used"] + sum(bau["dropped"].values()) == bau["decisions"]
    assert 0 < bau["used"] < bau["decisions"]  # lease: a call or a letter where calls are allowed, else a letter
    assert any("business as usual:" in line and "used" in line for line in lines)


def test_no_response_model_when_nothing_is_usable(setup):
    params, config, _, decisions = setup
    bau_only = decisions[decisions["propensity"].isna()].reset_index(drop=True)
    response, train, holdout, _, lines = _fit(bau_only, params, config, use=True)
    assert response is None and train.empty and holdout.empty
    assert any("no response model" in line for line in lines)


def test_same_seed_same_model(setup):
    params, config, _, decisions = setup
    a = _fit(decisions, params, config, use=True)[0]
    b = _fit(decisions, params, config, use=True)[0]
    assert a.business_as_usual_ == b.business_as_usual_
    X = decisions[feature_names(config)].to_numpy(dtype=np.float64)[:200]
    np.testing.assert_array_equal(a.predict_matrix(X), b.predict_matrix(X))
