"""Training reads the decision log (pipelines/feedback.py): a contact naming its decision takes the propensity
from the log when it carried the recommendation out, is learned as what was done when a person deviated or
overrode, and outcomes reported only through the API become contacts rows, each attempt once."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from joblib import load as joblib_load

from models.contract import read_dir, validate
from models.decision_log import DecisionLog
from models.response import ActionSpace
from pipelines import feedback
from serving.batch import BatchOptions, score_source

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored(trained, tmp_path_factory):
    """The batch's decisions on the small portfolio, recorded in a real (SQLite) decision log."""
    root = tmp_path_factory.mktemp("training-feedback")
    url = f"sqlite:///{root / 'decisions.db'}"
    queue = score_source(trained["data"], root / "queue.parquet",
                         BatchOptions(model_uri=str(trained["bundle_path"]), decision_log=url, progress=False))
    contacts = queue[queue["channel"] != "none"].reset_index(drop=True)
    assert len(contacts) >= 8, "the small portfolio must give the test enough contacts to carry out"
    return {"url": url, "queue": contacts, "portfolio": read_dir(trained["data"])}


def _row(decision: pd.Series, contact_id: str, channel: str | None = None, minutes: int = 1, **extra) -> dict:
    at = pd.Timestamp(decision["window_start"]).tz_convert("UTC") + pd.Timedelta(minutes=minutes)
    return {"contact_id": contact_id, "account_id": decision["account_id"], "contacted_at": at,
            "channel": channel or decision["channel"], "direction": "outbound", "template": None,
            "outcome": "delivered", "experiment_id": None, "propensity": None,
            "decision_id": decision["decision_id"]} | extra


def _with_contacts(portfolio, rows: list[dict]):
    contacts = pd.concat([portfolio.contacts.astype(object), pd.DataFrame(rows).astype(object)], ignore_index=True)
    return validate(portfolio.tables | {"contacts": contacts})


def test_a_contact_carrying_out_its_decision_takes_the_propensity_and_template_from_the_log(scored):
    q = scored["queue"]
    other = {"phone": "letter", "sms": "letter", "email": "letter", "letter": "sms", "ivr": "letter"}
    rows = [_row(q.iloc[0], "fb-done-0"), _row(q.iloc[1], "fb-done-1", propensity=0.5),
            _row(q.iloc[2], "fb-deviated", channel=other[q.iloc[2]["channel"]]),
            _row(q.iloc[3], "fb-overridden"),
            _row(q.iloc[4], "fb-unknown", decision_id="not-a-decision-of-this-log", propensity=0.25)]
    log = DecisionLog(scored["url"])
    try:
        log.add_event(q.iloc[3]["decision_id"], "override", "k1",
                      {"channel": q.iloc[3]["channel"], "offer": "instalment_plan", "reason": "asked", "by": "c-1"},
                      "tester", "default")
        joined, counts, *_ = feedback.join(_with_contacts(scored["portfolio"], rows), log)
    finally:
        log.close()
    out = joined.contacts.set_index("contact_id")
    for i, cid in enumerate(("fb-done-0", "fb-done-1")):
        assert out.loc[cid, "propensity"] == pytest.approx(q.iloc[i]["propensity"])  # the log's, not the export's
        assert out.loc[cid, "template"] == q.iloc[i]["template"]
    assert np.isnan(out.loc["fb-deviated", "propensity"]) and pd.isna(out.loc["fb-deviated", "experiment_id"])
    assert np.isnan(out.loc["fb-overridden", "propensity"])      # a person chose: learned as what was done
    assert out.loc["fb-overridden", "channel"] == q.iloc[3]["channel"]
    assert out.loc["fb-unknown", "propensity"] == 0.25           # not in the log: left as the export has it
    assert counts["contacts_naming_a_decision"] == 5 and counts["unknown_decision"] == 1
    assert (counts["carried_out"], counts["deviated"], counts["overridden"]) == (2, 1, 1)
    assert counts["propensity_from_log"] == 2 and counts["propensity_replaced"] == (q.iloc[1]["propensity"] != 0.5)
    assert len(joined.contacts) == len(scored["portfolio"].contacts) + len(rows)


