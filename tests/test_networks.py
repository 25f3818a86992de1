"""The sparse and dense CNN families: shapes, topology, learnability, and config validation."""

from __future__ import annotations

import pytest
import torch
from stripes import stripes_task, training_losses
from torch import nn

from models import (
    CNNConfig,
    DenseCNN,
    ModelConfigError,
    ModelFamily,
    ModelInputError,
    SparseCNN,
    SparseConv2d,
    SparseMaxPool2d,
    build_model,
    masked_global_avg_pool,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n=4, c=1, hw=16, density=0.3, seed=0):
    x = torch.randn(n, c, hw, hw, generator=_gen(seed))
    mask = torch.rand(n, 1, hw, hw, generator=_gen(seed + 1)) < density
    return x * mask, mask


@pytest.mark.parametrize("family", list(ModelFamily))
@pytest.mark.parametrize("depth,pool_after", [(3, ()), (6, (0, 2)), (9, (0, 1, 2))])
def test_logits_have_shape_batch_by_classes(family, depth, pool_after):
    torch.manual_seed(0)
    config = CNNConfig(in_channels=3, num_classes=7, depth=depth, activation="leaky_relu",
                       width=8, pool_after=pool_after)  # fmt: skip
    model = build_model(family, config)
    x, mask = _batch(n=5, c=3, hw=20)
    logits = model(x, mask)
    assert logits.shape == (5, 7)
    assert torch.isfinite(logits).all()
    assert model(x, mask.float()).shape == (5, 7)
    assert model(x, None).shape == (5, 7)  # None: fully observed


