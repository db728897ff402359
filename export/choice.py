"""Which variant `tritonize optimize` picks: what the user would pick, never a silent accuracy loss.

Two rules, each a thing a serving user decides and a benchmark number alone cannot:

- **Accuracy.** By default only a variant whose outputs stay within the spec's FP32 tolerance of PyTorch
  (`fp32_exact`) may be picked: ONNX Runtime's graph optimization usually is; INT8 is measured and
  reported, never served. A lossy variant becomes eligible only under an accuracy budget the user states
  (`--accuracy top1>=0.99`, `max_abs<=0.05`, `cosine>=0.999`; all given must hold), judged on the user's
  rows (`--data`), or, only when asked (`--accuracy-on-random-rows`), on random rows, and then labelled so
  in choice.json and the CLI. The budget replaces the spec's own INT8 tolerance, which stays a report.
- **Objective.** `latency` (the default) picks the lowest p50 at batch 1: a served model at low load runs
  one request at a time, and every request pays at least that. `throughput` picks the most rows per
  second at the largest batch measured (the spec's max batch, what the dynamic batcher forms under
  load). `latency-budget=MS` picks the most rows per second at any measured batch whose p50 is within MS.
  The old rule, a geometric mean of p50 over the batch sizes, rewarded a variant slower at batch 1
  (measured for the MLP's static INT8, #34).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .parity import ParityError

# metric -> (the comparison it takes, its range as text, the check of a bound): top-1 agreement and cosine
# are floors in (0, 1]; the largest absolute error is a ceiling above 0.
METRICS = {
    "top1": (">=", "a fraction in (0, 1]", lambda v: 0 < v <= 1),
    "cosine": (">=", "a cosine in (0, 1]", lambda v: 0 < v <= 1),
    "max_abs": ("<=", "an error > 0", lambda v: v > 0),
}
_BUDGET = re.compile(r"\s*([a-z0-9_]+)\s*(>=|<=)\s*([0-9.eE+-]+)\s*")
OBJECTIVES = ("latency", "throughput", "latency-budget=MS")


@dataclass(frozen=True)
class AccuracyBudget:
    """How far from PyTorch FP32 a lossy variant may go: `metric` against `bound`."""
    metric: str  # top1, cosine or max_abs
    bound: float

    @classmethod
    def parse(cls, text: str) -> AccuracyBudget:
        expected = (f"--accuracy: expected METRIC>=VALUE or METRIC<=VALUE with METRIC one of "
                    f"{', '.join(f'{m}{op}' for m, (op, _, _) in METRICS.items())} (e.g. top1>=0.99, max_abs<=0.05)")
        m = _BUDGET.fullmatch(text or "")
        if not m:
            raise ValueError(f"{expected}, got {text!r}")
        metric, op, number = m.groups()
        if metric not in METRICS:
            raise ValueError(f"{expected}, got the unknown metric {metric!r} in {text!r}")
        wanted_op, range_text, in_range = METRICS[metric]
        if op != wanted_op:
            raise ValueError(f"--accuracy: expected {metric}{wanted_op}VALUE ({metric} is a "
                             f"{'floor' if wanted_op == '>=' else 'ceiling'}), got {text!r}")
        try:
            bound = float(number)
        except ValueError:
            raise ValueError(f"--accuracy: expected {range_text} after {metric}{op}, got {number!r}") from None
        if not in_range(bound):
            raise ValueError(f"--accuracy: expected {range_text} after {metric}{op}, got {number!r}")
        return cls(metric, bound)

    def __str__(self) -> str:
        return f"{self.metric}{METRICS[self.metric][0]}{self.bound:g}"

    def measured(self, result: dict) -> float | None:
        return {"top1": result.get("top1_agreement"), "cosine": result.get("min_cosine"),
                "max_abs": result.get("max_abs_err")}[self.metric]

    def met_by(self, result: dict) -> bool:
        value = self.measured(result)
        if value is None:
            return False
        return value >= self.bound if METRICS[self.metric][0] == ">=" else value <= self.bound


def check_budgets(budgets, classifier: bool, model: str) -> None:
    """A budget the model cannot measure is refused before any work: top-1 needs a classifier's logits,
    cosine an embedding (what parity measures for each)."""
    for b in budgets:
        if b.metric == "top1" and not classifier:
            raise ValueError(f"--accuracy {b}: model {model!r} is not a classifier, so no top-1 agreement is "
                             f"measured; expected cosine>=VALUE or max_abs<=VALUE")
        if b.metric == "cosine" and classifier:
            raise ValueError(f"--accuracy {b}: model {model!r} is a classifier, measured by top-1 agreement; "
                             f"expected top1>=VALUE or max_abs<=VALUE")


@dataclass(frozen=True)
class Objective:
    """What the pick optimizes (see the module docstring)."""
    name: str  # latency, throughput or latency-budget
    budget_ms: float | None = None

    @classmethod
    def parse(cls, text: str) -> Objective:
        expected = f"--objective: expected one of {', '.join(OBJECTIVES)} (MS a p50 in milliseconds > 0)"
        if text in ("latency", "throughput"):
            return cls(text)
        name, _, number = (text or "").partition("=")
        if name != "latency-budget":
            raise ValueError(f"{expected}, got {text!r}")
        try:
            budget = float(number)
        except ValueError:
            budget = float("nan")
        if not budget > 0 or budget == float("inf"):
            raise ValueError(f"{expected}, got {text!r}")
        return cls(name, budget)

    def __str__(self) -> str:
        return self.name if self.budget_ms is None else f"{self.name}={self.budget_ms:g}"

    def candidates(self, result: dict) -> list[tuple[int, float]]:
        """(batch, p50 ms) of the measurements this objective judges a variant at."""
        measured = sorted((int(key[len("batch"):]), v["p50_ms"]) for key, v in result["latency"].items())
        if self.name == "latency":
            return measured[:1]
        if self.name == "throughput":
            return measured[-1:]
        return [(b, ms) for b, ms in measured if ms <= self.budget_ms]

    def score(self, result: dict) -> tuple[float, int] | None:
        """Lower is better: p50 at batch 1 for latency; else minus the rows per second of the best batch
        judged (and that batch). None: nothing within the budget."""
        judged = self.candidates(result)
        if not judged:
            return None
        if self.name == "latency":
            return judged[0][1], judged[0][0]
        batch, ms = max(judged, key=lambda c: c[0] / c[1])
        return -batch / ms * 1e3, batch


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def fp32_exact(result: dict) -> bool:
    """Whether a variant's report (optimize's, as choice.json keeps it) is within the spec's FP32 tolerance of
    PyTorch: an FP32 variant that passed parity, or a lossy one that optimize found within it too. The one
    rule for the pick, the CLI's table and the benchmark's report."""
    return bool(result.get("fp32_exact", result.get("precision") == "fp32" and result.get("parity_ok")))


def _parity_failure(result: dict) -> str:
    measures = [f"max abs err {result['max_abs_err']:.3g}"]
    if result.get("top1_agreement") is not None:
        measures.append(f"top-1 agreement {result['top1_agreement']:.3f}")
    if result.get("min_cosine") is not None:
        measures.append(f"min cosine {result['min_cosine']:.4f}")
    return ", ".join(measures)


def pick_variant(results: dict[str, dict], objective: Objective = Objective("latency"),
                 budgets: tuple[AccuracyBudget, ...] = (), judged_on_data: bool = False) -> dict:
    """The choice.json record: the pick among `results` (optimize's per-variant reports) and why, what each
    other variant lost on, and each eligible one's speed against FP32 under `objective`."""
    eligible, rejected = {}, {}
    for name, r in results.items():
        if not r.get("built"):
            rejected[name] = r.get("error", "not built")
        elif fp32_exact(r):
            eligible[name] = r
        elif not budgets:
            rejected[name] = (f"outside FP32 tolerance ({_parity_failure(r)}); a lossy variant is picked only under "
                              f"an accuracy budget you give (--accuracy, judged on --data)")
        elif not all(b.met_by(r) for b in budgets):
            missed = [f"{b} (measured {_number(b.measured(r))})" for b in budgets if not b.met_by(r)]
            rejected[name] = f"misses the accuracy budget: {', '.join(missed)}"
        else:
            eligible[name] = r
    if not eligible:
        raise ParityError("no variant passed parity; not even the FP32 export: " + "; ".join(
            f"{n}: {why}" for n, why in rejected.items()))
    scores = {n: objective.score(r) for n, r in eligible.items()}
    within = {n: s for n, s in scores.items() if s is not None}
    if not within:
        quickest = {n: min(v["p50_ms"] for v in r["latency"].values()) for n, r in eligible.items()}
        fastest = min(quickest, key=quickest.get)
        raise ParityError(f"--objective {objective}: no variant answers within {objective.budget_ms:g} ms at any "
                          f"measured batch size; the fastest, {fastest}, needs {quickest[fastest]:.3g} ms")
    for name in set(scores) - set(within):
        rejected[name] = f"no measured batch size within {objective.budget_ms:g} ms"
    best = min(within, key=lambda n: within[n][0])
    base = objective.score(results["fp32"]) if results.get("fp32", {}).get("built") else None
    # Against FP32 as "x times as good": its p50 over theirs for latency, their rows/s over its otherwise;
    # for every variant measured, the rejected too, so the table shows what each lost and by how much.
    measured = {n: objective.score(r) for n, r in results.items() if r.get("built")}
    speedups = {n: round(base[0] / s[0] if objective.name == "latency" else s[0] / base[0], 3)
                for n, s in measured.items() if s is not None} if base else {}
    what = "p50 at batch 1" if objective.name == "latency" else f"rows/s at batch {within[best][1]}"
    if objective.budget_ms is not None:
        what += f" within {objective.budget_ms:g} ms"
    lossy = not fp32_exact(eligible[best])
    accuracy = (f"within the accuracy budget {', '.join(map(str, budgets))}" if lossy
                else "within FP32 tolerance of PyTorch")
    against = f"{speedups[best]}x the FP32 export, " if best in speedups else ""  # FP32 may miss a latency budget
    why = f"{best} is the fastest variant {accuracy} for the {objective} objective ({against}{what})"
    return {"chosen": best, "why": why, "objective": {"name": str(objective), "judged_at": what},
            "accuracy": {"budgets": [str(b) for b in budgets], "lossy_pick": lossy,
                         "judged_on": "your data" if judged_on_data else "random rows"},
            "speedup_vs_fp32": speedups, "rejected": rejected, "variants": results}
