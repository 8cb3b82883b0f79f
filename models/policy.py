"""The decision: which offer, which channel and window, the priority and the tier a collector reads.

Pure functions of arrays (no I/O, no model objects), table-tested, called by the API and the batch alike.
Every number comes from params.yaml `policy`. Rules (models.rules) have already removed what the law or
the customer forbids; this module picks the best of what is left and never overrides a rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import vocab
from models.playbook import OFFERS as ARM_NAMES
from models.playbook import flat_action
from models.safe import SafePolicy

LEGAL_HOLDS = ("R-CEASE", "R-REPRESENTED", "R-INSOLVENCY")


@dataclass(frozen=True)
class PolicyConfig:
    """params.yaml `policy`, frozen."""

    costs: dict[str, float]
    call_today_min_value: float
    instalment_plan_min_arrears: float
    settlement_min_days_past_due: float
    legal_review_min_days_past_due: float
    version: str
    explore: float = 0.0
    phone_capacity: int | None = None
    calls_per_hour: float = 12.0
    try_channels: tuple[str, ...] = ("sms", "email", "letter", "ivr")  # channels an experiment may try instead
    holdout: bool = True  # experiments keep a no-contact arm (the hold-out every lift is measured against)
    challenger: float = 0.0  # share of the other decisions served the challenger (the learned ranking not yet adopted)
    contenders: float | None = None  # share of experiment draws for the contender arms (None: all arms alike)
    templates: tuple[tuple[str, tuple[str, ...]], ...] = ()  # wording variants per channel (default: v1)
    currency: str = "JPY"
    min_arrears: float = 0.0              # materiality: less than this (in the currency) is not overdue ...
    min_arrears_instalments: float = 0.0  # ... nor less than this share of the monthly amount
    recovery_days_past_due: float = float("inf")   # stale debt: beyond this, not a cure candidate
    write_off_days_past_due: float = float("inf")  # and beyond this, for write-off review

    @classmethod
    def from_params(cls, policy: dict) -> PolicyConfig:
        offers = policy["offers"]
        return cls(
            costs={k: float(v) for k, v in policy["costs"].items()},
            call_today_min_value=float(policy["tiers"]["call_today_min_value"]),
            instalment_plan_min_arrears=float(offers["instalment_plan_min_arrears"]),
            settlement_min_days_past_due=float(offers["settlement_min_days_past_due"]),
            legal_review_min_days_past_due=float(offers["legal_review_min_days_past_due"]),
            version=str(policy.get("version", "policy-1")),
            explore=explore_rate(policy.get("explore", 0.0)),
            phone_capacity=parse_capacity(policy.get("phone_capacity", "unlimited")),
            calls_per_hour=float(policy.get("calls_per_hour", 12)),
            templates=_templates(policy.get("templates") or {}),
            **_experiment_config(policy.get("experiments") or {}),
            currency=str(policy.get("currency", "JPY")),
            **_thresholds(policy),
        )


def _templates(raw: dict) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """params.yaml `policy.templates`: the wording variants a team registered per channel, checked."""
    if not isinstance(raw, dict):
        raise ValueError(f"params.yaml policy.templates must map channels to lists of variants, not {raw!r}")
    out = []
    for channel, names in raw.items():
        names = [names] if isinstance(names, str) else list(names or ())
        if channel not in vocab.CONTACT_CHANNELS:
            raise ValueError(f"params.yaml policy.templates: {channel!r} is not a channel "
                             f"({list(vocab.CONTACT_CHANNELS)})")
        bad = [n for n in names if not (isinstance(n, str) and n and n.replace("_", "").replace("-", "").isalnum())]
        if not names or bad:
            raise ValueError(f"params.yaml policy.templates.{channel}: variants are non-empty names of letters, "
                             f"digits, - and _, not {bad or names}")
        out.append((channel, tuple(names)))
    return tuple(out)


def variant(templates: tuple[tuple[str, tuple[str, ...]], ...], channel: str, w: float) -> str:
    """The wording variant of a message on `channel`: drawn uniformly by `w` in [0, 1) among the registered
    variants (each equally likely, independently of the action, so their comparison needs no weights)."""
    names = dict(templates).get(channel, ("v1",))
    return names[min(int(w * len(names)), len(names) - 1)]


def _experiment_config(raw: dict) -> dict:
    """params.yaml `policy.experiments`: which channels an experiment may try, and whether it holds out."""
    out = {}
    if "try_channels" in raw:
        bad = [c for c in raw["try_channels"] if c not in vocab.CONTACT_CHANNELS]
        if bad:
            raise ValueError(f"params.yaml policy.experiments.try_channels: {bad} are not channels "
                             f"({list(vocab.CONTACT_CHANNELS)})")
        out["try_channels"] = tuple(raw["try_channels"])
    if "holdout" in raw:
        out["holdout"] = bool(raw["holdout"])
    for key in ("challenger", "contenders"):  # shares in [0, 1); contenders may be null (every arm alike)
        if key not in raw or (key == "contenders" and raw[key] is None):
            continue
        share = raw[key]
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= float(share) < 1.0:
            raise ValueError(f"params.yaml policy.experiments.{key} must be a share in [0, 1), not {share!r}")
        out[key] = float(share)
    return out


def _thresholds(policy: dict) -> dict[str, float]:
    """params policy.materiality and policy.stale (absent in bundles trained before them: no threshold)."""
    material, stale = policy.get("materiality") or {}, policy.get("stale") or {}
    out = {"min_arrears": float(material.get("min_arrears", 0.0)),
           "min_arrears_instalments": float(material.get("min_instalments", 0.0)),
           "recovery_days_past_due": float(stale.get("recovery_days_past_due", float("inf"))),
           "write_off_days_past_due": float(stale.get("write_off_days_past_due", float("inf")))}
    if min(out.values()) < 0 or out["write_off_days_past_due"] < out["recovery_days_past_due"]:
        raise ValueError(f"params policy.materiality and policy.stale must be >= 0, and write-off after recovery: "
                         f"{out}")
    return out


def material(arrears: np.ndarray, arrears_instalments: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """Overdue for the work queue: arrears above zero and at least both materiality thresholds (a residue
    of a few units of the currency, or a sliver of an instalment, is not worth a contact)."""
    return (arrears > 0) & (arrears >= config.min_arrears) & (arrears_instalments >= config.min_arrears_instalments)


def left_out_reason(arrears: float, config: PolicyConfig) -> str:
    """Why an account with arrears below the materiality thresholds is not in the work queue."""
    return (f"not in the work queue: arrears of {config.currency} {arrears:,.2f} are below the materiality "
            f"threshold ({config.currency} {config.min_arrears:,.2f} and {config.min_arrears_instalments:g} of "
            f"an instalment)")


def stale(days_past_due: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """Stale debt: past the days-past-due limit a collector no longer works for a cure."""
    return days_past_due > config.recovery_days_past_due


def stale_tier(days_past_due: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """The stale track's tier: recovery review by a person, or write-off review past the later limit."""
    return np.where(days_past_due > config.write_off_days_past_due, vocab.WRITE_OFF_REVIEW, vocab.RECOVERY_REVIEW)