def test_the_papers_stack_is_one_configuration():
    config = CNNConfig(in_channels=1, num_classes=10, depth=6, activation="relu", width=16)
    assert config.kernel_sizes == (11, 7, 5, 3, 3, 1)
    model = build_model(ModelFamily.SPARSE, config)
    convs = [m for m in model.modules() if isinstance(m, SparseConv2d)]
    assert [c.kernel_size for c in convs] == [(k, k) for k in (11, 7, 5, 3, 3, 1)]
    assert [c.out_channels for c in convs] == [16] * 6
    assert [c.padding for c in convs] == [(k // 2, k // 2) for k in (11, 7, 5, 3, 3, 1)]
    assert not [m for m in model.modules() if isinstance(m, SparseMaxPool2d)]


def test_explicit_kernel_schedule():
    config = CNNConfig(1, 10, depth=4, kernel_schedule=(5, 5, 3, 1))
    dense = build_model("dense", config)
    assert [c.kernel_size for c in dense.modules() if isinstance(c, nn.Conv2d)] == [
        (5, 5), (5, 5), (3, 3), (1, 1)
    ]  # fmt: skip


def test_sparse_cnn_uses_sparse_convolutions_only():
    config = CNNConfig(1, 10, depth=5, pool_after=(1,))
    model = build_model(ModelFamily.SPARSE, config)
    assert isinstance(model, SparseCNN)
    assert not [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    sparse = [m for m in model.modules() if isinstance(m, SparseConv2d)]
    assert len(sparse) == 5
    calls = []
    for layer in sparse:
        layer.register_forward_hook(lambda mod, args, out: calls.append(args[1]))
    x, mask = _batch()
    model(x, mask)
    assert len(calls) == 5
    assert torch.equal(calls[0], mask)  # the first layer really sees the input mask


def test_dense_families_use_plain_convolutions_and_the_same_topology():
    config = CNNConfig(2, 10, depth=5, width=12, pool_after=(0, 3))
    sparse, dense, dense_mask = (build_model(f, config) for f in ModelFamily)
    assert isinstance(dense, DenseCNN) and isinstance(dense_mask, DenseCNN)
    shapes = [
        [(c.in_channels, c.out_channels, tuple(c.kernel_size)) for c in m.convs]
        for m in (sparse, dense, dense_mask)
    ]
    assert shapes[0] == shapes[1]
    assert shapes[2][0] == (3, 12, (11, 11)) and shapes[2][1:] == shapes[0][1:]
    assert list(sparse.pools) == list(dense.pools) == ["0", "3"]
    # DENSE_MASK has one extra first-layer input channel: width * k * k more weights.
    assert dense_mask.num_parameters() - dense.num_parameters() == 12 * 11 * 11
    assert sparse.num_parameters() == dense.num_parameters()
    assert sparse.num_parameters() == sum(p.numel() for p in sparse.parameters())


def test_dense_mask_really_uses_the_mask_channel():
    # Two masks that zero-fill x identically (x is 0 on the pixels where they differ): the
    # plain dense network cannot tell them apart, the mask-channel one must.
    torch.manual_seed(0)
    config = CNNConfig(1, 4, depth=3)
    x, _ = _batch(n=2)
    x[..., :, 8:] = 0
    mask_a = torch.ones(2, 1, 16, 16)
    mask_b = mask_a.clone()
    mask_b[..., :, 8:] = 0
    dense = build_model(ModelFamily.DENSE, config)
    dense_mask = build_model(ModelFamily.DENSE_MASK, config)
    assert torch.equal(dense(x, mask_a), dense(x, mask_b))
    assert not torch.allclose(dense_mask(x, mask_a), dense_mask(x, mask_b))


@pytest.mark.parametrize("family", list(ModelFamily))
def test_unobserved_pixel_values_do_not_change_logits(family):
    torch.manual_seed(0)
    model = build_model(family, CNNConfig(1, 4, depth=4, pool_after=(0,)))
    x, mask = _batch()
    wild = torch.where(mask, x, 100 * torch.randn(x.shape, generator=_gen(9)))
    torch.testing.assert_close(model(x, mask), model(wild, mask), rtol=0, atol=0)


@pytest.mark.parametrize("family", list(ModelFamily))
def test_weights_and_biases_are_trained_parameters(family):
    model = build_model(family, CNNConfig(1, 3, depth=3))
    x, mask = _batch()
    model(x, mask).sum().backward()
    for name, param in model.named_parameters():
        assert param.requires_grad, name
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    conv_names = {n for n, _ in model.named_parameters() if n.startswith("convs.")}
    assert {f"convs.{i}.{p}" for i in range(3) for p in ("weight", "bias")} == conv_names


@pytest.mark.parametrize("family", list(ModelFamily))
def test_loss_falls_when_trained_a_few_dozen_steps(family):
    torch.manual_seed(0)
    x, mask, labels = stripes_task()
    config = CNNConfig(1, 2, depth=3, kernel_schedule=(3, 3, 1), width=8)
    losses = training_losses(build_model(family, config), x, mask, labels)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu"])
@pytest.mark.parametrize("density", [0.03, 0.5])
def test_sparse_cnn_equals_the_plain_composition_of_its_layers(activation, density):
    # SparseCNN works in place (activations, zeroing features before the next layer, which
    # then skips its own x * mask); logits and gradients must be those of the plain chain.
    # At density 0.03 every layer has unobserved inputs; at 0.5 the mask soon covers the
    # image, and the later layers take the fully observed shortcut.
    torch.manual_seed(0)
    config = CNNConfig(1, 5, depth=5, activation=activation, kernel_schedule=(3, 3, 3, 3, 1),
                       pool_after=(1,))  # fmt: skip
    model = build_model(ModelFamily.SPARSE, config).double()
    x, mask = _batch(n=3, hw=18, density=density)
    observed = []
    x = x.double().requires_grad_(True)
    labels = torch.tensor([0, 3, 4])

    def plain(x):
        h, m = x, mask
        for conv, pool in model.layers():
            observed.append(bool(m.all()))
            h, m = conv(h, m)
            h = {"relu": torch.relu, "leaky_relu": nn.functional.leaky_relu,
                 "elu": nn.functional.elu}[activation](h)  # fmt: skip
            if pool is not None:
                h, m = pool(h, m)
        return model.classifier(masked_global_avg_pool(h, m))

    grads = []
    for forward in (model, plain):
        logits = forward(x, mask) if forward is model else forward(x)
        nn.functional.cross_entropy(logits, labels).backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in model.parameters()])
        x.grad = None
        model.zero_grad(set_to_none=True)
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    if density < 0.1:
        assert not any(observed)
    else:
        assert not observed[0] and observed[-1]


def test_sparse_max_pool_ignores_unobserved_values():
    x = torch.tensor([[[[-1.0, 50.0], [-3.0, -2.0]], [[7.0, 7.0], [9.0, 9.0]]]])  # (1, 2, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    y, new_mask = SparseMaxPool2d(2)(x, mask)
    assert y.flatten().tolist() == [-1.0, 9.0]  # 50 unobserved; -1 beats an implicit 0
    assert new_mask.flatten().tolist() == [1.0]
    empty = torch.zeros(1, 1, 2, 2)
    y, new_mask = SparseMaxPool2d(2)(x, empty)
    assert y.flatten().tolist() == [0.0, 0.0] and new_mask.flatten().tolist() == [0.0]


def test_sparse_max_pool_keeps_odd_borders_and_routes_gradient_to_observed_pixels():
    x = torch.randn(2, 3, 75, 75, generator=_gen(1), requires_grad=True)
    mask = torch.rand(2, 1, 75, 75, generator=_gen(2)) < 0.2
    y, new_mask = SparseMaxPool2d(2)(x, mask)
    assert y.shape == (2, 3, 38, 38) and new_mask.shape == (2, 1, 38, 38)
    y.sum().backward()
    assert torch.all(x.grad[~mask.expand_as(x)] == 0)


def test_sparse_max_pool_of_a_fully_observed_batch_is_max_pool():
    # A fully observed mask takes a shortcut on the CPU; same values and gradients as the
    # general path (which a single unobserved pixel in another image forces).
    x = torch.randn(2, 3, 9, 9, generator=_gen(1), dtype=torch.float64)
    mask = torch.ones(3, 1, 9, 9)
    mask[2, 0, 0, 0] = 0  # image 2 only forces the general path for the whole batch
    results = []
    for batch_mask in (mask[:2], mask):
        x_in = torch.cat([x, x[:1]]) if batch_mask.shape[0] == 3 else x
        x_in = x_in.clone().requires_grad_(True)
        y, new_mask = SparseMaxPool2d(2)(x_in, batch_mask)
        y[:2].sum().backward()
        results.append((y[:2], new_mask[:2], x_in.grad[:2]))
    for shortcut, general in zip(*results, strict=True):
        assert torch.equal(shortcut, general)
    assert torch.equal(results[0][0], nn.functional.max_pool2d(x, 2, 2, ceil_mode=True))


def test_masked_global_average_pool_averages_observed_positions_only():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 100.0]]]])
    mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    assert masked_global_avg_pool(x, mask).tolist() == [[2.0]]
    assert masked_global_avg_pool(x, torch.zeros_like(mask)).tolist() == [[0.0]]


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"depth": 2}, r"depth must be an int in 3\.\.9"),
        ({"depth": 10}, r"depth must be an int in 3\.\.9"),
        ({"depth": 5.0}, "depth"),
        ({"activation": "tanh"}, "valid: relu, leaky_relu, elu"),
        ({"width": 0}, "width"),
        ({"in_channels": True}, "in_channels"),
        ({"num_classes": 0}, "num_classes"),
        ({"kernel_schedule": "vgg"}, "kernel_schedule"),
        ({"kernel_schedule": (3, 3, 1)}, "kernel_schedule"),
        ({"kernel_schedule": (3, 4, 3, 3, 1)}, "odd"),
        ({"pool_after": (4,)}, r"0\.\.3"),
        ({"pool_after": (2, 1)}, "increasing"),
        ({"pool_after": (1, 1)}, "distinct"),
    ],
)
def test_invalid_config_raises_a_clear_error(kwargs, match):
    args = {"in_channels": 1, "num_classes": 10, "depth": 5, **kwargs}
    with pytest.raises(ModelConfigError, match=match):
        CNNConfig(**args)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    config = CNNConfig(3, 101, depth=7, activation="elu", width=32, pool_after=[0, 1, 2])
    assert config.pool_after == (0, 1, 2)
    assert CNNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelConfigError, match="unknown key.*layers"):
        CNNConfig.from_dict({**config.to_dict(), "layers": 5})
    with pytest.raises(ModelConfigError, match="missing required key.*depth"):
        CNNConfig.from_dict({"in_channels": 1, "num_classes": 10})


