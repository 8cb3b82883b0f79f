"""Simulate the collections portfolio of the data contract, and write its exact ground truth beside it.

A car-lease book: each account has a latent payer type (reliable, forgetful, constrained, distressed), an
income-shock Markov chain that may switch at each due date, a monthly direct debit at 10:00 local that
re-debits all arrears, Poisson self-cure while overdue, and a history of randomised contact experiments
whose effect is reach (lifestyle x channel x window x an account-level reach factor) times the lift of
the offer. The process runs event by event per account, vectorised across accounts: each loop turn
handles the next event of every account still running.

The truth at `end` (cure within 30 days without contact; payment within 7 days for every action) is
computed exactly from the latent state, pending induced payments included, by enumerating the shock
paths over the at most two due dates in the horizon.

Time inside the simulator is whole seconds of local wall-clock time since local midnight of the window's
first day, held in float64 (inf = never). The zone must keep one UTC offset over the run (checked), so
these seconds map one to one onto UTC instants.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from models import vocab
from models.calendar import parse_windows, zone
from models.config import load_params
from models.files import write_json_atomic, write_parquet_atomic

DAY = 86_400.0
HOUR = 3_600.0
TYPES = ("reliable", "forgetful", "constrained", "distressed")
SIM_OFFERS = ("reminder", "instalment_plan")  # the offers the historical experiments drew from
CHANNEL = {name: code for code, name in enumerate(vocab.CHANNELS)}  # contact channels first, `none` last
OUTCOME = {name: code for code, name in enumerate(vocab.OUTCOMES)}
METHOD = {name: code for code, name in enumerate(vocab.PAYMENT_METHODS)}
PHONE, LETTER, IVR, NONE = CHANNEL["phone"], CHANNEL["letter"], CHANNEL["ivr"], CHANNEL["none"]
REMINDER, PLAN = 0, 1
NO_EXPERIMENT, FORCED_EXPERIMENT, PRODUCT_EXPERIMENT = -1, -2, -3

COLUMNS = {
    "accounts": (
        "account_id", "opened_on", "term_months", "monthly_amount", "birth_year", "employment", "region",
        "timezone", "consent_phone", "consent_sms", "consent_email", "do_not_contact", "dispute_open",
        "legal_representative", "bankruptcy", "vulnerable",
    ),
    "installments": ("account_id", "due_date", "amount_due"),
    "payments": ("account_id", "paid_at", "amount", "method"),
    "contacts": (
        "contact_id", "account_id", "contacted_at", "channel", "direction", "template", "outcome",
        "experiment_id", "propensity",
    ),
}
SUPPRESSING_FLAGS = ("do_not_contact", "legal_representative", "bankruptcy", "dispute_open")

# prefectures with their population in millions (2020 census, rounded): the region of an account
PREFECTURES = {
    "Hokkaido": 5.2, "Aomori": 1.2, "Iwate": 1.2, "Miyagi": 2.3, "Akita": 0.96, "Yamagata": 1.07,
    "Fukushima": 1.83, "Ibaraki": 2.87, "Tochigi": 1.93, "Gunma": 1.94, "Saitama": 7.34, "Chiba": 6.28,
    "Tokyo": 14.05, "Kanagawa": 9.24, "Niigata": 2.2, "Toyama": 1.03, "Ishikawa": 1.13, "Fukui": 0.77,
    "Yamanashi": 0.81, "Nagano": 2.05, "Gifu": 1.98, "Shizuoka": 3.63, "Aichi": 7.54, "Mie": 1.77,
    "Shiga": 1.41, "Kyoto": 2.58, "Osaka": 8.84, "Hyogo": 5.47, "Nara": 1.32, "Wakayama": 0.92,
    "Tottori": 0.55, "Shimane": 0.67, "Okayama": 1.89, "Hiroshima": 2.8, "Yamaguchi": 1.34,
    "Tokushima": 0.72, "Kagawa": 0.95, "Ehime": 1.33, "Kochi": 0.69, "Fukuoka": 5.14, "Saga": 0.81,
    "Nagasaki": 1.31, "Kumamoto": 1.74, "Oita": 1.12, "Miyazaki": 1.07, "Kagoshima": 1.59, "Okinawa": 1.47,
}


@dataclass
class Simulation:
    """The four contract tables of a simulated portfolio, with the truth they were drawn from.

    `run` holds the arguments that made it (seed, accounts, months, end, ...) for the manifest.
    """

    tables: dict[str, pd.DataFrame]
    truth_cure: pd.DataFrame
    truth_actions: pd.DataFrame
    latent: pd.DataFrame
    run: dict = field(default_factory=dict)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class _Config:
    """The simulator section of params.yaml as arrays indexed by the codes above."""

    raw: dict
    windows: tuple[str, ...]
    win_lo: np.ndarray  # seconds after local midnight, clipped to the allowed hours
    win_hi: np.ndarray
    win_weekend: np.ndarray
    employment_p: np.ndarray  # (employment,)
    type_p: np.ndarray  # (employment, type)
    shock_start: np.ndarray  # (employment,)
    shock_end: float
    debit_s: np.ndarray  # (type, shock)
    debit_decay: np.ndarray  # (type,)
    cure_rate: np.ndarray  # (type, shock), per second
    lift: np.ndarray  # (type, offer, shock)
    lift_channel: np.ndarray  # (contact channel,)
    unreached: np.ndarray  # (contact channel,): P(pays | not reached) = lift x this (0: no effect)
    reach: np.ndarray  # (employment, contact channel, window)
    outcome_cum: np.ndarray  # (contact channel, case, outcome): case 0 not reached, 1 paying, 2 not paying
    method_p: np.ndarray  # (payment method,)
    promise_quiet_s: float
    conversation_quiet_s: float


def _by_name(table: dict, names: tuple[str, ...]) -> np.ndarray:
    """The values of `table` in the order of `names` (every name required)."""
    missing = [name for name in names if name not in table]
    if missing:
        raise KeyError(f"simulator params: missing {missing}")
    return np.array([table[name] for name in names], dtype=float)


def _outcome_table(raw: dict) -> np.ndarray:
    """Cumulative outcome probabilities per contact channel and case."""
    cases = ("not_reached", "paying", "not_paying")
    out = np.zeros((len(vocab.CONTACT_CHANNELS), len(cases), len(vocab.OUTCOMES)))
    for c, channel in enumerate(vocab.CONTACT_CHANNELS):
        for k, case in enumerate(cases):
            for outcome, p in raw[channel][case].items():
                out[c, k, OUTCOME[outcome]] = p
    return np.cumsum(out / out.sum(axis=2, keepdims=True), axis=2)


def _seconds_of(text: str) -> float:
    """Seconds after midnight of an "HH:MM" string."""
    hours, minutes = (int(part) for part in str(text).split(":"))
    return hours * HOUR + minutes * 60.0


def _config(params: dict) -> _Config:
    """Parse params.yaml's `simulator`, `calendar` and `rules` sections into arrays."""
    raw = params["simulator"]
    windows = parse_windows(params["calendar"])
    hours = (_seconds_of(params["rules"]["hours"]["start"]), _seconds_of(params["rules"]["hours"]["end"]))
    starts = np.array([w.start.hour * HOUR + w.start.minute * 60 for w in windows])
    ends = np.array([w.end.hour * HOUR + w.end.minute * 60 for w in windows])
    reach = np.array([[raw["reach"][e][c] for c in vocab.CONTACT_CHANNELS] for e in vocab.EMPLOYMENT])
    lift = np.array([[raw["lift"][t][o] for o in SIM_OFFERS] for t in TYPES], dtype=float)
    quiet = params["rules"]
    return _Config(
        raw=raw,
        windows=tuple(w.name for w in windows),
        win_lo=np.maximum(starts, hours[0]),
        win_hi=np.minimum(ends, hours[1]),
        win_weekend=np.array([w.weekend for w in windows]),
        employment_p=_by_name(raw["employment"], vocab.EMPLOYMENT),
        type_p=_by_name(raw["payer_type_by_employment"], vocab.EMPLOYMENT),
        shock_start=_by_name(raw["shock"]["start_by_employment"], vocab.EMPLOYMENT),
        shock_end=float(raw["shock"]["end"]),
        debit_s=_by_name(raw["debit_success"], TYPES),
        debit_decay=_by_name(raw["debit_decay"], TYPES),
        cure_rate=_by_name(raw["self_cure_per_day"], TYPES) / DAY,
        lift=lift,
        lift_channel=_by_name(raw["lift_by_channel"], vocab.CONTACT_CHANNELS),
        unreached=np.array([float(raw.get("unreached_lift", {}).get(c, 0.0)) for c in vocab.CONTACT_CHANNELS]),
        reach=reach,
        outcome_cum=_outcome_table(raw["outcomes"]),
        method_p=_by_name(raw["payment_methods"] | {"direct_debit": 0.0}, vocab.PAYMENT_METHODS),
        promise_quiet_s=float(quiet["promise_quiet_days"]) * DAY,
        conversation_quiet_s=float(quiet["after_conversation_days"]) * DAY,
    )


