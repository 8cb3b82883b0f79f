"""The nightly batch: score a whole portfolio in chunks of accounts with the same bundle the API uses."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import ProgressColumn
from rich.text import Text

from models import policy
from models.answers import CHILD_TABLES
from models.bundle import ALT_COLUMNS, BATCH_COLUMNS
from models.contract import Portfolio, read_dir
from models.registry import load_bundle


def account_chunks(portfolio: Portfolio, size: int) -> Iterator[Portfolio]:
    """Split a portfolio into portfolios of at most `size` accounts (each account's rows stay together)."""
    ids = pd.Index(portfolio.accounts["account_id"])
    order: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in CHILD_TABLES:
        codes = ids.get_indexer(getattr(portfolio, name)["account_id"])
        perm = np.argsort(codes, kind="stable")
        order[name] = (codes[perm], perm)
    for lo in range(0, len(ids), size):
        hi = min(lo + size, len(ids))
        parts = {"accounts": portfolio.accounts.iloc[lo:hi].reset_index(drop=True)}
        for name, (codes, perm) in order.items():
            a, b = np.searchsorted(codes, [lo, hi])
            parts[name] = getattr(portfolio, name).iloc[np.sort(perm[a:b])].reset_index(drop=True)
        yield Portfolio(**parts)


class RateColumn(ProgressColumn):
    """Accounts per second, for the progress bar."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} accounts/s" if task.speed else "")


def default_as_of(portfolio: Portfolio) -> pd.Timestamp:
    """The end of the observed history: the day after the latest event (UTC midnight)."""
    latest = [portfolio.payments["paid_at"].max(), portfolio.contacts["contacted_at"].max()]
    latest = [t for t in latest if pd.notna(t)]
    return max(latest).ceil("D") if latest else pd.Timestamp.now(tz="UTC").floor("D")


def score_portfolio(bundle, portfolio: Portfolio, as_of: pd.Timestamp, chunk_size: int = 50_000,
                    progress: bool = True, explore: float | None = None) -> pd.DataFrame:
    """All overdue accounts' batch rows (with the private columns capacity needs), highest priority
    first; a progress bar with rate and time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    parts = []
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("accounts"),
               RateColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("score", total=len(portfolio.accounts))
        for chunk in account_chunks(portfolio, chunk_size):
            parts.append(bundle.score(chunk, as_of, explore=explore))
            bar.advance(task, len(chunk.accounts))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (*BATCH_COLUMNS, *ALT_COLUMNS)})
    rows = pd.concat(parts, ignore_index=True)
    rows = rows.sort_values(["priority", "account_id"], ascending=[False, True], kind="stable")
    return rows.reset_index(drop=True)


def apply_capacity(rows: pd.DataFrame, capacity: int | None, calls_per_hour: float) -> tuple[pd.DataFrame, dict]:
    """Keep the day's calls where a call adds the most over the account's best other action; the rest get
    that other action (and a `blocked` entry naming CAPACITY). Returns the contract rows and a summary
    with the value of one more collector-hour."""
    is_call = rows["channel"].to_numpy() == "phone"
    value, alt = rows["_value"].to_numpy(dtype=float), rows["_alt_value"].to_numpy(dtype=float)
    keep = policy.capacity_keep(is_call, value, alt, capacity)
    moved = is_call & ~keep
    rows = rows.copy()
    for col in ("channel", "window_start", "window_end", "offer", "template"):
        rows.loc[moved, col] = rows.loc[moved, f"_alt_{col}"]
    rows.loc[moved, "expected_gain"] = rows.loc[moved, "_alt_gain"]
    retier = moved & rows["tier"].isin(["call today", "call this week"]).to_numpy()
    channel = rows.loc[retier, "channel"]
    rows.loc[retier, "tier"] = np.where(channel == "letter", "letter",
                                        np.where(channel == "none", "no contact", "digital reminder"))
    rows.loc[moved, "blocked"] = [json.dumps([*json.loads(b), {"action": "phone", "rule": "CAPACITY", "until": None}])
                                  for b in rows.loc[moved, "blocked"]]
    summary = {"calls_proposed": int(is_call.sum()), "calls_kept": int(keep.sum()), "phone_capacity": capacity,
               "calls_moved_to_other_actions": int(moved.sum()),
               "value_of_one_more_collector_hour": policy.marginal_call_value(is_call, value, alt, capacity,
                                                                              calls_per_hour),
               "expected_value": float(np.where(moved, alt, value).sum())}
    return rows.loc[:, list(BATCH_COLUMNS)].reset_index(drop=True), summary


def write_atomic(rows: pd.DataFrame, out: Path) -> Path:
    """Write to a temporary file beside `out`, then rename: never a half-written file under the final name."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"output must end in .parquet or .csv, not {out.name!r}")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        if suffix == ".parquet":
            rows.to_parquet(tmp, index=False)
        else:
            rows.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def score_dir(data: Path, out: Path, as_of: str | None = None, model_uri: str = "models:/cureflow@champion",
              progress: bool = True, phone_capacity: str | None = None, explore: float | None = None) -> pd.DataFrame:
    """`cureflow score`: read the contract directory, score as of `as_of`, keep the day's calls within
    capacity, write the work queue and its summary (`<out>.summary.json`)."""
    loaded = load_bundle(model_uri)
    portfolio = read_dir(data)
    when = pd.Timestamp(as_of) if as_of else default_as_of(portfolio)
    if when.tzinfo is None:
        raise ValueError(f"--as-of needs a UTC offset (for example 2026-11-01T00:00:00+09:00), got {as_of!r}")
    config = loaded.bundle.policy_config
    capacity = config.phone_capacity if phone_capacity is None else policy.parse_capacity(phone_capacity)
    rows = score_portfolio(loaded.bundle, portfolio, when, progress=progress, explore=explore)
    rows, summary = apply_capacity(rows, capacity, config.calls_per_hour)
    write_atomic(rows, out)
    summary.update(accounts=len(portfolio.accounts), overdue=len(rows), as_of=when.isoformat(),
                   model_version=loaded.version, tiers=rows["tier"].value_counts().to_dict())
    Path(f"{out}.summary.json").write_text(json.dumps(summary, indent=2))
    print(f"scored {len(portfolio.accounts):,} accounts as of {when.isoformat()}: {len(rows):,} overdue "
          f"-> {out} (model {loaded.version})")
    print(f"calls: {summary['calls_kept']} of {summary['calls_proposed']} proposed within a capacity of "
          f"{'unlimited' if capacity is None else capacity}; one more collector-hour would add "
          f"JPY {summary['value_of_one_more_collector_hour']:,.0f} of expected payments")
    return rows


def print_queue(rows: pd.DataFrame, top: int) -> None:
    """The top of the work queue as a table on the terminal (no personal data: ids and decisions only)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Work queue: top {min(top, len(rows))} of {len(rows):,} overdue accounts")
    for col in ("account_id", "priority", "tier", "cure_probability", "channel", "window_start", "offer"):
        table.add_column(col)
    for row in rows.head(top).itertuples(index=False):
        table.add_row(row.account_id, f"{row.priority:,.0f}", row.tier, f"{row.cure_probability:.2f}",
                      row.channel, (row.window_start or "")[:16], row.offer)
    Console(width=150).print(table)