def test_a_carried_out_decision_brings_what_its_rules_blocked_and_a_deviation_does_not(scored):
    q = scored["queue"]
    named = [frozenset(b["action"] for b in json.loads(text)) for text in q["blocked"]]
    some = [i for i, names in enumerate(named) if names]
    assert len(some) >= 2, "the small portfolio must give the test decisions whose rules blocked an action"
    done, deviated = some[0], some[1]
    other = "letter" if q.iloc[deviated]["channel"] != "letter" else "sms"
    rows = [_row(q.iloc[done], "fb-blocked-done"), _row(q.iloc[deviated], "fb-blocked-deviated", channel=other)]
    joined = feedback.from_url(_with_contacts(scored["portfolio"], rows), scored["url"])
    assert joined.blocked["fb-blocked-done"] == named[done]
    assert "fb-blocked-deviated" not in joined.blocked.index  # a person chose: not the decision's draw
    assert joined.counts["carried_out_with_actions_blocked"] == 1
    space = ActionSpace(("weekday_morning", "weekday_afternoon", "weekday_evening", "weekend"))
    mask = feedback.blocked_actions(joined.blocked, pd.Series(["fb-blocked-done", "fb-blocked-deviated"]),
                                    space.actions)
    channel = np.array([a[0] for a in space.actions])
    assert mask[1].sum() == 0 and not mask[0, channel == "none"].any()
    for name in named[done] & set(channel):
        assert mask[0, channel == name].all()


def test_blocked_actions_reads_channels_offers_and_all_and_never_blocks_no_contact():
    space = ActionSpace(("weekday_evening", "weekend"))
    blocks = pd.Series({"c-phone": frozenset({"phone"}), "c-all": frozenset({"all"}),
                        "c-reminder": frozenset({"reminder", "sms"})}, dtype=object)
    mask = feedback.blocked_actions(blocks, pd.Series(["c-phone", "c-none", "c-all", "c-reminder"]), space.actions)
    channel = np.array([a[0] for a in space.actions])
    offer = np.array([a[2] for a in space.actions])
    assert (mask[0] == (channel == "phone")).all()
    assert not mask[1].any()                                  # no record of blocks: nothing blocked
    assert (mask[2] == (channel != "none")).all()              # every contact, never no contact
    assert (mask[3] == (((offer == "reminder") | (channel == "sms")) & (channel != "none"))).all()
    assert not feedback.blocked_actions(feedback.NO_BLOCKS, pd.Series(["c-phone"]), space.actions).any()


def test_outcomes_reported_through_the_api_become_contacts_rows_each_attempt_once(scored):
    q = scored["queue"]
    exported = _row(q.iloc[5], "fb-exported")
    log = DecisionLog(scored["url"])

    def outcome(decision, key: str, **body) -> None:
        at = pd.Timestamp(decision["window_start"]) + pd.Timedelta(minutes=1)
        log.add_event(decision["decision_id"], "outcome", key,
                      {"contacted": True, "at": at.isoformat(), "channel": decision["channel"], "template": None,
                       "outcome": "reached"} | body, "tester", "default")

    try:
        outcome(q.iloc[5], "dup")          # the export holds the same attempt
        outcome(q.iloc[6], "api-only")     # only the API knows it
        outcome(q.iloc[7], "not-made", contacted=False)
        joined, counts, *_ = feedback.join(_with_contacts(scored["portfolio"], [exported]), log)
    finally:
        log.close()
    api = joined.contacts[joined.contacts["contact_id"].str.startswith("api-outcome-")]
    assert api["decision_id"].tolist() == [q.iloc[6]["decision_id"]]
    assert api["outcome"].tolist() == ["reached"] and api["channel"].tolist() == [q.iloc[6]["channel"]]
    assert api["propensity"].iloc[0] == pytest.approx(q.iloc[6]["propensity"])
    assert (counts["api_outcomes_added"], counts["api_outcomes_in_export"], counts["api_outcomes_no_contact"]) \
        == (1, 1, 1)


