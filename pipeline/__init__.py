"""The stages chained: current artifacts for a model, and `tritonize run`'s main job.

Below the CLI (which only parses arguments and prints) and above the stages it chains: export,
optimize, the repository, a real server, the client, the benchmarks.
"""

# The main job's models: every built-in ONNX model and the kernel models of the cnn and the transformer.
# Here rather than in main_job.py so that the CLI's help names them without importing the stages.
DEFAULT_MODELS = ("mlp", "cnn", "lstm", "transformer", "minilm", "cnn_fused", "transformer_flash")
