"""Tests for rws_jax.models: shapes, unit order, BatchNorm state, parameter counts."""

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rws_jax.models import (
    MODEL_NAMES,
    VGG,
    ResNet,
    ResNetCifar,
    get_model,
    resnet18,
    resnet50,
    unit_order,
    uses_batch_norm,
)

# Reduced widths so that compiling and running stays quick on 2 CPU cores.
FAST = {
    "vgg16": dict(width=0.125),
    "resnet20": dict(width=0.5),
    "resnet18": dict(width=0.125, small_input=True),
}
SLOW = {
    "resnet56": dict(width=0.25),
    "resnet50": dict(width=0.125),
    "resnet18_imagenet_stem": dict(width=0.125),
}
CASES = [pytest.param(n, kw, id=n) for n, kw in FAST.items()] + [
    pytest.param(n, kw, id=n, marks=pytest.mark.slow) for n, kw in SLOW.items()]


def _build(name, kwargs, num_classes=7):
    base = "resnet18" if name == "resnet18_imagenet_stem" else name
    return get_model(base, num_classes, **kwargs)


def _count(model, shape, collection="params"):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32)))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes[collection]))


def _top_level_call_order(model, variables, x):
    """Names of top-level submodules in the order their __call__ runs."""
    order = []

    def interceptor(next_fun, args, kwargs, context):
        path = context.module.scope.path
        if context.method_name == "__call__" and len(path) == 1 and path[0] not in order:
            order.append(path[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):  # tracing only: the order is recorded at trace time
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return order


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name,kwargs", CASES)
def test_forward_shapes_and_unit_order(name, kwargs, channels):
    model = _build(name, kwargs)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, channels))
    variables = model.init(jax.random.key(0), x)
    logits = model.apply(variables, x, train=False)
    chex.assert_shape(logits, (2, 7))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)

    units = unit_order(model)
    assert units == model.unit_names
    assert "head" not in units
    params = variables["params"]
    assert set(params) == set(units) | {"head"}
    # Forward order == the order in which the top-level submodules are actually called.
    assert _top_level_call_order(model, variables, x) == list(units) + ["head"]
    # The first unit sees the image channels.
    first = params[units[0]]
    kernel = first["kernel"] if "kernel" in first else first["conv"]["kernel"]
    assert kernel.shape[2] == channels


@pytest.mark.parametrize("name,kwargs", CASES)
def test_batch_stats(name, kwargs):
    model = _build(name, kwargs)
    x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
    if not uses_batch_norm(model):
        shapes = jax.eval_shape(model.init, jax.random.key(0), x)
        assert "batch_stats" not in shapes
        return
    variables = model.init(jax.random.key(0), x)
    assert set(variables["batch_stats"]) == set(model.unit_names)
    # Eager (op-by-op) execution: compiling whole models with XLA is slower on small CPUs.
    def train_apply(v, x):
        return model.apply(v, x, train=True, mutable=["batch_stats"])

    def eval_apply(v, x):
        return model.apply(v, x, train=False)

    logits, updates = train_apply(variables, x)
    chex.assert_shape(logits, (4, 7))
    old = jax.tree_util.tree_leaves(variables["batch_stats"])
    new = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert len(old) == len(new)
    assert all(not np.allclose(a, b) for a, b in zip(old, new))
    # Eval mode uses the running averages and needs nothing mutable.
    eval1 = eval_apply(variables, x)
    eval2 = eval_apply({**variables, **updates}, x)
    assert not np.allclose(eval1, eval2)


def test_vgg16_structure_and_count():
    model = get_model("vgg16", 10)
    assert isinstance(model, VGG)
    assert model.unit_names == tuple(f"conv_{i}" for i in range(13))
    n = _count(model, (1, 32, 32, 3))
    assert n == 14_719_818  # 14.71M conv + 5,130 head
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    widths = [shapes["params"][u]["kernel"].shape[-1] for u in model.unit_names]
    assert widths == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    small = jax.eval_shape(lambda: get_model("vgg16", 10, width=0.125).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 1))))
    assert small["params"]["conv_0"]["kernel"].shape == (3, 3, 1, 8)
    assert small["params"]["conv_12"]["kernel"].shape == (3, 3, 64, 64)


