"""The contract's real-time request and answer, as plain dicts, and their mapping to tables and batch rows.

`requests_from_portfolio` writes a portfolio's accounts as the requests a CRM would send. `nest` turns one
decision's flat columns into the answer, `answer_from_row` does it for a batch row (reasons and blocked as
JSON text), and `row_from_answer` flattens an answer back into a batch row.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pandas as pd

from models.contract import SPEC
from models.vocab import CHILD_TABLES


def _json(value: Any) -> Any:
    """A table value as the CRM would send it in JSON: ISO text for times, None for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat() if value.tzinfo is not None else value.strftime("%Y-%m-%d")
    return value.item() if hasattr(value, "item") else value


def requests_from_portfolio(portfolio, as_of: pd.Timestamp, account_ids: list[str] | None = None
                            ) -> list[dict[str, Any]]:
    """JSON-ready real-time requests for accounts of a validated Portfolio (all by default), each with
    its own rows, as the CRM would send them."""
    ids = list(portfolio.accounts["account_id"]) if account_ids is None else list(account_ids)
    children = {name: getattr(portfolio, name).groupby("account_id", sort=False).indices for name in CHILD_TABLES}
    by_id = dict(zip(portfolio.accounts["account_id"], range(len(portfolio.accounts)), strict=True))
    out = []
    for account_id in ids:
        request = {"as_of": pd.Timestamp(as_of).isoformat(),
                   "account": {k: _json(v) for k, v in portfolio.accounts.iloc[by_id[account_id]].items()}}
        for column, rule in SPEC["accounts"].items():  # optional whole numbers are floats in the frame
            if rule.kind == "int" and request["account"][column] is not None:
                request["account"][column] = int(request["account"][column])
        for name in CHILD_TABLES:
            table = getattr(portfolio, name)
            rows = table.iloc[children[name].get(account_id, [])].drop(columns="account_id")
            request[name] = [{k: _json(v) for k, v in row.items()} for row in rows.to_dict("records")]
        out.append(request)
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def answer_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """Nest one flattened batch row (reasons and blocked as JSON text) into the contract's real-time answer."""
    support = row.get("_support")
    return nest({**row, "reasons": _loads(row["reasons"]), "blocked": _loads(row["blocked"]),
                 "_support": _loads(support) if isinstance(support, str) else support})


def _loads(text: str) -> Any:
    """The batch frame's own JSON text (`Decisions.frame`: texts, rule ids, instants, finite chances) as Python
    values: orjson (in C), or the json module for what orjson refuses (NaN, infinities)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


RECORD_ONLY = ("support",)  # kept in the decision record, not part of the contract's answer


def public(answer: dict[str, Any]) -> dict[str, Any]:
    """The contract's answer of a recorded one: without what only the decision record keeps (`support`)."""
    return {k: v for k, v in answer.items() if k not in RECORD_ONLY}


def nest(row: dict[str, Any]) -> dict[str, Any]:
    """One decision's flat columns (reasons and blocked as lists) as the contract's real-time answer, with the
    policy's distribution over actions (`support`, from a `_support` column) for the decision record."""
    window = None
    if row.get("window_start") is not None:
        window = {"start": row["window_start"], "end": row["window_end"]}
    return {
        "account_id": row["account_id"],
        "as_of": row["as_of"],
        "model_version": row["model_version"],
        "cure_probability": float(row["cure_probability"]),
        "priority": float(row["priority"]),
        "tier": row["tier"],
        "action": {
            "channel": row["channel"],
            "contact_window": window,
            "offer": row["offer"],
            "template": _clean(row["template"]),
            "expected_gain": float(row["expected_gain"]),
        },
        "reasons": row["reasons"],
        "blocked": row["blocked"],
        "decision_id": row["decision_id"],
        "propensity": _clean(row["propensity"]),
    } | ({"support": row["_support"]} if row.get("_support") is not None else {})


def row_from_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """Flatten a real-time answer into the batch row's columns (the inverse of answer_from_row)."""
    action = answer["action"]
    window = action.get("contact_window") or {}
    return {
        "account_id": answer["account_id"],
        "as_of": answer["as_of"],
        "model_version": answer["model_version"],
        "cure_probability": answer["cure_probability"],
        "priority": answer["priority"],
        "tier": answer["tier"],
        "channel": action["channel"],
        "window_start": window.get("start"),
        "window_end": window.get("end"),
        "offer": action["offer"],
        "template": action["template"],
        "expected_gain": action["expected_gain"],
        "reasons": json.dumps(answer["reasons"], ensure_ascii=False),
        "blocked": json.dumps(answer["blocked"], ensure_ascii=False),
        "decision_id": answer["decision_id"],
        "propensity": answer["propensity"],
    }
