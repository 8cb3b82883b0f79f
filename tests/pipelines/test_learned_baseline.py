"""The learned baseline (pipelines.train._learned_baseline): the best single action for everyone, with the
ranking of the others, replaces the playbook where the randomised decisions estimate it does better."""

import numpy as np
import pandas as pd
import pytest

from models import safe
from models.config import load_params
from models.playbook import Playbook
from models.response import ActionSpace
from pipelines import feedback
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
                         "arrears_instalments": np.ones(n), "action": taken, "propensity": np.full(n, 1.0 / k)})
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
                         "arrears": np.full(n, 50_000.0), "arrears_instalments": np.ones(n), "action": taken,
                         "propensity": np.full(n, 1.0 / k)})
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


def test_a_call_the_days_capacity_held_is_not_what_the_playbook_is_judged_by():
    """The playbook calls at 7 days past due, but the day's capacity keeps only the top 30% of calls and the
    rest get its next action, an sms reminder. Calls pay for the accounts they were kept for and cost more
    than they bring elsewhere; sms reminders pay a little for everyone. Served within capacity the playbook
    beats sms for everyone (1,600 against 1,000 a decision); calling everyone would not (550). Judged as if
    every call had been possible, the test adopts sms for everyone; with each decision's recorded blocks
    (`pipelines.feedback.blocked_actions`) the playbook stays."""
    params = load_params()
    space = ActionSpace(WINDOWS)
    k, n = len(space.actions), 20_000
    channel = np.array([a[0] for a in space.actions])
    sms = space.actions.index(("sms", "weekday_evening", "reminder"))
    call = space.actions.index(("phone", "weekday_evening", "reminder"))
    rng = np.random.default_rng(11)
    held = rng.random(n) >= 0.3
    served = np.where(held, sms, call)
    others = np.flatnonzero(channel != "phone")  # a call the capacity held is never made, explored or not
    explore = rng.random(n) < 0.05
    drawn = np.where(held, others[rng.integers(0, len(others), n)], rng.integers(0, k, n))
    taken = np.where(explore, drawn, served)
    arms = np.where(held, len(others), k)
    propensity = 0.95 * (taken == served) + 0.05 / arms
    reward = (np.select([taken == sms, (taken == call) & ~held, taken == call], [1_000.0, 3_000.0, -500.0], 0.0)
              + rng.normal(0, 1_000.0, n))
    logs = pd.DataFrame({"account_id": [f"a{i}" for i in range(n)], "contact_id": [f"c{i}" for i in range(n)],
                         "days_past_due": np.full(n, 10.0), "arrears": np.full(n, 50_000.0),
                         "arrears_instalments": np.ones(n), "action": taken, "propensity": propensity})
    model = np.zeros((n, k))  # a response model that knows all this
    model[:, sms] = 1_000.0
    model[:, call] = np.where(held, -500.0, 3_000.0)
    scores = safe.dr_matrix(model, taken, propensity, reward)
    playbook = safe.SafePolicy(playbook=Playbook.from_params(params["policy"]["playbook"], WINDOWS))

    def judged(allowed):
        evidence: dict = {}
        out = _learned_baseline(playbook, np.where(allowed, model, -np.inf), scores, allowed, logs, space, 0.0,
                                evidence)
        return out, evidence["best_single_vs_configured"]

    everything = np.ones((n, k), dtype=bool)
    adopted, test = judged(everything)
    assert adopted.playbook is None and adopted.baseline == sms and test["improvement"] > 0
    blocks = pd.Series([frozenset({"phone"})] * int(held.sum()), index=logs["contact_id"][held].to_numpy(),
                       dtype=object)
    allowed = everything & ~feedback.blocked_actions(blocks, logs["contact_id"], space.actions)
    kept, test = judged(allowed)
    assert kept.playbook is playbook.playbook
    assert test["improvement"] + 1.645 * test["se"] < 0  # clearly worse than the playbook served as it was