def _merge(base: dict, override: dict) -> dict:
    """`base` with `override` deep-merged into it (mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def drawn_world(seed: int, params: dict) -> dict:
    """Simulator overrides drawn at random from `seed`, for a world nobody designed the model around: the
    customer mix, reach per lifestyle x channel x window, the lift of each offer per payer type, the channel
    factors, the effect of an attempt that does not reach the customer, and a staged business rule."""
    rng = np.random.default_rng(seed)
    windows = list(params["calendar"]["windows"])
    emp = rng.dirichlet(np.full(len(vocab.EMPLOYMENT), 2.0))
    reach = {e: {c: np.round(rng.beta(1.5, 3.0, len(windows)), 3).tolist() for c in vocab.CONTACT_CHANNELS}
             for e in vocab.EMPLOYMENT}
    lift = {}
    for t, top in zip(TYPES, (0.9, 0.9, 0.7, 0.25), strict=True):
        normal = rng.uniform(0.05, top, len(SIM_OFFERS))
        lift[t] = {o: [round(float(n), 3), round(float(n * rng.uniform(0.3, 1.0)), 3)]
                   for o, n in zip(SIM_OFFERS, normal, strict=True)}
    order = rng.permutation(list(vocab.CONTACT_CHANNELS))
    steps = [[0, [str(order[0]), str(order[1])], windows[rng.integers(len(windows))]],
             [int(rng.integers(5, 20)), [str(order[2])], windows[rng.integers(len(windows))]],
             [int(rng.integers(25, 45)), ["letter"], windows[rng.integers(len(windows))]]]
    return {
        "employment": dict(zip(vocab.EMPLOYMENT, np.round(emp, 4).tolist(), strict=True)),
        "reach": reach, "lift": lift,
        "lift_by_channel": {c: round(float(rng.uniform(0.5, 1.0)), 3) for c in vocab.CONTACT_CHANNELS},
        "unreached_lift": {c: round(float(rng.uniform(0.0, 0.3)), 3) for c in vocab.CONTACT_CHANNELS},
        "decisions": {"experiment_share": 0.10,
                      "bau": {"rule": "staged", "steps": steps, "deviate": round(float(rng.uniform(0.05, 0.25)), 3)}},
    }


def with_preset(params: dict, preset: str | None = None, experiment_share: float | None = None) -> dict:
    """params with `simulator_presets[preset]` merged into `simulator` (a `draw: seed` preset is drawn by
    `drawn_world`) and the share of randomised decisions overridden when given. Unknown names are a
    ValueError listing the presets."""
    out = dict(params)
    if preset:
        presets = params.get("simulator_presets", {})
        if preset not in presets:
            raise ValueError(f"unknown simulator preset {preset!r}; params.yaml simulator_presets has "
                             f"{', '.join(sorted(presets)) or 'none'}")
        spec = dict(presets[preset] or {})
        if "draw" in spec:
            spec = _merge(drawn_world(int(spec.pop("draw")), params), spec)
        out["simulator"] = _merge(params["simulator"], spec)
    if experiment_share is not None:
        if not 0.0 <= float(experiment_share) <= 1.0:
            raise ValueError(f"the share of randomised decisions must be in [0, 1], not {experiment_share!r}")
        out["simulator"] = _merge(out["simulator"], {"decisions": {"experiment_share": float(experiment_share)}})
    return out


# ---------------------------------------------------------------- the clock


@dataclass(frozen=True)
class _Clock:
    """Local seconds since local midnight of the window's first day, and the instants that matter."""

    zone_name: str
    epoch_day: np.datetime64  # local date of second 0
    epoch_utc_ns: int  # the UTC instant of second 0
    epoch_dow: int  # weekday of the epoch day, Monday = 0
    start_s: float  # the window [start_s, end_s)
    end_s: float
    end: pd.Timestamp  # `end` in the portfolio's zone

    def days(self, seconds: np.ndarray) -> np.ndarray:
        """Local calendar dates of local seconds."""
        return self.epoch_day + np.floor(seconds / DAY).astype("timedelta64[D]")

    def utc(self, seconds: np.ndarray) -> pd.DatetimeIndex:
        """UTC timestamps of local seconds."""
        ns = self.epoch_utc_ns + np.asarray(seconds, dtype=np.int64) * 1_000_000_000
        return pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")


def _clock(end: pd.Timestamp | str, months: int, zone_name: str) -> _Clock:
    """The simulation clock for the window [end - months, end) in `zone_name`."""
    if zone(zone_name) is None:
        raise ValueError(f"simulator.timezone {zone_name!r} is not a known time zone")
    end_ts = pd.Timestamp(end)
    end_ts = end_ts.tz_localize(zone_name) if end_ts.tz is None else end_ts.tz_convert(zone_name)
    start = end_ts - pd.DateOffset(months=months)
    epoch = start.normalize()
    probes = pd.date_range(epoch, end_ts + pd.Timedelta(days=400), freq="7D")
    if len({ts.utcoffset() for ts in probes}) != 1:
        raise ValueError(f"simulator.timezone {zone_name!r} changes its UTC offset; use a fixed-offset zone")
    return _Clock(
        zone_name=zone_name,
        epoch_day=np.datetime64(epoch.date(), "D"),
        epoch_utc_ns=int(epoch.tz_convert("UTC").value),
        epoch_dow=int(epoch.day_of_week),
        start_s=(start - epoch).total_seconds(),
        end_s=(end_ts - epoch).total_seconds(),
        end=end_ts,
    )


# ---------------------------------------------------------------- the accounts


@dataclass
class _Portfolio:
    """Account attributes (observed and latent) as arrays; row i is account i."""

    ids: np.ndarray  # object array of str
    employment: np.ndarray
    ptype: np.ndarray
    reach_factor: np.ndarray
    monthly: np.ndarray
    term: np.ndarray
    open_month: np.ndarray  # months since 1970-01 of the opening month
    opened_on: np.ndarray  # datetime64[D]
    debit_day: np.ndarray
    first_k: np.ndarray  # contract month of the first due date inside the window
    shock0: np.ndarray
    birth_year: np.ndarray
    region: np.ndarray
    timezone: np.ndarray
    consent: np.ndarray  # (n, 3): phone, sms, email
    flags: dict[str, np.ndarray]
    allowed: np.ndarray  # (n, 5): contact channels the historical policy may use
    contactable: np.ndarray  # no suppressing flag: R-CEASE, R-REPRESENTED, R-INSOLVENCY, R-DISPUTE
    automatable: np.ndarray  # a valid time zone (R-TIME-ZONE): experiments may decide, not only people

    @property
    def n(self) -> int:
        """The number of accounts."""
        return len(self.ids)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) probability matrix, by inverse CDF."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((u[:, None] >= cum).sum(axis=1), probs.shape[1] - 1)


def _due_seconds(pf: _Portfolio, idx: np.ndarray, k: np.ndarray, clock: _Clock) -> np.ndarray:
    """Local seconds at which contract month `k` of accounts `idx` falls due; inf beyond the term."""
    months = (pf.open_month[idx] + k).astype("datetime64[M]").astype("datetime64[D]")
    days = (months - clock.epoch_day).astype(np.int64) + pf.debit_day[idx] - 1
    return np.where(k <= pf.term[idx], days * DAY, np.inf)


def _month_index(ts: pd.Timestamp) -> int:
    """Months since 1970-01 of a timestamp's calendar month."""
    return (ts.year - 1970) * 12 + ts.month - 1


