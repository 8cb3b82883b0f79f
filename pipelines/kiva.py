"""Kiva microloans (../shared/data/kiva: 1,000 loans of 2005-2006 from the Kiva API, with schedules and dated
repayments) written in the data contract: `cureflow ingest-kiva`.

The converter's choices:
- loans: those with status `paid` or `defaulted` and a repayment schedule (616 of 1,000). Refunded and
  deleted loans were never funded (no repayment on record); loans without a `scheduled_payments` list
  (the 2005 loans) have no schedule to be late against; an empty status is unknown.
- schedule: `terms.scheduled_payments`, the schedule on which the field partner repays Kiva's lenders, in
  USD: the same party and the same money as the recorded repayments (`payments`). `terms.local_payments`
  is the borrower's own schedule with the field partner, about ten weeks earlier; the file holds no
  borrower-side repayments, so against it every loan would look late.
- currency: USD, the loans' disbursal currency and the unit of `amount` of every payment (`local_amount`
  is the same figure here; the currency-exchange loss fields are empty or zero). Scheduled amounts keep
  their cents (7.5, 41.67).
- dates: an instalment falls due on the UTC calendar date of its `due_date` (all at 07:00 or 08:00 UTC);
  a repayment arrives at its `processed_date` (`settlement_date` is a 2010 bulk migration, not an event);
  every account's clock is UTC (the file gives a country, not a time zone). `opened_on` is the disbursal
  date; `term_months` the months from disbursal to the last scheduled instalment (`repayment_term`
  disagrees with the schedule's length on every loan); `monthly_amount` the median scheduled amount.
- what the contract needs and the file does not say: employment `unknown`, birth year unknown, region the
  country code, no consent to phone, SMS or e-mail (unknown is not consent), no legal flags, no contacts.
- the history ends (manifest `end`) the day after `kiva.history_end_share` (90%) of the repayments on record
  had arrived, 4 August 2007: after it the book has run off (the last repayment is of July 2008) and the
  few loans left are long past due, so a time holdout of the last quarter of weekly as-of dates would hold
  almost no fresh arrears. As-of dates stop `cure.horizon_days` before the end, so every label is observed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from models.contract import SPEC, ContractError, Portfolio, validate, write_dir
from models.files import write_json_atomic, write_text_atomic

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kiva" / "kiva_loans_2005_2006.json"
KEPT_STATUSES = ("paid", "defaulted")
TABLE = "kiva_loans_2005_2006.json"


def read_loans(path: str | Path = DEFAULT_DATA) -> list[dict]:
    """The file's loans; a file that is not the Kiva API's JSON is a ContractError naming what is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path} (the Kiva loans JSON; see ../shared/data/kiva)")
    try:
        loans = json.loads(path.read_text(encoding="utf-8"))["loans"]
    except (ValueError, KeyError, TypeError) as err:
        raise ContractError(path.name, "loans", problem=f"not the Kiva API's JSON with a 'loans' list ({err})"
                            ) from None
    for key in ("id", "status", "terms", "payments"):
        bad = [i for i, loan in enumerate(loans) if not isinstance(loan, dict) or key not in loan]
        if bad:
            raise ContractError(path.name, f"loans[].{key}", bad[:5], "required field missing", len(bad))
    return loans


