"""The GPUs the kernels are compiled for, with the per-SM limits an occupancy estimate needs.

The limits are NVIDIA's published ones (CUDA C++ Programming Guide, "Technical Specifications per
Compute Capability", and the A100 / H100 tuning guides). ``max_shared_per_block`` is the opt-in
maximum a kernel can ask for, the number Triton compares a kernel's shared memory with before it
launches it (``OutOfResources: shared memory``); a kernel over it never runs on that GPU.
"""
from dataclasses import dataclass

REGS_PER_SM = 65536  # 64K 32-bit registers per SM on sm_80 and sm_90
MAX_WARPS_PER_SM = 64  # 2048 threads
MAX_BLOCKS_PER_SM = 32
REG_ALLOC_UNIT = 256  # registers are handed to warps in units of 256 (8 per thread)
MAX_REGS_PER_THREAD = 255
RESERVED_SHARED_PER_BLOCK = 1024  # sm_80 and later keep 1 KB of shared memory per block for the system


@dataclass(frozen=True)
class GpuTarget:
    name: str  # the ptxas architecture, e.g. "sm_90a"
    capability: int  # what Triton's GPUTarget takes: 80, 90
    gpus: str
    max_shared_per_block: int  # bytes, opt-in maximum
    shared_per_sm: int  # bytes
    tensor_core_ops: tuple[str, ...]  # the SASS opcodes of this GPU's tensor-core instructions
    wgmma: bool  # Hopper's warpgroup MMA (HGMMA in SASS): the fast path for 16-bit dots


TARGETS = {
    "sm_80": GpuTarget("sm_80", 80, "A100", 163 * 1024, 164 * 1024, ("HMMA",), wgmma=False),
    "sm_90a": GpuTarget("sm_90a", 90, "H100, H200", 227 * 1024, 228 * 1024, ("HGMMA", "HMMA"), wgmma=True),
}


def target_named(name: str) -> GpuTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown GPU target {name!r}: expected one of {', '.join(TARGETS)}") from None


def target_for_capability(major: int, minor: int) -> GpuTarget:
    """The target whose limits describe a GPU of this compute capability (the GPU run's own card)."""
    cap = major * 10 + minor
    for target in TARGETS.values():
        if target.capability == cap:
            return target
    raise ValueError(f"no target for compute capability {major}.{minor}: this check knows "
                     f"{', '.join(f'{t.name} ({t.gpus})' for t in TARGETS.values())}")


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    limited_by: str  # "registers", "shared memory", "warps" or "blocks"

    @property
    def fraction(self) -> float:
        """Resident warps over the SM's maximum: the share of the SM's warp slots in use."""
        return self.warps_per_sm / MAX_WARPS_PER_SM


def occupancy(target: GpuTarget, registers: int, shared_bytes: int, num_warps: int) -> Occupancy:
    """Blocks one SM holds at once, from registers, shared memory and warps (the occupancy calculator's
    rules); 0 blocks when one block alone does not fit."""
    regs_per_warp = -(-max(registers, 1) * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    limits = {
        "registers": (REGS_PER_SM // regs_per_warp) // num_warps,
        "shared memory": target.shared_per_sm // (shared_bytes + RESERVED_SHARED_PER_BLOCK),
        "warps": MAX_WARPS_PER_SM // num_warps,
        "blocks": MAX_BLOCKS_PER_SM,
    }
    if shared_bytes > target.max_shared_per_block:
        limits["shared memory"] = 0
    limited_by = min(limits, key=limits.get)
    blocks = limits[limited_by]
    return Occupancy(blocks, blocks * num_warps, limited_by)
