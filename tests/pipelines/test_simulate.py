"""The simulator: contract-shaped tables, plausible rates, compliant history, and a truth that is right.

The truth tests continue the simulation past `end` and compare what happened (computed from the tables with
the contract's definitions) with the probabilities written at `end`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models import vocab
from models.calendar import (
    effective_timezones,
    local_midnight_utc,
    next_window,
    parse_windows,
    to_local,
    window_codes,
)
from models.config import load_params
from pipelines import simulate as sm

END = pd.Timestamp(load_params()["simulate"]["end"])
CHI2_999 = {4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12, 9: 27.88, 10: 29.59}  # chi2(df).ppf(0.999)
DTYPES = {
    "accounts": {
        "account_id": "object", "opened_on": "datetime64[ns]", "term_months": "int64",
        "monthly_amount": "float64", "birth_year": "float64", "employment": "object", "region": "object",
        "timezone": "object", "consent_phone": "bool", "consent_sms": "bool", "consent_email": "bool",
        "do_not_contact": "bool", "dispute_open": "bool", "legal_representative": "bool",
        "bankruptcy": "bool", "vulnerable": "bool",
    },
    "installments": {"account_id": "object", "due_date": "datetime64[ns]", "amount_due": "float64"},
    "payments": {
        "account_id": "object", "paid_at": "datetime64[ns, UTC]", "amount": "float64", "method": "object",
    },
    "contacts": {
        "contact_id": "object", "account_id": "object", "contacted_at": "datetime64[ns, UTC]",
        "channel": "object", "direction": "object", "template": "object", "outcome": "object",
        "experiment_id": "object", "propensity": "float64",
    },
}


@pytest.fixture(scope="module")
def sim() -> sm.Simulation:
    return sm.simulate(20_000, 24, seed=3)


@pytest.fixture(scope="module")
def observed() -> sm.Simulation:
    """A larger book continued 30 days past end with no contact after it: the no-action world."""
    return sm.simulate(200_000, 12, seed=5, observe_days=30, contacts_after_end=False)


# ---------------------------------------------------------------- helpers: the contract's definitions


def _due_instants(tables: dict[str, pd.DataFrame]) -> pd.Series:
    """UTC instant at which each installment falls due: local midnight of due_date in the account's zone."""
    accounts = tables["accounts"]
    zones = pd.Series(effective_timezones(accounts["timezone"]).to_numpy(), index=accounts["account_id"])
    inst = tables["installments"]
    return local_midnight_utc(inst["due_date"], inst["account_id"].map(zones))


def _arrears(tables: dict[str, pd.DataFrame], t: pd.Timestamp) -> pd.Series:
    """Arrears at t per account: due before t minus paid before t."""
    inst, pay = tables["installments"], tables["payments"]
    due_mask = (_due_instants(tables) < t).to_numpy()
    due = inst["amount_due"][due_mask].groupby(inst["account_id"][due_mask]).sum()
    paid_mask = (pay["paid_at"] < t).to_numpy()
    paid = pay["amount"][paid_mask].groupby(pay["account_id"][paid_mask]).sum()
    ids = tables["accounts"]["account_id"]
    return due.sub(paid, fill_value=0).reindex(ids, fill_value=0.0)


def _paid_in(tables: dict[str, pd.DataFrame], lo: pd.Timestamp, hi: pd.Timestamp) -> pd.Series:
    """Payments in [lo, hi) per account."""
    pay = tables["payments"]
    mask = ((pay["paid_at"] >= lo) & (pay["paid_at"] < hi)).to_numpy()
    paid = pay["amount"][mask].groupby(pay["account_id"][mask]).sum()
    return paid.reindex(tables["accounts"]["account_id"], fill_value=0.0)


def _assert_within_3se(realised: pd.Series, truth: pd.Series) -> None:
    se = np.sqrt((truth * (1 - truth)).sum()) / len(truth)
    assert abs(realised.mean() - truth.mean()) <= 3 * se, (realised.mean(), truth.mean(), se)


def _assert_calibrated(realised: pd.Series, truth: pd.Series, groups: pd.Series | None = None) -> None:
    """Hosmer-Lemeshow: sum over groups (default: 10 bins of the truth) of (O - E)^2 / V is below the
    99.9% point of chi-square with that many degrees of freedom."""
    if groups is None:
        groups = pd.qcut(truth.rank(method="first"), 10, labels=False)
    frame = pd.DataFrame({"o": realised.astype(float), "e": truth, "v": truth * (1 - truth), "g": groups})
    per_group = frame.groupby("g")[["o", "e", "v"]].sum()
    per_group = per_group[per_group["v"] > 1e-9]  # groups whose outcome is certain are checked elsewhere
    statistic = ((per_group["o"] - per_group["e"]) ** 2 / per_group["v"]).sum()
    assert statistic < CHI2_999[len(per_group)], per_group.assign(stat=statistic)


