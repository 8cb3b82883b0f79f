"""The learned baseline (pipelines.train._learned_baseline): the best single action for everyone, with the
ranking of the others, replaces the playbook where the randomised decisions estimate it does better."""

import numpy as np
import pandas as pd

from models import safe
from models.config import load_params
from models.playbook import Playbook
from models.response import ActionSpace
from pipelines.train import _learned_baseline

WINDOWS = ("weekday_morning", "weekday_afternoon", "weekday_evening", "weekend")


def _logs(effect: float, noise: float, n: int = 6_000, seed: int = 3):
    """Uniformly randomised decisions at days past due 1-20 (the playbook's reminder step) where one action
    (sms on weekends with a plan) pays `effect` more than every other, under Gaussian noise."""
    space = ActionSpace(WINDOWS)
    k = len(space.actions)
    best = space.actions.index(("sms", "weekend", "instalment_plan"))
    rng = np.random.default_rng(seed)
    taken = rng.integers(0, k, n)
    truth = np.zeros(k)
    truth[best] = effect
    reward = truth[taken] + rng.normal(0, noise, n)
    value = np.zeros((n, k))
    scores = safe.dr_matrix(value, taken, np.full(n, 1.0 / k), reward)
    logs = pd.DataFrame({"account_id": [f"a{i % (n // 3)}" for i in range(n)],
                         "days_past_due": rng.integers(1, 20, n).astype(float), "arrears": np.full(n, 50_000.0),
                         "arrears_instalments": np.ones(n), "action": taken})
    return space, value, scores, np.ones((n, k), dtype=bool), logs, best


def test_the_best_single_action_replaces_the_playbook_where_estimated_better_and_ranks_the_others():
    params = load_params()
    space, value, scores, allowed, logs, best = _logs(effect=2_000.0, noise=3_000.0)
    book = Playbook.from_params(params["policy"]["playbook"], WINDOWS)
    playbook = safe.SafePolicy(playbook=book)
    evidence: dict = {}
    learned = _learned_baseline(playbook, value, scores, allowed, logs, space, 0.0, evidence)
    assert learned.playbook is None and learned.baseline == best and learned.ranking[0] == best
    test = evidence["best_single_vs_configured"]
    assert test["improvement"] > 0 and test["folds"] == 2 and test["unit"] == "share of the arrears"
    assert "where the rules forbid it" in evidence["baseline_text"]
    # a customer who may not get that action gets the next of the ranking the rules allow
    forbid = np.where(np.arange(len(space.actions)) == best, -np.inf, 0.0)[None, :]
    assert learned.base(forbid[:, :-1]).tolist() == [learned.ranking[1]]


def test_a_stricter_bound_keeps_the_playbook_when_the_evidence_is_thin():
    params = load_params()
    space, value, scores, allowed, logs, _ = _logs(effect=2_000.0, noise=12_000.0)
    playbook = safe.SafePolicy(playbook=Playbook.from_params(params["policy"]["playbook"], WINDOWS))
    evidence: dict = {}
    kept = _learned_baseline(playbook, value, scores, allowed, logs, space, 4.0, evidence)
    test = evidence["best_single_vs_configured"]
    assert kept.playbook is playbook.playbook and test["lcb"] <= 0 and test["z"] == 4.0
    assert kept.contender and kept.contender[0] == kept_best(evidence, space)  # tried in the experiments meanwhile


def kept_best(evidence: dict, space: ActionSpace) -> int:
    """The flat action the evidence names as the best single action."""
    words = evidence["best_single_text"]
    return next(i for i, (c, w, o) in enumerate(space.actions[:-1])
                if words == f"{c} on {w.replace('_', ' ')}s with {'an' if o[0] in 'aeiou' else 'a'} "
                             f"{o.replace('_', ' ')}")


def test_a_challenger_that_does_worse_than_the_playbook_is_retired():
    """The playbook's two steps each take the action that pays in their stage (sms reminders at 1-6 days past
    due, calls from 7 on); any single action for everyone does worse, and with the evidence clear it is no
    longer a contender (nor the challenger served to a share of the accounts)."""
    params = load_params()
    space = ActionSpace(WINDOWS)
    k, n = len(space.actions), 12_000
    sms = space.actions.index(("sms", "weekday_evening", "reminder"))
    call = space.actions.index(("phone", "weekday_evening", "reminder"))
    rng = np.random.default_rng(5)
    days = rng.integers(1, 14, n).astype(float)
    taken = rng.integers(0, k, n)
    pays = np.where(days < 7, sms, call)
    reward = np.where(taken == pays, 3_000.0, 0.0) + rng.normal(0, 1_000.0, n)
    scores = safe.dr_matrix(np.zeros((n, k)), taken, np.full(n, 1.0 / k), reward)
    logs = pd.DataFrame({"account_id": [f"a{i % (n // 3)}" for i in range(n)], "days_past_due": days,
                         "arrears": np.full(n, 50_000.0), "arrears_instalments": np.ones(n), "action": taken})
    playbook = safe.SafePolicy(playbook=Playbook.from_params(params["policy"]["playbook"], WINDOWS))
    evidence: dict = {}
    kept = _learned_baseline(playbook, np.zeros((n, k)), scores, np.ones((n, k), dtype=bool), logs, space, 0.0,
                             evidence, retire_z=1.645)
    test = evidence["best_single_vs_configured"]
    assert test["improvement"] + 1.645 * test["se"] < 0 and test["observed"] >= 30
    assert kept.playbook is playbook.playbook and kept.contender == ()
    assert evidence["challenger"].startswith("retired")
    # the same evidence under a bound no estimate can clear keeps it in trial
    evidence = {}
    trial = _learned_baseline(playbook, np.zeros((n, k)), scores, np.ones((n, k), dtype=bool), logs, space, 0.0,
                              evidence, retire_z=1e9)
    assert trial.contender and evidence["challenger"] == "in trial"
