"""The MLflow pyfunc wrapper: one logged model holding the whole scoring bundle.

Input: a DataFrame with a `request` column of JSON strings, each a contract real-time request (parsed by the
API's own schema, models/schemas.py).
Output: a DataFrame with an `answer` column of JSON strings, each the contract answer.
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import pandas as pd


class CureflowModel(mlflow.pyfunc.PythonModel):
    """Loads `bundle.joblib` once; predicts answers for contract requests."""

    def load_context(self, context) -> None:
        import joblib

        self.bundle = joblib.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from models.schemas import ScoreRequest
        from models.scoring import score_requests

        requests = [ScoreRequest.model_validate_json(text).model_dump() for text in model_input["request"]]
        answers = score_requests(self.bundle, requests)
        return pd.DataFrame({"answer": [json.dumps(a, ensure_ascii=False) for a in answers]})
