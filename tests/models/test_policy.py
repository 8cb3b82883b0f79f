"""Decision logic as tables: offers, best action under costs, tiers, priority."""

from __future__ import annotations

import numpy as np
import pytest

from models.config import load_params
from models.policy import (
    PolicyConfig,
    arm_offers_allowed,
    call_rank,
    capacity_keep,
    choose,
    final_offer,
    marginal_call_value,
    parse_capacity,
    priority,
    staged_offer,
    tiers,
)

CONFIG = PolicyConfig.from_params(load_params()["policy"])


@pytest.mark.parametrize(("arrears", "dpd", "broken", "vulnerable", "expected"), [
    (1.0, 10, 0, False, "reminder"),
    (2.0, 40, 0, False, "instalment_plan"),
    (3.0, 95, 0, False, "settlement"),
    (5.0, 150, 3, False, "legal_review"),
    (5.0, 150, 0, False, "settlement"),      # legal review only after failed plans
    (1.0, 10, 0, True, "hardship_referral"),
    (5.0, 150, 3, True, "hardship_referral"),
])
def test_staged_offer_escalates_in_order(arrears, dpd, broken, vulnerable, expected):
    offer = staged_offer(np.array([arrears]), np.array([dpd]), np.array([broken]), np.array([vulnerable]), CONFIG)
    assert offer[0] == expected


def _gain(n: int) -> np.ndarray:
    gain = np.zeros((n, 5, 4, 2))
    gain[:, 0, 2, 0] = 0.30   # phone, weekday evening, reminder
    gain[:, 1, 0, 0] = 0.20   # sms, weekday morning, reminder
    gain[:, 1, 0, 1] = 0.25   # sms, weekday morning, plan
    return gain


def _choose(gain, stake, channel_ok=None, arm_ok=None, eps=0.0, u=None, v=None):
    n = len(stake)
    channel_ok = np.ones((n, 5), dtype=bool) if channel_ok is None else channel_ok
    arm_ok = np.ones((n, 2), dtype=bool) if arm_ok is None else arm_ok
    u = np.ones(n) if u is None else u
    v = np.zeros(n) if v is None else v
    return choose(gain, np.asarray(stake, dtype=float), channel_ok, arm_ok, CONFIG, u, v, eps)


def test_best_action_weighs_gain_by_the_money_at_stake_against_cost():
    c = _choose(_gain(2), [40000.0, 1000.0])
    assert (c.channel[0], c.window[0], c.arm[0]) == (0, 2, 0)   # 0.30 * 40000 - 400 beats 0.25 * 40000 - 15
    assert (c.channel[1], c.window[1], c.arm[1]) == (1, 0, 1)   # a call does not pay; the sms plan does
    assert c.gain[0] == pytest.approx(0.30) and c.value[1] == pytest.approx(235.0)


def test_no_contact_wins_when_nothing_beats_its_cost():
    c = _choose(_gain(1), [50.0])
    assert c.channel[0] == -1 and c.window[0] == -1 and c.gain[0] == 0 and c.value[0] == 0


def test_a_blocked_channel_or_offer_is_never_chosen():
    channel_ok = np.ones((1, 5), dtype=bool)
    channel_ok[0, 0] = False
    arm_ok = np.array([[True, False]])
    c = _choose(_gain(1), [40000.0], channel_ok, arm_ok)
    assert (c.channel[0], c.arm[0]) == (1, 0)


def test_alternative_is_the_best_action_without_a_call():
    c = _choose(_gain(1), [40000.0])
    alt_channel, _, alt_arm, alt_gain, alt_value = c.alt
    assert (alt_channel[0], alt_arm[0]) == (1, 1) and alt_value[0] == pytest.approx(0.25 * 40000 - 15)


