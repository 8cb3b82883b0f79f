"""Typed request and answer schemas of the real-time API, from ../shared/CONTRACT.md.

Unknown fields are rejected (`extra="forbid"`), every list is bounded, timestamps must carry an offset.
Domain checks the schema cannot express (for example a duplicate contact id) are the contract
validator's, the same one the batch uses.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models.scoring import example_request

Employment = Literal["salaried", "self_employed", "part_time", "shift_worker", "retired", "student", "unknown"]
Method = Literal["direct_debit", "bank_transfer", "card", "convenience_store", "other"]
Channel = Literal["phone", "sms", "email", "letter", "ivr", "none"]
Outcome = Literal["no_answer", "voicemail", "reached", "promise_to_pay", "refused", "wrong_party", "delivered",
                  "bounced", "opened", "clicked", "replied", "held_out"]
Offer = Literal["reminder", "instalment_plan", "settlement", "hardship_referral", "legal_review", "none"]

MAX_INSTALLMENTS = 600
MAX_PAYMENTS = 3000
MAX_CONTACTS = 3000
MAX_BATCH = 500


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Account(_Strict):
    account_id: str = Field(min_length=1, max_length=64)
    opened_on: date
    term_months: int = Field(ge=1, le=180)
    monthly_amount: float = Field(gt=0, le=1e12)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)
    employment: Employment
    region: str | None = Field(default=None, max_length=64)
    timezone: str | None = Field(default=None, max_length=64)
    consent_phone: bool
    consent_sms: bool
    consent_email: bool
    do_not_contact: bool
    dispute_open: bool
    legal_representative: bool
    bankruptcy: bool
    vulnerable: bool


class Installment(_Strict):
    account_id: str | None = Field(default=None, max_length=64)
    due_date: date
    amount_due: float = Field(ge=0, le=1e12)


class Payment(_Strict):
    account_id: str | None = Field(default=None, max_length=64)
    paid_at: AwareDatetime
    amount: float = Field(gt=0, le=1e12)
    method: Method


class Contact(_Strict):
    contact_id: str = Field(min_length=1, max_length=64)
    account_id: str | None = Field(default=None, max_length=64)
    contacted_at: AwareDatetime
    channel: Channel
    direction: Literal["outbound", "inbound"]
    template: str | None = Field(default=None, max_length=64)
    outcome: Outcome
    experiment_id: str | None = Field(default=None, max_length=64)
    propensity: float | None = Field(default=None, gt=0, le=1)


class ScoreRequest(_Strict):
    """One account with its own rows (the CRM sends at least the last 24 months)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [example_request()]})
    as_of: AwareDatetime
    account: Account
    installments: list[Installment] = Field(default_factory=list, max_length=MAX_INSTALLMENTS)
    payments: list[Payment] = Field(default_factory=list, max_length=MAX_PAYMENTS)
    contacts: list[Contact] | None = Field(
        default_factory=list, max_length=MAX_CONTACTS,
        description="null means the contact history was not sent: the rules then fail closed")


class BatchRequest(_Strict):
    requests: list[ScoreRequest] = Field(min_length=1, max_length=MAX_BATCH)


class ContactWindow(BaseModel):
    start: str
    end: str


class Action(BaseModel):
    channel: Channel
    contact_window: ContactWindow | None
    offer: Offer
    template: str | None
    expected_gain: float


class Blocked(BaseModel):
    action: str
    rule: str
    until: str | None = None


class Answer(BaseModel):
    account_id: str
    as_of: str
    model_version: str
    cure_probability: float
    priority: float
    tier: str
    action: Action
    reasons: list[str]
    blocked: list[Blocked]
    decision_id: str
    propensity: float | None


class BatchAnswer(BaseModel):
    answers: list[Answer]


class ModelInfo(BaseModel):
    model_uri: str
    model_version: str
    run_id: str
    policy_version: str
    feature_names: list[str]
