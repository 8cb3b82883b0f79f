"""`cureflow score`: one batch run from its options: read, score with an engine, keep the day's calls within
capacity, record the decisions, write the work queue, its summary and its report (`serving.batch`)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models import policy
from models.as_of import resolve_as_of
from models.bundle import BATCH_COLUMNS
from models.config import load_params
from models.queue import capacity_step
from models.registry import load_bundle
from serving import sources
from serving.batch import morning_report, spark
from serving.batch.console import print_done
from serving.batch.files import Parts, output_format, write_atomic
from serving.batch.local import score_chunks
from serving.batch.records import default_decision_log, open_contests, record_decisions
from serving.batch.rows import Scored


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
    section = load_params().get("batch") or {}
    spark = {"master": "local[2]", "driver_memory": "4g", **(section.get("spark") or {})}
    return {"chunk_size": 100_000, "decision_log_batch": 2000, **section, "spark": spark}


def score_source(data: str | Path, out: Path, options: BatchOptions) -> pd.DataFrame:
    """`cureflow score`: read, score (resumably), keep calls within capacity, record the decisions, write the
    work queue, its summary (`<out>.summary.json`) and report (`<out>.report.html`)."""
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
    url = options.decision_log or default_decision_log()
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
    summary = morning_report.write(out, queue, values, capacity_summary, context, timings, started)
    Parts(out, scoring_key).remove()
    print_done(summary, out, capacity)
    return queue


def _score(data, out: Path, options: BatchOptions, loaded, eps: float, chunk_size: int, params: dict,
           timings: dict, contested: frozenset[str] = frozenset()) -> tuple[Scored, pd.Timestamp]:
    """Read and score with the chosen engine; stage times go into `timings`."""
    if options.engine == "spark":
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


def _check_unique(rows: pd.DataFrame) -> None:
    """A safety net before anything is recorded or written: no account twice in the queue."""
    if not rows["account_id"].is_unique:
        raise RuntimeError("the scored rows hold an account twice; nothing was recorded or written")


def score_dir(data: Path, out: Path, as_of: str | None = None, model_uri: str = "models:/cureflow@champion",
              progress: bool = True, phone_capacity: str | None = None, explore: float | None = None,
              **options) -> pd.DataFrame:
    """`score_source` with keyword options (kept for callers of the earlier signature)."""
    return score_source(data, out, BatchOptions(as_of=as_of, model_uri=model_uri, progress=progress,
                                                phone_capacity=phone_capacity, explore=explore, **options))
