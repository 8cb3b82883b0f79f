"""The nightly batch: score a whole portfolio in chunks of accounts with the same bundle the API uses.

`cureflow score` runs `score_source`:

1. read the four tables from a directory or a database (`serving.sources`) as Arrow tables;
2. score chunks of `batch.chunk_size` accounts (each validated on its own) with `ScoringBundle.score`, keeping
   each finished chunk as a parquet part in `<out>.parts/`, named by the chunk's fingerprint; the local engine
   does this, `--engine spark` scores groups of accounts on Spark instead (`serving.spark`);
3. keep the day's calls within capacity over all rows (a global step, after the chunks);
4. record one decision per account in the decision log, keyed by the run and the account, so that a run
   started again records nothing twice;
5. write the work queue to a temporary file and rename it into place, then the summary JSON and the HTML
   report beside it, and remove the parts.

A run killed at any point (kill -9 included) and started again with the same input, model and options reads
the input again, takes every chunk whose part exists with the same fingerprint instead of scoring it, and
writes a work queue identical to an uninterrupted run's. The run id is a digest of the input's chunk
fingerprints, the as-of time, the model, the exploration rate and the call capacity.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import ProgressColumn
from rich.text import Text

from models import policy
from models.answers import answer_from_row
from models.as_of import resolve_as_of
from models.bundle import BATCH_COLUMNS
from models.contract import Portfolio
from models.files import write_csv_atomic, write_parquet_atomic, write_text_atomic
from models.queue import capacity_step, in_priority_order
from models.registry import load_bundle
from models.vocab import CHILD_TABLES
from serving import sources

PARTS_FORMAT = 1
CALLER = "batch"


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("accounts"),
               RateColumn(), TimeRemainingColumn())
    from models.progress import enabled as shown

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


# ---------------------------------------------------------------------------------------------- files


def output_format(out: Path) -> str:
    """`.parquet` or `.csv`, from the output's name; anything else is an error (checked before any work)."""
    suffix = Path(out).suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"output must end in .parquet or .csv, not {Path(out).name!r}")
    return suffix


def write_atomic(rows: pd.DataFrame, out: Path) -> Path:
    """Write to a temporary file beside `out`, then rename: never a half-written file under the final name."""
    out = Path(out)
    if output_format(out) == ".parquet":
        return write_parquet_atomic(rows, out, private=True)
    return write_csv_atomic(rows, out, private=True)


