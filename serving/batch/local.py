"""The local engine: chunks of accounts validated and scored in this process, each kept as a part so that a
killed run resumes; and a portfolio already in memory scored chunk by chunk. A progress bar shows the rate."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from models.contract import Portfolio
from models.progress import enabled as shown
from models.queue import in_priority_order
from models.vocab import CHILD_TABLES
from serving import sources
from serving.batch.files import Parts
from serving.batch.rows import Scored, with_feature_text


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


def progress_bar(enabled: bool):
    """A rich progress bar over accounts: done/total, rate and time left."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("accounts"),
               RateColumn(), TimeRemainingColumn())
    return Progress(*columns, disable=not (enabled and shown()), transient=False)


def score_portfolio(bundle, portfolio: Portfolio, as_of: pd.Timestamp, chunk_size: int = 100_000,
                    progress: bool = True, explore: float | None = None) -> pd.DataFrame:
    """All overdue accounts' batch rows (with the private columns capacity needs), highest priority
    first, for a portfolio already in memory; a progress bar with rate and time left."""
    parts = []
    with progress_bar(progress) as bar:
        task = bar.add_task("scoring", total=len(portfolio.accounts))
        for chunk in account_chunks(portfolio, chunk_size):
            parts.append(bundle.score(chunk, as_of, explore=explore))
            bar.advance(task, len(chunk.accounts))
    return in_priority_order(parts)


def score_chunks(bundle, tables: dict, as_of: pd.Timestamp, explore: float | None, chunk_size: int,
                 parts: Parts, progress: bool = True, contested: frozenset[str] = frozenset()) -> Scored:
    """The local engine: every chunk validated, then taken from its part or scored and kept as a part. The
    first chunk is read and validated before anything is shown or written, so bad input leaves nothing. A
    background thread checks, fingerprints and prepares the next chunk while this one is scored."""
    config = bundle.feature_config
    chunks = prefetched((chunk, None if parts.has(chunk.index, chunk.fingerprint) else chunk.prepare(config))
                        for chunk in sources.chunks(tables, chunk_size))
    first = next(chunks, None)
    found = parts.open()
    scored, fingerprints, resumed = [], [], 0
    total = tables["accounts"].num_rows
    with progress_bar(progress) as bar:
        task = bar.add_task("scoring" + (f" (resuming, {found} parts)" if found else ""), total=total)
        for chunk, prep in itertools.chain([first] if first is not None else [], chunks):
            rows = parts.get(chunk.index, chunk.fingerprint)
            if rows is None:  # scored, kept, and read back: a resumed run sees exactly the same rows
                prep = chunk.prepare(config) if prep is None else prep
                fresh = with_feature_text(bundle.score_prepared(prep, as_of, explore=explore, keep_features=True,
                                                                contested=contested))
                parts.put(chunk.index, chunk.fingerprint, fresh)
                rows = parts.get(chunk.index, chunk.fingerprint)
            else:
                resumed += 1
            scored.append(rows)
            fingerprints.append(chunk.fingerprint)
            bar.advance(task, chunk.accounts)
    digest = hashlib.sha256("\n".join(fingerprints).encode()).hexdigest()
    return Scored(in_priority_order(scored, ("_features",)), digest, total, len(fingerprints), resumed)


def prefetched(items: Iterator) -> Iterator:
    """The items of an iterator, the next one prepared in a background thread while the caller works on the
    current one (reading and validating a chunk overlaps scoring the previous one; LightGBM and most numpy
    work release the GIL). Exceptions come out where the item would have."""
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cureflow-read") as pool:
        future = pool.submit(next, items, done)
        while (item := future.result()) is not done:
            future = pool.submit(next, items, done)
            yield item