def _overdue_at_end(s: sm.Simulation) -> pd.Series:
    arrears = _arrears(s.tables, END)
    return arrears[arrears > 0.5]


# ---------------------------------------------------------------- shape and determinism


def test_tables_have_the_contract_columns_and_dtypes(sim):
    for name, expected in DTYPES.items():
        frame = sim.tables[name]
        assert tuple(frame.columns) == sm.COLUMNS[name] == tuple(expected), name
        assert {c: str(t) for c, t in frame.dtypes.items()} == expected, name
    for name, column in (("accounts", "employment"), ("contacts", "channel"), ("payments", "method")):
        assert all(type(v) is str for v in sim.tables[name][column]), (name, column)


def test_truth_frames_have_their_documented_columns(sim):
    assert list(sim.truth_cure.columns) == ["account_id", "as_of", "p_cure_30"]
    assert list(sim.truth_actions.columns) == ["account_id", "channel", "window", "offer", "p_payment_7d"]
    assert {"account_id", "payer_type", "shock_at_end", "reach_factor"} <= set(sim.latent.columns)
    assert (sim.truth_cure["as_of"] == END).all()


def test_same_seed_gives_identical_tables_and_another_seed_different_ones():
    a, b, c = (sm.simulate(3_000, 12, seed=s) for s in (1, 1, 2))
    for name in vocab.TABLES:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    pd.testing.assert_frame_equal(a.truth_actions, b.truth_actions)
    assert not a.tables["payments"].equals(c.tables["payments"])
    assert not a.tables["accounts"].equals(c.tables["accounts"])


def test_history_before_end_does_not_depend_on_what_happens_after():
    plain = sm.simulate(3_000, 12, seed=4)
    later = sm.simulate(3_000, 12, seed=4, observe_days=20)
    quiet = sm.simulate(3_000, 12, seed=4, observe_days=20, contacts_after_end=False)
    for other in (later, quiet):
        for name, column in (("payments", "paid_at"), ("contacts", "contacted_at")):
            before = other.tables[name][other.tables[name][column] < END].reset_index(drop=True)
            pd.testing.assert_frame_equal(plain.tables[name], before)
        pd.testing.assert_frame_equal(plain.truth_cure, other.truth_cure)
    assert len(later.tables["payments"]) > len(plain.tables["payments"])
    made_after = [run.tables["contacts"].query("contacted_at >= @END and direction == 'outbound'")
                  for run in (quiet, later)]
    assert len(made_after[0]) == 0 < len(made_after[1])


def test_write_is_byte_identical_for_the_same_arguments_and_has_a_manifest(tmp_path):
    for run in ("a", "b"):
        sm.write(sm.simulate(2_000, 6, seed=9), tmp_path / run)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {f"{t}.parquet" for t in vocab.TABLES} | {
        "truth/cure.parquet", "truth/actions.parquet", "truth/latent.parquet", "manifest.json"}
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 9 and manifest["accounts"] == 2_000
    assert pd.Timestamp(manifest["end"]) == END
    assert manifest["counts"]["accounts"] == 2_000 and "pandas" in manifest["versions"]
    back = pd.read_parquet(tmp_path / "a" / "payments.parquet")
    assert len(back) == manifest["counts"]["payments"]


def test_main_writes_the_portfolio_and_prints_one_line(tmp_path, capsys):
    out = sm.main(1_000, 6, 2, tmp_path / "sim")
    assert out == tmp_path / "sim" and (out / "accounts.parquet").exists()
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


# ---------------------------------------------------------------- plausible portfolio