def _first_due_at_or_after(pf: _Portfolio, idx: np.ndarray, instant_s: float, clock: _Clock) -> np.ndarray:
    """The first contract month (>= 1) of accounts `idx` whose due instant is at or after `instant_s`."""
    month = _month_index(pd.Timestamp(clock.epoch_day) + pd.Timedelta(seconds=instant_s))
    k = np.maximum(month - pf.open_month[idx], 1)
    before = _due_seconds(pf, idx, k, clock) < instant_s
    return k + before


def _draw_contract_dates(pf: _Portfolio, rng: np.random.Generator, clock: _Clock) -> None:
    """Opening dates such that every account has a due date inside the window (redraw until it does)."""
    start_month = _month_index(pd.Timestamp(clock.epoch_day) + pd.Timedelta(seconds=clock.start_s))
    end_month = _month_index(clock.end)
    end_day = np.datetime64(clock.end.date(), "D")
    todo = np.arange(pf.n)
    while todo.size:
        pf.open_month[todo] = rng.integers(start_month - pf.term[todo], end_month + 1)
        first = pf.open_month[todo].astype("datetime64[M]").astype("datetime64[D]")
        length = ((pf.open_month[todo] + 1).astype("datetime64[M]").astype("datetime64[D]") - first)
        offset = np.floor(rng.random(todo.size) * length.astype(np.int64)).astype("timedelta64[D]")
        pf.opened_on[todo] = first + offset
        pf.first_k[todo] = _first_due_at_or_after(pf, todo, clock.start_s, clock)
        first_due = _due_seconds(pf, todo, pf.first_k[todo], clock)
        todo = todo[(first_due >= clock.end_s) | (pf.opened_on[todo] >= end_day)]


def _draw_people(n: int, cfg: _Config, rng: np.random.Generator, clock: _Clock) -> dict[str, np.ndarray]:
    """Employment, payer type, age, region, time zone and consents."""
    raw = cfg.raw
    employment = rng.choice(len(vocab.EMPLOYMENT), size=n, p=cfg.employment_p / cfg.employment_p.sum())
    ptype = _categorical(rng, cfg.type_p[employment])
    age_raw = raw["age"]
    age = np.clip(rng.normal(age_raw["mean"], age_raw["sd"], n), age_raw["min"], age_raw["max"])
    for name in ("retired", "student"):
        lo, hi = age_raw[name]
        mask = employment == vocab.EMPLOYMENT.index(name)
        age[mask] = rng.uniform(lo, hi + 1, mask.sum())
    birth_year = (clock.end.year - np.floor(age)).astype(float)
    birth_year[rng.random(n) < age_raw["null_rate"]] = np.nan
    weights = np.array(list(PREFECTURES.values()))
    region = np.array(list(PREFECTURES), dtype=object)[rng.choice(len(weights), n, p=weights / weights.sum())]
    region[rng.random(n) < raw["region_null_rate"]] = None
    u = rng.random(n)
    timezone = np.full(n, raw["timezone"], dtype=object)
    timezone[u < raw["timezone_null_rate"]] = None
    timezone[u >= 1 - raw["timezone_invalid_rate"]] = raw["invalid_timezone"]
    consent_p = _by_name(raw["consent"], ("phone", "sms", "email"))
    consent = rng.random((n, 3)) < consent_p
    return {"employment": employment, "ptype": ptype, "birth_year": birth_year, "region": region,
            "timezone": timezone, "consent": consent}


def _allowed_channels(consent: np.ndarray, vulnerable: np.ndarray) -> np.ndarray:
    """(n, 5) channels the historical policy may use: consent (R-CONSENT); vulnerable only phone or letter."""
    allowed = np.ones((len(consent), len(vocab.CONTACT_CHANNELS)), dtype=bool)
    for c, channel in enumerate(vocab.CONTACT_CHANNELS):
        column = vocab.CONSENT_COLUMN.get(channel)
        if column is not None:
            allowed[:, c] = consent[:, ("consent_phone", "consent_sms", "consent_email").index(column)]
        if channel not in ("phone", "letter"):
            allowed[vulnerable, c] = False
    return allowed


def _draw_portfolio(n: int, cfg: _Config, rng: np.random.Generator, clock: _Clock) -> _Portfolio:
    """Draw n accounts: who they are, their contract, their latent payer type and reach."""
    raw = cfg.raw
    people = _draw_people(n, cfg, rng, clock)
    ptype = people["ptype"]
    flags = {name: rng.random(n) < np.asarray(rates)[ptype]
             for name, rates in raw["flags_by_payer_type"].items()}
    terms = np.array(list(raw["term_months"]), dtype=np.int64)
    term_p = np.array(list(raw["term_months"].values()), dtype=float)
    amount = raw["monthly_amount"]
    monthly = np.exp(rng.normal(np.log(amount["median"]), amount["sigma"], n))
    step = amount["round_to"]
    monthly = np.round(np.clip(monthly, amount["min"], amount["max"]) / step) * step
    pstart = cfg.shock_start[people["employment"]]
    width = max(7, len(str(n)))
    pf = _Portfolio(
        ids=np.strings.add("A", np.strings.zfill(np.arange(1, n + 1).astype(str), width)).astype(object),
        employment=people["employment"], ptype=ptype,
        reach_factor=rng.beta(*raw["reach_factor_beta"], n),
        monthly=monthly.astype(float), term=rng.choice(terms, n, p=term_p / term_p.sum()),
        open_month=np.zeros(n, np.int64), opened_on=np.zeros(n, "datetime64[D]"),
        debit_day=rng.choice(np.asarray(raw["debit_days"], dtype=np.int64), n),
        first_k=np.zeros(n, np.int64),
        shock0=rng.random(n) < pstart / (pstart + cfg.shock_end),
        birth_year=people["birth_year"], region=people["region"], timezone=people["timezone"],
        consent=people["consent"], flags=flags,
        allowed=_allowed_channels(people["consent"], flags["vulnerable"]),
        contactable=~np.any([flags[name] for name in SUPPRESSING_FLAGS], axis=0),
        automatable=people["timezone"] != raw["invalid_timezone"],
    )
    _draw_contract_dates(pf, rng, clock)
    return pf


# ---------------------------------------------------------------- the process


def _place_in_window(decided: np.ndarray, win: np.ndarray, cfg: _Config, clock: _Clock,
                     rng: np.random.Generator) -> np.ndarray:
    """A contact time, uniform over the first occurrence of window `win` that ends after `decided`."""
    day0 = np.floor(decided / DAY)
    chosen = np.full(decided.size, np.nan)
    for offset in range(8):
        day = day0 + offset
        weekend = (clock.epoch_dow + day) % 7 >= 5
        fits = (weekend == cfg.win_weekend[win]) & (day * DAY + cfg.win_hi[win] > decided) & np.isnan(chosen)
        chosen[fits] = day[fits]
    lo = np.maximum(chosen * DAY + cfg.win_lo[win], decided)
    hi = chosen * DAY + cfg.win_hi[win]
    return np.floor(lo + rng.random(decided.size) * (hi - lo))


