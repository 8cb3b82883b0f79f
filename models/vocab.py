"""The contract's vocabularies: every category a table or an answer may hold (../shared/CONTRACT.md)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

TABLES = ("accounts", "installments", "payments", "contacts")
CHILD_TABLES = TABLES[1:]  # the tables whose rows belong to an account

# the largest amount of money a row may hold, in the currency's units: the engine counts money in integer
# cents (int64), and sums over a 24-month history must stay exact; a trillion is far past any instalment
MAX_AMOUNT = 1e12

EMPLOYMENT = ("salaried", "self_employed", "part_time", "shift_worker", "retired", "student", "unknown")
PAYMENT_METHODS = ("direct_debit", "bank_transfer", "card", "convenience_store", "other")
CHANNELS = ("phone", "sms", "email", "letter", "ivr", "none")
CONTACT_CHANNELS = ("phone", "sms", "email", "letter", "ivr")  # every channel but the hold-out
DIRECTIONS = ("outbound", "inbound")
OUTCOMES = (
    "no_answer", "voicemail", "reached", "promise_to_pay", "refused", "wrong_party",
    "delivered", "bounced", "opened", "clicked", "replied", "held_out",
)
OFFERS = ("reminder", "instalment_plan", "settlement", "hardship_referral", "legal_review", "none")

# outcomes that mean the customer was reached (a conversation, or a message read or answered)
REACHED_OUTCOMES = ("reached", "promise_to_pay", "refused", "opened", "clicked", "replied")
# outcomes that count as a phone conversation for R-AFTER-CONVERSATION
CONVERSATION_OUTCOMES = ("reached", "promise_to_pay", "refused")
# channels that need consent, and the consent column each one needs (R-CONSENT); letters need none
CONSENT_COLUMN = {"phone": "consent_phone", "ivr": "consent_phone", "sms": "consent_sms", "email": "consent_email"}
# the accounts' yes/no columns the contact rules read
FLAG_COLUMNS = ("consent_phone", "consent_sms", "consent_email", "do_not_contact", "dispute_open",
                "legal_representative", "bankruptcy", "vulnerable")

# the work queue's tiers (`policy.tiers` assigns them), in the order the morning report lists them
CALL_TODAY, CALL_THIS_WEEK = "call today", "call this week"
DIGITAL_REMINDER, LETTER, NO_CONTACT = "digital reminder", "letter", "no contact"
HOLD_PROMISE, HOLD_LEGAL, HUMAN_REVIEW = "hold: promise to pay", "hold: legal", "review by a person"
TIERS = (CALL_TODAY, CALL_THIS_WEEK, DIGITAL_REMINDER, LETTER, NO_CONTACT, HOLD_PROMISE, HOLD_LEGAL, HUMAN_REVIEW)
CALL_TIERS = (CALL_TODAY, CALL_THIS_WEEK)
# the stale track's tiers (`policy.stale_tier`): listed after the others, by name
RECOVERY_REVIEW, WRITE_OFF_REVIEW = "recovery review", "write-off review"


def is_one_of(codes: np.ndarray, names: Iterable[str], vocabulary: tuple[str, ...]) -> np.ndarray:
    """`np.isin(codes, [vocabulary.index(n) for n in names])` by a lookup table (a code outside the vocabulary,
    such as -1 for a missing value, is in none): one gather instead of a sort, on every contact row."""
    table = np.zeros(len(vocabulary) + 1, dtype=bool)
    table[[vocabulary.index(name) for name in names]] = True
    codes = np.asarray(codes)
    return table[np.where((codes >= 0) & (codes < len(vocabulary)), codes, len(vocabulary))]
