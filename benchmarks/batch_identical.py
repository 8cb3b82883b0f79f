"""The nightly batch gives the same answers before and after a change: the work queue and the decision records.

    git stash / checkout the revision before, then
    python benchmarks/batch_identical.py run --data outputs/bench/p100k --model outputs/train/bundle.joblib \\
        --out outputs/identical/before-p100k
    and with the revision after
    python benchmarks/batch_identical.py run ... --out outputs/identical/after-p100k
    python benchmarks/batch_identical.py compare outputs/identical/before-p100k outputs/identical/after-p100k

`run` runs `cureflow score` (as-of 2026-11-01T00:00:00+09:00, a fresh SQLite decision log) into a directory:
`queue.parquet` (with its summary and report) and `decisions.db`. `compare` asserts, exactly
(`pandas.testing.assert_frame_equal`, no tolerance), that the two work queues are equal, and that the two
decision logs hold the same records column by column, except the moment each was written (`created_at`) and the
hash chain built over it (`prev_hash`, `record_hash`), the JSON columns compared as the values they hold (the
text's spacing is the writer's); that this tree's `verify` finds both hash chains intact (records written
before a change still verify after it); and that the summaries agree but for their stage times, memory and rate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
from pandas.testing import assert_frame_equal

AS_OF = "2026-11-01T00:00:00+09:00"
WRITTEN_AT = ("created_at", "prev_hash", "record_hash")
JSON_COLUMNS = ("features", "answer", "rules_evaluated")
MEASURED = ("timings", "accounts_per_second", "peak_rss_gib", "wall_s", "report")  # and where it was written


def run(data: Path, model: str, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "pipelines.cli", "score", "--data", str(data), "--as-of", AS_OF,
               "--out", str(out / "queue.parquet"), "--model", model,
               "--decision-log", f"sqlite:///{out / 'decisions.db'}"]
    subprocess.run(command, check=True)


def records(out: Path) -> pd.DataFrame:
    with sqlite3.connect(out / "decisions.db") as conn:
        frame = pd.read_sql_query("SELECT * FROM decisions ORDER BY record_id", conn)
    for column in JSON_COLUMNS:
        frame[column] = [json.loads(text) for text in frame[column]]
    return frame.drop(columns=[c for c in WRITTEN_AT if c in frame.columns])


def chain_intact(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models.decision_log import DecisionLog

    log = DecisionLog(f"sqlite:///{out / 'decisions.db'}")
    try:
        found = log.verify()
    finally:
        log.close()
    assert found["ok"], f"{out}: the hash chain does not verify: {found}"


def summary(out: Path) -> dict:
    text = json.loads((out / "queue.parquet.summary.json").read_text())
    return {k: v for k, v in text.items() if k not in MEASURED}


def compare(before: Path, after: Path) -> None:
    queue_before, queue_after = (pd.read_parquet(d / "queue.parquet") for d in (before, after))
    assert_frame_equal(queue_before, queue_after, check_exact=True)
    records_before, records_after = records(before), records(after)
    assert_frame_equal(records_before, records_after, check_exact=True)
    assert summary(before) == summary(after), "the summaries differ"
    chain_intact(before)
    chain_intact(after)
    print(f"identical: {len(queue_after):,} queue rows, {len(records_after):,} decision records "
          f"({before} vs {after})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run")
    one.add_argument("--data", type=Path, required=True)
    one.add_argument("--model", required=True)
    one.add_argument("--out", type=Path, required=True)
    two = sub.add_parser("compare")
    two.add_argument("before", type=Path)
    two.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.data, args.model, args.out)
    else:
        compare(args.before, args.after)


if __name__ == "__main__":
    main()