def test_no_contact_for_everyone_never_replaces_the_playbook():
    """Every contact action pays less than it costs in the estimates (a loss under noise): the learned ranking
    is empty, its test would read no contact as an improvement on the playbook, and the playbook stays."""
    params = load_params()
    space, value, scores, allowed, logs, _ = _logs(effect=0.0, noise=3_000.0)
    k = len(space.actions)
    scores = scores - 5_000.0 * (np.arange(k) < k - 1)[None, :]   # every contact action loses 5,000 a decision
    playbook = safe.SafePolicy(playbook=Playbook.from_params(params["policy"]["playbook"], WINDOWS))
    assert not safe.ranking(safe.best_single(safe.per_unit(scores, logs["arrears"].to_numpy()), allowed,
                                             safe.action_design(space.actions[:-1]))[1])
    evidence: dict = {}
    kept = _learned_baseline(playbook, value, scores, allowed, logs, space, 0.0, evidence)
    assert kept is playbook and "no contact action is estimated to pay" in evidence["challenger"]
    fixed = safe.SafePolicy(space.actions.index(("sms", "weekend", "instalment_plan")))
    assert _learned_baseline(fixed, value, scores, allowed, logs, space, 0.0, {}) is fixed


def _lifestyle_logs(differ: bool, n: int = 16_000, seed: int = 9):
    """Uniformly randomised decisions where every contact pays 3,000 when it reaches the customer and nothing
    otherwise; texts on weekday evenings reach lifestyle 0 (0.9) and calls on weekday mornings lifestyle 1
    (0.9), everything else 0.2 (with `differ` off, both reach everyone at 0.55)."""
    space = ActionSpace(WINDOWS)
    k = len(space.actions)
    rng = np.random.default_rng(seed)
    life = rng.integers(0, 2, n)
    taken = rng.integers(0, k, n)
    channel = np.array([a[0] for a in space.actions])[taken]
    window = np.array([a[1] for a in space.actions])[taken]
    text = (channel == "sms") & (window == "weekday_evening")
    call = (channel == "phone") & (window == "weekday_morning")
    mine = (text & (life == 0)) | (call & (life == 1))
    reach = np.where(mine, 0.9, 0.2) if differ else np.where(text | call, 0.55, 0.2)
    contact = taken < k - 1
    reached = contact & (rng.random(n) < reach)
    reward = 3_000.0 * reached + rng.normal(0, 1_000.0, n)
    scores = safe.dr_matrix(np.zeros((n, k)), taken, np.full(n, 1.0 / k), reward)
    logs = pd.DataFrame({"account_id": [f"a{i}" for i in range(n)], "days_past_due": np.full(n, 10.0),
                         "arrears": np.full(n, 50_000.0), "arrears_instalments": np.ones(n), "action": taken,
                         "propensity": np.full(n, 1.0 / k), "employment": life.astype(float),
                         "reached": np.where(contact, reached, np.nan)})
    return space, scores, logs


def _by_lifestyle(differ: bool, segment_by: str = "employment"):
    """The learned baseline of `_lifestyle_logs`, against the shipped playbook, by `segment_by`."""
    params = load_params()
    space, scores, logs = _lifestyle_logs(differ=differ)
    n, k = len(logs), len(space.actions)
    playbook = safe.SafePolicy(playbook=Playbook.from_params(params["policy"]["playbook"], WINDOWS))
    evidence: dict = {}
    learned = _learned_baseline(playbook, np.zeros((n, k)), scores, np.ones((n, k), dtype=bool), logs, space, 0.0,
                                evidence, segment_by=segment_by)
    return space, logs, learned, evidence


def test_a_ranking_per_lifestyle_replaces_one_for_everyone_where_reach_differs_and_the_test_says_so():
    space, logs, learned, evidence = _by_lifestyle(differ=True)
    assert learned.playbook is None and learned.segment_by == "employment"
    firsts = {level: space.actions[order[0]][:2] for level, order in learned.segments}
    assert firsts == {0.0: ("sms", "weekday_evening"), 1.0: ("phone", "weekday_morning")}
    test = evidence["by_segment"]
    assert test["adopted"] and test["vs one ranking"]["improvement"] - 2 * test["vs one ranking"]["se"] > 0
    assert "for each employment its own order" in evidence["baseline_text"]
    prefs = learned.preferences_of(logs.iloc[:4], WINDOWS)
    assert [space.actions[p[0]][:2] == firsts[life] for p, life in zip(prefs, logs["employment"][:4], strict=True)] \
        == [True] * 4
    assert test["z_against_one_ranking"] == 1.645  # held to the departures' bound against the one ranking
    # segment_by off (null in params.yaml): one ranking for everyone, as before
    _, _, one, _ = _by_lifestyle(differ=True, segment_by="")
    assert one.playbook is None and not one.segments