def stale_reason(days_past_due: float, config: PolicyConfig) -> str:
    """Why a stale account is not scored as a cure candidate."""
    return (f"{days_past_due:.0f} days past due, beyond the {config.recovery_days_past_due:.0f}-day limit of "
            f"cure work: for review by a person, not for automated contact")


def parse_capacity(value) -> int | None:
    """`unlimited` (or None) means no limit; otherwise a whole number of calls a day, at least 0."""
    if value is None or str(value).strip().lower() == "unlimited":
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"phone capacity (--phone-capacity, params policy.phone_capacity) must be a whole "
                         f"number >= 0 or 'unlimited', not {value!r}")
    return int(text)


def explore_rate(value) -> float:
    """An exploration rate: the share of decisions drawn at random among the allowed actions, in [0, 1]."""
    try:
        eps = float(value)
    except (TypeError, ValueError):
        eps = float("nan")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"the exploration rate (--explore, params policy.explore) must be in [0, 1], not {value!r}")
    return eps


def staged_offer(arrears_instalments: np.ndarray, days_past_due: np.ndarray, broken_promises: np.ndarray,
                 vulnerable: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """Staged escalation: reminder, then a plan at two instalments behind, settlement only late,
    legal review only after failed plans (a person decides), hardship referral for the vulnerable."""
    offer = np.full(len(arrears_instalments), "reminder", dtype=object)
    offer[arrears_instalments >= config.instalment_plan_min_arrears] = "instalment_plan"
    offer[days_past_due >= config.settlement_min_days_past_due] = "settlement"
    failed_plans = broken_promises >= 2
    offer[(days_past_due >= config.legal_review_min_days_past_due) & failed_plans] = "legal_review"
    offer[vulnerable] = "hardship_referral"
    return offer


def arm_offers_allowed(staged: np.ndarray, rule_offer_allowed: np.ndarray) -> np.ndarray:
    """(n, 2) which learned arms an account may get: a reminder (0) or a payment arrangement (1).

    A customer still at the reminder stage may get a plan instead when the response model says a plan
    works better (the signs that they cannot pay in one go); every later stage is an arrangement (a plan,
    a settlement or a hardship referral all ask for a payment the customer can make). The rules' offer
    mask (columns reminder, instalment_plan, ...) removes what they forbid.
    """
    reminder_stage = staged == "reminder"
    allowed = np.column_stack([reminder_stage, np.ones(len(staged), dtype=bool)])
    allowed[:, 0] &= rule_offer_allowed[:, 0]
    allowed[:, 1] &= rule_offer_allowed[:, 1] | ~reminder_stage
    return allowed


def final_offer(staged: np.ndarray, arm: np.ndarray) -> np.ndarray:
    """The offer named in the answer: a reminder, a plan chosen over a reminder, or the staged offer."""
    plan_instead = (staged == "reminder") & (arm == 1)
    return np.where(arm == 0, "reminder", np.where(plan_instead, "instalment_plan", staged)).astype(object)


def support_lists(support: tuple[np.ndarray, np.ndarray] | None, windows: list[str] | tuple[str, ...]
                  ) -> list[list[list]]:
    """Per account the policy's whole distribution over actions, as the decision log keeps it: [channel, window,
    arm offer (reminder or instalment_plan), chance] for every action with a chance above 0 (no contact is
    ["none", "none", "none", chance]), the chances of an action listed twice summed, largest first. What
    training reads to know which actions a logged decision could have taken (models.safe: no test judges an
    action on a decision that gave it no chance)."""
    if support is None:
        return []
    flat, chance = support
    n_win, n_arm = len(windows), len(ARM_NAMES)
    out = []
    for acts, ps in zip(flat.tolist(), chance.tolist(), strict=True):
        merged: dict[int, float] = {}
        for a, p in zip(acts, ps, strict=True):
            if a >= -1 and p > 0:
                merged[a] = merged.get(a, 0.0) + p
        row = []
        for a, p in sorted(merged.items(), key=lambda item: (-item[1], item[0])):
            if a < 0:
                row.append(["none", "none", "none", round(p, 6)])
            else:
                c, rest = divmod(a, n_win * n_arm)
                w, arm = divmod(rest, n_arm)
                row.append([vocab.CONTACT_CHANNELS[c], windows[w], ARM_NAMES[arm], round(p, 6)])
        out.append(row)
    return out


def capacity_moved(support: tuple[np.ndarray, np.ndarray] | None, alt: tuple[np.ndarray, ...], n_win: int
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The distribution of a decision whose call the day's capacity moved to its best other action (`alt`:
    channel, window and arm indices, -1 = no contact): every call's chance goes to that action, as any call
    drawn would have been moved."""
    if support is None:
        return None
    flat, chance = support
    phone = vocab.CONTACT_CHANNELS.index("phone")
    call = (flat >= 0) & (flat // (n_win * len(ARM_NAMES)) == phone)
    return np.where(call, _flat(alt, n_win)[:, None], flat), chance


def chance_of(support: tuple[np.ndarray, np.ndarray], action: tuple[np.ndarray, ...], n_win: int) -> np.ndarray:
    """The chance `support` gives each account's `action` (channel, window and arm indices, -1 = no contact)."""
    acts, chance = support
    return np.where(acts == _flat(action, n_win)[:, None], chance, 0.0).sum(axis=1)


def _flat(action: tuple[np.ndarray, ...], n_win: int) -> np.ndarray:
    """Channel, window and arm indices (-1 = no contact) as flat action indices (-1 = no contact)."""
    channel, window, arm = (np.asarray(a) for a in action[:3])
    return np.where(channel >= 0, flat_action(channel, window, arm, n_win), -1)


@dataclass
class Choice:
    """The chosen action per account (indices into channels, windows, arms; -1 = no contact), its gain in
    payment chance, its expected value, the probability the policy gave it, and the best action without
    a phone call (what the account gets when the day's calls run out)."""

    channel: np.ndarray
    window: np.ndarray
    arm: np.ndarray
    gain: np.ndarray
    value: np.ndarray
    propensity: np.ndarray
    explored: np.ndarray
    alt: tuple[np.ndarray, ...] = ()
    departed: np.ndarray | None = None  # the model's action replaced the baseline (None: no safe policy)
    challenged: np.ndarray | None = None  # served the challenger (policy.experiments.challenger), not the baseline
    support: tuple[np.ndarray, np.ndarray] | None = None  # (n, m) flat actions and the chance the policy gave each


def action_values(gain: np.ndarray, stake: np.ndarray, channel_allowed: np.ndarray, arm_allowed: np.ndarray,
                  config: PolicyConfig) -> np.ndarray:
    """(n, channels x windows x arms) expected value = gain x stake - cost, -inf where a rule forbids."""
    n = len(stake)
    cost = np.array([config.costs[c] for c in vocab.CONTACT_CHANNELS])
    value = gain * stake[:, None, None, None] - cost[None, :, None, None]
    ok = channel_allowed[:, :, None, None] & arm_allowed[:, None, None, :]
    return np.where(ok, value, -np.inf).reshape(n, -1)


def greedy(value: np.ndarray) -> np.ndarray:
    """Flat index of the best action, -1 (no contact) when nothing beats doing nothing."""
    if value.shape[1] == 0:
        return np.full(len(value), -1)
    flat = value.argmax(axis=1)
    best = value[np.arange(len(value)), flat]
    return np.where(np.isfinite(best) & (best > 0), flat, -1)


def designed_arms(served: np.ndarray, value: np.ndarray, config: PolicyConfig,
                  contenders: np.ndarray | None = None) -> np.ndarray:
    """(n, k) the arms of each account's experiment, as flat action indices (-1 = no contact, -2 = no arm):
    the served action itself, its one-factor variants the rules allow (another channel of
    `config.try_channels` at the same window and offer, another window, the other offer), the `contenders`
    (n, m) the rules allow that are not already arms (what could replace the served action: the learned
    best single action the evidence has not yet adopted, the response model's own best action; a call only
    where the served action is a call) and, with `config.holdout`, no contact. An account served no contact
    has no experiment (its only arm is itself)."""
    n, n_arm = len(served), 2
    n_win = value.shape[1] // (len(vocab.CONTACT_CHANNELS) * n_arm) if value.shape[1] else 0
    channel, rest = np.divmod(np.maximum(served, 0), max(n_win, 1) * n_arm)
    window, arm = np.divmod(rest, n_arm)
    flat = lambda c, w, a: (c * n_win + w) * n_arm + a  # noqa: E731 - models.playbook.flat_action
    cols = [np.where(channel != c, flat(c, window, arm), -2)
            for c in (vocab.CONTACT_CHANNELS.index(name) for name in config.try_channels)]
    cols += [np.where(window != w, flat(channel, w, arm), -2) for w in range(n_win)]
    cols.append(flat(channel, window, 1 - arm))
    variants = np.column_stack(cols) if n_win else np.full((n, 0), -2)
    rows = np.arange(n)[:, None]
    ok = (variants >= 0) & (served[:, None] >= 0)
    ok[ok] = np.isfinite(value[np.broadcast_to(rows, variants.shape)[ok], variants[ok]])
    arms = [served[:, None], np.where(ok, variants, -2)]
    if contenders is not None and contenders.shape[1] and n_win:
        phone = vocab.CONTACT_CHANNELS.index("phone")
        for col in np.asarray(contenders, dtype=np.int64).T:
            taken = np.column_stack(arms)
            fresh = (col >= 0) & (served >= 0) & ~(taken == col[:, None]).any(axis=1)
            fresh &= (col // (n_win * n_arm) != phone) | (channel == phone)  # experiments never add a call
            fresh[fresh] = np.isfinite(value[np.flatnonzero(fresh), col[fresh]])
            arms.append(np.where(fresh, col, -2)[:, None])
    if config.holdout:
        arms.append(np.where(served >= 0, -1, -2)[:, None])
    return np.column_stack(arms)


def arm_chances(arms: np.ndarray, contender: np.ndarray | None = None, share: float | None = None) -> np.ndarray:
    """(n, k) each experiment arm's chance of being drawn, given an experiment: every arm alike, or, with a
    `share`, that share split evenly among the account's arms marked in `contender` ((n, k) True where an arm
    is a contender's action, a one-factor variant or an arm of its own) and the rest evenly among its other
    arms (every arm alike where an account has no contender arm, or nothing else). Why: at a 5% experiment
    over about twelve arms each arm is drawn for 1 decision in 240, and the comparison the safe policy waits
    for (the contender against the served action, models.safe.observed) gathered at most 28 decisions in 26
    weeks of the closed loop."""
    valid = arms != -2
    even = valid / np.maximum(valid.sum(axis=1, keepdims=True), 1)
    if contender is None or share is None:
        return even
    mine, rest = valid & contender, valid & ~contender
    n_mine, n_rest = mine.sum(axis=1, keepdims=True), rest.sum(axis=1, keepdims=True)
    both = (n_mine > 0) & (n_rest > 0)
    split = share * mine / np.maximum(n_mine, 1) + (1.0 - share) * rest / np.maximum(n_rest, 1)
    return np.where(both, split, even)


def contender_arms(arms: np.ndarray, contenders: np.ndarray) -> np.ndarray:
    """(n, k) True where an experiment arm other than the served action (column 0) is one of the account's
    `contenders` (n, m) actions: an arm `designed_arms` added for it, or the variant it already was."""
    mine = np.zeros(arms.shape, dtype=bool)
    for col in np.asarray(contenders, dtype=np.int64).T:
        mine[:, 1:] |= (arms[:, 1:] == col[:, None]) & (col[:, None] >= 0)
    return mine & (arms != arms[:, :1])


def _explore(served: np.ndarray, arms: np.ndarray, u: np.ndarray, v: np.ndarray, eps: float,
             challenger: np.ndarray | None = None, share: float = 0.0, chances: np.ndarray | None = None):
    """With probability `eps` one of the account's experiment arms (`designed_arms`), drawn by `v` with the
    arms' `chances` (`arm_chances`; default every arm alike); else,
    with probability `share`, the account's `challenger` action where it has one other than the served action
    (champion/challenger: the strategy the evidence has not yet adopted, served to a random share of the
    accounts so the comparison gets data fast); else the served action. Returns the flat index, the
    probability the policy gave the action it took, whether it was drawn for an experiment, and whether it is
    the challenger's, and the whole distribution: (n, m) flat actions (-2 pads) and the chance of each (an
    action may appear more than once: its chance is the sum)."""
    valid = arms != -2
    q = arm_chances(arms) if chances is None else chances
    edge = np.cumsum(q, axis=1)
    drawn = arms[np.arange(len(arms)), (edge > (v * edge[:, -1])[:, None]).argmax(axis=1)]
    explored = u < eps
    rival = served if challenger is None else challenger
    c = np.where((rival >= 0) & (rival != served), share, 0.0)  # no challenger, or the same action: 0
    challenged = ~explored & (u < eps + (1.0 - eps) * c)
    chosen = np.where(explored, drawn, np.where(challenged, rival, served))
    in_arms = np.where(valid & (arms == chosen[:, None]), q, 0.0).sum(axis=1)
    propensity = eps * in_arms + (1.0 - eps) * ((1.0 - c) * (chosen == served) + c * (chosen == rival))
    support = (np.column_stack([np.where(valid, arms, -2), served, rival]),
               np.column_stack([np.where(valid, eps * q, 0.0), (1.0 - eps) * (1.0 - c), (1.0 - eps) * c]))
    return chosen, propensity, explored, challenged, support


def choose(gain: np.ndarray, stake: np.ndarray, channel_allowed: np.ndarray, arm_allowed: np.ndarray,
           config: PolicyConfig, u: np.ndarray, v: np.ndarray, eps: float, safe: SafePolicy | None = None,
           prefs: np.ndarray | None = None) -> Choice:
    """The highest expected value among allowed actions (no contact when nothing beats it), explored
    with probability `eps` using the account's own uniforms `u` and `v`. With a `safe` policy the greedy
    action replaces its baseline (per account the first allowed of `prefs`, the playbook's actions, when
    given) only where it beats it by the validated margin (models.safe)."""
    shape = gain.shape
    value = action_values(gain, stake, channel_allowed, arm_allowed, config)
    greedy, departed = _safe_greedy(value, safe, prefs)
    contenders = _contenders(value, safe) if eps > 0 else None
    arms = designed_arms(greedy, value, config, contenders) if contenders is not None else greedy[:, None]
    challenger = contenders[:, 0] if contenders is not None and config.challenger > 0 else None
    chances = None if contenders is None or config.contenders is None else arm_chances(
        arms, contender_arms(arms, contenders), config.contenders)
    flat, propensity, explored, challenged, support = _explore(greedy, arms, u, v, eps, challenger,
                                                               config.challenger, chances)
    no_phone = channel_allowed.copy()
    no_phone[:, vocab.CONTACT_CHANNELS.index("phone")] = False
    alt_value = action_values(gain, stake, no_phone, arm_allowed, config)
    return Choice(*_unflatten(flat, value, gain, shape), propensity=propensity, explored=explored,
                  alt=tuple(_unflatten(_safe_greedy(alt_value, safe, prefs)[0], alt_value, gain, shape)),
                  departed=departed, challenged=challenged, support=support)


def _contenders(value: np.ndarray, safe: SafePolicy | None) -> np.ndarray:
    """(n, 2) what could replace each account's served action, for its experiment: the learned best single
    action the safe policy has not yet adopted (the first of its ranking the rules allow; models.safe
    `contender`) and the response model's own best action (the departure the margin waits to certify)."""
    contender = np.full(len(value), -1) if safe is None or not safe.contender else \
        SafePolicy(ranking=safe.contender).base(value)
    return np.column_stack([contender, greedy(value)])


def _safe_greedy(value: np.ndarray, safe: SafePolicy | None, prefs: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """The greedy action, or with a safe policy the baseline unless the greedy action beats it by the margin."""
    best = greedy(value)
    return (best, None) if safe is None else safe.apply(value, best, prefs)


def _unflatten(flat: np.ndarray, value: np.ndarray, gain: np.ndarray, shape: tuple[int, ...]):
    """(channel, window, arm, gain, value) arrays of flat action indices, no contact as -1 and zeros."""
    n, rows = len(flat), np.arange(len(flat))
    safe = np.maximum(flat, 0)
    channel, rest = np.divmod(safe, shape[2] * shape[3])
    window, arm = np.divmod(rest, shape[3])
    contact = flat >= 0
    g = np.where(contact, gain.reshape(n, -1)[rows, safe] if n else 0.0, 0.0)
    val = np.where(contact, value[rows, safe] if n else 0.0, 0.0)
    return (np.where(contact, channel, -1), np.where(contact, window, -1), np.where(contact, arm, -1), g, val)


def capacity_keep(is_call: np.ndarray, rank: np.ndarray, capacity: int | None) -> np.ndarray:
    """Which proposed calls keep their call when only `capacity` fit in the day: the highest `rank` first
    (`call_rank`: what a call adds over the account's best other action, or the stake while the models'
    values are not trusted), ties in the rows' order. None means unlimited."""
    keep = is_call.copy()
    if capacity is None or is_call.sum() <= capacity:
        return keep
    calls = np.flatnonzero(is_call)
    order = calls[np.argsort(-rank[calls], kind="stable")]
    keep[order[capacity:]] = False
    return keep


def call_rank(value: np.ndarray, alt_value: np.ndarray, priority: np.ndarray, trusted: bool) -> np.ndarray:
    """What the day's calls are rationed by: the value a call adds over the account's best other action when
    the models' values are trusted (the safe policy departs from its baseline), else the account's stake
    (priority): a team following its playbook calls the biggest stakes first, not the ones untrusted
    estimates favour."""
    return np.asarray(value - alt_value if trusted else priority, dtype=float)


def marginal_call_value(is_call: np.ndarray, value: np.ndarray, alt_value: np.ndarray, capacity: int | None,
                        calls_per_hour: float) -> float:
    """What one more collector-hour would add: the value of the next `calls_per_hour` calls past capacity."""
    if capacity is None:
        return 0.0
    extra = np.sort((value - alt_value)[is_call])[::-1][capacity:capacity + int(round(calls_per_hour))]
    return float(np.clip(extra, 0, None).sum())


def channel_tiers(channel: np.ndarray) -> np.ndarray:
    """The tier each channel alone gives (no hold, no review): a call this week, a digital reminder, a letter
    or no contact. `tiers` starts from it; the capacity step re-tiers the calls it moves with it."""
    out = np.full(len(channel), vocab.NO_CONTACT, dtype=object)
    out[np.isin(channel, ["sms", "email", "ivr"])] = vocab.DIGITAL_REMINDER
    out[channel == "letter"] = vocab.LETTER
    out[channel == "phone"] = vocab.CALL_THIS_WEEK
    return out


def tiers(channel: np.ndarray, held_by: list[list[str]], require_human: np.ndarray, suppress_all: np.ndarray,
          starts_today: np.ndarray, value: np.ndarray, config: PolicyConfig) -> np.ndarray:
    """The tier a collector reads at a glance; holds and human review come before any contact tier."""
    out = channel_tiers(channel)
    phone = channel == "phone"
    out[phone & starts_today & (value >= config.call_today_min_value)] = vocab.CALL_TODAY
    promise = np.array(["R-PROMISE" in ids for ids in held_by], dtype=bool)
    legal = np.array([any(r in ids for r in LEGAL_HOLDS) for ids in held_by], dtype=bool)
    out[suppress_all & promise] = vocab.HOLD_PROMISE
    out[require_human] = vocab.HUMAN_REVIEW
    out[legal] = vocab.HOLD_LEGAL
    return out


def priority(cure_probability: np.ndarray, arrears: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Orders the work queue: money at risk if nothing is done, plus what the chosen action adds."""
    return np.round((1.0 - cure_probability) * arrears + np.maximum(value, 0.0), 2)
