"""The API in-process and as a real server process; a batch row equals the real-time answer."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from models.answers import public, row_from_answer
from models.bundle import BATCH_COLUMNS
from models.contract import read_dir
from models.registry import load_bundle
from models.scoring import example_request
from serving.api import create_app
from serving.batch import score_portfolio
from serving.settings import load_settings

KEY, ADMIN = "scoring-key-for-tests-0001", "admin-key-for-tests-0001"
HEADERS = {"X-API-Key": KEY}


def _app(model_uri: str, database: Path, **overrides):
    settings = load_settings(model_uri=model_uri, database_url=f"sqlite:///{database}", api_keys=KEY,
                             admin_keys=ADMIN, **overrides)
    return create_app(settings)

pytestmark = pytest.mark.slow


def _requests_for(data: Path, account_ids: list[str], as_of: str) -> list[dict]:
    """Contract requests built from the portfolio's own rows (as the CRM would send them)."""
    p = read_dir(data)
    out = []
    for account_id in account_ids:
        sub = p.subset([account_id])
        acc = sub.accounts.iloc[0].to_dict()
        acc["opened_on"] = acc["opened_on"].strftime("%Y-%m-%d")
        acc["birth_year"] = None if pd.isna(acc["birth_year"]) else int(acc["birth_year"])
        inst = [{"due_date": r.due_date.strftime("%Y-%m-%d"), "amount_due": r.amount_due}
                for r in sub.installments.itertuples()]
        pays = [{"paid_at": r.paid_at.isoformat(), "amount": r.amount, "method": r.method}
                for r in sub.payments.itertuples()]
        cons = []
        for r in sub.contacts.itertuples():
            cons.append({"contact_id": r.contact_id, "contacted_at": r.contacted_at.isoformat(), "channel": r.channel,
                         "direction": r.direction, "template": r.template, "outcome": r.outcome,
                         "experiment_id": r.experiment_id,
                         "propensity": None if pd.isna(r.propensity) else float(r.propensity)})
        out.append({"as_of": as_of, "account": acc, "installments": inst, "payments": pays, "contacts": cons})
    return out


@pytest.fixture(scope="module")
def client(trained, tmp_path_factory):
    database = tmp_path_factory.mktemp("decisions") / "decisions.db"
    with TestClient(_app(str(trained["bundle_path"]), database), headers=HEADERS) as c:
        yield c


@pytest.fixture(scope="module")
def batch(trained):
    bundle = load_bundle(str(trained["bundle_path"])).bundle
    as_of = pd.Timestamp("2026-11-01T00:00:00+09:00")
    return as_of, score_portfolio(bundle, read_dir(trained["data"]), as_of, progress=False)


