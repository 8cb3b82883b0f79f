"""Decision logic as tables: offers, best action under costs, tiers, priority."""

from __future__ import annotations

import numpy as np
import pytest

from models.config import load_params
from models.policy import PolicyConfig, best_actions, priority, staged_offer, tiers

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


def _lift(n: int) -> np.ndarray:
    lift = np.zeros((n, 5, 4, 2))
    lift[:, 0, 2, 0] = 0.30   # phone, weekday evening, reminder
    lift[:, 1, 0, 0] = 0.20   # sms, weekday morning, reminder
    return lift


def test_best_action_weighs_gain_by_the_money_at_stake_against_cost():
    stake = np.array([40000.0, 1000.0])
    allowed = np.ones((2, 5), dtype=bool)
    channel, window, gain, value = best_actions(_lift(2), stake, allowed, np.zeros(2, dtype=int), CONFIG)
    assert (channel[0], window[0]) == (0, 2)            # 0.30 * 40000 - 400 beats 0.20 * 40000 - 15
    assert (channel[1], window[1]) == (1, 0)            # 0.30 * 1000 - 400 < 0; sms 200 - 15 > 0
    assert gain[0] == pytest.approx(0.30) and value[1] == pytest.approx(185.0)


def test_no_contact_wins_when_nothing_beats_its_cost():
    channel, window, gain, value = best_actions(_lift(1), np.array([50.0]), np.ones((1, 5), dtype=bool),
                                                np.zeros(1, dtype=int), CONFIG)
    assert channel[0] == -1 and window[0] == -1 and gain[0] == 0 and value[0] == 0


def test_a_blocked_channel_is_never_chosen():
    allowed = np.ones((1, 5), dtype=bool)
    allowed[0, 0] = False
    channel, *_ = best_actions(_lift(1), np.array([40000.0]), allowed, np.zeros(1, dtype=int), CONFIG)
    assert channel[0] == 1


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
