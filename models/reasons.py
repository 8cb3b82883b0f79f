"""Reasons in a collector's words, from the cure model's own contributions (LightGBM pred_contrib).

A reason states a feature's value in plain words (never the feature's name) and whether it raises or lowers
the chance of cure. For a feature whose meaning has a direction (more days past due is worse, more paid
in 90 days is better), a reason is only given when the model's direction agrees with where the value sits
against the usual value of the accounts the model learned from ("45 days past due, more than the usual 20
(lowers the chance of cure)"); a contribution that contradicts it (the model's interactions can produce
one) is left out and the next feature speaks instead.
"""

from __future__ import annotations

import math

import numpy as np

from models import vocab

_CURED_SHARE = "late_cured_30d_share_"  # the cure-history share (`features._cure_history`): a rate, may be missing
# +1: a higher value is a better sign for cure; -1: a worse one; absent: no direction a collector would assume
DIRECTION = {
    "arrears": -1, "arrears_instalments": -1, "days_past_due": -1, "days_late_mean_12m": -1,
    "days_late_max_12m": -1, "partial_payments_6m": -1, "days_since_last_payment": -1,
    "paid_90d_instalments": 1, "promises_kept_90d": 1,
    **{f"{kind}_{m}m": -1 for kind in ("missed", "paid_late") for m in (1, 3, 6, 12, 24)},
    **{f"{_CURED_SHARE}{m}m": 1 for m in (6, 12, 24, 36)},
}
_COUNTS = {  # feature: (singular, plural) in a sentence "{n} {noun}"
    "partial_payments_6m": ("partial payment in 6 months", "partial payments in 6 months"),
    "manual_payments_12m": ("payment outside direct debit in 12 months", "payments outside direct debit in 12 months"),
    "promises_made_90d": ("promise to pay in 90 days", "promises to pay in 90 days"),
    "promises_kept_90d": ("promise kept in 90 days", "promises kept in 90 days"),
    "timed_attempts": ("call or message in 180 days", "calls and messages in 180 days"),
}
_DAYS = {
    "days_past_due": "{d} past due",
    "days_late_mean_12m": "paid on average {d} late over 12 months",
    "days_late_max_12m": "paid up to {d} late in the last 12 months",
    "days_since_last_payment": "last payment {d} ago",
    "days_since_last_contact": "last contacted {d} ago",
    "days_since_last_reach": "last reached {d} ago",
}
_MISSING = {
    "days_since_last_payment": "no payment on record",
    "days_since_last_contact": "never contacted",
    "days_since_last_reach": "never reached",
    "days_late_mean_12m": "no instalment fell due in the last 12 months",
    "days_late_max_12m": "no instalment fell due in the last 12 months",
    "last_payment_method": "no payment on record",
    "timed_reach_rate": "no call or message in 180 days",
    "age": "age unknown",
}


def may_be_missing(name: str) -> bool:
    """Whether the feature builder can leave this feature missing (and a reason must say so in words)."""
    return name in _MISSING or name.endswith("_reach_rate") or name.startswith(_CURED_SHARE)


def _plural(n: float, one: str, many: str) -> str:
    return f"{n:,.0f} {one if round(n) == 1 else many}"


def _money(value: float, currency: str) -> str:
    return f"{currency} {value:,.0f}" if float(value).is_integer() or abs(value) >= 1000 else \
        f"{currency} {value:,.2f}"


def _instalments(value: float) -> str:
    if value < 0.1:
        return "less than a tenth of an instalment"
    return f"{value:.1f} instalments" if round(value, 1) != 1 else "1.0 instalment"


