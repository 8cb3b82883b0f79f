"""The batch's summary beside the work queue: `<out>.summary.json` and a one-page HTML report for the team lead.

The report is one self-contained HTML file (plots embedded as base64 PNG, no scripts, no external links) with
what a team lead reads in the morning: the day's work list (the top `WORK_LIST` accounts by priority with
tier, action, window, offer, reasons and blocked rules: exactly what the work queue file already holds for
them, and the page says so), then figures: the priority distribution, actions by channel and tier, expected
value by tier, calls used against capacity, accounts held by each rule, and the change since the previous
run (on a first run, a sentence instead of an empty chart).

The previous run is the summary JSON found beside the output before this run writes its own. A run started
again after a kill (same run id) keeps comparing with the run before it, not with itself.
"""

from __future__ import annotations

import base64
import html
import io
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models import vocab
from models.files import write_text_atomic

TIER_ORDER = vocab.TIERS
CHANNEL_ORDER = ("phone", "ivr", "sms", "email", "letter", "none")
WORK_LIST = 50  # accounts in the report's work list
COMPARED = ("overdue", "calls_kept", "calls_proposed", "expected_value", "priority_total", "cure_probability_mean")


def summary_path(out: Path) -> Path:
    return Path(f"{out}.summary.json")


def report_path(out: Path) -> Path:
    return Path(f"{out}.report.html")


def _ordered_counts(values: pd.Series, order: tuple[str, ...]) -> dict[str, int]:
    """Counts in a fixed order (known values first, then any other value), zero counts dropped."""
    counts = values.value_counts()
    keys = [k for k in order if k in counts.index] + sorted(k for k in counts.index if k not in order)
    return {str(k): int(counts[k]) for k in keys}


