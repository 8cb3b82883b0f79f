"""The team's playbook: the steps, the preferences they give, and day one on a history with no experiment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models import vocab
from models.bundle import uniforms
from models.config import load_params
from models.contract import read_dir
from models.playbook import Playbook, flat_action

WINDOWS = ("weekday_morning", "weekday_afternoon", "weekday_evening", "weekend")
AS_OF = pd.Timestamp("2026-11-01T00:00:00+09:00")
STEPS = [
    {"name": "text", "from_days": 0, "channels": ["sms", "letter"], "window": "weekday_evening", "offer": "reminder"},
    {"name": "call", "from_days": 10, "channels": ["phone"], "window": "weekday_morning", "offer": "reminder"},
    {"name": "plan", "from_days": 10, "min_arrears_instalments": 2, "channels": ["letter"], "window": "weekend",
     "offer": "instalment_plan"},
]


def test_an_account_follows_the_last_step_it_has_reached():
    book = Playbook.from_params(STEPS, WINDOWS)
    step = book.step_of(np.array([-1, 0, 9, 10, 40, 40]), np.array([1, 1, 1, 1, 1, 2]))
    assert [book.steps[s].name if s >= 0 else None for s in step] == [None, "text", "text", "call", "call", "plan"]


def test_preferences_list_each_channel_with_the_steps_offer_first():
    book = Playbook.from_params(STEPS, WINDOWS)
    prefs = book.preferences(np.array([3, 12, -2]), np.array([1, 3, 1]), WINDOWS)
    sms, letter = vocab.CONTACT_CHANNELS.index("sms"), vocab.CONTACT_CHANNELS.index("letter")
    assert prefs[0].tolist() == [flat_action(sms, 2, 0, 4), flat_action(sms, 2, 1, 4),
                                 flat_action(letter, 2, 0, 4), flat_action(letter, 2, 1, 4)]
    assert prefs[1].tolist() == [flat_action(letter, 3, 1, 4), flat_action(letter, 3, 0, 4), -1, -1]
    assert prefs[2].tolist() == [-1, -1, -1, -1]


@pytest.mark.parametrize(("change", "says"), [
    ({"channels": ["fax"]}, "playbook[1].channels"),
    ({"window": "midnight"}, "playbook[1].window"),
    ({"offer": "settlement"}, "playbook[1].offer"),
    ({"from_days": "soon"}, "playbook[1]: from_days"),
])
def test_a_bad_step_names_itself_and_the_field(change, says):
    steps = [dict(STEPS[0]), {**STEPS[1], **change}]
    with pytest.raises(ValueError, match=r"policy\." + says.replace("[", r"\[").replace("]", r"\]")):
        Playbook.from_params(steps, WINDOWS)


def test_the_shipped_playbook_is_valid_and_escalates():
    book = Playbook.from_params(load_params()["policy"]["playbook"], WINDOWS)
    assert book.steps[0].from_days <= 1 and [s.from_days for s in book.steps] == sorted(s.from_days for s in book.steps)
    assert "phone" in {c for s in book.steps for c in s.channels}


@pytest.fixture(scope="module")
def day_one(sim_dir, tmp_path_factory):
    """A model trained on the simulated history with every experiment removed (a first export), and its
    scored queue with and without experiments."""
    from models.contract import write_dir
    from pipelines.train import fit

    p = read_dir(sim_dir)
    contacts = p.contacts[p.contacts["channel"] != "none"].assign(propensity=np.nan, experiment_id=None)
    plain = tmp_path_factory.mktemp("first_export")
    write_dir(type(p)(p.accounts, p.installments, p.payments, contacts.reset_index(drop=True)), plain)
    params = load_params()
    params["cure"]["n_folds"] = 3
    result = fit(plain, params, history_end_at=AS_OF.isoformat(), log=lambda *_: None)
    bundle = result.bundle
    features = bundle.features(p, AS_OF).set_index("account_id")
    return bundle, p, features


def test_day_one_the_queue_is_the_playbooks_for_every_account_the_rules_allow(day_one):
    bundle, p, features = day_one
    assert bundle.response is None and bundle.safe.playbook is not None
    rows = bundle.score(p, AS_OF, explore=0.0)
    book = bundle.safe.playbook
    f = features.loc[rows["account_id"]]
    step = book.step_of(f["days_past_due"].to_numpy(float), f["arrears_instalments"].to_numpy(float))
    held = rows["tier"].isin(["review by a person", "hold: legal", "hold: promise to pay", "recovery review",
                              "write-off review"]).to_numpy()
    for i, row in enumerate(rows.itertuples()):
        if held[i] or step[i] < 0:
            assert row.channel == "none"
            continue
        blocked = {b["action"] for b in json.loads(row.blocked)}
        wanted = [c for c in book.steps[step[i]].channels if c not in blocked]
        if row.channel == "none":  # every channel of the step was blocked (by a rule, consent or vulnerability)
            assert not wanted, (row.account_id, wanted, row.blocked)
        else:
            assert row.channel == wanted[0], (row.account_id, row.channel, wanted)
            assert any("playbook" in r and book.steps[step[i]].name in r for r in json.loads(row.reasons))
    contacted = rows[rows["channel"] != "none"]
    assert len(contacted) > 0.5 * (~held).sum()          # a queue with work in it, not "no contact"
    assert (rows["propensity"] == 1.0).all()
    cure_track = (rows["priority"] > 0).to_numpy()  # stale debt leaves the cure track with priority 0
    stake = ((1 - rows["cure_probability"]) * features.loc[rows["account_id"], "arrears"].to_numpy())[cure_track]
    assert np.all(np.diff(stake.round(2).to_numpy()) <= 0.01)   # ordered by what is at stake


def test_day_one_the_days_calls_go_to_the_biggest_stakes(day_one):
    """With no trusted model values the call capacity is rationed by stake, not by untrusted estimates."""
    from models.queue import capacity_step

    bundle, p, _ = day_one
    rows = bundle.score(p, AS_OF, explore=0.0)
    calls = rows[rows["channel"] == "phone"]
    assert len(calls) >= 4 and not bundle.values_trusted
    capacity = len(calls) // 2
    after, summary, _ = capacity_step(rows, capacity, calls_per_hour=12)
    kept = after[after["channel"] == "phone"]["account_id"]
    assert summary["calls_kept"] == capacity
    assert set(kept) == set(calls.nlargest(capacity, "priority")["account_id"])


def test_untrusted_model_values_never_ration_the_calls(trained):
    """A bundle with a response model whose departures the evidence does not support (infinite margin) ranks the
    calls by stake; trusted (finite margin), by what a call adds over the account's other action. The batch's
    capacity step keeps the calls by that rank."""
    import copy
    import dataclasses
    import math

    import joblib

    from models.queue import capacity_step

    bundle = joblib.load(trained["bundle_path"])
    assert bundle.response is not None
    portfolio, as_of = read_dir(trained["data"]), pd.Timestamp("2026-11-01T00:00:00+09:00")
    scored = {}
    for margin in (math.inf, 0.0):
        b = copy.deepcopy(bundle)
        b.safe = dataclasses.replace(b.safe, margin=margin)
        assert b.values_trusted is math.isfinite(margin)
        scored[margin] = b.score(portfolio, as_of, explore=0.0)
    untrusted, trusted = scored[math.inf], scored[0.0]
    np.testing.assert_allclose(untrusted["_call_rank"], untrusted["priority"])
    np.testing.assert_allclose(trusted["_call_rank"], trusted["_value"] - trusted["_alt_value"])
    rows = trusted[trusted["channel"] != "none"].assign(channel="phone")   # as if every contact were a call
    calls = rows
    assert len(calls) >= 4, "the fixture should propose several contacts"
    capacity = len(calls) // 2
    for rank, by in (("_call_rank", calls["_value"] - calls["_alt_value"]), ("priority", calls["priority"])):
        after, _, _ = capacity_step(rows.assign(_call_rank=rows[rank]), capacity, calls_per_hour=12)
        kept = set(after[after["channel"] == "phone"]["account_id"])
        assert kept == set(calls.loc[by.nlargest(capacity).index, "account_id"]), rank


def test_day_one_experiments_vary_one_factor_and_never_add_a_call(day_one):
    bundle, p, _ = day_one
    plan = bundle.score(p, AS_OF, explore=0.0).set_index("account_id")
    rows = bundle.score(p, AS_OF, explore=1.0).set_index("account_id")   # every decision an experiment
    tried = rows[rows["propensity"] < 1.0]          # the accounts with arms to draw from
    assert len(tried) > 20 and (tried["channel"] != plan.loc[tried.index, "channel"]).any()
    base = plan.loc[tried.index]
    assert not ((tried["channel"] == "phone") & (base["channel"] != "phone")).any()   # no random calls
    assert not ((tried["offer"] == "settlement") & (base["offer"] != "settlement")).any()
    same = ((tried["channel"] == base["channel"]).astype(int) + (tried["window_start"] == base["window_start"])
            + (tried["offer"] == base["offer"]))
    contact = tried["channel"] != "none"
    assert (same[contact] >= 1).all()             # a variant shares the rest of the plan with it
    assert (~contact).sum() > 0                   # the hold-out is an arm


def test_registered_wording_variants_are_drawn_evenly_and_reproducibly(day_one):
    import copy
    import dataclasses

    bundle, p, _ = day_one
    params = copy.deepcopy(bundle.params)
    params["policy"]["templates"] = {"sms": ["v1", "v2"], "letter": ["formal", "plain", "short"]}
    variant = dataclasses.replace(bundle, params=params)
    rows = variant.score(p, AS_OF, explore=1.0)
    again = variant.score(p, AS_OF, explore=1.0)
    assert rows["template"].equals(again["template"])
    for channel, names in params["policy"]["templates"].items():
        sent = rows.loc[rows["channel"] == channel, ["offer", "template"]]
        got = {t.rsplit("_", 1)[1] for t in sent["template"]}
        assert got <= set(names) and all(t.startswith(f"{o}_{channel}_") for o, t in sent.itertuples(index=False))
    assert len({t.rsplit("_", 1)[1] for t in rows.loc[rows["channel"] == "sms", "template"]}) == 2 or \
        (rows["channel"] == "sms").sum() < 4
    email = rows.loc[rows["channel"] == "email", "template"]
    assert email.str.endswith("_email_v1").all()      # an unregistered channel keeps v1


@pytest.mark.parametrize("bad", [{"fax": ["v1"]}, {"sms": []}, {"sms": ["two words"]}])
def test_a_bad_template_registry_names_the_channel(bad):
    from models.policy import PolicyConfig

    params = load_params()["policy"]
    with pytest.raises(ValueError, match="policy.templates"):
        PolicyConfig.from_params({**params, "templates": bad})


def test_each_variant_gets_an_equal_share_of_the_unit_interval():
    from models.policy import variant

    names = (("sms", ("a", "b", "c")),)
    w = (np.arange(3000) + 0.5) / 3000
    drawn = pd.Series([variant(names, "sms", x) for x in w]).value_counts()
    assert drawn.to_dict() == {"a": 1000, "b": 1000, "c": 1000}


def test_the_challenger_is_served_to_its_share_of_the_accounts_and_says_so(trained):
    """A team that runs a challenger (policy.experiments.challenger; off by default): while the learned ranking
    has not replaced the playbook (a contender), experiments on, about
    policy.experiments.challenger of the decisions that are not experiments get its action instead of the
    playbook's, with the chance of it recorded and the reason in words; experiments off: the playbook."""
    import copy
    import math

    import joblib

    from models.safe import SafePolicy

    bundle = copy.deepcopy(joblib.load(trained["bundle_path"]))
    assert bundle.response is not None
    share = 0.2
    bundle.params["policy"]["experiments"]["challenger"] = share   # a team that runs one (the default is off)
    windows = tuple(w.name for w in bundle.configs().windows)
    space = bundle.response.space
    rival = space.actions.index(("email", "weekend", "instalment_plan"))
    book = Playbook.from_params(load_params()["policy"]["playbook"], windows)
    bundle.safe = SafePolicy(playbook=book, margin=math.inf, contender=(rival,),
                             evidence={"best_single_text": "email on weekends with an instalment plan",
                                       "baseline_text": "the playbook"})
    portfolio = read_dir(trained["data"])
    plan = bundle.score(portfolio, AS_OF, explore=0.0).set_index("account_id")
    rows = bundle.score(portfolio, AS_OF, explore=0.05).set_index("account_id")
    said = rows["reasons"].str.contains("the challenger: email on weekends")
    bundle.params["policy"]["experiments"]["challenger"] = 0.0
    off = bundle.score(portfolio, AS_OF, explore=0.05)
    assert not off["reasons"].str.contains("challenger").any()
    assert not plan["reasons"].str.contains("challenger").any()
    draws = uniforms(rows.index.to_numpy(), AS_OF.tz_convert("UTC"), int(bundle.params["seed"]))
    u = pd.Series(draws[0], index=rows.index)
    inside = (u >= 0.05) & (u < 0.05 + 0.95 * share)       # the account's draw falls in the challenger's share
    differs = ~plan.loc[rows.index, "channel"].isin(["email", "none"])
    assert said.sum() >= 3 and not (said & ~inside).any()
    assert said[inside & differs].mean() > 0.5             # unless the rules forbid the challenger's action
    assert (rows.loc[said, "channel"] == "email").all()
    assert (rows.loc[said, "propensity"] >= 0.95 * share - 1e-6).all()
    assert (rows.loc[said, "propensity"] < 0.95 * share + 0.05).all()
