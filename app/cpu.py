"""What this process's CPU offers: how many cores it may use, and whether it multiplies bf16 natively.

Read by the engine (which runtime and precision, how many inference requests at once) and by the
supervisor (how many threads each serving process gets). No model library is imported here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

# The instructions that multiply bf16 in hardware: AMX tiles (Intel Sapphire Rapids and later) and
# AVX-512 BF16 dot products (Intel Cooper Lake, AMD Zen 4 and Zen 5). AVX-NE-CONVERT only converts.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, less a cgroup CPU quota (a container's CPU limit) when lower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota
    return cores


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The first processor's feature flags as the kernel lists them; None where there is no /proc/cpuinfo."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class CpuCapabilities:
    """What the runtime choice depends on; built by :func:`cpu_capabilities`, or by hand in tests."""

    cores: int
    bf16_instructions: tuple[str, ...] = ()  # which of NATIVE_BF16_FLAGS the CPU has (empty: none)

    @property
    def native_bf16(self) -> bool:
        return bool(self.bf16_instructions)


def cpu_capabilities(runtime_says_bf16: bool | None = None) -> CpuCapabilities:
    """This machine's. ``runtime_says_bf16``: whether OpenVINO lists BF16 among the CPU's capabilities (None: not asked).

    Both must agree where both can be asked: the kernel's flags say what the silicon has, OpenVINO
    whether its CPU plugin will use it (an older OpenVINO on a newer CPU may not).
    """
    flags = cpu_flags()
    if flags is None:  # not Linux: only the runtime can say
        found: tuple[str, ...] = ("reported by OpenVINO",) if runtime_says_bf16 else ()
    else:
        found = tuple(flag for flag in NATIVE_BF16_FLAGS if flag in flags)
        if runtime_says_bf16 is False:
            found = ()
    return CpuCapabilities(available_cores(), found)