def _channel_text(name: str, value: float) -> str | None:
    """`{channel}_attempts_{d}d`, `{channel}_reached_{d}d` and `{window}_attempts` / `_reach_rate`."""
    for ch in vocab.CONTACT_CHANNELS:
        word = {"ivr": "automated call", "sms": "text message", "email": "e-mail"}.get(ch, ch)
        if name.startswith(f"{ch}_attempts_"):
            return f"{_plural(value, word, word + 's')} sent in {name.split('_')[-1][:-1]} days" if ch != "phone" \
                else f"{_plural(value, 'call', 'calls')} made in {name.split('_')[-1][:-1]} days"
        if name.startswith(f"{ch}_reached_"):
            return f"reached {_plural(value, 'time', 'times')} by {word} in {name.split('_')[-1][:-1]} days"
    if name.endswith("_reach_rate"):
        return f"answers {value:.0%} of calls and messages on {name[:-11].replace('_', ' ')}s"
    if name.endswith("_attempts"):
        return f"{_plural(value, 'call or message', 'calls and messages')} on {name[:-9].replace('_', ' ')}s"
    return None


def _months(name: str) -> str:
    """The months of a feature named `..._{N}m`: N."""
    return name.rsplit("_", 1)[-1][:-1]


def _days(value: float) -> str:
    return _plural(value, "day", "days")


def describe(name: str, value: float, currency: str = "JPY") -> str:
    """One feature value in plain words: numbers as a collector reads them, never the feature's name."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if name.endswith("_reach_rate") and name not in _MISSING:
            return f"no call or message on {name[:-11].replace('_', ' ')}s in 180 days"
        if name.startswith(_CURED_SHARE):
            return f"no instalment paid late in {_months(name)} months"
        return _MISSING.get(name) or f"{_label(name)} not known"
    if name == "employment":
        return f"employment: {vocab.EMPLOYMENT[int(value)].replace('_', ' ')}"
    if name == "last_payment_method":
        return f"last paid by {vocab.PAYMENT_METHODS[int(value)].replace('_', ' ')}"
    if name.startswith(_CURED_SHARE):
        return f"paid {value:.0%} of late instalments within 30 days over {_months(name)} months"
    for prefix, one, many in (("missed_", "missed debit", "missed debits"),
                              ("paid_late_", "instalment paid late", "instalments paid late"),
                              ("late_cured_30d_", "late instalment paid within 30 days",
                               "late instalments paid within 30 days"),
                              ("arrears_spells_", "spell in arrears", "spells in arrears")):
        if name.startswith(prefix):
            return f"{_plural(value, one, many)} in {name[len(prefix):-1]} months"
    if name in _DAYS:
        return _DAYS[name].format(d=_days(value))
    if name in _COUNTS:
        return _plural(value, *_COUNTS[name])
    return _SIMPLE[name](value, currency) if name in _SIMPLE else (_channel_text(name, value)
                                                                   or f"{_label(name)}: {value:g}")


_SIMPLE = {
    "arrears": lambda v, c: f"{_money(v, c)} in arrears",
    "arrears_instalments": lambda v, c: f"{_instalments(v)} in arrears",
    "monthly_amount": lambda v, c: f"pays {_money(v, c)} a month",
    "tenure_months": lambda v, c: f"customer for {_plural(v, 'month', 'months')}",
    "remaining_term_months": lambda v, c: f"{_plural(v, 'month', 'months')} left on the contract",
    "age": lambda v, c: f"aged {v:.0f}",
    "paid_90d_instalments": lambda v, c: f"paid {_instalments(v)}' worth in the last 90 days" if v >= 0.1
    else "paid less than a tenth of an instalment in the last 90 days",
    "timed_reach_rate": lambda v, c: f"answers {v:.0%} of calls and messages",
}


def _label(name: str) -> str:
    """A last resort for a feature without its own words: its name as words (never reached by the model's
    own features; a test holds every one of them to its own phrase)."""
    return name.replace("_", " ")


def _usual(name: str, value: float, usual: float, currency: str) -> str:
    """', more than the usual 20' against the accounts the model learned from, in the feature's unit."""
    more = value > usual
    if name in ("arrears",):
        amount = _money(usual, currency)
    elif name in ("arrears_instalments", "paid_90d_instalments"):
        amount = f"{usual:.1f}"
    elif name.startswith(_CURED_SHARE):
        amount = f"{usual:.0%}"
    else:
        amount = f"{usual:,.0f}"
    return f", {'more' if more else 'less'} than the usual {amount}"


