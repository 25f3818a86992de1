"""hpo.runtime.cpu: freed tensor memory stays mapped, so a repeated step stops page-faulting.

Each case runs in a fresh interpreter: the allocator settings are process-wide and cannot be
put back exactly, and the page-fault counts must not see other tests' allocations.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator knobs are glibc's",
)

# A "training step" in miniature: two 40 MiB tensors alive at once, then both freed. Blocks
# above 32 MiB are beyond the largest threshold glibc's defaults ever adapt to, so by default
# every step maps them anew (smaller blocks fault in some processes and not in others,
# depending on the heap's layout). Prints the minor page faults per step over 5 steps, after
# 10 untimed ones (with retained memory the heap reaches its steady size in 3-7 steps).
_STEP_FAULTS = """
import resource, sys, torch
from hpo.runtime.cpu import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def step():
    live = [torch.ones(10 << 20) for _ in range(2)]
    del live
for _ in range(10):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""

_PAGES_PER_STEP = 2 * (40 << 20) // 4096  # 20,480 pages of 4 KiB touched by one step


def _faults_per_step(mode: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _STEP_FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(result.stdout.strip().splitlines()[-1])


def test_default_glibc_settings_fault_in_every_step_and_retaining_stops_it() -> None:
    default = _faults_per_step("default")
    retained = _faults_per_step("retain")
    # glibc returns the freed blocks to the kernel, so each step faults its pages in again.
    assert default > 0.5 * _PAGES_PER_STEP
    assert retained < 0.01 * _PAGES_PER_STEP
