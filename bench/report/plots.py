"""The report's plots, made to be read: one row of panels per model (small multiples), one colour per
load generator and protocol (the same in every panel, one legend for the figure), the concurrency
levels as plain-number ticks, and the user's SLOs drawn where they apply.

- served.png: per model, latency (p50 solid, p99 dashed) and throughput against concurrency, closed
  loop; a latency SLO is a horizontal line on the latency panel, min_throughput one on the
  throughput panel (a bound far above the data is written at the panel's top instead of squashing it);
- inprocess.png: per model, the median latency of each backend at each batch size, grouped bars;
- variants.png: per model, optimize's variants as points, speed against FP32 across, error against
  PyTorch up (log), hollow where outside FP32 tolerance, the pick starred: the trade at a glance.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

from ..suite.options import THROUGHPUT_SLO, Slo  # noqa: E402
from .results import SuiteResults  # noqa: E402

SERVED_PLOT, INPROCESS_PLOT, VARIANTS_PLOT = "served.png", "inprocess.png", "variants.png"
PROTOCOL_COLOURS = {"grpc": "tab:blue", "http": "tab:orange", "http-lean": "tab:green"}
SLO_COLOUR = "tab:red"
SLO_STYLES = {"p50_ms": ":", "p90_ms": "-.", "p99_ms": "--", THROUGHPUT_SLO: "--"}
FAR_ABOVE = 1.6  # a bound more than this times the panel's highest value is written, not drawn
DPI = 110


def _plain(value: float, _pos=None) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _concurrency_axis(ax, levels: list[float]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(levels))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(levels) / 1.3, max(levels) * 1.3)
    ax.set_xlabel("concurrency (requests in flight)")


def _slo(ax, slo: Slo, data_max: float) -> None:
    label = f"SLO {slo.describe()}"
    if slo.value > FAR_ABOVE * data_max:
        # top left: the lowest concurrency, where latency and throughput are both lowest
        ax.text(0.01, 0.98, f"{label} (above the axis)", transform=ax.transAxes, ha="left", va="top",
                color=SLO_COLOUR, fontsize=8, bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1))
        return
    ax.axhline(slo.value, color=SLO_COLOUR, linestyle=SLO_STYLES[slo.name], linewidth=1.2)
    ax.annotate(label, (0.01, slo.value), xycoords=("axes fraction", "data"), xytext=(0, 3),
                textcoords="offset points", color=SLO_COLOUR, fontsize=8,
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1))


def served_figure(results: SuiteResults) -> Figure | None:
    """Two panels per model (latency, throughput) against concurrency; None when nothing was served."""
    closed = [r for r in results.served if r.mode == "closed"]
    if not closed:
        return None
    models = list(dict.fromkeys(r.model for r in closed))
    protocols = [p for p in PROTOCOL_COLOURS if any(r.protocol == p for r in closed)]
    slos = results.options.slos
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.2 * len(models) + 1.0), squeeze=False, layout="constrained")
    for (ax_lat, ax_thr), model in zip(axes, models):
        rows = [r for r in closed if r.model == model]
        for protocol in protocols:
            pts = sorted((r.level, r.p50_ms, r.p99_ms, r.infer_per_s) for r in rows if r.protocol == protocol)
            if not pts:
                continue
            x, p50, p99, thr = (list(v) for v in zip(*pts))
            colour = PROTOCOL_COLOURS[protocol]
            ax_lat.plot(x, p50, color=colour, marker="o", linestyle="-")
            ax_lat.plot(x, p99, color=colour, marker="s", linestyle="--", markersize=4)
            ax_thr.plot(x, thr, color=colour, marker="o")
        levels = sorted({r.level for r in rows})
        for ax in (ax_lat, ax_thr):
            _concurrency_axis(ax, levels)
            ax.yaxis.set_major_formatter(FuncFormatter(_plain))
            ax.grid(True, alpha=0.3)
        lat_max = max(max(r.p99_ms, r.p50_ms) for r in rows)
        thr_max = max(r.infer_per_s for r in rows)
        for slo in slos:
            if slo.is_latency:
                _slo(ax_lat, slo, lat_max)
            else:
                _slo(ax_thr, slo, thr_max)
        ax_lat.set_ylim(0, None)
        ax_thr.set_ylim(0, None)
        ax_lat.set(title=f"{model}: latency", ylabel="latency (ms)")
        ax_thr.set(title=f"{model}: throughput", ylabel="inferences / s")
    handles = [Line2D([], [], color=PROTOCOL_COLOURS[p], linewidth=3, label=p) for p in protocols]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="-", label="p50"),
                Line2D([], [], color="grey", marker="s", linestyle="--", markersize=4, label="p99")]
    handles += [Line2D([], [], color=SLO_COLOUR, linestyle=SLO_STYLES[s.name], label=f"SLO {s.describe()}")
                for s in slos]
    fig.suptitle("Served, closed loop (real tritonserver, loopback)", fontsize=12)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), frameon=False, fontsize=9)
    return fig


def inprocess_figure(results: SuiteResults) -> Figure | None:
    """One panel per model: each backend's median latency at each batch size; None without rows."""
    rows = results.inprocess
    if not rows:
        return None
    models = list(dict.fromkeys(r.model for r in rows))
    backends = list(dict.fromkeys(r.backend for r in sorted(rows, key=lambda r: r.backend)))
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    columns = min(len(models), 3)  # wrapped into rows of three, so that many models stay legible
    rows_of_panels = -(-len(models) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(max(5.5, 4.2 * columns), 4.0 * rows_of_panels + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes.flat, models):
        mine = [r for r in rows if r.model == model]
        batches = sorted({r.batch for r in mine})
        present = [b for b in backends if any(r.backend == b for r in mine)]
        width = 0.8 / len(present)
        for i, backend in enumerate(present):
            values = {r.batch: r.median_us for r in mine if r.backend == backend}
            xs = [g + (i - (len(present) - 1) / 2) * width for g, b in enumerate(batches) if b in values]
            ax.bar(xs, [values[b] for b in batches if b in values], width * 0.95, color=colours[backend])
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set(title=model, ylabel="median latency (us, log scale)")
        ax.grid(True, axis="y", which="major", alpha=0.3)
    handles = [Line2D([], [], color=colours[b], linewidth=8, label=b) for b in backends]
    fig.suptitle("In-process latency per backend (median of pytest-benchmark rounds)", fontsize=12)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False, fontsize=9)
    return fig