def test_without_a_decision_log_the_portfolio_is_unchanged(scored, monkeypatch, tmp_path):
    monkeypatch.delenv("CUREFLOW_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert feedback.decision_log_url(None) is None
    same, counts, *_ = feedback.from_url(scored["portfolio"], None)
    assert same is scored["portfolio"] and counts == {}


def test_training_examples_learn_from_the_carried_out_decisions_and_not_from_the_deviation(scored, trained):
    from models.config import load_params
    from pipelines.features import build_examples

    q = scored["queue"]
    rows = [_row(q.iloc[0], "fb-learn-done"), _row(q.iloc[2], "fb-learn-deviated", channel="letter")
            if q.iloc[2]["channel"] != "letter" else _row(q.iloc[2], "fb-learn-deviated", channel="sms")]
    portfolio, counts, *_ = feedback.from_url(_with_contacts(scored["portfolio"], rows), scored["url"])
    assert counts["carried_out"] >= 1
    end = (pd.Timestamp(q["window_start"].max()).tz_convert("UTC") + pd.Timedelta(days=8)).isoformat()
    decisions = build_examples(portfolio, trained["data"], load_params(), end, log=lambda *_: None).decisions
    learned = decisions.set_index("contact_id")
    assert learned.loc["fb-learn-done", "propensity"] == pytest.approx(q.iloc[0]["propensity"])
    assert "fb-learn-deviated" not in learned.index   # chosen by a person: no propensity, not reweighted


def test_the_nightly_batch_routes_a_contested_account_to_a_person(scored, trained, tmp_path):
    q = scored["queue"]
    target = q.iloc[-1]
    log = DecisionLog(scored["url"])
    try:
        log.add_event(target["decision_id"], "contest", "c1", {"received_at": "2026-11-01T09:00:00+09:00",
                                                                "channel": "letter", "note": ""}, "tester", "default")
        assert target["account_id"] in log.contested()
    finally:
        log.close()
    options = BatchOptions(model_uri=str(trained["bundle_path"]), decision_log=scored["url"], progress=False)
    again = score_source(trained["data"], tmp_path / "queue.parquet", options).set_index("account_id")
    row = again.loc[target["account_id"]]
    assert row["tier"] == "review by a person" and row["channel"] == "none"
    assert "R-CONTESTED" in row["blocked"]
    others = again.drop(index=target["account_id"])
    assert not others["blocked"].str.contains("R-CONTESTED").any()


def test_the_closed_loops_crm_export_names_decisions_and_the_log_gives_back_their_propensities(tmp_path):
    """The path benchmarks/closed_loop.py runs: decisions recorded, carried out by the simulator, exported as a
    CRM would (decision ids, no propensity), joined back to the log by training."""
    from models.config import load_params
    from models.contract import validate
    from models.decision_log import DecisionRecord
    from pipelines.simulate import Live

    live = Live(400, 6, 5, load_params())
    overdue = live.truth()["account_id"].unique()
    start = live.as_of
    monday = (start.tz_convert("Asia/Tokyo").normalize() + pd.offsets.Week(weekday=0)) + pd.Timedelta(hours=18)
    prop = np.where(np.arange(len(overdue)) % 3 == 0, 0.2, 0.9)
    channel = np.where(np.arange(len(overdue)) % 5 == 0, "none", "sms")
    decisions = pd.DataFrame({"account_id": overdue, "channel": channel, "window": "weekday_evening",
                              "offer": "reminder", "propensity": prop,
                              "decision_id": [f"d-{i}" for i in range(len(overdue))]})
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    log = DecisionLog(url)
    try:
        log.append([DecisionRecord.from_answer(
            {"decision_id": d.decision_id, "account_id": d.account_id, "as_of": start.isoformat(),
             "model_version": "test/1", "propensity": d.propensity,
             "action": {"channel": d.channel, "offer": "reminder" if d.channel != "none" else "none",
                        "template": None if d.channel == "none" else "reminder_sms_v1",
                        "contact_window": None if d.channel == "none" else
                        {"start": monday.isoformat(), "end": (monday + pd.Timedelta(hours=3)).isoformat()}}},
            request_id="test", caller="test", run_id=None, policy_version="p", features={}, rules_evaluated=[],
            source="batch") for d in decisions.itertuples()])
    finally:
        log.close()
    live.play(decisions)
    export = validate(live.tables(crm_export=True))
    ours = export.contacts[export.contacts["decision_id"].notna()]
    assert len(ours) > len(overdue) // 2 and ours["propensity"].isna().all()    # the CRM knows only the id
    joined, counts, *_ = feedback.from_url(export, url)
    back = joined.contacts[joined.contacts["decision_id"].notna()].merge(decisions, on="decision_id",
                                                                        suffixes=("", "_played"))
    assert counts["carried_out"] == len(back) and counts["deviated"] == 0
    np.testing.assert_allclose(back["propensity"], back["propensity_played"])
    assert (back["channel"] == back["channel_played"]).all()


def test_play_exports_a_week_of_outcomes_and_replays_the_weeks_before_it_exactly(scored, trained, tmp_path):
    """`cureflow play` (the quick start's week of outcomes): the week's contacts name their decisions, training
    finds every propensity in the log, and a second week rebuilds the first exactly before playing on."""
    from pipelines.simulate import play

    first_queue = tmp_path / "queue1.parquet"
    options = BatchOptions(model_uri=str(trained["bundle_path"]), decision_log=scored["url"], progress=False)
    score_source(trained["data"], first_queue, options)
    week1 = play(trained["data"], first_queue, tmp_path / "week1", days=10)
    exported = read_dir(week1)
    named = exported.contacts[exported.contacts["decision_id"].notna()]
    assert len(named) > 0 and named["propensity"].isna().all()
    _, counts, *_ = feedback.from_url(exported, scored["url"])
    # decision ids are deterministic, and the module's log is shared: a decision a test before this overrode is
    # not carried out, and an outcome a test before this reported through the API is one more contact
    assert counts["contacts_naming_a_decision"] == len(named)
    assert counts["carried_out"] + counts["overridden"] == len(named) + counts["api_outcomes_added"]
    assert counts["propensity_from_log"] == counts["carried_out"] > 0 and counts["deviated"] == 0
    second_queue = tmp_path / "queue2.parquet"
    score_source(week1, second_queue, options)
    week2 = read_dir(play(week1, second_queue, tmp_path / "week2", days=7))
    end1 = pd.Timestamp(json.loads((week1 / "manifest.json").read_text())["end"])
    again = week2.contacts[week2.contacts["contacted_at"] < end1].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, exported.contacts.reset_index(drop=True))
    with pytest.raises(ValueError, match="scored as of"):
        play(week1, first_queue, tmp_path / "stale", days=7)       # a queue of another day is refused