class _World:
    """The state of every account, advanced event by event (one event per account per loop turn)."""

    def __init__(self, pf: _Portfolio, cfg: _Config, clock: _Clock, rng: np.random.Generator):
        n = pf.n
        self.pf, self.cfg, self.clock = pf, cfg, clock
        self.arrears = np.zeros(n, np.int64)  # instalments due and unpaid (the contract's arrears / monthly)
        self.in_spell = np.zeros(n, bool)  # a debit failed and the account has not been current since
        self.shock = pf.shock0.copy()
        self.next_k = pf.first_k.copy()
        self.due_t = _due_seconds(pf, np.arange(n), self.next_k, clock)
        self.debit_t, self.pend_t, self.cure_t, self.decide_t, self.contact_t = np.full((5, n), np.inf)
        self.pend_plan = np.zeros(n, bool)
        self.contact_ch, self.contact_win, self.contact_offer = np.zeros((3, n), np.int64)
        self.contact_exp = np.full(n, NO_EXPERIMENT, np.int64)
        self.contact_prop = np.full(n, np.nan)
        self.last_promise, self.last_conversation = np.full((2, n), -np.inf)
        self.spell_start = np.full(n, np.inf)  # when the current spell began (the business rule's day count)
        self.payments: list[tuple[np.ndarray, ...]] = []
        self.contacts: list[tuple[np.ndarray, ...]] = []
        self.rng = rng
        self.contacts_on = True
        self.phase_start = 0.0
        self.tick = None  # called with the simulated instant reached, once per turn of the loop (progress)

    # -- the loop

    def run(self, until: float, rng: np.random.Generator, contacts_on: bool) -> None:
        """Advance every account to `until` (events at or after it are left for later)."""
        self.rng, self.contacts_on = rng, contacts_on
        handlers = (self._on_due, self._on_debit, self._on_pending, self._on_cure, self._on_contact,
                    self._on_decide)
        queues = (self.due_t, self.debit_t, self.pend_t, self.cure_t, self.contact_t, self.decide_t)
        active = np.arange(self.pf.n)
        while active.size:
            times = np.stack([np.full(active.size, until)] + [queue[active] for queue in queues])
            kind = times.argmin(axis=0)  # ties: stop first, then the order of `queues`
            when = times[kind, np.arange(active.size)]
            for code, handler in enumerate(handlers, start=1):
                hit = kind == code
                if hit.any():
                    handler(active[hit], when[hit])
            active = active[kind != 0]
            if self.tick is not None and active.size:
                self.tick(float(when.min()))

    # -- money

    def _pay(self, idx: np.ndarray, t: np.ndarray, instalments: np.ndarray, method: np.ndarray | int) -> None:
        """Record payments of `instalments` monthly amounts each."""
        amount = instalments * self.pf.monthly[idx]
        self.payments.append((idx, t, amount, np.broadcast_to(np.int64(method), idx.shape).copy()))

    def _methods(self, size: int) -> np.ndarray:
        """Payment methods of payments the customer makes (all but direct debits)."""
        return self.rng.choice(len(vocab.PAYMENT_METHODS), size=size, p=self.cfg.method_p)

    def draw_cure(self, idx: np.ndarray, t: np.ndarray) -> None:
        """(Re)draw the self-cure time of accounts in a spell (memoryless, so redrawing is exact)."""
        rate = self.cfg.cure_rate[self.pf.ptype[idx], self.shock[idx].astype(int)]
        self.cure_t[idx] = t + np.floor(self.rng.exponential(1.0, idx.size) / rate)

    def _start_spell(self, idx: np.ndarray, t: np.ndarray) -> None:
        """A first failed debit: self-cure starts, and decisions for accounts we may contact."""
        self.in_spell[idx] = True
        self.spell_start[idx] = t
        self.draw_cure(idx, t)
        first = t + self._days_between(self.cfg.raw["decisions"]["first_after_days"], idx.size) * DAY
        self.decide_t[idx] = np.where(self.pf.contactable[idx] & self.contacts_on, first, np.inf)

    def _days_between(self, spec, size: int) -> np.ndarray | int:
        """A fixed number of days, or whole days drawn uniformly from an inclusive [low, high] range
        (collectors follow up at irregular intervals)."""
        if isinstance(spec, list | tuple):
            return self.rng.integers(int(spec[0]), int(spec[1]) + 1, size)
        return int(spec)

    def _end_spell(self, idx: np.ndarray) -> None:
        """The account is current: nothing pending, scheduled or decided any more."""
        self.arrears[idx] = 0
        self.in_spell[idx] = False
        for queue in (self.cure_t, self.decide_t, self.contact_t, self.pend_t):
            queue[idx] = np.inf

    def debit_success(self, idx: np.ndarray, shock: np.ndarray, arrears: np.ndarray) -> np.ndarray:
        """P(the debit collects everything), with `arrears` instalments owed including the new one."""
        ptype = self.pf.ptype[idx]
        base = self.cfg.debit_s[ptype, shock.astype(int)]
        return base * self.cfg.debit_decay[ptype] ** np.maximum(arrears - 1, 0)

    # -- events

    def _on_due(self, idx: np.ndarray, t: np.ndarray) -> None:
        """An instalment falls due at local midnight; the shock chain may switch first."""
        u = self.rng.random(idx.size)
        shocked = self.shock[idx]
        start = self.cfg.shock_start[self.pf.employment[idx]]
        self.shock[idx] = np.where(shocked, u >= self.cfg.shock_end, u < start)
        self.arrears[idx] += 1
        self.debit_t[idx] = t + self.cfg.raw["debit_hour"] * HOUR
        self.next_k[idx] += 1
        self.due_t[idx] = _due_seconds(self.pf, idx, self.next_k[idx], self.clock)
        spell = self.in_spell[idx]
        self.draw_cure(idx[spell], t[spell])

    def _on_debit(self, idx: np.ndarray, t: np.ndarray) -> None:
        """The direct debit tries to collect all arrears; a failure starts (or prolongs) a spell."""
        self.debit_t[idx] = np.inf
        owing = self.arrears[idx] > 0
        idx, t = idx[owing], t[owing]
        ok = self.rng.random(idx.size) < self.debit_success(idx, self.shock[idx], self.arrears[idx])
        self._pay(idx[ok], t[ok], self.arrears[idx[ok]], METHOD["direct_debit"])
        self._end_spell(idx[ok])
        new = ~ok & ~self.in_spell[idx]
        self._start_spell(idx[new], t[new])

    def _on_pending(self, idx: np.ndarray, t: np.ndarray) -> None:
        """An induced payment arrives: all arrears (reminder) or one instalment (plan); none if current."""
        self.pend_t[idx] = np.inf
        live = self.arrears[idx] > 0
        idx, t = idx[live], t[live]
        paid = np.where(self.pend_plan[idx], 1, self.arrears[idx])
        self._pay(idx, t, paid, self._methods(idx.size))
        self.arrears[idx] -= paid
        self._end_spell(idx[self.arrears[idx] == 0])

    def _on_cure(self, idx: np.ndarray, t: np.ndarray) -> None:
        """The customer pays all arrears on their own, sometimes calling in first."""
        self._inbound(idx, t)
        self._pay(idx, t, self.arrears[idx], self._methods(idx.size))
        self._end_spell(idx)

    def _inbound(self, idx: np.ndarray, t: np.ndarray) -> None:
        """An inbound phone call a few minutes before some self-cure payments made in office hours."""
        raw = self.cfg.raw["inbound"]
        lo, hi = (_seconds_of(text) for text in raw["hours"])
        tod = t % DAY
        call = (self.rng.random(idx.size) < raw["rate"]) & (tod >= lo) & (tod < hi) & self.pf.contactable[idx]
        idx, t = idx[call], t[call]
        at = np.maximum(t - np.floor(self.rng.uniform(60, 1800, idx.size)), self.phase_start)
        outcome = np.where(self.rng.random(idx.size) < raw["outcomes"]["promise_to_pay"],
                           OUTCOME["promise_to_pay"], OUTCOME["reached"])
        self.record(idx, at, PHONE, outcome, template=-1, experiment=NO_EXPERIMENT, propensity=np.nan,
                     inbound=True)
        self.last_conversation[idx] = at
        promised = outcome == OUTCOME["promise_to_pay"]
        self.last_promise[idx[promised]] = at[promised]

    def _on_decide(self, idx: np.ndarray, t: np.ndarray) -> None:
        """A weekly decision while overdue: an experiment (80%) or business as usual."""
        raw = self.cfg.raw["decisions"]
        self.decide_t[idx] = t + self._days_between(raw["every_days"], idx.size) * DAY
        go = t - self.last_promise[idx] >= self.cfg.promise_quiet_s  # R-PROMISE
        idx, t = idx[go], t[go]
        phone_ok = self.pf.allowed[idx].copy()
        talked = t - self.last_conversation[idx] < self.cfg.conversation_quiet_s  # R-AFTER-CONVERSATION
        phone_ok[talked, PHONE] = phone_ok[talked, IVR] = False
        experiment = (self.rng.random(idx.size) < raw["experiment_share"]) & self.pf.automatable[idx]
        ch, win, offer, prop = self._business_as_usual(idx, phone_ok, t)
        e_ch, e_win, e_offer, e_prop = self._experiment(idx[experiment], phone_ok[experiment])
        ch[experiment], win[experiment], offer[experiment], prop[experiment] = e_ch, e_win, e_offer, e_prop
        exp_code = np.where(experiment, _quarter_code(self.clock.days(t)), NO_EXPERIMENT)
        held = ch == NONE
        self.record(idx[held], t[held], NONE, OUTCOME["held_out"], template=-1,
                     experiment=exp_code[held], propensity=prop[held])
        go = ~held
        idx, t = idx[go], t[go]
        self.contact_t[idx] = _place_in_window(t, win[go], self.cfg, self.clock, self.rng)
        self.contact_ch[idx], self.contact_win[idx], self.contact_offer[idx] = ch[go], win[go], offer[go]
        self.contact_exp[idx], self.contact_prop[idx] = exp_code[go], prop[go]

    def _experiment(self, idx: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, ...]:
        """Uniform random action: none w.p. holdout, else a random allowed channel, window and offer."""
        holdout = self.cfg.raw["decisions"]["holdout"]
        n_allowed = allowed.sum(axis=1)
        u = self.rng.random(idx.size)
        ch = _uniform_allowed(allowed, (u - holdout) / (1 - holdout))
        none = u < holdout
        win = self.rng.integers(0, len(self.cfg.windows), idx.size)
        vulnerable = self.pf.flags["vulnerable"][idx]
        offer = np.where(vulnerable, PLAN, self.rng.integers(0, len(SIM_OFFERS), idx.size))
        prop = (1 - holdout) / n_allowed / len(self.cfg.windows) / np.where(vulnerable, 1, len(SIM_OFFERS))
        return np.where(none, NONE, ch), win, offer, np.where(none, holdout, prop)

    def _business_as_usual(self, idx: np.ndarray, allowed: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, ...]:
        """The standing policy, no propensity. `rule: phone_or_letter`: a call in the `bau_window` where
        allowed (w.p. bau_phone_share), else a letter. `rule: staged`: by days into the spell, the channel
        of the last step reached (the first allowed of the step's channels, a letter when none is), in the
        step's window; with probability `deviate` a collector picks another window and channel at random
        among the allowed (rules change, people deviate)."""
        raw = self.cfg.raw["decisions"]
        bau = raw.get("bau", {"rule": "phone_or_letter"})
        offer = np.where(self.pf.flags["vulnerable"][idx], PLAN, REMINDER)
        if bau["rule"] == "phone_or_letter":
            call = allowed[:, PHONE] & (self.rng.random(idx.size) < raw["bau_phone_share"])
            win = np.full(idx.size, self.cfg.windows.index(raw["bau_window"]))
            return np.where(call, PHONE, LETTER), win, offer, np.full(idx.size, np.nan)
        if bau["rule"] != "staged":
            raise ValueError(f"simulator params: decisions.bau.rule must be phone_or_letter or staged, "
                             f"not {bau['rule']!r}")
        days = (t - self.spell_start[idx]) / DAY
        ch, win = np.full(idx.size, LETTER), np.zeros(idx.size, np.int64)
        for start_day, channels, window in bau["steps"]:
            step = days >= float(start_day)
            pick = np.full(idx.size, LETTER)
            for name in reversed(channels):
                pick = np.where(allowed[:, CHANNEL[name]], CHANNEL[name], pick)
            ch, win = np.where(step, pick, ch), np.where(step, self.cfg.windows.index(window), win)
        if bau.get("plan_from_instalments"):
            offer = np.where(self.arrears[idx] >= int(bau["plan_from_instalments"]), PLAN, offer)
        deviate = self.rng.random(idx.size) < float(bau.get("deviate", 0.0))
        if deviate.any():
            ch[deviate] = _uniform_allowed(allowed[deviate], self.rng.random(deviate.sum()))
            win[deviate] = self.rng.integers(0, len(self.cfg.windows), deviate.sum())
        return ch, win, offer, np.full(idx.size, np.nan)

    def _on_contact(self, idx: np.ndarray, t: np.ndarray) -> None:
        """A scheduled outbound contact is made."""
        self.contact_t[idx] = np.inf
        horizon = self.decide_t[idx]  # the induced payment arrives before the next decision
        self.contact(idx, t, self.contact_ch[idx], self.contact_win[idx], self.contact_offer[idx],
                     self.contact_exp[idx], self.contact_prop[idx], horizon)

    def contact(self, idx: np.ndarray, t: np.ndarray, ch: np.ndarray, win: np.ndarray, offer: np.ndarray,
                experiment: np.ndarray, propensity: np.ndarray, horizon: np.ndarray) -> None:
        """Make an outbound contact: reach, an induced payment with probability lift, the outcome."""
        cfg = self.cfg
        reach = cfg.reach[self.pf.employment[idx], ch, win] * self.pf.reach_factor[idx]
        reached = self.rng.random(idx.size) < reach
        lift = cfg.lift[self.pf.ptype[idx], offer, self.shock[idx].astype(int)] * cfg.lift_channel[ch]
        u = self.rng.random(idx.size)
        pays = np.where(reached, u < lift, u < lift * cfg.unreached[ch])  # an unreached SMS may still be read
        case = np.where(reached, np.where(pays, 1, 2), 0)
        cum = cfg.outcome_cum[ch, case]
        outcome = np.minimum((self.rng.random(idx.size)[:, None] >= cum).sum(axis=1), len(vocab.OUTCOMES) - 1)
        self.record(idx, t, ch, outcome, template=offer, experiment=experiment, propensity=propensity)
        delay = np.minimum(cfg.raw["induced_delay_days"] * DAY, horizon - t)
        arrive = t + np.floor(self.rng.random(idx.size) * delay)
        new = pays & np.isinf(self.pend_t[idx])  # a customer who already arranged to pay pays once
        self.pend_t[idx[new]] = arrive[new]
        self.pend_plan[idx[new]] = offer[new] == PLAN
        talk = np.isin(ch, (PHONE, IVR)) & np.isin(outcome, [OUTCOME[o] for o in vocab.CONVERSATION_OUTCOMES])
        self.last_conversation[idx[talk]] = t[talk]
        promised = outcome == OUTCOME["promise_to_pay"]
        self.last_promise[idx[promised]] = t[promised]

    def record(self, idx: np.ndarray, t: np.ndarray, ch, outcome, *, template, experiment, propensity,
                inbound: bool = False) -> None:
        """Append contact rows (scalars broadcast)."""
        size = idx.shape

        def full(value, dtype):
            return np.broadcast_to(np.asarray(value, dtype=dtype), size).copy()

        self.contacts.append((idx, t, full(ch, np.int64), full(int(inbound), np.int64),
                              full(template, np.int64), full(outcome, np.int64), full(experiment, np.int64),
                              full(propensity, float)))


