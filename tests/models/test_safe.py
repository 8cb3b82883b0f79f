"""Safe policy improvement (models.safe): the baseline unless held-out evidence says a departure pays."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from models import safe


def _logs(n: int, effect: float, seed: int = 0):
    """Randomised decisions over 3 actions (+ no contact) where action 2 pays `effect` more than the
    baseline (action 0) for the half of the customers with x = 1, and the model knows it."""
    rng = np.random.default_rng(seed)
    x = rng.random(n) < 0.5
    truth = np.column_stack([np.full(n, 100.0), np.full(n, 50.0), np.where(x, 100.0 + effect, 0.0), np.zeros(n)])
    taken = rng.integers(0, 4, n)
    reward = truth[np.arange(n), taken] + rng.normal(0, 300, n)
    value = truth.copy()  # a model that is right on average
    return value, safe.dr_matrix(value, taken, np.full(n, 0.25), reward)


def test_apply_keeps_the_baseline_unless_the_model_beats_it_by_the_margin():
    value = np.array([[100.0, 150.0, -np.inf], [100.0, 400.0, 0.0], [-np.inf, 300.0, 10.0]])
    greedy = value.argmax(axis=1)
    chosen, departed = safe.SafePolicy(baseline=0, margin=100.0).apply(value, greedy)
    assert chosen.tolist() == [0, 1, 1]  # +50 stays; +300 departs; baseline forbidden: +300 over no contact
    assert departed.tolist() == [False, True, True]
    never, _ = safe.SafePolicy(baseline=0, margin=math.inf).apply(value, greedy)
    assert never.tolist() == [0, 0, safe.NO_CONTACT]  # a forbidden baseline means no contact, never a breach


def test_dr_scores_are_the_model_plus_the_weighted_residual_on_the_logged_action():
    value = np.array([[1.0, 2.0, 0.0]])
    scores = safe.dr_matrix(value, np.array([1]), np.array([0.5]), np.array([5.0]))
    assert scores.tolist() == [[1.0, 2.0 + (5.0 - 2.0) / 0.5, 0.0]]


def test_a_real_improvement_is_found_and_noise_is_not():
    value, scores = _logs(20_000, effect=400.0)
    greedy = np.where(value[:, :-1].max(axis=1) > 0, value[:, :-1].argmax(axis=1), -1)
    margin, trials = safe.select_margin(scores, value[:, :-1], greedy, baseline=safe.SafePolicy(0), z=1.645)
    assert math.isfinite(margin) and trials and max(t["lcb"] for t in trials) > 0
    flat, flat_scores = _logs(20_000, effect=0.0, seed=1)
    noisy = flat[:, :-1] + np.random.default_rng(2).normal(0, 50, flat[:, :-1].shape)  # the model sees ghosts
    greedy = noisy.argmax(axis=1)
    margin, _ = safe.select_margin(flat_scores, noisy, greedy, baseline=safe.SafePolicy(0), z=1.645)
    assert math.isinf(margin)


def test_the_best_single_action_is_smoothed_over_channel_window_and_offer():
    actions = [(c, w, o) for c in ("phone", "sms") for w in ("am", "pm") for o in ("reminder", "plan")]
    rng = np.random.default_rng(3)
    true = np.array([300.0 if a[0] == "phone" else 0.0 for a in actions]) + np.array(
        [100.0 if a[2] == "plan" else 0.0 for a in actions])
    n = 4_000
    taken = rng.integers(0, len(actions) + 1, n)
    truth = np.column_stack([np.tile(true, (n, 1)), np.zeros(n)])
    reward = truth[np.arange(n), taken] + rng.normal(0, 2_000, n)
    scores = safe.dr_matrix(np.zeros_like(truth), taken, np.full(n, 1 / (len(actions) + 1)), reward)
    allowed = np.ones_like(truth, dtype=bool)
    best, estimates = safe.best_single(scores, allowed, safe.action_design(actions))
    assert actions[best][0] == "phone" and actions[best][2] == "plan"
    assert estimates.shape == (len(actions),)
    none, _ = safe.best_single(np.column_stack([np.full((n, len(actions)), -5.0), np.zeros(n)]), allowed)
    assert none == safe.NO_CONTACT  # nothing beats doing nothing


def test_where_the_baseline_is_forbidden_the_fallback_stands_in_in_bundles_from_before_the_ranking():
    value = np.array([[100.0, 80.0, 30.0], [-np.inf, 80.0, 30.0], [-np.inf, -np.inf, 30.0]])
    policy = safe.SafePolicy(baseline=0, margin=math.inf, fallback=1)
    chosen, departed = policy.apply(value, value.argmax(axis=1))
    assert chosen.tolist() == [0, 1, safe.NO_CONTACT] and not departed.any()


def test_where_the_rules_forbid_the_best_single_action_the_next_best_they_allow_stands_in():
    estimates = np.array([3.0, 5.0, -1.0, 4.0, 0.0])
    order = safe.ranking(estimates)
    assert order == (1, 3, 0)  # best first; actions that do not beat no contact are never a stand-in
    policy = safe.SafePolicy(baseline=order[0], ranking=order)
    allowed = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 1, 0, 1]], dtype=bool)
    value = np.where(allowed, 10.0, -np.inf)
    assert policy.base(value).tolist() == [1, 3, 0, safe.NO_CONTACT]
    prefs = policy.preferences(np.zeros(4), np.zeros(4), ("w",))
    assert prefs.shape == (4, 3) and policy.base(value, prefs).tolist() == [1, 3, 0, safe.NO_CONTACT]


def test_a_departure_no_decision_took_is_not_certified_by_the_models_own_values():
    """Positivity: the model says action 2 pays 400 more than the baseline for everyone, but no logged decision
    took it (the experiments never drew it) and it truly pays nothing. Its doubly robust score is then the
    model's value alone, whose spread is not its error: the bound must not certify it."""
    rng = np.random.default_rng(0)
    n = 2_000
    truth = np.column_stack([np.full(n, 100.0), np.full(n, 50.0), np.zeros(n), np.zeros(n)])
    value = truth.copy()
    value[:, 2] = 500.0 + rng.normal(0, 20, n)  # the model's ghost, a little different for everyone
    taken = rng.choice([0, 1, 3], n)  # action 2 never drawn
    reward = truth[np.arange(n), taken] + rng.normal(0, 300, n)
    scores = safe.dr_matrix(value, taken, np.full(n, 1 / 3), reward)
    greedy = value[:, :-1].argmax(axis=1)
    blind, _ = safe.select_margin(scores, value[:, :-1], greedy, baseline=safe.SafePolicy(0), z=1.645)
    assert math.isfinite(blind)  # what the bound alone would do
    margin, trials = safe.select_margin(scores, value[:, :-1], greedy, baseline=safe.SafePolicy(0), z=1.645,
                                        taken=taken)
    assert math.isinf(margin)
    assert trials and all(t["observed"] == 0 and t["lcb"] > 0 for t in trials)
    assert safe.lower_bound(scores, np.full(n, 2), np.zeros(n, dtype=int), 1.645, taken)["observed"] == 0