def held_by_rule(blocked: pd.Series) -> dict[str, int]:
    """Accounts with at least one action blocked by each rule (CAPACITY included), most first."""
    counts: dict[str, int] = {}
    for text in blocked:
        for rule in {b["rule"] for b in json.loads(text)}:
            counts[rule] = counts.get(rule, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def figures(rows: pd.DataFrame, values: np.ndarray) -> dict:
    """The aggregates of the work queue the summary keeps and the report plots."""
    by_tier = rows.assign(_v=values).groupby("tier", sort=False)
    priority = rows["priority"].to_numpy(dtype=float)
    quantiles = {f"p{q}": float(np.quantile(priority, q / 100)) if len(priority) else 0.0 for q in (50, 90, 99)}
    crossed = pd.crosstab(rows["tier"], rows["channel"]) if len(rows) else pd.DataFrame()
    return {
        "overdue": len(rows),
        "tiers": _ordered_counts(rows["tier"], TIER_ORDER),
        "channels": _ordered_counts(rows["channel"], CHANNEL_ORDER),
        "offers": _ordered_counts(rows["offer"], ()),
        "channel_by_tier": {str(t): {str(c): int(n) for c, n in crossed.loc[t].items() if n}
                            for t in crossed.index},
        "expected_value_by_tier": {str(t): float(v) for t, v in by_tier["_v"].sum().items()},
        "held_by_rule": held_by_rule(rows["blocked"]),
        "priority": {**quantiles, "max": float(priority.max()) if len(priority) else 0.0},
        "priority_total": float(priority.sum()),
        "cure_probability_mean": float(rows["cure_probability"].mean()) if len(rows) else 0.0,
    }


def previous_summary(out: Path, run: str) -> dict | None:
    """The summary of the run before this one: the file beside the output, or (when that file is this very
    run's, written before a kill) the previous run it recorded."""
    path = summary_path(out)
    if not path.exists():
        return None
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if earlier.get("run_id") == run:
        return earlier.get("previous")
    return {k: earlier.get(k) for k in ("run_id", "as_of", "model_version", "tiers", "channels", "held_by_rule",
                                        "phone_capacity", *COMPARED)}


def change(now: dict, before: dict | None) -> dict | None:
    """Differences from the previous run: headline figures and counts by tier and by channel."""
    if before is None:
        return None
    delta = {k: _minus(now.get(k), before.get(k)) for k in COMPARED}
    for group in ("tiers", "channels", "held_by_rule"):
        keys = list(dict.fromkeys([*(before.get(group) or {}), *now[group]]))
        delta[group] = {k: now[group].get(k, 0) - (before.get(group) or {}).get(k, 0) for k in keys}
    return delta


def _minus(a, b):
    return None if a is None or b is None else a - b


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write(out: Path, rows: pd.DataFrame, values: np.ndarray, capacity: dict, context: dict, timings: dict,
          started: float) -> dict:
    """Write `<out>.summary.json` and `<out>.report.html` (each atomically); returns the summary."""
    out = Path(out)
    summary = {**context, **capacity, **figures(rows, values)}
    summary["previous"] = previous_summary(out, context["run_id"])
    summary["change"] = change(summary, summary["previous"])
    wall = time.perf_counter() - started
    summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
    summary.update(wall_s=round(wall, 3), accounts_per_second=summary["accounts"] / wall if wall else 0.0,
                   peak_rss_gib=round(peak_rss_gib(), 3), report=str(report_path(out)))
    write_text_atomic(render(summary, rows, values), report_path(out), private=True)
    write_text_atomic(json.dumps(summary, indent=2, default=_plain), summary_path(out), private=True)
    return summary


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


# ---------------------------------------------------------------------------------------------- plots


def _png(fig) -> str:
    """A matplotlib figure as a base64 PNG data URI."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 6.4, height: float = 3.4):
    from matplotlib.figure import Figure  # matplotlib only when a report is drawn: slow to import

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def plot_priority(rows: pd.DataFrame) -> str:
    """Histogram of priority (JPY, log-spaced bins): how much of the queue is worth working."""
    fig, ax = _figure()
    priority = rows["priority"].to_numpy(dtype=float)
    positive = priority[priority > 0]
    if len(positive):
        bins = np.geomspace(max(positive.min(), 1.0), max(positive.max(), 10.0), 40)
        ax.hist(np.clip(positive, bins[0], None), bins=bins, color="#4C72B0")
        ax.set_xscale("log")
    ax.set(title=f"Priority distribution ({len(rows):,} overdue accounts)", xlabel="priority (JPY, log scale)",
           ylabel="accounts")
    return _png(fig)


def plot_channel_by_tier(summary: dict) -> str:
    """Stacked bars: accounts per tier, split by the channel of the chosen action."""
    fig, ax = _figure(6.4, 3.8)
    tiers = list(summary["tiers"])[::-1]
    left = np.zeros(len(tiers))
    for channel in summary["channels"]:
        counts = np.array([summary["channel_by_tier"].get(t, {}).get(channel, 0) for t in tiers], dtype=float)
        ax.barh(tiers, counts, left=left, label=channel)
        left += counts
    ax.set(title="Actions by channel and tier", xlabel="accounts")
    if summary["channels"]:
        ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_value_by_tier(summary: dict) -> str:
    """Expected value of the chosen actions (JPY over no contact, after costs) summed per tier."""
    fig, ax = _figure()
    tiers = list(summary["tiers"])[::-1]
    from matplotlib.ticker import FuncFormatter  # as above: only when a report is drawn

    ax.barh(tiers, [summary["expected_value_by_tier"].get(t, 0.0) for t in tiers], color="#55A868")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.tick_params(axis="x", labelsize=8)
    ax.set(title=f"Expected value by tier (total JPY {summary['expected_value']:,.0f})",
           xlabel="JPY over no contact, after contact costs")
    return _png(fig)


def plot_calls(summary: dict) -> str:
    """Calls proposed by the policy, calls kept, and the day's capacity."""
    fig, ax = _figure(6.4, 2.8)
    capacity = summary["phone_capacity"]
    names = ["proposed", "kept", "moved to another action"]
    counts = [summary["calls_proposed"], summary["calls_kept"], summary["calls_moved_to_other_actions"]]
    ax.barh(names[::-1], counts[::-1], color=["#DD8452", "#4C72B0", "#999999"])
    if capacity is not None:
        ax.axvline(capacity, color="black", linestyle="--", label=f"capacity {capacity:,}")
        ax.legend(fontsize=8)
    title = "unlimited capacity" if capacity is None else f"{summary['calls_kept']:,} of {capacity:,} calls used"
    ax.set(title=f"Calls against capacity: {title}", xlabel="calls")
    return _png(fig)


def plot_held_by_rule(summary: dict) -> str:
    """Accounts with an action blocked by each rule."""
    fig, ax = _figure(6.4, 3.6)
    held = summary["held_by_rule"]
    ax.barh(list(held)[::-1], list(held.values())[::-1], color="#DD8452")
    ax.set(title="Accounts held by each rule (an action blocked)", xlabel="accounts")
    return _png(fig)


def plot_change(summary: dict) -> str:
    """Accounts per tier now against the previous run."""
    fig, ax = _figure(6.4, 3.8)
    before = (summary["previous"] or {}).get("tiers") or {}
    tiers = list(dict.fromkeys([*summary["tiers"], *before]))[::-1]
    y = np.arange(len(tiers))
    ax.barh(y + 0.2, [before.get(t, 0) for t in tiers], height=0.4, label="previous run", color="#BBBBBB")
    ax.barh(y - 0.2, [summary["tiers"].get(t, 0) for t in tiers], height=0.4, label="this run", color="#4C72B0")
    ax.set_yticks(y, tiers)
    title = "Change since the previous run" if summary["previous"] else "No previous run beside this output"
    ax.set(title=title, xlabel="accounts")
    ax.legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------------------------- html


def _table(pairs: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in pairs)
    return f"<table>{body}</table>"


def _signed(value, money: bool = False, digits: int = 0) -> str:
    """A difference with its sign: `+12`, `JPY -3,400`, `+0.012`; n/a when either side is unknown."""
    if value is None:
        return "n/a"
    return f"{'JPY ' if money else ''}{value:+,.{digits}f}"


def headline(summary: dict) -> list[tuple[str, str]]:
    """The figures at the top of the report."""
    capacity = "unlimited" if summary["phone_capacity"] is None else f"{summary['phone_capacity']:,}"
    return [
        ("as of", summary["as_of"]), ("model", summary["model_version"]), ("run", summary["run_id"]),
        ("accounts scored", f"{summary['accounts']:,}"), ("overdue (in the work queue)", f"{summary['overdue']:,}"),
        ("calls kept / proposed / capacity", f"{summary['calls_kept']:,} / {summary['calls_proposed']:,} / {capacity}"),
        ("value of one more collector-hour", f"JPY {summary['value_of_one_more_collector_hour']:,.0f}"),
        ("expected value of the queue", f"JPY {summary['expected_value']:,.0f}"),
        ("mean chance of cure", f"{summary['cure_probability_mean']:.3f}"),
        ("engine, chunks (resumed)", f"{summary['engine']}, {summary['chunks']} ({summary['chunks_resumed']})"),
    ]


def change_rows(summary: dict) -> list[tuple[str, str]]:
    """The change table: headline deltas, then tiers."""
    delta, before = summary["change"], summary["previous"]
    if delta is None:
        return [("previous run", "none: this is the first run beside this output, so there is nothing to "
                                 "compare with yet")]
    rows = [("previous run", f"{before.get('run_id')} as of {before.get('as_of')} ({before.get('model_version')})"),
            ("overdue", _signed(delta["overdue"])), ("calls kept", _signed(delta["calls_kept"])),
            ("expected value", _signed(delta["expected_value"], money=True)),
            ("total priority", _signed(delta["priority_total"], money=True)),
            ("mean chance of cure", _signed(delta["cure_probability_mean"], digits=3))]
    return rows + [(f"tier: {t}", _signed(v)) for t, v in delta["tiers"].items() if v]


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:24px auto;color:#222}"
         "table{border-collapse:collapse;margin:8px 0}th,td{border-bottom:1px solid #ddd;padding:3px 10px;"
         "text-align:left}th{font-weight:600}.grid{display:flex;flex-wrap:wrap;gap:12px}"
         ".grid figure{margin:0}.grid img{width:530px;border:1px solid #eee}figcaption{font-size:13px;color:#555}"
         ".work td{font-size:13px;vertical-align:top}")