def test_vgg16_is_the_reference_architecture():
    """Four max-pools (32 -> 2), the last 2x2 map *averaged* (AdaptiveAvgPool2d(1)), one Linear."""
    model = VGG(num_classes=10, width=0.125)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)  # random values without compiling the initialisers
    variables = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), s.dtype), shapes)
    logits, state = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True))(variables, x)
    inter = state["intermediates"]
    c11, c12 = inter["conv_11"]["__call__"][0], inter["conv_12"]["__call__"][0]
    assert c11.shape == c12.shape == (2, 2, 2, 64)  # no pool after the 4th: conv_12 sees 2x2
    head = variables["params"]["head"]
    assert set(head) == {"kernel", "bias"} and head["kernel"].shape == (64, 10)
    pooled = jnp.maximum(c12, 0).mean(axis=(1, 2))  # ReLU, AdaptiveAvgPool2d((1, 1)), flatten
    np.testing.assert_allclose(logits, pooled @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)


def test_vgg_init_mirrors_the_reference():
    # kaiming_normal_(fan_out, relu) untruncated for convs, N(0, 0.01) Linear, zero biases.
    model = VGG(num_classes=100, cfg=(16, "M", 32))  # two convs suffice; fan_out != fan_in in both
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    for name in ("conv_0", "conv_1"):
        k = np.asarray(params[name]["kernel"])
        std = np.sqrt(2.0 / (k.shape[0] * k.shape[1] * k.shape[3]))  # fan_out = kh * kw * out
        assert abs(k.std() / std - 1) < 0.1, (name, k.std(), std)
    k1 = np.asarray(params["conv_1"]["kernel"])
    assert np.abs(k1).max() > 3 * k1.std()  # not a (2-sigma) truncated normal
    assert abs(np.asarray(params["head"]["kernel"]).std() / 0.01 - 1) < 0.1
    for p in params.values():
        np.testing.assert_array_equal(p["bias"], 0)


def test_vgg_he_fan_in_init_scheme_and_unknown_scheme():
    # 'he_fan_in' (the offline presets'): fan-in He-normal convs, LeCun-normal head; same shapes.
    ref = VGG(num_classes=100, cfg=(16, "M", 32))
    alt = VGG(num_classes=100, cfg=(16, "M", 32), init_scheme="he_fan_in")
    x = jnp.zeros((1, 8, 8, 3))
    p_ref = jax.jit(ref.init)(jax.random.key(0), x)["params"]
    p_alt = jax.jit(alt.init)(jax.random.key(0), x)["params"]
    chex.assert_trees_all_equal_shapes(p_ref, p_alt)
    k0 = np.asarray(p_alt["conv_0"]["kernel"])  # fan_in = 3*3*3: std ≈ sqrt(2/27) before truncation
    assert 0.7 < k0.std() / np.sqrt(2.0 / 27) < 1.0
    assert abs(np.asarray(p_alt["head"]["kernel"]).std() / np.sqrt(1.0 / 32) - 1) < 0.15
    with pytest.raises(ValueError, match="unknown VGG init_scheme"):
        VGG(num_classes=10, cfg=(8,), init_scheme="xavier").init(jax.random.key(0), x)


def test_unit_names_are_not_sorted_order():
    # Names are not zero-padded: sorting them is *not* the forward order.
    vgg = get_model("vgg16", 10)
    assert sorted(vgg.unit_names) != list(vgg.unit_names)
    r56 = get_model("resnet56", 10)
    assert len(r56.unit_names) == 1 + 27
    assert r56.unit_names[:3] == ("stem", "block_0_0", "block_0_1")
    r110 = get_model("resnet110", 10)  # 18 blocks per stage
    assert r110.unit_names.index("block_0_2") < r110.unit_names.index("block_0_10")
    assert sorted(r110.unit_names) != list(r110.unit_names)