def test_the_greedy_policy_judged_by_evaluate_and_promote_never_takes_an_action_a_decision_blocked(trained):
    """`cureflow evaluate` and `cureflow promote` value the greedy policy on logged decisions: where a
    decision's own rules blocked every contact, its action there is no contact or the action taken."""
    from models.features import prepare
    from pipelines.evaluate import greedy_targets
    from pipelines.examples_from_logs import decision_examples

    bundle = joblib_load(trained["bundle_path"])
    portfolio, config = read_dir(trained["data"]), bundle.feature_config
    end = pd.Timestamp(bundle.metadata["history_end"])
    logs = decision_examples(portfolio, prepare(portfolio, config), config, bundle.params, end).reset_index(drop=True)
    space = bundle.response.space
    _, free = greedy_targets(bundle, portfolio, logs)
    taken = logs["action"].to_numpy()
    assert ((free != taken) & (free != space.none_index)).sum() > 50   # unblocked, it departs often
    everything = pd.Series([frozenset({"all"})] * len(logs), index=logs["contact_id"].to_numpy())
    _, held = greedy_targets(bundle, portfolio, logs, everything)
    assert np.all((held == taken) | (held == space.none_index))
    assert (held != free).sum() > 50


def test_a_carried_out_decision_brings_the_actions_its_policy_gave_a_chance(scored):
    """The batch records each decision's whole distribution (the answer's `support`); training reads which
    actions a decision could have taken from it, and assumes nothing of a contact with no such record."""
    q = scored["queue"]
    rows = [_row(q.iloc[0], "fb-support-done"),
            _row(q.iloc[1], "fb-support-unknown", decision_id="not-a-decision-of-this-log", propensity=0.25)]
    joined = feedback.from_url(_with_contacts(scored["portfolio"], rows), scored["url"])
    log = DecisionLog(scored["url"])
    try:
        record = log.decisions_named({q.iloc[0]["decision_id"]})[q.iloc[0]["decision_id"]]
    finally:
        log.close()
    dist = record["answer"]["support"]
    assert sum(p for *_, p in dist) == pytest.approx(1.0, abs=1e-5)
    assert any(c == q.iloc[0]["channel"] and p == pytest.approx(q.iloc[0]["propensity"], abs=1e-6)
               for c, _, _, p in dist)                              # the recorded propensity is its chance
    assert joined.support["fb-support-done"] == frozenset((c, w, o) for c, w, o, _ in dist)
    assert "fb-support-unknown" not in joined.support.index
    assert joined.counts["carried_out_with_distribution"] == joined.counts["carried_out"] >= 1  # every one
    space = ActionSpace(("weekday_morning", "weekday_afternoon", "weekday_evening", "weekend"))
    mask = feedback.supported_actions(joined.support, pd.Series(["fb-support-done", "fb-support-unknown"]),
                                      space.actions)
    assert mask[0].sum() == len(dist) and mask[1].all()
    assert [space.actions[i] for i in np.flatnonzero(mask[0])] == sorted(
        (tuple(d[:3]) for d in dist), key=space.actions.index)


