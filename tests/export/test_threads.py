"""Where a second ONNX Runtime thread pays (#26): export/threads.py's measurement and rule, the
profiles optimize records for every variant it may serve, and what `tritonize repo` makes of them."""
import json

import pytest

from tritonize.model_artifacts import ModelArtifacts
from tritonize.export.optimize import variant_thread_profile
from tritonize.export.threads import ThreadProfile, batch_sizes, choose_from_rows, measure_profile
from tritonize.models import get_spec, model_names


def test_batch_sizes_double_up_to_the_max_batch_which_is_always_measured():
    assert batch_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert batch_sizes(1) == [1]


@pytest.mark.parametrize("speedup, expected", [
    ({1: 0.7, 2: 0.9, 4: 1.0, 8: 1.25, 16: 1.3, 32: 1.5}, 8),
    ({1: 0.7, 8: 1.15, 16: 1.3, 32: 1.12, 64: 1.6}, 16),  # a noisy size above still winning by 1.1 keeps 16
    ({1: 0.7, 8: 1.3, 16: 1.05, 32: 1.5}, 32),  # a size that barely wins pushes the threshold above it
    ({1: 1.3, 2: 1.4}, 1),  # wins everywhere: every batch runs on more threads
    ({1: 0.5, 8: 0.8, 64: 0.9}, None),  # never pays (an INT8 graph, a small MLP)
    ({8: 1.3, 64: 0.9}, None),  # loses at the largest size: nothing above it to stand on
])
def test_from_rows_is_the_smallest_size_that_wins_clearly_with_every_larger_one_winning(speedup, expected):
    assert choose_from_rows(speedup) == expected


def test_the_two_thread_counts_take_turns_and_the_medians_decide():
    """A clock that each run moves by its own cost: one thread costs 10 a row, two threads 5 a row
    plus 20 to wake the second one, so two win from 8 rows (80 against 60) and lose below 4."""
    now, order = [0.0], []

    def runner(name, per_row, fixed):
        def run(b):
            order.append(name)
            now[0] += per_row * b + fixed
        return run

    profile = measure_profile(runner("one", 10, 0), runner("two", 5, 20), [1, 4, 8, 16], 1, 2,
                              clock=lambda: now[0], pairs=5)
    assert profile.speedup == {1: pytest.approx(0.4), 4: pytest.approx(1.0), 8: pytest.approx(1.333, abs=1e-3),
                               16: pytest.approx(1.6)}
    assert profile.from_rows == 8 and (profile.base_threads, profile.threads) == (1, 2)
    timed = order[3 * 2:]  # after the first size's warm-up: strictly alternating turns
    assert timed[:10] == ["one", "two"] * 5


def test_a_profile_survives_the_manifest_and_a_bad_one_is_named():
    profile = ThreadProfile(1, 2, 16, {1: 0.7, 16: 1.3})
    assert ThreadProfile.from_json(json.loads(json.dumps(profile.to_json())), "here") == profile
    with pytest.raises(ValueError, match="here: expected a thread profile with .*got \\['threads'\\]"):
        ThreadProfile.from_json({"threads": 2}, "here")
    with pytest.raises(ValueError, match="here: expected base_threads, threads and from_rows as integers >= 1"):
        ThreadProfile.from_json({"base_threads": 1, "threads": 0, "from_rows": None, "speedup": {}}, "here")


@pytest.mark.parametrize("name", model_names("onnx"))
def test_optimize_measures_every_variant_it_may_serve(artifacts, name):
    spec = get_spec(name)
    loaded = ModelArtifacts.load(artifacts, spec)
    for variant, result in loaded.manifest.optimize.variants.items():
        profile = variant_thread_profile(loaded, variant)
        if not result.parity_ok:  # never served, never measured
            assert profile is None
            continue
        assert (profile.base_threads, profile.threads) == (spec.serving.ort_threads, spec.serving.large_batch_threads)
        assert sorted(profile.speedup) == batch_sizes(spec.serving.max_batch_size)
        assert all(s > 0 for s in profile.speedup.values())
        assert profile.from_rows == choose_from_rows(profile.speedup)
