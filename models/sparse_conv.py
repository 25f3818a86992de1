"""Sparsity-invariant convolution.

Implements the sparse convolution of

    J. Uhrig, N. Schneider, L. Schneider, U. Franke, T. Brox, A. Geiger,
    "Sparsity Invariant CNNs", International Conference on 3D Vision (3DV), 2017.
    https://arxiv.org/abs/1708.06500

The input comes with a binary observation mask. Each output is a convolution over the observed
pixels only, renormalized by how many pixels of the window were observed, so the output's
magnitude does not depend on how sparse the input is. The mask is propagated by max-pooling:
an output position is observed when at least one pixel of its window was.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ModelConfigError, ModelInputError
from .sparse_conv_cpu import native_mask_side, native_sparse_conv

__all__ = ["SparseConv2d", "window_count"]

_IntPair = int | tuple[int, int]


def _pair(value: _IntPair, name: str, minimum: int) -> tuple[int, int]:
    """Normalize an int-or-pair argument and check it, naming the argument in the error."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if (
        len(pair) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in pair)
        or any(v < minimum for v in pair)
    ):
        raise ModelConfigError(
            f"SparseConv2d: {name} must be an int >= {minimum} or a pair of them, got {value!r}"
        )
    return pair  # type: ignore[return-value]


