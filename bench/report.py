"""The benchmark report: raw JSON, a Markdown summary, perf_analyzer-style CSV and PNG plots."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tritonize.artifacts import RESULTS_FILE, write_json  # noqa: E402
from tritonize.bench.perf_analyzer import COLUMNS as PERF_ANALYZER_COLUMNS  # noqa: E402
from tritonize.bench.perf_analyzer import LATENCY_COLUMNS, SERVER_COLUMNS  # noqa: E402



def _us(ms: float) -> str:
    return "" if ms is None or math.isnan(ms) else f"{ms * 1e3:.0f}"


def perf_analyzer_rows(served: list[dict]) -> list[dict]:
    """Our closed-loop rows in perf_analyzer's CSV layout. The client's send/receive split is not
    visible through tritonclient, so those two columns stay empty rather than guessed."""
    rows = []
    for r in served:
        if r["mode"] != "closed":
            continue
        server_us = sum(r[key] for key in SERVER_COLUMNS.values())
        rows.append({
            "Model": r["model"], "Protocol": r["protocol"], "Batch": r["batch"],
            "Concurrency": int(r["level"]), "Inferences/Second": f"{r['infer_per_s']:.1f}", "Client Send": "",
            "Network+Server Send/Recv": _us(r["mean_ms"] - server_us / 1e3),
            **{column: f"{r[key]:.0f}" for column, key in SERVER_COLUMNS.items()}, "Client Recv": "",
            **{column: _us(r[key]) for column, key in LATENCY_COLUMNS.items()}, "Avg latency": _us(r["mean_ms"]),
        })
    return rows


def write_csv(path: Path, served: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Model", "Protocol", "Batch", *PERF_ANALYZER_COLUMNS])
        writer.writeheader()
        writer.writerows(perf_analyzer_rows(served))


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cores(busy: dict[str, float]) -> str:
    """Each core's busy share, in core order: "71 / 97%"."""
    ordered = sorted(busy.items(), key=lambda item: int(item[0].removeprefix("cpu")))
    return " / ".join("-" if math.isnan(f) else f"{100 * f:.0f}" for _, f in ordered) + "%"


def _idle_line(idle: dict | None) -> str:
    if not idle:
        return "CPU idle policy: not recorded."
    extra = f", guest_halt_poll_ns {idle['guest_halt_poll_ns']}" if "guest_halt_poll_ns" in idle else ""
    if "latency_bound_us" in idle:  # another process bounds wake-up latency for the whole run
        extra += f", a PM QoS CPU latency bound of {idle['latency_bound_us']} us held when the run started"
    return (f"CPU idle policy: driver {idle['driver']}, governor {idle['governor']}, states "
            f"{', '.join(idle['states']) or 'none'}{extra}.")