def test_an_experiment_draws_among_the_served_action_its_variants_and_the_hold_out():
    channel_ok = np.zeros((4, 5), dtype=bool)
    channel_ok[:, 1] = True                      # only sms: the served action is sms, weekday morning, plan
    c = _choose(_gain(4), [40000.0] * 4, channel_ok, eps=0.1, u=np.array([0.05, 0.05, 0.05, 0.5]),
                v=np.array([0.0, 0.25, 0.99, 0.0]))
    # arms: itself, 3 other windows, the other offer, the hold-out (no other channel is allowed): k = 6
    assert c.explored.tolist() == [True, True, True, False]
    assert (c.channel[0], c.window[0], c.arm[0]) == (1, 0, 1)   # drew the served action itself
    assert (c.channel[1], c.window[1], c.arm[1]) == (1, 1, 1)   # one factor changed: the window
    assert c.channel[2] == -1                                    # the last arm is the hold-out
    assert c.propensity[0] == pytest.approx(0.9 + 0.1 / 6)      # served, and could also have been drawn
    assert c.propensity[1] == pytest.approx(0.1 / 6)
    assert c.propensity[2] == pytest.approx(0.1 / 6)
    assert c.propensity[3] == pytest.approx(0.9 + 0.1 / 6)


def test_experiment_arms_change_one_factor_and_never_add_a_call():
    from models.policy import action_values, designed_arms
    n = 1
    value = action_values(_gain(n), np.array([40000.0]), np.ones((n, 5), bool), np.ones((n, 2), bool), CONFIG)
    served = np.array([(1 * 4 + 2) * 2 + 0])     # sms, weekday evening, reminder
    arms = designed_arms(served, value, CONFIG)[0]
    arms = arms[arms != -2]
    channel, rest = np.divmod(np.maximum(arms, 0), 8)
    window, arm = np.divmod(rest, 2)
    changed = ((channel != 1).astype(int) + (window != 2) + (arm != 0))[arms >= 0]
    assert sorted(changed.tolist()) == [0] + [1] * (len(changed) - 1)   # the served action, then variants
    assert 0 not in channel[arms >= 0]                                   # phone is not in try_channels
    assert -1 in arms and len(arms) == 1 + 3 + 3 + 1 + 1                 # 3 channels, 3 windows, offer, hold-out


def test_without_exploration_every_propensity_is_one():
    c = _choose(_gain(4), [40000.0, 100.0, 5000.0, 0.0])
    assert np.all(c.propensity == 1.0) and not c.explored.any()


def test_capacity_keeps_the_calls_that_add_most_over_the_alternative():
    is_call = np.array([True, True, True, False])
    value = np.array([5000.0, 9000.0, 3000.0, 100.0])
    alt = np.array([4000.0, 1000.0, 0.0, 0.0])
    priority = np.array([90000.0, 10000.0, 20000.0, 50000.0])
    keep = capacity_keep(is_call, call_rank(value, alt, priority, trusted=True), 2)
    assert keep.tolist() == [False, True, True, False]         # adds 8000 and 3000; the first adds only 1000
    assert capacity_keep(is_call, value - alt, None).tolist() == is_call.tolist()
    by_stake = capacity_keep(is_call, call_rank(value, alt, priority, trusted=False), 2)
    assert by_stake.tolist() == [True, False, True, False]     # untrusted values: the biggest stakes get the calls
    assert marginal_call_value(is_call, value, alt, 2, calls_per_hour=1) == pytest.approx(1000.0)
    assert marginal_call_value(is_call, value, alt, None, calls_per_hour=12) == 0.0


@pytest.mark.parametrize(("text", "expected"), [("unlimited", None), (None, None), ("150", 150), (0, 0)])
def test_phone_capacity_reads_unlimited_or_a_count(text, expected):
    assert parse_capacity(text) == expected


@pytest.mark.parametrize("bad", [-1, "-1", "abc", "1.5", 2.5, "", "١٢"])
def test_phone_capacity_rejects_anything_but_a_whole_count_naming_the_option(bad):
    with pytest.raises(ValueError, match=r"--phone-capacity.*whole number >= 0 or 'unlimited'"):
        parse_capacity(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "often", None])
def test_an_exploration_rate_outside_0_1_is_refused_by_the_params_and_by_scoring(bad):
    from models.policy import PolicyConfig, explore_rate

    with pytest.raises(ValueError, match=r"exploration rate \(--explore, params policy.explore\) must be in \[0, 1\]"):
        explore_rate(bad)
    if bad is not None:
        params = {"costs": {}, "tiers": {"call_today_min_value": 0}, "explore": bad, "offers": {
            "instalment_plan_min_arrears": 0, "settlement_min_days_past_due": 0, "legal_review_min_days_past_due": 0}}
        with pytest.raises(ValueError, match="exploration rate"):
            PolicyConfig.from_params(params)
    assert explore_rate(0) == 0.0 and explore_rate("0.05") == 0.05 and explore_rate(1) == 1.0