def kept(loans: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """The loans converted (funded, with a schedule) and how many were left out, by why."""
    out, left = [], {"status not paid or defaulted": 0, "no repayment schedule": 0}
    for loan in loans:
        if loan["status"] not in KEPT_STATUSES:
            left["status not paid or defaulted"] += 1
        elif not (loan["terms"] or {}).get("scheduled_payments"):
            left["no repayment schedule"] += 1
        else:
            out.append(loan)
    return out, left


def _utc(values) -> pd.Series:
    return pd.to_datetime(pd.Series(list(values), dtype=object), utc=True, format="ISO8601")


def _installments(loans: list[dict]) -> pd.DataFrame:
    rows = [(f"kiva-{loan['id']}", s["due_date"], s["amount"]) for loan in loans
            for s in loan["terms"]["scheduled_payments"]]
    frame = pd.DataFrame(rows, columns=["account_id", "due", "amount_due"])
    frame["due_date"] = _utc(frame["due"]).dt.tz_localize(None).dt.normalize()
    return frame[["account_id", "due_date", "amount_due"]]


def _payments(loans: list[dict]) -> pd.DataFrame:
    rows = [(f"kiva-{loan['id']}", p["processed_date"], p["amount"]) for loan in loans for p in loan["payments"]]
    frame = pd.DataFrame(rows, columns=["account_id", "paid", "amount"])
    return frame.assign(paid_at=_utc(frame["paid"]), method="other")[["account_id", "paid_at", "amount", "method"]]


def _accounts(loans: list[dict], installments: pd.DataFrame) -> pd.DataFrame:
    ids = [f"kiva-{loan['id']}" for loan in loans]
    opened = _utc([loan["terms"]["disbursal_date"] for loan in loans]).dt.tz_localize(None).dt.normalize()
    schedule = installments.groupby("account_id", sort=False)
    last = schedule["due_date"].max().reindex(ids).to_numpy()
    months = np.ceil((last - opened.to_numpy()) / np.timedelta64(1, "D") / 30.4375).astype(np.int64)
    flags = {name: np.zeros(len(loans), dtype=bool) for name, col in SPEC["accounts"].items() if col.kind == "bool"}
    return pd.DataFrame({
        "account_id": ids, "opened_on": opened, "term_months": np.clip(months, 1, 180),
        "monthly_amount": schedule["amount_due"].median().reindex(ids).to_numpy(dtype=np.float64),
        "birth_year": np.full(len(loans), np.nan), "employment": "unknown",
        "region": [loan.get("country_code") for loan in loans], "timezone": "UTC", **flags,
    })


def to_contract(loans: list[dict]) -> Portfolio:
    """The four contract tables of the kept loans (no contacts: the file has none), validated."""
    installments = _installments(loans)
    contacts = pd.DataFrame({column: pd.Series(dtype=object) for column in SPEC["contacts"]})
    return validate({"accounts": _accounts(loans, installments), "installments": installments,
                     "payments": _payments(loans), "contacts": contacts})


def train_params(params: dict) -> dict:
    """params.yaml with `kiva.train` merged over it (one level per section): what `cureflow train` reads."""
    merged = json.loads(json.dumps(params))
    for section, values in params["kiva"]["train"].items():
        merged[section] = {**merged.get(section, {}), **values}
    return merged


def write(loans: list[dict], out: Path, params: dict, source: Path) -> dict:
    """Write the tables, `params.yaml` for `cureflow train` and a manifest (with the history's end);
    returns the manifest."""
    converted, left = kept(loans)
    portfolio = to_contract(converted)
    out = Path(out)
    write_dir(portfolio, out, "parquet")
    merged = train_params(params)
    write_text_atomic(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True), out / "params.yaml")
    share = float(params["kiva"]["history_end_share"])
    if not 0 < share <= 1:
        raise ValueError(f"params kiva.history_end_share must be in (0, 1], not {share}")
    end = portfolio.payments["paid_at"].quantile(share).floor("D") + pd.Timedelta(days=1)
    manifest = {"source": str(source), "end": end.isoformat(), "loans": len(loans), "converted": len(converted),
                "left_out": left, "counts": {name: len(frame) for name, frame in portfolio.tables.items()},
                "currency": merged["policy"]["currency"],
                "statuses": pd.Series([loan["status"] for loan in converted]).value_counts().to_dict()}
    write_json_atomic(manifest, out / "manifest.json", newline=True, indent=2)
    return manifest


def main(data: Path, out: Path, params: dict | None = None, log=print) -> dict:
    """`cureflow ingest-kiva`: read the file, write the contract tables, say what `cureflow train` to run."""
    from models.config import load_params

    params = params or load_params()
    manifest = write(read_loans(data), out, params, Path(data))
    counts = ", ".join(f"{n:,} {name}" for name, n in manifest["counts"].items())
    left = ", ".join(f"{n:,} {why}" for why, n in manifest["left_out"].items())
    log(f"wrote {manifest['converted']:,} of {manifest['loans']:,} loans ({counts}) to {out}; left out: {left}; "
        f"history ends {manifest['end'][:10]}")
    log(f"train with: CUREFLOW_PARAMS={out}/params.yaml cureflow train --data {out} --out {out}/train --no-register")
    return manifest
