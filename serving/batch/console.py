"""What `cureflow score` prints: the run's last lines and the top of the work queue as a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table


def print_done(summary: dict, out: Path, capacity: int | None) -> None:
    parts = f"{summary['chunks']} Spark groups" if summary["engine"] == "spark" else \
        f"{summary['chunks_resumed']} of {summary['chunks']} chunks resumed"
    print(f"scored {summary['accounts']:,} accounts as of {summary['as_of']}: {summary['overdue']:,} overdue "
          f"-> {out} (model {summary['model_version']}, run {summary['run_id']}, {parts})")
    print(f"calls: {summary['calls_kept']} of {summary['calls_proposed']} proposed within a capacity of "
          f"{'unlimited' if capacity is None else capacity}; one more collector-hour would add "
          f"JPY {summary['value_of_one_more_collector_hour']:,.0f} of expected payments")
    print(f"decision log: {summary['decision_records_new']:,} new records; report: {summary['report']}; "
          f"{summary['accounts_per_second']:,.0f} accounts/s end to end")


def print_queue(rows: pd.DataFrame, top: int) -> None:
    """The top of the work queue as a table on the terminal (no personal data: ids and decisions only)."""
    table = Table(title=f"Work queue: top {min(top, len(rows))} of {len(rows):,} overdue accounts")
    for col in ("account_id", "priority", "tier", "cure_probability", "channel", "window_start", "offer"):
        table.add_column(col)
    for row in rows.head(top).itertuples(index=False):
        table.add_row(row.account_id, f"{row.priority:,.0f}", row.tier, f"{row.cure_probability:.2f}",
                      row.channel, (row.window_start or "")[:16], row.offer)
    Console(width=150).print(table)
