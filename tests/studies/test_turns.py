"""studies/turns.py: the quartiles its ratios are spread by, and servers taking turns on the real server
(the turns themselves are bench/rounds.py's, tests/bench/test_rounds.py)."""
import numpy as np
import pytest

from tritonize.timing import quartiles


def test_quartiles_are_numpys_25th_50th_and_75th_percentiles_as_floats():
    values = np.random.default_rng().uniform(0.5, 2.0, size=37)
    got = quartiles(values)
    assert got == pytest.approx(list(np.percentile(values, [25, 50, 75])))
    assert all(type(q) is float for q in got) and got[0] <= got[1] <= got[2]
    assert quartiles([3, 1, 2, 4]) == [1.75, 2.5, 3.25]


@pytest.mark.server
def test_servers_take_turns_round_after_round_each_level_of_each_model(server):
    from tritonize.studies.turns import servers_in_turns

    seen = []
    rows = servers_in_turns({"a": server, "b": server}, ["mlp"], (1, 2), rounds=2, duration_s=0.2,
                            progress=seen.append)
    assert sorted(rows) == [("mlp", level, name) for level in (1, 2) for name in ("a", "b")]
    assert all(len(runs) == 2 and all(r.errors == 0 and r.ok > 0 for r in runs) for runs in rows.values())
    names = [line.split(" on ")[1].split(":")[0] for line in seen]
    assert names == ["a", "b", "a", "b", "b", "a", "b", "a"]  # the order reversed in the second round
