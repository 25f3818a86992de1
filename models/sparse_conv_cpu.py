"""The CPU path of :class:`~models.SparseConv2d` in C++: two native passes and the layer's
autograd function.

- **The mask side**: the window counts, the new mask, the renormalization scale, whether
  every pixel is observed and the masked input ``x * m``, in one pass. In eager PyTorch that
  is about ten small operations, each writing a fresh mask-sized tensor that a training step
  then reads back from memory rather than cache, and ``x * m`` reads the mask once more.
- **The backward rescale**: ``grad_y * scale`` and the bias gradient in one pass, which in
  eager PyTorch read ``grad_y`` twice (inside the autograd function below).
- **The layer's autograd function** (``_SparseConvFunction`` in :mod:`models.sparse_conv`) as a
  C++ autograd function, the same operations in the same order: a Python autograd function
  costs tens of microseconds of interpreter time per call in each pass, most of it spent
  waiting on memory in a training step, where the convolution has just flushed the caches.

On a 3x3 layer the three take 0.1-0.15x of ``nn.Conv2d``'s time off the layer
(``docs/decisions.md``, "What we wrote ourselves"; ``docs/performance.md``, issue 30). The
mask side gives the same bits as the eager path, and the autograd function the same as the
Python one; the bias gradient is summed in double, so it differs from PyTorch's float32 sum
by float32 rounding.

The C++ is compiled on first use with :func:`torch.utils.cpp_extension.load` (the system's
C++ compiler and the ``ninja`` package; the build is cached under ``TORCH_EXTENSIONS_DIR``, by
default ``~/.cache/torch_extensions``). Where it cannot be built, or with
``SPARSE_CONV_NATIVE=0``, both functions return ``None`` and the layer takes its eager
path: the same results up to that rounding, slower. A failed build is reported once per
process, as a warning.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["native_mask_side", "native_sparse_conv"]

_SOURCE = Path(__file__).with_name("sparse_conv_cpu.cpp")
_DISABLE_VARIABLE = "SPARSE_CONV_NATIVE"


def native_mask_side(
    m: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out_size: tuple[int, int],
    window_area: int,
    x: Tensor | None = None,
) -> tuple[Tensor, Tensor, bool, Tensor | None] | None:
    """The new mask, the scale, whether every pixel of ``m`` is observed and ``x * m``, in one
    pass.

    Masking ``x`` in the same pass saves the layer a read of the mask from memory: each image's
    ``x * m`` is computed right after its mask side, with its mask in cache.

    Args:
        m: ``(N, 1, H, W)`` float32 or float64 CPU mask with values in {0, 1}.
        kernel_size, stride, padding, dilation: The convolution's, as pairs.
        out_size: ``(H_out, W_out)``, already checked to be at least 1x1.
        window_area: ``kh * kw``.
        x: The ``(N, C, H, W)`` input to mask, or ``None``. Masked only in ``m``'s dtype and in
            the contiguous or channels_last layout (otherwise it is left to the caller).

    Returns:
        ``(new_mask, scale, full, xm)``: the first two ``(N, 1, H_out, W_out)`` in ``m``'s
        dtype and equal bit for bit to ``_mask_and_scale(window_count(m, ...))``; ``xm`` is
        ``x * m`` in ``x``'s layout, bit for bit, or ``None`` where ``x`` was not masked or
        ``full`` is true (then ``x * m`` is ``x``). ``None`` where the native code is
        unavailable or ``m`` is of another dtype or device.
    """
    if m.device.type != "cpu" or m.dtype not in (torch.float32, torch.float64):
        return None
    library = _library()
    if library is None:
        return None
    if x is not None and not (
        x.dtype == m.dtype
        and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
    ):
        x = None
    return library.mask_side(
        m.contiguous(),
        x,
        *kernel_size,
        *stride,
        *padding,
        *dilation,
        *out_size,
        float(window_area),
    )


def native_sparse_conv(
    x: Tensor,
    m: Tensor | None,
    scale: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    premasked: bool,
    xm: Tensor | None,
) -> Tensor | None:
    """``_SparseConvFunction.apply`` with the same arguments, as a C++ autograd function.

    Returns:
        ``conv(x * m, W) * scale + b``, whose backward gives the same gradients as
        ``_SparseConvFunction``'s (bit for bit where both take the same rescale); ``None``
        where the native code is unavailable, or for a device other than the CPU or a dtype
        other than float32 and float64.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    library = _library()
    if library is None:
        return None
    return library.sparse_conv(x, weight, bias, m, scale, xm, stride, padding, dilation, premasked)


@functools.cache  # one build and load per process; the compiled module is immutable
def _library() -> ModuleType | None:
    if os.environ.get(_DISABLE_VARIABLE, "1") == "0":
        return None
    compiler = os.environ.get("CXX", "c++")  # what torch.utils.cpp_extension runs
    try:
        if shutil.which(compiler) is None:
            raise FileNotFoundError(f"no C++ compiler {compiler!r} on PATH")
        return _build()
    except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        warnings.warn(
            f"SparseConv2d: the native CPU passes could not be built ({reason[:160]}); using "
            f"the eager path (same results, slower). Install a C++ compiler, or set "
            f"{_DISABLE_VARIABLE}=0 to choose the eager path without this warning.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


def _build() -> ModuleType:
    # cpp_extension logs warnings meant for extension authors (CUDA_HOME missing on a CPU-only
    # machine, an unfamiliar compiler); a failed build is reported by _library instead.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        # Portable -O3, no -march=native: the build cache may be shared by machines whose
        # CPUs differ (a home directory on a cluster); the hot loops pick their instruction
        # set at load time instead (target_clones in the source). -fopenmp: at::parallel_for
        # runs on PyTorch's OpenMP threads (serially without it).
        return cpp_extension.load(
            name="sparse_conv_cpu",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    finally:
        logger.setLevel(level)
