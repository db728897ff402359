"""The user's SLOs judged on the served rows, the way Triton's Model Analyzer applies constraints.

For each served model and protocol, over its closed-loop rows (one per concurrency level): the rows
whose latency percentiles meet every latency SLO and that failed no request are candidates; the best
is the one with the highest throughput, and it meets the SLOs when it also reaches min_throughput.
When no row meets the latency SLOs, the verdict names the closest row (the smallest worst overshoot
of a latency bound) and what it missed.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..load.served import ServedRow
from ..record import Record
from .options import LATENCY_SLOS, THROUGHPUT_SLO, Slo


@dataclass
class SloVerdict(Record):
    model: str
    protocol: str
    met: bool  # a level met every SLO
    level: int  # the best level that met the latency SLOs; where none did, the closest level
    within_latency: bool  # whether `level` met every latency SLO
    infer_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    levels_within_latency: list[int]  # every level that met the latency SLOs (and failed no request)
    missed: list[str]  # what `level` missed, e.g. "p99 6.210 ms > 5 ms"


def misses(row: ServedRow, slos: tuple[Slo, ...]) -> list[str]:
    """What `row` misses of the latency SLOs (and failed requests, which no SLO allows)."""
    out = [f"{LATENCY_SLOS[s.name]} {getattr(row, s.name):.3f} ms > {s.value:g} ms"
           for s in slos if s.is_latency and not getattr(row, s.name) <= s.value]
    if row.errors:
        out.append(f"{row.errors} failed requests")
    return out


def _overshoot(row: ServedRow, slos: tuple[Slo, ...]) -> float:
    """How far `row` is from meeting the latency SLOs: its largest measured / bound (errors count as infinite)."""
    if row.errors:
        return float("inf")
    return max([getattr(row, s.name) / s.value for s in slos if s.is_latency], default=0.0)


def judge(served: list[ServedRow], slos: tuple[Slo, ...]) -> list[SloVerdict]:
    """One verdict per served model and protocol with closed-loop rows, in the order they were measured."""
    if not slos:
        return []
    throughput = next((s.value for s in slos if s.name == THROUGHPUT_SLO), None)
    groups: dict[tuple[str, str], list[ServedRow]] = {}
    for row in served:
        if row.mode == "closed":
            groups.setdefault((row.model, row.protocol), []).append(row)
    verdicts = []
    for (model, protocol), rows in groups.items():
        passing = [r for r in rows if not misses(r, slos)]
        if passing:
            row = max(passing, key=lambda r: r.infer_per_s)
            missed = [] if throughput is None or row.infer_per_s >= throughput else [
                f"infer/s {row.infer_per_s:.0f} < {throughput:g}"]
        else:
            row = min(rows, key=lambda r: (_overshoot(r, slos), -r.infer_per_s))
            missed = misses(row, slos)
            if throughput is not None and row.infer_per_s < throughput:
                missed.append(f"infer/s {row.infer_per_s:.0f} < {throughput:g}")
        verdicts.append(SloVerdict(
            model=model, protocol=protocol, met=bool(passing) and not missed, level=int(row.level),
            within_latency=bool(passing), infer_per_s=row.infer_per_s, p50_ms=row.p50_ms, p90_ms=row.p90_ms,
            p99_ms=row.p99_ms, levels_within_latency=sorted(int(r.level) for r in passing), missed=missed))
    return verdicts
