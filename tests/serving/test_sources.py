"""The batch's sources: chunked reading of files and databases, with read_dir's errors and fingerprints."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from models.contract import ContractError, read_dir, write_dir
from models.vocab import TABLES
from serving import sources
from serving.batch import BatchOptions, score_source
from tests.postgres import PostgresServer, throwaway_postgres

AS_OF = "2026-11-01T00:00:00+09:00"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


def _reassembled(tables, size: int) -> dict[str, pd.DataFrame]:
    """The chunks' tables put back in the order the rows were read."""
    frames, positions = {n: [] for n in TABLES}, {n: [] for n in TABLES}
    for chunk in sources.chunks(tables, size):
        for name in TABLES:
            frames[name].append(getattr(chunk.portfolio, name))
            positions[name].append(chunk.positions[name])
    out = {}
    for name in TABLES:
        order = np.argsort(np.concatenate(positions[name]), kind="stable")
        out[name] = pd.concat(frames[name], ignore_index=True).iloc[order].reset_index(drop=True)
    return out


def test_chunks_hold_every_row_once_exactly_as_read_dir_validates_it(sim_dir):
    whole = read_dir(sim_dir)
    tables = sources.read_tables(sim_dir)
    chunk_list = list(sources.chunks(tables, 97))
    assert len(chunk_list) == -(-len(whole.accounts) // 97)
    assert all(c.accounts <= 97 for c in chunk_list)
    for chunk in chunk_list[:3]:  # every child row sits with its account
        ids = set(chunk.portfolio.accounts["account_id"])
        assert all(set(getattr(chunk.portfolio, n)["account_id"]) <= ids for n in ("installments", "payments",
                                                                                  "contacts"))
    for name, frame in _reassembled(tables, 97).items():
        pd.testing.assert_frame_equal(frame, getattr(whole, name), check_index_type=False)


def test_a_first_export_whose_optional_columns_are_all_empty_is_read_in_chunks(sim_dir, tmp_path):
    """A business-as-usual export has no propensity, experiment or decision anywhere: parquet stores such a
    column with the null type, which the fingerprint must take as it is (it once failed on it)."""
    for name in TABLES:
        frame = pd.read_parquet(sim_dir / f"{name}.parquet")
        if name == "contacts":
            frame = frame.assign(propensity=None, experiment_id=None, decision_id=None)
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    tables = sources.read_tables(tmp_path)
    assert str(tables["contacts"]["propensity"].type) == "null"
    first = [c.fingerprint for c in sources.chunks(tables, 500)]
    assert first == [c.fingerprint for c in sources.chunks(sources.read_tables(tmp_path), 500)]
    assert sum(len(c.portfolio.contacts) for c in sources.chunks(tables, 500)) == len(read_dir(tmp_path).contacts)


def test_a_chunk_fingerprint_changes_only_with_that_chunks_rows(sim_dir, tmp_path):
    p = read_dir(sim_dir)
    write_dir(p, tmp_path / "same")
    before = [c.fingerprint for c in sources.chunks(sources.read_tables(tmp_path / "same"), 200)]
    payments = p.payments.copy()
    row = int(np.flatnonzero(payments["account_id"] == p.accounts["account_id"].iat[450])[0])
    payments.loc[row, "amount"] += 1.0
    write_dir(type(p)(p.accounts, p.installments, payments, p.contacts), tmp_path / "changed")
    after = [c.fingerprint for c in sources.chunks(sources.read_tables(tmp_path / "changed"), 200)]
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [450 // 200]


def _broken(sim_dir, tmp_path, edit) -> str:
    p = read_dir(sim_dir)
    tables = {name: frame.copy() for name, frame in p.tables.items()}
    edit(tables)
    out = tmp_path / "bad"
    out.mkdir()
    for name, frame in tables.items():
        frame.to_parquet(out / f"{name}.parquet")
    return out


@pytest.mark.parametrize("edit", [
    pytest.param(lambda t: t["payments"].__setitem__("amount", t["payments"]["amount"].where(
        t["payments"].index % 500 != 3, -5.0)), id="negative-amounts"),
    pytest.param(lambda t: t["contacts"].loc.__setitem__((7, "account_id"), "NOBODY"), id="unknown-account"),
    pytest.param(lambda t: t["accounts"].loc.__setitem__((1400, "account_id"), t["accounts"]["account_id"].iat[2]),
                 id="account-repeated-in-another-chunk"),
    pytest.param(lambda t: t["contacts"].loc.__setitem__((9, "contact_id"), t["contacts"]["contact_id"].iat[-1]),
                 id="contact-repeated-in-another-chunk"),
])
def test_chunked_reading_raises_the_error_read_dir_raises(sim_dir, tmp_path, edit):
    bad = _broken(sim_dir, tmp_path, edit)
    with pytest.raises(ContractError) as expected:
        read_dir(bad)
    with pytest.raises(ContractError) as chunked:
        list(sources.chunks(sources.read_tables(bad), 100))
    assert str(chunked.value) == str(expected.value)


def test_a_csv_column_given_twice_is_the_error_read_dir_gives(sim_dir, tmp_path):
    """One reader of table files serves both: before, the batch dropped the repeated column and then
    reported it missing."""
    out = tmp_path / "twice"
    write_dir(read_dir(sim_dir), out, fmt="csv")
    lines = (out / "payments.csv").read_text().splitlines()
    (out / "payments.csv").write_text("\n".join([lines[0] + ",amount", *(line + ",1" for line in lines[1:])]) + "\n")
    with pytest.raises(ContractError) as expected:
        read_dir(out)
    with pytest.raises(ContractError) as batch:
        sources.read_tables(out)
    assert str(batch.value) == str(expected.value) and "appears 2 times in payments.csv" in str(expected.value)


def test_a_database_without_a_table_is_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id TEXT)"))
    engine.dispose()
    with pytest.raises(ContractError, match="installments: table missing: no table installments in sqlite:///"):
        sources.read_tables(url)


@pytest.mark.parametrize("location", ["s3://bucket/portfolio", "hdfs://namenode/portfolio"])
def test_a_url_that_is_not_a_database_is_a_clear_error_for_the_local_engine(location):
    with pytest.raises(ContractError, match=f"source: cannot read {location}: .*needs --engine spark"):
        sources.read_tables(location)
    assert not sources.is_database(location) and sources.is_database("sqlite:///x.db")


def test_database_url_is_described_without_its_password():
    url = "postgresql+psycopg://nightly:s3cret@db.internal/cureflow"  # fixture, not a secret
    assert sources.describe(url) == "postgresql+psycopg://nightly:***@db.internal/cureflow"


@pytest.fixture(scope="module")
def file_queue(trained, tmp_path_factory):
    """The work queue of the fixture portfolio read from parquet files."""
    out = tmp_path_factory.mktemp("files") / "queue.parquet"
    options = BatchOptions(as_of=AS_OF, model_uri=str(trained["bundle_path"]), progress=False, chunk_size=400,
                           decision_log=f"sqlite:///{out.parent / 'decisions.db'}")
    return score_source(trained["data"], out, options)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "csv"])
