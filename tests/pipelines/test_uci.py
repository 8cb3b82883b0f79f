"""The UCI credit-card file: its quirks are read as documented, bad input is named, and the adapter's
contract tables give `cureflow train` exactly the cure task defined on the statuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from models.config import load_params
from models.contract import ContractError, read_dir
from models.features import FeatureConfig, prepare
from pipelines.cli import app
from pipelines.features import cure_examples, example_dates, resolve_history_end
from pipelines.uci import (
    DEFAULT_DATA,
    AdapterConfig,
    cure_task,
    default_features,
    ledger,
    read_uci,
    to_contract,
    train_params,
    write,
)

HEADER = ('"ID","LIMIT_BAL","SEX","EDUCATION","MARRIAGE","AGE","PAY_0","PAY_2","PAY_3","PAY_4","PAY_5","PAY_6",'
          '"BILL_AMT1","BILL_AMT2","BILL_AMT3","BILL_AMT4","BILL_AMT5","BILL_AMT6","PAY_AMT1","PAY_AMT2",'
          '"PAY_AMT3","PAY_AMT4","PAY_AMT5","PAY_AMT6","default.payment.next.month"')
# ID, limit, sex, education, marriage, age, statuses Sep..Apr, bills Sep..Apr, payments Sep..Apr, default
ROWS = [
    "1,20000,2,2,1,24,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689,0,0,0,0,1",
    "2,1e+05,2,5,0,26,-1,2,0,0,0,2,2682,1725,2682,3272,3455,3261,0,1000,1000,1000,0,2000,1",
    "3,90000,2,0,2,34,0,0,0,0,0,0,-165,14027,13559,14331,14948,15549,1518,1500,1000,1000,1000,5000,0",
    "4,50000,1,6,3,37,1,-1,-1,-2,-2,-2,-20,-70,0,0,-12,0,0,0,0,0,0,0,0",
]
needs_real_file = pytest.mark.skipif(not DEFAULT_DATA.exists(), reason="../shared/data holds no UCI file")


def _csv(tmp_path: Path, rows=ROWS, header: str = HEADER) -> Path:
    path = tmp_path / "uci.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_reads_quoted_header_and_numbers_written_with_an_exponent(tmp_path):
    data = read_uci(_csv(tmp_path))
    assert "LIMIT_BAL" in data.frame.columns and '"LIMIT_BAL"' not in data.frame.columns
    assert data.frame["LIMIT_BAL"].tolist() == [20000, 100000, 90000, 50000]
    assert data.frame["LIMIT_BAL"].dtype == np.int64
    assert any("exponent" in note for note in data.notes)


def test_reads_pay_0_as_september_because_the_file_has_no_pay_1(tmp_path):
    frame = read_uci(_csv(tmp_path)).frame
    assert "PAY_0" not in frame.columns
    assert frame["PAY_1"].tolist() == [2, -1, 0, 1]  # September, the file's PAY_0
    renamed = read_uci(_csv(tmp_path, header=HEADER.replace('"PAY_0"', '"PAY_1"'))).frame
    assert renamed["PAY_1"].tolist() == [2, -1, 0, 1]


def test_rejects_a_file_with_both_pay_0_and_pay_1(tmp_path):
    header = HEADER.replace('"PAY_2"', '"PAY_1"')
    with pytest.raises(ContractError, match="PAY_0.*PAY_1"):
        read_uci(_csv(tmp_path, header=header))


def test_undocumented_education_and_marriage_codes_read_as_unknown(tmp_path):
    data = read_uci(_csv(tmp_path))
    assert data.frame["EDUCATION"].tolist() == [2, 0, 0, 0]  # 5, 0 and 6 are undocumented
    assert data.frame["MARRIAGE"].tolist() == [1, 0, 2, 3]
    assert any(note.startswith("EDUCATION: 3 rows") for note in data.notes)
    assert any(note.startswith("MARRIAGE: 1 rows") for note in data.notes)


def test_negative_bills_are_kept_for_the_benchmark_and_fall_due_as_nothing(tmp_path):
    data = read_uci(_csv(tmp_path))
    assert data.frame.loc[3, "BILL_AMT2"] == -70
    assert np.isnan(default_features(data.frame).loc[3, "paid_to_bill"])  # nothing billed in August
    book = ledger(data.frame)  # customer 4, April to September: -2 -2 -2 -1 -1 1 with bills 0 -12 0 0 -70 -20
    assert book["due"][3].tolist() == [0, 0, 0, 0, 0, 1]  # only September's delay falls due; never a negative
    portfolio = to_contract(data.frame, AdapterConfig.from_params(load_params()))
    assert (portfolio.installments["amount_due"] > 0).all()


@pytest.mark.parametrize(("row", "column", "problem"), [
    ("5,20000,2,2,1,24,9,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689,0,0,0,0,1", "PAY_1", "out of range"),
    ("5,20000,2,2,1,24,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689.5,0,0,0,0,1", "PAY_AMT2", "not a whole number"),
    ("5,20000,2,2,1,24,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,x,0,0,0,0,1", "PAY_AMT2", "not a number"),
    ("1,20000,2,2,1,24,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689,0,0,0,0,1", "ID", "duplicate key"),
])
def test_rejects_bad_values_naming_the_file_column_and_row(tmp_path, row, column, problem):
    with pytest.raises(ContractError, match=problem) as err:
        read_uci(_csv(tmp_path, rows=[*ROWS, row]))
    assert err.value.table == "uci.csv" and err.value.column == column and 4 in err.value.rows


def test_rejects_a_file_without_a_required_column(tmp_path):
    header = HEADER.replace(',"BILL_AMT3"', "")
    rows = [",".join(r.split(",")[:14] + r.split(",")[15:]) for r in ROWS]
    with pytest.raises(ContractError, match="BILL_AMT3: required column missing"):
        read_uci(_csv(tmp_path, rows=rows, header=header))


def test_ledger_arrears_are_the_statuses_and_jumps_fall_due_at_once(tmp_path):
    book = ledger(read_uci(_csv(tmp_path)).frame)
    # customer 1, April to September: statuses -2 -2 -1 -1 2 2, bills 0 0 0 689 3102 3913
    assert book["arrears"][0].tolist() == [0, 0, 0, 0, 2, 2]
    assert book["due"][0].tolist() == [0, 0, 0, 1, 2, 1]  # nothing due on a zero bill; the jump to 2 at once
    assert book["paid"][0].tolist() == [0, 0, 0, 1, 0, 1]  # July on time, nothing in August, one in September
    assert (book["paid"] >= 0).all()


def _examples(out: Path, params: dict) -> pd.DataFrame:
    """The cure examples `cureflow train` builds from an adapted directory with its params."""
    config = FeatureConfig.from_params(params)
    prep = prepare(read_dir(out), config)
    horizon = int(params["cure"]["horizon_days"])
    dates = example_dates(prep, resolve_history_end(out, prep), horizon, int(params["cure"]["example_every_days"]),
                          int(params["cure"]["min_history_days"]))
    return cure_examples(prep, config, dates, horizon)


@needs_real_file
def test_cure_labels_of_the_adapted_file_are_the_task_on_the_statuses(tmp_path):
    data = read_uci(DEFAULT_DATA)
    sample = type(data)(data.frame.iloc[:3000].reset_index(drop=True), data.notes)
    params = load_params()
    write(sample, tmp_path / "uci", params, DEFAULT_DATA)
    examples = _examples(tmp_path / "uci", train_params(params))
    task = cure_task(sample.frame)
    assert examples["as_of"].nunique() == 5 and len(examples) == len(task) > 1000
    config = AdapterConfig.from_params(params)
    task = task.assign(account_id="uci-" + task["ID"].astype(str),
                       as_of=[config.as_of(m).tz_convert("UTC") for m in task["month"]])
    merged = examples.merge(task, on=["account_id", "as_of"], how="outer", validate="one_to_one")
    assert merged["label"].notna().all() and merged["cured"].notna().all()
    assert (merged["label"] == merged["cured"]).all()
    assert (merged["arrears_instalments"] >= 1).all()


@needs_real_file
def test_reads_the_real_file_with_its_documented_quirks():
    data = read_uci(DEFAULT_DATA)
    assert len(data.frame) == 30000 and int(data.frame["default"].sum()) == 6636
    notes = " ".join(data.notes)
    for quirk in ("PAY_0", "exponent", "EDUCATION: 345 rows", "MARRIAGE: 54 rows", "negative bills"):
        assert quirk in notes


@pytest.mark.slow
@needs_real_file
def test_cureflow_train_learns_the_cure_task_from_the_adapted_file(tmp_path, monkeypatch):
    frame = pd.read_csv(DEFAULT_DATA, dtype=str).iloc[:4000]
    frame.to_csv(tmp_path / "sample.csv", index=False)
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest-uci", "--data", str(tmp_path / "sample.csv"),
                                   "--out", str(tmp_path / "uci")])
    assert ingested.exit_code == 0, ingested.output
    monkeypatch.setenv("CUREFLOW_PARAMS", str(tmp_path / "uci" / "params.yaml"))
    trained = runner.invoke(app, ["train", "--data", str(tmp_path / "uci"), "--out", str(tmp_path / "train"),
                                  "--no-register"])
    assert trained.exit_code == 0, trained.output
    assert "from 5 as-of dates" in trained.output
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    task = cure_task(read_uci(tmp_path / "sample.csv").frame)
    assert metrics["n"] == (task["month"] >= 3).sum()  # July and August are the time holdout
    assert metrics["roc_auc"] > 0.6


def test_ingest_uci_stops_with_one_line_naming_the_bad_column(tmp_path):
    bad = _csv(tmp_path, rows=[*ROWS, "5,20000,3,2,1,24,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689,0,0,0,0,1"])
    result = CliRunner().invoke(app, ["ingest-uci", "--data", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "uci.csv.SEX: out of range (must be in 1..2) in 1 row, row 4" in result.output
