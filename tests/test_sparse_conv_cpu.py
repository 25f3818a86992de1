"""The sparse layer's native CPU passes: the same results as the eager path they replace.

The mask side must match bit for bit (the counts are integers, the scale one IEEE division,
``x * m`` one multiplication);
the backward rescale too, and its bias gradient within float32 rounding of the exact sum. The
layer is compared with the native passes on and off, and a failed build must fall back with one
warning. The library is built on first use (tens of seconds, once per machine).
"""

from __future__ import annotations

import itertools
import os
import warnings

import pytest
import torch

import models.sparse_conv as sparse_conv
import models.sparse_conv_cpu as native
from models import SparseConv2d, window_count
from models.sparse_conv import _mask_and_scale, _output_size

pytestmark = pytest.mark.skipif(
    os.environ.get("SPARSE_CONV_NATIVE") == "0", reason="SPARSE_CONV_NATIVE=0 turns it off"
)

GEOMETRIES = [  # (kernel, stride, padding, dilation), as pairs
    ((1, 1), (1, 1), (0, 0), (1, 1)),
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((5, 5), (1, 1), (2, 2), (1, 1)),
    ((11, 11), (1, 1), (5, 5), (1, 1)),
    ((7, 7), (1, 1), (3, 3), (1, 1)),
    ((3, 3), (1, 1), (0, 0), (1, 1)),  # 'valid': narrower output
    ((2, 4), (1, 1), (0, 1), (1, 1)),  # even, non-square
    ((3, 1), (2, 3), (1, 0), (1, 1)),
    ((3, 3), (2, 2), (1, 1), (1, 1)),
    ((3, 3), (1, 1), (2, 2), (2, 2)),
    ((5, 3), (3, 1), (5, 1), (1, 2)),  # padding wider than half the kernel
    ((1, 3), (1, 1), (4, 1), (1, 1)),  # output taller than the input
]


def _eager_mask_side(m, kernel, stride, padding, dilation):
    n = window_count(m, kernel, stride, padding, dilation)
    return _mask_and_scale(n, kernel[0] * kernel[1])


@pytest.mark.parametrize("kernel, stride, padding, dilation", GEOMETRIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mask_side_equals_the_eager_path_bit_for_bit(kernel, stride, padding, dilation, dtype):
    gen = torch.Generator().manual_seed(0)
    layouts = itertools.cycle([torch.contiguous_format, torch.channels_last])
    for (h, w), density in itertools.product([(28, 28), (7, 13), (4, 3)], [0.0, 0.1, 0.5]):
        out_size = _output_size(h, w, kernel, stride, padding, dilation)
        m = (torch.rand(5, 1, h, w, generator=gen) < density).to(dtype)
        # Negative values and infinities: x * 0 is -0.0 or NaN there, as in PyTorch.
        x = torch.randn(5, 3, h, w, generator=gen, dtype=dtype)
        x[0, 0, 0, :2] = torch.tensor([float("inf"), float("-inf")], dtype=dtype)[: min(w, 2)]
        x = x.contiguous(memory_format=next(layouts))
        result = native.native_mask_side(
            m, kernel, stride, padding, dilation, out_size, kernel[0] * kernel[1], x
        )
        assert result is not None, "the native library did not build; see the warning"
        new_mask, scale, full, xm = result
        expected_mask, expected_scale = _eager_mask_side(m, kernel, stride, padding, dilation)
        assert torch.equal(new_mask, expected_mask), (h, w, density)
        assert torch.equal(scale, expected_scale), (h, w, density)
        assert full is False
        expected_xm = x * m
        assert xm.stride() == x.stride()
        bits = torch.int32 if dtype == torch.float32 else torch.int64  # -0.0 and NaN too
        assert torch.equal(xm.view(bits), expected_xm.view(bits))


def test_full_is_true_only_when_every_pixel_of_every_image_is_observed():
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1))
    x = torch.randn(4, 2, 9, 9)
    m = torch.ones(4, 1, 9, 9)
    full, xm = native.native_mask_side(m, *geometry, (9, 9), 9, x)[2:]
    assert full is True and xm is None  # nothing to mask: x * m is x
    m[3, 0, 8, 8] = 0.0  # the last pixel of the last image
    full, xm = native.native_mask_side(m, *geometry, (9, 9), 9, x)[2:]
    assert full is False and torch.equal(xm, x * m)
    empty = torch.ones(0, 1, 9, 9)
    assert native.native_mask_side(empty, *geometry, (9, 9), 9)[2] is False