def test_reminder_stage_may_take_a_plan_but_later_stages_only_arrangements():
    staged = np.array(["reminder", "instalment_plan", "hardship_referral"], dtype=object)
    rule_ok = np.ones((3, 5), dtype=bool)
    rule_ok[2, 0] = False                                      # vulnerable: no reminder
    allowed = arm_offers_allowed(staged, rule_ok)
    assert allowed.tolist() == [[True, True], [False, True], [False, True]]
    assert list(final_offer(staged, np.array([1, 1, 1]))) == ["instalment_plan", "instalment_plan",
                                                               "hardship_referral"]


def test_holds_and_human_review_outrank_contact_tiers():
    channel = np.array(["phone", "phone", "sms", "none", "phone", "none"], dtype=object)
    held = [[], [], [], ["R-CEASE"], ["R-DISPUTE"], ["R-PROMISE"]]
    human = np.array([False, False, False, False, True, False])
    suppress = np.array([False, False, False, True, True, True])
    today = np.array([True, False, True, False, True, False])
    value = np.array([10000.0, 10000.0, 100.0, 0.0, 5000.0, 0.0])
    out = tiers(channel, held, human, suppress, today, value, CONFIG)
    assert list(out) == ["call today", "call this week", "digital reminder", "hold: legal", "review by a person",
                         "hold: promise to pay"]


def test_priority_grows_with_money_at_risk():
    p = priority(np.array([0.9, 0.5, 0.5]), np.array([40000.0, 40000.0, 80000.0]), np.zeros(3))
    assert p[0] < p[1] < p[2]


def test_a_contender_is_an_experiment_arm_once_and_never_adds_a_call():
    from models.policy import action_values, designed_arms
    n = 3
    value = action_values(_gain(n), np.full(n, 40000.0), np.ones((n, 5), bool), np.ones((n, 2), bool), CONFIG)
    flat = lambda c, w, a: (c * 4 + w) * 2 + a  # noqa: E731 - channel, window, arm; 4 windows, 2 arms
    served = np.array([flat(1, 2, 0), flat(1, 2, 0), flat(0, 2, 0)])  # sms, sms, phone; weekday evening reminders
    contenders = np.array([[flat(2, 3, 1), flat(1, 2, 1)],    # e-mail on weekends with a plan: new; the other offer
                           [flat(0, 3, 1), -1],               # a call for an account served a text: not an arm
                           [flat(0, 3, 1), flat(0, 2, 0)]])   # a call for an account served a call; itself
    before = designed_arms(served, value, CONFIG)
    after = designed_arms(served, value, CONFIG, contenders)
    arms = [set(row[row != -2].tolist()) for row in after]
    assert arms[0] == set(before[0][before[0] != -2].tolist()) | {flat(2, 3, 1)}  # one new arm, no duplicate
    assert (after[0] == flat(1, 2, 1)).sum() == 1
    assert arms[1] == set(before[1][before[1] != -2].tolist())                      # no call added
    assert flat(0, 3, 1) in arms[2] and (after[2] == flat(0, 2, 0)).sum() == 1


def _champion_challenger(n: int, eps: float, u: np.ndarray, v: np.ndarray, share: float = 0.2):
    """n accounts in one state: the baseline is sms on weekday mornings with a plan, the challenger (the learned
    ranking not yet adopted) e-mail on weekends with a plan."""
    import dataclasses

    from models.safe import SafePolicy
    flat = lambda c, w, a: (c * 4 + w) * 2 + a  # noqa: E731
    base, rival = flat(1, 0, 1), flat(2, 3, 1)
    safe = SafePolicy(base, ranking=(base,), contender=(rival,))
    config = dataclasses.replace(CONFIG, challenger=share)
    c = choose(_gain(n), np.full(n, 40000.0), np.ones((n, 5), bool), np.ones((n, 2), bool), config, u, v, eps,
               safe)
    return c, (c.channel * 4 + c.window) * 2 + c.arm, base, rival


