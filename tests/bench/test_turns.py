import time

import numpy as np
import pytest

from tritonize.bench.turns import turns
from tritonize.timing import quartiles


def test_quartiles_are_numpys_25th_50th_and_75th_percentiles_as_floats():
    values = np.random.default_rng().uniform(0.5, 2.0, size=37)
    got = quartiles(values)
    assert got == pytest.approx(list(np.percentile(values, [25, 50, 75])))
    assert all(type(q) is float for q in got) and got[0] <= got[1] <= got[2]
    assert quartiles([3, 1, 2, 4]) == [1.75, 2.5, 3.25]


def test_turns_run_at_least_once_and_stop_once_the_time_is_spent():
    assert sum(1 for _ in turns(0.0)) == 1
    start, count = time.monotonic(), 0
    for _ in turns(0.2):
        count += 1
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 0.2 + 0.05 + 0.5 and count >= 2  # the turn under way when time runs out finishes
