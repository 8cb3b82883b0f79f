"""The nightly batch: decision log once per account and run, the summary and its HTML report, resumable parts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from models.bundle import BATCH_COLUMNS
from models.decision_log import DecisionLog, DecisionRecord
from serving.batch import BatchOptions, Parts, score_source
from serving.batch import run as batch_run
from tests.postgres import throwaway_postgres

pytestmark = pytest.mark.slow
AS_OF = "2026-11-01T00:00:00+09:00"


def _options(trained, log: Path, **overrides) -> BatchOptions:
    values = {"as_of": AS_OF, "model_uri": str(trained["bundle_path"]), "progress": False, "chunk_size": 500,
              "decision_log": f"sqlite:///{log}", "explore": 0.0, **overrides}
    return BatchOptions(**values)


def _records(log: Path) -> pd.DataFrame:
    engine = sa.create_engine(f"sqlite:///{log}")
    with engine.connect() as conn:
        rows = pd.read_sql("SELECT request_id, account_id, decision_id, source, caller, answer FROM decisions", conn)
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def two_runs(trained, tmp_path_factory):
    """The same output scored three times: capacity 150, the same again, then capacity 0."""
    root = tmp_path_factory.mktemp("batch")
    out, log = root / "queue.parquet", root / "decisions.db"
    first = score_source(trained["data"], out, _options(trained, log, phone_capacity="150"))
    summaries = [json.loads((root / "queue.parquet.summary.json").read_text())]
    again = score_source(trained["data"], out, _options(trained, log, phone_capacity="150"))
    summaries.append(json.loads((root / "queue.parquet.summary.json").read_text()))
    fewer = score_source(trained["data"], out, _options(trained, log, phone_capacity="0"))
    summaries.append(json.loads((root / "queue.parquet.summary.json").read_text()))
    return {"root": root, "out": out, "log": log, "queues": [first, again, fewer], "summaries": summaries}


def test_decision_log_holds_one_record_per_account_and_run(two_runs):
    first, again, fewer = two_runs["queues"]
    records = _records(two_runs["log"])
    runs = [s["run_id"] for s in two_runs["summaries"]]
    assert runs[0] == runs[1] != runs[2]
    assert [s["decision_records_new"] for s in two_runs["summaries"]] == [len(first), 0, len(fewer)]
    assert len(records) == len(first) + len(fewer)
    assert not records.duplicated(["request_id", "account_id"]).any()
    assert (records["source"] == "batch").all() and (records["caller"] == "batch").all()
    mine = records[records["request_id"] == runs[2]].set_index("account_id")
    answers = mine["answer"].map(json.loads)
    assert set(mine.index) == set(fewer["account_id"])
    channels = answers.map(lambda a: a["action"]["channel"])
    assert (channels.loc[fewer["account_id"]].to_numpy() == fewer["channel"].to_numpy()).all()  # after capacity


def test_a_rerun_of_the_same_run_writes_the_same_queue(two_runs):
    first, again, _ = two_runs["queues"]
    pd.testing.assert_frame_equal(first, again)
    assert list(first.columns) == list(BATCH_COLUMNS)
    assert first["priority"].is_monotonic_decreasing and first["account_id"].is_unique


def test_summary_compares_with_the_previous_run_not_with_itself(two_runs):
    first, again, fewer = two_runs["summaries"]
    assert first["previous"] is None and first["change"] is None
    assert again["previous"] is None  # the same run again: still nothing before it
    assert fewer["previous"]["run_id"] == first["run_id"]
    assert fewer["calls_kept"] == 0 and first["calls_kept"] > 0
    assert fewer["change"]["calls_kept"] == fewer["calls_kept"] - first["calls_kept"]
    moved = {t: fewer["tiers"].get(t, 0) - first["tiers"].get(t, 0) for t in {*fewer["tiers"], *first["tiers"]}}
    assert {t: d for t, d in fewer["change"]["tiers"].items()} == moved
    assert fewer["held_by_rule"]["CAPACITY"] == first["calls_kept"]


def test_report_is_one_self_contained_page_with_the_work_list_and_six_plots(two_runs):
    from serving.batch.morning_report import WORK_LIST

    page = Path(two_runs["summaries"][2]["report"]).read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)
    assert len(images) == 6
    assert "<script" not in page and "http://" not in page and "https://" not in page
    queue = two_runs["queues"][2]
    listed = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td>", page)
    assert [int(rank) for rank, _ in listed] == list(range(1, min(WORK_LIST, len(queue)) + 1))
    assert [a for _, a in listed] == queue["account_id"].head(WORK_LIST).tolist()   # priority order
    assert not any(a in page for a in queue["account_id"].iloc[WORK_LIST:])         # no id beyond the list
    assert "already holds" in page
    for title in ("Priority distribution", "Actions by channel and tier", "Expected value by tier",
                  "Calls against capacity", "Accounts held by each rule", "Change since the previous run"):
        assert f'<img alt="{title}"' in page


def test_a_first_run_says_so_in_words_instead_of_an_empty_chart(two_runs):
    from serving.batch.morning_report import render

    summary = json.loads((two_runs["root"] / "queue.parquet.summary.json").read_text())
    first = {**summary, "previous": None, "change": None}
    queue = two_runs["queues"][2]
    page = render(first, queue, np.zeros(len(queue)))
    assert '<img alt="Change since the previous run"' not in page
    assert "first run beside this output" in page
    assert len(re.findall(r"<img ", page)) == 5


def test_parts_are_removed_and_no_temporary_file_is_left(two_runs):
    root = two_runs["root"]
    assert not list(root.glob("*.parts")) and not list(root.glob(".*.tmp"))


def test_parts_are_used_only_for_the_same_chunk_rows_and_scoring_key(tmp_path):
    rows = pd.DataFrame({"account_id": ["A1"], "priority": [1.0]})
    parts = Parts(tmp_path / "q.parquet", {"as_of": "t", "model": "m"})
    assert parts.open() == 0
    parts.put(0, "f" * 64, rows)
    assert parts.get(0, "f" * 64)["account_id"].tolist() == ["A1"]
    assert parts.get(0, "e" * 64) is None and parts.get(1, "f" * 64) is None
    assert Parts(tmp_path / "q.parquet", {"as_of": "t", "model": "m"}).open() == 1
    assert Parts(tmp_path / "q.parquet", {"as_of": "t", "model": "other"}).open() == 0  # stale: removed


def test_a_run_killed_while_recording_records_the_rest_once_when_started_again(trained, tmp_path, monkeypatch):
    out, log = tmp_path / "queue.parquet", tmp_path / "decisions.db"
    calls = {"n": 0}
    real = DecisionLog._insert_new

    def dies_on_the_third_batch(self, records, created_at):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed while recording")
        return real(self, records, created_at)

    monkeypatch.setattr(DecisionLog, "_insert_new", dies_on_the_third_batch)
    monkeypatch.setattr(batch_run, "batch_params", lambda: {**_params(), "decision_log_batch": 10})
    with pytest.raises(KeyboardInterrupt):
        score_source(trained["data"], out, _options(trained, log))
    assert len(_records(log)) == 20 and not out.exists()
    queue = score_source(trained["data"], out, _options(trained, log))
    records = _records(log)
    assert len(records) == len(queue) > 20 and records["account_id"].is_unique


def _params() -> dict:
    return {"chunk_size": 500, "decision_log_batch": 2000, "spark": {"master": "local[2]", "driver_memory": "1g"}}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_append_once_records_each_key_once(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'log.db'}" if backend == "sqlite" else request.getfixturevalue("pg_log_url")
    log = DecisionLog(url)

    def record(n: int, run: str) -> DecisionRecord:
        answer = {"account_id": f"A{n}", "as_of": AS_OF, "model_version": "m/1", "decision_id": f"d{n}",
                  "propensity": 1.0}
        return DecisionRecord.from_answer(answer, request_id=run, caller="batch", run_id=None, policy_version="p",
                                          features={"x": 1.0}, rules_evaluated=["R-CEASE"], source="batch",
                                          idempotency_key=f"{run}/A{n}")

    try:
        assert log.append_once([record(n, "run-1") for n in range(7)], batch_size=3) == 7
        assert log.append_once([record(n, "run-1") for n in range(10)], batch_size=3) == 3
        assert log.append_once([record(n, "run-2") for n in range(2)]) == 2
        assert log.count("batch") == 12
        with pytest.raises(ValueError, match="idempotency_key"):
            log.append_once([DecisionRecord(**{**record(0, "x").__dict__, "idempotency_key": None})])
    finally:
        log.close()


@pytest.fixture(scope="module")
def _pg():
    with throwaway_postgres() as server:
        yield server


@pytest.fixture
def pg_log_url(_pg) -> str:
    """This module's PostgreSQL database, with no decisions table yet."""
    engine = sa.create_engine(_pg.url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS decisions"))
    engine.dispose()
    return _pg.url


def test_spark_engine_refuses_a_database_source(trained, tmp_path):
    with pytest.raises(ValueError, match="--engine spark reads parquet or csv files"):
        score_source(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "q.parquet",
                     _options(trained, tmp_path / "d.db", engine="spark"))


def test_bad_options_are_one_line_errors(trained, tmp_path):
    with pytest.raises(ValueError, match="--engine must be local or spark"):
        score_source(trained["data"], tmp_path / "q.parquet", _options(trained, tmp_path / "d.db", engine="dask"))
    with pytest.raises(ValueError, match="--chunk-size must be at least 1"):
        score_source(trained["data"], tmp_path / "q.parquet", _options(trained, tmp_path / "d.db", chunk_size=-1))


def test_bad_input_leaves_no_parts_and_no_output(trained, tmp_path):
    from models.contract import ContractError, read_dir, write_dir

    p = read_dir(trained["data"])
    payments = p.payments.copy()
    payments.loc[payments.index[3], "amount"] = -5.0
    bad = tmp_path / "bad"
    write_dir(type(p)(p.accounts, p.installments, payments, p.contacts), bad)
    out = tmp_path / "queue.parquet"
    with pytest.raises(ContractError, match="payments.amount"):
        score_source(bad, out, _options(trained, tmp_path / "decisions.db"))
    assert not out.exists() and not Path(f"{out}.parts").exists() and not list(tmp_path.glob("queue*"))