def test_every_batch_decision_records_its_distribution_and_a_moved_call_hands_on_its_chance(trained):
    """The queue's rows carry the policy's whole distribution: it sums to one, the recorded propensity is the
    chance of the action done, and a call the day's capacity moved leaves no call a chance (any call drawn
    would have been moved) and records the chance of the action done instead."""
    from models.answers import answer_from_row
    from models.queue import capacity_step

    bundle = joblib_load(trained["bundle_path"])
    portfolio = read_dir(trained["data"])
    rows = bundle.score(portfolio, pd.Timestamp(bundle.metadata["history_end"]))
    calls = int((rows["channel"] == "phone").sum())
    assert calls >= 4, "the fixture's baseline is a call: the queue must have calls to ration"
    after, summary, _ = capacity_step(rows, calls // 2, calls_per_hour=12)
    assert summary["calls_moved_to_other_actions"] >= 2
    moved = after["blocked"].str.contains("CAPACITY").to_numpy()
    for row, was_moved in zip(after.to_dict("records"), moved, strict=True):
        answer = answer_from_row(row)
        dist = answer["support"]
        assert sum(p for *_, p in dist) == pytest.approx(1.0, abs=1e-5)
        done = [p for c, _, _, p in dist if c == answer["action"]["channel"]]
        assert any(p == pytest.approx(answer["propensity"], abs=1e-6) for p in done)
        if was_moved:
            assert not any(c == "phone" for c, *_ in dist) and answer["action"]["channel"] != "phone"