def test_observed_departures_keep_a_real_improvement():
    value, scores = _logs(20_000, effect=400.0)
    taken = np.argmax(scores != value, axis=1)  # the logged action is the one column the residual moved
    greedy = np.where(value[:, :-1].max(axis=1) > 0, value[:, :-1].argmax(axis=1), -1)
    margin, trials = safe.select_margin(scores, value[:, :-1], greedy, baseline=safe.SafePolicy(0), z=1.645,
                                        taken=taken)
    assert math.isfinite(margin) and min(t["observed"] for t in trials) >= 30


def test_the_cross_fitted_test_does_not_reward_the_luckiest_of_forty_equal_actions():
    """The winner's curse: where no action beats the current one, the best of 40 estimates judged on the
    decisions it was picked on looks better than the current action; judged fold by fold, it does not."""
    actions, n, in_sample, honest = 40, 2_000, [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        taken = rng.integers(0, actions + 1, n)
        reward = rng.normal(0, 1.0, n)  # every action, and no contact, is worth the same
        scores = safe.dr_matrix(np.zeros((n, actions + 1)), taken, np.full(n, 1 / (actions + 1)), reward)
        allowed = np.ones((n, actions + 1), dtype=bool)
        value = np.zeros((n, actions))
        current = np.zeros(n, dtype=np.int64)  # the team's rule: action 0 for everyone
        _, means = safe.best_single(scores, allowed)
        picked = safe.SafePolicy(ranking=safe.ranking(means)).base(value)
        in_sample.append(safe.lower_bound(scores, picked, current, 0.0)["improvement"])
        honest.append(safe.honest_improvement(scores, allowed, None, current, value, np.arange(n) % 2, 0.0,
                                              taken)["improvement"])
    in_sample, honest = np.array(in_sample), np.array(honest)
    assert (in_sample > 0).mean() >= 0.9  # the luckiest action nearly always looks better on its own data
    assert abs(honest.mean()) < 2.5 * honest.std(ddof=1) / np.sqrt(len(honest))  # cross-fitted: no bias
    assert in_sample.mean() > honest.mean() + 3 * honest.std(ddof=1) / np.sqrt(len(honest))


def test_a_departure_the_log_could_take_for_few_decisions_is_read_on_outcomes_not_the_model():
    """Positivity, partly: the model says action 2 pays 400 more than the baseline for everyone; the
    experiments could draw it only for one decision in ten (its arms elsewhere did not hold it), and it truly
    pays nothing. Enough decisions took it to pass the observed count, so on doubly robust scores the other
    nine in ten, which read the model's value alone, certify the ghost; read on outcomes, they count as no
    better than no contact, and nothing is certified."""
    rng = np.random.default_rng(1)
    n = 12_000
    truth = np.column_stack([np.full(n, 100.0), np.full(n, 50.0), np.zeros(n), np.zeros(n)])
    value = truth.copy()
    value[:, 2] = 500.0 + rng.normal(0, 20, n)
    arm = rng.random(n) < 0.1                     # where action 2 was one of the arms
    taken = np.where(arm, rng.choice([0, 1, 2, 3], n), rng.choice([0, 1, 3], n))
    propensity = np.where(arm, 1 / 4, 1 / 3)
    reward = truth[np.arange(n), taken] + rng.normal(0, 300, n)
    scores = safe.dr_matrix(value, taken, propensity, reward)
    outcomes = safe.ipw_matrix(value, taken, propensity, reward)
    greedy = value[:, :-1].argmax(axis=1)
    on_dr, trials = safe.select_margin(scores, value[:, :-1], greedy, baseline=safe.SafePolicy(0), z=1.645,
                                       taken=taken)
    assert math.isfinite(on_dr) and trials[0]["observed"] >= 30   # the ghost, certified
    margin, _ = safe.select_margin(scores, value[:, :-1], greedy, baseline=safe.SafePolicy(0), z=1.645,
                                   taken=taken, outcomes=outcomes)
    assert math.isinf(margin)


def test_read_on_outcomes_a_real_improvement_the_log_could_always_take_is_still_certified():
    value, scores = _logs(20_000, effect=400.0)
    taken = np.argmax(scores != value, axis=1)
    reward = (scores - value)[np.arange(len(value)), taken] * 0.25 + value[np.arange(len(value)), taken]
    outcomes = safe.ipw_matrix(value, taken, np.full(len(value), 0.25), reward)
    greedy = np.where(value[:, :-1].max(axis=1) > 0, value[:, :-1].argmax(axis=1), -1)
    margin, trials = safe.select_margin(scores, value[:, :-1], greedy, baseline=safe.SafePolicy(0), z=1.645,
                                        taken=taken, outcomes=outcomes)
    assert math.isfinite(margin) and max(t["lcb"] for t in trials) > 0


def test_a_few_rare_draws_do_not_count_as_many_observed_departures():
    """49 decisions took the departure's action: 46 as a challenger served to a fifth of the accounts, 3 as one
    arm of a rare experiment (p = 0.004, weight 250) whose customers happened to pay. The rare three make the
    mean and its bound; counted by weight the observed departures are far fewer than 30, so no margin."""
    n = 800
    value = np.column_stack([np.full(n, 100.0), np.full(n, 0.0), np.full(n, 300.0), np.zeros(n)])
    taken = np.zeros(n, dtype=int)
    propensity = np.full(n, 0.8)
    taken[:46], propensity[:46] = 2, 0.2
    taken[46:49], propensity[46:49] = 2, 0.004
    reward = np.where(taken == 2, 0.0, 100.0)
    reward[46:49] = 40_000.0                       # the lucky few
    scores = safe.dr_matrix(value, taken, propensity, reward)
    outcomes = safe.ipw_matrix(value, taken, propensity, reward)
    greedy = np.full(n, 2)
    test = safe.lower_bound(scores, greedy, np.zeros(n, dtype=int), 1.645, taken, outcomes, propensity)
    assert test["lcb"] > 0 and test["observed"] == 49 and test["effective"] < 10
    margin, _ = safe.select_margin(scores, value[:, :-1], greedy, safe.SafePolicy(0), 1.645, taken=taken,
                                   outcomes=outcomes, propensity=propensity)
    assert math.isinf(margin)
    even = safe.effective(scores, greedy, np.zeros(n, dtype=int), taken, np.full(n, 0.25))
    assert even == pytest.approx(49.0)             # equal chances: the count itself


def test_the_learned_baseline_is_not_judged_where_the_log_gave_it_no_chance():
    """Positivity: the model thinks action 1 pays 300 more than the team's action 0; in truth it pays 100
    less. Half of the decisions' experiments could draw it (their outcomes correct the model), the other
    half never could (there its doubly robust score is the model's opinion, which nothing corrects). Read
    everywhere, the test adopts it; read only where the log gave both actions a chance, it does not."""
    n = 20_000
    rng = np.random.default_rng(3)
    drawable = np.arange(n) % 4 < 2                               # its experiments could draw action 1
    arms = np.where(drawable, 3, 2)
    pick = rng.integers(0, 3, n) % arms
    taken = np.where(drawable, pick, np.where(pick == 1, 2, pick))  # 0, 1 or no contact (2); else 0 or 2
    truth = np.array([200.0, 100.0, 0.0])
    reward = truth[taken] + rng.normal(0, 100, n)
    value = np.tile([200.0, 500.0, 0.0], (n, 1))                  # the model's opinion
    scores = safe.dr_matrix(value, taken, 1.0 / arms, reward)
    allowed = np.ones((n, 3), dtype=bool)
    supported = np.ones((n, 3), dtype=bool)
    supported[~drawable, 1] = False
    current, fold = np.zeros(n, dtype=np.int64), np.arange(n) % 2
    everywhere = safe.honest_improvement(scores, allowed, None, current, value[:, :-1], fold, 0.0, taken)
    assert everywhere["improvement"] > 3 * everywhere["se"] > 0   # the model's opinion wins the test
    honest = safe.honest_improvement(scores, allowed, None, current, value[:, :-1], fold, 0.0, taken,
                                     1.0 / arms, supported)
    assert honest["lcb"] <= 0.0                                    # no improvement where it could be seen
    _, means = safe.best_single(scores, allowed, None, supported)
    assert means[1] < means[0]                                     # and the pick is read there too
    assert means[1] == pytest.approx(100.0, abs=15.0)


def test_where_the_pick_had_no_chance_the_decisions_are_left_out_and_counted():
    n = 1_000
    taken = np.arange(n) % 3
    scores = safe.dr_matrix(np.tile([0.0, 50.0, 0.0], (n, 1)), taken, np.full(n, 1 / 3),
                            np.where(taken == 1, 60.0, 0.0))        # action 1 pays, and is the pick
    allowed = np.ones((n, 3), dtype=bool)
    supported = np.ones((n, 3), dtype=bool)
    supported[:100, 1] = False
    test = safe.honest_improvement(scores, allowed, None, np.zeros(n, dtype=np.int64), np.zeros((n, 2)),
                                   np.arange(n) % 2, 0.0, taken, np.full(n, 1 / 3), supported)
    assert test["unsupported"] == 100
    assert test["observed"] == int((taken[100:] == 1).sum())


def test_reach_ratios_read_each_levels_reach_of_a_channel_and_time_shrunk_toward_everyones():
    actions = [("sms", "pm", "reminder"), ("sms", "pm", "plan"), ("phone", "am", "reminder")]
    rng = np.random.default_rng(7)
    n = 6_000
    segment = rng.integers(0, 2, n).astype(float)
    taken = rng.integers(0, len(actions) + 1, n)  # the last: no contact, never an attempt
    reach = np.where(taken == 2, 0.5, np.where(segment == 0, 0.8, 0.1))  # texts reach level 0, not level 1
    reached = np.where(taken < len(actions), rng.random(n) < reach, np.nan)
    segment[:10] = np.nan  # a missing level counts for everyone's rate only
    levels, ratios = safe.reach_ratios(segment, taken, reached, actions, prior=20.0)
    assert levels.tolist() == [0.0, 1.0]
    overall = np.nanmean(reached[taken <= 1])
    assert ratios[0, 0] == pytest.approx(0.8 / overall, rel=0.1)
    assert ratios[1, 0] == pytest.approx(0.1 / overall, rel=0.2)
    assert ratios[:, 0].tolist() == ratios[:, 1].tolist()  # the offer does not change who a text reaches
    assert ratios[:, 2] == pytest.approx([1.0, 1.0], abs=0.1)  # calls reach both alike
    # a level with a handful of attempts reads near everyone's rate: shrunk, not its own luck
    few = np.where(np.arange(n) < 5, 2.0, segment)
    _, shrunk = safe.reach_ratios(few, taken, np.where(np.arange(n) < 5, 0.0, reached), actions, prior=20.0)
    assert 0.6 < shrunk[-1, 0] < 1.0


def test_each_level_gets_its_own_ranking_and_any_other_level_the_one_for_everyone():
    policy = safe.SafePolicy(ranking=(0, 1, 2), segment_by="employment", segments=((1.0, (2, 0)), (3.0, (1,))))
    prefs = policy.preferences_of({"days_past_due": np.ones(4), "arrears_instalments": np.ones(4),
                                   "employment": np.array([1.0, 3.0, 5.0, np.nan])}, ("am", "pm"))
    assert prefs.tolist() == [[2, 0, -1], [1, -1, -1], [0, 1, 2], [0, 1, 2]]
    value = np.array([[0.0, 0.0, -np.inf], [-np.inf, -np.inf, 0.0], [0.0, 0.0, 0.0], [-np.inf, 0.0, 0.0]])
    assert policy.base(value, prefs).tolist() == [0, safe.NO_CONTACT, 0, 1]  # the first its rules allow
    # without the segment's column (an older caller) everyone gets the one ranking
    assert policy.preferences(np.ones(2), np.ones(2), ("am", "pm")).tolist() == [[0, 1, 2], [0, 1, 2]]


def _channel_logs(n: int, seed: int):
    """Uniformly randomised decisions over two channels of four actions each (+ no contact, column 8): every
    action of channel A pays 0.30 of the arrears, of channel B 0.20, no contact 0.10; the model has channel B
    and no contact right but thinks A's actions pay 0.20 too (its error is the same across A's actions)."""
    rng = np.random.default_rng(seed)
    k = 9
    taken = rng.integers(0, k, n)
    truth = np.array([0.30] * 4 + [0.20] * 4 + [0.10])
    paid = (rng.random(n) < truth[taken]).astype(float)
    model = np.tile(np.array([0.20] * 4 + [0.20] * 4 + [0.10]), (n, 1))
    value = model - model[:, -1:]                       # the model's shares against no contact
    reward = paid - model[:, -1]                        # as dr_matrix reads it: net of the no-contact chance
    scores = safe.dr_matrix(value, taken, np.full(n, 1.0 / k), reward)
    residual = paid - model[np.arange(n), taken]
    group = np.array([0] * 4 + [1] * 4 + [2])
    return value, scores, taken, safe.Pooled(value, residual, taken, group)


def test_the_pooled_test_reads_a_channels_error_on_every_decision_that_took_the_channel():
    """Channel A beats the team's action (B's first) by 0.10 of the arrears; the model does not see it. Read
    decision by decision, the test rests on the ~1 in 9 decisions that drew exactly A's first action; pooled,
    on the model's difference plus A's and B's mean residuals, read on every decision of either channel."""
    n = 3_000
    value, scores, taken, pooled = _channel_logs(n, seed=11)
    chosen, current = np.zeros(n, dtype=np.int64), np.full(n, 4, dtype=np.int64)
    fold = np.arange(n) % 2
    keep = np.ones(n, dtype=bool)
    by_pool = safe.pooled_bound(pooled, chosen, current, fold, keep, 1.645)
    assert by_pool["improvement"] == pytest.approx(0.10, abs=0.03)
    assert by_pool["lcb"] > 0
    by_decision = safe.lower_bound(scores, chosen, current, 1.645)
    assert by_pool["se"] < by_decision["se"] / 2         # four actions' decisions instead of one's
    # through honest_improvement: the same pick and counts, the pooled reading, the other kept beside it
    allowed = np.ones((n, 9), dtype=bool)
    out = safe.honest_improvement(scores, allowed, None, current, value[:, :-1], fold, 0.0, taken,
                                  np.full(n, 1 / 9), None, pooled)
    assert out["read"] == "pooled" and out["decision_by_decision"]["se"] > out["se"]
    same_pick = dataclasses.replace(pooled, pick=False)  # the counts are the decision-by-decision test's
    assert safe.honest_improvement(scores, allowed, None, current, value[:, :-1], fold, 0.0, taken,
                                   np.full(n, 1 / 9), None, same_pick)["observed"] == safe.honest_improvement(
        scores, allowed, None, current, value[:, :-1], fold, 0.0, taken, np.full(n, 1 / 9))["observed"]


def test_the_pooled_pick_reads_each_channels_residual_and_finds_the_channel_the_model_misjudges():
    """The model thinks channels A and B pay alike; A's residuals say it pays 0.10 more. The pooled scores'
    means are the truth against no contact (A 0.20, B 0.10), and the pick is in channel A on every seed, each
    fold's pick read on the other fold's residuals."""
    value, scores, taken, pooled = _channel_logs(20_000, seed=3)
    means = safe.pooled_scores(pooled, np.ones(20_000, dtype=bool)).mean(axis=0)
    assert means[:4] == pytest.approx([0.20] * 4, abs=0.015) and means[4:8] == pytest.approx([0.10] * 4, abs=0.015)
    assert means[8] == pytest.approx(0.0, abs=0.01)
    n, allowed = 600, np.ones((600, 9), dtype=bool)
    for seed in range(20):
        value, scores, taken, pooled = _channel_logs(n, seed=100 + seed)
        single, _ = safe.best_single(safe.pooled_scores(pooled, np.ones(n, dtype=bool)), allowed)
        assert single < 4
        out = safe.honest_improvement(scores, allowed, None, np.full(n, 4), value[:, :-1], np.arange(n) % 2, 0.0,
                                      taken, np.full(n, 1 / 9), None, pooled)
        assert out["improvement"] > 0


def test_the_pooled_test_never_certifies_a_channel_no_decision_took():
    """Where no decision took an action of the chosen channel, nothing corrects the model there: the standard
    error is infinite and the bound says nothing, whatever the model thinks of the channel."""
    n = 2_000
    value, _, taken, pooled = _channel_logs(n, seed=12)
    taken = np.where(taken < 4, 8, taken)                # channel A never drawn
    optimistic = value.copy()
    optimistic[:, :4] += 0.5                             # and the model thinks it pays far more
    pooled = safe.Pooled(optimistic, pooled.residual, taken, pooled.group)
    out = safe.pooled_bound(pooled, np.zeros(n, dtype=np.int64), np.full(n, 4, dtype=np.int64),
                            np.arange(n) % 2, np.ones(n, dtype=bool), 0.0)
    assert math.isinf(out["se"]) and out["lcb"] == -math.inf
