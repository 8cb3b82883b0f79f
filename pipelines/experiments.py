"""`cureflow experiments`: the A/B readout of every randomised decision a team has logged.

Per factor of the contact (channel, window, offer and wording template) and per segment (lifestyle, days
past due): how many decisions each arm has, the share that paid within the response horizon with its 95%
interval, the lift over the hold-out (no contact), and a verdict a team lead reads:

- `works`: the lift's interval is above 0; `worse than no contact`: below 0;
- `undecided`: the interval still spans 0 and is wider than the stated precision; `needed` says how many
  more decisions the arm (and as many for the hold-out) needs before the lift is known to +- precision;
- `no effect found`: the interval spans 0 and is already narrower than that.

The rates are weighted by 1 / propensity (models.experiments, Hajek means with Kish's effective n): the
experiment's draw depends on what the rules allow each account. The needed count is the balanced-design
approximation n* = z^2 (p1 (1 - p1) + p0 (1 - p0)) / precision^2, minus the arm's effective n.
Writes an HTML page (tables and a lift plot per factor) and a JSON file beside it.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from models.config import load_params
from models.contract import read_dir
from models.experiments import arm_table
from models.features import FeatureConfig, prepare
from models.files import write_json_atomic, write_text_atomic

FACTORS = ("channel", "window", "offer", "template")
DPD_BANDS = ((0, 30, "1-30"), (30, 90, "31-90"), (90, 180, "91-180"), (180, math.inf, "180+"))


def dpd_band(days: pd.Series) -> pd.Series:
    """Days past due as the bands a collector works (1-30, 31-90, 91-180, 180+)."""
    out = pd.Series("unknown", index=days.index, dtype=object)
    for low, high, name in DPD_BANDS:
        out[(days > low) & (days <= high) | ((low == 0) & (days <= 0))] = name
    return out


def logged(data: Path, params: dict, end: pd.Timestamp | None = None, decision_log: str | None = None
           ) -> pd.DataFrame:
    """The randomised decisions of a portfolio's contact log whose outcome window is observed, with
    their template, lifestyle and days-past-due band at decision time, and the payment label (propensities
    of contacts that name a cureflow decision from the decision log, `pipelines.feedback`)."""
    from pipelines import feedback
    from pipelines.examples_from_logs import decision_examples
    from pipelines.features import resolve_history_end

    config = FeatureConfig.from_params(params)
    portfolio = feedback.load(read_dir(data), decision_log, config).portfolio
    prep = prepare(portfolio, config)
    end = resolve_history_end(data, prep, None if end is None else end.isoformat())
    examples = decision_examples(portfolio, prep, config, params, end)
    if examples.empty:
        return examples.assign(template=pd.Series(dtype=object), dpd_band=pd.Series(dtype=object))
    template = portfolio.contacts.set_index("contact_id")["template"].reindex(examples["contact_id"]).to_numpy()
    contacted = examples["channel"] != "none"  # a hold-out has no window, offer or template: its arm is `none`
    return examples.assign(template=pd.Series(template, index=examples.index, dtype=object).fillna("(none)")
                           .where(contacted, "none"), window=examples["window"].where(contacted, "none"),
                           dpd_band=dpd_band(examples["days_past_due"]))


def verdicts(table: pd.DataFrame, precision: float, confidence: float = 0.95) -> pd.DataFrame:
    """The arm table with `needed` (more decisions before the lift is known to +- precision) and `verdict`."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + confidence / 2))
    table = table.copy()
    hold = table[table["holdout"]].set_index("segment")["rate"]
    p0 = table["segment"].map(hold).to_numpy(dtype=float)
    p1 = table["rate"].to_numpy(dtype=float)
    p0 = np.where(np.isfinite(p0), p0, p1)  # no hold-out yet: plan with the arm's own rate on both sides
    target = z ** 2 * (p1 * (1 - p1) + p0 * (1 - p0)) / precision ** 2
    n = table["n_eff"].to_numpy(dtype=float) if "n_eff" in table else table["n"].to_numpy(dtype=float)
    needed = np.where(np.isfinite(target), np.ceil(np.maximum(target - n, 0)), np.nan)
    table["needed"] = np.where(table["holdout"], np.nan, needed)
    width = (table["lift_high"] - table["lift_low"]) / 2
    table["verdict"] = np.select(
        [table["holdout"], table["lift"].isna(), table["lift_low"] > 0, table["lift_high"] < 0,
         width > precision],
        ["hold-out", "no hold-out in this segment", "works", "worse than no contact", "undecided"],
        default="no effect found")
    return table


