"""The pick (#34): within FP32 tolerance unless the user gives an accuracy budget, and fastest for the user's
objective, not for a mean of batch sizes nobody serves. Unit tests on optimize's reports, and the CLI's
refusals before any work."""
import pytest

from tritonize.cli import main
from tritonize.export.choice import AccuracyBudget, Objective, pick_variant
from tritonize.export.parity import ParityError


def _result(p50s, exact=True, top1=1.0, max_abs=0.0, precision="fp32"):
    """A built variant's report: p50 ms at batch 1 and 64."""
    return {"built": True, "precision": precision, "parity_ok": True, "fp32_exact": exact, "max_abs_err": max_abs,
            "top1_agreement": top1, "min_cosine": None,
            "latency": {f"batch{b}": {"p50_ms": v} for b, v in zip((1, 64), p50s)}}


# The MLP of #34: static INT8 fastest on the old geometric mean, slower at batch 1, and lossy.
RESULTS = {"fp32": _result([0.0087, 0.40]), "ort_opt": _result([0.0085, 0.42]),
           "int8": _result([0.0090, 0.30], exact=False, top1=0.995, max_abs=0.08, precision="int8"),
           "int8_static": _result([0.0099, 0.20], exact=False, top1=0.993, max_abs=0.077, precision="int8")}


def test_by_default_a_lossy_variant_is_reported_never_picked():
    choice = pick_variant(RESULTS, Objective("throughput"))
    assert choice["chosen"] == "fp32"  # the fastest at batch 64 within FP32 tolerance, though int8_static is faster
    assert "outside FP32 tolerance (max abs err 0.077, top-1 agreement 0.993)" in choice["rejected"]["int8_static"]
    assert "--accuracy" in choice["rejected"]["int8_static"]
    assert choice["accuracy"] == {"budgets": [], "lossy_pick": False, "judged_on": "random rows"}


def test_latency_picks_the_fastest_at_batch_1_and_throughput_the_most_rows_per_second():
    latency = pick_variant(RESULTS)  # the default
    assert latency["chosen"] == "ort_opt" and latency["objective"] == {"name": "latency", "judged_at": "p50 at batch 1"}
    assert latency["speedup_vs_fp32"]["ort_opt"] == pytest.approx(0.0087 / 0.0085, rel=1e-3)
    budget = (AccuracyBudget("top1", 0.99),)
    throughput = pick_variant(RESULTS, Objective("throughput"), budget, judged_on_data=True)
    assert throughput["chosen"] == "int8_static" and throughput["accuracy"]["lossy_pick"]
    assert throughput["speedup_vs_fp32"]["int8_static"] == pytest.approx(0.40 / 0.20, rel=1e-3)  # rows/s over fp32's
    assert "within the accuracy budget top1>=0.99 for the throughput objective" in throughput["why"]
    assert pick_variant(RESULTS, Objective("latency"), budget)["chosen"] == "ort_opt"  # INT8 is slower at batch 1


def test_a_budget_admits_only_the_variants_that_meet_all_of_it():
    choice = pick_variant(RESULTS, Objective("throughput"), (AccuracyBudget("top1", 0.994),
                                                               AccuracyBudget("max_abs", 0.1)))
    assert choice["chosen"] == "int8"
    assert choice["rejected"]["int8_static"] == "misses the accuracy budget: top1>=0.994 (measured 0.993)"


def test_a_latency_budget_picks_the_most_rows_per_second_within_it():
    budget = Objective.parse("latency-budget=0.35")
    choice = pick_variant(RESULTS, budget)
    # fp32 at batch 64 (0.40 ms) and ort_opt (0.42) miss 0.35 ms; each is judged at batch 1 then.
    assert choice["chosen"] == "ort_opt" and choice["objective"]["judged_at"] == "rows/s at batch 1 within 0.35 ms"
    with pytest.raises(ParityError, match=r"no variant answers within 0.001 ms .* the fastest, ort_opt, needs 0.0085"):
        pick_variant(RESULTS, Objective.parse("latency-budget=0.001"))


@pytest.mark.parametrize("text,message", [
    ("top2>=0.9", "the unknown metric 'top2'"),
    ("top1<=0.9", "expected top1>=VALUE (top1 is a floor)"),
    ("max_abs>=0.1", "expected max_abs<=VALUE (max_abs is a ceiling)"),
    ("top1>=1.5", "expected a fraction in (0, 1] after top1>=, got '1.5'"),
    ("max_abs<=0", "expected an error > 0 after max_abs<=, got '0'"),
    ("accurate", "expected METRIC>=VALUE or METRIC<=VALUE"),
])
def test_bad_budgets_say_what_was_expected(text, message):
    with pytest.raises(ValueError, match="--accuracy: expected") as e:
        AccuracyBudget.parse(text)
    assert message in str(e.value)


@pytest.mark.parametrize("text", ["fast", "latency-budget", "latency-budget=0", "latency-budget=abc",
                                  "latency-budget=inf", "throughput=3"])
def test_bad_objectives_say_what_was_expected(text):
    with pytest.raises(ValueError, match=r"--objective: expected one of latency, throughput, latency-budget=MS"):
        Objective.parse(text)


@pytest.mark.parametrize("args,message", [
    (["mlp", "--accuracy", "top1>=0.99"], "expected --data ROWS (your own inputs) to judge lossy variants on for "
                                          "model 'mlp', got none; or add --accuracy-on-random-rows"),
    (["mlp", "--accuracy", "cosine>=0.99", "--accuracy-on-random-rows"], "model 'mlp' is a classifier"),
    (["minilm", "--accuracy", "top1>=0.99", "--accuracy-on-random-rows"], "model 'minilm' is not a classifier"),
    (["mlp", "--objective", "latency-budget=-1"], "--objective: expected one of"),
    (["mlp", "--accuracy", "top1=0.99"], "--accuracy: expected METRIC>=VALUE"),
])
def test_the_cli_refuses_bad_options_in_one_line_before_any_work(args, message, tmp_path, capsys):
    assert main(["optimize", *args, "--artifacts", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in " ".join(err.split()), err
    assert not (tmp_path / "art").exists()