def variants_figure(results: SuiteResults) -> Figure | None:
    """One panel per model: each variant at (p50 at batch 1 of FP32 over its own, max abs error)."""
    variants = results.variants
    models = list(dict.fromkeys(v.model for v in variants))
    if not models:
        return None
    columns = min(len(models), 3)
    fig, axes = plt.subplots(-(-len(models) // columns), columns, figsize=(max(5.5, 4.2 * columns),
                             3.8 * -(-len(models) // columns) + 0.6), squeeze=False, layout="constrained")
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax, model in zip(axes.flat, models):
        mine = [v for v in variants if v.model == model]
        fp32 = next((dict(v.p50_ms).get(1) for v in mine if v.variant == "fp32"), None)
        for v in mine:
            batch1 = dict(v.p50_ms).get(1)
            if fp32 is None or batch1 is None:
                continue
            x, y = fp32 / batch1, max(v.max_abs_err, 1e-9)  # an exact copy's 0 error sits at the floor
            ax.scatter([x], [y], s=160 if v.picked else 50, marker="*" if v.picked else "o",
                       facecolors="tab:green" if v.exact else "none", edgecolors="tab:green" if v.exact else "tab:red")
            ax.annotate(v.variant, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.margins(x=0.18)  # room for the names beside the outermost points
        ax.set_yscale("log")
        ax.set(title=model, xlabel="speed at batch 1 vs FP32 (x, higher is faster)",
               ylabel="max abs error vs PyTorch (log)")
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor="tab:green", markeredgecolor="tab:green",
                      label="within FP32 tolerance"),
               Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="tab:red",
                      label="lossy (needs an accuracy budget)"),
               Line2D([], [], marker="*", linestyle="", markersize=12, color="black", label="optimize's pick")]
    fig.suptitle("Optimize's variants: speed against accuracy", fontsize=12)
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    return fig


def plots(results: SuiteResults, folder: Path) -> list[str]:
    """Write the plots the results have data for into `folder`; their file names."""
    written = []
    for name, make in ((SERVED_PLOT, served_figure), (INPROCESS_PLOT, inprocess_figure),
                       (VARIANTS_PLOT, variants_figure)):
        fig = make(results)
        if fig is not None:
            fig.savefig(Path(folder) / name, dpi=DPI, bbox_inches="tight")
            plt.close(fig)
            written.append(name)
    return written