def test_portfolio_rates_are_plausible(sim):
    accounts = sim.tables["accounts"]
    assert abs(accounts["term_months"].mean() - 108) < 3
    assert set(accounts["term_months"]) <= {36, 48, 60, 72, 84, 96, 108, 120, 132}
    assert 30_000 < accounts["monthly_amount"].median() < 50_000
    assert accounts["monthly_amount"].between(15_000, 120_000).all()
    assert (accounts["monthly_amount"] % 100 == 0).all()
    for column, rate in (("consent_phone", 0.9), ("consent_sms", 0.8), ("consent_email", 0.7),
                         ("do_not_contact", 0.015), ("vulnerable", 0.03)):
        assert abs(accounts[column].mean() - rate) < max(0.02, rate * 0.3), column
    shares = accounts["employment"].value_counts(normalize=True)
    assert abs(shares["salaried"] - 0.5) < 0.02 and abs(shares["retired"] - 0.1) < 0.015
    ages = END.year - accounts["birth_year"].dropna()
    assert ages.between(20, 81).all() and abs(accounts["birth_year"].isna().mean() - 0.05) < 0.01
    assert 0.005 < accounts["timezone"].isna().mean() < 0.015
    assert (accounts["timezone"] == "Mars/Olympus").sum() >= 1
    assert 0.02 <= len(_overdue_at_end(sim)) / len(accounts) <= 0.05


def test_every_account_has_a_due_date_in_the_window_and_some_open_inside_it(sim):
    accounts, inst = sim.tables["accounts"], sim.tables["installments"]
    assert set(inst["account_id"]) == set(accounts["account_id"])
    start = (END - pd.DateOffset(months=24)).tz_localize(None)
    inside = (accounts["opened_on"] >= start).mean()
    assert 0.08 < inside < 0.35
    assert (inst["amount_due"] > 0).all()
    assert (inst["due_date"].dt.day.isin([5, 10, 15, 20, 27])).all()


def test_most_spells_cure_within_weeks_with_a_tail_past_90_days(sim):
    overdue = _overdue_at_end(sim)
    inst = sim.tables["installments"]
    due_before = inst[(_due_instants(sim.tables) < END).to_numpy()]
    monthly = sim.tables["accounts"].set_index("account_id")["monthly_amount"]
    months_behind = (overdue / monthly.reindex(overdue.index)).round()
    assert (months_behind <= 1).mean() > 0.4
    assert (months_behind >= 3).mean() > 0.05
    assert 0.3 < sim.truth_cure["p_cure_30"].mean() < 0.8
    assert len(due_before) > 0


def test_latent_arrears_match_the_contract_definition(sim):
    arrears = _arrears(sim.tables, END)
    latent = sim.latent.set_index("account_id")
    monthly = sim.tables["accounts"].set_index("account_id")["monthly_amount"]
    expected = latent["arrears_instalments_at_end"] * monthly
    expected = expected.reindex(arrears.index).astype(float)
    pd.testing.assert_series_equal(arrears.rename(None), expected.rename(None))
    assert set(sim.truth_cure["account_id"]) == set(arrears.index[arrears > 0])


def test_payments_are_positive_and_never_exceed_what_is_due(sim):
    pay, inst = sim.tables["payments"], sim.tables["installments"]
    assert (pay["amount"] > 0).all()
    assert set(pay["method"]) <= set(vocab.PAYMENT_METHODS)
    dues = pd.DataFrame({"account_id": inst["account_id"], "at": _due_instants(sim.tables),
                         "cum_due": inst.groupby("account_id")["amount_due"].cumsum()}).sort_values("at")
    paid = pay.assign(cum_paid=pay.groupby("account_id")["amount"].cumsum()).sort_values("paid_at")
    merged = pd.merge_asof(paid, dues, left_on="paid_at", right_on="at", by="account_id",
                           allow_exact_matches=False)
    assert (merged["cum_paid"] <= merged["cum_due"].fillna(0) + 0.5).all()


# ---------------------------------------------------------------- compliant history


def test_outbound_contacts_fall_inside_the_allowed_hours_and_a_window(sim):
    contacts = sim.tables["contacts"]
    outbound = contacts[contacts["direction"] == "outbound"]
    zones = sim.tables["accounts"].set_index("account_id")["timezone"]
    local = to_local(outbound["contacted_at"], effective_timezones(outbound["account_id"].map(zones)))
    minutes = local.dt.hour * 60 + local.dt.minute
    assert minutes.between(8 * 60, 21 * 60 - 1).all()
    windows = parse_windows(load_params()["calendar"])
    assert (window_codes(local, windows) >= 0).all()


