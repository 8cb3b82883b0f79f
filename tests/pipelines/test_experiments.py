"""`cureflow experiments`: the A/B readout a team lead reads, on a simulated log and on a first export."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from models.config import load_params
from models.contract import read_dir, write_dir
from pipelines.cli import app
from pipelines.experiments import dpd_band, verdicts


def _table(rate: float, n: int, hold_rate: float, hold_n: int) -> pd.DataFrame:
    from models.experiments import arm_table

    rows = [{"channel": "sms", "label": int(i < rate * n)} for i in range(n)]
    rows += [{"channel": "none", "label": int(i < hold_rate * hold_n)} for i in range(hold_n)]
    frame = pd.DataFrame(rows).assign(propensity=0.5)
    return arm_table(frame, ["channel"], None, weighted=True)


def test_an_arm_needs_fewer_decisions_as_it_gathers_them_and_is_decided_once_narrow():
    small = verdicts(_table(0.25, 200, 0.20, 2000), precision=0.02).set_index("channel").loc["sms"]
    large = verdicts(_table(0.25, 1500, 0.20, 2000), precision=0.02).set_index("channel").loc["sms"]
    assert small["verdict"] == "undecided" and small["needed"] > large["needed"]
    assert small["needed"] + small["n_eff"] == pytest.approx(large["needed"] + large["n_eff"], rel=0.05)
    big = verdicts(_table(0.30, 20000, 0.20, 20000), precision=0.02).set_index("channel").loc["sms"]
    assert big["verdict"] == "works" and big["needed"] == 0
    flat = verdicts(_table(0.20, 20000, 0.20, 20000), precision=0.02).set_index("channel").loc["sms"]
    assert flat["verdict"] == "no effect found"


def test_days_past_due_fall_in_the_bands_a_collector_works():
    assert dpd_band(pd.Series([1, 30, 31, 90, 91, 180, 181, 900])).tolist() == [
        "1-30", "1-30", "31-90", "31-90", "91-180", "91-180", "180+", "180+"]


def test_the_readout_counts_every_observed_randomised_decision_and_says_who_works(sim_dir, tmp_path):
    out = tmp_path / "experiments.html"
    done = CliRunner().invoke(app, ["experiments", "--data", str(sim_dir), "--out", str(out)])
    assert done.exit_code == 0, done.output
    page = out.read_text()
    payload = json.loads(out.with_suffix(".json").read_text())
    con = read_dir(sim_dir).contacts
    end = pd.Timestamp(json.loads((sim_dir / "manifest.json").read_text())["end"])
    k = int(load_params()["response"]["horizon_days"])
    randomised = con[con["propensity"].notna() & (con["direction"] == "outbound")
                     & (con["contacted_at"] + pd.Timedelta(days=k) <= end)]
    assert 0.95 * len(randomised) <= payload["decisions"] <= len(randomised)
    channels = pd.DataFrame(payload["tables"]["channel by all"])
    assert channels["n"].sum() == payload["decisions"]
    for row in channels[~channels["holdout"]].itertuples():
        assert (row.verdict == "works") == (row.lift_low > 0)
    for factor in ("channel", "window", "offer", "template"):
        assert f"By {factor}" in page and f'alt="lift by {factor}"' in page
    assert "Winners so far" in page and "days past due" in page


def test_a_first_export_without_experiments_gets_a_page_that_says_so(sim_dir, tmp_path):
    p = read_dir(sim_dir)
    contacts = p.contacts[p.contacts["channel"] != "none"].assign(propensity=np.nan, experiment_id=None)
    plain = tmp_path / "plain"
    write_dir(type(p)(p.accounts, p.installments, p.payments, contacts.reset_index(drop=True)), plain)
    out = tmp_path / "experiments.html"
    done = CliRunner().invoke(app, ["experiments", "--data", str(plain), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "No randomised decision is logged yet" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["decisions"] == 0