def test_the_challenger_is_served_to_its_share_and_every_propensity_is_the_chance_of_what_was_done():
    rng = np.random.default_rng(7)
    n = 40_000
    c, taken, base, rival = _champion_challenger(n, 0.1, rng.random(n), rng.random(n))
    assert c.challenged.mean() == pytest.approx(0.9 * 0.2, abs=0.01)
    assert (taken[c.challenged] == rival).all() and not (c.challenged & c.explored).any()
    assert (taken[~c.challenged & ~c.explored] == base).all()
    # the recorded propensity of each action is how often it was taken (every account is in the same state)
    for action in np.unique(taken):
        rows = taken == action
        assert np.unique(c.propensity[rows]).size == 1
        assert c.propensity[rows][0] == pytest.approx(rows.mean(), abs=0.01)
    assert c.propensity[taken == rival][0] > 0.9 * 0.2                       # the challenger is also an arm


def test_no_challenger_without_experiments_or_with_a_share_of_zero():
    n = 1000
    u, v = np.linspace(0, 1, n, endpoint=False), np.zeros(n)
    for eps, share in ((0.0, 0.2), (0.1, 0.0)):
        c, taken, base, rival = _champion_challenger(n, eps, u, v, share)
        assert not c.challenged.any()
        assert (taken[~c.explored] == base).all()


@pytest.mark.parametrize("option", ["challenger", "contenders"])
def test_an_experiment_share_is_checked_naming_the_option(option):
    for bad in (1.0, -0.1, "a fifth", True):
        params = load_params()["policy"]
        params["experiments"] = {**params["experiments"], option: bad}
        with pytest.raises(ValueError, match=f"policy.experiments.{option}"):
            PolicyConfig.from_params(params)


def test_the_recorded_distribution_is_how_often_each_action_is_taken_and_sums_to_one():
    """Every account in one state, with experiments and a challenger: the distribution the decision log keeps
    (`support_lists`) gives each action the share of the accounts that took it, and nothing else a chance."""
    from models.policy import support_lists

    rng = np.random.default_rng(11)
    n = 40_000
    c, taken, base, rival = _champion_challenger(n, 0.1, rng.random(n), rng.random(n))
    taken = np.where(c.channel < 0, -1, taken)                           # no contact
    windows = ("weekday_morning", "weekday_afternoon", "weekday_evening", "weekend")
    dist = support_lists(c.support, windows)
    assert dist[0] == dist[-1]                                           # the same state, the same distribution
    assert sum(p for *_, p in dist[0]) == pytest.approx(1.0, abs=1e-5)
    chance = {(ch, w, o): p for ch, w, o, p in dist[0]}
    names = {(ch * 4 + w) * 2 + a: (("phone", "sms", "email", "letter", "ivr")[ch], windows[w],
                                    ("reminder", "instalment_plan")[a])
             for ch in range(5) for w in range(4) for a in range(2)} | {-1: ("none", "none", "none")}
    seen = {names[a]: (taken == a).mean() for a in np.unique(taken)}
    assert set(seen) == set(chance)                                      # no action taken without a chance
    for action, share in seen.items():
        assert chance[action] == pytest.approx(share, abs=0.01)
    for i in range(50):                                                  # the recorded propensity is its chance
        assert c.propensity[i] == pytest.approx(chance[names[taken[i]]], abs=1e-6)


def test_without_experiments_the_distribution_is_the_served_action_alone():
    from models.policy import support_lists

    c = _choose(_gain(2), [40000.0, 1000.0])
    dist = support_lists(c.support, ("weekday_morning", "weekday_afternoon", "weekday_evening", "weekend"))
    assert [len(d) for d in dist] == [1, 1] and all(d[0][3] == 1.0 for d in dist)
    assert dist[0][0][:3] == ["phone", "weekday_evening", "reminder"]


def test_a_call_the_capacity_moves_gives_every_call_chance_to_the_action_done_instead():
    from models.policy import capacity_moved, chance_of

    flat = lambda ch, w, a: (ch * 4 + w) * 2 + a  # noqa: E731
    acts = np.array([[flat(0, 2, 0), flat(0, 1, 0), flat(1, 2, 0), -1]])
    chance = np.array([[0.9, 0.05, 0.03, 0.02]])
    alt = (np.array([1]), np.array([2]), np.array([0]))                  # sms on weekday evenings, a reminder
    moved = capacity_moved((acts, chance), alt, 4)
    assert chance_of(moved, alt, 4)[0] == pytest.approx(0.98)
    assert chance_of(moved, (np.array([0]), np.array([2]), np.array([0])), 4)[0] == 0.0   # no call is left
    assert chance_of(moved, (np.array([-1]), np.array([-1]), np.array([-1])), 4)[0] == pytest.approx(0.02)


