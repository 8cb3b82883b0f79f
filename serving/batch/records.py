"""The batch's decision records: one per account and run, appended to the decision log exactly once, and the
open contests read from it before scoring (R-CONTESTED)."""

from __future__ import annotations

import pandas as pd

from models.answers import answer_from_row
from models.decision_log import DecisionLog, DecisionRecord, parsed_json
from models.rules import RULE_IDS
from serving.settings import load_settings

CALLER = "batch"


def decision_records(rows: pd.DataFrame, loaded, run: str) -> list:
    """One decision record per row (after capacity): the answer, its model inputs and the rules evaluated,
    keyed by run and account."""
    policy_version = loaded.bundle.policy_config.version
    records = []
    for row in rows.to_dict("records"):
        answer = answer_from_row(row)
        records.append(DecisionRecord.from_answer(
            answer, request_id=run, caller=CALLER, run_id=loaded.run_id or None, policy_version=policy_version,
            features=parsed_json(row["_features"]), rules_evaluated=list(RULE_IDS), source="batch",
            idempotency_key=f"{run}/{answer['account_id']}", profile=loaded.bundle.params["rules"]["profile"]))
    return records


def record_decisions(url: str, rows: pd.DataFrame, loaded, run: str, batch_size: int) -> int:
    """Append the run's decisions to the log (exactly once per account and run); returns how many were new."""
    log = DecisionLog(url)
    try:
        return log.append_once(decision_records(rows, loaded, run), batch_size=batch_size)
    finally:
        log.close()


def open_contests(url: str) -> frozenset[str]:
    """The accounts with an open contest in the decision log at `url` (R-CONTESTED), read before scoring."""
    log = DecisionLog(url)
    try:
        return log.contested()
    finally:
        log.close()


def default_decision_log() -> str:
    """CUREFLOW_DATABASE_URL (the API's decision log), else sqlite:///decisions.db in the working directory."""
    return load_settings().database_url
