"""The layer, the networks and the batches on a CUDA GPU: the same results as on the CPU.

On CUDA, ``SparseConv2d`` counts observed pixels with one convolution by its ones buffer (the
CPU uses shifted adds) and cuDNN picks its own convolution algorithms, so these tests compare
every output and gradient with the CPU in float64 and check the properties that must hold
exactly (unobserved pixels, the new mask) on the GPU itself. Skipped where there is no GPU;
``docs/performance.md`` records where they last ran on one.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stripes import stripes_task, training_losses

from data import SparseBatches
from data.dataset import TensorSplit
from models import CNNConfig, ModelFamily, SparseConv2d, build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
# (kernel_size, stride, padding, dilation), as in test_sparse_conv.py
CONFIGS = [(3, 1, 1, 1), (5, 2, 2, 1), (3, 1, 2, 2), (11, 1, 5, 1), (4, 2, 1, 1)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(shape=(2, 3, 19, 17), density=0.3, seed=1):
    x = torch.randn(shape, generator=_gen(seed), dtype=torch.float64)
    mask = torch.rand(shape[0], 1, *shape[2:], generator=_gen(seed + 1)) < density
    return x, mask


def _forward_backward(layer: SparseConv2d, x: torch.Tensor, mask: torch.Tensor, grad_seed: int):
    x = x.detach().clone().requires_grad_(True)
    y, new_mask = layer(x, mask)
    grad_y = torch.randn(y.shape, generator=_gen(grad_seed), dtype=y.dtype).to(y.device)
    y.backward(grad_y)
    return y, new_mask, x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("k,s,p,d", CONFIGS)
def test_layer_on_cuda_equals_the_cpu_in_outputs_masks_and_gradients(k, s, p, d):
    torch.manual_seed(0)
    cpu_layer = SparseConv2d(3, 4, k, stride=s, padding=p, dilation=d).double()
    cuda_layer = SparseConv2d(3, 4, k, stride=s, padding=p, dilation=d).double()
    cuda_layer.load_state_dict(cpu_layer.state_dict())
    cuda_layer.to(CUDA)
    x, mask = _inputs()
    on_cpu = _forward_backward(cpu_layer, x, mask, grad_seed=3)
    on_cuda = _forward_backward(cuda_layer, x.to(CUDA), mask.to(CUDA), grad_seed=3)
    assert torch.equal(on_cuda[1].cpu(), on_cpu[1])  # new mask: exact integer counts
    names = ("y", "grad_x", "grad_w", "grad_b")
    for name, a, b in zip(names, on_cuda[:1] + on_cuda[2:], on_cpu[:1] + on_cpu[2:], strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("k,s,p,d", CONFIGS)
def test_on_cuda_unobserved_pixels_change_nothing_and_get_zero_gradient(k, s, p, d):
    layer = SparseConv2d(3, 4, k, stride=s, padding=p, dilation=d).to(CUDA)
    x, mask = _inputs()
    x, mask = x.float().to(CUDA), mask.to(CUDA)
    wild = torch.where(mask, x, 1e3 * torch.randn_like(x))
    y, new_mask, grad_x, _, _ = _forward_backward(layer, x, mask, grad_seed=4)
    assert torch.equal(layer(wild, mask)[0], y)
    assert torch.all(grad_x[~mask.expand_as(grad_x)] == 0)
    padded = F.pad(mask.float(), (p, p, p, p))
    assert torch.equal(new_mask, F.max_pool2d(padded, k, s, 0, d))


def test_gradcheck_float64_on_cuda():
    torch.manual_seed(0)
    layer = SparseConv2d(2, 3, 3, padding=1).double().to(CUDA)
    x, mask = _inputs((2, 2, 5, 5), density=0.5, seed=21)
    x = x.to(CUDA).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: layer(x, mask.to(CUDA))[0], (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_on_cuda_is_close_to_float32_with_float32_parameter_gradients(dtype):
    torch.manual_seed(0)
    layer = SparseConv2d(3, 8, 3, padding=1).to(CUDA)
    x, mask = _inputs((4, 3, 16, 16), density=0.5)
    x, mask = x.float().to(CUDA), mask.to(CUDA)
    reference, _ = layer(x, mask)
    reference.sum().backward()
    grads = [layer.weight.grad.clone(), layer.bias.grad.clone()]
    layer.zero_grad()
    with torch.autocast("cuda", dtype=dtype):
        y, _ = layer(x, mask)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)
    y.float().sum().backward()
    for got, want in zip((layer.weight.grad, layer.bias.grad), grads, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


@pytest.mark.parametrize("family", list(ModelFamily))
def test_networks_on_cuda_give_the_cpu_logits(family):
    torch.manual_seed(0)
    config = CNNConfig(1, 10, depth=6, pool_after=(0, 2))
    cpu_model = build_model(family, config).double()
    cuda_model = build_model(family, config).double()
    cuda_model.load_state_dict(cpu_model.state_dict())
    cuda_model.to(CUDA)
    x, mask = _inputs((4, 1, 28, 28), density=0.1)
    x = x * mask
    expected = cpu_model(x, mask)
    torch.testing.assert_close(cuda_model(x.to(CUDA), mask.to(CUDA)).cpu(), expected)


@pytest.mark.parametrize("family", list(ModelFamily))
def test_networks_learn_on_cuda(family):
    torch.manual_seed(0)
    x, mask, labels = (t.to(CUDA) for t in stripes_task())
    model = build_model(family, CNNConfig(1, 2, depth=3, kernel_schedule=(3, 3, 1), width=8))
    losses = training_losses(model.to(CUDA), x, mask, labels)
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5]), losses


def test_validation_batches_on_cuda_equal_the_cpu_ones():
    """Fixed validation masks are drawn on the CPU, so every device validates on the same inputs."""
    images = torch.randint(0, 256, (10, 1, 8, 8), generator=_gen(0), dtype=torch.uint8)
    split = TensorSplit(images, torch.arange(10))
    kwargs = dict(sparsity=0.7, batch_size=4, mean=(0.5,), std=(0.25,), seed=3, fixed_masks=True)
    on_cpu = list(SparseBatches(split, device="cpu", **kwargs).epoch(0))
    on_cuda = list(SparseBatches(split, device=CUDA, **kwargs).epoch(0))
    assert len(on_cpu) == len(on_cuda) == 3
    for cpu_batch, cuda_batch in zip(on_cpu, on_cuda, strict=True):
        for a, b in zip(cpu_batch, cuda_batch, strict=True):
            assert b.device.type == "cuda"
            torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-6)


# --- the training path on CUDA: batches, fit, bf16, compile, a trial, several devices -------


def _stripes_batches(device: torch.device, n: int = 128, batch: int = 32):
    x, mask, labels = (t.to(device) for t in stripes_task(n=n, hw=12, seed=0))
    return [
        (x[i : i + batch], mask[i : i + batch].float(), labels[i : i + batch])
        for i in range(0, n, batch)
    ]


class _Repeated:
    def __init__(self, batches):
        self.batches = batches

    def epoch(self, epoch: int):
        return self.batches


def _fit_losses(family, device, execution):
    from hpo.training import fit
    from hpo.training.recipe import Optimization

    torch.manual_seed(0)
    config = CNNConfig(1, 2, depth=3, kernel_schedule=(3, 3, 1), width=8)
    model = execution.prepare(build_model(family, config), device)
    optimization = Optimization(torch.optim.Adam(model.parameters(), lr=1e-2))
    batches = _stripes_batches(device)
    result = fit(model, optimization, _Repeated(batches), 12, validation=_Repeated(batches),
                 autocast=execution.autocast_dtype)  # fmt: skip
    return list(result.train_losses), result.best_metrics.accuracy


@pytest.mark.parametrize("family", [ModelFamily.DENSE, ModelFamily.SPARSE])
def test_bf16_training_on_cuda_follows_fp32_over_many_steps(family):
    from hpo.runtime.execution import Execution

    fp32, fp32_accuracy = _fit_losses(family, CUDA, Execution("fp32"))
    bf16, bf16_accuracy = _fit_losses(family, CUDA, Execution("bf16"))
    assert fp32[-1] < 0.1 * fp32[0]
    assert bf16 == pytest.approx(fp32, rel=0.1, abs=0.02)
    assert bf16_accuracy >= fp32_accuracy - 0.05


def test_the_sparse_layer_counts_in_float32_under_cuda_autocast():
    """On CUDA the count is a convolution with the ones kernel: under autocast it must still be
    exact (121 observed pixels / 3 is not 40.5)."""
    layer = SparseConv2d(1, 4, 11, padding=5).to(CUDA)
    x, mask = _inputs((2, 1, 23, 23), density=0.6)
    x, mask = x.float().to(CUDA), mask.to(CUDA)
    reference, reference_mask = layer(x, mask)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, new_mask = layer(x, mask)
    assert torch.equal(new_mask.float(), reference_mask)
    torch.testing.assert_close(y.float(), reference, rtol=0.03, atol=0.03)


def test_compiled_training_on_cuda_gives_the_eager_losses():
    from hpo.runtime.execution import Execution

    eager, _ = _fit_losses(ModelFamily.SPARSE, CUDA, Execution("fp32"))
    compiled, _ = _fit_losses(ModelFamily.SPARSE, CUDA, Execution("fp32", compile=True))
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-3)


def test_training_batches_on_cuda_are_normalized_masked_and_seeded():
    images = torch.randint(0, 256, (40, 1, 8, 8), generator=_gen(0), dtype=torch.uint8)
    split = TensorSplit(images, torch.arange(40) % 10)
    kwargs = dict(sparsity=0.7, batch_size=16, mean=(0.5,), std=(0.25,), seed=3, shuffle=True)
    first = list(SparseBatches(split, device=CUDA, **kwargs).epoch(1))
    again = list(SparseBatches(split, device=CUDA, **kwargs).epoch(1))
    assert [b[0].shape[0] for b in first] == [16, 16, 8]
    for (x, mask, y), (x2, mask2, y2) in zip(first, again, strict=True):
        assert x.device.type == mask.device.type == y.device.type == "cuda"
        assert torch.equal(x, x2) and torch.equal(mask, mask2) and torch.equal(y, y2)
        assert torch.all(x[mask.expand_as(x) == 0] == 0)
        assert 0.2 < float(mask.mean()) < 0.4  # 70 % dropped


@pytest.mark.parametrize(
    "execution", [{"precision": "fp32"}, {"precision": "bf16"}, {"compile": True}], ids=str
)
def test_trials_on_cuda_complete_and_record_their_device_and_own_gpu_peak(
    data_env, tmp_path, execution
):
    """Two trials of sparse_mnist on the synthetic data through the product's worker."""
    import dataclasses

    import optuna

    from data import MNISTOptions
    from hpo import records
    from hpo.runtime.storage_url import StorageTarget
    from hpo.tuning.settings import RunSettings
    from hpo.tuning.worker import run_worker
    from studies import Grid, get_study

    base = get_study("sparse_mnist")
    grid = Grid.of(depth=(3,), activation=("relu", "elu"), batch_size=(32,), lr=(1e-2,))
    tiny = dataclasses.replace(
        base, name="tiny_mnist", dataset_options=MNISTOptions(val_size=100), epochs=2,
        train_size=64, eval_batch_size=100, test_sparsities=(0.9,), grid=grid,
    )  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    settings = RunSettings(
        study=tiny, n_trials=2, storage=StorageTarget.parse(storage), device="cuda",
        pruner="none", show_progress=False, **execution,
    )  # fmt: skip
    run_worker(settings)
    trials = optuna.load_study(study_name="tiny_mnist", storage=storage).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    for trial in done:
        assert trial.user_attrs[records.DEVICE] == "cuda:0"
        assert trial.user_attrs[records.EXECUTION]["compile"] is bool(execution.get("compile"))
        assert 0 < trial.user_attrs[records.MEMORY]["gpu_peak_mb"] < 4096


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_network_on_the_second_gpu_stays_there():
    from hpo.runtime.execution import Execution

    second = torch.device("cuda:1")
    losses, _ = _fit_losses(ModelFamily.SPARSE, second, Execution("fp32"))
    assert losses[-1] < 0.1 * losses[0]
    assert torch.cuda.memory_allocated(0) == 0 or torch.cuda.current_device() == 0
