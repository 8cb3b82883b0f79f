"""Leader and followers (models.grouping.Combiner): every caller gets its own outcome, groups form while one
runs, and what does not fit waits for a later group."""

from __future__ import annotations

import threading

import pytest

from models.grouping import Combiner


def _callers(combiner: Combiner, items: list, results: dict) -> list[threading.Thread]:
    def call(item) -> None:
        try:
            results[item] = ("ok", combiner.submit(item))
        except Exception as err:
            results[item] = ("error", err)

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for t in threads:
        t.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)


def test_callers_who_arrive_during_a_group_are_run_together_each_with_its_own_result():
    groups, first_running, release = [], threading.Event(), threading.Event()

    def run(items: list[int]) -> list[int]:
        groups.append(list(items))
        if len(groups) == 1:  # hold the first group until the others have queued behind it
            first_running.set()
            release.wait(timeout=30)
        return [i * 10 for i in items]

    combiner, results = Combiner(run), {}
    first = _callers(combiner, [0], results)
    assert first_running.wait(timeout=30)
    rest = _callers(combiner, list(range(1, 9)), results)
    while len(combiner._queue) < 8:  # all eight queued behind the running group
        threading.Event().wait(0.001)
    release.set()
    _join(first + rest)
    assert results == {i: ("ok", i * 10) for i in range(9)}
    assert groups[0] == [0] and sorted(groups[1]) == list(range(1, 9)) and len(groups) == 2


def test_an_error_of_one_item_goes_to_its_caller_and_an_error_of_the_run_to_the_whole_group():
    def run(items: list[int]) -> list:
        if 99 in items:
            raise RuntimeError("the group failed")
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    combiner, results = Combiner(run), {}
    _join(_callers(combiner, list(range(6)), results))
    assert {i: r[0] for i, r in results.items()} == {0: "ok", 1: "error", 2: "ok", 3: "error", 4: "ok", 5: "error"}
    assert str(results[3][1]) == "bad 3"
    with pytest.raises(RuntimeError, match="the group failed"):
        combiner.submit(99)
    assert combiner.submit(4) == 4  # the combiner still works after a failed group


def test_what_does_not_fit_waits_for_a_later_group_in_order_and_groups_stay_under_the_cap():
    groups, first_running, release = [], threading.Event(), threading.Event()

    def run(items: list[str]) -> list[str]:
        groups.append(list(items))
        if len(groups) == 1:
            first_running.set()
            release.wait(timeout=30)
        return items

    # items are "key:n"; one group holds each key at most once, and at most three items
    combiner = Combiner(run, max_items=3, fits=lambda group, item: item[0] not in {g[0] for g in group})
    results = {}
    first = _callers(combiner, ["x:0"], results)
    assert first_running.wait(timeout=30)
    rest = []
    for item in ["a:1", "a:2", "b:1", "a:3", "c:1", "d:1"]:  # queued in this order
        rest += _callers(combiner, [item], results)
        while not any(p.item == item for p in combiner._queue):
            threading.Event().wait(0.001)
    release.set()
    _join(first + rest)
    assert all(status == "ok" and value == item for item, (status, value) in results.items()) and len(results) == 7
    assert groups == [["x:0"], ["a:1", "b:1", "c:1"], ["a:2", "d:1"], ["a:3"]]


def test_max_items_must_be_positive():
    with pytest.raises(ValueError, match="max_items"):
        Combiner(lambda items: items, max_items=0)