def test_where_every_lifestyle_is_reached_alike_one_ranking_for_everyone_stays():
    _, _, learned, evidence = _by_lifestyle(differ=False)
    assert learned.playbook is None and not learned.segments and evidence["by_segment"]["adopted"] is False


def test_logs_that_do_not_say_whether_a_contact_reached_keep_one_ranking_and_say_why():
    """A first export often has no `reached` (or no lifestyle): no ranking per lifestyle is guessed, the one
    ranking stays, and the evidence says what the logs lack."""
    params = load_params()
    space, scores, logs = _lifestyle_logs(differ=True)
    n, k = len(logs), len(space.actions)
    for missing in ("reached", "employment"):
        playbook = safe.SafePolicy(playbook=Playbook.from_params(params["policy"]["playbook"], WINDOWS))
        evidence: dict = {}
        learned = _learned_baseline(playbook, np.zeros((n, k)), scores, np.ones((n, k), dtype=bool),
                                    logs.drop(columns=missing), space, 0.0, evidence, segment_by="employment")
        assert learned.playbook is None and not learned.segments  # the one ranking, learned as before
        assert evidence["by_segment"] == {"segment_by": "employment",
                                          "why": "the logs have no employment or reach"}
        assert "its own order" not in evidence["baseline_text"]


def test_the_batch_and_the_api_serve_each_lifestyle_its_own_ranking(trained):
    """A bundle whose baseline has a ranking per lifestyle decides each overdue account by its own: its
    employment's first action the rules allow (the same `decide` serves the batch and the real-time API)."""
    import copy
    import dataclasses

    import joblib

    from models import vocab
    from models.contract import read_dir

    bundle = copy.deepcopy(joblib.load(trained["bundle_path"]))
    portfolio = read_dir(trained["data"])
    as_of = pd.Timestamp("2026-11-01T00:00:00+09:00")
    space = ActionSpace(tuple(w.name for w in bundle.feature_config.windows))
    email = space.actions.index(("email", "weekday_evening", "reminder"))
    letter = space.actions.index(("letter", "weekday_morning", "reminder"))
    rows = bundle.score(portfolio, as_of, explore=0.0)
    employment = portfolio.accounts.set_index("account_id")["employment"]
    level = employment.loc[rows["account_id"]].value_counts().index[0]  # the most common lifestyle overdue
    bundle.safe = dataclasses.replace(bundle.safe, playbook=None, baseline=email, ranking=(email, letter),
                                      margin=np.inf, segment_by="employment",
                                      segments=((float(vocab.EMPLOYMENT.index(level)), (letter, email)),))
    rows = bundle.score(portfolio, as_of, explore=0.0)
    contacted = rows[rows["channel"] != "none"]
    mine = employment.loc[contacted["account_id"]].to_numpy() == level
    assert mine.any() and (~mine).any()
    assert set(contacted["channel"][mine]) == {"letter"}  # a letter is allowed wherever any contact is
    assert "email" in set(contacted["channel"][~mine])


def test_the_learned_baseline_test_reads_pooled_residuals_by_channel_unless_told_decision_by_decision():
    from pipelines.train import LoggedValues, _pooled

    space = ActionSpace(WINDOWS)
    n, k = 40, len(space.actions)
    logs = pd.DataFrame({"arrears": np.full(n, 20_000.0), "action": np.arange(n) % k})
    value = np.full((n, k), 2_000.0)
    value[:, 0] = -np.inf                                  # forbidden: read as worth nothing
    value[:, -1] = 0.0
    logged = LoggedValues(value, value, np.isfinite(value), value, np.full(n, 0.25))
    pooled = _pooled(logged, logs, space, "channel")
    assert pooled.value[0, 0] == 0.0 and pooled.value[0, 1] == pytest.approx(0.1)
    channels = [a[0] for a in space.actions]
    assert all((pooled.group == pooled.group[i]).sum() == channels.count(c) for i, c in enumerate(channels))
    assert pooled.group[-1] != pooled.group[0]             # no contact is a group of its own
    by_offer = _pooled(logged, logs, space, "channel_offer")
    pairs = [(a[0], a[2]) for a in space.actions]
    assert all((by_offer.group == by_offer.group[i]).sum() == pairs.count(p) for i, p in enumerate(pairs))
    assert _pooled(logged, logs, space, "decision") is None
    with pytest.raises(ValueError, match="policy.safe.baseline_test"):
        _pooled(logged, logs, space, "pooled")