class SparseConv2d(nn.Module):
    r"""Sparsity-invariant 2-D convolution (Uhrig et al., 3DV 2017).

    For every output position with window :math:`\mathcal{W}` and observed-pixel count
    :math:`n = \sum_{u \in \mathcal{W}} m_u`:

    .. math::

        y = \frac{k_h k_w}{n} \sum_{u \in \mathcal{W}} w_u \, m_u \, x_u + b
        \quad (n > 0), \qquad y = b \quad (n = 0),

    and the new mask is ``max_pool(mask)`` with the same kernel, stride, padding and dilation
    (equivalently ``n > 0`` for a binary mask).

    **Why** ``k_h k_w / n`` **and not the paper's literal** ``1 / n``. Both are the paper's
    normalization (average over observed pixels, bias added after); they differ by the constant
    window area, and that constant matters for training. With ``1 / n`` a fully observed input
    gives ``conv(x) / (k_h k_w)``: every layer shrinks its output, and so the gradient it passes
    back, by the window area (121 for an 11x11 kernel) compared with ``nn.Conv2d``. Standard
    (Kaiming) initialization is calibrated so that ``nn.Conv2d`` keeps the activation scale
    constant with depth; under ``1 / n`` the scale instead falls by about ``1 / (k_h k_w)`` per
    layer, activations and gradients vanish after a few layers and the network stops learning.
    Multiplying by the window area makes the layer *equal* to ``nn.Conv2d`` on dense input (``n``
    equals the window area), so standard initialization, learning rates and the dense baseline
    all apply unchanged, while on sparse input the output is still the observed-pixel average
    rescaled to the dense-window scale. (Earlier student code applied the same factor as an
    unexplained "multiply by kernel size".)

    **Where no pixel of the window is observed** (``n == 0``) the convolution term is dropped
    (its scale is 0) and the output is the bias alone, as in the paper, where the bias is added
    after the normalization; the new mask is 0 there. So ``y`` carries no information
    from ``x`` at those positions, and every consumer of a sparse layer's output must use
    ``new_mask`` (the next ``SparseConv2d`` multiplies by it, the networks' pooling and head
    average only over it). Zeroing the bias there as well would cost one more full-size pass in
    each direction for no change in any network built from this layer.

    **Cost.** The count ``n`` is one single-channel pass over the mask (see :func:`window_count`),
    done once per call under ``no_grad`` and shared by all output channels; the renormalization
    and bias are one fused in-place ``addcmul`` and the backward is written by hand, so the
    layer adds four full-size elementwise passes to ``nn.Conv2d``'s work (measured by
    ``bench/layer_overhead.py``): the mask and the rescale forward, the rescale and the mask of
    the input gradient backward. On the CPU the whole mask side is one native pass that also
    masks the input, the backward's rescale also sums the bias gradient, in the same read of
    the gradient, and the autograd function runs in C++, without Python per call
    (:mod:`models.sparse_conv_cpu`; the eager path where it cannot be built). ``premasked``
    input drops the forward mask; a fully observed batch on the CPU drops both masks, and
    without padding both rescales too. The layer keeps no state between calls.

    Args:
        in_channels: Channels of ``x``.
        out_channels: Channels of ``y``.
        kernel_size: Kernel height and width (int or pair).
        stride: Convolution stride (int or pair).
        padding: Zero padding on each side (int or pair); padded pixels count as unobserved.
        dilation: Kernel dilation (int or pair).
        bias: Whether to learn an additive bias (added after the renormalization).

    Shape:
        - ``x``: ``(N, in_channels, H, W)``, floating point. Values at unobserved pixels are
          ignored (they may be anything finite).
        - ``mask``: ``(N, 1, H, W)``, ``bool`` or floating point with values in {0, 1}
          (1 = observed), shared by all channels. Fractional ("soft") masks are *not*
          supported, and not checked: ``n`` would no longer count pixels and ``new_mask``
          (``min(n, 1)``) would no longer be the max-pool; checking the values would cost a
          full pass and, on a GPU, a device sync in every layer of every step. A ``bool`` mask
          is binary by construction, and every ``new_mask`` this layer returns is binary.
        - returns ``y``: ``(N, out_channels, H_out, W_out)`` and ``new_mask``:
          ``(N, 1, H_out, W_out)`` in ``x``'s dtype (float32 under autocast, where ``y`` is
          in autocast's dtype), with ``H_out``/``W_out`` as for ``nn.Conv2d``.

    Example:
        >>> conv = SparseConv2d(1, 16, kernel_size=3, padding=1)
        >>> x, mask = torch.randn(2, 1, 28, 28), torch.rand(2, 1, 28, 28) < 0.1
        >>> y, new_mask = conv(x, mask)
        >>> y.shape, new_mask.shape
        (torch.Size([2, 16, 28, 28]), torch.Size([2, 1, 28, 28]))
    """

    ones: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        stride: _IntPair = 1,
        padding: _IntPair = 0,
        dilation: _IntPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelConfigError(f"SparseConv2d: {name} must be an int >= 1, got {value!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        self.window_area = self.kernel_size[0] * self.kernel_size[1]

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # Constant, so not a parameter and not saved in the state dict; follows .to(device/dtype).
        self.register_buffer("ones", torch.ones(1, 1, *self.kernel_size), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialize exactly like ``nn.Conv2d`` (same RNG calls, so same values for one seed)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.window_area
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None}"
        )

    def _check_inputs(self, x: Tensor, mask: Tensor) -> None:
        # Shape checks only: reading tensor values would force a device sync.
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelInputError(
                f"SparseConv2d: x must be (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ModelInputError(f"SparseConv2d: x must be floating point, got {x.dtype}")
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0]:
            raise ModelInputError(
                f"SparseConv2d: mask must be (N, 1, H, W) = ({x.shape[0]}, 1, {x.shape[2]}, "
                f"{x.shape[3]}) to match x, got {tuple(mask.shape)}"
            )
        if mask.shape[2] != x.shape[2] or mask.shape[3] != x.shape[3]:  # ints: no sym_eq
            raise ModelInputError(
                f"SparseConv2d: mask spatial size {tuple(mask.shape[2:])} differs from x's "
                f"{tuple(x.shape[2:])}"
            )
        if not (mask.dtype == torch.bool or mask.is_floating_point()):
            raise ModelInputError(
                f"SparseConv2d: mask must be bool or floating point, got {mask.dtype}"
            )

    def _mask_side(
        self, m: Tensor, device_type: str, x: Tensor | None
    ) -> tuple[Tensor, Tensor, bool, Tensor | None]:
        """The new mask, the scale, whether every pixel of ``m`` is observed, and ``x * m``
        where the native pass computed it (given ``x``; otherwise ``None``).

        A fully observed batch is common: in a network the mask dilates with every layer until
        it covers the image (after two layers of the paper's stack at 10 % density). Then
        ``x * m`` and the masking of the input gradient are the identity, and every image has
        the same counts (only the zero padding is unobserved), so ``forward`` drops three
        full-size passes. The check reads the mask, so it is made only on the CPU, where it
        needs no device sync, and not under torch.compile, where reading a value would split
        the graph (and the compiler fuses the masking passes anyway).

        On the CPU one native pass does all of it, and masks ``x`` as it goes
        (:mod:`models.sparse_conv_cpu`); the eager path below, taken where that is unavailable
        and on other devices, gives the same bits and leaves ``x * m`` to the fused function.
        """
        check = device_type == "cpu" and not torch.compiler.is_compiling()
        geometry = (self.kernel_size, self.stride, self.padding, self.dilation)
        if check:
            out_size = _output_size(m.shape[2], m.shape[3], *geometry)
            native = native_mask_side(m, *geometry, out_size, self.window_area, x)
            if native is not None:
                return native
        with torch.no_grad():
            full = check and m.numel() > 0 and m.min().item() == 1.0
            # A full batch: one image is counted and its scale broadcast by the caller. One
            # conv on CUDA and other accelerators, matrix products or shifted adds on the CPU.
            ones = None if device_type == "cpu" else self.ones
            n = window_count(m[:1] if full else m, *geometry, ones)
            new_mask, scale = _mask_and_scale(n, self.window_area)
        return new_mask, scale, full, None

    def forward(self, x: Tensor, mask: Tensor, *, premasked: bool = False) -> tuple[Tensor, Tensor]:
        """Convolve the observed pixels of ``x`` and propagate the mask.

        Args:
            x: ``(N, in_channels, H, W)`` features.
            mask: ``(N, 1, H, W)`` observation mask, bool or float in {0, 1}.
            premasked: The caller guarantees that ``x`` is already 0 wherever ``mask`` is 0
                (not checked: that would cost the very pass it saves), so the layer skips
                computing ``x * mask``, one full-size pass and buffer. The input gradient is
                masked either way. The networks pass it for every layer after the first, whose
                input they zero in place (see :class:`~models.SparseCNN`).

        Returns:
            ``(y, new_mask)``: ``(N, out_channels, H_out, W_out)`` features (the bias alone
            where no pixel of the window was observed) and the ``(N, 1, H_out, W_out)`` mask in
            ``x``'s dtype (float32 under autocast).
        """
        self._check_inputs(x, mask)
        weight, bias = self.weight, self.bias
        device_type = x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        # Under autocast the count, new mask and scale stay float32 whatever x's dtype (a later
        # layer's x is already bfloat16): area / n is not exact in bfloat16 (121 / 3 = 40.33
        # becomes 40.25), and only the fused function below runs in the low precision.
        m = mask.to(torch.float32 if autocast else x.dtype)
        # x to mask as the mask side reads m, unless it is premasked or cast below.
        unmasked = None if premasked or autocast else x
        new_mask, scale, full, xm = self._mask_side(m, device_type, unmasked)
        if full:
            if new_mask.shape[0] != m.shape[0]:  # one image counted: the scale broadcasts
                new_mask = new_mask.expand(m.shape[0], -1, -1, -1).contiguous()
            m = None  # tells the fused function that nothing needs masking
            if self.padding == (0, 0):
                # Every window lies inside the image, n == area: the layer is nn.Conv2d (the
                # paper stack's last, 1x1 layer); None skips both rescaling passes and lets
                # the convolution add the bias and sum its gradient (in its own order: equal
                # up to float rounding, not bit for bit).
                scale = None
        if not autocast:
            args = (x, m, scale, weight, bias, self.stride, self.padding, self.dilation, premasked)
            y = None
            if device_type == "cpu" and not torch.compiler.is_compiling():
                y = native_sparse_conv(*args, xm)  # the same function without Python per call
            if y is None:
                y = _SparseConvFunction.apply(*args, xm)
            return y, new_mask
        # The fused function runs outside autocast; cast here so autograd carries the gradients
        # back to the float32 parameters, as autocast does for nn.Conv2d.
        dtype = torch.get_autocast_dtype(device_type)
        m = None if m is None else m.to(dtype)
        scale = None if scale is None else scale.to(dtype)
        args = (x.to(dtype), m, scale, weight.to(dtype))
        with torch.autocast(device_type, enabled=False):
            y = _SparseConvFunction.apply(
                *args,
                None if bias is None else bias.to(dtype),
                self.stride,
                self.padding,
                self.dilation,
                premasked,
                None,
            )
        return y, new_mask


