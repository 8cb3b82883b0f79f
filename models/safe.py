"""Safe policy improvement: depart from a baseline only where held-out evidence says the departure pays.

The response model's argmax is a noisy estimate: on a portfolio whose logs are mostly business as usual,
or whose customers respond in ways the model's structure does not capture, following it can lose money
against one fixed action for everyone. So the decision is made in two steps (Thomas et al. 2015, "High
confidence policy improvement"; the doubly robust scores of Dudik et al. 2011):

1. **Baseline**: the team's playbook (`policy.playbook`, models.playbook: staged by days past due, each
   step's channels in order of preference), which is also the day-one policy. With `policy.baseline: auto`
   the best single action for everyone (by its doubly robust value on the randomised decisions) replaces
   the playbook where its estimated improvement over the playbook (`policy.safe.baseline_z` standard
   errors below the mean, default 0: the better of the two by its estimate) is above zero; an account whose
   rules forbid that action gets the next best of the `ranking` (every contact action whose estimate beats
   no contact, best first) that they allow, else no contact. `policy.baseline: {channel, window, offer}`
   names one fixed action instead.
2. **Departure margin**: an account gets the model's best action instead of the baseline only when the
   model expects it to be worth at least `margin` more (JPY). The margin is chosen on decisions the
   response model never saw (the held-out, randomised ones): for each candidate margin, the doubly robust
   estimate of (policy - baseline) and its standard error; the margin with the highest lower confidence
   bound wins, and when no lower bound is above zero the margin is infinite: the policy is its baseline.

Both tests count only with enough **observed** departures (`observed`): decisions where the log took the
action the policy departs to. Elsewhere the doubly robust score of a departure is the model's own value
(no residual corrects it), so a bound on departures no experiment ever drew measures how much the model's
values vary, not how wrong they are (positivity): a response model fitted on 199 decisions, 30 points too
high on held-out contacts, once "certified" a single action none of 318 decisions had taken, +3,900 JPY a
decision at the lower bound, and served weeks 5 to 25 at 0.70x the playbook (docs/benchmarks.md, closed loop).

The margin's test reads the departures' side on outcomes alone (`ipw_matrix`): where the log could not have
taken a departure's action (positivity fails), its doubly robust score is the model's own value even when
enough other decisions took it to pass the count; the outcome-only score counts it as worth no more than no
contact. The learned baseline's test stays on doubly robust scores (measured both ways, docs/models.md).

Pure numpy: `dr_matrix` turns logged decisions and the model's values into per-decision, per-action doubly
robust scores; `best_single` and `select_margin` read them; `SafePolicy.apply` is what `policy.choose` calls.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from models.playbook import Playbook

NO_CONTACT = -1


def worth(value: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Each account's value of its action (flat indices into `value`'s columns; no contact is worth 0)."""
    if not value.shape[1]:
        return np.zeros(len(value))
    return np.where(action >= 0, value[np.arange(len(value)), np.maximum(action, 0)], 0.0)