def test_an_input_it_cannot_mask_is_left_to_the_caller():
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1))
    m = (torch.rand(2, 1, 5, 5) < 0.5).float()
    for x in (torch.randn(2, 3, 5, 5).double(), torch.randn(2, 3, 5, 5).transpose(2, 3)):
        new_mask, scale, full, xm = native.native_mask_side(m, *geometry, (5, 5), 9, x)
        assert xm is None
        assert torch.equal(scale, _eager_mask_side(m, *geometry)[1])


def _rescale_and_sum(grad, scale):
    # The pass the C++ autograd function runs in its backward, called directly.
    library = native._library()
    assert library is not None, "the native library did not build; see the warning"
    return library.rescale_and_sum(grad, scale)


def test_rescale_and_sum_rescales_exactly_and_sums_closer_than_float32():
    gen = torch.Generator().manual_seed(1)
    for n, c, h, w in [(64, 16, 28, 28), (3, 1, 5, 7), (2, 5, 1, 1), (1, 33, 17, 3)]:
        grad = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
        scale = torch.rand(n, 1, h, w, generator=gen)
        grad_raw, grad_b = _rescale_and_sum(grad, scale)
        assert torch.equal(grad_raw, grad * scale)
        assert grad_raw.is_contiguous(memory_format=torch.channels_last)
        exact = grad.double().sum((0, 2, 3))
        float32_error = (grad.sum((0, 2, 3)).double() - exact).abs().max()
        assert (grad_b.double() - exact).abs().max() <= max(float32_error, 1e-6)


def test_rescale_and_sum_is_exact_in_float64():
    gen = torch.Generator().manual_seed(2)
    grad = torch.randn(6, 4, 9, 9, generator=gen, dtype=torch.float64)
    grad = grad.contiguous(memory_format=torch.channels_last)
    scale = torch.rand(6, 1, 9, 9, generator=gen, dtype=torch.float64)
    grad_raw, grad_b = _rescale_and_sum(grad, scale)
    assert torch.equal(grad_raw, grad * scale)
    torch.testing.assert_close(grad_b, grad.sum((0, 2, 3)), rtol=1e-12, atol=1e-12)


def test_rescale_and_sum_does_not_depend_on_the_thread_count():
    gen = torch.Generator().manual_seed(3)
    grad = torch.randn(64, 16, 28, 28, generator=gen).contiguous(memory_format=torch.channels_last)
    scale = torch.rand(64, 1, 28, 28, generator=gen)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _rescale_and_sum(grad, scale)
        torch.set_num_threads(2)
        two = _rescale_and_sum(grad, scale)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_unsupported_inputs_are_left_to_the_eager_path():
    m = torch.ones(2, 1, 5, 5, dtype=torch.float16)
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1))
    assert native.native_mask_side(m, *geometry, (5, 5), 9) is None
    x, weight = torch.randn(2, 1, 5, 5).half(), torch.randn(3, 1, 3, 3).half()
    assert native.native_sparse_conv(x, m, None, weight, None, *geometry[1:], False, None) is None


def _layer_step(layer, x, mask, grad_y):
    x = x.detach().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y, new_mask = layer(x, mask)
    y.backward(grad_y)
    return y, new_mask, x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("density", [0.1, 1.0])
@pytest.mark.parametrize("kernel, padding", [(3, 1), (11, 5), (3, 0)])
def test_layer_with_native_passes_equals_the_layer_without(
    monkeypatch, kernel, padding, density, layout
):
    torch.manual_seed(0)
    layer = SparseConv2d(4, 6, kernel, padding=padding).to(memory_format=layout)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(8, 4, 16, 16, generator=gen).contiguous(memory_format=layout)
    mask = (torch.rand(8, 1, 16, 16, generator=gen) < density).float()
    grad_y = torch.randn_like(layer(x, mask)[0])
    with_native = _layer_step(layer, x, mask, grad_y)
    monkeypatch.setattr(sparse_conv, "native_mask_side", lambda *args: None)
    monkeypatch.setattr(sparse_conv, "native_sparse_conv", lambda *args: None)
    eager = _layer_step(layer, x, mask, grad_y)
    for got, expected in zip(with_native[:4], eager[:4], strict=True):
        assert torch.equal(got, expected)  # output, new mask, input and weight gradients
    torch.testing.assert_close(with_native[4], eager[4], rtol=1e-5, atol=1e-5)  # bias