def window_count(
    m: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ones: Tensor | None = None,
) -> Tensor:
    """Number of observed pixels in every convolution window of a ``(N, 1, H, W)`` mask.

    One single-channel computation, shared by all output channels. With ``ones`` (what
    :class:`SparseConv2d` passes on CUDA and other accelerators) it is one convolution with that
    ``(1, 1, kh, kw)`` ones kernel. Without (the CPU path) the same sum is taken separably: on
    the CPU, oneDNN's single-channel convolution and ``avg_pool2d`` cost 0.3-1.8 ms for a
    ``64 x 1 x 28 x 28`` mask, a sixth of a 16-channel 3x3 convolution. The separable sum is
    ``kh + kw - 2`` shifted adds over the zero-padded mask: 0.07 ms for 3x3, but 0.11 ms for
    5x5 and 0.28 ms for 11x11. So windows larger than 3x3 with stride 1 and no dilation (every
    layer of the networks) are summed as two small matrix products with 0/1 band matrices
    instead, ``band_h^T @ m @ band_w`` (padding is where the band runs off the image): 0.06 ms
    whatever the kernel size, but no faster than the adds for 3x3 inside a training step.

    The counts are exact integers in any of these ways: the products and sums are of 0/1
    values and integers up to ``kh * kw`` (float32 is exact below 2**24; a reduced float32
    matmul precision rounds the factors to bfloat16, which holds 0, 1 and the row sums up to
    ``kw`` exactly, and still accumulates in float32). That needs the computation in ``m``'s
    own dtype, so it runs with autocast disabled: autocast would run the convolution and matrix
    products in bfloat16 or float16, where 257 is already inexact.

    Args:
        m: ``(N, 1, H, W)`` floating-point mask with values in {0, 1}.
        kernel_size: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)``; padded pixels count as unobserved.
        dilation: ``(dh, dw)``.
        ones: The ``(1, 1, kh, kw)`` ones kernel: count by one convolution instead.

    Returns:
        ``(N, 1, H_out, W_out)`` counts in ``m``'s dtype, a new tensor (never a view of ``m``:
        the caller edits it in place).
    """
    if torch.is_autocast_enabled(m.device.type):
        with torch.autocast(m.device.type, enabled=False):
            return window_count(m, kernel_size, stride, padding, dilation, ones)
    if ones is not None:
        return F.conv2d(m, ones.to(m.dtype), None, stride, padding, dilation)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    h, w = m.shape[2], m.shape[3]
    h_out, w_out = _output_size(h, w, kernel_size, stride, padding, dilation)
    if sh == sw == dh == dw == 1 and kh + kw > 6:
        # band_w[j, o] = 1 where input column j lies in output column o's window, i.e.
        # o - pw <= j <= o - pw + kw - 1 (padded columns have no row: they add nothing).
        band_w = m.new_ones(w, w_out).tril_(pw).triu_(pw - kw + 1)
        if (h, h_out, ph, kh) == (w, w_out, pw, kw):
            band_h = band_w
        else:
            band_h = m.new_ones(h, h_out).tril_(ph).triu_(ph - kh + 1)
        rows = torch.matmul(m, band_w)  # (N, 1, H, W_out): one (N*H, W) @ (W, W_out) product
        return torch.matmul(band_h.t(), rows).contiguous()  # (N, 1, H_out, W_out)
    padded = F.pad(m, (pw, pw, ph, ph)) if ph or pw else m
    # Row sums over the kw taps, already at the output column stride: (N, 1, H_pad, W_out).
    w_span = (w_out - 1) * sw + 1
    rows = padded[:, :, :, 0:w_span:sw]
    if kw > 1:
        rows = rows + padded[:, :, :, dw : dw + w_span : sw]
    for j in range(2, kw):
        rows += padded[:, :, :, j * dw : j * dw + w_span : sw]
    # Column sums over the kh taps: (N, 1, H_out, W_out).
    h_span = (h_out - 1) * sh + 1
    counts = rows[:, :, 0:h_span:sh, :]
    if kh > 1:
        counts = counts + rows[:, :, dh : dh + h_span : sh, :]
    for i in range(2, kh):
        counts += rows[:, :, i * dh : i * dh + h_span : sh, :]
    # A 1x1 kernel (or a view of m) must not alias the caller's mask: the caller edits in place.
    return counts.clone() if kh == 1 and kw == 1 else counts