@dataclass(frozen=True)
class SafePolicy:
    """The baseline: the team's playbook (staged by days past due), or one action for everyone (a flat index
    of policy.action_values' layout; -1 = no contact) with what stands in where the rules forbid it (the
    `ranking`, else the `fallback`); the margin in money a departure must beat it by (inf: never depart),
    and the evidence both were chosen on."""

    baseline: int = NO_CONTACT
    margin: float = math.inf
    evidence: dict = field(default_factory=dict)
    fallback: int = NO_CONTACT  # bundles before the ranking: one stand-in, where the baseline's is forbidden
    playbook: Playbook | None = None  # when set, the baseline is the playbook's step (the others unused)
    ranking: tuple[int, ...] = ()  # the learned baseline: actions best first (`ranking`); its first is `baseline`
    contender: tuple[int, ...] = ()  # the learned ranking the evidence has not yet adopted: an experiment arm
    segment_by: str = ""  # the learned baseline by segment: the feature whose level picks an account's ranking
    segments: tuple[tuple[float, tuple[int, ...]], ...] = ()  # (level, its ranking); other levels: `ranking`

    def preferences(self, days_past_due: np.ndarray, arrears_instalments: np.ndarray,
                    windows: tuple[str, ...], segment: np.ndarray | None = None) -> np.ndarray:
        """(n, k) baseline actions per account in order of preference (-1 pads). `segment`: each account's
        level of `segment_by` (needed when the baseline has `segments`; missing, everyone gets `ranking`)."""
        if self.playbook is not None:
            return self.playbook.preferences(days_past_due, arrears_instalments, windows)
        if self.segments and segment is not None:
            return segmented(self.ranking, self.segments, np.asarray(segment, dtype=np.float64))
        return self._fixed(len(days_past_due))

    def preferences_of(self, columns, windows: tuple[str, ...]) -> np.ndarray:
        """`preferences` of accounts or logged decisions given as named columns (a frame, or a dict of arrays:
        days_past_due, arrears_instalments and, for a baseline by segment, its `segment_by`)."""
        segment = columns[self.segment_by] if self.segments and self.segment_by in columns else None
        return self.preferences(np.asarray(columns["days_past_due"], dtype=np.float64),
                                np.asarray(columns["arrears_instalments"], dtype=np.float64), windows,
                                None if segment is None else np.asarray(segment, dtype=np.float64))

    def _fixed(self, n: int) -> np.ndarray:
        """(n, k) the same order of preference for everyone: the ranking, else the baseline and its fallback."""
        order = list(self.ranking) or [self.baseline, self.fallback]
        return np.tile(np.array([order], dtype=np.int64), (n, 1))

    def base(self, value: np.ndarray, prefs: np.ndarray | None = None) -> np.ndarray:
        """Per account the first of its baseline actions (`prefs`, default the ranking, or the baseline then
        the fallback) that no rule (nor the day's call capacity) forbids, else no contact."""
        if prefs is None:
            prefs = self._fixed(len(value))
        if not value.shape[1] or not prefs.shape[1]:
            return np.full(len(value), NO_CONTACT)
        ok = (prefs >= 0) & np.isfinite(value[np.arange(len(value))[:, None], np.maximum(prefs, 0)])
        first = ok.argmax(axis=1)  # the first preference wins where several are allowed
        return np.where(ok.any(axis=1), prefs[np.arange(len(prefs)), first], NO_CONTACT)

    def apply(self, value: np.ndarray, greedy: np.ndarray, prefs: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(chosen flat index, departed) per account: the greedy action where its value beats the baseline's
        by more than the margin, else the baseline (`base`)."""
        base = self.base(value, prefs)
        depart = (greedy != base) & (worth(value, greedy) - worth(value, base) > self.margin)
        return np.where(depart, greedy, base), depart


def dr_matrix(value: np.ndarray, taken: np.ndarray, propensity: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """(decisions, actions + 1) doubly robust score of every action for every logged decision.

    `value`: (n, actions + 1) the model's expected money of each action against no contact (the last
    column, no contact, is 0); `taken`: the logged action's column; `propensity`: its logged probability;
    `reward`: realised money against the model's no-contact expectation (paid x stake - cost - q0 x stake).
    score[i, a] = value[i, a] + 1{taken_i = a} (reward_i - value[i, a]) / propensity_i.
    """
    n = len(value)
    out = value.astype(np.float64).copy()
    rows = np.arange(n)
    out[rows, taken] += (reward - value[rows, taken]) / propensity
    return out


def ipw_matrix(value: np.ndarray, taken: np.ndarray, propensity: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """(decisions, actions + 1) the outcome-only (inverse propensity) score of every action for every logged
    decision: reward / propensity on the action the log took, 0 on every other (`value` gives the shape).

    What a departure's side of the margin's test reads (`select_margin`, `lower_bound`). A doubly
    robust score is unbiased only where the log could have taken the action (positivity); where it could not
    (an action none of the decision's experiment arms held, which is most actions when the experiments vary the
    served action one factor at a time) it is the model's own value, and a test on it certifies the model's
    opinion: measured in the closed loop, a margin certified at +5,500 JPY a decision at its lower bound on 751
    held-out decisions, of which 49 took the departures' actions, served 0.69x the playbook's true value. The
    outcome-only score is unbiased where the action was possible and counts an action that was not as worth no
    more than no contact (the reward is net of the no-contact chance): pessimistic, never the model's word."""
    out = np.zeros(value.shape, dtype=np.float64)
    out[np.arange(len(value)), taken] = reward / propensity
    return out


