"""The contract reader and validator (models/contract.py): what it accepts, rejects, and how it says so."""

from __future__ import annotations

import pickle
import tempfile
from datetime import date, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.contract import SPEC, ContractError, Portfolio, read_dir, validate, write_dir
from models.vocab import CHANNELS, DIRECTIONS, EMPLOYMENT, OUTCOMES, PAYMENT_METHODS, TABLES

FLAGS = (
    "consent_phone",
    "consent_sms",
    "consent_email",
    "do_not_contact",
    "dispute_open",
    "legal_representative",
    "bankruptcy",
    "vulnerable",
)


def tiny_tables() -> dict[str, pd.DataFrame]:
    """A valid tiny portfolio as an export sends it: dates and timestamps as ISO text."""
    accounts = pd.DataFrame(
        {
            "account_id": ["A1", "A2", "A3"],
            "opened_on": ["2024-01-05", "2024-02-01", "2023-11-20"],
            "term_months": [36, 120, 84],
            "monthly_amount": [30000.0, 45000.5, 12000.0],
            "birth_year": [1980, None, 1999],
            "employment": ["salaried", "retired", "unknown"],
            "region": ["Tokyo", None, "Osaka"],
            "timezone": ["Asia/Tokyo", "Asia/Tokyo", None],
            **{flag: [True, False, True] for flag in FLAGS},
        }
    )
    installments = pd.DataFrame(
        {
            "account_id": ["A1", "A1", "A2", "A3"],
            "due_date": ["2024-02-05", "2024-03-05", "2024-03-01", "2023-12-20"],
            "amount_due": [30000.0, 30000.0, 45000.5, 0.0],
        }
    )
    payments = pd.DataFrame(
        {
            "account_id": ["A1", "A2"],
            "paid_at": ["2024-02-05T10:00:00+09:00", "2024-03-02T08:30:00Z"],
            "amount": [30000.0, 20000.0],
            "method": ["direct_debit", "card"],
        }
    )
    contacts = pd.DataFrame(
        {
            "contact_id": ["C1", "C2", "C3"],
            "account_id": ["A2", "A2", "A3"],
            "contacted_at": [
                "2024-03-02T10:00:00+09:00",
                "2024-03-03T12:00:00.5+09:00",
                "2024-01-02T09:00:00Z",
            ],
            "channel": ["phone", "none", "sms"],
            "direction": ["outbound", "outbound", "outbound"],
            "template": ["call_v1", None, "sms_v2"],
            "outcome": ["reached", "held_out", "delivered"],
            "experiment_id": [None, "exp-7", "exp-7"],
            "propensity": [None, 0.25, 0.75],
        }
    )
    return {"accounts": accounts, "installments": installments, "payments": payments, "contacts": contacts}


def changed(table: str, column: str, values: list) -> dict[str, pd.DataFrame]:
    """The tiny portfolio with one column replaced."""
    tables = tiny_tables()
    tables[table] = tables[table].assign(**{column: pd.Series(values, dtype=object)})
    return tables


def rejection(tables: dict[str, pd.DataFrame]) -> ContractError:
    """The ContractError that validate raises for these tables."""
    with pytest.raises(ContractError) as info:
        validate(tables)
    return info.value


@pytest.fixture
def portfolio() -> Portfolio:
    return validate(tiny_tables())


# ---------------------------------------------------------------------------------------------- the output


def test_valid_portfolio_has_exactly_the_contract_columns_in_order(portfolio: Portfolio) -> None:
    for name, frame in portfolio.tables.items():
        assert list(frame.columns) == list(SPEC[name])
        assert isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0