def _output_size(
    h: int,
    w: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """``(H_out, W_out)`` as for ``nn.Conv2d``; a one-line error where the input is too small."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ModelInputError(
            f"SparseConv2d: input {h}x{w} is smaller than the (dilated) "
            f"kernel {kh}x{kw} with padding {ph}x{pw}"
        )
    return h_out, w_out


def _mask_and_scale(n: Tensor, window_area: int) -> tuple[Tensor, Tensor]:
    """The new mask and the renormalization ``area / n`` from the window counts ``n`` (edited
    in place).

    The mask is ``min(n, 1)``, equal to ``max_pool(mask)`` because counts are integers. The
    scale is 0 where ``n == 0``: there the window of ``x * m`` is all zeros, but a Winograd or
    FFT convolution may still return rounding noise from its neighbours.
    """
    new_mask = n.clamp(max=1.0)
    return new_mask, torch.div(new_mask, n.clamp_(min=1.0)).mul_(window_area)


class _SparseConvFunction(torch.autograd.Function):
    """``conv(x * m, W) * scale + b`` with a hand-written backward (``x`` for ``x * m`` when the
    caller guarantees it is premasked, ``xm`` when the mask side computed it already).

    Plain autograd would allocate and fill a fresh full-size tensor for every elementwise step
    in both passes; on 16-channel feature maps these dominate the cost of the convolution
    itself. Here the renormalization and bias are one in-place ``addcmul`` on the convolution
    output and the input gradient is masked in place, so the layer adds two full-size
    elementwise passes forward (mask, renormalize) and two backward (renormalize, mask).

    On the CPU :func:`~models.sparse_conv_cpu.native_sparse_conv` runs the same operations in
    the same order as a C++ autograd function (tested bit for bit against this one); this one is
    the definition, and the path on CUDA, under torch.compile and autocast, and without the
    native library.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
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
    ) -> Tensor:
        # Unobserved pixels become 0: they reach neither y nor any gradient. m is None when
        # every pixel is observed.
        if xm is None:
            xm = x if premasked or m is None else x * m
        if scale is None:  # n == area everywhere: a plain convolution
            y = F.conv2d(xm, weight, bias, stride, padding, dilation)
        else:
            y = F.conv2d(xm, weight, None, stride, padding, dilation)  # (N, C_out, H_out, W_out)
            if bias is not None:
                torch.addcmul(bias.view(1, -1, 1, 1), y, scale, out=y)
            else:
                y.mul_(scale)
        ctx.save_for_backward(xm, m, scale, weight)
        ctx.conv_args = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_y: Tensor
    ) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            # create_graph=True. Refused (as @once_differentiable would, without its per-call
            # cost): the saved x * m has no graph back to x, so second derivatives would be wrong.
            raise RuntimeError(
                "SparseConv2d does not support double backward: call backward without "
                "create_graph=True"
            )
        xm, m, scale, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conv_args
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        need_b = ctx.has_bias and ctx.needs_input_grad[4]
        grad_x = grad_w = grad_b = None
        if scale is None:  # a plain convolution (see forward): one call for all three
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward.default(
                grad_y, xm, weight, [weight.shape[0]] if need_b else None, stride, padding,
                dilation, False, (0, 0), 1, (need_x, need_w, need_b),
            )  # fmt: skip
            return grad_x, None, None, grad_w, grad_b, None, None, None, None, None
        if not (need_x or need_w):
            grad_b = _sum_over_positions(grad_y) if need_b else None
            return None, None, None, None, grad_b, None, None, None, None, None
        grad_raw, grad_b = _rescale(grad_y, scale, need_b)
        grad_xm, grad_w, _ = torch.ops.aten.convolution_backward.default(
            grad_raw, xm, weight, None, stride, padding, dilation,
            False, (0, 0), 1, (need_x, need_w, False),
        )  # fmt: skip
        if need_x:
            grad_x = grad_xm if m is None else grad_xm.mul_(m)
        return grad_x, None, None, grad_w, grad_b, None, None, None, None, None