def test_database_and_csv_sources_give_the_same_work_queue_as_parquet_files(trained, file_queue, tmp_path,
                                                                           backend, request):
    portfolio = read_dir(trained["data"])
    if backend == "csv":
        source = tmp_path / "csv"
        write_dir(portfolio, source, fmt="csv")
    else:
        source = f"sqlite:///{tmp_path / 'portfolio.db'}" if backend == "sqlite" else \
            request.getfixturevalue("pg_server").url
        sources.write_sql(portfolio, source)
    options = BatchOptions(as_of=AS_OF, model_uri=str(trained["bundle_path"]), progress=False, chunk_size=300,
                           decision_log=f"sqlite:///{tmp_path / 'decisions.db'}")
    queue = score_source(source, tmp_path / "queue.parquet", options)
    assert len(queue) > 0
    pd.testing.assert_frame_equal(queue, file_queue)


@pytest.mark.slow
def test_score_command_reads_a_sqlite_url(trained, tmp_path):
    url = f"sqlite:///{tmp_path / 'portfolio.db'}"
    sources.write_sql(read_dir(trained["data"]), url)
    out = tmp_path / "queue.parquet"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "--data", url, "--as-of", AS_OF,
                           "--out", str(out), "--model", str(trained["bundle_path"]),
                           "--decision-log", f"sqlite:///{tmp_path / 'decisions.db'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_parquet(out)) > 0
