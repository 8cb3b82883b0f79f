"""The as-of time: the instant a run stands at, given on the command line or worked out from the data.

`default_as_of` is the one rule for a default: the UTC midnight that ends the day of the latest event (an event
exactly at midnight is its own as-of), or today's UTC midnight when there is no event at all. What counts as the
latest event differs by caller, and stays as it was:

- scoring (`cureflow score`, both engines: `serving.sources.latest_event` over Arrow tables,
  `serving.batch.spark.latest_event` in Spark) reads the latest payment or contact, so a portfolio with neither is
  scored as of today;
- training, evaluation, the experiments readout and monitoring (`pipelines.features.resolve_history_end`) take the
  simulator's manifest `end` when the data has one, else `labels.history_end`: the latest payment, contact or
  instalment due date (a portfolio always has instalments, so "today" never applies there).

An explicit instant must carry its UTC offset. `parse_as_of` keeps the offset it was given (`cureflow score`
reports and stamps the as-of as given); the command line's other options (`pipelines.cli.pd_timestamp`) convert
it to UTC and word the error for typer; `--history-end` of `cureflow train` is converted to UTC as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

EXAMPLE = "2026-11-01T00:00:00+09:00"


class AsOfWithoutOffset(ValueError):
    """An as-of instant given without its UTC offset."""


def parse_as_of(text: str, option: str = "--as-of") -> pd.Timestamp:
    """An ISO 8601 instant in the offset it was given; one without an offset is `AsOfWithoutOffset`."""
    when = pd.Timestamp(text)
    if when.tzinfo is None:
        raise AsOfWithoutOffset(f"{option} needs a UTC offset (for example {EXAMPLE}), got {text!r}")
    return when


def default_as_of(latest: pd.Timestamp | None) -> pd.Timestamp:
    """The day after the latest event (`latest` rounded up to UTC midnight), else today's UTC midnight."""
    return latest.ceil("D") if latest is not None else pd.Timestamp.now(tz="UTC").floor("D")


def resolve_as_of(as_of: str | None, latest_event: Callable[[], pd.Timestamp | None]) -> pd.Timestamp:
    """The scoring as-of: --as-of (with its offset), else `default_as_of` of what `latest_event` finds (each
    engine in its own tables; asked only when there is no --as-of)."""
    if as_of:
        return parse_as_of(as_of)
    return default_as_of(latest_event())
