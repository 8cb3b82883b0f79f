"""The Hillstrom e-mail experiment: reading it, the response learner without observed reach, the uplift
baselines and metrics, and the benchmark's scoring of one held-out half."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.config import load_params
from models.contract import ContractError
from models.response import ResponseModel
from pipelines.realdata import (
    HILLSTROM_DATA,
    LEARNERS,
    ArmSpace,
    class_transformation,
    policy_terms,
    qini_auc,
    qini_curve,
    read_hillstrom,
    score_seed,
    summary,
    two_model,
    uplift_auc,
)

HEADER = "recency,history_segment,history,mens,womens,zip_code,newbie,channel,segment,visit,conversion,spend"
ROWS = [
    "10,2) $100 - $200,142.44,1,0,Surburban,0,Phone,Womens E-Mail,0,0,0",
    "6,3) $200 - $350,329.08,1,1,Rural,1,Web,No E-Mail,0,0,0",
    "7,2) $100 - $200,180.65,0,1,Surburban,1,Web,Womens E-Mail,1,0,0",
    "2,1) $0 - $100,45.34,1,0,Urban,0,Multichannel,Mens E-Mail,1,1,29.99",
]
LGBM = {"learning_rate": 0.3, "n_estimators": 150, "num_leaves": 7, "min_child_samples": 50}


def _csv(tmp_path: Path, rows=ROWS) -> Path:
    path = tmp_path / "hillstrom.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_reads_segments_as_arms_and_zip_codes_as_the_file_spells_them(tmp_path):
    frame = read_hillstrom(_csv(tmp_path))
    assert frame["arm"].tolist() == [1, 2, 1, 0]  # men's e-mail 0, women's 1, none 2
    assert frame["zip_code"].tolist() == [1, 2, 1, 0]  # "Surburban" is the file's spelling of suburban
    assert frame["visit"].tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(("row", "column"), [
    ("2,1) $0 - $100,45.34,1,0,Urban,0,Web,Kids E-Mail,1,0,0", "segment"),
    ("2,1) $0 - $100,45.34,1,0,Urban,0,Web,Mens E-Mail,2,0,0", "visit"),
    ("13,1) $0 - $100,45.34,1,0,Urban,0,Web,Mens E-Mail,1,0,0", "recency"),
])
def test_rejects_bad_values_naming_the_column_and_row(tmp_path, row, column):
    with pytest.raises(ContractError) as err:
        read_hillstrom(_csv(tmp_path, [*ROWS, row]))
    assert err.value.column == column and err.value.rows == [4]


def test_qini_curve_counts_treated_responders_against_scaled_control_responders():
    x, q = qini_curve(np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0]), np.array([4.0, 3.0, 2.0, 1.0]))
    assert x.tolist() == [0, 1, 2, 3, 4]
    assert q.tolist() == [0, 1, 1, -1, 0]  # at 3 rows: 1 treated responder - 1 control responder x 2/1


def test_uplift_scores_are_zero_for_no_ranking_one_for_the_perfect_and_negative_reversed():
    rng = np.random.default_rng(0)
    treated = rng.random(4000) < 0.5
    segment = rng.random(4000) < 0.5
    y = (rng.random(4000) < 0.1 + 0.3 * (treated & segment)).astype(int)
    flat = np.zeros(4000)
    assert qini_auc(y, treated, flat) == pytest.approx(0.0, abs=1e-12)
    assert uplift_auc(y, treated, flat) == pytest.approx(0.0, abs=1e-12)
    assert qini_auc(y, treated, y * treated - y * (1 - treated)) == pytest.approx(1.0)
    assert qini_auc(y, treated, segment.astype(float)) > 0.2
    assert qini_auc(y, treated, -segment.astype(float)) < -0.2
    assert uplift_auc(y, treated, segment.astype(float)) > 0.1


def _experiment(n: int = 30000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Three randomised arms; segment 0 visits more after e-mail 0, segment 1 after e-mail 1."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"segment": rng.integers(0, 2, n).astype(float), "noise": rng.normal(size=n)})
    arm = rng.integers(0, 3, n)
    p = 0.1 + 0.2 * (arm == X["segment"].to_numpy())
    return X, arm, (rng.random(n) < p).astype(int)


def test_response_model_without_observed_reach_learns_which_email_moves_whom():
    X, arm, y = _experiment()
    model = ResponseModel(LGBM, ArmSpace(), random_state=0).fit(X, arm, y, np.full(len(y), 1 / 3), reached=None)
    assert model.reach_ is None and model.missed_ is None
    p = model.predict_matrix(np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert p.shape == (2, 3)
    assert np.argmax(p, axis=1).tolist() == [0, 1]
    assert p[0, 0] - p[0, 2] == pytest.approx(0.2, abs=0.04)
    assert p[1, 0] - p[1, 2] == pytest.approx(0.0, abs=0.04)


def test_response_model_without_reach_still_needs_hold_outs():
    X, arm, y = _experiment(3000)
    arm[arm == 2] = 0
    arm[:10] = 2
    with pytest.raises(ValueError, match="hold-outs"):
        ResponseModel(LGBM, ArmSpace(), random_state=0).fit(X, arm, y, np.full(len(y), 1 / 3), reached=None)


def test_baselines_recover_the_sign_of_each_emails_uplift():
    X, arm, y = _experiment()
    grid = pd.DataFrame({"segment": [0.0, 1.0], "noise": [0.0, 0.0]})
    p = two_model(X, arm, y, grid, LGBM, 0, ())
    uplift = class_transformation(X, arm, y, grid, LGBM, 0, ())
    assert p[0, 0] - p[0, 2] > 0.1 and p[1, 1] - p[1, 2] > 0.1
    assert uplift[0, 0] > 0.1 and abs(uplift[0, 1]) < 0.05 and uplift[1, 1] > 0.1


def test_policy_terms_weight_the_rows_where_the_policy_agrees_with_the_randomisation():
    terms = policy_terms(np.array([1, 0, 1, 1]), np.array([0, 1, 2, 1]), np.array([0.5, 0.25, 0.25]),
                         np.array([0, 0, 2, 0]))
    assert terms.tolist() == [2.0, 0.0, 4.0, 0.0]


def test_corrected_interval_of_overlapping_halves_is_wider_than_students():
    values = [0.01, 0.02, 0.0, 0.015, 0.005]
    plain, corrected = summary(values), summary(values, test_train_ratio=1.0)
    assert corrected.ci[0] < plain.ci[0] < plain.mean < plain.ci[1] < corrected.ci[1]
    assert plain.excludes_zero and not corrected.excludes_zero


@pytest.mark.skipif(not HILLSTROM_DATA.exists(), reason="../shared/data holds no Hillstrom file")
def test_one_held_out_half_of_the_real_file_scores_every_learner():
    frame = read_hillstrom()
    assert len(frame) == 64000 and np.bincount(frame["arm"]).tolist() == [21307, 21387, 21306]
    sample = frame.sample(12000, random_state=1).reset_index(drop=True)
    propensity = np.bincount(frame["arm"]) / len(frame)
    out = score_seed(sample, propensity, load_params(), seed=11)
    assert np.isfinite(list(out.values())).all()
    for name in LEARNERS:
        shares = [out[f"{name}|share|{label}"] for label in ("men's", "women's", "none")]
        assert sum(shares) == pytest.approx(1.0)
        assert out[f"{name}|value|"] > out["no e-mail|value|"] + 0.03  # e-mails raise visits by 4 to 8 points
