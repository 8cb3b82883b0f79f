"""Leader and followers: concurrent callers' work done as one group on one caller's thread, with no thread of
its own.

A caller that finds no group under way leads: it runs its own item, with any that queued meanwhile, on its own
thread, so an item that comes alone is run at once, with no hand-off. Callers that arrive while a group runs
queue; when it ends, the leader wakes the first of them to lead the next group. Each caller blocks until its
own item has been run and gets its own result or error. The API's grouped scoring is this
(`models.scoring.GroupScorer`: one vectorised decision and one disk sync for the records of concurrent
requests).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T]):
    """One caller's item waiting for its group, and what became of it."""

    item: T
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False  # its group ran (error or not); otherwise it was woken to lead
    result: Any = None
    error: BaseException | None = None


class Combiner(Generic[T, R]):
    """Runs concurrent callers' items in groups: `run(items)` returns one outcome per item, in order; an
    outcome that is an exception is raised to its caller alone, an exception raised by `run` to every caller
    of the group. A group holds the leader's item and then, in arrival order, queued items that `fits(group,
    item)` admits, at most `max_items`; the others wait for a later group, in their order."""

    def __init__(self, run: Callable[[list[T]], Sequence[R | BaseException]], max_items: int = 64,
                 fits: Callable[[list[T], T], bool] | None = None):
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self._run, self.max_items, self._fits = run, max_items, fits
        self._lock = threading.Lock()
        self._queue: deque[_Pending[T]] = deque()  # not empty only while a leader is active
        self._leading = False

    def submit(self, item: T) -> R:
        """Run `item` (with whatever else is waiting) and return its outcome; raises its error."""
        pending: _Pending[T] = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            lead, self._leading = not self._leading, True
        if not lead:
            pending.woken.wait()  # set when its group has run, or when it is its turn to lead
        if not pending.done:
            self._lead()  # this caller is first in the queue: its item is the first of the group it runs
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _take(self) -> list[_Pending[T]]:
        """The next group (under the lock): the first queued item, then those that fit, in order."""
        group = [self._queue.popleft()]
        kept: deque[_Pending[T]] = deque()
        while self._queue and len(group) < self.max_items:
            candidate = self._queue.popleft()
            if self._fits is None or self._fits([p.item for p in group], candidate.item):
                group.append(candidate)
            else:
                kept.append(candidate)
        kept.extend(self._queue)
        self._queue = kept
        return group

    def _lead(self) -> None:
        with self._lock:
            group = self._take()
        try:
            outcomes = list(self._run([p.item for p in group]))
            if len(outcomes) != len(group):
                raise RuntimeError(f"a group of {len(group)} items gave {len(outcomes)} outcomes")
            for pending, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    pending.error = outcome
                else:
                    pending.result = outcome
        except BaseException as err:  # handed to every caller of the group, who raise it
            for pending in group:
                pending.error = err
        finally:
            for pending in group:
                pending.done = True
                pending.woken.set()
            with self._lock:  # hand on: the first caller still queued leads the next group
                if self._queue:
                    self._queue[0].woken.set()
                else:
                    self._leading = False