def test_build_model_rejects_unknown_family_and_non_config():
    with pytest.raises(ModelConfigError, match="valid: sparse, dense, dense_mask"):
        build_model("sparse_cnn", CNNConfig(1, 10, depth=3))
    with pytest.raises(ModelConfigError, match="CNNConfig"):
        build_model(ModelFamily.SPARSE, {"in_channels": 1})


@pytest.mark.parametrize("family", list(ModelFamily))
def test_bad_mask_shape_raises_a_clear_error(family):
    model = build_model(family, CNNConfig(1, 10, depth=3))
    with pytest.raises(ModelInputError, match="mask must be"):
        model(torch.randn(2, 1, 12, 12), torch.ones(2, 12, 12))


@pytest.mark.parametrize("family", list(ModelFamily))
def test_head_grid_keeps_num_classes_logits_and_sees_layout(family):
    """A 4x4 head still emits num_classes logits and, unlike a global average, tells a stroke
    on the left from the same stroke on the right (same pixels, different place)."""
    torch.manual_seed(0)
    config = CNNConfig(in_channels=1, num_classes=7, depth=3, head_grid=4)
    model = build_model(family, config)
    left, right = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    left[..., 4:12, 2] = 1.0
    right[..., 4:12, 13] = 1.0
    mask = torch.ones(1, 1, 16, 16)
    logits_left, logits_right = model(left, mask), model(right, mask)
    assert logits_left.shape == (1, 7)
    assert not torch.allclose(logits_left, logits_right, atol=1e-5)
    assert model.classifier.in_features == 16 * 16


def test_head_grid_must_be_positive():
    with pytest.raises(ModelConfigError, match="head_grid"):
        CNNConfig(in_channels=1, num_classes=10, depth=3, head_grid=0)