def test_batch_row_and_realtime_answer_are_identical_but_for_the_random_decision_id(client, trained, batch):
    """The same decision by both roads; only the id differs: the API's is random (uuid4), so nobody can compute
    it from the account, as-of and model version as they could the batch's."""
    import uuid

    as_of, rows = batch
    assert len(rows) > 10
    picks = rows.iloc[[0, len(rows) // 2, len(rows) - 1]]
    reqs = _requests_for(trained["data"], picks["account_id"].tolist(), as_of.isoformat())
    for req, (_, row) in zip(reqs, picks.iterrows(), strict=True):
        resp = client.post("/v1/score", json=req)
        assert resp.status_code == 200, resp.text
        expected = {k: (None if isinstance(v, float) and pd.isna(v) else v)
                    for k, v in row.to_dict().items() if k in BATCH_COLUMNS}
        got = row_from_answer(resp.json())
        assert uuid.UUID(got.pop("decision_id")).version == 4 and expected.pop("decision_id")
        assert got == expected


def test_batch_endpoint_answers_in_request_order(client, trained, batch):
    _, rows = batch
    ids = rows["account_id"].head(3).tolist()[::-1]
    reqs = _requests_for(trained["data"], ids, "2026-11-01T00:00:00+09:00")
    resp = client.post("/v1/score/batch", json={"requests": reqs})
    assert resp.status_code == 200
    assert [a["account_id"] for a in resp.json()["answers"]] == ids


def test_every_answer_has_every_contract_field(client):
    answer = client.post("/v1/score", json=example_request()).json()
    assert set(answer) == {"account_id", "as_of", "model_version", "cure_probability", "priority", "tier", "action",
                           "reasons", "blocked", "decision_id", "propensity"}
    assert set(answer["action"]) == {"channel", "contact_window", "offer", "template", "expected_gain"}
    assert 0.0 <= answer["cure_probability"] <= 1.0


def test_a_legal_hold_suppresses_every_contact_and_says_why(client):
    req = example_request()
    req["account"]["legal_representative"] = True
    answer = client.post("/v1/score", json=req).json()
    assert answer["action"]["channel"] == "none"
    assert answer["tier"] == "hold: legal"
    assert any(b["rule"] == "R-REPRESENTED" for b in answer["blocked"])


def test_contact_window_is_inside_the_allowed_hours_in_local_time(client):
    req = example_request()
    req["as_of"] = "2026-11-02T20:30:00+09:00"
    answer = client.post("/v1/score", json=req).json()
    window = answer["action"]["contact_window"]
    if answer["action"]["channel"] != "none":
        start, end = pd.Timestamp(window["start"]), pd.Timestamp(window["end"])
        assert start.utcoffset() == pd.Timedelta(hours=9)
        assert start.hour >= 8 and (end.hour, end.minute) <= (21, 0) and start < end
        assert start >= pd.Timestamp(req["as_of"])


def test_unknown_field_is_rejected_with_its_name(client):
    req = example_request()
    req["account"]["favourite_colour"] = "blue"
    resp = client.post("/v1/score", json=req)
    assert resp.status_code == 422
    assert "favourite_colour" in resp.text


def test_naive_timestamp_is_rejected(client):
    req = example_request()
    req["payments"][0]["paid_at"] = "2026-01-27T10:00:00"
    resp = client.post("/v1/score", json=req)
    assert resp.status_code == 422
    assert "paid_at" in resp.text


def test_duplicate_contact_id_is_a_contract_error_naming_table_and_rows(client):
    req = example_request()
    req["contacts"].append(dict(req["contacts"][0]))
    resp = client.post("/v1/score", json=req)
    assert resp.status_code == 422
    detail = resp.json()["detail"][0]
    assert detail["loc"] == ["body", "contacts", "contact_id"] and detail["rows"]


def test_not_overdue_account_gets_no_action(client):
    req = example_request()
    req["installments"] = req["installments"][:8]
    answer = client.post("/v1/score", json=req).json()
    assert answer["tier"] == "not overdue" and answer["action"]["channel"] == "none"


def test_an_account_with_no_instalments_is_answered_not_overdue(client):
    req = example_request()
    req["installments"] = []  # payments and a contact remain
    resp = client.post("/v1/score", json=req)
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["tier"] == "not overdue" and answer["action"]["channel"] == "none"
    assert answer["priority"] == 0 and 0 <= answer["cure_probability"] <= 1


def test_model_endpoint_names_the_version(client, trained):
    info = client.get("/v1/model").json()
    assert info["run_id"] == trained["info"]["run_id"]
    assert "days_past_due" in info["feature_names"]


def test_missing_model_keeps_the_process_up_but_not_ready(tmp_path):
    with TestClient(_app(str(tmp_path / "nothing.joblib"), tmp_path / "d.db"), headers=HEADERS) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        assert c.post("/v1/score", json=example_request()).status_code == 503


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(args: list[str], env: dict):
    """`cureflow serve ARGS` as a real process on a free port; yields its base URL once /readyz is 200."""
    port = _free_port()
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_real_server_process_serves_the_registered_champion(trained):
    env = {"MLFLOW_TRACKING_URI": trained["tracking_uri"], "CUREFLOW_API_KEYS": KEY,
           "CUREFLOW_DATABASE_URL": f"sqlite:///{trained['root'] / 'server-decisions.db'}"}
    with _server(["--model", "models:/cureflow@champion"], env) as base:
        assert httpx.post(f"{base}/v1/score", json=example_request(), timeout=30).status_code == 401
        answer = httpx.post(f"{base}/v1/score", json=example_request(), headers=HEADERS, timeout=30).json()
        assert answer["model_version"] == f"cureflow/{trained['info']['version']}"
        assert json.loads(json.dumps(answer))["decision_id"]


def test_every_answer_is_recorded_before_it_is_sent_and_can_be_audited(client):
    log = client.app.state.decisions
    before = log.count("api")
    answer = client.post("/v1/score", json=example_request()).json()
    assert log.count("api") == before + 1
    record = client.get(f"/v1/decisions/{answer['decision_id']}").json()
    assert public(record["answer"]) == answer and record["caller"].startswith("key-")
    chances = [p for c, *_, p in record["answer"]["support"] if c == answer["action"]["channel"]]
    assert any(p == pytest.approx(answer["propensity"]) for p in chances)  # the record keeps the distribution
    assert record["features"]["days_past_due"] >= 0 and "R-CONSENT" in record["rules_evaluated"]
    assert client.get("/v1/decisions/not-a-decision").status_code == 404


def test_idempotency_key_returns_the_same_decision_and_writes_no_second_record(client):
    log = client.app.state.decisions
    headers = {**HEADERS, "Idempotency-Key": "crm-7f3a"}
    first = client.post("/v1/score", json=example_request(), headers=headers)
    count = log.count("api")
    second = client.post("/v1/score", json=example_request(), headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json() and log.count("api") == count


def test_idempotency_key_reused_for_another_request_is_422_and_writes_nothing(client):
    log = client.app.state.decisions
    headers = {**HEADERS, "Idempotency-Key": "crm-reused-1"}
    assert client.post("/v1/score", json=example_request(), headers=headers).status_code == 200
    count = log.count("api")
    other = {**example_request(), "as_of": "2026-11-02T00:00:00+09:00"}
    resp = client.post("/v1/score", json=other, headers=headers)
    assert resp.status_code == 422 and "Idempotency-Key" in resp.json()["detail"]
    assert log.count("api") == count


def test_empty_idempotency_key_numeric_dates_and_numeric_flags_are_refused(client):
    empty_key = {**HEADERS, "Idempotency-Key": ""}
    assert client.post("/v1/score", json=example_request(), headers=empty_key).status_code == 422
    for path, value in ((("account", "opened_on"), 0), (("account", "vulnerable"), 0), (("as_of",), 1700000000)):
        body = example_request()
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        resp = client.post("/v1/score", json=body)
        assert resp.status_code == 422 and path[-1] in resp.text, (path, resp.text)


def _with(path: tuple, value) -> dict:
    """The example request with the field at `path` set to `value`."""
    body = example_request()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize(("path", "value"), [
    (("account", "monthly_amount"), "42000"), (("account", "monthly_amount"), True),
    (("account", "term_months"), "108"), (("account", "term_months"), 108.0), (("account", "birth_year"), "1984"),
    (("installments", 0, "amount_due"), "42000"), (("payments", 0, "amount"), "1000"),
    (("contacts", 0, "propensity"), "0.5"),
])
def test_numbers_sent_as_text_booleans_or_floats_for_counts_are_422_naming_the_field_never_coerced(
        client, path, value):
    resp = client.post("/v1/score", json=_with(path, value))
    assert resp.status_code == 422, resp.text
    assert tuple(resp.json()["detail"][0]["loc"]) == ("body", *path)


@pytest.mark.parametrize(("path", "value", "loc"), [
    (("as_of",), "2030-01-01T00:00:00+09:00", ["body", "request", "as_of"]),
    (("account", "birth_year"), 2100, ["body", "accounts", "birth_year"]),
    (("account", "opened_on"), "2026-11-02", ["body", "accounts", "opened_on"]),
])
def test_a_future_as_of_birth_year_or_opening_date_is_a_422_naming_the_field(client, path, value, loc):
    resp = client.post("/v1/score", json=_with(path, value))
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == loc, resp.text


def test_an_as_of_a_minute_ahead_of_the_clock_is_taken_ten_minutes_is_not(client):
    from datetime import UTC, datetime, timedelta

    def as_of(minutes: int) -> dict:
        return _with(("as_of",), (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat())

    assert client.post("/v1/score", json=as_of(1)).status_code == 200
    assert client.post("/v1/score", json=as_of(10)).status_code == 422


def test_as_of_outside_the_supported_years_is_a_named_422_not_a_crash(client):
    resp = client.post("/v1/score", json={**example_request(), "as_of": "2325-01-01T00:00:00Z"})
    assert resp.status_code == 422 and "as_of" in resp.text


def test_keys_are_required_and_admin_routes_need_an_admin_key(client):
    assert client.post("/v1/score", json=example_request(), headers={"X-API-Key": ""}).status_code == 401
    assert client.post("/v1/score", json=example_request(), headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v1/admin/reload").status_code == 403
    assert client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN}).status_code == 200
    for open_route in ("/healthz", "/readyz", "/metrics"):
        assert client.get(open_route, headers={"X-API-Key": ""}).status_code == 200


def test_refuses_to_start_without_keys_unless_insecure(trained, tmp_path):
    settings = load_settings(model_uri=str(trained["bundle_path"]), database_url=f"sqlite:///{tmp_path / 'd.db'}")
    with pytest.raises(ValueError, match="CUREFLOW_API_KEYS"):
        create_app(settings)
    insecure = load_settings(model_uri=str(trained["bundle_path"]), database_url=f"sqlite:///{tmp_path / 'd.db'}",
                             insecure=True)
    with TestClient(create_app(insecure)) as c:
        assert c.post("/v1/score", json=example_request()).status_code == 200


def test_no_success_without_a_record_when_the_decision_log_is_down(trained, tmp_path):
    with TestClient(_app(str(trained["bundle_path"]), tmp_path / "d.db"), headers=HEADERS) as c:
        assert c.post("/v1/score", json=example_request()).status_code == 200
        log = c.app.state.decisions
        log.close()
        (tmp_path / "d.db").unlink()
        (tmp_path / "d.db").mkdir()          # the database file is gone and cannot be recreated
        resp = c.post("/v1/score", json=example_request())
        assert resp.status_code == 503 and "record" in resp.json()["detail"]
        assert c.get("/readyz").status_code == 503
        (tmp_path / "d.db").rmdir()          # the database comes back
        log.close()
        assert c.post("/v1/score", json=example_request()).status_code == 200


def test_failed_reload_keeps_the_old_model_serving(trained, tmp_path):
    with TestClient(_app(str(trained["bundle_path"]), tmp_path / "d.db"), headers=HEADERS) as c:
        holder = c.app.state.holder
        version = holder.loaded.version
        holder.uri = str(tmp_path / "missing.joblib")
        resp = c.post("/v1/admin/reload", headers={"X-API-Key": ADMIN})
        assert resp.status_code == 409 and version in resp.json()["detail"]
        assert c.post("/v1/score", json=example_request()).status_code == 200
        assert holder.loaded.version == version


def test_a_loaded_model_is_out_of_the_collectors_reach_and_a_reload_frees_the_old_one(trained, tmp_path):
    """A full collection must not walk the model (it took 195 ms, a stall for every request in flight):
    after a load the bundle is frozen, and a reload's swap leaves the old bundle collectable."""
    import gc
    import weakref

    def walked(obj) -> bool:  # gc.get_objects() lists the collector's generations, not the frozen objects
        return any(o is obj for o in gc.get_objects())

    with TestClient(_app(str(trained["bundle_path"]), tmp_path / "d.db"), headers=HEADERS) as c:
        holder = c.app.state.holder
        first = holder.loaded.bundle
        assert gc.get_freeze_count() > 0 and not walked(first) and not walked(first.feature_names)
        old = weakref.ref(first)
        del first
        assert c.post("/v1/admin/reload", headers={"X-API-Key": ADMIN}).status_code == 200
        assert holder.loaded.bundle is not old() and not walked(holder.loaded.bundle)
        gc.collect()
        assert old() is None

def test_metrics_count_requests_decisions_and_the_model(client):
    client.post("/v1/score", json=example_request())
    text = client.get("/metrics").text
    for name in ("cureflow_requests_total", "cureflow_request_latency_seconds", "cureflow_decisions_total",
                 "cureflow_model_info"):
        assert name in text


def test_oversized_body_is_413(client):
    resp = client.post("/v1/score", content=b"{" + b" " * 3_000_000 + b"}",
                       headers={**HEADERS, "Content-Type": "application/json"})
    assert resp.status_code == 413


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_422_naming_the_field_never_a_500(client, literal):
    """Python's JSON reader takes these non-JSON literals; the error that echoes them must still be JSON."""
    before = client.app.state.decisions.count("api")
    for field, value in (("monthly_amount", "42000"), ("term_months", "108")):
        body = json.dumps(example_request()).replace(f'"{field}": {value}', f'"{field}": {literal}', 1)
        assert literal in body
        resp = client.post("/v1/score", content=body, headers={**HEADERS, "Content-Type": "application/json"})
        assert resp.status_code == 422, resp.text
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", "account", field] and error["input"] == literal
    assert client.app.state.decisions.count("api") == before


def test_deeply_nested_json_is_a_400_not_a_crash(client):
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        resp = client.post("/v1/score", content=body, headers={**HEADERS, "Content-Type": "application/json"})
        assert resp.status_code == 400 and "pars" in resp.json()["detail"]


def test_lists_past_their_bounds_are_422_naming_the_list_and_nothing_is_recorded(client):
    from models.schemas import MAX_BATCH, MAX_CONTACTS, MAX_INSTALLMENTS

    before = client.app.state.decisions.count("api")
    base = example_request()
    one = dict(base["installments"][0])
    long_history = {**base, "installments": [{**one, "installment_id": f"i{n}"} for n in range(MAX_INSTALLMENTS + 1)]}
    resp = client.post("/v1/score", json=long_history)
    assert resp.status_code == 422 and "installments" in resp.text and str(MAX_INSTALLMENTS) in resp.text
    contact = base["contacts"][0]
    many_contacts = {**base, "contacts": [{**contact, "contact_id": f"c{n}"} for n in range(MAX_CONTACTS + 1)]}
    resp = client.post("/v1/score", json=many_contacts)
    assert resp.status_code == 422 and "contacts" in resp.text
    resp = client.post("/v1/score/batch", json={"requests": [base] * (MAX_BATCH + 1)})
    assert resp.status_code == 422 and "requests" in resp.text and str(MAX_BATCH) in resp.text
    assert client.post("/v1/score/batch", json={"requests": [base]}).status_code == 200  # the bound, not the route
    assert client.app.state.decisions.count("api") == before + 1

def test_decisions_are_recorded_in_a_real_postgresql_server(trained, tmp_path):
    from tests.postgres import throwaway_postgres

    with throwaway_postgres() as server:
        settings = load_settings(model_uri=str(trained["bundle_path"]), database_url=server.url, api_keys=KEY)
        with TestClient(create_app(settings), headers=HEADERS) as c:
            answer = c.post("/v1/score", json=example_request()).json()
            assert public(c.get(f"/v1/decisions/{answer['decision_id']}").json()["answer"]) == answer
            server.stop()
            assert c.post("/v1/score", json=example_request()).status_code == 503
            server.start()
            assert c.post("/v1/score", json=example_request()).status_code == 200
            assert c.app.state.decisions.count("api") == 2


def _wait_ready(base: str, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.5)
    pytest.fail("server never became ready")


def test_service_follows_the_champion_alias_to_a_new_version(trained, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(trained["tracking_uri"], registry_uri=trained["tracking_uri"])
    settings = load_settings(model_uri="models:/cureflow@champion", database_url=f"sqlite:///{tmp_path / 'd.db'}",
                             api_keys=KEY, reload_interval_s=0.5)
    with TestClient(create_app(settings), headers=HEADERS) as c:
        before = c.get("/v1/model").json()
        first = client.get_model_version("cureflow", trained["info"]["version"])
        new = client.create_model_version("cureflow", first.source, run_id=first.run_id)
        client.set_registered_model_alias("cureflow", "champion", new.version)
        try:
            deadline = time.monotonic() + 30
            while c.get("/v1/model").json()["model_version"] == before["model_version"] \
                    and time.monotonic() < deadline:
                time.sleep(0.5)
            now = c.get("/v1/model").json()
            assert now["model_version"] == f"cureflow/{new.version}", now  # says when the watcher last checked
            assert now["alias_checked_at"] is not None
            assert c.post("/v1/score", json=example_request()).json()["model_version"] == f"cureflow/{new.version}"
            assert "cureflow_alias_checked_timestamp_seconds" in c.get("/metrics").text
        finally:
            client.set_registered_model_alias("cureflow", "champion", trained["info"]["version"])


@pytest.mark.parametrize(("uri", "says"), [
    ("models:/cureflow@no-such-alias", "models:/cureflow@no-such-alias: the alias is not set in the registry"),
    ("models:/cureflow/999", "models:/cureflow/999: not found in the tracking store"),
    ("outputs/no-such-bundle.joblib", "no model at outputs/no-such-bundle.joblib: not a file or directory"),
])
def test_a_model_that_is_not_there_is_named_by_load_and_by_the_command(trained, tmp_path, uri, says):
    from typer.testing import CliRunner

    from models.registry import ModelNotFound
    from pipelines.cli import app

    with pytest.raises(ModelNotFound, match=says):
        load_bundle(uri)
    done = CliRunner().invoke(app, ["score", "--data", str(trained["data"]), "--model", uri,
                                    "--out", str(tmp_path / "q.parquet"),
                                    "--decision-log", f"sqlite:///{tmp_path / 'd.db'}"])
    assert done.exit_code == 2 and says in done.output and "Traceback" not in done.output
    assert not (tmp_path / "q.parquet").exists()


@pytest.mark.parametrize(("option", "says"), [
    (["--explore", "2"], "exploration rate (--explore, params policy.explore) must be in [0, 1]"),
    (["--phone-capacity", "lots"], "phone capacity (--phone-capacity, params policy.phone_capacity) must be"),
    (["--chunk-size", "0"], "--chunk-size must be at least 1"),
    (["--out", "queue.txt"], "output must end in .parquet or .csv"),
])
def test_a_bad_score_option_stops_the_command_before_any_work(trained, tmp_path, monkeypatch, option, says):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["score", "--data", str(trained["data"]), "--model", str(trained["bundle_path"]),
                                    "--out", "queue.parquet", "--decision-log", "sqlite:///d.db", *option])
    assert done.exit_code == 2 and says in done.output and "Traceback" not in done.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no queue, no parts, no decision log


def test_a_store_password_never_appears_in_a_model_error():
    from models.registry import hide_password

    uri = "postgresql://mlflow:s3cret@db:5432/mlflow"  # fixture, not a secret
    assert hide_password(uri) == "postgresql://mlflow:***@db:5432/mlflow"
    assert hide_password("sqlite:////srv/mlflow.db") == "sqlite:////srv/mlflow.db"


def test_a_slow_registry_does_not_stall_requests_while_the_alias_is_checked(trained, tmp_path, monkeypatch):
    """The alias check runs beside the requests: a registry that takes seconds to answer (an MLflow server
    retrying) must not hold up the answers meanwhile."""
    import mlflow

    import serving.api.holder as api

    mlflow.set_tracking_uri(trained["tracking_uri"])
    real, checks, answered = api.registered_version, [], []

    def slow_registry(client, uri):
        checks.append(time.monotonic())
        time.sleep(2.0)
        answered.append(time.monotonic())
        return real(client, uri)

    monkeypatch.setattr(api, "registered_version", slow_registry)
    settings = load_settings(model_uri="models:/cureflow@champion", database_url=f"sqlite:///{tmp_path / 'd.db'}",
                             api_keys=KEY, reload_interval_s=0.2)
    with TestClient(create_app(settings), headers=HEADERS) as c:
        deadline = time.monotonic() + 10
        while not checks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checks, "the alias was never checked"
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/score", json=example_request()).status_code == 200
        assert not answered  # answered while the registry is still being asked (a state, not a time limit)


def test_several_workers_are_forked_after_one_load_of_the_model_and_serve_behind_one_port(trained):
    import psutil

    from models.decision_log import DecisionLog

    database = trained["root"] / "workers-decisions.db"
    env = {**os.environ, "CUREFLOW_API_KEYS": KEY, "CUREFLOW_DATABASE_URL": f"sqlite:///{database}"}
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(trained["bundle_path"]),
                             "--workers", "2", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc)
        deadline = time.monotonic() + 30  # ready once one worker answers; the other may still be forking
        while len(workers := psutil.Process(proc.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        answers = [httpx.post(f"{base}/v1/score", json=example_request(), headers=HEADERS, timeout=30)
                   for _ in range(6)]
        assert all(a.status_code == 200 for a in answers)
        assert len({a.json()["decision_id"] for a in answers}) == 6  # random ids: one per decision
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert len(workers) == 2 and proc.returncode == 0
    assert not any(w.is_running() for w in workers)  # stopped with their master
    loads = [line for line in output.splitlines() if "model loaded" in line]
    assert len(loads) == 1, output[-2000:]  # loaded once, by the master, before it forked the workers
    log = DecisionLog(f"sqlite:///{database}")
    assert log.count("api") == 6
    log.close()


def test_real_server_sheds_load_past_its_concurrency_at_once_and_records_every_success(trained):
    import asyncio

    from models.decision_log import DecisionLog

    database = trained["root"] / "overload-decisions.db"
    env = {"CUREFLOW_API_KEYS": KEY, "CUREFLOW_DATABASE_URL": f"sqlite:///{database}",
           "CUREFLOW_MAX_CONCURRENCY": "2"}
    request = _requests_for(trained["data"], [read_dir(trained["data"]).accounts["account_id"].iloc[0]],
                            "2026-11-01T00:00:00+09:00")[0]

    async def burst(base: str, n: int) -> list[tuple[int, float, str | None]]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:
            async def one():
                start = time.perf_counter()
                resp = await client.post(f"{base}/v1/score", json=request, headers=HEADERS)
                return resp.status_code, time.perf_counter() - start, resp.headers.get("retry-after")
            return await asyncio.gather(*(one() for _ in range(n)))

    with _server(["--model", str(trained["bundle_path"])], env) as base:
        results = asyncio.run(burst(base, 48))
    codes = [code for code, _, _ in results]
    shed = [(t, retry) for code, t, retry in results if code == 503]
    served = sorted(t for code, t, _ in results if code == 200)
    assert set(codes) <= {200, 503} and shed and served
    assert all(retry == "1" for _, retry in shed)
    assert sorted(t for t, _ in shed)[len(shed) // 2] < served[len(served) // 2]  # refused at once, not queued
    log = DecisionLog(f"sqlite:///{database}")
    assert log.count("api") == len(served)  # every success recorded, nothing for a refusal
    log.close()


def test_the_body_is_parsed_once_by_the_guard_and_the_answer_is_unchanged(client, monkeypatch):
    """The body guard parses each JSON body for its checks; the score route takes that parse instead of
    parsing the bytes a second time (Starlette's Request.json() calls json.loads on the bytes)."""
    req = example_request()
    before = client.post("/v1/score", json=req)
    parsed_bytes = []
    real = json.loads

    def counting(s, *args, **kwargs):
        if isinstance(s, bytes | bytearray):
            parsed_bytes.append(len(s))
        return real(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    after = client.post("/v1/score", json=req)
    assert after.status_code == before.status_code == 200
    assert parsed_bytes == []
    assert {**after.json(), "decision_id": None} == {**before.json(), "decision_id": None}
    wrong = client.post("/v1/score", json={**req, "account": {**req["account"], "term_months": "108"}})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "account", "term_months"]


def test_real_server_decides_concurrent_requests_as_it_decides_each_alone_and_records_each_with_its_request(trained):
    """Concurrent requests are decided and recorded in groups (models.scoring.GroupScorer): each answer is the
    one the same request gets alone, a second request for an account in the same burst is answered too, a bad
    request is refused alone, and each record carries its own request's id."""
    import asyncio

    from models.decision_log import DecisionLog

    database = trained["root"] / "grouped-decisions.db"
    env = {"CUREFLOW_API_KEYS": KEY, "CUREFLOW_DATABASE_URL": f"sqlite:///{database}"}
    p = read_dir(trained["data"])
    when = "2026-11-01T00:00:00+09:00"
    ids = load_bundle(str(trained["bundle_path"])).bundle.score(p, pd.Timestamp(when))["account_id"].tolist()[:20]
    requests = _requests_for(trained["data"], ids, when)
    requests += requests[:3]  # the same accounts again, in the same burst
    bad = {**requests[0], "contacts": [{"contact_id": "C-X", "contacted_at": "2026-10-01T10:00:00+09:00",
                                        "channel": "phone", "direction": "outbound", "outcome": "held_out"}]}

    async def burst(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=32)) as client:
            return await asyncio.gather(*(client.post(f"{base}/v1/score", json=r, headers=HEADERS)
                                          for r in [*requests, bad]))

    with _server(["--model", str(trained["bundle_path"])], env) as base:
        together = asyncio.run(burst(base))
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
        alone = [httpx.post(f"{base}/v1/score", json=r, headers=HEADERS, timeout=30) for r in requests]
    groups = float(next(line.split()[-1] for line in metrics.splitlines()
                        if line.startswith("cureflow_score_group_accounts_count")))
    assert groups < len(requests)  # some requests were decided together
    assert [r.status_code for r in together] == [200] * len(requests) + [422]
    problem = together[-1].json()["detail"][0]
    assert problem["loc"] == ["body", "contacts", "outcome"] and problem["rows"] == [0]
    for grouped, single in zip(together, alone, strict=False):
        assert {**grouped.json(), "decision_id": None} == {**single.json(), "decision_id": None}
    log = DecisionLog(f"sqlite:///{database}")
    try:
        assert log.count("api") == 2 * len(requests)
        for response in together[:-1]:
            record = log.get(response.json()["decision_id"])
            assert record["request_id"] == response.headers["x-request-id"]
            assert record["account_id"] == response.json()["account_id"]
    finally:
        log.close()
