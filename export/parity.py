"""Numerical parity of an exported/optimized model against PyTorch, on fresh random inputs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..models.spec import ModelSpec, Tolerance

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class ParityError(RuntimeError):
    """An exported or optimized model disagrees with PyTorch beyond its tolerance."""


@dataclass
class CaseResult:
    batch: int
    seq: int | None
    max_abs_err: float
    worst_output: str
    within_tolerance: bool
    top1_matches: int | None = None
    min_cosine: float | None = None


@dataclass
class ParityReport:
    """Parity over several cases. It passes when every element of every case is within
    atol + rtol*|reference| and, for classifiers, the arg-max agrees on at least `min_top1` of all rows."""

    precision: str
    tolerance: dict
    cases: list[CaseResult] = field(default_factory=list)
    # A lossy variant's same outputs judged at the FP32 tolerance: whether it is exact enough to pick
    # without an accuracy budget (export/choice.py). None for an FP32 variant, whose own verdict is that.
    exact: ParityReport | None = None

    @property
    def top1_agreement(self) -> float | None:
        counted = [c for c in self.cases if c.top1_matches is not None]
        if not counted:
            return None
        return sum(c.top1_matches for c in counted) / sum(c.batch for c in counted)

    @property
    def min_cosine(self) -> float | None:
        values = [c.min_cosine for c in self.cases if c.min_cosine is not None]
        return min(values) if values else None

    @property
    def ok(self) -> bool:
        top1, cosine, floor = self.top1_agreement, self.min_cosine, self.tolerance.get("min_cosine")
        return (all(c.within_tolerance for c in self.cases) and (top1 is None or top1 >= self.tolerance["min_top1"])
                and (floor is None or cosine is None or cosine >= floor))

    @property
    def fp32_exact(self) -> bool:
        """Within the FP32 tolerance: its own verdict for an FP32 variant, else the `exact` one."""
        return self.ok if self.exact is None else self.exact.ok

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.cases), default=0.0)

    def worst(self) -> CaseResult:
        return max(self.cases, key=lambda c: (not c.within_tolerance, c.max_abs_err))

    def to_json(self) -> dict:
        return {"precision": self.precision, "tolerance": self.tolerance, "ok": self.ok,
                "max_abs_err": self.max_abs_err, "top1_agreement": self.top1_agreement, "min_cosine": self.min_cosine,
                "rows": sum(c.batch for c in self.cases), "cases": [asdict(c) for c in self.cases]}

    def failure_message(self, spec: ModelSpec, what: str) -> str:
        w = self.worst()
        shape = f"batch {w.batch}" + (f", seq {w.seq}" if w.seq is not None else "")
        top1 = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.3f} over {sum(c.batch for c in self.cases)} rows"
        if self.min_cosine is not None:
            top1 += f", min cosine similarity {self.min_cosine:.6f}"
        return (f"model {spec.name!r}: {what} parity failed; worst at input shape {shape}: output {w.worst_output!r} "
                f"max abs error {w.max_abs_err:.3g}{top1} (tolerance atol={self.tolerance['atol']}, "
                f"rtol={self.tolerance['rtol']}, min top-1={self.tolerance['min_top1']}, "
                f"min cosine={self.tolerance.get('min_cosine')})")


def compare(spec: ModelSpec, expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], tol: Tolerance,
            batch: int, seq: int | None) -> CaseResult:
    worst_name, worst_err, within, top1, cosine = "", -1.0, True, None, None
    for name in spec.output_names:
        exp, act = expected[name].astype(np.float64), actual[name].astype(np.float64)
        if exp.shape != act.shape:
            raise ParityError(f"model {spec.name!r}: output {name!r} has shape {act.shape}, PyTorch gives {exp.shape}")
        diff = np.abs(exp - act)
        err = float(diff.max()) if np.isfinite(act).all() else float("inf")
        if err > worst_err:
            worst_name, worst_err = name, err
        within &= bool(np.all(diff <= tol.atol + tol.rtol * np.abs(exp)))
        if spec.classifier:
            # A row whose two best reference logits are within FP32's own absolute tolerance is a tie: no
            # runtime can be held to PyTorch's order there (a 1e-7 rounding flips it), so it agrees either way.
            best_two = np.sort(exp, axis=-1)[..., -2:] if exp.shape[-1] > 1 else None
            tie = (best_two[..., 1] - best_two[..., 0] <= spec.tolerance("fp32").atol) if best_two is not None \
                else np.zeros(exp.shape[:-1], bool)
            matches = int(np.sum((exp.argmax(-1) == act.argmax(-1)) | tie))
            top1 = matches if top1 is None else min(top1, matches)
        else:
            rows_exp, rows_act = exp.reshape(len(exp), -1), act.reshape(len(act), -1)
            norms = np.linalg.norm(rows_exp, axis=1) * np.linalg.norm(rows_act, axis=1)
            cos = float(np.min(np.sum(rows_exp * rows_act, axis=1) / np.maximum(norms, 1e-30)))
            cosine = cos if cosine is None else min(cosine, cos)
    return CaseResult(batch, seq, worst_err, worst_name, within, top1, cosine)


def parity_cases(spec: ModelSpec) -> list[tuple[int, int | None]]:
    """Batch 1, a middle batch and the max batch; every listed sequence length for sequence models."""
    top = spec.serving.max_batch_size
    batches = sorted({1, max(2, top // 4), top})
    seqs = list(spec.seq_lens) if spec.has_seq else [None]
    return [(b, s) for b in batches for s in seqs]


def check_parity(spec: ModelSpec, reference: Runner, candidate: Runner, precision: str,
                 cases: list[tuple[int, int | None]] | None = None, rng: np.random.Generator | None = None,
                 batches: Sequence[dict[str, np.ndarray]] | None = None) -> ParityReport:
    """Parity on random inputs of the (batch, seq) `cases`, or on the given `batches` (the user's rows)."""
    rng = rng if rng is not None else np.random.default_rng()
    tol, exact_tol = spec.tolerance(precision), spec.tolerance("fp32")
    report = ParityReport(precision, asdict(tol))
    if precision != "fp32":
        report.exact = ParityReport("fp32", asdict(exact_tol))
    if batches is None:
        batches = [spec.example_inputs(batch, seq, rng) for batch, seq in cases or parity_cases(spec)]
    for inputs in batches:
        rows, seq = spec.check_inputs(inputs, "parity rows")
        expected, actual = reference(inputs), candidate(inputs)
        report.cases.append(compare(spec, expected, actual, tol, rows, seq))
        if report.exact is not None:
            report.exact.cases.append(compare(spec, expected, actual, exact_tol, rows, seq))
    return report


def agreement_cases(spec: ModelSpec, total: int = 1000) -> list[tuple[int, int | None]]:
    """`total` random rows in chunks of the max batch, for top-1 agreement of optimized variants."""
    top = spec.serving.max_batch_size
    sizes = [top] * (total // top) + ([total % top] if total % top else [])
    seqs = list(spec.seq_lens) if spec.has_seq else [None]
    return [(b, seqs[i % len(seqs)]) for i, b in enumerate(sizes)]
