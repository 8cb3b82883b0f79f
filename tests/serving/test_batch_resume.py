"""A real `cureflow score` killed with SIGKILL mid-run and started again: it resumes from its finished chunks,
writes the same work queue as an uninterrupted run, and the decision log holds one record per account and run."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.serving.test_batch import _records

pytestmark = pytest.mark.slow
AS_OF = "2026-11-01T00:00:00+09:00"
CHUNK = 50  # accounts per chunk: 30 chunks for the fixture's 1,500 accounts


def _command(trained, out: Path, log: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "score", "--data", str(trained["data"]), "--as-of", AS_OF,
            "--out", str(out), "--model", str(trained["bundle_path"]), "--chunk-size", str(CHUNK),
            "--decision-log", f"sqlite:///{log}"]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def _kill_after_parts(command: list[str], parts_dir: Path, parts: int, seconds: float = 240) -> int:
    """Start the command, SIGKILL it once `parts` chunks are finished; returns how many parts there were."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(parts_dir.glob("part-*.parquet"))) >= parts:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself (code {proc.returncode}) before the kill"
    return len(list(parts_dir.glob("part-*.parquet")))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_run_resumes_from_finished_chunks_and_writes_the_uninterrupted_result(trained, tmp_path):
    whole, whole_log = tmp_path / "whole" / "queue.parquet", tmp_path / "whole" / "decisions.db"
    _run(_command(trained, whole, whole_log))

    out, log = tmp_path / "killed" / "queue.parquet", tmp_path / "killed" / "decisions.db"
    parts_dir = Path(f"{out}.parts")
    kept = _kill_after_parts(_command(trained, out, log), parts_dir, parts=4)
    assert 4 <= kept < 30
    assert not out.exists(), "a killed run must leave no file under the final name"

    done = _run(_command(trained, out, log))
    resumed = int(re.search(r"(\d+) of 30 chunks resumed", done.stdout).group(1))
    assert resumed >= kept  # the finished chunks were not scored again

    assert _digest(out) == _digest(whole)
    rows = pd.read_parquet(out)
    assert rows["account_id"].is_unique and len(rows) > 0
    records = _records(log)
    assert len(records) == len(rows) and records["account_id"].is_unique
    assert set(records["account_id"]) == set(rows["account_id"])
    assert records["request_id"].nunique() == 1
    assert records["request_id"].iat[0] == _records(whole_log)["request_id"].iat[0]  # the same run id
    assert not parts_dir.exists() and not list(out.parent.glob(".*.tmp"))
