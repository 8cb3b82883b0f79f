"""`cureflow score --engine spark` in local mode: the same work queue and decision records as the local engine."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from serving.batch import BatchOptions, score_source
from serving.batch.spark import _instants

AS_OF = "2026-11-01T00:00:00+09:00"


def _records(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = pd.read_sql("SELECT request_id, account_id, decision_id, answer FROM decisions", conn)
    engine.dispose()
    return rows.sort_values("account_id", ignore_index=True)


@pytest.mark.slow
def test_spark_engine_writes_the_local_engines_work_queue(trained, tmp_path):
    assert shutil.which("java"), "Spark needs Java 17+: run scripts/ensure_java.sh (make test does)"
    local_log, spark_log = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'spark.db'}"
    options = BatchOptions(as_of=AS_OF, model_uri=str(trained["bundle_path"]), progress=False, chunk_size=400,
                           decision_log=local_log)
    score_source(trained["data"], tmp_path / "local.parquet", options)
    local = pd.read_parquet(tmp_path / "local.parquet")
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "--engine", "spark", "--data",
                           str(trained["data"]), "--as-of", AS_OF, "--out", str(tmp_path / "spark.parquet"),
                           "--model", str(trained["bundle_path"]), "--chunk-size", "400", "--decision-log", spark_log],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    spark = pd.read_parquet(tmp_path / "spark.parquet")
    assert len(local) > 0
    pd.testing.assert_frame_equal(spark.sort_values("account_id", ignore_index=True),
                                  local.sort_values("account_id", ignore_index=True))
    pd.testing.assert_frame_equal(spark, local)  # and in the same priority order
    mine, theirs = _records(spark_log), _records(local_log)
    assert len(mine) == len(spark) and mine["account_id"].is_unique
    assert mine["decision_id"].tolist() == theirs["decision_id"].tolist()
    assert mine["answer"].tolist() == theirs["answer"].tolist()


def test_spark_instants_come_back_exact_to_the_nanosecond():
    ns = np.array([1_761_955_200_123_456_789, 1_700_000_000_000_000_001], dtype=np.int64)
    text = pd.Series([str(v) for v in ns] + [None], dtype=object)
    instants = _instants(text, utc=True)
    assert str(instants.dt.tz) == "UTC"
    assert instants.iloc[:2].astype("int64").tolist() == ns.tolist() and pd.isna(instants.iat[2])
    dates = _instants(pd.Series(["1761955200000000000"]), utc=False)
    assert dates.iat[0] == pd.Timestamp("2025-11-01") and dates.dt.tz is None
    iso = pd.Series(["2026-10-01T09:00:00+09:00"])
    assert _instants(iso, utc=True).tolist() == iso.tolist()  # text is left for validate
    naive = pd.Series(pd.to_datetime(["2026-10-01 00:00:00"]))
    assert _instants(naive, utc=True).iat[0] == pd.Timestamp("2026-10-01", tz="UTC")
