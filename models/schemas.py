"""Typed request and answer schemas of the real-time API, from ../shared/CONTRACT.md.

Unknown fields are rejected (`extra="forbid"`), every list is bounded, timestamps must carry an offset, and
the holds and consents are JSON booleans (a 0 or "no" is refused, never read as a flag), and numbers are JSON
numbers (`"42000"` or `true` for an amount, `108.0` for a count of months are refused, never coerced).
Domain checks the schema cannot express (for example a duplicate contact id) are the contract
validator's, the same one the batch uses.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool

from models.scoring import example_request
from models.vocab import MAX_AMOUNT

Employment = Literal["salaried", "self_employed", "part_time", "shift_worker", "retired", "student", "unknown"]
Method = Literal["direct_debit", "bank_transfer", "card", "convenience_store", "other"]
Channel = Literal["phone", "sms", "email", "letter", "ivr", "none"]
Outcome = Literal["no_answer", "voicemail", "reached", "promise_to_pay", "refused", "wrong_party", "delivered",
                  "bounced", "opened", "clicked", "replied", "held_out"]
Offer = Literal["reminder", "instalment_plan", "settlement", "hardship_referral", "legal_review", "none"]

def _iso_text(value: object) -> object:
    """Dates and instants come as ISO 8601 text (or as python dates from code), never as numbers: pydantic
    would read 0 as 1970-01-01."""
    if isinstance(value, bool | int | float):
        raise ValueError("must be ISO 8601 text, not a number")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_text)]
Number = Annotated[float, Strict()]  # a JSON number (an integer too), never text or a boolean
Whole = Annotated[int, Strict()]  # a JSON integer, never text, a boolean or a float
IsoInstant = Annotated[AwareDatetime, BeforeValidator(_iso_text)]

MAX_INSTALLMENTS = 600
MAX_PAYMENTS = 3000
MAX_CONTACTS = 3000
MAX_BATCH = 500


class _Strict(BaseModel):
    """Unknown fields are refused, and so are NaN and infinities (Python's JSON reader accepts the literals
    `NaN` and `Infinity`, which are not JSON)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Account(_Strict):
    account_id: str = Field(min_length=1, max_length=64)
    opened_on: IsoDate
    term_months: Whole = Field(ge=1, le=180)
    monthly_amount: Number = Field(gt=0, le=MAX_AMOUNT)
    birth_year: Whole | None = Field(default=None, ge=1900, le=2100)
    employment: Employment
    region: str | None = Field(default=None, max_length=64)
    timezone: str | None = Field(default=None, max_length=64)
    consent_phone: StrictBool
    consent_sms: StrictBool
    consent_email: StrictBool
    do_not_contact: StrictBool
    dispute_open: StrictBool
    legal_representative: StrictBool
    bankruptcy: StrictBool
    vulnerable: StrictBool


class Installment(_Strict):
    account_id: str | None = Field(default=None, max_length=64)
    due_date: IsoDate
    amount_due: Number = Field(ge=0, le=MAX_AMOUNT)


class Payment(_Strict):
    account_id: str | None = Field(default=None, max_length=64)
    paid_at: IsoInstant
    amount: Number = Field(gt=0, le=MAX_AMOUNT)
    method: Method


class Contact(_Strict):
    contact_id: str = Field(min_length=1, max_length=64)
    account_id: str | None = Field(default=None, max_length=64)
    contacted_at: IsoInstant
    channel: Channel
    direction: Literal["outbound", "inbound"]
    template: str | None = Field(default=None, max_length=64)
    outcome: Outcome
    experiment_id: str | None = Field(default=None, max_length=64)
    propensity: Number | None = Field(default=None, gt=0, le=1)
    decision_id: str | None = Field(default=None, max_length=64,
                                    description="the cureflow decision this contact carried out, when it did")


class ScoreRequest(_Strict):
    """One account with its own rows (the CRM sends at least the last 24 months)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [example_request()]})
    as_of: IsoInstant
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
    alias_checked_at: datetime | None = Field(
        default=None, description="When the registry last answered the alias watcher; null when it is off "
                                  "(CUREFLOW_RELOAD_INTERVAL_S=0) or has not answered yet")


class OutcomeReport(_Strict):
    """What happened after a decision (one attempt; several attempts are several reports): whether a contact
    was made, when, on which channel, with which template, and its outcome (the contacts table's words)."""

    contacted: StrictBool
    at: IsoInstant
    channel: Channel
    template: str | None = Field(default=None, max_length=64)
    outcome: Outcome


class Override(_Strict):
    """A person chose another action than the one recommended (or none), and why. What was done is what the
    models learn from; the recommendation stays on record beside it."""

    channel: Channel
    offer: Offer
    reason: str = Field(min_length=1, max_length=1000)
    by: str = Field(min_length=1, max_length=64, description="the collector's id in the CRM (not a name)")


class Contest(_Strict):
    """The customer contests the automated decision (GDPR art. 22(3)): recorded beside it; a person reviews
    the account."""

    received_at: IsoInstant
    channel: Channel
    note: str = Field(default="", max_length=2000)


class Event(BaseModel):
    """An outcome, override or contest as recorded beside its decision."""

    event_id: str
    decision_id: str
    kind: Literal["outcome", "override", "contest"]
    recorded_at: str
    duplicate: bool = Field(description="true when the same report was already recorded (counted once)")
