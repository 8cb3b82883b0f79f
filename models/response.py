"""Response to an action: how much each channel x window x offer raises the chance of a payment.

This first version is an arm table learned from the randomised experiments in the contact history:
for each lifestyle segment (employment) and each arm, the 7-day payment rate minus the hold-out's rate,
shrunk towards the arm's rate over all segments so thin cells do not swing the decision. Arms were
randomised among the allowed channels, so a plain mean per arm is unbiased within the experiment's
population; decisions without a logged propensity (business as usual) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models import vocab

ARM_OFFERS = ("reminder", "instalment_plan")


def template_offer(templates: pd.Series, prefixes: dict[str, str]) -> pd.Series:
    """The offer a logged template carried (templates start with a known prefix), else None."""
    out = pd.Series([None] * len(templates), index=templates.index, dtype=object)
    text = templates.astype(object).where(templates.notna(), "")
    for prefix, offer in sorted(prefixes.items(), key=lambda kv: -len(kv[0])):
        hit = text.map(lambda s, p=prefix: str(s).startswith(p)) & out.isna()
        out[hit] = offer
    return out


@dataclass
class ArmTable:
    """Per segment: rate with no contact, and lift per (channel, window, offer)."""

    windows: tuple[str, ...]
    p_none: np.ndarray      # (segments,)
    lift: np.ndarray        # (segments, channels, windows, offers)
    n: np.ndarray           # examples per cell, for reports

    def lookup(self, segment: np.ndarray) -> np.ndarray:
        """Lift array (accounts, channels, windows, offers) for each account's segment code."""
        return self.lift[np.clip(segment, 0, len(vocab.EMPLOYMENT) - 1)]


def fit_arm_table(examples: pd.DataFrame, windows: tuple[str, ...], prior: float = 50.0) -> ArmTable:
    """Learn the arm table from logged decisions: employment, channel, window, offer, label."""
    segs, chans = vocab.EMPLOYMENT, vocab.CONTACT_CHANNELS
    ex = examples
    seg = pd.Categorical(ex["employment"], categories=list(segs)).codes
    none = ex["channel"].to_numpy() == "none"
    overall_none = ex.loc[none, "label"].mean() if none.any() else 0.0
    p_none = np.array([_shrunk(ex["label"][none & (seg == s)], overall_none, prior) for s in range(len(segs))])
    lift = np.zeros((len(segs), len(chans), len(windows), len(ARM_OFFERS)))
    count = np.zeros_like(lift)
    for c, ch in enumerate(chans):
        for w, win in enumerate(windows):
            for o, off in enumerate(ARM_OFFERS):
                cell = ((ex["channel"].to_numpy() == ch) & (ex["window"].to_numpy() == win)
                        & (ex["offer"].to_numpy() == off))
                pooled = ex.loc[cell, "label"].mean() if cell.any() else overall_none
                for s in range(len(segs)):
                    rows = ex["label"][cell & (seg == s)]
                    lift[s, c, w, o] = _shrunk(rows, pooled, prior) - p_none[s]
                    count[s, c, w, o] = len(rows)
    return ArmTable(tuple(windows), p_none, lift, count)


def _shrunk(values: pd.Series, prior_mean: float, prior: float) -> float:
    return float((values.sum() + prior * prior_mean) / (len(values) + prior))