def test_contacts_are_placed_inside_the_chosen_window():
    params = load_params()
    cfg = sm._config(params)
    clock = sm._clock(END, 12, cfg.raw["timezone"])
    rng = np.random.default_rng(0)
    decided = np.floor(rng.uniform(0, 300, 2_000)) * sm.DAY + rng.integers(8 * 60, 21 * 60, 2_000) * 60.0
    win = rng.integers(0, len(cfg.windows), 2_000)
    placed = sm._place_in_window(decided, win, cfg, clock, rng)
    epoch = pd.Timestamp(clock.epoch_day)
    local = pd.Series(epoch + pd.to_timedelta(placed, unit="s"))
    windows = parse_windows(params["calendar"])
    np.testing.assert_array_equal(window_codes(local, windows), win)
    hours = tuple(pd.Timestamp(params["rules"]["hours"][k]).time() for k in ("start", "end"))
    for d, w, p in zip(decided[:200], win[:200], local[:200], strict=True):
        start, end = next_window(epoch + pd.Timedelta(seconds=d), windows[w], hours)
        assert start <= p < end


def test_propensity_is_set_exactly_on_experiment_rows(sim):
    contacts = sim.tables["contacts"]
    experiment = contacts["experiment_id"].notna()
    assert experiment.mean() > 0.7
    assert contacts.loc[experiment, "propensity"].between(0, 1, inclusive="right").all()
    assert contacts.loc[~experiment, "propensity"].isna().all()
    assert contacts.loc[experiment, "experiment_id"].str.fullmatch(r"EXP-\d{4}Q[1-4]").all()
    held = contacts["channel"] == "none"
    assert np.allclose(contacts.loc[held & experiment, "propensity"], 0.2)


def test_held_out_goes_with_channel_none_and_nothing_else(sim):
    contacts = sim.tables["contacts"]
    held = contacts["outcome"] == "held_out"
    assert held.any()
    assert (held == (contacts["channel"] == "none")).all()
    assert (contacts.loc[held, "direction"] == "outbound").all()
    assert contacts.loc[held, "template"].isna().all()
    assert set(contacts["outcome"]) <= set(vocab.OUTCOMES)
    assert contacts["contact_id"].is_unique


def test_no_contact_at_all_for_suppressed_accounts(sim):
    accounts = sim.tables["accounts"]
    suppressed = accounts.loc[accounts[list(sm.SUPPRESSING_FLAGS)].any(axis=1), "account_id"]
    assert len(suppressed) > 100
    assert not sim.tables["contacts"]["account_id"].isin(suppressed).any()


def test_contacts_respect_consent_and_vulnerability(sim):
    contacts = sim.tables["contacts"].merge(sim.tables["accounts"], on="account_id")
    outbound = contacts[contacts["direction"] == "outbound"]
    for channel, column in vocab.CONSENT_COLUMN.items():
        assert outbound.loc[outbound["channel"] == channel, column].all(), channel
    vulnerable = outbound[outbound["vulnerable"]]
    assert set(vulnerable["channel"]) <= {"phone", "letter", "none"}
    assert (vulnerable.loc[vulnerable["channel"] != "none", "template"] == "plan_v2").all()


def test_no_new_contact_within_7_days_of_a_promise(sim):
    contacts = sim.tables["contacts"].sort_values(["account_id", "contacted_at"])
    outbound = contacts[contacts["direction"] == "outbound"]
    previous = outbound.groupby("account_id")[["contacted_at", "outcome"]].shift()
    after_promise = previous["outcome"] == "promise_to_pay"
    gap = outbound["contacted_at"] - previous["contacted_at"]
    assert (gap[after_promise] >= pd.Timedelta(days=7)).all()


# ---------------------------------------------------------------- the truth is right


def test_truth_actions_list_every_action_for_every_overdue_account(sim):
    actions = sim.truth_actions
    per_account = actions.groupby("account_id").size()
    assert (per_account == 1 + 5 * 4 * 2).all()
    assert set(per_account.index) == set(sim.truth_cure["account_id"])
    none = actions[actions["channel"] == "none"]
    assert (none["window"] == "none").all() and (none["offer"] == "none").all()
    assert actions["p_payment_7d"].between(0, 1).all()
    baseline = actions["account_id"].map(none.set_index("account_id")["p_payment_7d"])
    assert (actions["p_payment_7d"] >= baseline - 1e-12).all()


def test_choosing_the_action_per_customer_beats_one_rule_for_everyone(sim):
    actions = sim.truth_actions[sim.truth_actions["channel"] != "none"]
    best_rule = actions.groupby(["channel", "window", "offer"])["p_payment_7d"].mean().max()
    per_customer = actions.groupby("account_id")["p_payment_7d"].max().mean()
    none = sim.truth_actions.loc[sim.truth_actions["channel"] == "none", "p_payment_7d"].mean()
    assert per_customer - none > 1.3 * (best_rule - none)


