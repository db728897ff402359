"""tritonize: PyTorch models to NVIDIA Triton Inference Server, with benchmarks that prove the speed."""
__version__ = "0.1.0"
