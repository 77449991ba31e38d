"""What this CPU can run fast: the instruction sets that decide an engine's precision.

Reduced precision only saves work where the CPU has instructions for it: int8 dot products
(AVX-512 VNNI, AVX-VNNI, AMX-INT8) and bf16 arithmetic (AVX512-BF16, AMX-BF16). Without them an
int8 graph runs on emulated int8 dot products (AVX2 ``vpmaddubsw``) and a bf16 request is run in
fp32 by OpenVINO, so a bf16 engine is refused on such a CPU unless forced
(:func:`check_precision`). The flags come from ``/proc/cpuinfo``; every engine and served result
file records them (:func:`aln.benchmarks.machine.describe_machine`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
"""The instruction-set flags that decide which engines and precisions are fast on a CPU."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (empty where ``cpuinfo`` does not exist)."""
    if not cpuinfo.exists():
        return []
    match = re.search(r"^flags\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
    present = set(match.group(1).split()) if match else set()
    return [flag for flag in CPU_FLAGS if flag in present]


@dataclass(frozen=True)
class CpuCapabilities:
    """The capabilities an engine precision needs, from a CPU's flags.

    Attributes:
        flags: The :data:`CPU_FLAGS` present.
    """

    flags: tuple[str, ...]

    @classmethod
    def detect(cls) -> CpuCapabilities:
        """This machine's capabilities."""
        return cls(tuple(cpu_flags()))

    @property
    def avx2(self) -> bool:
        """AVX2 and FMA: the fp32 baseline every engine here is built for."""
        return "avx2" in self.flags and "fma" in self.flags

    @property
    def avx512(self) -> bool:
        """AVX-512 foundation."""
        return "avx512f" in self.flags

    @property
    def int8_dot_product(self) -> bool:
        """Native int8 dot products (VNNI in AVX-512 or AVX, or AMX-INT8)."""
        return any(f in self.flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))

    @property
    def native_bf16(self) -> bool:
        """Native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
        return any(f in self.flags for f in ("avx512_bf16", "amx_bf16"))

    @property
    def amx(self) -> bool:
        """Advanced Matrix Extensions tiles."""
        return "amx_tile" in self.flags

    def describe(self) -> dict[str, bool]:
        """What a result file records: each capability by name."""
        return {
            "avx2": self.avx2,
            "avx512": self.avx512,
            "vnni": self.int8_dot_product,
            "avx512_bf16": self.native_bf16,
            "amx": self.amx,
        }


class UnsupportedPrecisionError(ValueError):
    """A precision this CPU has no native instructions for (forcing it is allowed, not silent)."""


def check_precision(
    precision: str, capabilities: CpuCapabilities | None = None, *, force: bool = False
) -> None:
    """Refuse bf16 on a CPU without native bf16 unless ``force`` is set.

    int8 runs on every AVX2 CPU (slower without VNNI, which benchmark results record), so only
    bf16, which OpenVINO would silently run in fp32, is refused.

    Raises:
        UnsupportedPrecisionError: ``bf16`` on a CPU without AVX512-BF16 or AMX-BF16, not forced.
    """
    capabilities = capabilities or CpuCapabilities.detect()
    if precision == "bf16" and not capabilities.native_bf16 and not force:
        present = ", ".join(capabilities.flags) or "none of them"
        raise UnsupportedPrecisionError(
            "A precision of 'bf16' needs native bf16 (avx512_bf16 or amx_bf16), and this CPU has "
            f"{present}: OpenVINO would run the graph in fp32 with nothing saved. Use fp32 or "
            "int8, or force bf16 (--force-precision) to serve it on a bf16 CPU later"
        )
