"""Monitoring: population stability of a batch's features, cure chances and action mix against the
training reference the bundle carries, and drift flagged past the thresholds in params."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from models.config import load_params
from pipelines.monitor import Thresholds, bin_shares, categorical_spec, compare, numeric_spec, psi

LIMITS = Thresholds(psi_warn=0.1, psi_alert=0.25, min_share=1e-4, min_batch_rows=200)


def test_psi_is_zero_for_the_same_mix_and_matches_the_formula():
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    expected = (0.9 - 0.5) * np.log(0.9 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))  # an empty reference bin is floored, not infinite


def test_numeric_bins_are_reference_deciles_with_a_bin_for_missing_values():
    values = np.r_[np.arange(1000, dtype=float), [np.nan] * 50]
    spec = numeric_spec(values, bins=10)
    assert len(spec["edges"]) == 9 and len(spec["shares"]) == 11
    assert spec["shares"][-1] == pytest.approx(50 / 1050)
    assert np.allclose(spec["shares"][:-1], 100 / 1050, atol=1 / 1050)
    assert bin_shares(np.array([-5.0, 5000.0, np.nan]), spec).tolist() == [1 / 3] + [0] * 8 + [1 / 3, 1 / 3]


def test_unseen_categories_fall_in_other():
    spec = categorical_spec(np.array(["phone", "sms", "phone", None], dtype=object))
    assert spec["categories"] == ["missing", "phone", "sms"]
    assert bin_shares(np.array(["email", "phone"], dtype=object), spec).tolist() == [0.0, 0.5, 0.0, 0.5]


def _reference(rng: np.random.Generator) -> dict:
    feats = pd.DataFrame({"arrears": rng.lognormal(11, 0.5, 20_000), "employment": rng.integers(0, 4, 20_000) * 1.0})
    actions = pd.DataFrame({"channel": rng.choice(["phone", "letter", "none"], 20_000, p=[0.2, 0.5, 0.3]),
                            "offer": rng.choice(["reminder", "none"], 20_000)})
    from pipelines.monitor import reference_profile

    return reference_profile(feats, rng.beta(2, 2, 20_000), actions, {"monitor": {"bins": 10}})


def _batch(rng: np.random.Generator, n: int, shift: float = 0.0, calls: float = 0.2):
    feats = pd.DataFrame({"arrears": rng.lognormal(11 + shift, 0.5, n), "employment": rng.integers(0, 4, n) * 1.0})
    actions = pd.DataFrame({"channel": rng.choice(["phone", "letter", "none"], n, p=[calls, 0.7 - calls, 0.3]),
                            "offer": rng.choice(["reminder", "none"], n)})
    return feats, rng.beta(2, 2, n), actions


def test_a_batch_from_the_same_population_is_stable_and_a_shifted_one_drifts():
    rng = np.random.default_rng(5)
    reference = _reference(rng)
    same = compare(reference, *_batch(rng, 5000), LIMITS).set_index("name")
    assert (same["status"] == "ok").all(), same
    shifted = compare(reference, *_batch(rng, 5000, shift=0.5, calls=0.5), LIMITS).set_index("name")
    assert shifted.loc["arrears", "status"] == "drift" and shifted.loc["channel", "status"] == "drift"
    assert shifted.loc["employment", "status"] == "ok" and shifted.loc["cure_probability", "status"] == "ok"


def test_a_batch_is_compared_with_the_same_day_of_the_month_when_the_reference_has_it():
    from pipelines.monitor import day_profile, for_day

    rng = np.random.default_rng(7)
    reference = _reference(rng)
    feats, scores, _ = _batch(rng, 3000, shift=0.5)
    reference["days"]["1"] = {"date": "2026-10-01T00:00:00+09:00", **day_profile(reference, feats, scores)}
    matched, source = for_day(reference, pd.Timestamp("2026-11-01T00:00:00+09:00"), "Asia/Tokyo")
    assert "same day of the month (2026-10-01" in source
    assert matched["features"]["arrears"]["n"] == 3000 and matched["features"]["arrears"]["edges"] == \
        reference["features"]["arrears"]["edges"]
    later = compare(matched, *_batch(rng, 3000, shift=0.5), LIMITS).set_index("name")
    assert later.loc["arrears", "status"] == "ok"   # shifted like the same day of the training month
    pooled, source = for_day(reference, pd.Timestamp("2026-11-02T00:00:00+09:00"), "Asia/Tokyo")
    assert pooled is reference and "pooled" in source


def test_values_rounded_to_six_decimals_stay_in_their_bin():
    spec = numeric_spec(np.repeat([0.2946606786427146, 0.5, 0.8], 100), bins=3)
    assert bin_shares(np.round(np.repeat([0.2946606786427146, 0.5, 0.8], 100), 6), spec).tolist() == spec["shares"]


def test_a_small_batch_is_reported_but_never_flagged():
    rng = np.random.default_rng(6)
    table = compare(_reference(rng), *_batch(rng, 50, shift=1.0), LIMITS).set_index("name")
    assert table.loc["arrears", "psi"] > LIMITS.psi_alert
    assert (table["status"] == "too few rows").all()
    assert table.loc["arrears", "noise"] == pytest.approx(10 * (1 / 50 + 1 / 20_000))  # 10 deciles + missing


@pytest.mark.slow
def test_training_stores_a_reference_of_every_feature_score_and_action(trained):
    from models.registry import load_bundle

    bundle = load_bundle(str(trained["bundle_path"])).bundle
    reference = bundle.metadata["reference"]
    assert list(reference["features"]) == bundle.feature_names
    assert reference["features"]["employment"]["kind"] == "categorical"
    fixed = load_params()["monitor"]["fixed_bins"]
    assert reference["features"]["days_past_due"]["edges"] == fixed["days_past_due"] == [29, 59, 89]
    assert set(reference["actions"]) == {"channel", "offer"}
    assert reference["score"]["n"] == len(pd.read_parquet(trained["root"] / "train" / "holdout.parquet"))
    for spec in [reference["score"], *reference["features"].values(), *reference["actions"].values()]:
        assert sum(spec["shares"]) == pytest.approx(1.0)
    assert sorted(map(int, reference["days"])) == list(range(1, 32))  # every day of the month of the last 31
    first = reference["days"]["1"]
    assert first["date"].startswith("2026-10-01T00:00:00+09:00")
    assert len(first["features"]["days_past_due"]["shares"]) == len(reference["features"]["days_past_due"]["shares"])


@pytest.mark.slow
def test_monitor_reads_the_work_queue_and_compares_its_rows(trained, tmp_path, monkeypatch):
    from models.contract import read_dir
    from models.registry import load_bundle
    from pipelines import monitor
    from serving.batch import score_dir

    monkeypatch.setenv("CUREFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'decisions.db'}")  # not the checkout's
    queue = tmp_path / "queue.parquet"
    rows = score_dir(trained["data"], queue, as_of="2026-11-01T00:00:00+09:00", model_uri=str(trained["bundle_path"]),
                     progress=False)
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    report = monitor.run(bundle, read_dir(trained["data"]), None, queue, load_params(), tmp_path / "m.json",
                         log=lambda *_: None)
    items = pd.DataFrame(report["items"]).set_index("name")
    assert report["batch_rows"] == len(rows) and (items["n_batch"] == len(rows)).all()
    assert set(items.index) == {"cure_probability", "channel", "offer", *bundle.feature_names}
    assert json.loads((tmp_path / "m.json").read_text())["as_of"] == report["as_of"]


@pytest.mark.slow
def test_monitor_command_flags_a_portfolio_whose_amounts_tripled(trained, tmp_path, monkeypatch):
    from models.contract import Portfolio, read_dir, write_dir
    from pipelines.cli import app

    p = read_dir(trained["data"])
    drifted = tmp_path / "drifted"
    write_dir(Portfolio(p.accounts.assign(monthly_amount=p.accounts["monthly_amount"] * 3),
                        p.installments.assign(amount_due=p.installments["amount_due"] * 3),
                        p.payments.assign(amount=p.payments["amount"] * 3), p.contacts), drifted)
    params = load_params()
    params["monitor"]["min_batch_rows"] = 10
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("CUREFLOW_PARAMS", str(tmp_path / "params.yaml"))
    common = ["monitor", "--model", str(trained["bundle_path"]), "--as-of", "2026-11-01T00:00:00+09:00"]
    done = CliRunner().invoke(app, [*common, "--data", str(drifted), "--out", str(tmp_path / "d.json"),
                                    "--fail-on-drift"])
    assert done.exit_code == 1, done.output
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["drift"] and {"monthly_amount", "arrears"} <= set(report["drifted"])
    assert "DRIFT" in done.output
    same = CliRunner().invoke(app, [*common, "--data", str(trained["data"]), "--out", str(tmp_path / "s.json")])
    assert same.exit_code == 0, same.output
    base = {i["name"]: i["psi"] for i in json.loads((tmp_path / "s.json").read_text())["items"]}
    moved = {i["name"]: i["psi"] for i in report["items"]}
    assert moved["monthly_amount"] > 1.0 > base["monthly_amount"]