def _function_step(function, args, grad_y, wanted):
    x, m, scale, weight, bias, *rest = args
    inputs = [t.detach().requires_grad_(need) if t is not None else None
              for t, need in zip((x, weight, bias), wanted, strict=True)]  # fmt: skip
    y = function(inputs[0], m, scale, inputs[1], inputs[2], *rest)
    wrt = [t for t in inputs if t is not None and t.requires_grad]
    return [y, *torch.autograd.grad(y, wrt, grad_y)] if wrt else [y]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_cpp_autograd_function_equals_the_python_one(layout, dtype):
    """Every branch of the backward: masked or not, a plain convolution (no scale), no bias,
    premasked input, the masked input given, one image's scale for the batch, and each subset
    of the gradients asked for. Bit for bit, but for the bias gradient where the C++ function
    sums it in its native pass (channels_last), in double instead of PyTorch's reduction."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 9, 9, generator=gen, dtype=dtype).contiguous(memory_format=layout)
    m = (torch.rand(4, 1, 9, 9, generator=gen) < 0.4).to(dtype)
    weight = torch.randn(5, 3, 3, 3, generator=gen, dtype=dtype).contiguous(memory_format=layout)
    bias = torch.randn(5, generator=gen, dtype=dtype)
    _, scale = _eager_mask_side(m, (3, 3), (1, 1), (1, 1), (1, 1))
    grad_y = torch.randn(4, 5, 9, 9, generator=gen, dtype=dtype).contiguous(memory_format=layout)
    geometry = ((1, 1), (1, 1), (1, 1))
    cases = {
        "masked": (x, m, scale, weight, bias, *geometry, False, None),
        "xm given": (x, m, scale, weight, bias, *geometry, False, x * m),
        "premasked": (x * m, m, scale, weight, bias, *geometry, True, None),
        "full mask": (x, None, scale, weight, bias, *geometry, False, None),
        "one image's scale": (x, None, scale[:1], weight, bias, *geometry, False, None),
        "plain conv": (x, None, None, weight, bias, *geometry, False, None),
        "no bias": (x, m, scale, weight, None, *geometry, False, None),
    }
    for name, args in cases.items():
        for wanted in itertools.product([True, False], repeat=3):
            if args[4] is None and wanted[2]:
                continue
            python = _function_step(sparse_conv._SparseConvFunction.apply, args, grad_y, wanted)
            native_result = _function_step(native.native_sparse_conv, args, grad_y, wanted)
            assert len(native_result) == len(python), (name, wanted)
            summed_natively = wanted[2] and args[2] is not None and layout == torch.channels_last
            exact = len(python) - 1 if summed_natively else len(python)
            for got, expected in zip(native_result[:exact], python[:exact], strict=True):
                assert torch.equal(got, expected), (name, wanted)
            if summed_natively:
                torch.testing.assert_close(native_result[-1], python[-1], msg=str((name, wanted)))


def test_native_library_builds_here():
    # CI has a compiler: a build that silently fell back would hide a broken kernel.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native._library() is not None


def test_failed_build_warns_once_and_falls_back(monkeypatch):
    def broken_build():
        raise RuntimeError("Error building extension 'sparse_conv_cpu'\nmore detail")

    monkeypatch.setattr(native, "_build", broken_build)
    native._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="Error building extension") as caught:
            geometry = ((3, 3), (1, 1), (1, 1), (1, 1))
            m = torch.ones(1, 1, 5, 5)
            assert native.native_mask_side(m, *geometry, (5, 5), 9) is None
            assert native.native_mask_side(m, *geometry, (5, 5), 9) is None
        assert len(caught) == 1
        layer = SparseConv2d(1, 2, 3, padding=1)
        y, _ = layer(torch.randn(2, 1, 5, 5), torch.ones(2, 1, 5, 5))  # the eager path
        assert y.shape == (2, 2, 5, 5)
    finally:
        native._library.cache_clear()


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv("SPARSE_CONV_NATIVE", "0")
    native._library.cache_clear()
    try:
        m = torch.ones(1, 1, 5, 5)
        geometry = ((3, 3), (1, 1), (1, 1), (1, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # turned off on purpose: no warning
            assert native.native_mask_side(m, *geometry, (5, 5), 9) is None
            x, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
            args = (x, m, None, weight, None, *geometry[1:], False, None)
            assert native.native_sparse_conv(*args) is None
    finally:
        native._library.cache_clear()
