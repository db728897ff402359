"""bench/rounds.py, the one alternating-rounds loop that peers and the project's studies take turns in."""
import time

import pytest

from tritonize.bench.rounds import REVERSED, ROTATED, SAME, rounds


def test_a_count_of_rounds_in_each_order():
    sides = ["a", "b", "c"]
    assert list(rounds(sides, count=3)) == [(1, sides), (2, sides), (3, sides)]
    assert [order for _, order in rounds(sides, count=3, order=REVERSED)] == [sides, sides[::-1], sides]
    # round r starts with side r, so no side always follows the same neighbour (tritonize peers)
    assert [order for _, order in rounds(sides, count=4, order=ROTATED)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert list(rounds(sides, count=0)) == []
    assert list(rounds((1, 2), count=2, order=SAME)) == [(1, [1, 2]), (2, [1, 2])]  # any sequence


def test_timed_rounds_run_at_least_once_and_stop_once_the_time_is_spent():
    assert [n for n, _ in rounds(["a"], seconds=0.0)] == [1]
    start, count = time.monotonic(), 0
    for _ in rounds(["a", "b"], seconds=0.2):
        count += 1
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.2 + 0.05 + 0.5 and count >= 2  # the round under way when time runs out finishes


def test_a_wrong_request_is_refused_naming_what_was_expected():
    with pytest.raises(ValueError, match="expected a count of rounds or seconds, not both or neither"):
        next(rounds(["a"]))
    with pytest.raises(ValueError, match="expected a count of rounds or seconds, not both or neither"):
        next(rounds(["a"], count=1, seconds=1.0))
    with pytest.raises(ValueError, match=r"expected an order among \['same', 'reversed', 'rotated'\], got 'random'"):
        next(rounds(["a"], count=1, order="random"))