def action_design(actions: list[tuple[str, str, str]]) -> np.ndarray:
    """(actions, k) indicator design of the contact actions: an intercept, each channel, window and offer,
    and each channel x offer (what shares strength between the 40 actions' estimates)."""
    cols = []
    for part in (lambda a: a[0], lambda a: a[1], lambda a: a[2], lambda a: (a[0], a[2])):
        levels = sorted({part(a) for a in actions}, key=str)
        cols += [[float(part(a) == level) for a in actions] for level in levels[1:]]
    return np.column_stack([np.ones(len(actions)), *cols]) if cols else np.ones((len(actions), 1))


def ranking(estimates: np.ndarray) -> tuple[int, ...]:
    """The contact actions whose estimate (`best_single`'s) beats no contact, best first: the best single
    action for everyone, then what stands in for it where the rules forbid it (a customer without consent
    to texts gets the best action that is not a text; one past the reminder stage, the best arrangement).

    Measured with the truth (20,000 training accounts, 15% randomised, 4 presets x 2 seeds, docs/benchmarks.md):
    one stand-in on another channel gave 0.63 to 1.16x the best single action in hindsight; the whole ranking
    0.88 to 1.18x, since the offer a stage allows, not only the channel, decides what an account may get."""
    order = np.argsort(-np.asarray(estimates, dtype=float), kind="stable")
    return tuple(int(a) for a in order if estimates[a] > 0)


def segmented(ranking_all: tuple[int, ...], segments: tuple[tuple[float, tuple[int, ...]], ...],
              segment: np.ndarray) -> np.ndarray:
    """(n, k) each account's ranking: its segment's where it has one, else `ranking_all` (-1 pads)."""
    width = max([len(ranking_all), *(len(r) for _, r in segments), 1])

    def row(order: tuple[int, ...]) -> np.ndarray:
        return np.array(list(order) + [NO_CONTACT] * (width - len(order)), dtype=np.int64)

    out = np.tile(row(ranking_all), (len(segment), 1))
    for level, order in segments:
        out[segment == level] = row(order)
    return out