def experiments_link(summary: dict) -> str:
    """A link to the A/B readout beside the report (`cureflow experiments`), or how to make one."""
    page = Path(summary["report"]).parent / "experiments.html"
    if page.exists():
        return ("What the experiments have shown so far, per channel, window, offer and template: "
                "<a href='experiments.html'>the A/B readout</a>.")
    return (f"No A/B readout beside this report yet: <code>cureflow experiments --out "
            f"{html.escape(str(page))}</code> writes one.")


def _when(start, end) -> str:
    """A contact window in the account's local time: `Mon 11-02 17:00-21:00`."""
    if not start:
        return ""
    a, b = pd.Timestamp(start), pd.Timestamp(end)
    return f"{a:%a %m-%d %H:%M}-{b:%H:%M} (UTC{a:%z})"


def work_list(rows: pd.DataFrame, n: int = WORK_LIST) -> str:
    """The top `n` accounts of the queue (already in priority order) as an HTML table for people."""
    if rows.empty:
        return "<p>No account is overdue: nothing to do today.</p>"
    top = rows.head(n)
    body = []
    for rank, row in enumerate(top.itertuples(index=False), start=1):
        reasons = "; ".join(json.loads(row.reasons)) if isinstance(row.reasons, str) else ""
        blocked = sorted({b["rule"] for b in json.loads(row.blocked)}) if isinstance(row.blocked, str) else []
        action = "no contact" if row.channel == "none" else f"{row.channel}, {str(row.offer).replace('_', ' ')}"
        cells = (str(rank), row.account_id, row.tier, action, _when(row.window_start, row.window_end),
                 f"{row.priority:,.0f}", f"{row.cure_probability:.2f}", reasons, ", ".join(blocked))
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("#", "account", "tier", "action", "when (local time)", "priority",
                                              "cure chance", "why", "blocked by"))
    return (f"<p>The top {len(top):,} of {len(rows):,} overdue accounts by priority. This list holds what the "
            f"work queue file already holds for them (account ids and the reasons in words): share it as you "
            f"would share the queue.</p><table class='work'><tr>{head}</tr>{''.join(body)}</table>")


