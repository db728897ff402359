"""The project's own studies: tritonize's goals and the measurements behind docs/measurements.md and
docs/latency-floor.md, not a user's. This folder is part of the checkout only (not in the wheel:
pyproject.toml's packages leave it out); the checkout's in-place install imports it as
`tritonize.studies`.

- project.py: `tritonize bench --project`, the project's targets around the suite's measurements;
- turns.py: the ratios it judges them on, measured taking turns;
- stage_levers.py: levers on the batch-1 floor, each side by side with the defaults;
- replicas.py: 1 replica against more, side by side;
- test_client_overhead.py: what tritonize's client adds to a round trip (pytest-benchmark, by hand).

They take turns through bench/rounds.py, the one alternating-rounds loop.
"""