def _uniform_allowed(allowed: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row, the allowed channel a uniform `u` in [0, 1) picks (each allowed channel equally likely)."""
    n_allowed = allowed.sum(axis=1)
    pick = np.minimum((u * n_allowed).astype(np.int64), n_allowed - 1)
    return (np.cumsum(allowed, axis=1) <= pick[:, None]).sum(axis=1)


def _quarter_code(days: np.ndarray) -> np.ndarray:
    """year * 4 + quarter - 1 of local dates (the experiment id of a decision)."""
    months = days.astype("datetime64[M]").astype(np.int64)
    return (months // 12 + 1970) * 4 + (months % 12) // 3


# ---------------------------------------------------------------- the truth


def _no_event_probability(world: _World, idx: np.ndarray, horizon_days: float, cure: bool) -> np.ndarray:
    """P(no cure, or no payment at all when `cure` is False, in [end, end + horizon)) without contact.

    Exact given the latent state at end: the shock paths over the at most two due dates in the horizon
    are enumerated; on each, self-cure is Poisson with a piecewise-constant rate (active while in a spell,
    which starts at the first failed debit for an account owing only today's instalment) and each debit
    fails independently given its state and the instalments then owed.
    """
    cfg, pf = world.cfg, world.pf
    e0 = world.clock.end_s
    e1 = e0 + horizon_days * DAY
    k, s0, ptype = world.arrears[idx], world.shock[idx].astype(int), pf.ptype[idx]
    pend_in = world.pend_t[idx] < e1
    plan = world.pend_plan[idx]
    certain = pend_in & (~plan | (k == 1)) if cure else pend_in
    partial_at = np.where(pend_in & plan, world.pend_t[idx], np.inf)
    d0 = world.debit_t[idx]  # a debit still to come today, for an instalment already counted in k
    u1 = world.due_t[idx]
    u2 = _due_seconds(pf, idx, world.next_k[idx] + 1, world.clock)
    debit_hour = cfg.raw["debit_hour"] * HOUR
    x1, x2 = np.minimum(u1, e1), np.minimum(u2, e1)  # switch instants (e1: no switch)
    hazard_from = np.where(world.in_spell[idx], e0, d0)
    segments = ((e0, x1), (x1, x2), (x2, e1))
    exposure = [np.clip(hi - np.maximum(hazard_from, lo), 0, None) for lo, hi in segments]
    debits = [(d0, k), (u1 + debit_hour, k + 1), (u2 + debit_hour, k + 2)]
    start = cfg.shock_start[pf.employment[idx]]
    total = np.zeros(idx.size)
    for s1 in (0, 1):
        for s2 in (0, 1):
            weight = _transition(s0, s1, start, cfg.shock_end, u1 < e1) * _transition(
                np.full(idx.size, s1), s2, start, cfg.shock_end, u2 < e1)
            states = (s0, np.full(idx.size, s1), np.full(idx.size, s2))
            rate = sum(cfg.cure_rate[ptype, s] * x for s, x in zip(states, exposure, strict=True))
            fail = np.ones(idx.size)
            for (at, owed), s in zip(debits, states, strict=True):
                owed = owed - (partial_at < at)
                fail *= np.where(at < e1, 1 - world.debit_success(idx, s, owed), 1.0)
            total += weight * np.exp(-rate) * fail
    return np.where(certain, 0.0, total)


def _transition(s0: np.ndarray, s1: int, start: np.ndarray, end: float, switches: np.ndarray) -> np.ndarray:
    """P(shock state s1 after a due date | s0), or 1{s1 == s0} where no due date falls in the horizon."""
    p_shocked = np.where(s0 == 1, 1 - end, start)
    p = p_shocked if s1 == 1 else 1 - p_shocked
    return np.where(switches, p, (s0 == s1).astype(float))


def _truth(world: _World, idx: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cure and action truth for the accounts `idx` (overdue at end); actions account by account."""
    cfg, pf = world.cfg, world.pf
    ids = pf.ids[idx]
    cure = pd.DataFrame({
        "account_id": _object(ids),
        "as_of": pd.Series(world.clock.utc(np.full(idx.size, world.clock.end_s))),
        "p_cure_30": 1 - _no_event_probability(world, idx, 30, cure=True),
    })
    quiet = _no_event_probability(world, idx, 7, cure=False)
    shock = world.shock[idx].astype(int)
    labels, columns = [("none", "none", "none")], [1 - quiet]
    for c, channel in enumerate(vocab.CONTACT_CHANNELS):
        for w, window in enumerate(cfg.windows):
            reach = cfg.reach[pf.employment[idx], c, w] * pf.reach_factor[idx]
            for o, offer in enumerate(SIM_OFFERS):
                lift = cfg.lift[pf.ptype[idx], o, shock] * cfg.lift_channel[c]
                labels.append((channel, window, offer))
                nudge = (1 - reach) * lift * cfg.unreached[c]
                columns.append(1 - quiet * (1 - reach * lift - nudge))
    label = np.array(labels, dtype=object)
    actions = pd.DataFrame({
        "account_id": _object(np.repeat(ids, len(labels))),
        "channel": _object(np.tile(label[:, 0], idx.size)),
        "window": _object(np.tile(label[:, 1], idx.size)),
        "offer": _object(np.tile(label[:, 2], idx.size)),
        "p_payment_7d": np.column_stack(columns).ravel(),
    })
    return cure, actions


def _latent(world: _World) -> pd.DataFrame:
    """Per account: payer type, state at end and reach factor (for analysis, never for models)."""
    pf = world.pf
    pending = world.pend_t < np.inf
    pending_at = world.clock.utc(np.where(pending, world.pend_t, 0)).where(pending, pd.NaT)
    offer = np.where(world.pend_plan, "instalment_plan", "reminder").astype(object)
    return pd.DataFrame({
        "account_id": pd.Series(pf.ids, dtype=object),
        "payer_type": pd.Series(np.array(TYPES, dtype=object)[pf.ptype], dtype=object),
        "shock_at_end": world.shock.copy(),
        "reach_factor": pf.reach_factor,
        "in_spell_at_end": world.in_spell.copy(),
        "arrears_instalments_at_end": world.arrears.copy(),
        "pending_payment_at": pd.Series(pending_at),
        "pending_offer": pd.Series(np.where(pending, offer, None), dtype=object),
        "debit_day": pf.debit_day,
    })


# ---------------------------------------------------------------- the tables


def _object(values: np.ndarray) -> pd.Series:
    """A column of Python str / None with dtype object (never pandas' string dtype)."""
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def _accounts_table(pf: _Portfolio) -> pd.DataFrame:
    """The accounts table in contract order."""
    columns = {
        "account_id": _object(pf.ids),
        "opened_on": pd.Series(pf.opened_on.astype("datetime64[ns]")),
        "term_months": pf.term.astype(np.int64),
        "monthly_amount": pf.monthly,
        "birth_year": pf.birth_year,
        "employment": _object(np.array(vocab.EMPLOYMENT, dtype=object)[pf.employment]),
        "region": _object(pf.region),
        "timezone": _object(pf.timezone),
        "consent_phone": pf.consent[:, 0], "consent_sms": pf.consent[:, 1], "consent_email": pf.consent[:, 2],
    }
    columns |= {name: pf.flags[name] for name in COLUMNS["accounts"][11:]}
    return pd.DataFrame(columns)[list(COLUMNS["accounts"])]


def _installments_table(pf: _Portfolio, clock: _Clock, until: float) -> pd.DataFrame:
    """Every due date in [window start, until) within each contract (the schedule needs no simulation)."""
    all_idx = np.arange(pf.n)
    last = np.minimum(_first_due_at_or_after(pf, all_idx, until, clock) - 1, pf.term)
    count = np.maximum(last - pf.first_k + 1, 0)
    idx = np.repeat(all_idx, count)
    k = pf.first_k[idx] + np.arange(idx.size) - np.repeat(np.cumsum(count) - count, count)
    days = clock.days(_due_seconds(pf, idx, k, clock))
    return pd.DataFrame({
        "account_id": _object(pf.ids[idx]),
        "due_date": pd.Series(days.astype("datetime64[ns]")),
        "amount_due": pf.monthly[idx],
    })


def _concat(rows: list[tuple[np.ndarray, ...]], width: int) -> list[np.ndarray]:
    """Concatenate recorded row batches column by column."""
    if not rows:
        return [np.zeros(0, np.int64) for _ in range(width)]
    return [np.concatenate([row[i] for row in rows]) for i in range(width)]


def _payments_table(world: _World) -> pd.DataFrame:
    """The payments table, by account and time."""
    idx, t, amount, method = _concat(world.payments, 4)
    order = np.lexsort((t, idx))
    idx, t = idx[order], t[order]
    return pd.DataFrame({
        "account_id": _object(world.pf.ids[idx]),
        "paid_at": pd.Series(world.clock.utc(t)),
        "amount": amount[order].astype(float),
        "method": _object(np.array(vocab.PAYMENT_METHODS, dtype=object)[method[order]]),
    })


def _experiment_names(codes: np.ndarray, cfg: _Config) -> np.ndarray:
    """Experiment ids ("EXP-2026Q1", the forced one, or None) of experiment codes."""
    raw = cfg.raw["decisions"]
    names = np.full(codes.size, None, dtype=object)
    names[codes == FORCED_EXPERIMENT] = raw["forced_experiment"]
    names[codes == PRODUCT_EXPERIMENT] = "CUREFLOW"  # a randomised decision of the product itself (Live)
    for code in np.unique(codes[codes >= 0]):
        names[codes == code] = f"{raw['experiment_prefix']}-{code // 4}Q{code % 4 + 1}"
    return names


def _contact_ids(account_ids: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """C<account number>-<n>, the n-th contact of the account (rows sorted by account, then time).

    Stable when the run continues past end, so the history before end is the same in every run.
    """
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]]) if idx.size else np.zeros(0, np.int64)
    nth = np.arange(idx.size) - np.repeat(starts, np.diff(np.r_[starts, idx.size])) + 1
    number = np.strings.slice(account_ids.astype(str), 1, None)
    suffix = np.strings.add("-", np.strings.zfill(nth.astype(str), 4))
    return np.strings.add(np.strings.add("C", number), suffix)


