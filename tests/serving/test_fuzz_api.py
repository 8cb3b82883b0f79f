"""Bad input against the running service (toward issue 8): schemathesis generates well over 1,000 requests
from the service's own OpenAPI, valid and invalid, against a real server process. No answer may be a 5xx,
and every request that breaks the schema must be refused with a 4xx."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.test_api import ADMIN, KEY, _server

pytestmark = pytest.mark.slow
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_generated_requests_never_get_a_server_error_and_invalid_ones_are_refused(trained, tmp_path):
    env = {"CUREFLOW_API_KEYS": KEY, "CUREFLOW_ADMIN_KEYS": ADMIN, "CUREFLOW_LOG_LEVEL": "WARNING",
           "CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'decisions.db'}"}
    with _server(["--model", str(trained["bundle_path"])], env) as base:
        done = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{base}/openapi.json", "--header", f"X-API-Key: {KEY}",
             "--checks", "not_a_server_error,negative_data_rejection", "--max-examples", "200",
             "--seed", "20261123", "--no-color"],
            capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"},
            cwd=tmp_path)  # its reports directory stays out of the checkout
    summary = done.stdout[-3000:]
    generated = re.search(r"(\d+) generated", done.stdout)
    assert generated and int(generated.group(1)) >= 1000, summary
    assert done.returncode == 0, summary