def markdown(results: dict) -> str:
    m = results["machine"]
    parts = [f"# tritonize benchmark: {m['host']}, {results['date']}",
             f"{m['cpu']} ({m['cores']} cores), {m['memory_gb']} GB, GPU: {m['gpu']}; git {results['git_commit']}; "
             f"{', '.join(f'{k} {v}' for k, v in results['versions'].items())}",
             _idle_line(m.get("cpuidle")),
             "Ratios are measured side by side in one run; absolute CPU times drift ~20% between runs on this kind of machine."]
    if results.get("targets"):
        parts += ["## Targets", _table(["target", "measured", "goal", "met"],
                                       [[t["name"], t["measured"], t["goal"], "yes" if t["met"] else "**no**"]
                                        for t in results["targets"]])]
    if results.get("floor_by_setup"):
        block = next(iter(results["floor_by_setup"].values()))["block_requests"]
        parts += ["## Host setup: placement and idle policy (served mlp, batch 1, gRPC, concurrency 1)", _table(
            ["setup", "requests each", "mlp p50 ms", "do-nothing p50 ms", "ratio", "per-block ratio, quartiles",
             "resting idle entries per request (mlp / do-nothing)", "server compute infer us (mlp / do-nothing)"],
            [[label, f["requests"][f["model"]], f"{f['p50_ms']:.3f}", f"{f['noop_p50_ms']:.3f}", f"{f['ratio']:.3f}x",
              " / ".join(f"{q:.3f}" for q in f["block_ratio_quartiles"]),
              " / ".join(f"{n:.2f}" for n in f["resting_idle_entries_per_request"].values()),
              " / ".join(f"{b['server_compute_infer_us']:.1f}" for b in f["server"].values())]
             for label, f in results["floor_by_setup"].items()]),
                  f"The models and setups take turns in blocks of {block} requests, so a slow spell of the host "
                  "falls on all alike. Server compute infer is the server's own count per request (statistics API): the "
                  "model's call from the server to its Python stub and back, so the difference between the two is "
                  "what the model's own path costs inside the server.",
                  "; ".join(dict.fromkeys(f"{f['placement']}: {f['where']}" for f in results["floor_by_setup"].values()))
                  + ". poll idle: idle cores poll instead of entering an idle state they must be woken from, while the "
                  "benchmark holds a PM QoS CPU latency request of 0 us (serving/idle.py; `tritonize serve "
                  "--poll-idle` serves that way). Resting idle entries are counted over the whole host."]
    if results.get("scaling"):
        model = results["scaling"][0]["model"]
        parts += [f"## Scaling with dynamic batching (served {model}, concurrency 1 and 8 taking turns)", _table(
            ["setup", "load generator", "turns", "c1 req/s", "c8 req/s", "c8 mean batch", "c8 / c1",
             "per-turn ratio, quartiles", "cores busy, c1", "cores busy, c8"],
            [[r["setup"], r["protocol"], r["turns"], f"{r['levels']['c1']['infer_per_s']:.0f}",
              f"{r['levels']['c8']['infer_per_s']:.0f}", f"{r['levels']['c8']['mean_batch']:.2f}", f"{r['ratio']:.2f}x",
              " / ".join(f"{q:.2f}" for q in r["turn_ratio_quartiles"]), _cores(r["levels"]["c1"]["cores_busy"]),
              _cores(r["levels"]["c8"]["cores_busy"])] for r in results["scaling"]]),
                  f"The two levels take turns in windows of {results['scaling'][0]['window_s']} s over the load "
                  "generators and setups, so a slow spell of the host falls on both alike; the targets are judged on "
                  "these rows. The concurrency sweep below measures each level once. Cores busy: each core's share "
                  "of the time not idle, host-wide, in core order; with placement the instance cores are the upper "
                  "half, so a full last figure means the model's own work is what bounds throughput."]
    rows = results.get("inprocess", [])
    if rows:
        eager = {(r["model"], r["batch"]): r["median_us"] for r in rows if r["backend"] == "torch_eager"}
        parts += ["## In-process latency (median of pytest-benchmark rounds)", _table(
            ["model", "batch", "backend", "median (us)", "IQR (us)", "rounds", "vs eager"],
            [[r["model"], r["batch"], r["backend"], f"{r['median_us']:.1f}", f"{r['iqr_us']:.1f}", r["rounds"],
              f"{eager[(r['model'], r['batch'])] / r['median_us']:.2f}x" if (r["model"], r["batch"]) in eager else ""]
             for r in rows])]
    served = results.get("served", [])
    if served:
        parts += ["## Served (real tritonserver, loopback)", f"Placement: {results.get('placement', 'none')}. "
                  "Protocols: grpc and http are tritonclient's Python clients, what Python users of the server see; "
                  "http-lean is bench/lean_http.py, a kept-alive socket with the request encoded once, which costs "
                  "the machine a fraction of what tritonclient does per request, so its rows show what the server "
                  "can do.", _table(
            ["model", "protocol", "mode", "level", "sent", "errors", "p50 ms", "p90 ms", "p99 ms", "req/s", "infer/s",
             "server queue us", "server infer us", "mean batch", "cores busy"],
            [[r["model"], r["protocol"], r["mode"], r["level"], r["sent"], r["errors"], f"{r['p50_ms']:.3f}",
              f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['throughput_rps']:.0f}", f"{r['infer_per_s']:.0f}",
              f"{r['server_queue_us']:.0f}", f"{r['server_compute_infer_us']:.0f}", f"{r['mean_batch']:.2f}",
              _cores(r["cores_busy"])] for r in served])]
    if results.get("perf_analyzer"):
        parts += _perf_analyzer_section(results["perf_analyzer"], served)
    if results.get("sweep"):
        s = results["sweep"]
        parts += [f"## Dynamic-batching sweep: {s['model']} (p99 budget {s['p99_budget_ms']} ms, concurrency {s['concurrency']}, "
                  f"{s.get('protocol', 'grpc')})",
                  _table(["max_queue_delay_us", "instances", "preferred", "req/s", "p99 ms", "within budget"],
                         [[c["max_queue_delay_us"], c["instance_count"], c["preferred_batch_sizes"],
                           f"{c['throughput_rps']:.0f}", f"{c['p99_ms']:.3f}", "yes" if c["within_budget"] else "no"]
                          for c in s["configs"]]),
                  f"Best within budget: {s['best']}"]
    if results.get("skipped"):
        by_reason: dict[str, list[str]] = {}
        for what, why in sorted(results["skipped"].items()):
            by_reason.setdefault(why, []).append(what)
        parts += ["## Not run, and why", "\n".join(f"- {why} ({len(whats)}: {', '.join(whats)})"
                                                    for why, whats in by_reason.items())]
    return "\n\n".join(parts) + "\n"


