"""The tables `make run` prints fit an 80-column log (CI, `| tee`, COLUMNS=80): the model names, the
verdicts and the main numbers whole, no header cut to "mo…", the columns that did not fit named under
the table; at 120 columns every column is there. Rendered into a recording rich Console of that width."""
import io
from pathlib import Path

import pytest
from rich.console import Console

from tritonize.bench.report.tables import table as markdown_table
from tritonize.cli.optimize import variants_table
from tritonize.cli.run import served_table
from tritonize.cli.tables import Col, FitMarkdown, FitTable
from tritonize.models import get_spec
from tritonize.pipeline import DEFAULT_MODELS
from tritonize.pipeline.main_job import MainJobReport, ServedCheck

RUN_HEADERS = ("model", "serves", "artifacts", "served == in-process", "max |err|", "first call (ms)")
VARIANT_HEADERS = ("model", "variant", "parity", "err", "top1/cos", "b=1", "b=max", "vs fp32", "threads")


def render(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= width  # nothing cropped at the right edge
    return text


@pytest.fixture
def run_report():
    """`tritonize run`'s report for its seven default models, with the longest notes the artifacts get."""
    notes = {"mlp": "reused", "cnn": "rebuilt: the spec changed since the export (its fingerprint differs)",
             "lstm": "built", "transformer": "optimized again (the export was current; no int8_static variant)",
             "minilm": "rebuilt (--force)"}
    served = [ServedCheck(model=name, ok=name != "lstm", max_abs_err=1.25e-6 * (i + 1), latency_ms=3.5 * (i + 1),
                          served="kernels (torch)" if "_" in name else "ort_opt (exact)")
              for i, name in enumerate(DEFAULT_MODELS)]
    return MainJobReport(done=notes, served=served)


def test_the_run_table_keeps_names_verdicts_and_errors_whole_at_80_columns(run_report):
    text = render(served_table(run_report, Path("build/model_repository")), 80)
    assert "…" not in text
    for i, name in enumerate(DEFAULT_MODELS):
        line = next(line for line in text.splitlines() if f" {name} " in line)
        assert f"{1.25e-6 * (i + 1):.2e}" in line and ("no" if name == "lstm" else "yes") in line
    assert "model" in text and "in-process" in text and "|err|" in text


def test_the_run_table_shows_every_column_at_120(run_report):
    text = render(served_table(run_report, Path("build/model_repository")), 120)
    assert "…" not in text and "Left out" not in text
    assert all(header in text for header in RUN_HEADERS)
    assert all(f"{3.5 * (i + 1):.2f}" in text for i in range(len(DEFAULT_MODELS)))
    assert "ort_opt (exact)" in text and "kernels (torch)" in text


def _variant(err: float, p50: tuple[float, float], ok: bool = True, top1: float | None = 0.996,
             cosine: float | None = None, threads: dict | None = None) -> dict:
    return {"built": True, "parity_ok": ok, "fp32_exact": ok, "max_abs_err": err, "top1_agreement": top1,
            "min_cosine": cosine,
            "latency": {"batch1": {"p50_ms": p50[0]}, "batch64": {"p50_ms": p50[1]}}, "threads": threads}


@pytest.fixture
def optimized():
    """`tritonize optimize`'s choices for five models: a failed parity, a failed build, a text model."""
    names = ("mlp", "cnn", "lstm", "transformer", "minilm")
    choices = []
    for name in names:
        cosine = 0.9991 if name == "minilm" else None
        top1 = None if cosine else 0.996
        choices.append({"chosen": "int8", "speedup_vs_fp32": {"fp32": 1.0, "ort_opt": 1.07, "int8": 1.23},
                        "variants": {
                            "fp32": _variant(1.8e-7, (0.021, 0.121), top1=top1, cosine=cosine,
                                             threads={"threads": 2, "from_rows": 16}),
                            "ort_opt": _variant(2.0e-7, (0.019, 0.110), top1=top1, cosine=cosine),
                            # lossy (outside FP32's tolerance, within INT8's), picked under a budget
                            "int8": {**_variant(7.4e-3, (0.017, 0.090), top1=top1, cosine=cosine),
                                     "fp32_exact": False},
                            "int8_static": ({"built": False, "error": "ValueError: no node to quantize"}
                                            if name == "lstm" else
                                            _variant(0.9, (12.5, 1450.25), ok=False, top1=top1, cosine=cosine))}})
    return [get_spec(n) for n in names], choices


def test_the_variants_table_keeps_names_verdicts_and_speedups_whole_at_80_columns(optimized):
    specs, choices = optimized
    text = render(variants_table(specs, choices), 80)
    assert "…" not in text
    rows = [line.split() for line in text.splitlines()]
    for spec in specs:
        mine = [row for row in rows if row[:1] == [spec.name]]
        assert [row[1] for row in mine] == ["fp32", "ort_opt", "int8", "int8_static"]
        assert [row[-1] for row in mine[:3]] == ["1.00x", "1.07x", "1.23x"]  # vs fp32, the last column shown
        assert mine[2][2:4] == ["*", "lossy"] and mine[0][2] == "exact"
        if spec.name == "lstm":
            assert mine[3][2:] == ["build", "failed"]
        else:
            assert mine[3][2] == "fail" and mine[3][-1] == "-"
    header = next(line for line in text.splitlines() if line.split()[:1] == ["model"])
    assert "vs fp32" in header and "variant" in header and "parity" in header
    shown = header.split()
    left_out = [h for h in VARIANT_HEADERS if h not in shown and h != "vs fp32"]
    assert left_out and f"Left out at 80 columns: {', '.join(left_out)} (COLUMNS=" in " ".join(text.split())


def test_the_variants_table_shows_every_column_at_120(optimized):
    text = render(variants_table(*optimized), 120)
    assert "…" not in text and "Left out" not in text
    header = next(line for line in text.splitlines() if line.split()[:1] == ["model"])
    assert all(h in header for h in VARIANT_HEADERS)
    assert "2 from 16" in text and "1450.250" in text and "0.9991" in text


SERVED = ["model", "protocol", "mode", "level", "sent", "errors", "p50 ms", "p90 ms", "p99 ms", "req/s", "infer/s",
          "server queue us", "server infer us", "mean batch", "cores busy"]


def test_the_benchmark_summary_keeps_its_key_columns_at_80_and_all_at_160():
    rows = [[model, protocol, "closed", level, 11248, 0, "0.960", "1.401", "3.794", "7486", "7486", "213", "254",
             "2.68", "94 / 96%"] for model in ("transformer", "minilm") for protocol in ("grpc", "http-lean")
            for level in (1, 8)]
    summary = f"## Served\n\nSome words.\n\n{markdown_table(SERVED, rows)}\n"
    narrow = render(FitMarkdown(summary), 80)
    assert "…" not in narrow and "Some words." in narrow
    for line in (line for line in narrow.splitlines() if line.split()[:1] in (["transformer"], ["minilm"])):
        assert line.split()[1] in ("grpc", "http-lean") and "0.960" in line and "7486" in line
    assert "Left out at 80 columns:" in narrow
    wide = render(FitMarkdown(summary), 160)
    assert "Left out" not in wide and all(h in wide for h in SERVED)


def test_a_key_column_stays_whole_and_what_did_not_fit_is_named():
    table = FitTable(Col("name", key=True), Col("note"), title="t")
    table.add_row("a" * 30, "words " * 10)
    text = render(table, 40)
    assert "a" * 30 in text and "words" not in text
    assert "Left out at 40 columns: note (COLUMNS=42 or more shows them)." in " ".join(text.split())
    assert "Left out" not in render(table, 42)
    assert "a" * 10 in render(table, 20)  # narrower than the key column itself: folded, not cropped
