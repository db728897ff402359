"""The user's suite (`tritonize bench`): what a run is asked to do (options.py), its parts (in-process
latency, the served rows, the dynamic-batching sweep, the SLO verdicts), the order they run in (run.py)
and its progress; also the per-stage breakdown of one request (`tritonize stages`, stages.py)."""
