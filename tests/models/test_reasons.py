"""Reasons a collector would say: every feature's text over its range, read back; no direction against the value."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from models import vocab
from models.config import load_params
from models.features import CATEGORICAL, FeatureConfig, feature_names
from models.reasons import DIRECTION, describe, may_be_missing, reason_text, top_reasons

NAMES = feature_names(FeatureConfig.from_params(load_params()))
SWEEP = (0.0, 0.04, 0.5, 1.0, 2.5, 12.0, 299.0, 616.545, 40000.0)
RATES = (0.0, 0.25, 0.5, 1.0)
NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)(%?)")


def _values(name: str) -> tuple[float, ...]:
    if name in CATEGORICAL:
        return tuple(float(v) for v in range(len(vocab.EMPLOYMENT if name == "employment" else
                                                     vocab.PAYMENT_METHODS)))
    return RATES if name.endswith("_rate") else SWEEP


def read_back(text: str) -> tuple[float, float] | None:
    """The first number of a text and the rounding it was written with; None for 'less than a tenth'."""
    if "less than a tenth" in text:
        return None
    match = NUMBER.search(text)
    assert match, text
    digits, percent = match.groups()
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    value = float(digits.replace(",", "")) / (100 if percent else 1)
    return value, 0.5 * 10 ** -decimals / (100 if percent else 1) + 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_every_feature_reads_in_plain_words_and_gives_its_value_back(name):
    label = name.replace("_", " ")
    for value in (*_values(name), *((math.nan,) if may_be_missing(name) else ())):
        text = describe(name, value, "JPY")
        statistic = "_" in name and (f"{label}:" in text or f"{label} not known" in text)  # the fallbacks
        assert "_" not in text and not statistic and "nan" not in text.lower() and "inf" not in text, text
        if math.isnan(value):
            continue
        if name in CATEGORICAL:
            words = (vocab.EMPLOYMENT if name == "employment" else vocab.PAYMENT_METHODS)[int(value)]
            assert words.replace("_", " ") in text, text
            continue
        got = read_back(text)
        if got is None:
            assert value < 0.1, text
        else:
            assert abs(got[0] - value) <= got[1], (text, value)


def test_the_features_the_builder_can_leave_missing_are_said_in_words():
    missing = [n for n in NAMES if may_be_missing(n)]
    assert {"age", "days_since_last_payment", "days_late_mean_12m", "timed_reach_rate"} <= set(missing)
    cure_history = 1 if load_params()["features"].get("cure_history_months") else 0  # its share of late ones
    assert len(missing) == 8 + len(load_params()["calendar"]["windows"]) + cure_history
    for name in missing:
        assert "not known" not in describe(name, math.nan) or name == "age", name


@pytest.mark.parametrize("name", sorted(set(DIRECTION) & set(NAMES)))
def test_a_reason_never_states_a_direction_its_value_contradicts(name):
    for usual in (0.0, 1.0, 20.0):
        for value in SWEEP:
            for contribution in (-0.3, 0.3):
                text = reason_text(name, value, contribution, usual)
                side = np.sign(value - usual) * DIRECTION[name]
                if text is None:
                    assert side != np.sign(contribution), (name, value, usual, contribution)
                    continue
                assert side == np.sign(contribution)
                assert ("raises" in text) == (contribution > 0) and ("lowers" in text) == (contribution < 0)
                assert ("more than the usual" in text) == (value > usual), text


def test_the_reported_contradictions_are_not_said():
    assert reason_text("days_late_max_12m", 299, 0.4, usual=10) is None
    assert reason_text("days_late_mean_12m", math.nan, -0.2, usual=3) is None
    said = reason_text("days_late_max_12m", 299, -0.4, usual=10)
    assert said == "paid up to 299 days late in the last 12 months, more than the usual 10 (lowers the chance of cure)"
    assert "instalments in arrears" not in describe("arrears_instalments", 0.0001)
    assert describe("arrears", 2.0, "USD") == "USD 2 in arrears" and "616.5" in describe("arrears", 616.545, "USD")


def test_top_reasons_pass_over_a_contradiction_for_the_next_feature():
    names = ["days_late_max_12m", "days_past_due", "age", "paid_90d_instalments"]
    values = np.array([[299.0, 45.0, 40.0, 2.0]])
    contrib = np.array([[0.9, -0.5, 0.2, 0.1, 0.0]])  # the last column is the bias, never a reason
    usual = {"days_late_max_12m": 10.0, "days_past_due": 20.0, "paid_90d_instalments": 0.5}
    (reasons,) = top_reasons(contrib, values, names, k=3, usual=usual)
    assert len(reasons) == 3 and not any("299" in r for r in reasons)
    assert reasons[0].startswith("45 days past due, more than the usual 20 (lowers")
    assert reasons[1] == "aged 40 (raises the chance of cure)"
    assert reasons[2].startswith("paid 2.0 instalments' worth in the last 90 days, more than the usual 0.5 (raises")
