"""rws_jax.models.conv: the CPU-friendly Conv / max-pool equal flax.linen's to float32 rounding."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rws_jax.models import get_model
from rws_jax.models.conv import IMPLS, Conv, choose_impl, conv2d, max_pool_2x2

RTOL = 1e-5


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# (input shape, features, kernel, strides, padding, use_bias)
CONV_CASES = [
    ((3, 8, 8, 5), 6, (3, 3), (1, 1), ((1, 1), (1, 1)), True),
    ((2, 9, 7, 4), 3, (3, 3), (2, 2), ((1, 1), (1, 1)), False),     # strided, odd sizes
    ((2, 2, 2, 16), 8, (3, 3), (1, 1), ((1, 1), (1, 1)), True),     # tiny map ('auto' -> im2col)
    ((2, 6, 6, 4), 5, (1, 1), (2, 2), ((0, 0), (0, 0)), False),     # 1x1 projection shortcut
    ((2, 10, 10, 3), 4, (7, 7), (2, 2), ((3, 3), (3, 3)), False),   # ImageNet stem
    ((2, 5, 5, 3), 4, (3, 3), (1, 1), "SAME", True),
    ((2, 6, 6, 3), 4, (3, 3), (1, 1), "VALID", True),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape,features,kernel,strides,padding,use_bias", CONV_CASES)
def test_conv_matches_flax_conv(impl, shape, features, kernel, strides, padding, use_bias):
    ref = nn.Conv(features, kernel, strides=strides, padding=padding, use_bias=use_bias)
    ours = Conv(features, kernel, strides=strides, padding=padding, use_bias=use_bias, impl=impl)
    x = jax.random.normal(jax.random.key(1), shape)
    v_ref = ref.init(jax.random.key(0), x)
    v_ours = ours.init(jax.random.key(0), x)
    chex.assert_trees_all_equal(v_ours, v_ref)  # identical parameter tree and initial values
    if use_bias:  # a non-zero bias, so its gradient path is exercised with a real value
        v_ref = jax.tree_util.tree_map(lambda p: p + 0.1, v_ref)
        v_ours = v_ref
    y_ref, y_ours = ref.apply(v_ref, x), ours.apply(v_ours, x)
    assert y_ref.shape == y_ours.shape
    assert _rel(y_ours, y_ref) < RTOL
    g = jax.random.normal(jax.random.key(2), y_ref.shape)
    gv_ref, gx_ref = jax.vjp(lambda v, x: ref.apply(v, x), v_ref, x)[1](g)
    gv_ours, gx_ours = jax.vjp(lambda v, x: ours.apply(v, x), v_ours, x)[1](g)
    assert _rel(gx_ours, gx_ref) < RTOL
    for a, b in zip(jax.tree_util.tree_leaves(gv_ours), jax.tree_util.tree_leaves(gv_ref)):
        assert _rel(a, b) < RTOL


@pytest.mark.parametrize("impl", IMPLS)
def test_conv2d_jit_and_second_order(impl):
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    f = lambda x, k: jnp.sum(jnp.tanh(conv2d(x, k, (1, 1), "SAME", impl=impl)))
    fr = lambda x, k: jnp.sum(jnp.tanh(jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    g, gr = jax.jit(jax.grad(f, (0, 1)))(x, k), jax.grad(fr, (0, 1))(x, k)
    for a, b in zip(g, gr):
        assert _rel(a, b) < RTOL
    if impl != "tap_grad":  # custom_vjp rules are first-order only
        hv = jax.grad(lambda x: jnp.sum(jax.grad(f, 1)(x, k) ** 2))(x)
        hvr = jax.grad(lambda x: jnp.sum(jax.grad(fr, 1)(x, k) ** 2))(x)
        assert _rel(hv, hvr) < 1e-4


def test_conv_bfloat16_dtype():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))
    for impl in IMPLS:
        m = Conv(16, (3, 3), padding=((1, 1), (1, 1)), dtype=jnp.bfloat16, impl=impl)
        v = m.init(jax.random.key(0), x)
        y = m.apply(v, x)
        assert y.dtype == jnp.bfloat16
        gk = jax.grad(lambda v: jnp.sum(m.apply(v, x).astype(jnp.float32)))(v)["params"]["kernel"]
        assert gk.dtype == jnp.float32 and gk.shape == (3, 3, 8, 16)


def test_conv_rejects_unknown_impl():
    with pytest.raises(ValueError, match="impl"):
        Conv(4, (3, 3), impl="nope").init(jax.random.key(0), jnp.zeros((1, 4, 4, 2)))


def test_choose_impl_rules():
    p = ((1, 1), (1, 1))
    assert choose_impl((128, 2, 2, 512), (3, 3, 512, 512), (1, 1), p) == "im2col"
    assert choose_impl((128, 16, 16, 128), (3, 3, 128, 128), (1, 1), p) == "tap_grad"
    assert choose_impl((128, 32, 32, 16), (3, 3, 16, 16), (1, 1), p) == "xla"


@pytest.mark.parametrize("shape", [(3, 8, 8, 4), (2, 7, 9, 3), (2, 2, 2, 5)])
def test_max_pool_2x2_matches_flax_including_ties(shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 3, shape).astype(np.float32))  # many ties in each window
    y_ref, vjp_ref = jax.vjp(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)), x)
    y, vjp = jax.vjp(max_pool_2x2, x)
    np.testing.assert_array_equal(y, y_ref)
    g = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
    np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])


@pytest.mark.parametrize("name,kwargs,shape", [
    ("vgg16", dict(width=0.125), (4, 32, 32, 3)),
    ("resnet20", dict(width=0.5), (4, 16, 16, 3)),
])
def test_models_auto_equal_xla(name, kwargs, shape):
    """Same variables, same logits and gradients (to float32 rounding) as plain nn.Conv."""
    fast = get_model(name, 10, **kwargs)
    ref = get_model(name, 10, conv_impl="xla", **kwargs)
    assert fast.conv_impl == "auto"
    x = jax.random.normal(jax.random.key(1), shape)
    v = ref.init(jax.random.key(0), x)
    v_fast = fast.init(jax.random.key(0), x)
    chex.assert_trees_all_equal(v_fast, v)  # identical parameter tree and initial values
    mutable = ["batch_stats"] if "batch_stats" in v else False

    def loss(m, params):
        out = m.apply({**v, "params": params}, x, train=True, mutable=mutable)
        logits = out[0] if mutable else out
        return jnp.sum(jnp.sin(logits)), logits

    (l_ref, y_ref), g_ref = jax.jit(jax.value_and_grad(lambda p: loss(ref, p), has_aux=True))(v["params"])
    (l_fast, y_fast), g_fast = jax.jit(jax.value_and_grad(lambda p: loss(fast, p), has_aux=True))(v["params"])
    assert _rel(y_fast, y_ref) < RTOL
    flat_ref = jax.tree_util.tree_leaves_with_path(g_ref)
    flat_fast = jax.tree_util.tree_leaves(g_fast)
    for (path, a), b in zip(flat_ref, flat_fast):
        # per-tensor relative error; 1e-4 leaves room for the depth of the network
        assert _rel(b, a) < 1e-4, jax.tree_util.keystr(path)
