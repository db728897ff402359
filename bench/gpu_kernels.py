"""The Triton kernels' check and timing on an NVIDIA GPU, as the script GPU machines are told to run:

    python -P bench/gpu_kernels.py --out docs/results/gpu-<date> [--quick]
    python -m tritonize.bench.gpu_kernels --out /tmp/smoke --smoke   (the same, by module name)

The code is tritonize.kernels.benchmark, beside the kernels, and like them needs only torch and
triton; this entry only calls it (an absolute import, so that it also runs by path).
"""
import sys

from tritonize.kernels.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
