"""The serving stage: a real tritonserver on a repository (TritonServer), where its threads run
(Placement) and how idle cores wake (poll_idle)."""