def reach_ratios(segment: np.ndarray, taken: np.ndarray, reached: np.ndarray,
                 actions: list[tuple[str, str, str]], prior: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Per level of `segment` (the levels, sorted) and contact action: the level's reach of the action's
    channel x window over everyone's, from the logged contacts (`taken`: flat actions, no contact at
    `len(actions)`; `reached`: whether each attempt reached the customer), each level's rate shrunk toward
    everyone's by `prior` attempts (a level with few attempts of a channel and window reads near 1).

    What it stands for: an attempt that does not reach the customer does little, so where an action's effect
    differs between lifestyles it is mostly by how often it reaches them (a shift worker answers calls in the
    evening, a retiree in the morning); the effect once reached is shared. Reach is seen on every attempt,
    a payment within days is a rarer and noisier outcome: on `lease` at 20,000 accounts one ranking per
    lifestyle read on payments alone was worth 0.89 to 1.03x the best single action, the same rankings
    scaled by reach 1.62x (docs/models.md). Whether it holds is tested (`honest_segments`), not assumed."""
    segment = np.asarray(segment, dtype=np.float64)
    levels = np.unique(segment[np.isfinite(segment)])
    contact = (np.asarray(taken) >= 0) & (np.asarray(taken) < len(actions))
    hit = np.asarray(reached, dtype=np.float64)
    contact &= np.isfinite(hit)
    keys = sorted({(c, w) for c, w, _ in actions})
    key_of = {k: i for i, k in enumerate(keys)}
    action_key = np.array([key_of[(c, w)] for c, w, _ in actions])
    key = action_key[np.where(contact, taken, 0)]
    tries = np.bincount(key[contact], minlength=len(keys)).astype(float)
    hits = np.bincount(key[contact], weights=hit[contact], minlength=len(keys))
    overall = hits / np.maximum(tries, 1.0)
    ratios = np.ones((len(levels), len(actions)))
    for i, level in enumerate(levels):
        mine = contact & (segment == level)
        k = np.bincount(key[mine], minlength=len(keys)).astype(float)
        h = np.bincount(key[mine], weights=hit[mine], minlength=len(keys))
        rate = (h + prior * overall) / (k + prior)
        ratios[i] = np.where(overall > 0, rate / np.maximum(overall, 1e-12), 1.0)[action_key]
    return levels, ratios


def segment_rankings(means: np.ndarray, levels: np.ndarray, ratios: np.ndarray
                     ) -> tuple[tuple[float, tuple[int, ...]], ...]:
    """Each level's ranking: everyone's estimates (`best_single`'s means) scaled by the level's reach ratios."""
    return tuple((float(level), ranking(means * ratio)) for level, ratio in zip(levels, ratios, strict=True))


def honest_segments(scores: np.ndarray, allowed: np.ndarray, design: np.ndarray | None, current: np.ndarray,
                    value: np.ndarray, fold: np.ndarray, z: float, taken: np.ndarray, propensity: np.ndarray,
                    segment: np.ndarray, reached: np.ndarray, actions: list[tuple[str, str, str]],
                    supported: np.ndarray | None = None, z_one: float | None = None) -> dict[str, dict]:
    """Cross-fitted, as `honest_improvement`: the improvement of a ranking per segment (`segment_rankings`,
    learned on the other folds) over `current` ("current", lower bound at `z`) and over the one ranking
    learned on the same folds ("one ranking", at `z_one`, default `z`), each with its standard error, lower
    bound, and observed and effective counts."""
    by_segment, one = np.full(len(scores), NO_CONTACT), np.full(len(scores), NO_CONTACT)
    segment = np.asarray(segment, dtype=np.float64)
    folds = np.unique(fold)
    for k in folds:
        test = fold == k
        _, means = best_single(scores[~test], allowed[~test], design, None if supported is None else supported[~test])
        levels, ratios = reach_ratios(segment[~test], taken[~test], reached[~test], actions)
        order = ranking(means)
        prefs = segmented(order, segment_rankings(means, levels, ratios), segment[test])
        one[test], by_segment[test] = (SafePolicy(ranking=order).base(value[test], p) for p in (None, prefs))
    return {name: _judged(scores, by_segment, against, bound, taken, propensity, supported, len(folds))
            for name, against, bound in (("current", current, z), ("one ranking", one, z if z_one is None else z_one))}


def _judged(scores: np.ndarray, chosen: np.ndarray, current: np.ndarray, z: float, taken: np.ndarray,
            propensity: np.ndarray | None, supported: np.ndarray | None, folds: int) -> dict:
    """The cross-fitted improvement of `chosen` over `current` on the decisions where both had a chance."""
    d = _improvement(scores, chosen, current)
    keep = _both_supported(scores, chosen, current, supported)
    out = _bound(d[keep], z)
    if folds < 2:  # no decision was judged out of fold: nothing is known of the improvement's spread
        out.update(se=math.inf, lcb=out["improvement"] - z * math.inf)
    out.update(observed=observed(scores[keep], chosen[keep], current[keep], taken[keep]), folds=int(folds),
               unsupported=int((~keep).sum()))
    if propensity is not None:
        out["effective"] = round(effective(scores[keep], chosen[keep], current[keep], taken[keep],
                                           propensity[keep]), 1)
    return out


def _both_supported(scores: np.ndarray, chosen: np.ndarray, current: np.ndarray,
                    supported: np.ndarray | None) -> np.ndarray:
    """The decisions where the log gave both `chosen`'s and `current`'s action a chance (all without `supported`)."""
    if supported is None:
        return np.ones(len(scores), dtype=bool)
    rows = np.arange(len(scores))
    return supported[rows, _column(chosen, scores)] & supported[rows, _column(current, scores)]


def best_single(scores: np.ndarray, allowed: np.ndarray, design: np.ndarray | None = None,
                supported: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """The contact action (column) whose policy "this action where allowed, else no contact" has the
    highest doubly robust value; returns it (-1 when none beats no contact) and every action's estimate.

    Each action's own mean rests on the few decisions that drew it (about 1 in 40), so with a `design`
    (action_design) the means are smoothed by weighted least squares on channel, window, offer and
    channel x offer effects (weights 1 / variance): the winner is not the luckiest of 40 noisy means.
    `supported` (decisions, actions + 1): where the logging policy gave the action a chance; an action's mean
    is then taken only where it had one (elsewhere its score is the response model's opinion alone)."""
    none = scores[:, -1:]
    per = np.where(allowed[:, :-1], scores[:, :-1], none) - none
    if supported is None:
        means, count = per.mean(axis=0), np.full(per.shape[1], len(per))
    else:
        keep = ~allowed[:, :-1] | supported[:, :-1]
        count = keep.sum(axis=0)
        means = np.where(keep, per, 0.0).sum(axis=0) / np.maximum(count, 1)
    if design is not None and len(per) > 1:
        spread = (per.var(axis=0, ddof=1) if supported is None else
                  np.where(keep, (per - means) ** 2, 0.0).sum(axis=0) / np.maximum(count - 1, 1))
        w = np.where(count > 1, 1.0 / np.maximum(spread / np.maximum(count, 1), 1e-12), 0.0)
        coef = np.linalg.lstsq(design * np.sqrt(w)[:, None], means * np.sqrt(w), rcond=None)[0]
        means = design @ coef
    best = int(means.argmax()) if len(means) else NO_CONTACT
    return (best if len(means) and means[best] > 0 else NO_CONTACT), means


def per_unit(scores: np.ndarray, stake: np.ndarray) -> np.ndarray:
    """Doubly robust scores per unit of each decision's arrears: the share of the arrears an action is worth.

    Arrears span two orders of magnitude, so a money score's spread is mostly the largest stakes' luck;
    which single action is best for everyone is read on shares, where every decision weighs alike (measured
    with the truth on 10 cells: docs/models.md, the safe policy)."""
    return scores / np.maximum(np.asarray(stake, dtype=np.float64), 1e-9)[:, None]


@dataclass(frozen=True)
class Pooled:
    """What the pooled test reads (`honest_improvement` with `pooled`): per logged decision, the model's share of
    the arrears each action is worth against no contact (`value`, (n, actions + 1), no contact last at 0, 0
    where a rule forbids) and the residual of the action taken (`residual`: the outcome less the model's chance
    of it, a share of the arrears); per action column its `group` (an integer: the channel, no contact its own).

    Why: a test that reads each decision's own residual, weighted by 1 / propensity, rests on the few decisions
    whose experiment drew exactly the two actions compared (about 1 in 40 each): at 5% randomised decisions and
    20,000 accounts its standard error (0.06 to 0.08 of the arrears) is larger than the difference between a
    good and a bad baseline, and it chose wrongly in 5 of 12 cells measured with the truth (docs/models.md).
    The pooled test reads the model's difference on every decision, corrected by the mean residual of each
    group of actions (what every decision that took an action of the group says of the model's error there)."""

    value: np.ndarray
    residual: np.ndarray
    taken: np.ndarray
    group: np.ndarray
    pick: bool = True  # the pick reads it too (`pooled_scores`); False: the pick reads the doubly robust scores


def pooled_scores(pooled: Pooled, rows: np.ndarray) -> np.ndarray:
    """(n, actions + 1) each decision's worth of every action as the pooled test reads it: the model's share of
    the arrears plus the mean residual of the action's group over the decisions `rows` (a mask) that took an
    action of the group (0 where fewer than two did: the model's word alone). What the learned baseline is
    picked on when `pooled.pick`: a mean of doubly robust scores rests on the few decisions that drew the action,
    and in the closed loop (`mature`, week 17) it put a call with a plan on top (-0.060 of the arrears by the
    pooled test) a week after a letter for everyone had passed at +0.110, so the playbook came back."""
    groups = int(pooled.group.max()) + 1
    took = pooled.group[pooled.taken[rows]]
    total = np.bincount(took, weights=pooled.residual[rows], minlength=groups)
    count = np.bincount(took, minlength=groups)
    mean = np.where(count >= 2, total / np.maximum(count, 1), 0.0)
    return pooled.value + mean[pooled.group][None, :]


def pooled_bound(pooled: Pooled, chosen: np.ndarray, current: np.ndarray, fold: np.ndarray, keep: np.ndarray,
                 z: float) -> dict:
    """The improvement of `chosen` over `current` per decision, read fold by fold on the decisions `keep` holds:
    the model's difference (mean over the fold) plus, for each group of actions, the change in the share of
    decisions the two give that group times the group's mean residual in the fold. Its standard error adds the
    model part's and each group's (weights squared); infinite when a group that counts has fewer than two
    decisions to read its residual on. Unbiased where the model's error is the same within a group (across its
    actions and accounts); biased where it is not, by the error's spread within the group."""
    total, variance, count = 0.0, 0.0, 0
    groups = int(pooled.group.max()) + 1
    for k in np.unique(fold):
        rows = np.flatnonzero((fold == k) & keep)
        n = len(rows)
        if n < 2:
            continue
        c, b = _column(chosen[rows], pooled.value), _column(current[rows], pooled.value)
        diff = pooled.value[rows, c] - pooled.value[rows, b]
        est, var = float(diff.mean()), float(diff.var(ddof=1)) / n
        weight = (np.bincount(pooled.group[c], minlength=groups)
                  - np.bincount(pooled.group[b], minlength=groups)) / n
        took, residuals = pooled.group[pooled.taken[rows]], pooled.residual[rows]
        for g in np.flatnonzero(weight):
            residual = residuals[took == g]
            if len(residual) < 2:
                var = math.inf
                continue
            est += weight[g] * float(residual.mean())
            var += weight[g] ** 2 * float(residual.var(ddof=1)) / len(residual)
        total, variance, count = total + n * est, variance + n * n * var, count + n
    mean = total / count if count else 0.0
    se = math.sqrt(variance) / count if count else math.inf
    return {"improvement": mean, "se": se, "lcb": mean - z * se if math.isfinite(se) else -math.inf}


def honest_improvement(scores: np.ndarray, allowed: np.ndarray, design: np.ndarray | None, current: np.ndarray,
                       value: np.ndarray, fold: np.ndarray, z: float, taken: np.ndarray,
                       propensity: np.ndarray | None = None, supported: np.ndarray | None = None,
                       pooled: Pooled | None = None) -> dict:
    """The improvement of the learned baseline (`ranking` of `best_single`) over `current`, per decision, its
    standard error, lower bound (mean - z x se) and `observed` count (with `propensity`, also `effective`: that
    count by weight), where each fold's decisions are judged by the ranking learned on the other folds.
    Judged on the decisions it was picked on, the best of 40 estimates looks better than it is (the winner's
    curse): on `lease`, where the playbook is as good as the best single action, the in-sample estimate
    favoured a worse action in 3 of 6 cells, the cross-fitted one in none (docs/models.md). `value` (n, actions)
    is -inf where a rule forbids; `fold` assigns each decision.

    `supported` (n, actions + 1), where the decision's logging policy gave each action a chance (the decision
    log's `support`): a decision where the two differ and either action had none is left out (`unsupported`
    counts them). There a doubly robust score is the response model's opinion, which no outcome can correct:
    in the closed loop on `lease` that opinion, on decisions whose experiments never drew the pick, made a
    worse baseline look +0.118 of the arrears better (docs/models.md).

    With `pooled` the improvement is read by `pooled_bound` (the model's difference on every decision, its
    error corrected per group of actions) instead of each decision's own doubly robust scores; the counts
    (`observed`, `effective`, `unsupported`) are the same; with `pooled.pick` each fold's pick reads
    `pooled_scores` of the other folds too."""
    chosen = np.full(len(scores), NO_CONTACT)
    folds = np.unique(fold)
    for k in folds:
        test = fold == k
        basis = scores if pooled is None or not pooled.pick else pooled_scores(pooled, ~test)
        _, means = best_single(basis[~test], allowed[~test], design,
                               None if supported is None else supported[~test])
        chosen[test] = SafePolicy(ranking=ranking(means)).base(value[test])
    out = _judged(scores, chosen, current, z, taken, propensity, supported, len(folds))
    if pooled is not None:
        keep = _both_supported(scores, chosen, current, supported)
        out["decision_by_decision"] = {k: out[k] for k in ("improvement", "se", "lcb")}
        out.update(pooled_bound(pooled, chosen, current, fold, keep, z), read="pooled")
        if len(folds) < 2:
            out.update(se=math.inf, lcb=out["improvement"] - z * math.inf)
    return out


def lower_bound(scores: np.ndarray, chosen: np.ndarray, base: np.ndarray, z: float,
                taken: np.ndarray | None = None, outcomes: np.ndarray | None = None,
                propensity: np.ndarray | None = None) -> dict:
    """The improvement of `chosen` over `base` per decision, its standard error and its one-sided lower
    confidence bound (mean - z x se): where the two differ, `chosen` read on `outcomes` (`ipw_matrix`; default
    `scores`, doubly robust) less `base` read on `scores`. With `taken` (each decision's logged column of
    `scores`), also `observed`: the decisions where `chosen` departs from `base` and the log took `chosen`;
    with their `propensity` too, `effective`: that count by weight (`effective`)."""
    out = _bound(_improvement(scores, chosen, base, outcomes), z)
    if taken is not None:
        out["observed"] = observed(scores, chosen, base, taken)
        if propensity is not None:
            out["effective"] = round(effective(scores, chosen, base, taken, propensity), 1)
    return out


def _bound(d: np.ndarray, z: float) -> dict:
    """Per-decision improvements `d`: their mean, its standard error and the lower bound mean - z x se."""
    mean = float(d.mean()) if len(d) else 0.0
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else math.inf
    return {"improvement": mean, "se": se, "lcb": mean - z * se}


def _column(action: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Flat actions as columns of `scores`: no contact (-1) is the last column."""
    return np.where(action >= 0, action, scores.shape[1] - 1)


def _took(scores: np.ndarray, chosen: np.ndarray, base: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Per decision: `chosen` departs from `base` and the log took `chosen`."""
    c = _column(chosen, scores)
    return (c != _column(base, scores)) & (c == np.asarray(taken))


def observed(scores: np.ndarray, chosen: np.ndarray, base: np.ndarray, taken: np.ndarray) -> int:
    """How many decisions depart (`chosen` is not `base`) with the departure's action logged: the only ones
    whose outcome says anything of the departure. Elsewhere a departure's doubly robust score is the
    model's own value, with no residual, so its spread says nothing of the model's error: a bound on
    departures the logs never took (an action no experiment drew) certifies the model's opinion."""
    return int(_took(scores, chosen, base, taken).sum())


def effective(scores: np.ndarray, chosen: np.ndarray, base: np.ndarray, taken: np.ndarray,
              propensity: np.ndarray) -> float:
    """The observed departures (`observed`) counted by their weight: Kish's effective sample size
    (sum w)^2 / sum w^2 of their inverse propensities w = 1 / p. Equal to the count when every departure
    was equally likely (a uniform experiment); far below it when a few rare draws carry the estimate: in the
    closed loop a margin was certified (lower bound +49 JPY a decision) on 49 observed departures, most drawn
    as the challenger (p about 0.19) and a few as one arm of twelve in a 5% experiment (p about 0.004,
    weight 240), whose lucky payments made the mean; it served 0.69x the playbook that week."""
    w = 1.0 / np.asarray(propensity, dtype=np.float64)[_took(scores, chosen, base, taken)]
    return float(w.sum() ** 2 / (w ** 2).sum()) if len(w) else 0.0


def _improvement(scores: np.ndarray, chosen: np.ndarray, base: np.ndarray,
                 outcomes: np.ndarray | None = None) -> np.ndarray:
    """Per decision, `chosen`'s score (on `outcomes` when given) less `base`'s; 0 where they are the same."""
    rows = np.arange(len(scores))
    c, b = _column(chosen, scores), _column(base, scores)
    gain = (scores if outcomes is None else outcomes)[rows, c] - scores[rows, b]
    return np.where(c != b, gain, 0.0)


def select_margin(scores: np.ndarray, value: np.ndarray, greedy: np.ndarray, baseline: SafePolicy, z: float,
                  min_departures: int = 30, prefs: np.ndarray | None = None,
                  taken: np.ndarray | None = None, outcomes: np.ndarray | None = None,
                  propensity: np.ndarray | None = None) -> tuple[float, list[dict]]:
    """The departure margin with the highest lower confidence bound of (policy - baseline), on held-out
    decisions; infinite when no bound is above zero. `value` (n, actions) is -inf where a rule forbids,
    `greedy` the model's best action (-1: no contact). Candidate margins: 0 and the deciles of the
    model's positive edges; a margin leaving fewer than `min_departures` departures is not tried, nor, with
    `taken` (each decision's logged column of `scores`), one with fewer than `min_departures` departures
    the log took (`observed`): without them the bound rests on the model's values alone. `baseline` is the
    policy departed from (its margin unused); `prefs` (per decision, its actions in order of preference:
    `SafePolicy.preferences`) is required for a playbook, whose order depends on each decision's stage;
    `outcomes` (`ipw_matrix`) is what the departures are read on (`lower_bound`); with each decision's logged
    `propensity`, the observed departures are counted by weight (`effective`)."""
    base = baseline.base(value, prefs)
    departing = greedy != base
    edge = worth(value, greedy) - worth(value, base)
    candidates = [0.0, *np.unique(np.quantile(edge[departing], np.linspace(0.1, 0.9, 9)))] if departing.any() else []
    trials, best_margin, best_lcb = [], math.inf, 0.0
    for margin in candidates:
        chosen, go = dataclasses.replace(baseline, margin=float(margin)).apply(value, greedy, prefs)  # as served
        if go.sum() < min_departures:
            continue
        trial = {"margin": float(margin), "departures": int(go.sum()),
                 **lower_bound(scores, chosen, base, z, taken, outcomes, propensity)}
        trials.append(trial)
        if trial.get("effective", trial.get("observed", min_departures)) < min_departures:
            continue
        if trial["lcb"] > best_lcb:
            best_margin, best_lcb = float(margin), trial["lcb"]
    return best_margin, trials