def test_valid_portfolio_has_the_normalised_dtypes(portfolio: Portfolio) -> None:
    accounts, contacts, payments = portfolio.accounts, portfolio.contacts, portfolio.payments
    assert accounts["opened_on"].dtype == np.dtype("datetime64[ns]")
    assert portfolio.installments["due_date"].dtype == np.dtype("datetime64[ns]")
    assert payments["paid_at"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert contacts["contacted_at"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert accounts["term_months"].dtype == np.int64
    assert accounts["birth_year"].dtype == np.float64 and np.isnan(accounts["birth_year"].iloc[1])
    assert contacts["propensity"].dtype == np.float64 and np.isnan(contacts["propensity"].iloc[0])
    assert all(accounts[flag].dtype == np.bool_ for flag in FLAGS)
    for frame, column in [(accounts, "account_id"), (accounts, "region"), (contacts, "template")]:
        assert frame[column].dtype == object
        assert all(value is None or type(value) is str for value in frame[column])
    assert accounts["region"].iloc[1] is None and contacts["template"].iloc[1] is None


def test_timestamp_with_plus_nine_offset_becomes_the_same_utc_instant(portfolio: Portfolio) -> None:
    assert portfolio.payments["paid_at"].iloc[0] == pd.Timestamp("2024-02-05T01:00:00Z")
    assert portfolio.contacts["contacted_at"].iloc[1] == pd.Timestamp("2024-03-03T03:00:00.5Z")


def test_accepts_csv_style_text_for_numbers_and_flags() -> None:
    tables = tiny_tables()
    accounts = tables["accounts"].astype(str).replace({"None": "", "nan": ""})
    accounts["consent_sms"] = ["1", "0", "false"]
    tables["accounts"] = accounts
    result = validate(tables).accounts
    assert result["term_months"].tolist() == [36, 120, 84]
    assert result["consent_sms"].tolist() == [True, False, False]
    assert result["birth_year"].iloc[0] == 1980.0 and np.isnan(result["birth_year"].iloc[1])


def test_accepts_date_objects_and_aware_datetimes() -> None:
    tables = tiny_tables()
    tables["accounts"]["opened_on"] = pd.to_datetime(tables["accounts"]["opened_on"]).dt.date
    tables["payments"]["paid_at"] = pd.to_datetime(tables["payments"]["paid_at"], utc=True).dt.tz_convert("Asia/Tokyo")
    result = validate(tables)
    assert result.accounts["opened_on"].iloc[0] == pd.Timestamp("2024-01-05")
    assert result.payments["paid_at"].iloc[0] == pd.Timestamp("2024-02-05T01:00:00Z")


def test_extra_columns_are_dropped() -> None:
    tables = tiny_tables()
    tables["accounts"]["crm_notes"] = ["x", "y", "z"]
    tables["payments"]["bank_reference"] = [1, 2]
    result = validate(tables)
    assert "crm_notes" not in result.accounts.columns
    assert "bank_reference" not in result.payments.columns


def test_absent_optional_columns_are_added_as_nulls() -> None:
    tables = tiny_tables()
    tables["accounts"] = tables["accounts"].drop(columns=["birth_year", "region", "timezone"])
    tables["contacts"] = tables["contacts"].drop(columns=["template", "experiment_id", "propensity"])
    result = validate(tables)
    assert result.accounts["birth_year"].isna().all() and result.accounts["birth_year"].dtype == np.float64
    assert result.accounts["region"].tolist() == [None, None, None]
    assert result.contacts["experiment_id"].tolist() == [None, None, None]
    assert result.contacts["propensity"].isna().all() and result.contacts["propensity"].dtype == np.float64
    assert list(result.contacts.columns) == list(SPEC["contacts"])


def test_empty_tables_with_the_right_columns_are_valid() -> None:
    tables = {name: frame.iloc[0:0] for name, frame in tiny_tables().items()}
    result = validate(tables)
    assert all(len(frame) == 0 for frame in result.tables.values())
    assert result.payments["paid_at"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert result.accounts["consent_phone"].dtype == np.bool_


def test_empty_string_counts_as_missing() -> None:
    result = validate(changed("accounts", "region", ["", "Kyoto", None])).accounts
    assert result["region"].tolist() == [None, "Kyoto", None]


def test_input_index_is_replaced_by_a_fresh_range_index() -> None:
    tables = tiny_tables()
    tables["payments"].index = [10, 5]
    result = validate(tables).payments
    assert list(result.index) == [0, 1] and result["amount"].tolist() == [30000.0, 20000.0]


# ---------------------------------------------------------------------------------------------- rejections


def test_rejects_accounts_without_required_column() -> None:
    tables = tiny_tables()
    tables["accounts"] = tables["accounts"].drop(columns=["monthly_amount"])
    error = rejection(tables)
    assert (error.table, error.column) == ("accounts", "monthly_amount")
    assert "missing" in str(error)


def test_rejects_missing_table() -> None:
    tables = tiny_tables()
    del tables["contacts"]
    error = rejection(tables)
    assert (error.table, error.column) == ("contacts", None)


def test_rejects_text_in_number_column() -> None:
    error = rejection(changed("installments", "amount_due", [100.0, "about 5000", 1.0, 2.0]))
    assert (error.table, error.column, error.rows) == ("installments", "amount_due", [1])
    assert "not a number" in str(error) and "'about 5000'" in str(error)


def test_rejects_fractional_term_months() -> None:
    error = rejection(changed("accounts", "term_months", [36, 36.5, 12]))
    assert (error.column, error.rows, error.problem) == ("term_months", [1], "not a whole number")


def test_rejects_term_months_outside_1_to_180() -> None:
    error = rejection(changed("accounts", "term_months", [0, 36, 181]))
    assert (error.column, error.rows) == ("term_months", [0, 2])


def test_rejects_unknown_category() -> None:
    error = rejection(changed("payments", "method", ["card", "cash"]))
    assert (error.table, error.column, error.rows) == ("payments", "method", [1])
    assert "'cash'" in str(error)


def test_rejects_payment_with_negative_amount() -> None:
    error = rejection(changed("payments", "amount", [-5.0, 100.0]))
    assert (error.table, error.column, error.rows) == ("payments", "amount", [0])


def test_rejects_zero_monthly_amount() -> None:
    error = rejection(changed("accounts", "monthly_amount", [30000.0, 0.0, 1.0]))
    assert (error.table, error.column, error.rows) == ("accounts", "monthly_amount", [1])


def test_accepts_zero_amount_due() -> None:
    installments = validate(changed("installments", "amount_due", [0.0, 0.0, 1.0, 2.0])).installments
    assert installments["amount_due"].tolist() == [0.0, 0.0, 1.0, 2.0]


def test_rejects_infinite_amount() -> None:
    error = rejection(changed("installments", "amount_due", [1.0, np.inf, 1.0, 1.0]))
    assert (error.column, error.rows) == ("amount_due", [1])


def test_rejects_duplicate_account_id_naming_both_rows() -> None:
    error = rejection(changed("accounts", "account_id", ["A1", "A2", "A1"]))
    assert (error.table, error.column, error.rows) == ("accounts", "account_id", [0, 2])
    assert "duplicate" in error.problem


@pytest.mark.parametrize("table, column, values, bad_row", [
    ("payments", "amount", [30000.0, 1e13], 1),
    ("installments", "amount_due", [30000.0, 30000.0, 1e300, 0.0], 2),
    ("accounts", "monthly_amount", [30000.0, 45000.5, 1.7e308], 2),
])
def test_rejects_amounts_past_what_the_engine_counts_exactly(table, column, values, bad_row) -> None:
    """Money is counted in int64 cents: an amount past MAX_AMOUNT would overflow it (the API refuses the
    same amounts through its schema)."""
    from models.vocab import MAX_AMOUNT

    error = rejection(changed(table, column, values))
    assert (error.table, error.column, error.rows) == (table, column, [bad_row])
    assert "out of range" in error.problem and f"{MAX_AMOUNT:g}" in error.problem
    validate(changed(table, column, [min(v, MAX_AMOUNT) for v in values]))  # the bound itself is accepted


def test_rejects_duplicate_contact_id() -> None:
    error = rejection(changed("contacts", "contact_id", ["C1", "C2", "C2"]))
    assert (error.table, error.column, error.rows) == ("contacts", "contact_id", [1, 2])


def test_rejects_null_account_id_in_installments() -> None:
    error = rejection(changed("installments", "account_id", ["A1", None, "A2", "A3"]))
    assert (error.table, error.column, error.rows) == ("installments", "account_id", [1])
    assert error.problem == "missing"


def test_rejects_unparseable_timestamp() -> None:
    error = rejection(changed("payments", "paid_at", ["yesterday", "2024-13-02T08:30:00Z"]))
    assert (error.table, error.column, error.rows) == ("payments", "paid_at", [0])
    error = rejection(changed("payments", "paid_at", ["2024-02-05T10:00:00Z", "2024-13-02T08:30:00Z"]))
    assert (error.column, error.rows) == ("paid_at", [1])


def test_rejects_naive_timestamp_text() -> None:
    error = rejection(changed("contacts", "contacted_at", ["2024-03-02T10:00:00Z", "2024-03-03 12:00", "2024-01-02"]))
    assert (error.table, error.column, error.rows) == ("contacts", "contacted_at", [1, 2])
    assert "without a UTC offset" in error.problem


def test_rejects_naive_timestamp_in_csv_file(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    file = tmp_path / "payments.csv"
    file.write_text(file.read_text().replace("+00:00", ""))
    with pytest.raises(ContractError) as info:
        read_dir(tmp_path)
    assert (info.value.table, info.value.column, info.value.rows) == ("payments", "paid_at", [0, 1])
    assert "without a UTC offset" in str(info.value)


def test_an_error_in_a_csv_file_names_the_line_a_person_sees_beside_the_row(tmp_path: Path,
                                                                          portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    file = tmp_path / "payments.csv"
    header, *rows = file.read_text().splitlines()
    rows[1] = rows[1].replace("+00:00", "")
    file.write_text("\n".join([header, "", *rows]) + "\n")  # a blank line after the header: row 1 is on line 4
    with pytest.raises(ContractError) as info:
        read_dir(tmp_path)
    assert info.value.rows == [1] and info.value.lines == [4]
    assert "in 1 row, row 1 (line 4 of payments.csv)" in str(info.value)


def test_a_quoted_value_over_two_lines_moves_the_line_numbers_not_the_rows(tmp_path: Path,
                                                                           portfolio: Portfolio) -> None:
    frame = portfolio.contacts.copy()
    frame.loc[0, "template"] = "reminder\nsecond line"
    bad = type(portfolio)(portfolio.accounts, portfolio.installments, portfolio.payments, frame)
    write_dir(bad, tmp_path, fmt="csv")
    file = tmp_path / "contacts.csv"
    lines = file.read_text().splitlines()
    assert len(lines) == len(frame) + 2  # the value spans two lines
    lines[4] = lines[4].replace("\"sms\"", "\"fax\"", 1)  # data row 2, on line 5 of the file
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError) as info:
        read_dir(tmp_path)
    assert (info.value.column, info.value.rows, info.value.lines) == ("channel", [2], [5])


def test_an_error_from_a_frame_names_rows_but_no_line(portfolio: Portfolio) -> None:
    frame = portfolio.payments.copy()
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[1, "amount"] = -5
    with pytest.raises(ContractError) as info:
        validate({**portfolio.tables, "payments": frame})
    assert info.value.rows == [1] and info.value.lines == [] and "line" not in str(info.value)


def test_rejects_tz_naive_parquet_timestamps(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="parquet")
    payments = pq.read_table(tmp_path / "payments.parquet")
    naive = payments.set_column(1, "paid_at", payments.column("paid_at").cast(pa.timestamp("ns")))
    pq.write_table(naive, tmp_path / "payments.parquet")
    with pytest.raises(ContractError) as info:
        read_dir(tmp_path)
    assert (info.value.table, info.value.column, info.value.rows) == ("payments", "paid_at", [0, 1])
    assert "without a UTC offset" in str(info.value)


def test_rejects_date_with_a_time_of_day() -> None:
    error = rejection(changed("installments", "due_date", ["2024-02-05", "2024-03-05 10:00", "2024-03-01", "x"]))
    assert (error.table, error.column, error.rows) == ("installments", "due_date", [1, 3])
    tables = tiny_tables()
    tables["installments"]["due_date"] = pd.to_datetime(
        ["2024-02-05", "2024-03-05T10:00", "2024-03-01", "2024-01-01"], format="ISO8601"
    )
    assert rejection(tables).rows == [1]


def test_rejects_null_in_required_bool() -> None:
    error = rejection(changed("accounts", "do_not_contact", [True, None, False]))
    assert (error.table, error.column, error.rows) == ("accounts", "do_not_contact", [1])
    assert error.problem == "missing"


def test_rejects_text_that_is_not_a_boolean() -> None:
    error = rejection(changed("accounts", "vulnerable", ["true", "yes", "0"]))
    assert (error.column, error.rows) == ("vulnerable", [1])


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_rejects_propensity_out_of_range(bad: float) -> None:
    error = rejection(changed("contacts", "propensity", [None, bad, 0.5]))
    assert (error.table, error.column, error.rows) == ("contacts", "propensity", [1])
    assert "(0, 1]" in error.problem


def test_accepts_propensity_of_exactly_one() -> None:
    assert validate(changed("contacts", "propensity", [None, 1.0, 0.5])).contacts["propensity"][1] == 1.0


@pytest.mark.parametrize(
    ("channels", "outcomes"),
    [
        (["phone", "sms", "sms"], ["reached", "held_out", "delivered"]),  # held_out without channel none
        (["phone", "none", "sms"], ["reached", "no_answer", "delivered"]),  # channel none not held out
    ],
)
def test_rejects_held_out_and_channel_none_apart(channels: list[str], outcomes: list[str]) -> None:
    tables = tiny_tables()
    tables["contacts"] = tables["contacts"].assign(channel=channels, outcome=outcomes)
    error = rejection(tables)
    assert (error.table, error.column, error.rows) == ("contacts", "outcome", [1])


def test_rejects_orphan_account_id_in_payments() -> None:
    error = rejection(changed("payments", "account_id", ["A1", "A9"]))
    assert (error.table, error.column, error.rows) == ("payments", "account_id", [1])
    assert "accounts.account_id" in str(error) and "'A9'" in str(error)


def test_error_names_table_column_count_and_first_five_rows() -> None:
    tables = tiny_tables()
    contacts = pd.concat([tables["contacts"]] * 4, ignore_index=True)
    contacts["contact_id"] = [f"C{i}" for i in range(len(contacts))]
    stamps = contacts["contacted_at"].astype(object)
    bad_rows = [1, 4, 5, 7, 8, 10, 11]
    secret = "2024-03-03 12:00 " + "z" * 60  # long: shown truncated
    stamps[bad_rows] = secret
    tables["contacts"] = contacts.assign(contacted_at=stamps)
    error = rejection(tables)
    assert (error.table, error.column, error.count) == ("contacts", "contacted_at", 7)
    assert error.rows == [1, 4, 5, 7, 8]
    message = str(error)
    assert message.startswith("contacts.contacted_at: ")
    assert "in 7 rows, first rows 1, 4, 5, 7, 8" in message
    assert secret not in message and secret[:20] in message
    assert "call_v1" not in message  # no other column's data


def test_contract_error_is_built_from_table_column_rows_problem() -> None:
    error = ContractError("request", "as_of", [3], "as_of without a UTC offset")
    assert (error.table, error.column, error.rows, error.count) == ("request", "as_of", [3], 1)
    assert str(error) == "request.as_of: as_of without a UTC offset in 1 row, row 3"
    assert str(ContractError("payments", None, problem="table missing")) == "payments: table missing"


def test_empty_object_frames_are_valid_tables() -> None:
    tables = tiny_tables()
    tables["contacts"] = pd.DataFrame({column: pd.Series(dtype=object) for column in SPEC["contacts"]})
    contacts = validate(tables).contacts
    assert len(contacts) == 0 and contacts["contacted_at"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert contacts["propensity"].dtype == np.float64 and contacts["channel"].dtype == object


def test_contract_error_survives_pickling() -> None:
    error = rejection(changed("payments", "amount", [-5.0, 100.0]))
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.table, copy.column, copy.rows, copy.count) == (
        error.table,
        error.column,
        error.rows,
        error.count,
    )
    assert str(copy) == str(error)


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip_gives_identical_frames_and_fingerprint(tmp_path: Path, portfolio: Portfolio, fmt: str) -> None:
    write_dir(portfolio, tmp_path, fmt=fmt)
    again = read_dir(tmp_path)
    for name in TABLES:
        pd.testing.assert_frame_equal(again.tables[name], portfolio.tables[name])
    assert again.fingerprint() == portfolio.fingerprint()


def test_csv_and_parquet_give_the_same_fingerprint(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path / "csv", fmt="csv")
    write_dir(portfolio, tmp_path / "parquet", fmt="parquet")
    assert read_dir(tmp_path / "csv").fingerprint() == read_dir(tmp_path / "parquet").fingerprint()


def test_fingerprint_changes_when_one_value_changes(portfolio: Portfolio) -> None:
    payments = portfolio.payments.copy()
    payments.loc[1, "amount"] = 20000.01
    changed_portfolio = Portfolio(portfolio.accounts, portfolio.installments, payments, portfolio.contacts)
    assert changed_portfolio.fingerprint() != portfolio.fingerprint()


def test_csv_writes_timestamps_as_iso_with_offset(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    text = (tmp_path / "payments.csv").read_text()
    assert "2024-02-05T01:00:00+00:00" in text and "2024-03-02T08:30:00+00:00" in text


def test_reads_directory_with_mixed_formats(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="parquet")
    (tmp_path / "contacts.parquet").unlink()
    portfolio.contacts.assign(contacted_at=portfolio.contacts["contacted_at"].map(pd.Timestamp.isoformat)).to_csv(
        tmp_path / "contacts.csv", index=False
    )
    again = read_dir(tmp_path)
    pd.testing.assert_frame_equal(again.contacts, portfolio.contacts)
    pd.testing.assert_frame_equal(again.accounts, portfolio.accounts)


def test_rejects_directory_with_a_table_missing(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path)
    (tmp_path / "installments.parquet").unlink()
    with pytest.raises(ContractError) as info:
        read_dir(tmp_path)
    assert info.value.table == "installments" and "missing" in str(info.value)


def test_rejects_directory_with_a_table_in_both_formats(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    write_dir(portfolio, tmp_path / "other", fmt="parquet")
    (tmp_path / "other" / "payments.parquet").rename(tmp_path / "payments.parquet")
    with pytest.raises(ContractError) as info:
        read_dir(tmp_path)
    assert info.value.table == "payments" and "both" in str(info.value)


def test_write_dir_replaces_the_other_format_of_a_table(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    write_dir(portfolio, tmp_path, fmt="parquet")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(f"{name}.parquet" for name in TABLES)


def test_reads_csv_with_extra_columns_and_header_only_tables(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    (tmp_path / "payments.csv").write_text("note,account_id,paid_at,amount,method\n")
    file = tmp_path / "accounts.csv"
    lines = file.read_text().splitlines()
    file.write_text("\n".join([lines[0] + ",phone_number"] + [line + ",090-0000-0000" for line in lines[1:]]) + "\n")
    again = read_dir(tmp_path)
    assert len(again.payments) == 0 and list(again.payments.columns) == list(SPEC["payments"])
    pd.testing.assert_frame_equal(again.accounts, portfolio.accounts)


def test_reads_csv_from_a_spreadsheet_with_bom_and_crlf(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    file = tmp_path / "accounts.csv"
    text = file.read_text().replace("true", "TRUE").replace("false", "FALSE")
    file.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    pd.testing.assert_frame_equal(read_dir(tmp_path).accounts, portfolio.accounts)


def test_rejects_csv_without_any_contract_column(tmp_path: Path, portfolio: Portfolio) -> None:
    write_dir(portfolio, tmp_path, fmt="csv")
    (tmp_path / "installments.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ContractError) as info:
        read_dir(tmp_path)
    assert (info.value.table, info.value.column) == ("installments", "account_id")


def test_subset_keeps_only_the_given_accounts_in_order(portfolio: Portfolio) -> None:
    part = portfolio.subset(["A3", "A2"])
    assert part.accounts["account_id"].tolist() == ["A2", "A3"]
    assert part.installments["account_id"].tolist() == ["A2", "A3"]
    assert part.payments["account_id"].tolist() == ["A2"]
    assert part.contacts["contact_id"].tolist() == ["C1", "C2", "C3"]
    assert all(isinstance(frame.index, pd.RangeIndex) for frame in part.tables.values())
    alone = portfolio.subset("A1")
    assert alone.contacts.empty and alone.payments["amount"].tolist() == [30000.0]


# ---------------------------------------------------------------------------------------------- property


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters=",\"'\n\r\t "),
    min_size=1,
    max_size=12,
)
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_DATES = st.dates(date(1900, 1, 1), date(2200, 12, 31))  # datetime64[ns] holds 1678 to 2261
_NS = st.integers(0, 4_000_000_000 * 10**9)  # 1970 to about 2096, in nanoseconds


def _stamps(draw, n: int) -> list[str]:
    """n ISO 8601 timestamps with random offsets and nanoseconds."""
    instants = [pd.Timestamp(draw(_NS), unit="ns", tz="UTC") for _ in range(n)]
    return [instant.tz_convert(draw(_OFFSETS)).isoformat() for instant in instants]


@st.composite
def valid_tables(draw) -> dict[str, pd.DataFrame]:
    """A random portfolio that meets the contract, in the shapes an export sends."""
    ids = draw(st.lists(_TEXT, max_size=4, unique=True))
    n = len(ids)
    optional_text = st.none() | _TEXT
    accounts = {
        "account_id": ids,
        "opened_on": [d.isoformat() for d in draw(st.lists(_DATES, min_size=n, max_size=n))],
        "term_months": draw(st.lists(st.integers(1, 180), min_size=n, max_size=n)),
        "monthly_amount": draw(st.lists(st.floats(0, 1e12, exclude_min=True), min_size=n, max_size=n)),
        "birth_year": draw(st.lists(st.none() | st.integers(1900, 2100), min_size=n, max_size=n)),
        "employment": draw(st.lists(st.sampled_from(EMPLOYMENT), min_size=n, max_size=n)),
        "region": draw(st.lists(optional_text, min_size=n, max_size=n)),
        "timezone": draw(st.lists(optional_text, min_size=n, max_size=n)),
        **{flag: draw(st.lists(st.booleans(), min_size=n, max_size=n)) for flag in FLAGS},
    }
    account = st.sampled_from(ids) if ids else st.nothing()
    k = draw(st.integers(0, 6)) if ids else 0
    installments = {
        "account_id": [draw(account) for _ in range(k)],
        "due_date": [draw(_DATES).isoformat() for _ in range(k)],
        "amount_due": [draw(st.floats(0, 1e12)) for _ in range(k)],
    }
    k = draw(st.integers(0, 4)) if ids else 0
    payments = {
        "account_id": [draw(account) for _ in range(k)],
        "paid_at": _stamps(draw, k),
        "amount": [draw(st.floats(0, 1e12, exclude_min=True)) for _ in range(k)],
        "method": [draw(st.sampled_from(PAYMENT_METHODS)) for _ in range(k)],
    }
    k = draw(st.integers(0, 4)) if ids else 0
    channels = [draw(st.sampled_from(CHANNELS)) for _ in range(k)]
    contacted = [o for o in OUTCOMES if o != "held_out"]
    contacts = {
        "contact_id": draw(st.lists(_TEXT, min_size=k, max_size=k, unique=True)),
        "account_id": [draw(account) for _ in range(k)],
        "contacted_at": _stamps(draw, k),
        "channel": channels,
        "direction": [draw(st.sampled_from(DIRECTIONS)) for _ in range(k)],
        "template": [draw(optional_text) for _ in range(k)],
        "outcome": ["held_out" if c == "none" else draw(st.sampled_from(contacted)) for c in channels],
        "experiment_id": [draw(optional_text) for _ in range(k)],
        "propensity": [draw(st.none() | st.floats(0, 1, exclude_min=True)) for _ in range(k)],
    }
    tables = {"accounts": accounts, "installments": installments, "payments": payments, "contacts": contacts}
    return {name: pd.DataFrame(columns) for name, columns in tables.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_tables())
def test_round_trip_of_a_random_valid_portfolio_is_lossless(tables: dict[str, pd.DataFrame]) -> None:
    portfolio = validate(tables)
    for fmt in ("csv", "parquet"):
        with tempfile.TemporaryDirectory() as directory:
            write_dir(portfolio, directory, fmt=fmt)
            again = read_dir(directory)
        for name in TABLES:
            pd.testing.assert_frame_equal(again.tables[name], portfolio.tables[name])
        assert again.fingerprint() == portfolio.fingerprint()
