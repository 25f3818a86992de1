"""hpo.runtime.memory: what an allocation failure is, and that a failed trial's memory is
released before the worker goes on (several workers may share one GPU)."""

from __future__ import annotations

import weakref

import pytest
import torch

from hpo.errors import OutOfMemoryTrialError
from hpo.runtime import memory
from hpo.runtime.memory import is_allocation_failure, run_releasing_memory

CPU = torch.device("cpu")


def _cpu_allocation_failure() -> RuntimeError:
    try:
        torch.empty(2**62, dtype=torch.uint8)  # more than any machine has
    except RuntimeError as e:
        return e
    raise AssertionError("allocating 4 EiB succeeded")


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        _cpu_allocation_failure(),
    ],
)
def test_allocation_failures_are_recognised_whatever_their_message(error: Exception) -> None:
    assert is_allocation_failure(error)


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch"), ValueError("out of memory")])
def test_other_errors_are_not_allocation_failures(error: Exception) -> None:
    assert not is_allocation_failure(error)


def test_a_failed_allocation_releases_the_trial_tensors_before_the_error_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refs: list[weakref.ref[torch.Tensor]] = []
    alive_at_release: list[bool] = []

    def train() -> float:
        activations = torch.ones(1000)  # referenced by this frame, so by the traceback
        refs.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(
        memory, "release_memory", lambda device: alive_at_release.append(refs[0]() is not None)
    )
    with pytest.raises(OutOfMemoryTrialError, match="^out of memory on cpu: CUDA out of memory"):
        run_releasing_memory(train, CPU)
    assert alive_at_release == [False]


def test_other_errors_pass_through_unreleased(monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[torch.device] = []
    monkeypatch.setattr(memory, "release_memory", released.append)

    def train() -> float:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_releasing_memory(train, CPU)
    assert released == []
    assert run_releasing_memory(lambda: 0.5, CPU) == 0.5
