"""The response model learns which action moves whom; the evaluation compares it with the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.response import ActionSpace, ResponseModel, template_offer

WINDOWS = ("weekday_morning", "weekday_afternoon", "weekday_evening", "weekend")
SPACE = ActionSpace(WINDOWS)


def _logs(n: int = 40000, seed: int = 0):
    """Randomised logs where segment 0 answers the phone in the evening and segment 1 in the morning."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 2, n).astype(float)
    action = rng.integers(0, len(SPACE.actions), n)
    channel, window, offer = (np.array([SPACE.actions[a][k] for a in action], dtype=object) for k in range(3))
    reach = np.where(channel == "phone", np.where((window == "weekday_evening") == (seg == 0), 0.7, 0.1), 0.2)
    reach = np.where(channel == "none", 0.0, reach)
    reached = rng.random(n) < reach
    p = np.where(reached, 0.6, 0.15)
    y = (rng.random(n) < p).astype(int)
    X = pd.DataFrame({"segment": seg, "noise": rng.normal(size=n)})
    return X, action, y, np.full(n, 1.0 / len(SPACE.actions)), reached


@pytest.fixture(scope="module")
def model() -> ResponseModel:
    X, action, y, prop, reached = _logs()
    params = {"n_estimators": 120, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 50}
    return ResponseModel(params, SPACE, random_state=0).fit(X, action, y, prop, reached)


def _idx(channel: str, window: str, offer: str = "reminder") -> int:
    return SPACE.actions.index((channel, window, offer))


def test_action_space_has_every_channel_window_offer_and_no_contact():
    assert len(SPACE.actions) == 5 * 4 * 2 + 1
    assert SPACE.actions[SPACE.none_index] == ("none", "none", "none")
    idx = SPACE.index(np.array(["phone", "none"]), np.array(["weekend", "x"]), np.array(["reminder", "y"]))
    assert idx.tolist() == [_idx("phone", "weekend"), SPACE.none_index]


def test_learns_that_the_best_window_depends_on_the_customer(model):
    p = model.predict_matrix(np.array([[0.0, 0.0], [1.0, 0.0]]))
    evening, morning = _idx("phone", "weekday_evening"), _idx("phone", "weekday_morning")
    assert p[0, evening] > p[0, morning] + 0.1
    assert p[1, morning] > p[1, evening] + 0.1


def test_effect_of_a_contact_is_measured_against_no_contact(model):
    p = model.predict_matrix(np.array([[0.0, 0.0]]))
    true_gain = 0.7 * (0.6 - 0.15)
    assert p[0, _idx("phone", "weekday_evening")] - p[0, SPACE.none_index] == pytest.approx(true_gain, abs=0.05)
    assert ((p >= 0) & (p <= 1)).all()


def test_refuses_to_learn_without_any_propensity():
    X, action, y, _, reached = _logs(200)
    with pytest.raises(ValueError, match="propensity"):
        ResponseModel({}, SPACE).fit(X, action, y, np.full(200, np.nan), reached)


def test_templates_name_their_offer_by_the_longest_prefix():
    offers = template_offer(pd.Series(["plan_v2", "reminder_v1", None, "instalment_plan_x", "odd"]),
                            {"plan": "instalment_plan", "reminder": "reminder", "instalment_plan": "instalment_plan"})
    assert offers.tolist() == ["instalment_plan", "reminder", None, "instalment_plan", None]


@pytest.mark.slow
def test_policy_beats_no_contact_and_never_breaks_a_rule_on_the_truth(trained):
    from models.contract import read_dir
    from models.registry import load_bundle
    from pipelines.evaluate import audit, truth_values

    bundle = load_bundle(str(trained["bundle_path"])).bundle
    portfolio = read_dir(trained["data"])
    as_of = pd.Timestamp("2026-11-01T00:00:00+09:00")
    truth = pd.read_parquet(trained["data"] / "truth" / "actions.parquet")
    result = truth_values(bundle, portfolio, truth, as_of, explore=0.0)
    assert result["violations"] == 0
    assert result["oracle"] >= result["policy"] and result["oracle"] >= result["best_single_action"]
    assert result["policy"] > 0
    assert audit(bundle.score(portfolio, as_of, explore=0.0), portfolio, as_of) == []


@pytest.mark.slow
def test_exploration_is_seeded_by_account_and_as_of(trained):
    from models.contract import read_dir
    from models.registry import load_bundle

    bundle = load_bundle(str(trained["bundle_path"])).bundle
    portfolio = read_dir(trained["data"])
    as_of = pd.Timestamp("2026-11-01T00:00:00+09:00")
    a = bundle.score(portfolio, as_of, explore=0.5)
    b = bundle.score(portfolio, as_of, explore=0.5)
    pd.testing.assert_frame_equal(a, b)
    assert ((a["propensity"] > 0) & (a["propensity"] <= 1)).all()
    greedy = bundle.score(portfolio, as_of, explore=0.0)
    assert (greedy["propensity"] == 1.0).all()
    assert (a["channel"] != greedy.set_index("account_id").loc[a["account_id"], "channel"].to_numpy()).any()