def _contacts_table(world: _World) -> pd.DataFrame:
    """The contacts table, by account and time."""
    cfg = world.cfg
    idx, t, ch, inbound, template, outcome, experiment, prop = _concat(world.contacts, 8)
    order = np.lexsort((t, idx))
    idx, t, ch, inbound, template, outcome, experiment, prop = (
        a[order] for a in (idx, t, ch, inbound, template, outcome, experiment, prop))
    templates = np.array([cfg.raw["templates"][o] for o in SIM_OFFERS] + [None], dtype=object)
    ids = _contact_ids(world.pf.ids[idx], idx)
    return pd.DataFrame({
        "contact_id": _object(ids.astype(object)),
        "account_id": _object(world.pf.ids[idx]),
        "contacted_at": pd.Series(world.clock.utc(t)),
        "channel": _object(np.array(vocab.CHANNELS, dtype=object)[ch.astype(np.int64)]),
        "direction": _object(np.array(vocab.DIRECTIONS, dtype=object)[inbound.astype(np.int64)]),
        "template": _object(templates[template.astype(np.int64)]),
        "outcome": _object(np.array(vocab.OUTCOMES, dtype=object)[outcome.astype(np.int64)]),
        "experiment_id": _object(_experiment_names(experiment.astype(np.int64), cfg)),
        "propensity": prop.astype(float),
    })


