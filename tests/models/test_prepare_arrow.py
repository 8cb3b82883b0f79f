"""The nightly batch's Arrow path: `accepts_arrow` takes only what `validate` returns unchanged, and
`prepare_arrow` gives `prepare(validate_tables(...))` array for array."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from models.config import load_params
from models.contract import ContractError, accepts_arrow, read_dir_tables, validate_tables, write_dir
from models.features import FeatureConfig, Prepared, prepare, prepare_arrow
from serving import sources


def assert_same(a: Prepared, b: Prepared) -> None:
    for field in fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for key in x:
                assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), (field.name, key)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, field.name
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), field.name
        else:
            assert x == y, field.name


@pytest.fixture(scope="module")
def config() -> FeatureConfig:
    return FeatureConfig.from_params(load_params())


def test_prepare_arrow_equals_prepare(sim_dir, config):
    tables = sources.read_tables(sim_dir)
    assert accepts_arrow(tables)
    assert_same(prepare_arrow(tables, config), prepare(validate_tables(tables), config))


def test_prepare_arrow_from_write_dir_types_and_shuffled_rows(sim_dir, config, tmp_path):
    """date32 dates (write_dir), rows out of account and time order, zones that are missing, empty or no place."""
    portfolio = validate_tables(read_dir_tables(sim_dir))
    write_dir(portfolio, tmp_path)
    tables = sources.read_tables(tmp_path)
    rng = np.random.default_rng(3)
    for name in ("installments", "payments", "contacts"):
        tables[name] = tables[name].take(rng.permutation(tables[name].num_rows))
    zones = tables["accounts"]["timezone"].to_pylist()
    zones[:4] = [None, "", "Mars/Olympus", "America/New_York"]
    tables["accounts"] = tables["accounts"].set_column(
        tables["accounts"].schema.get_field_index("timezone"), "timezone", pa.array(zones, pa.string()))
    assert tables["accounts"]["opened_on"].type == pa.date32()
    assert accepts_arrow(tables)
    assert_same(prepare_arrow(tables, config), prepare(validate_tables(tables), config))


def _with(tables, name, column, values):
    table = tables[name]
    out = dict(tables)
    out[name] = table.set_column(table.schema.get_field_index(column), column, values)
    return out


@pytest.mark.parametrize("change", [
    ("accounts", "account_id", lambda c: pc.if_else(pc.equal(c, c[0]), "", c)),            # missing (empty)
    ("accounts", "employment", lambda c: pc.if_else(pc.equal(c, c[0]), "astronaut", c)),   # unknown category
    ("accounts", "term_months", lambda c: pc.multiply(c, 100)),                            # out of range
    ("accounts", "birth_year", lambda c: pc.add(c, 0.5)),                                  # not whole
    ("accounts", "opened_on", lambda c: pc.add(c.cast(pa.int64()), 3600 * 10**9).cast(c.type)),  # not midnight
    ("installments", "amount_due", lambda c: pc.negate(c)),                                # negative
    ("contacts", "contacted_at", lambda c: pc.if_else(pc.equal(c, c[0]), pa.scalar(  # before 1678
        int(np.datetime64("1677-10-01", "ns").astype(np.int64)), pa.int64()).cast(c.type), c)),
    ("payments", "method", lambda c: pc.if_else(pc.equal(c, c[0]), None, c)),              # missing
    ("contacts", "channel", lambda c: pc.if_else(pc.equal(c, "phone"), "none", c)),        # unpaired
    ("contacts", "propensity", lambda c: pc.multiply(c, 10.0)),                            # above 1
])
def test_accepts_arrow_refuses_what_validate_refuses(sim_dir, change):
    tables = sources.read_tables(sim_dir)
    name, column, edit = change
    changed = _with(tables, name, column, edit(tables[name][column]))
    assert not accepts_arrow(changed)
    with pytest.raises(ContractError):
        validate_tables(changed)


@pytest.mark.parametrize("change", [
    ("payments", "paid_at", lambda c: c.cast(pa.timestamp("ns"))),  # naive, restored by the pandas metadata
    ("payments", "amount", lambda c: c.cast(pa.string())),          # text that validate parses
    ("accounts", "term_months", lambda c: c.cast(pa.int32())),      # another integer type
])
def test_accepts_arrow_leaves_conversions_to_validate(sim_dir, change):
    tables = sources.read_tables(sim_dir)
    name, column, edit = change
    changed = _with(tables, name, column, edit(tables[name][column]))
    assert not accepts_arrow(changed)
    validate_tables(changed)


def test_batch_chunks_take_the_arrow_path_and_keep_read_dir_errors(sim_dir, tmp_path):
    tables = sources.read_tables(sim_dir)
    chunks = list(sources.chunks(tables, 400))
    assert all(chunk.account_rows is not None and chunk.validated is None for chunk in chunks)
    bad = _with(tables, "installments", "amount_due", pc.negate(tables["installments"]["amount_due"]))
    with pytest.raises(ContractError) as raised:
        list(sources.chunks(bad, 400))
    with pytest.raises(ContractError) as expected:
        validate_tables(bad)
    assert str(raised.value) == str(expected.value)
