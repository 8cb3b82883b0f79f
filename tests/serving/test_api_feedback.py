"""What happened after a decision comes back through the API: outcomes, overrides and contests, recorded beside
the decision (before the answer), authenticated, validated, idempotent, tenant-scoped and shown with it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from models.scoring import example_request
from serving.api import create_app
from serving.settings import load_settings

KEY, OTHER, ADMIN = "feedback-key-for-tests-0001", "feedback-key-for-tests-0002", "feedback-admin-key-0001"
HEADERS = {"X-API-Key": KEY}
ATTEMPT = {"contacted": True, "at": "2026-11-02T18:05:00+09:00", "channel": "sms", "template": "reminder_sms_v1",
           "outcome": "delivered"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(trained, tmp_path_factory):
    database = tmp_path_factory.mktemp("feedback") / "decisions.db"
    settings = load_settings(model_uri=str(trained["bundle_path"]), database_url=f"sqlite:///{database}",
                             api_keys=f"{KEY}@crm-a,{OTHER}@crm-b", admin_keys=ADMIN)
    with TestClient(create_app(settings), headers=HEADERS) as c:
        yield c


@pytest.fixture
def decision(client) -> str:
    return client.post("/v1/score", json=example_request()).json()["decision_id"]


def test_an_outcome_is_recorded_before_the_answer_and_shown_with_its_decision(client, decision):
    done = client.post(f"/v1/decisions/{decision}/outcome", json=ATTEMPT)
    assert done.status_code == 201 and done.json()["duplicate"] is False
    stored = client.app.state.decisions.events(decision)   # committed before the answer came back
    assert [e["event_id"] for e in stored] == [done.json()["event_id"]]
    shown = client.get(f"/v1/decisions/{decision}").json()["events"]
    assert shown[0]["kind"] == "outcome" and shown[0]["outcome"] == "delivered" and shown[0]["channel"] == "sms"


def test_the_same_attempt_reported_twice_is_counted_once_and_another_attempt_is_another_outcome(client, decision):
    first = client.post(f"/v1/decisions/{decision}/outcome", json=ATTEMPT).json()
    again = client.post(f"/v1/decisions/{decision}/outcome", json=ATTEMPT)
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["event_id"] == first["event_id"]
    later = client.post(f"/v1/decisions/{decision}/outcome",
                        json={**ATTEMPT, "at": "2026-11-03T18:05:00+09:00", "outcome": "opened"})
    assert later.status_code == 201
    assert len(client.get(f"/v1/decisions/{decision}").json()["events"]) == 2


def test_an_override_and_a_contest_stand_beside_the_recommendation_which_stays_on_record(client, decision):
    answer = client.get(f"/v1/decisions/{decision}").json()["answer"]
    override = {"channel": "letter", "offer": "instalment_plan", "reason": "asked for a letter", "by": "collector-7"}
    assert client.post(f"/v1/decisions/{decision}/override", json=override).status_code == 201
    assert client.post(f"/v1/decisions/{decision}/override", json=override).json()["duplicate"]
    contest = {"received_at": "2026-11-02T10:00:00+09:00", "channel": "phone", "note": "disputes the amount"}
    assert client.post(f"/v1/decisions/{decision}/contest", json=contest,
                       headers={**HEADERS, "Idempotency-Key": "contest-1"}).status_code == 201
    record = client.get(f"/v1/decisions/{decision}").json()
    assert record["answer"] == answer                                   # the recommendation is unchanged
    assert [e["kind"] for e in record["events"]] == ["override", "contest"]
    assert record["events"][0]["channel"] == "letter" and record["events"][0]["by"] == "collector-7"


@pytest.mark.parametrize(("route", "body"), [
    ("outcome", {**ATTEMPT, "outcome": "paid"}),
    ("outcome", {**ATTEMPT, "at": "2026-11-02T18:05:00"}),            # no offset
    ("outcome", {**ATTEMPT, "contacted": "yes"}),
    ("override", {"channel": "fax", "offer": "reminder", "reason": "x", "by": "c1"}),
    ("override", {"channel": "sms", "offer": "reminder", "reason": "", "by": "c1"}),
    ("contest", {"received_at": "2026-11-02T10:00:00+09:00", "channel": "phone", "extra": 1}),
])
def test_a_bad_report_is_a_422_naming_the_field_and_records_nothing(client, decision, route, body):
    done = client.post(f"/v1/decisions/{decision}/{route}", json=body)
    assert done.status_code == 422 and done.json()["detail"][0]["loc"][0] == "body"
    assert client.app.state.decisions.events(decision) == []


def test_an_unknown_or_another_tenants_decision_is_a_404_and_a_missing_key_a_401(client, decision):
    assert client.post("/v1/decisions/not-a-decision/outcome", json=ATTEMPT).status_code == 404
    other = client.post(f"/v1/decisions/{decision}/outcome", json=ATTEMPT, headers={"X-API-Key": OTHER})
    assert other.status_code == 404
    assert client.post(f"/v1/decisions/{decision}/outcome", json=ATTEMPT, headers={"X-API-Key": ""}).status_code == 401
    assert client.app.state.decisions.events(decision) == []


def test_the_answer_keeps_the_offset_the_caller_sent(client):
    request = example_request()
    answer = client.post("/v1/score", json=request).json()
    assert request["as_of"].endswith("+09:00") and answer["as_of"] == request["as_of"]
    utc = client.post("/v1/score", json={**request, "as_of": "2026-10-31T15:00:00Z"}).json()
    assert utc["as_of"] == "2026-10-31T15:00:00+00:00" and utc["cure_probability"] == answer["cure_probability"]


def _request_for(account_id: str) -> dict:
    request = example_request()
    request["account"] = {**request["account"], "account_id": account_id}
    return request


def test_a_contest_routes_the_account_to_a_person_until_a_person_answers_it(client):
    request = _request_for("A-CONTESTED")
    first = client.post("/v1/score", json=request).json()
    assert first["tier"] != "review by a person" and "R-CONTESTED" not in [b["rule"] for b in first["blocked"]]
    contest = {"received_at": "2026-11-02T10:00:00+09:00", "channel": "letter", "note": "not my debt"}
    assert client.post(f"/v1/decisions/{first['decision_id']}/contest", json=contest).status_code == 201
    held = client.post("/v1/score", json=request).json()
    assert held["tier"] == "review by a person" and held["action"]["channel"] == "none"
    assert {"action": "all", "rule": "R-CONTESTED", "until": None} in held["blocked"]
    other_tenant = client.post("/v1/score", json=request, headers={"X-API-Key": OTHER}).json()
    assert other_tenant["tier"] == first["tier"]                  # another tenant's customer, another account
    answered = {"channel": "letter", "offer": "reminder", "reason": "reviewed the contest", "by": "collector-2"}
    assert client.post(f"/v1/decisions/{held['decision_id']}/override", json=answered).status_code == 201
    after = client.post("/v1/score", json=request).json()
    assert "R-CONTESTED" not in [b["rule"] for b in after["blocked"]]
    assert (after["tier"], after["action"]) == (first["tier"], first["action"])