# ---------------------------------------------------------------- the public API


def _force(world: _World, idx: np.ndarray, action: tuple[str, str, str]) -> None:
    """Take `action` (channel, window, offer) at end for accounts `idx`, ignoring every rule (a test hook)."""
    channel, window, offer = action
    t = np.full(idx.size, world.clock.end_s)
    if channel == "none":
        world.record(idx, t, NONE, OUTCOME["held_out"], template=-1, experiment=FORCED_EXPERIMENT,
                      propensity=1.0)
        return
    full = np.full(idx.size, 1, np.int64)
    world.contact(idx, t, full * CHANNEL[channel], full * world.cfg.windows.index(window),
                  full * SIM_OFFERS.index(offer), full * FORCED_EXPERIMENT, np.ones(idx.size),
                  t + world.cfg.raw["induced_delay_days"] * DAY)


def _observe(world: _World, rng: np.random.Generator, days: int, contacts_after_end: bool,
             forced_action: tuple[str, str, str] | None) -> None:
    """Continue past end for `days`, with fresh randomness so the history before end stays the same."""
    world.phase_start = world.clock.end_s
    if not contacts_after_end:
        world.contact_t[:] = np.inf
        world.decide_t[:] = np.inf
    world.rng = rng
    spell = np.flatnonzero(world.in_spell)
    world.draw_cure(spell, np.full(spell.size, world.clock.end_s))
    if forced_action is not None:
        world.contacts_on = contacts_after_end
        _force(world, np.flatnonzero(world.arrears > 0), forced_action)
    world.run(world.clock.end_s + days * DAY, rng, contacts_after_end)


def simulate(n_accounts: int, months: int, seed: int, end: pd.Timestamp | str | None = None,
             params: dict | None = None, observe_days: int = 0, contacts_after_end: bool = True,
             forced_action: tuple[str, str, str] | None = None, progress=None) -> Simulation:
    """Simulate `n_accounts` over the `months` before `end`, and the truth at `end`.

    `observe_days` continues past end (tables then hold rows up to end + observe_days); with
    `contacts_after_end=False` no contact is made after end. `forced_action` = (channel, window, offer)
    is taken at end for every account overdue then (a hook for testing the action truth). `progress` is called
    with the share of the history simulated so far (0 to 1).
    """
    params = load_params() if params is None else params
    cfg = _config(params)
    clock = _clock(params["simulate"]["end"] if end is None else end, months, cfg.raw["timezone"])
    streams = np.random.SeedSequence(seed).spawn(3)  # people, history before end, the future after it
    people_rng, history_rng, future_rng = (np.random.default_rng(stream) for stream in streams)
    pf = _draw_portfolio(n_accounts, cfg, people_rng, clock)
    world = _World(pf, cfg, clock, history_rng)
    if progress is not None:
        world.tick = lambda t: progress((t - clock.start_s) / (clock.end_s - clock.start_s))
    world.run(clock.end_s, history_rng, contacts_on=True)
    world.tick = None
    overdue = np.flatnonzero(world.arrears > 0)
    truth_cure, truth_actions = _truth(world, overdue)
    latent = _latent(world)
    if observe_days > 0 or forced_action is not None:
        _observe(world, future_rng, observe_days, contacts_after_end, forced_action)
    until = clock.end_s + observe_days * DAY
    tables = {
        "accounts": _accounts_table(pf),
        "installments": _installments_table(pf, clock, until),
        "payments": _payments_table(world),
        "contacts": _contacts_table(world),
    }
    run = {"seed": seed, "accounts": n_accounts, "months": months, "end": clock.end.isoformat(),
           "observe_days": observe_days, "contacts_after_end": contacts_after_end,
           "forced_action": list(forced_action) if forced_action else None}
    return Simulation(tables, truth_cure, truth_actions, latent, run)


class Live:
    """A simulated portfolio a team runs the product on, week by week (benchmarks/closed_loop.py).

    The history before `end` is simulated as usual (the preset's business-as-usual rule and experiment
    share: 0 for a first export without experiments). From then on the simulator makes no decision of its
    own: `play` carries out the product's decisions (contacts in their windows, hold-outs recorded, with
    the decision's propensity), the customers respond by the same process, and `tables` / `truth` give the
    contract tables and the exact action truth at the current instant.
    """

    def __init__(self, n_accounts: int, months: int, seed: int, params: dict, end: pd.Timestamp | str | None = None):
        self.cfg = _config(params)
        self.clock = _clock(params["simulate"]["end"] if end is None else end, months, self.cfg.raw["timezone"])
        people, history, self.rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        self.pf = _draw_portfolio(n_accounts, self.cfg, people, self.clock)
        self.world = _World(self.pf, self.cfg, self.clock, history)
        self.world.run(self.clock.end_s, history, contacts_on=True)
        self.now = self.clock.end_s
        self.world.decide_t[:] = np.inf  # from here on, only the product decides
        self.world.contacts_on = False
        self.started = self.as_of
        self.played: list[pd.DataFrame] = []  # the decisions carried out, with their ids when they have one

    @property
    def as_of(self) -> pd.Timestamp:
        """The current instant (UTC)."""
        return self.clock.utc(np.array([self.now]))[0]

    def tables(self, crm_export: bool = False) -> dict[str, pd.DataFrame]:
        """The four contract tables with every row before now. A contact that carried out a played decision
        with a `decision_id` names it; with `crm_export` it carries only that, as a CRM's export would (no
        propensity, no experiment id: training takes them from the decision log)."""
        contacts = _contacts_table(self.world)
        played = [p for p in self.played if "decision_id" in p]
        if played:
            contacts = _name_decisions(contacts, pd.concat(played, ignore_index=True), self.started, crm_export)
        return {"accounts": _accounts_table(self.pf),
                "installments": _installments_table(self.pf, self.clock, self.now),
                "payments": _payments_table(self.world), "contacts": contacts}

    def truth(self) -> pd.DataFrame:
        """The exact chance of a payment within 7 days under every action, per account overdue now."""
        world = self.world
        world.clock = dataclasses.replace(self.clock, end_s=self.now)
        try:
            return _truth(world, np.flatnonzero(world.arrears > 0))[1]
        finally:
            world.clock = self.clock

    def play(self, decisions: pd.DataFrame, days: int = 7) -> None:
        """Carry out decisions (account_id, channel, window, offer, propensity) made now, then advance `days`.
        A contact happens in the first occurrence of its window; any offer but a reminder is an arrangement. A
        no contact the policy drew (propensity < 1) is a hold-out row; one it was certain of (nothing else
        allowed) leaves no row, as in a CRM's export (CONTRACT.md: `none` only for a hold-out)."""
        idx = pd.Index(self.pf.ids).get_indexer(decisions["account_id"])
        if (idx < 0).any():
            raise ValueError(f"decisions for unknown accounts: {list(decisions['account_id'][idx < 0][:5])}")
        t = np.full(idx.size, self.now)
        ch = np.array([CHANNEL[c] for c in decisions["channel"]], dtype=np.int64)
        prop = decisions["propensity"].to_numpy(dtype=float)
        code = np.where(prop < 1, PRODUCT_EXPERIMENT, NO_EXPERIMENT)
        if "decision_id" in decisions:
            self.played.append(pd.DataFrame({"account_id": decisions["account_id"].to_numpy(dtype=object),
                                             "decision_id": decisions["decision_id"].to_numpy(dtype=object),
                                             "decided_at": self.as_of}))
        held = (ch == NONE) & (prop < 1)  # a hold-out the policy drew; a certain "no contact" is not exported
        self.world.record(idx[held], t[held], NONE, OUTCOME["held_out"], template=-1, experiment=code[held],
                          propensity=prop[held])
        go = (ch != NONE) & (self.world.contact_t[idx] == np.inf)
        idx, t = idx[go], t[go]
        win = np.array([self.cfg.windows.index(w) for w in decisions["window"].to_numpy()[go]], dtype=np.int64)
        offer = np.where(decisions["offer"].to_numpy()[go] == "reminder", REMINDER, PLAN)
        self.world.contact_t[idx] = _place_in_window(t, win, self.cfg, self.clock, self.rng)
        self.world.contact_ch[idx], self.world.contact_win[idx], self.world.contact_offer[idx] = ch[go], win, offer
        self.world.contact_exp[idx], self.world.contact_prop[idx] = code[go], prop[go]
        self.world.phase_start = self.now
        self.now += days * DAY
        self.world.run(self.now, self.rng, contacts_on=False)