class Parts:
    """Finished chunks of one output, kept in `<out>.parts/` until the run completes.

    `run.json` holds the key of what was scored (as-of, model, exploration, chunk size); parts of another key
    are removed. A chunk's part is `part-<index>-<fingerprint>.parquet`, written aside and renamed, so a part
    that exists is complete, and it is used only for a chunk with the same index and the same input rows.
    """

    def __init__(self, out: Path, key: dict):
        self.dir = Path(f"{out}.parts")
        self.key = {**key, "format": PARTS_FORMAT}

    def open(self) -> int:
        """Start or resume: returns how many parts are kept from an earlier, unfinished run."""
        stamp = self.dir / "run.json"
        if self.dir.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != self.key):
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            write_text_atomic(json.dumps(self.key, indent=2), stamp, private=True)
        return len(list(self.dir.glob("part-*.parquet")))

    def _path(self, index: int, fingerprint: str) -> Path:
        return self.dir / f"part-{index:06d}-{fingerprint[:32]}.parquet"

    def get(self, index: int, fingerprint: str) -> pd.DataFrame | None:
        """The finished rows of this chunk, or None when it has to be scored."""
        path = self._path(index, fingerprint)
        return plain_text(pd.read_parquet(path)) if path.exists() else None

    def put(self, index: int, fingerprint: str, rows: pd.DataFrame) -> None:
        """Keep a scored chunk (and drop a stale part of the same index)."""
        for stale in self.dir.glob(f"part-{index:06d}-*.parquet"):
            stale.unlink()
        write_parquet_atomic(rows, self._path(index, fingerprint), private=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def with_feature_text(rows: pd.DataFrame) -> pd.DataFrame:
    """The `_features` dicts as JSON text (for parquet parts and Spark), NaN as null."""
    from serving.decisions import json_text  # the decision log's JSON: NaN as null, numpy values as Python

    rows = rows.copy()
    features = rows["_features"] if "_features" in rows.columns else []
    rows["_features"] = [json_text(f) for f in features]
    return rows


def plain_text(rows: pd.DataFrame) -> pd.DataFrame:
    """Every non-numeric column as object holding str or None (as `ScoringBundle.score` returns them), so rows
    read back from parquet or Spark compare equal to rows just scored."""
    rows = rows.copy()
    for col in rows.columns:
        if not pd.api.types.is_numeric_dtype(rows[col].dtype) or rows[col].dtype == bool:
            values = rows[col].astype(object)
            rows[col] = values.where(values.notna(), None)
    return rows


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """What an engine hands back: rows in priority order (private columns and `_features` JSON included),
    the input's fingerprint, how many accounts were read and how many chunks came from an earlier run."""

    rows: pd.DataFrame
    fingerprint: str
    accounts: int
    chunks: int = 0
    resumed: int = 0
    timings: dict = field(default_factory=dict)


def score_chunks(bundle, tables: dict, as_of: pd.Timestamp, explore: float | None, chunk_size: int,
                 parts: Parts, progress: bool = True, contested: frozenset[str] = frozenset()) -> Scored:
    """The local engine: every chunk validated, then taken from its part or scored and kept as a part. The
    first chunk is read and validated before anything is shown or written, so bad input leaves nothing."""
    chunks = prefetched(sources.chunks(tables, chunk_size))
    first = next(chunks, None)
    found = parts.open()
    scored, fingerprints, resumed = [], [], 0
    total = tables["accounts"].num_rows
    with progress_bar(progress) as bar:
        task = bar.add_task("scoring" + (f" (resuming, {found} parts)" if found else ""), total=total)
        for chunk in itertools.chain([first] if first is not None else [], chunks):
            rows = parts.get(chunk.index, chunk.fingerprint)
            if rows is None:  # scored, kept, and read back: a resumed run sees exactly the same rows
                fresh = with_feature_text(bundle.score(chunk.portfolio, as_of, explore=explore, keep_features=True,
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
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cureflow-read") as pool:
        future = pool.submit(next, items, done)
        while (item := future.result()) is not done:
            future = pool.submit(next, items, done)
            yield item


def model_key(loaded) -> str:
    """What identifies the scoring model: registered version and run, plus the file's digest for a bundle path."""
    key = f"{loaded.version}|{loaded.run_id}"
    path = Path(loaded.uri)
    if path.suffix == ".joblib" and path.is_file():
        key += "|" + _file_digest(path)
    return key


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_id(scoring_key: dict, capacity: int | None, fingerprint: str) -> str:
    """The run's id: the same input, as-of, model, exploration and capacity give the same id."""
    text = json.dumps({**scoring_key, "capacity": capacity, "input": fingerprint}, sort_keys=True)
    return "run-" + hashlib.sha256(text.encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------- decision log


def decision_records(rows: pd.DataFrame, loaded, run: str) -> list:
    """One decision record per row (after capacity): the answer, its model inputs and the rules evaluated,
    keyed by run and account."""
    from models.rules import RULE_IDS
    from serving.decisions import DecisionRecord

    policy_version = loaded.bundle.policy_config.version
    records = []
    for row in rows.to_dict("records"):
        answer = answer_from_row(row)
        records.append(DecisionRecord.from_answer(
            answer, request_id=run, caller=CALLER, run_id=loaded.run_id or None, policy_version=policy_version,
            features=json.loads(row["_features"]), rules_evaluated=list(RULE_IDS), source="batch",
            idempotency_key=f"{run}/{answer['account_id']}", profile=loaded.bundle.params["rules"]["profile"]))
    return records


def record_decisions(url: str, rows: pd.DataFrame, loaded, run: str, batch_size: int) -> int:
    """Append the run's decisions to the log (exactly once per account and run); returns how many were new."""
    from serving.decisions import DecisionLog

    log = DecisionLog(url)
    try:
        return log.append_once(decision_records(rows, loaded, run), batch_size=batch_size)
    finally:
        log.close()


# ---------------------------------------------------------------------------------------------- the command


@dataclass
class BatchOptions:
    """The options of one `cureflow score` run (defaults from params.yaml `batch` and `policy`)."""

    as_of: str | None = None
    model_uri: str = "models:/cureflow@champion"
    phone_capacity: str | None = None
    explore: float | None = None
    engine: str = "local"
    chunk_size: int | None = None
    decision_log: str | None = None
    progress: bool = True


def batch_params() -> dict:
    """params.yaml `batch`, with the defaults the code falls back on when the section is absent."""
    from models.config import load_params

    section = load_params().get("batch") or {}
    spark = {"master": "local[2]", "driver_memory": "4g", **(section.get("spark") or {})}
    return {"chunk_size": 100_000, "decision_log_batch": 2000, **section, "spark": spark}


def score_source(data: str | Path, out: Path, options: BatchOptions) -> pd.DataFrame:
    """`cureflow score`: read, score (resumably), keep calls within capacity, record the decisions, write the
    work queue, its summary (`<out>.summary.json`) and report (`<out>.report.html`)."""
    from serving import report

    started, timings = time.perf_counter(), {}
    params = batch_params()
    if options.engine not in ("local", "spark"):
        raise ValueError(f"--engine must be local or spark, not {options.engine!r}")
    output_format(out)
    loaded = load_bundle(options.model_uri)
    config = loaded.bundle.policy_config
    capacity = config.phone_capacity if options.phone_capacity is None else policy.parse_capacity(
        options.phone_capacity)
    chunk_size = int(params["chunk_size"] if options.chunk_size is None else options.chunk_size)
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    eps = config.explore if options.explore is None else policy.explore_rate(options.explore)
    url = options.decision_log or _default_decision_log()
    contested = open_contests(url)
    scored, when = _score(data, out, options, loaded, eps, chunk_size, params, timings, contested)
    scoring_key = _scoring_key(when, loaded, eps, contested)
    run = run_id(scoring_key, capacity, scored.fingerprint)
    t = time.perf_counter()
    rows, capacity_summary, values = capacity_step(scored.rows, capacity, config.calls_per_hour)
    timings["capacity_s"] = time.perf_counter() - t
    _check_unique(rows)
    t = time.perf_counter()
    new = record_decisions(url, rows, loaded, run, int(params["decision_log_batch"]))
    timings["decision_log_s"] = time.perf_counter() - t
    t = time.perf_counter()
    queue = rows.loc[:, list(BATCH_COLUMNS)]
    write_atomic(queue, out)
    timings["write_s"] = time.perf_counter() - t
    context = {"run_id": run, "engine": options.engine, "source": sources.describe(data), "as_of": when.isoformat(),
               "model_version": loaded.version, "accounts": scored.accounts, "chunk_size": chunk_size,
               "chunks": scored.chunks, "chunks_resumed": scored.resumed, "decision_records_new": new}
    summary = report.write(out, queue, values, capacity_summary, context, timings, started)
    Parts(out, scoring_key).remove()
    _print_done(summary, out, capacity)
    return queue


def _score(data, out: Path, options: BatchOptions, loaded, eps: float, chunk_size: int, params: dict,
           timings: dict, contested: frozenset[str] = frozenset()) -> tuple[Scored, pd.Timestamp]:
    """Read and score with the chosen engine; stage times go into `timings`."""
    if options.engine == "spark":
        from serving import spark

        t = time.perf_counter()
        scored, when = spark.score(data, loaded.bundle, options.as_of, eps, chunk_size, params["spark"]["master"],
                                   params["spark"]["driver_memory"], contested)
        timings["score_s"] = time.perf_counter() - t
        return scored, when
    t = time.perf_counter()
    tables = sources.read_tables(data)
    when = resolve_as_of(options.as_of, lambda: sources.latest_event(tables))
    timings["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    parts = Parts(out, _scoring_key(when, loaded, eps, contested) | {"chunk_size": chunk_size,
                                                                   "source": sources.describe(data)})
    scored = score_chunks(loaded.bundle, tables, when, eps, chunk_size, parts, options.progress, contested)
    timings["score_s"] = time.perf_counter() - t
    return scored, when


def _scoring_key(when: pd.Timestamp, loaded, eps: float, contested: frozenset[str] = frozenset()) -> dict:
    """What a chunk's rows depend on besides its input: as-of, model, policy version, exploration and the
    open contests (their digest, when there is any)."""
    key = {"as_of": pd.Timestamp(when).tz_convert("UTC").isoformat(), "model": model_key(loaded),
           "policy": loaded.bundle.policy_config.version, "explore": eps}
    if contested:
        key["contested"] = hashlib.sha256("\n".join(sorted(contested)).encode()).hexdigest()
    return key


def open_contests(url: str) -> frozenset[str]:
    """The accounts with an open contest in the decision log at `url` (R-CONTESTED), read before scoring."""
    from serving.decisions import DecisionLog

    log = DecisionLog(url)
    try:
        return log.contested()
    finally:
        log.close()


def _check_unique(rows: pd.DataFrame) -> None:
    """A safety net before anything is recorded or written: no account twice in the queue."""
    if not rows["account_id"].is_unique:
        raise RuntimeError("the scored rows hold an account twice; nothing was recorded or written")


def _default_decision_log() -> str:
    """CUREFLOW_DATABASE_URL (the API's decision log), else sqlite:///decisions.db in the working directory."""
    from serving.settings import load_settings

    return load_settings().database_url


def _print_done(summary: dict, out: Path, capacity: int | None) -> None:
    parts = f"{summary['chunks']} Spark groups" if summary["engine"] == "spark" else \
        f"{summary['chunks_resumed']} of {summary['chunks']} chunks resumed"
    print(f"scored {summary['accounts']:,} accounts as of {summary['as_of']}: {summary['overdue']:,} overdue "
          f"-> {out} (model {summary['model_version']}, run {summary['run_id']}, {parts})")
    print(f"calls: {summary['calls_kept']} of {summary['calls_proposed']} proposed within a capacity of "
          f"{'unlimited' if capacity is None else capacity}; one more collector-hour would add "
          f"JPY {summary['value_of_one_more_collector_hour']:,.0f} of expected payments")
    print(f"decision log: {summary['decision_records_new']:,} new records; report: {summary['report']}; "
          f"{summary['accounts_per_second']:,.0f} accounts/s end to end")


def score_dir(data: Path, out: Path, as_of: str | None = None, model_uri: str = "models:/cureflow@champion",
              progress: bool = True, phone_capacity: str | None = None, explore: float | None = None,
              **options) -> pd.DataFrame:
    """`score_source` with keyword options (kept for callers of the earlier signature)."""
    return score_source(data, out, BatchOptions(as_of=as_of, model_uri=model_uri, progress=progress,
                                                phone_capacity=phone_capacity, explore=explore, **options))


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