def _perf_analyzer_section(theirs: list[dict], served: list[dict]) -> list[str]:
    """perf_analyzer's rows beside ours for the same model, protocol and concurrency (closed loop)."""
    ours = {(r["model"], r["protocol"], r["level"]): r for r in served if r["mode"] == "closed"}

    def both(key: str, row: dict, fmt: str) -> str:
        mine = ours.get((row["model"], row["protocol"], int(row["level"]))) or {}
        return " / ".join("-" if r.get(key) is None else format(r[key], fmt) for r in (mine, row))

    return ["## perf_analyzer beside ours (closed loop, same server, same request tensors)", _table(
        ["model", "protocol", "concurrency", "p50 ms (ours / perf_analyzer)", "p99 ms (ours / perf_analyzer)",
         "infer/s (ours / perf_analyzer)", "server queue us (ours / perf_analyzer)",
         "server infer us (ours / perf_analyzer)"],
        [[r["model"], r["protocol"], int(r["level"]), both("p50_ms", r, ".3f"), both("p99_ms", r, ".3f"),
          both("infer_per_s", r, ".0f"), both("server_queue_us", r, ".0f"), both("server_compute_infer_us", r, ".0f")]
         for r in theirs if r["mode"] == "closed"])]


def plots(results: dict, folder: Path) -> list[str]:
    written = []
    closed = [r for r in results.get("served", []) if r["mode"] == "closed"]
    if closed:
        fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(12, 4.5))
        for key in sorted({(r["model"], r["protocol"], r["batch"]) for r in closed}):
            pts = sorted((r["level"], r["p50_ms"], r["p99_ms"], r["infer_per_s"]) for r in closed
                         if (r["model"], r["protocol"], r["batch"]) == key)
            label = f"{key[0]} {key[1]} b{key[2]}"
            ax_lat.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{label} p50")
            ax_thr.plot([p[0] for p in pts], [p[3] for p in pts], marker="o", label=label)
        ax_lat.set(xlabel="concurrency", ylabel="latency p50 (ms)", title="Latency vs concurrency", xscale="log", yscale="log")
        ax_thr.set(xlabel="concurrency", ylabel="inferences/s", title="Throughput vs concurrency", xscale="log")
        levels = sorted({r["level"] for r in closed})
        for ax in (ax_lat, ax_thr):
            ax.set_xticks(levels, [f"{lv:g}" for lv in levels])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "served.png", dpi=110)
        plt.close(fig)
        written.append("served.png")
    rows = results.get("inprocess", [])
    if rows:
        groups = sorted({(r["model"], r["batch"]) for r in rows})
        backends = sorted({r["backend"] for r in rows})
        fig, ax = plt.subplots(figsize=(max(8, len(groups) * 1.2), 4.5))
        width = 0.8 / len(backends)
        for i, backend in enumerate(backends):
            values = {(r["model"], r["batch"]): r["median_us"] for r in rows if r["backend"] == backend}
            ax.bar([g + i * width for g in range(len(groups))], [values.get(g, 0) for g in groups], width, label=backend)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [f"{m}\nb{b}" for m, b in groups], fontsize=8)
        ax.set(ylabel="median latency (us)", yscale="log", title="In-process latency per backend")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "inprocess.png", dpi=110)
        plt.close(fig)
        written.append("inprocess.png")
    return written


def write_report(results: dict, folder: Path) -> list[str]:
    """Write every report file into `folder` (which the caller swaps in atomically)."""
    write_json(folder / RESULTS_FILE, results)
    (folder / "summary.md").write_text(markdown(results))
    write_csv(folder / "served_perf_analyzer.csv", results.get("served", []))
    return [RESULTS_FILE, "summary.md", "served_perf_analyzer.csv", *plots(results, folder)]