def _name_decisions(contacts: pd.DataFrame, played: pd.DataFrame, started: pd.Timestamp, crm_export: bool
                    ) -> pd.DataFrame:
    """Each outbound contact the product decided (from `started` on, with the propensity `play` gave it: not a
    contact the standing rule or an experiment of the history had scheduled before) names the latest decision
    played for its account at or before it (the product decides at most once an account a step)."""
    contacts = contacts.copy()
    contacts["decision_id"] = None
    product = contacts["propensity"].notna() & (contacts["experiment_id"].isna()
                                                | (contacts["experiment_id"] == "CUREFLOW"))
    mine = np.flatnonzero(((contacts["direction"] == "outbound") & (contacts["contacted_at"] >= started)
                           & product).to_numpy())
    if not len(mine):
        return contacts
    rows = contacts.iloc[mine][["account_id", "contacted_at"]].assign(_row=mine).sort_values("contacted_at")
    rows["account_id"] = rows["account_id"].astype(object)
    decided = played.sort_values("decided_at").astype({"decided_at": rows["contacted_at"].dtype,
                                                       "account_id": object})
    named = pd.merge_asof(rows, decided, left_on="contacted_at", right_on="decided_at", by="account_id",
                          direction="backward")
    at = named["_row"].to_numpy()
    contacts.loc[at, "decision_id"] = named["decision_id"].to_numpy(dtype=object)
    if crm_export:
        has = contacts["decision_id"].notna()
        contacts.loc[has, "propensity"] = np.nan
        contacts.loc[has, "experiment_id"] = None
    return contacts


def _versions() -> dict[str, str]:
    """Versions of the code and libraries that wrote a simulation (for the manifest)."""
    versions = {"numpy": np.__version__, "pandas": pd.__version__}
    for package in ("cureflow", "pyarrow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def write(sim: Simulation, out: Path) -> None:
    """Write the tables, the truth and a manifest (seed, counts, end, versions) under `out`."""
    out = Path(out)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    for name, frame in sim.tables.items():
        write_parquet_atomic(frame, out / f"{name}.parquet")
    for name, frame in (("cure", sim.truth_cure), ("actions", sim.truth_actions), ("latent", sim.latent)):
        write_parquet_atomic(frame, out / "truth" / f"{name}.parquet")
    body = dict(sim.run)
    body["counts"] = {name: len(frame) for name, frame in sim.tables.items()} | {
        "truth_cure": len(sim.truth_cure), "truth_actions": len(sim.truth_actions)}
    body["versions"] = _versions()
    write_json_atomic(body, out / "manifest.json", newline=True, indent=2, sort_keys=True)


def main(accounts: int, months: int, seed: int, out: Path, end: str | None = None, preset: str | None = None,
         experiment_share: float | None = None) -> Path:
    """Simulate and write a portfolio (what the CLI calls); prints a one-line summary and returns `out`."""
    params = with_preset(load_params(), preset, experiment_share)
    end = params["simulate"]["end"] if end is None else end
    from models.progress import step

    with step(f"simulate: {accounts:,} accounts x {months} months", total=100) as update:
        sim = simulate(accounts, months, seed, end=end, params=params, progress=lambda share: update(100 * share))
    sim.run.update(preset=preset or "lease",
                   experiment_share=float(params["simulator"]["decisions"]["experiment_share"]))
    write(sim, Path(out))
    counts = ", ".join(f"{len(frame)} {name}" for name, frame in sim.tables.items())
    overdue = len(sim.truth_cure)
    print(f"simulated {counts}; {overdue} overdue at {end} ({overdue / max(accounts, 1):.1%}), "
          f"mean p_cure_30 {sim.truth_cure['p_cure_30'].mean():.3f} -> {out}")
    return Path(out)


def _queue_decisions(queue: pd.DataFrame, accounts: pd.DataFrame, params: dict) -> pd.DataFrame:
    """A work queue (`cureflow score`) as the decisions `Live.play` carries out: each row's window by name."""
    from models.calendar import effective_timezones
    from models.features import FeatureConfig
    from pipelines.feedback import window_names

    config = FeatureConfig.from_params(params)
    zones = pd.Series(effective_timezones(accounts.set_index("account_id")["timezone"])
                      .reindex(queue["account_id"]).to_numpy())
    starts = pd.to_datetime(queue["window_start"], utc=True, format="ISO8601").reset_index(drop=True)
    window = window_names(starts, zones, config)
    return pd.DataFrame({"account_id": queue["account_id"].to_numpy(dtype=object),
                         "channel": queue["channel"].to_numpy(dtype=object),
                         "window": np.where(window == "", config.windows[0].name, window),
                         "offer": queue["offer"].to_numpy(dtype=object),
                         "propensity": queue["propensity"].fillna(1.0).to_numpy(dtype=float),
                         "decision_id": queue["decision_id"].to_numpy(dtype=object)})


def play(data: Path, queue: Path, out: Path, days: int = 7) -> Path:
    """A week of outcomes for a simulated portfolio: the simulator carries out the work queue `cureflow score`
    wrote for `data` (as of its end), the customers respond for `days`, and `out` gets the four tables as the
    CRM would export them then (each contact names the decision it carried out, no propensity), with a
    manifest that lists every queue played so far (the world is rebuilt from the seed and replays them)."""
    data, out = Path(data), Path(out)
    manifest = json.loads((data / "manifest.json").read_text())
    params = with_preset(load_params(), manifest.get("preset"), manifest.get("experiment_share"))
    live = Live(int(manifest["accounts"]), int(manifest["months"]), int(manifest["seed"]), params,
                end=manifest.get("started_at", manifest["end"]))
    accounts = _accounts_table(live.pf)
    steps = [*manifest.get("played", []), {"queue": str(Path(queue).resolve()), "days": int(days)}]
    for done in steps:
        rows = pd.read_parquet(done["queue"]) if done["queue"].endswith(".parquet") else pd.read_csv(done["queue"])
        scored_at = pd.Timestamp(rows["as_of"].iloc[0]).tz_convert("UTC") if len(rows) else live.as_of
        if not live.as_of <= scored_at < live.as_of + pd.Timedelta(days=1):  # the day the team scores
            raise ValueError(f"the work queue {done['queue']} was scored as of {scored_at.isoformat()}, but the "
                             f"portfolio it plays on ends at {live.as_of.isoformat()}: score --data {data} first")
        live.play(_queue_decisions(rows, accounts, params), days=int(done["days"]))
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in live.tables(crm_export=True).items():
        write_parquet_atomic(frame, out / f"{name}.parquet")
    body = {**manifest, "started_at": manifest.get("started_at", manifest["end"]), "end": live.as_of.isoformat(),
            "played": steps, "versions": _versions()}
    body.pop("counts", None)
    write_json_atomic(body, out / "manifest.json", newline=True, indent=2, sort_keys=True)
    print(f"played {len(rows):,} decisions of {queue} for {days} days -> {out} (ends {live.as_of.isoformat()})")
    return out