def render(summary: dict, rows: pd.DataFrame, values: np.ndarray) -> str:
    """The whole report as one HTML page: the work list, then aggregates."""
    plots = {"Priority distribution": plot_priority(rows),
             "Actions by channel and tier": plot_channel_by_tier(summary),
             "Expected value by tier": plot_value_by_tier(summary),
             "Calls against capacity": plot_calls(summary),
             "Accounts held by each rule": plot_held_by_rule(summary)}
    if summary["previous"]:
        plots["Change since the previous run"] = plot_change(summary)
    images = "".join(f'<figure><img alt="{title}" src="{uri}"><figcaption>{title}</figcaption></figure>'
                     for title, uri in plots.items())
    timing = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in summary["timings"].items())
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cureflow nightly batch "
            f"{html.escape(summary['as_of'])}</title><style>{STYLE}</style></head><body>"
            f"<h1>Work queue as of {html.escape(summary['as_of'])}</h1>{_table(headline(summary))}"
            f"<h2>Today's work list</h2>{work_list(rows)}"
            f"<h2>Plots</h2><div class='grid'>{images}</div>"
            f"<h2>Change since the previous run</h2>{_table(change_rows(summary))}"
            f"<h2>Experiments</h2><p>{experiments_link(summary)}</p>"
            f"<p>Run time {summary['wall_s']:.1f} s ({timing}); {summary['accounts_per_second']:,.0f} accounts/s; "
            f"peak memory {summary['peak_rss_gib']:.2f} GiB. Account ids: in the work list only.</p></body></html>")