def test_cure_truth_agrees_with_realised_cures(observed):
    overdue = _overdue_at_end(observed)
    paid = _paid_in(observed.tables, END, END + pd.Timedelta(days=30))
    cured = paid.reindex(overdue.index) >= overdue - 0.5
    truth = observed.truth_cure.set_index("account_id")["p_cure_30"].reindex(overdue.index)
    assert len(truth) > 5_000 and truth.notna().all()
    _assert_within_3se(cured, truth)
    _assert_calibrated(cured, truth)
    latent = observed.latent.set_index("account_id").reindex(overdue.index)
    _assert_calibrated(cured, truth, latent["payer_type"] + latent["shock_at_end"].astype(str))


def test_a_pending_reminder_payment_makes_the_cure_certain(observed):
    latent = observed.latent.set_index("account_id")
    reminder = latent["pending_offer"].eq("reminder") & latent["arrears_instalments_at_end"].gt(0)
    pending = latent.index[reminder]
    assert len(pending) > 20
    assert (latent.loc[pending, "pending_payment_at"] >= END).all()
    truth = observed.truth_cure.set_index("account_id")["p_cure_30"]
    assert (truth.loc[pending] == 1.0).all()
    overdue = _overdue_at_end(observed)
    paid = _paid_in(observed.tables, END, END + pd.Timedelta(days=30))
    assert (paid.loc[pending] >= overdue.loc[pending] - 0.5).all()


def test_no_action_payment_truth_agrees_with_realised_payments(observed):
    overdue = _overdue_at_end(observed)
    paid = _paid_in(observed.tables, END, END + pd.Timedelta(days=7)).reindex(overdue.index) > 0
    actions = observed.truth_actions
    truth = actions[actions["channel"] == "none"].set_index("account_id")["p_payment_7d"]
    truth = truth.reindex(overdue.index)
    _assert_within_3se(paid, truth)
    _assert_calibrated(paid, truth)


@pytest.mark.parametrize("action", [("phone", "weekday_evening", "reminder"),
                                    ("sms", "weekend", "instalment_plan")])
def test_action_payment_truth_agrees_with_realised_payments_when_forced(action):
    forced = sm.simulate(200_000, 12, seed=6, observe_days=7, contacts_after_end=False, forced_action=action)
    overdue = _overdue_at_end(forced)
    paid = _paid_in(forced.tables, END, END + pd.Timedelta(days=7)).reindex(overdue.index) > 0
    actions = forced.truth_actions.set_index(["channel", "window", "offer"]).loc[action]
    truth = actions.set_index("account_id")["p_payment_7d"].reindex(overdue.index)
    none = forced.truth_actions.loc[forced.truth_actions["channel"] == "none", "p_payment_7d"].mean()
    assert truth.mean() > none + 0.03  # the action has an effect worth measuring
    _assert_within_3se(paid, truth)
    _assert_calibrated(paid, truth)
    made = forced.tables["contacts"]
    assert (made["contacted_at"] == END).sum() == len(overdue)


def test_truth_holds_when_end_falls_before_the_morning_debit():
    end = pd.Timestamp("2026-11-05T05:00+09:00")  # day-5 instalments are due, not yet debited
    s = sm.simulate(60_000, 12, seed=8, end=end, observe_days=30, contacts_after_end=False)
    arrears = _arrears(s.tables, end)
    overdue = arrears[arrears > 0.5]
    cured = _paid_in(s.tables, end, end + pd.Timedelta(days=30)).reindex(overdue.index) >= overdue - 0.5
    truth = s.truth_cure.set_index("account_id")["p_cure_30"].reindex(overdue.index)
    assert len(overdue) > 0.15 * 60_000
    _assert_within_3se(cured, truth)
    _assert_calibrated(cured, truth)


# ---------------------------------------------------------------- presets: worlds, not one world


def test_forced_action_truth_holds_where_an_unreached_attempt_still_moves_the_customer():
    params = sm.with_preset(load_params(), "digital")
    action = ("sms", "weekday_evening", "reminder")
    forced = sm.simulate(100_000, 12, seed=9, observe_days=7, contacts_after_end=False, forced_action=action,
                         params=params)
    overdue = _overdue_at_end(forced)
    paid = _paid_in(forced.tables, END, END + pd.Timedelta(days=7)).reindex(overdue.index) > 0
    truth = forced.truth_actions.set_index(["channel", "window", "offer"]).loc[action]
    truth = truth.set_index("account_id")["p_payment_7d"].reindex(overdue.index)
    _assert_within_3se(paid, truth)
    _assert_calibrated(paid, truth)
    con = forced.tables["contacts"]
    outcome = con[con["contacted_at"] == END].set_index("account_id")["outcome"].reindex(overdue.index)
    not_reached = outcome.isin(["delivered", "bounced"]).to_numpy()
    assert paid[not_reached].mean() > paid[~not_reached].mean() * 0.2  # texts that got no reply still work