def readout(decisions: pd.DataFrame, params: dict) -> dict[str, pd.DataFrame]:
    """Per factor, one table over all decisions and one per segment (lifestyle, days-past-due band)."""
    conf = params["policy"].get("experiments") or {}
    precision = float(conf.get("precision", 0.02))
    out = {}
    for factor in FACTORS:
        for segment in (None, "segment", "dpd_band"):
            table = arm_table(decisions, [factor], segment, weighted=True)
            out[f"{factor} by {segment or 'all'}"] = verdicts(table, precision)
    return out


def winners(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per factor over all decisions: the arm with the highest lift among those that work (if any)."""
    rows = []
    for factor in FACTORS:
        t = tables[f"{factor} by all"]
        works = t[t["verdict"] == "works"].sort_values("lift", ascending=False)
        undecided = t[t["verdict"].isin(["undecided", "no hold-out in this segment"])]
        rows.append({"factor": factor, "best so far": works[factor].iloc[0] if len(works) else "(none yet)",
                     "lift": float(works["lift"].iloc[0]) if len(works) else float("nan"),
                     "undecided arms": len(undecided),
                     "decisions still needed": int(undecided["needed"].sum()) if len(undecided) else 0})
    return pd.DataFrame(rows)


def _plot(table: pd.DataFrame, factor: str) -> str:
    """Lift over the hold-out per arm with its 95% interval, as an embedded PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = table[~table["holdout"] & table["lift"].notna()].sort_values("lift")
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(arms) + 1.4))
    y = np.arange(len(arms))
    colours = arms["verdict"].map({"works": "#176b2c", "worse than no contact": "#a3141c"}).fillna("#777")
    for yi, (_, arm), colour in zip(y, arms.iterrows(), colours, strict=True):
        ax.errorbar([arm["lift"]], [yi], xerr=[[max(arm["lift"] - arm["lift_low"], 0)],
                                              [max(arm["lift_high"] - arm["lift"], 0)]],
                    fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_yticks(y, arms[factor].astype(str))
    ax.set(xlabel="paid within the horizon: lift over the hold-out (95% interval)", title=f"By {factor}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="lift by {factor}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def write(tables: dict[str, pd.DataFrame], decisions: pd.DataFrame, params: dict, out: Path) -> None:
    """The HTML readout and a JSON file of the same tables beside it."""
    from pipelines.model_report import STYLE, _table

    precision = float((params["policy"].get("experiments") or {}).get("precision", 0.02))
    head = (f"<h1>Experiments</h1><p>{len(decisions):,} randomised decisions (their outcome window observed): "
            f"the share that paid within {params['response']['horizon_days']} days per arm, weighted by the "
            f"inverse of the chance the experiment chose it, with 95% intervals; the lift over the hold-out "
            f"(no contact); and how many more decisions an undecided arm needs before its lift is known to "
            f"&plusmn;{precision:.0%}.</p>")
    parts = [head, "<h2>Winners so far</h2>", _table(winners(tables))] if len(decisions) else [
        head, "<p>No randomised decision is logged yet: the queue follows the playbook, and its experiments "
              "(params policy.explore) start filling this page once their outcomes come back.</p>"]
    cols = ["n", "rate", "rate_low", "rate_high", "lift", "lift_low", "lift_high", "verdict", "needed"]
    for factor in FACTORS if len(decisions) else ():
        overall = tables[f"{factor} by all"]
        parts += [f"<h2>By {factor}</h2>", _plot(overall, factor), _table(overall[[factor, *cols]])]
        for segment, title in (("segment", "lifestyle"), ("dpd_band", "days past due")):
            seg = tables[f"{factor} by {segment}"]
            parts += [f"<h3>{factor} by {title}</h3>",
                      _table(seg[["segment", factor, *cols]].rename(columns={"segment": title}))]
    out.parent.mkdir(parents=True, exist_ok=True)
    page = f"<!doctype html><meta charset='utf-8'><title>cureflow experiments</title><style>{STYLE}</style>"
    write_text_atomic(page + "".join(parts), out)
    payload = {name: json.loads(t.to_json(orient="records")) for name, t in tables.items()}
    write_json_atomic({"decisions": len(decisions), "tables": payload}, out.with_suffix(".json"), indent=1)


def run(data: Path, out: Path, params: dict | None = None, end: pd.Timestamp | None = None, log=print,
        decision_log: str | None = None) -> dict:
    """Read the logs, write the readout; returns the tables."""
    params = params or load_params()
    from models.progress import step

    with step("experiments: the randomised decisions and their outcomes"):
        decisions = logged(data, params, end, decision_log)
    tables = readout(decisions, params) if len(decisions) else {}
    write(tables, decisions, params, out)
    if len(decisions):
        log(winners(tables).to_string(index=False))
    log(f"experiments: {len(decisions):,} randomised decisions; readout {out}")
    return tables
