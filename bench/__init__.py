"""Benchmarks and their reports, in rooms (docs/design.md, "bench/ in rooms"):

- load/: the load generators and what they measure a server with (closed and open loops, the lean
  HTTP sender, wrk, perf_analyzer, each core's busy share, a served run's row);
- suite/: the user's suite, `tritonize bench` (and `tritonize stages`);
- report/: a run's results and its report (summary, CSV, plots, provenance);
- peers/: `tritonize peers`, tritonize beside other servers, with the apps they run in their own venvs.

Beside them, record.py (every result's JSON form) and rounds.py (the alternating rounds that every
side-by-side comparison takes turns in). The project's own studies are not here: they live in the
checkout's studies/ folder, which is not installed.
"""
