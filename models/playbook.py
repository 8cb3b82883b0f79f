"""The team's playbook: staged escalation written in params.yaml, the policy of day one and the baseline after.

A collections team already has a rule ("SMS on day 1, a call from day 10, a letter from day 30, a plan from
two instalments behind"). cureflow starts from it: with no response model the queue is the playbook's,
and later the model may depart from it only where held-out evidence says the departure pays (models.safe).

params.yaml `policy.playbook` is a list of steps; an account follows the last step whose `from_days`
(days past due) and `min_arrears_instalments` (optional) it has reached:

    - {name: gentle reminder, from_days: 1, channels: [sms, email, letter], window: weekday_evening,
       offer: reminder}

`channels` is an order of preference: the first one the rules and the customer's consent allow is used
(the step's offer first, then the other offer on the same channel). `offer` is `reminder` or
`instalment_plan`; the staged offers (models.policy.staged_offer) still turn an arrangement into a
settlement or a hardship referral where they apply, and legal review is only ever for a person.

Pure functions of arrays; `preferences` returns flat action indices in models.policy.action_values' layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models import vocab

OFFERS = ("reminder", "instalment_plan")  # the arms of models.response.ARM_OFFERS, in their order


@dataclass(frozen=True)
class Step:
    """One stage of the escalation: from `from_days` days past due (and `min_arrears_instalments` behind)."""

    name: str
    from_days: float
    channels: tuple[str, ...]
    window: str
    offer: str
    min_arrears_instalments: float = 0.0

    def text(self) -> str:
        offer = self.offer.replace("_", " ")
        article = "an" if offer[0] in "aeiou" else "a"
        return (f"'{self.name}' ({' or '.join(self.channels)} on {self.window.replace('_', ' ')}s with "
                f"{article} {offer})")


@dataclass(frozen=True)
class Playbook:
    """The steps, ordered by how far into arrears they start."""

    steps: tuple[Step, ...]

    @classmethod
    def from_params(cls, steps: list[dict] | None, windows: tuple[str, ...]) -> Playbook | None:
        """params.yaml `policy.playbook` checked against the channels, windows and offers; None when absent."""
        if not steps:
            return None
        return cls(tuple(sorted((_step(i, raw, windows) for i, raw in enumerate(steps)),
                                key=lambda s: (s.from_days, s.min_arrears_instalments))))

    def step_of(self, days_past_due: np.ndarray, arrears_instalments: np.ndarray) -> np.ndarray:
        """Per account the index of its step (the last one reached), -1 before the first."""
        out = np.full(len(days_past_due), -1)
        for i, step in enumerate(self.steps):
            reached = (days_past_due >= step.from_days) & (arrears_instalments >= step.min_arrears_instalments)
            out[reached] = i
        return out

    def preferences(self, days_past_due: np.ndarray, arrears_instalments: np.ndarray,
                    windows: tuple[str, ...]) -> np.ndarray:
        """(n, k) flat action indices in order of preference (-1 pads): per channel of the account's step,
        the step's offer, then the other offer. The caller keeps the first one the rules allow."""
        table = np.array([self._row(step, windows) for step in self.steps])
        k = table.shape[1]
        step = self.step_of(days_past_due, arrears_instalments)
        return np.where(step[:, None] >= 0, table[np.maximum(step, 0)], np.full((1, k), -1))

    def _row(self, step: Step, windows: tuple[str, ...]) -> list[int]:
        width = 2 * max(len(s.channels) for s in self.steps)
        w, arm = windows.index(step.window), OFFERS.index(step.offer)
        row = [flat_action(vocab.CONTACT_CHANNELS.index(c), w, a, len(windows))
               for c in step.channels for a in (arm, 1 - arm)]
        return row + [-1] * (width - len(row))


def flat_action(channel: int, window: int, arm: int, n_windows: int) -> int:
    """The flat index of (channel, window, arm) in models.policy.action_values' layout."""
    return (channel * n_windows + window) * len(OFFERS) + arm


def _step(i: int, raw: dict, windows: tuple[str, ...]) -> Step:
    where = f"params.yaml policy.playbook[{i}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping with from_days, channels, window and offer, not {raw!r}")
    missing = [k for k in ("from_days", "channels", "window", "offer") if k not in raw]
    if missing:
        raise ValueError(f"{where} is missing {', '.join(missing)}")
    channels = tuple(raw["channels"]) if isinstance(raw["channels"], list | tuple) else (raw["channels"],)
    bad = [c for c in channels if c not in vocab.CONTACT_CHANNELS]
    if not channels or bad:
        raise ValueError(f"{where}.channels must list channels of {list(vocab.CONTACT_CHANNELS)}, not {bad or '[]'}")
    if raw["window"] not in windows:
        raise ValueError(f"{where}.window must be one of the calendar's windows {list(windows)}, "
                         f"not {raw['window']!r}")
    if raw["offer"] not in OFFERS:
        raise ValueError(f"{where}.offer must be one of {list(OFFERS)} (the staged offers turn a plan into a "
                         f"settlement or a hardship referral where they apply), not {raw['offer']!r}")
    try:
        days, behind = float(raw["from_days"]), float(raw.get("min_arrears_instalments", 0))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: from_days and min_arrears_instalments must be numbers") from None
    return Step(str(raw.get("name", f"step {i + 1}")), days, channels, str(raw["window"]), str(raw["offer"]),
                behind)