@pytest.mark.parametrize("model,shape,expected,tol", [
    (resnet18(1000), (1, 224, 224, 3), 11_689_512, 0),
    (resnet18(10, small_input=True), (1, 32, 32, 3), 11_173_962, 0),
    (resnet50(1000), (1, 224, 224, 3), 25_557_032, 0),
    (ResNetCifar(depth=20, num_classes=10), (1, 32, 32, 3), 269_722, 0),
    (ResNetCifar(depth=56, num_classes=10), (1, 32, 32, 3), 853_018, 0),
    (ResNetCifar(depth=20, num_classes=10, shortcut="projection"), (1, 32, 32, 3), 272_474, 0),
], ids=["resnet18", "resnet18_small", "resnet50", "resnet20", "resnet56", "resnet20_B"])
def test_parameter_counts(model, shape, expected, tol):
    assert abs(_count(model, shape) - expected) <= tol


def test_resnet_names_and_unit_contents():
    model = resnet50(10, width=0.125)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    params = shapes["params"]
    assert model.unit_names == ("stem",) + tuple(
        f"block_{s}_{i}" for s, n in enumerate((3, 4, 6, 3)) for i in range(n))
    assert set(params["stem"]) == {"conv", "bn"}
    assert params["stem"]["conv"]["kernel"].shape[:2] == (7, 7)
    assert set(params["block_0_0"]) == {"conv_0", "bn_0", "conv_1", "bn_1", "conv_2", "bn_2",
                                        "proj_conv", "proj_bn"}
    assert "proj_conv" not in params["block_0_1"]
    small = resnet18(10, small_input=True, width=0.125)
    s_shapes = jax.eval_shape(lambda: small.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert s_shapes["params"]["stem"]["conv"]["kernel"].shape == (3, 3, 3, 8)
    assert set(s_shapes["batch_stats"]["stem"]["bn"]) == {"mean", "var"}


def test_resnet_bn_settings():
    model = ResNetCifar(depth=20, width=0.25)
    bn_modules = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            bn_modules.append(context.module)
        return next_fun(*args, **kwargs)

    x = jnp.ones((2, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)
    assert bn_modules
    assert all(m.momentum == 0.9 and m.use_running_average is False for m in bn_modules)


def test_vgg_28x28_and_train_flag():
    model = VGG(num_classes=10, width=0.125)
    x = jnp.ones((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    apply = model.apply
    out_eval = apply(variables, x)
    out_train = apply(variables, x, train=True)
    chex.assert_shape(out_eval, (2, 10))
    np.testing.assert_allclose(out_eval, out_train)


def test_get_model_registry():
    assert {"vgg16", "resnet20", "resnet56", "resnet18", "resnet50"} <= set(MODEL_NAMES)
    assert isinstance(get_model("resnet20", 10), ResNetCifar)
    assert get_model("resnet56", 10).depth == 56
    r18 = get_model("ResNet18", 100, small_input=True)
    assert isinstance(r18, ResNet) and r18.small_input and r18.num_classes == 100
    with pytest.raises(ValueError, match=r"unknown model 'resnet7'.*vgg16.*resnet20.*resnet50"):
        get_model("resnet7", 10)
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetCifar(depth=21).unit_names
    with pytest.raises(TypeError):
        unit_order(nn.Dense(3))


def test_unit_names_match_selection_style_regex():
    # Unit names are plain identifiers usable in regex-based selections.
    for name in ("vgg16", "resnet20", "resnet18"):
        assert all(re.fullmatch(r"(conv_\d+|stem|block_\d+_\d+)", u)
                   for u in get_model(name, 10).unit_names)
