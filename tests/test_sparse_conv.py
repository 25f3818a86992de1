"""Properties of models.SparseConv2d (Uhrig et al., 3DV 2017), on small seeded random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from models import ModelConfigError, ModelInputError, SparseConv2d, window_count

# (kernel_size, stride, padding, dilation) combinations exercised by several tests.
CONFIGS = [
    (3, 1, 1, 1),
    (5, 2, 2, 1),
    (3, 1, 2, 2),
    (11, 1, 5, 1),
    (4, 2, 1, 1),
    ((3, 5), (1, 2), (1, 2), (2, 1)),
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_mask(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=_gen(seed)) < density


def _layer(k, s, p, d, c_in=3, c_out=4, seed=0, bias=True) -> SparseConv2d:
    torch.manual_seed(seed)
    return SparseConv2d(c_in, c_out, k, stride=s, padding=p, dilation=d, bias=bias)


def _twin_conv2d(layer: SparseConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        bias=layer.bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv


def _full_windows(layer: SparseConv2d, shape: tuple[int, ...]) -> torch.Tensor:
    """Bool (N, 1, H_out, W_out): windows lying entirely inside the image."""
    ones = torch.ones(shape[0], 1, *shape[2:])
    count = F.conv2d(ones, layer.ones, None, layer.stride, layer.padding, layer.dilation)
    return count == layer.window_area


# --- 1. unobserved pixels ------------------------------------------------------------------


@pytest.mark.parametrize("k,s,p,d", CONFIGS)
def test_unobserved_pixels_change_nothing_and_get_zero_gradient(k, s, p, d):
    layer = _layer(k, s, p, d)
    x = torch.randn(2, 3, 19, 17, generator=_gen(1))
    mask = _random_mask((2, 1, 19, 17), 0.3, seed=2)
    noise = 1e3 * torch.randn(x.shape, generator=_gen(3))
    x_other = torch.where(mask, x, noise)  # same observed pixels, wild unobserved ones

    x.requires_grad_(True)
    y, new_mask = layer(x, mask)
    y_other, _ = layer(x_other, mask)
    assert new_mask.sum() > 0
    assert torch.equal(y, y_other)  # where n == 0 both are the bias alone

    (y * torch.randn(y.shape, generator=_gen(4))).sum().backward()
    grad = x.grad
    assert torch.all(grad[~mask.expand_as(grad)] == 0)
    assert (grad[mask.expand_as(grad)] != 0).float().mean() > 0.9


# --- 2. dense input == nn.Conv2d -----------------------------------------------------------


@pytest.mark.parametrize("k,s,p,d", CONFIGS)
def test_all_ones_mask_equals_conv2d_inside_the_image(k, s, p, d):
    layer = _layer(k, s, p, d)
    conv = _twin_conv2d(layer)
    x = torch.randn(2, 3, 23, 21, generator=_gen(5))
    y, new_mask = layer(x, torch.ones(2, 1, 23, 21))
    expected = conv(x)
    inside = _full_windows(layer, x.shape).expand_as(y)
    assert inside.sum() > 0
    torch.testing.assert_close(y[inside], expected[inside], rtol=1e-5, atol=1e-5)
    assert torch.all(new_mask == 1)


def _reference(layer, x, mask):
    """The layer's definition in plain autograd: conv(x * m) * area / n + b, the bias alone
    where n == 0, and the count by a ones-kernel convolution."""
    m = mask.to(x.dtype)
    args = (layer.stride, layer.padding, layer.dilation)
    n = F.conv2d(m, layer.ones.to(x.dtype), None, *args)
    scale = layer.window_area / n.clamp(min=1) * (n > 0)
    y = F.conv2d(x * m, layer.weight, None, *args) * scale + layer.bias.view(1, -1, 1, 1)
    return y, n.clamp(max=1)


@pytest.mark.parametrize("k,s,p,d", CONFIGS + [(3, 1, 0, 1), (1, 1, 0, 1), (3, 2, 0, 2)])
@pytest.mark.parametrize("density", [0.4, 1.0])
def test_float64_output_and_gradients_equal_the_plain_definition(k, s, p, d, density):
    # density 1.0: a fully observed batch takes a shortcut on the CPU (one image's counts,
    # no masking passes; without padding a plain convolution); it must give the same numbers
    # as the general path.
    layer = _layer(k, s, p, d).double()
    mask = _random_mask((2, 1, 19, 17), density, seed=2)
    x = torch.randn(2, 3, 19, 17, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    results = []
    for forward in (layer, lambda x, mask: _reference(layer, x, mask)):
        y, new_mask = forward(x, mask)
        y.backward(torch.randn(y.shape, generator=_gen(3), dtype=torch.float64))
        results.append((y, new_mask, x.grad, layer.weight.grad, layer.bias.grad))
        x.grad = None
        layer.zero_grad(set_to_none=True)
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert results[0][1].shape == (2, 1, *results[0][0].shape[2:])


def test_initialization_matches_conv2d():
    torch.manual_seed(7)
    layer = SparseConv2d(5, 6, 3)
    torch.manual_seed(7)
    conv = nn.Conv2d(5, 6, 3)
    assert torch.equal(layer.weight, conv.weight)
    assert torch.equal(layer.bias, conv.bias)


# --- 3. sparsity invariance ----------------------------------------------------------------


def _invariance_z_scores(
    outputs: torch.Tensor, valid: torch.Tensor, reference: torch.Tensor
) -> torch.Tensor:
    """z-score of the mean over valid samples against the reference, per output element.

    Args:
        outputs: (M, C, H, W) outputs for M random masks.
        valid: (M, 1, H, W) bool, where the sample counts (n > 0).
        reference: (C, H, W) dense output.
    """
    w = valid.to(outputs.dtype).expand_as(outputs)
    count = w.sum(0)
    mean = (outputs * w).sum(0) / count
    var = ((outputs - mean) ** 2 * w).sum(0) / (count - 1)
    return (mean - reference) / (var / count).sqrt()


@pytest.mark.parametrize("density", [0.1, 0.3, 0.5, 0.9])
def test_sparsity_invariance_mean_output_approaches_dense(density):
    # Given n observed pixels in a window, the observed set is a uniform random subset, so
    # E[sum_u w_u m_u x_u | n] = (n / area) * conv(x) and the area / n scale makes the output
    # an unbiased estimate of the dense convolution at every density. Over M masks the mean
    # at each interior position is then within a few standard errors of the dense output.
    masks_per_density = 600
    torch.manual_seed(11)
    layer = SparseConv2d(2, 3, 3, padding=1).double()
    conv = _twin_conv2d(layer).double()
    x = torch.randn(1, 2, 14, 14, generator=_gen(12), dtype=torch.float64)
    masks = _random_mask((masks_per_density, 1, 14, 14), density, seed=13)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # away from the border: full windows
    with torch.no_grad():
        reference = conv(x)[0][inner]
        y, new_mask = layer(x.expand(masks_per_density, -1, -1, -1), masks)
        z_sparse = _invariance_z_scores(y[(slice(None), *inner)], new_mask[:, :, 1:-1, 1:-1] == 1,
                                        reference)  # fmt: skip
        # Contrast: a plain convolution of the zero-filled input is biased toward
        # density * conv(x) + b, so the same statistic must reject it.
        plain = conv(x * masks)
        z_plain = _invariance_z_scores(plain[(slice(None), *inner)],
                                       new_mask[:, :, 1:-1, 1:-1] == 1, reference)  # fmt: skip

    # 3 * 12 * 12 = 432 z-scores, each ~N(0, 1) when unbiased. Neighbouring positions share
    # masks, so their mean square varies more than for independent ones (over 48 seeds it
    # stayed below 1.35); P(max |z| > 5) is about 432 * 5.7e-7 = 2.5e-4. The plain
    # convolution's mean square is >= 60 at every density.
    assert torch.isfinite(z_sparse).all()
    assert (z_sparse**2).mean() < 1.6
    assert z_sparse.abs().max() < 5.0
    assert (z_plain**2).mean() > 10.0


# --- 4. new mask ---------------------------------------------------------------------------


@pytest.mark.parametrize("k,s,p,d", CONFIGS)
def test_new_mask_is_max_pool_of_mask(k, s, p, d):
    layer = _layer(k, s, p, d)
    for density in (0.02, 0.2, 0.7):
        mask = _random_mask((3, 1, 20, 18), density, seed=int(density * 100))
        _, new_mask = layer(torch.randn(3, 3, 20, 18, generator=_gen(0)), mask)
        (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
        if ph <= kh // 2 and pw <= kw // 2:
            expected = F.max_pool2d(mask.float(), layer.kernel_size, layer.stride, layer.padding,
                                    layer.dilation)  # fmt: skip
        else:  # max_pool2d refuses padding > kernel / 2; zero-pad explicitly (0 = unobserved)
            padded = F.pad(mask.float(), (pw, pw, ph, ph))
            expected = F.max_pool2d(padded, layer.kernel_size, layer.stride, 0, layer.dilation)
        assert torch.equal(new_mask, expected)
        assert new_mask.dtype == torch.float32


@pytest.mark.parametrize("k,s,p,d", CONFIGS)
def test_cpu_count_equals_count_by_ones_convolution(k, s, p, d):
    layer = _layer(k, s, p, d)
    mask = _random_mask((2, 1, 21, 16), 0.4, seed=9).float()
    args = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    by_conv = window_count(mask, *args, ones=layer.ones)
    by_cpu_path = window_count(mask, *args)  # band matrix products or shifted adds
    assert torch.equal(by_cpu_path, by_conv)
    assert torch.equal(by_conv, F.conv2d(mask, torch.ones(1, 1, *layer.kernel_size), None,
                                         *args[1:]))  # fmt: skip


# --- 5. gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (4, 1, 0, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(k, s, p, d, bias):
    layer = _layer(k, s, p, d, c_in=2, c_out=3, bias=bias).double()
    mask = _random_mask((2, 1, 5, 5), 0.5, seed=21)
    x = torch.randn(2, 2, 5, 5, generator=_gen(22), dtype=torch.float64, requires_grad=True)
    weight = layer.weight.detach().clone().requires_grad_(True)
    params = {"weight": weight}
    inputs = [x, weight]
    if bias:
        params["bias"] = layer.bias.detach().clone().requires_grad_(True)
        inputs.append(params["bias"])

    def f(x, weight, bias=None):
        values = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return functional_call(layer, values, (x, mask))[0]

    assert torch.autograd.gradcheck(f, tuple(inputs))


@pytest.mark.parametrize("k,s,p,d", CONFIGS)
def test_premasked_input_gives_the_same_output_and_gradients(k, s, p, d):
    layer = _layer(k, s, p, d)
    mask = _random_mask((2, 1, 19, 17), 0.3, seed=2)
    x = torch.randn(2, 3, 19, 17, generator=_gen(1)) * mask  # 0 wherever unobserved
    grad_y = None
    results = []
    for premasked in (False, True):
        x_in = x.clone().requires_grad_(True)
        y, new_mask = layer(x_in, mask, premasked=premasked)
        if grad_y is None:
            grad_y = torch.randn(y.shape, generator=_gen(4))
        y.backward(grad_y)
        results.append((y, new_mask, x_in.grad, layer.weight.grad, layer.bias.grad))
        layer.zero_grad(set_to_none=True)
    for plain, premasked in zip(*results, strict=True):
        assert torch.equal(plain, premasked)
    assert torch.all(results[1][2][~mask.expand_as(x)] == 0)  # the gradient is still masked


def test_gradients_reach_only_what_requires_them():
    layer = _layer(3, 1, 1, 1)
    mask = _random_mask((2, 1, 9, 9), 0.5, seed=1)
    x = torch.randn(2, 3, 9, 9, generator=_gen(2))  # no grad: the first layer of a network
    layer(x, mask)[0].sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.bias.grad is not None and layer.bias.grad.abs().sum() > 0


# --- where nothing is observed, dtypes, state ----------------------------------------------


def test_output_is_bias_alone_where_no_pixel_of_the_window_is_observed():
    layer = _layer(3, 1, 1, 1)
    mask = torch.ones(1, 1, 12, 12, dtype=torch.bool)
    mask[..., :, 6:] = False  # right half unobserved: output columns 7.. see nothing
    x = torch.randn(1, 3, 12, 12, generator=_gen(4))
    y, new_mask = layer(x, mask)
    assert torch.all(new_mask[..., :, 7:] == 0) and torch.all(new_mask[..., :, :7] == 1)
    expected = layer.bias.detach().view(1, -1, 1, 1).expand(1, -1, 12, 5)
    assert torch.equal(y[..., :, 7:], expected)


def test_bool_and_float_masks_give_identical_results():
    layer = _layer(5, 1, 2, 1)
    mask = _random_mask((2, 1, 15, 15), 0.3, seed=5)
    x = torch.randn(2, 3, 15, 15, generator=_gen(6))
    y_bool, m_bool = layer(x, mask)
    g_bool = torch.autograd.grad(y_bool.sum(), layer.weight)[0]
    y_float, m_float = layer(x, mask.float())
    g_float = torch.autograd.grad(y_float.sum(), layer.weight)[0]
    assert torch.equal(y_bool, y_float) and torch.equal(m_bool, m_float)
    assert torch.equal(g_bool, g_float)


def test_no_state_between_calls():
    layer = _layer(3, 1, 1, 1)
    x = torch.randn(2, 3, 10, 10, generator=_gen(7))
    mask_a = _random_mask((2, 1, 10, 10), 0.2, seed=8)
    mask_b = _random_mask((4, 1, 10, 10), 0.8, seed=9)
    first, _ = layer(x, mask_a)
    layer(torch.randn(4, 3, 10, 10), mask_b)
    again, _ = layer(x, mask_a)
    assert torch.equal(first, again)
    assert set(layer.state_dict()) == {"weight", "bias"}  # the ones kernel is not saved


def test_weight_and_bias_are_trained_parameters():
    layer = _layer(3, 1, 1, 1)
    names = {name for name, p in layer.named_parameters() if p.requires_grad}
    assert names == {"weight", "bias"}
    assert "ones" in dict(layer.named_buffers())  # the constant kernel: a buffer, not trained
    assert _layer(3, 1, 1, 1, bias=False).bias is None


def test_autocast_runs_in_low_precision_with_float32_parameter_gradients():
    layer = _layer(3, 1, 1, 1)
    x = torch.randn(2, 3, 8, 8, generator=_gen(1))
    mask = _random_mask((2, 1, 8, 8), 0.5, seed=2)
    layer(x, mask)[0].sum().backward()
    reference = layer.weight.grad.clone()
    layer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer(x, mask)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32
    torch.testing.assert_close(layer.weight.grad, reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_autocast_counts_in_float32_and_matches_the_float32_output(x_dtype):
    # A later layer of a network under autocast gets bfloat16 features; the count, new mask and
    # scale must still be float32 (area / n is inexact in bfloat16), only the convolution is
    # low precision.
    layer = _layer(5, 1, 2, 1)
    x = torch.randn(2, 3, 12, 12, generator=_gen(1))
    mask = _random_mask((2, 1, 12, 12), 0.3, seed=2)
    y_ref, new_mask_ref = layer(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, new_mask = layer(x.to(x_dtype), mask)
    assert y.dtype == torch.bfloat16
    assert new_mask.dtype == torch.float32
    assert torch.equal(new_mask, new_mask_ref)
    assert torch.equal(new_mask, F.max_pool2d(mask.float(), 5, 1, 2))
    torch.testing.assert_close(y.float(), y_ref, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("use_ones", [True, False])
def test_window_count_under_autocast_is_exact_float32(use_ones):
    # A 17x17 window counts up to 289: bfloat16 holds integers exactly only up to 256, so a
    # count convolution (the ones-kernel path, used on CUDA) or matrix product that autocast
    # ran in bfloat16 would round the largest counts.
    layer = _layer(17, 1, 8, 1, c_in=1, c_out=1)
    mask = _random_mask((2, 1, 24, 24), 0.95, seed=3).float()
    args = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    expected = F.conv2d(mask.double(), layer.ones.double(), None, *args[1:])
    assert expected.max() > 256
    with torch.autocast("cpu", dtype=torch.bfloat16):
        counts = window_count(mask, *args, ones=layer.ones if use_ones else None)
    assert counts.dtype == torch.float32
    assert torch.equal(counts.double(), expected)


def test_standard_init_keeps_the_activation_scale_where_literal_one_over_n_vanishes():
    # The docstring's claim: with 1/n instead of area/n, each layer shrinks the signal by about
    # the window area, so a paper-sized stack under standard init outputs almost nothing.
    torch.manual_seed(0)
    layers = [SparseConv2d(1 if i == 0 else 16, 16, k, padding=k // 2)
              for i, k in enumerate((11, 7, 5, 3, 3))]  # fmt: skip
    for layer in layers:
        nn.init.zeros_(layer.bias)
    x = torch.randn(4, 1, 28, 28, generator=_gen(1))
    mask = _random_mask((4, 1, 28, 28), 0.3, seed=2)
    ours, literal, dense, m = x, x, x, mask
    with torch.no_grad():
        for layer in layers:
            y, m_next = layer(ours, m)
            ours = torch.relu(y)
            y_lit, _ = layer(literal, m)
            literal = torch.relu(y_lit / layer.window_area)  # the paper's literal 1/n
            dense = torch.relu(_twin_conv2d(layer)(dense))  # nn.Conv2d on the full image
            m = m_next
    # The nn.Conv2d stack's scale, which standard init is calibrated for, up to the extra
    # variance of averaging ~30 % of each first-layer window ...
    assert 0.2 < ours.std() / dense.std() < 10
    # ... while the literal form has lost about 121 * 49 * 25 * 9 * 9 of it.
    assert literal.std() / dense.std() < 1e-5


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape,mask_shape,mask_dtype,match",
    [
        ((2, 3, 8, 8), (2, 8, 8), torch.bool, "mask must be"),
        ((2, 3, 8, 8), (2, 2, 8, 8), torch.bool, "mask must be"),
        ((2, 3, 8, 8), (3, 1, 8, 8), torch.bool, "mask must be"),
        ((2, 3, 8, 8), (2, 1, 8, 9), torch.bool, "spatial size"),
        ((2, 4, 8, 8), (2, 1, 8, 8), torch.bool, r"x must be \(N, 3, H, W\)"),
        ((3, 8, 8), (2, 1, 8, 8), torch.bool, r"x must be \(N, 3, H, W\)"),
        ((2, 3, 8, 8), (2, 1, 8, 8), torch.int64, "bool or floating point"),
    ],
)
def test_bad_inputs_raise_a_clear_error(x_shape, mask_shape, mask_dtype, match):
    layer = _layer(3, 1, 1, 1)
    with pytest.raises(ModelInputError, match=match):
        layer(torch.randn(x_shape), torch.ones(mask_shape, dtype=mask_dtype))


def test_input_smaller_than_kernel_raises_a_clear_error():
    with pytest.raises(ModelInputError, match="smaller than"):
        _layer(11, 1, 0, 1)(torch.randn(1, 3, 5, 5), torch.ones(1, 1, 5, 5))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"kernel_size": 3, "stride": 0}, "stride"),
        ({"kernel_size": 3, "padding": -1}, "padding"),
        ({"kernel_size": 3, "dilation": True}, "dilation"),
        ({"kernel_size": 3, "in_channels": 0}, "in_channels"),
    ],
)
def test_bad_constructor_arguments_raise_a_clear_error(kwargs, match):
    args = {"in_channels": 3, "out_channels": 4, **kwargs}
    with pytest.raises(ModelConfigError, match=match):
        SparseConv2d(**args)


def test_double_backward_is_refused_with_a_clear_error():
    layer = _layer(3, 1, 0, 1)  # no padding: fully observed, every window is nn.Conv2d's
    x = torch.randn(1, 3, 6, 6, generator=_gen(1), requires_grad=True)
    y, _ = layer(x, torch.ones(1, 1, 6, 6))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y.sum(), x, create_graph=True)
    (grad,) = torch.autograd.grad(y.sum(), x)  # first order is fine: fully observed, it is
    dense = torch.nn.functional.conv2d(x, layer.weight, layer.bias)
    (expected,) = torch.autograd.grad(dense.sum(), x)
    torch.testing.assert_close(grad, expected)


def test_channels_last_input_gives_the_same_result_and_keeps_its_layout():
    layer = _layer(3, 1, 1, 1)
    x = torch.randn(2, 3, 9, 9, generator=_gen(1))
    mask = _random_mask((2, 1, 9, 9), 0.4, seed=2)
    y, new_mask = layer(x, mask)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y_cl, new_mask_cl = layer(x_cl, mask)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y)
    assert torch.equal(new_mask_cl, new_mask)
    y_cl.sum().backward()
    assert torch.all(x_cl.grad[~mask.expand_as(x)] == 0)


def test_channels_last_gradients_equal_the_nchw_ones():
    # A channels_last output gradient takes other code paths (the bias gradient is a
    # matrix-vector product there); float64 so the comparison is tight.
    layer = _layer(3, 1, 1, 1, c_out=5).double()
    mask = _random_mask((3, 1, 9, 8), 0.4, seed=2)
    x = torch.randn(3, 3, 9, 8, generator=_gen(1), dtype=torch.float64)
    grad_y = torch.randn(3, 5, 9, 8, generator=_gen(3), dtype=torch.float64)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        x_in = x.clone(memory_format=fmt).requires_grad_(True)
        layer(x_in, mask)[0].backward(grad_y.clone(memory_format=fmt))
        grads.append((x_in.grad, layer.weight.grad, layer.bias.grad))
        layer.zero_grad(set_to_none=True)
    for nchw, nhwc in zip(*grads, strict=True):
        torch.testing.assert_close(nhwc, nchw, rtol=1e-12, atol=1e-14)