@pytest.mark.slow
def test_evaluate_command_prints_off_policy_and_truth_tables(trained, tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "evaluation.json"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "evaluate", "--data", str(trained["data"]),
                           "--model", str(trained["bundle_path"]), "--explore", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "held-out logged decisions" in done.stdout and "oracle" in done.stdout
    report = json.loads(out.read_text())
    estimators = {(r["unit"], r["estimator"]) for r in report["off_policy"]}
    assert {("payment rate", "IPS"), ("payment rate", "DR"), ("JPY per decision", "SNIPS"),
            ("JPY per decision", "logging policy")} <= estimators
    for row in report["off_policy"]:
        assert row["low"] <= row["value"] <= row["high"]
    assert report["truth"]["violations"] == 0 and report["truth"]["audit_violations"] == []


def _texts_work_unreached(n: int, seed: int, unreached_sms: float):
    """Randomised logs where an unreached SMS still raises the chance of a payment by `unreached_sms`
    (read, not answered); every other unreached attempt changes nothing."""
    X, action, _, prop, _ = _logs(n, seed)
    rng = np.random.default_rng(seed + 100)
    channel = np.array([SPACE.actions[a][0] for a in action], dtype=object)
    reached = (channel != "none") & (rng.random(n) < 0.3)
    p = np.where(reached, 0.6, np.where(channel == "sms", 0.15 + unreached_sms, 0.15))
    return X, action, (rng.random(n) < p).astype(int), prop, reached


@pytest.mark.parametrize("effect, chosen", [(0.2, "per_channel"), (0.0, "none")])
def test_whether_an_unreached_attempt_works_is_tested_on_held_out_decisions(effect, chosen):
    params = {"n_estimators": 80, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 50}
    X, action, y, prop, reached = _texts_work_unreached(30000, 1, effect)
    model = ResponseModel(params, SPACE, random_state=0, unreached="auto").fit(X, action, y, prop, reached)
    assert model.unreached_ == "none"  # until tested
    Xh, ah, yh, ph, _ = _texts_work_unreached(15000, 2, effect)
    evidence = model.choose_unreached(Xh.to_numpy(), ah, yh, ph)
    assert evidence["chosen"] == chosen == model.unreached_
    sms, email = _idx("sms", "weekday_evening"), _idx("email", "weekday_evening")
    p = model.predict_matrix(np.array([[0.0, 0.0]]))
    true_edge = 0.7 * effect  # an SMS over an e-mail: the same reach and answer, plus the unread text's effect
    assert p[0, sms] - p[0, email] == pytest.approx(true_edge, abs=0.04)
    if effect:  # the assumption "an unreached attempt changes nothing" cannot see the text's edge
        forced = model.predict_matrix(np.array([[0.0, 0.0]]), "none")
        assert abs(forced[0, sms] - forced[0, email]) < 0.04
        assert evidence["residual_by_channel"]["sms"] > 0.05 > abs(evidence["residual_by_channel"]["phone"])


def test_a_configured_structure_is_kept_without_a_test():
    params = {"n_estimators": 30, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 50}
    X, action, y, prop, reached = _texts_work_unreached(6000, 3, 0.2)
    none = ResponseModel(params, SPACE, unreached="none").fit(X, action, y, prop, reached)
    evidence = none.choose_unreached(X.to_numpy(), action, y, prop)
    assert none.missed_channel_ is None and evidence["chosen"] == "none" and "not tested" in evidence["why"]
    residual = evidence["residual_by_channel"]  # the assumption's misfit is reported without the test
    assert residual["sms"] > residual["phone"] + 0.05
    forced = ResponseModel(params, SPACE, unreached="per_channel").fit(X, action, y, prop, reached)
    assert forced.unreached_ == "per_channel" and "not tested" in forced.choose_unreached(
        X.to_numpy(), action, y, prop)["why"]
    with pytest.raises(ValueError, match="response.unreached"):
        ResponseModel(params, SPACE, unreached="sometimes")


def test_few_hold_outs_do_not_stop_the_model_when_an_unreached_attempt_changes_nothing():
    """A playbook that contacts everyone draws hold-outs only in its experiments (about one a week on a
    5,000-account book): under "none" the no-contact chance is the unreached attempts', and the gains stand."""
    X, action, y, prop, reached = _logs()
    none = np.flatnonzero(action == SPACE.none_index)
    keep = np.ones(len(y), dtype=bool)
    keep[none[10:]] = False  # 10 hold-outs left
    X, action, y, prop, reached = X[keep].reset_index(drop=True), action[keep], y[keep], prop[keep], reached[keep]
    params = {"n_estimators": 120, "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 50}
    model = ResponseModel(params, SPACE, random_state=0).fit(X, action, y, prop, reached)
    assert "unreached" in model.p0_from_ and "10 hold-outs" in model.p0_from_
    p = model.predict_matrix(np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert p[:, SPACE.none_index] == pytest.approx([0.15, 0.15], abs=0.03)
    gain = p[:, _idx("phone", "weekday_evening")] - p[:, SPACE.none_index]
    assert gain == pytest.approx([0.7 * 0.45, 0.1 * 0.45], abs=0.05)
    for unreached in ("per_channel", "auto"):  # there the gains read p0: the hold-outs are still needed
        with pytest.raises(ValueError, match="hold-outs"):
            ResponseModel(params, SPACE, random_state=0, unreached=unreached).fit(X, action, y, prop, reached)