def test_arm_chances_give_the_contenders_their_share_and_every_arm_alike_without_one():
    from models.policy import arm_chances

    arms = np.array([[4, 8, 12, 20, -2, -1],     # served, two variants, one contender (the other is no arm), hold-out
                     [4, 8, 12, -2, -2, -1],     # no contender arm: every arm alike
                     [-1, -2, -2, -2, -2, -2]])  # served no contact: no experiment
    contender = np.tile([False, False, False, True, True, False], (3, 1))
    q = arm_chances(arms, contender, 0.5)
    assert q.sum(axis=1) == pytest.approx(np.ones(3))
    assert q[0].tolist() == pytest.approx([0.125, 0.125, 0.125, 0.5, 0.0, 0.125])
    assert q[1].tolist() == pytest.approx([0.25, 0.25, 0.25, 0.0, 0.0, 0.25])
    assert q[2].tolist() == [1.0, 0, 0, 0, 0, 0]
    assert (arm_chances(arms, contender, None) == arm_chances(arms)).all()
    assert arm_chances(arms)[0].tolist() == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.0, 0.2])


@pytest.mark.parametrize("share", [None, 0.5, 0.8])
@pytest.mark.parametrize("window", [3, 0])  # the pick is an arm of its own, or already a one-factor variant
def test_an_experiment_draws_its_contenders_at_their_share_and_records_that_chance(share, window):
    """Every account in one state, challenger off: among the experiments the learned pick not yet adopted is
    drawn as often as `policy.experiments.contenders` says (every arm alike when null), whether it is an arm
    of its own or a variant of the served action already, and the propensity the decision log keeps for it is
    how often it was taken."""
    import dataclasses

    from models.policy import action_values, contender_arms, designed_arms
    from models.safe import SafePolicy

    rng = np.random.default_rng(5)
    n, eps = 40_000, 0.3
    flat = lambda c, w, a: (c * 4 + w) * 2 + a  # noqa: E731
    base, rival = flat(1, 0, 1), flat(2, window, 1)
    config = dataclasses.replace(CONFIG, challenger=0.0, contenders=share)
    gain = _gain(n)
    c = choose(gain, np.full(n, 40000.0), np.ones((n, 5), bool), np.ones((n, 2), bool), config, rng.random(n),
               rng.random(n), eps, SafePolicy(base, ranking=(base,), contender=(rival,)))
    taken = np.where(c.channel < 0, -1, (c.channel * 4 + c.window) * 2 + c.arm)
    value = action_values(gain[:1], np.full(1, 40000.0), np.ones((1, 5), bool), np.ones((1, 2), bool), config)
    greedy_pick = int(value.argmax())
    arms = designed_arms(np.array([base]), value, config, np.array([[rival, greedy_pick]]))[0]
    mine = contender_arms(arms[None, :], np.array([[rival, greedy_pick]]))[0]
    assert arms[mine].tolist() == [rival]                # the call the model would make is no arm
    expected = 1 / int((arms != -2).sum()) if share is None else share
    drawn = (taken[c.explored] == rival).mean()
    assert drawn == pytest.approx(expected, abs=0.015)
    assert c.propensity[taken == rival][0] == pytest.approx((taken == rival).mean(), abs=0.005)
    assert c.propensity[taken == rival][0] == pytest.approx(eps * expected, rel=1e-6)


def test_contenders_null_draws_every_arm_alike():
    params = load_params()["policy"]
    params["experiments"] = {**params["experiments"], "contenders": None}
    assert PolicyConfig.from_params(params).contenders is None


def test_contender_arms_mark_the_contenders_actions_but_never_the_served_one_or_the_hold_out():
    from models.policy import contender_arms

    arms = np.array([[4, 8, 12, 20, -1],       # served 4; 12 is a variant, 20 an arm of its own, then the hold-out
                     [4, 8, 12, -2, -1]])
    contenders = np.array([[20, 12], [4, -1]])  # the second account's contender is what it is served; no pick
    assert contender_arms(arms, contenders).tolist() == [[False, False, True, True, False], [False] * 5]