def agrees(name: str, value: float, contribution: float, usual: float | None) -> bool:
    """Whether a reason's direction (the sign of its contribution) agrees with its value: for a feature
    with a direction, the value must sit on the side of the usual value that the direction names (no
    usual value: 0). Features without a direction always agree; a missing value agrees only for
    'never paid' (worse) on a days-since-payment feature."""
    sign = DIRECTION.get(name)
    if sign is None or contribution == 0:
        return sign is None
    if value is None or math.isnan(value):
        return name == "days_since_last_payment" and contribution < 0
    side = np.sign(value - (0.0 if usual is None else usual)) * sign
    return side != 0 and side == np.sign(contribution)


def reason_text(name: str, value: float, contribution: float, usual: float | None = None,
                currency: str = "JPY") -> str | None:
    """One reason, or None when its direction would contradict its value (see `agrees`)."""
    if not agrees(name, value, contribution, usual):
        return None
    text = describe(name, value, currency)
    if name in DIRECTION and usual is not None and not math.isnan(value):
        text += _usual(name, value, usual, currency)
    return f"{text} ({'raises' if contribution > 0 else 'lowers'} the chance of cure)"


def top_reasons(contrib: np.ndarray, values: np.ndarray, names: list[str], k: int = 3,
                usual: dict[str, float] | None = None, currency: str = "JPY") -> list[list[str]]:
    """For each row, the k features that moved the cure chance most, with their direction; a feature whose
    direction would contradict its value is passed over for the next one."""
    usual = usual or {}
    out = []
    order = np.argsort(-np.abs(contrib[:, : len(names)]), axis=1, kind="stable")
    for row, idx in enumerate(order):
        items = []
        for j in idx:
            if len(items) == k or contrib[row, j] == 0:
                break
            text = reason_text(names[j], float(values[row, j]), float(contrib[row, j]), usual.get(names[j]),
                               currency)
            if text is not None:
                items.append(text)
        out.append(items)
    return out


def action_reason(channel: str, window: str | None, gain: float, explored: bool, driver: str | None = None,
                  basis: str | None = None, measured: bool = True) -> str:
    """Why this action: its gain over no contact (`measured` False: no response model has measured it yet),
    the feature that makes it work for this customer, and whether it is the baseline's or the model's own
    choice (`basis`, from the safe policy)."""
    if explored:
        held = "the hold-out of" if channel == "none" else "an arm of"
        return (f"{held} an experiment: drawn at random among the planned action, variants of it in one channel, "
                f"window or offer, and no contact, so the team learns what works (propensity recorded)")
    if channel == "none":
        text = "no contact: no allowed action is expected to pay back its cost"
        return f"{text} ({basis})" if basis else text
    when = f" on {window.replace('_', ' ')}s" if window else ""
    text = (f"{channel}{when}: {gain:+.0%} chance of a payment within 7 days over no contact" if measured else
            f"{channel}{when}")
    text = f"{text}; {driver}" if driver else text
    return f"{text}; {basis}" if basis else text


def action_drivers(diff: np.ndarray, values: np.ndarray, names: list[str]) -> list[str | None]:
    """Per row, the customer feature that raises the chosen action's chance most (the response model's
    contributions for that action, action columns left out), in words; None when nothing does."""
    diff = diff[:, : len(names)]
    best = diff.argmax(axis=1) if diff.size else np.zeros(len(diff), dtype=np.int64)
    return [f"{describe(names[j], float(values[i, j]))} makes it work" if diff[i, j] > 0 else None
            for i, j in enumerate(best)]