@pytest.mark.parametrize("preset", ["digital", "mature", "drawn"])
def test_presets_log_their_share_of_experiments_and_a_business_rule_without_propensity(preset):
    params = sm.with_preset(load_params(), preset)
    share = params["simulator"]["decisions"]["experiment_share"]
    s = sm.simulate(6_000, 12, seed=4, params=params)
    decisions = s.tables["contacts"][s.tables["contacts"]["direction"] == "outbound"]
    randomised = decisions["propensity"].notna().mean()
    assert abs(randomised - share) < 0.05, (randomised, share)
    assert 0.0 <= share <= 0.2


def test_the_staged_business_rule_texts_first_and_calls_later():
    params = sm.with_preset(load_params(), "digital", experiment_share=0.0)
    s = sm.simulate(6_000, 12, seed=4, params=params)
    con = s.tables["contacts"]
    bau = con[(con["direction"] == "outbound") & con["propensity"].isna()]
    assert len(bau) and con["propensity"].notna().sum() == 0
    first = bau.groupby("account_id")["channel"].first()
    assert first.isin(["sms", "email"]).mean() > 0.6  # step 1 (day 0): a text or an e-mail where consented
    assert (bau["channel"] == "phone").mean() > 0.1  # step 2 (day 10): a call


def test_the_drawn_world_is_the_same_from_its_seed_and_differs_from_every_designed_one():
    params = load_params()
    assert sm.drawn_world(2026, params) == sm.drawn_world(2026, params)
    drawn = sm.with_preset(params, "drawn")["simulator"]
    for name in ("lease", "digital", "mature"):
        assert sm.with_preset(params, name)["simulator"]["reach"] != drawn["reach"]


def test_an_unknown_preset_or_share_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown simulator preset 'moon'.*digital"):
        sm.with_preset(load_params(), "moon")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sm.with_preset(load_params(), None, experiment_share=1.5)


def test_live_starts_from_the_same_history_and_carries_out_the_products_decisions():
    from pipelines.simulate import Live, simulate

    params = load_params()
    plain = simulate(n_accounts=400, months=6, seed=5, params=params)
    live = Live(400, 6, 5, params)
    for name in ("payments", "contacts"):
        pd.testing.assert_frame_equal(live.tables()[name], plain.tables[name])
    truth = live.truth()
    overdue = truth["account_id"].unique()
    assert set(overdue) == set(plain.truth_cure["account_id"])
    pd.testing.assert_frame_equal(truth.reset_index(drop=True), plain.truth_actions.reset_index(drop=True))
    start, before = live.as_of, len(live.tables()["contacts"])
    pending = int(np.isfinite(live.world.contact_t).sum())   # contacts decided before the product took over
    half = len(overdue) // 2
    decisions = pd.DataFrame({"account_id": overdue, "channel": ["sms"] * half + ["none"] * (len(overdue) - half),
                              "window": "weekday_evening", "offer": "reminder",
                              "propensity": [0.25] * half + [0.5] * (len(overdue) - half - 1) + [1.0]})
    live.play(decisions)
    assert live.as_of == start + pd.Timedelta(days=7)
    new = live.tables()["contacts"]
    assert len(new) > before
    new = new[new["contacted_at"] >= start]
    out = new[new["direction"] == "outbound"]
    sms = out[(out["experiment_id"] == "CUREFLOW") & (out["channel"] != "none")]
    assert half - pending <= len(sms) <= half
    assert (sms["channel"] == "sms").all() and (sms["propensity"] == 0.25).all()
    local = sms["contacted_at"].dt.tz_convert("Asia/Tokyo")
    assert ((local.dt.hour >= 17) & (local.dt.hour < 21) & (local.dt.day_of_week < 5)).all()
    held = out[(out["channel"] == "none") & (out["experiment_id"] == "CUREFLOW")]
    assert len(held) == len(overdue) - half - 1 and (held["propensity"] == 0.5).all()  # the certain one: no row
    assert len(out) - len(sms) - len(held) <= pending     # the simulator decided nothing of its own