def _rescale(grad_y: Tensor, scale: Tensor, need_b: bool) -> tuple[Tensor, Tensor | None]:
    """``grad_y * scale`` and, with ``need_b``, the bias gradient ``grad_y.sum((0, 2, 3))``.

    On the CPU the C++ autograd function reads ``grad_y`` once for both instead
    (:mod:`models.sparse_conv_cpu`).
    """
    # The bias gradient first, so that the rescale reads grad_y again while it is in cache.
    grad_b = _sum_over_positions(grad_y) if need_b else None
    return grad_y * scale, grad_b


def _sum_over_positions(t: Tensor) -> Tensor:
    """``t.sum(dim=(0, 2, 3))`` of an ``(N, C, H, W)`` tensor: the bias gradient.

    For a channels_last ``t`` TensorIterator reduces over the outer dimensions of the
    ``(N*H*W, C)`` storage and, on two threads, takes 0.17 ms for a ``64 x 16 x 28 x 28``
    gradient, four times a matrix-vector product with a ones vector, which reads it once at
    full speed (0.04 ms; on one thread 0.2 vs 0.12 ms). Only for float32 and float64, where BLAS
    accumulates in the tensor's own precision as the reduction does; any other layout or dtype
    takes the plain reduction.
    """
    n, c, h, w = t.shape
    if (
        c > 1
        and t.dtype in (torch.float32, torch.float64)
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        rows = t.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view: (N*H*W, C), row-major
        return torch.mv(rows.t(), t.new_ones(n * h * w))
    return t.sum(dim=(0, 2, 3))
