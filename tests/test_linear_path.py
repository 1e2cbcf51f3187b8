"""The linear-path diagnostic: θ(t) = (1 − t)·θ_a + t·θ_b, the metric along it, its barrier."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rws_jax as rws
from rws_jax.errors import IncompatibleSignatureError, NonFiniteError, RWSError


def _two_wells(c):
    """L(θ) = min((θ − 1)², (θ + 1)² + c) summed over a 1-element leaf: wells at −1 (L = c) and +1 (L = 0)."""
    def loss(v):
        x = v["w"][0]
        return jnp.minimum((x - 1.0) ** 2, (x + 1.0) ** 2 + c)
    return loss


def test_two_wells_barrier_matches_the_hand_computation():
    # θ(t) = −1 + 2t; left well L = 4t² + c, right well L = 4(1 − t)²; line = c(1 − t).
    # The wells meet at θ = −c/4, t* = 1/2 − c/8, where the gap 4t*² + c·t* is largest.
    c = 0.8
    t_star = 0.5 - c / 8
    want = 4 * t_star**2 + c * t_star  # 0.96 at t* = 0.4 (the mean of the endpoints would give 1.04)
    res = rws.evaluate_path({"w": jnp.array([-1.0])}, {"w": jnp.array([1.0])}, _two_wells(c),
                            higher_is_better=False, num_points=11)
    assert isinstance(res, rws.PathResult)
    assert res.ts == tuple(np.linspace(0, 1, 11)) and len(res.values) == 11
    np.testing.assert_allclose(res.values[0], c, rtol=1e-6)
    assert res.values[-1] == 0.0
    np.testing.assert_allclose(res.barrier, want, rtol=1e-5)
    np.testing.assert_allclose(res.argmax_t, t_star)
    assert res.higher_is_better is False
    # The same path measured as an "accuracy" (−loss): the same barrier, the dip is positive.
    acc = rws.evaluate_path({"w": jnp.array([-1.0])}, {"w": jnp.array([1.0])}, lambda v: -_two_wells(c)(v),
                            higher_is_better=True, num_points=11)
    np.testing.assert_allclose(acc.barrier, want, rtol=1e-5)


def test_barrier_by_hand_and_its_sign():
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    # Accuracy 0.9 → 0.8 along a line except a dip to 0.5 at t = 0.5 (line there: 0.85).
    acc = [0.9, 0.875, 0.5, 0.825, 0.8]
    assert rws.barrier(ts, acc, higher_is_better=True) == pytest.approx(0.35)
    # The same numbers read as a loss: the path is below the line, no barrier.
    assert rws.barrier(ts, acc, higher_is_better=False) == 0.0
    # Above the line (accuracy) or below it (loss): 0, never negative.
    assert rws.barrier(ts, [0.5, 0.9, 0.95, 0.9, 0.6], higher_is_better=True) == 0.0
    assert rws.barrier(ts, [1.0, 0.2, 0.1, 0.2, 1.0], higher_is_better=False) == 0.0
    assert rws.barrier(ts, [1.0, 0.2, 3.0, 0.2, 1.0], higher_is_better=False) == pytest.approx(2.0)


def test_identical_endpoints_give_no_barrier():
    theta = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}}
    res = rws.evaluate_path(theta, theta, lambda v: jnp.sum(v["params"]["w"] ** 2), higher_is_better=False,
                            num_points=5)
    assert res.barrier == 0.0 and res.argmax_t == 0.0
    assert len(set(res.values)) == 1


def test_endpoints_are_reproduced_bit_for_bit():
    k1, k2 = jax.random.split(jax.random.key(0))
    a = {"w": jax.random.normal(k1, (4, 5)).at[0, 0].set(-0.0), "h": jax.random.normal(k1, (7,), jnp.bfloat16)}
    b = {"w": jax.random.normal(k2, (4, 5)).at[1, 1].set(-0.0), "h": jax.random.normal(k2, (7,), jnp.bfloat16)}
    bits = lambda tree: jax.tree.map(lambda x: np.asarray(x).view(np.uint8 if x.dtype.itemsize == 1  # noqa: E731
                                                                  else f"u{x.dtype.itemsize}"), tree)
    for t, want in ((0.0, a), (1.0, b), (jnp.float32(0), a), (np.float64(1), b)):
        got = rws.interpolate(a, b, t)
        chex.assert_trees_all_equal(bits(got), bits(want))
        chex.assert_trees_all_equal_dtypes(got, want)
    mid = rws.interpolate(a, b, 0.25)
    chex.assert_trees_all_close(mid["w"], 0.75 * a["w"] + 0.25 * b["w"], rtol=1e-6)
    assert mid["h"].dtype == jnp.bfloat16


def test_linen_dict_and_nnx_state():
    model = nn.Dense(3)
    x = jnp.ones((2, 4))
    va = model.init(jax.random.key(0), x)
    vb = model.init(jax.random.key(1), x)
    mid = rws.interpolate(va, vb, 0.5)
    chex.assert_trees_all_close(mid, jax.tree.map(lambda p, q: 0.5 * p + 0.5 * q, va, vb), rtol=1e-6)
    chex.assert_trees_all_equal_structs(mid, va)

    graphdef, sa = nnx.split(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
    _, sb = nnx.split(nnx.Linear(4, 3, rngs=nnx.Rngs(1)))
    got = rws.interpolate(sa, sb, 0.3)
    assert isinstance(got, nnx.State)
    merged = nnx.merge(graphdef, got)
    want = 0.7 * sa["kernel"][...] + 0.3 * sb["kernel"][...]
    chex.assert_trees_all_close(merged.kernel[...], want, rtol=1e-6)
    res = rws.evaluate_path(sa, sb, lambda s: jnp.sum(nnx.merge(graphdef, s)(x)), higher_is_better=True,
                            num_points=3)
    assert res.values[0] == pytest.approx(float(jnp.sum(nnx.merge(graphdef, sa)(x))))


def test_non_floating_leaves_are_kept_or_refused():
    a = {"w": jnp.zeros(3), "step": jnp.array(5, jnp.int32)}
    b = {"w": jnp.ones(3), "step": jnp.array(5, jnp.int32)}
    got = rws.interpolate(a, b, 0.5)
    assert got["step"].dtype == jnp.int32 and int(got["step"]) == 5
    with pytest.raises(IncompatibleSignatureError, match="non-floating leaf 'step'"):
        rws.interpolate(a, {**b, "step": jnp.array(6, jnp.int32)}, 0.5)



def test_interpolate_under_vmap_and_jit():
    a, b = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    path = jax.vmap(lambda t: rws.interpolate(a, b, t))(jnp.linspace(0.0, 1.0, 5))
    chex.assert_trees_all_close(path["w"], jnp.repeat(jnp.linspace(0.0, 1.0, 5)[:, None], 3, axis=1))
    chex.assert_trees_all_close(jax.jit(rws.interpolate)(a, b, 0.5), {"w": jnp.full(3, 0.5)})

def test_bad_input_is_refused_with_a_clear_error():
    a = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    with pytest.raises(IncompatibleSignatureError, match="only in theta_b: \\['c'\\]"):
        rws.interpolate(a, {**a, "c": jnp.zeros(1)}, 0.5)
    with pytest.raises(IncompatibleSignatureError, match="'w' is \\(\\(2, 3\\), 'float32'\\) in theta_a"):
        rws.interpolate(a, {**a, "w": jnp.zeros((3, 2))}, 0.5)
    with pytest.raises(IncompatibleSignatureError, match="'b'.*float16"):
        rws.interpolate(a, {**a, "b": jnp.zeros(3, jnp.float16)}, 0.5)
    with pytest.raises(NonFiniteError, match="theta_b holds NaN/inf in \\['w'\\]"):
        rws.interpolate(a, {**a, "w": jnp.full((2, 3), jnp.nan)}, 0.5)
    with pytest.raises(NonFiniteError, match="theta_a"):
        rws.evaluate_path({**a, "b": jnp.array([0.0, jnp.inf, 0.0])}, a, lambda v: 0.0, higher_is_better=True)
    for t in (1.5, -0.1):
        with pytest.raises(RWSError, match="t must be in \\[0, 1\\]"):
            rws.interpolate(a, a, t)
    with pytest.raises(NonFiniteError, match="t must be finite"):
        rws.interpolate(a, a, float("nan"))
    with pytest.raises(NonFiniteError, match="NaN/inf at t = \\[0.5\\]"):
        rws.evaluate_path(a, {**a, "w": jnp.ones((2, 3))}, lambda v: jnp.where(v["w"][0, 0] == 0.5, jnp.nan, 1.0),
                          higher_is_better=True, ts=[0.0, 0.5, 1.0])
    with pytest.raises(RWSError, match="from 0.0 to 1.0"):
        rws.evaluate_path(a, a, lambda v: 1.0, higher_is_better=True, ts=[0.0, 0.5])
    with pytest.raises(RWSError, match="either ts or num_points"):
        rws.evaluate_path(a, a, lambda v: 1.0, higher_is_better=True, ts=[0.0, 1.0], num_points=2)
    with pytest.raises(RWSError, match="at least 2"):
        rws.evaluate_path(a, a, lambda v: 1.0, higher_is_better=True, num_points=1)


def test_recompute_stats_runs_on_every_interpolated_model_before_the_metric():
    # Statistics that are a nonlinear function of the weights: interpolating them is wrong,
    # recomputing them from θ(t) is right; the metric sees the recomputed ones.
    stats_of = lambda w: w**2  # noqa: E731
    a = {"params": {"w": jnp.array([1.0, -2.0])}, "batch_stats": {"var": stats_of(jnp.array([1.0, -2.0]))}}
    b = {"params": {"w": jnp.array([-1.0, 2.0])}, "batch_stats": {"var": stats_of(jnp.array([-1.0, 2.0]))}}
    seen = []

    def recompute(v):
        seen.append(float(v["params"]["w"][0]))
        return {**v, "batch_stats": {"var": stats_of(v["params"]["w"])}}

    metric = lambda v: jnp.sum(v["batch_stats"]["var"])  # noqa: E731
    plain = rws.evaluate_path(a, b, metric, higher_is_better=True, num_points=3)
    fixed = rws.evaluate_path(a, b, metric, higher_is_better=True, num_points=3, recompute_stats=recompute)
    assert seen == [1.0, 0.0, -1.0]
    assert plain.values == (5.0, 5.0, 5.0) and plain.barrier == 0.0
    assert fixed.values == (5.0, 0.0, 5.0) and fixed.barrier == 5.0 and fixed.argmax_t == 0.5


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="out")(nn.relu(nn.Dense(16, name="hidden")(x)))


def test_barrier_between_two_trained_minima_related_by_a_permutation():
    # XOR of the signs of two coordinates: needs the hidden layer. Permuting the hidden
    # units of the trained model gives a second, functionally identical minimum; the
    # straight path between the two averages units in pairs and loses accuracy.
    x = jax.random.uniform(jax.random.key(0), (256, 2), minval=-1.0, maxval=1.0)
    y = ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(jnp.int32)
    model = _MLP()
    params = model.init(jax.random.key(1), x)["params"]
    tx = optax.adam(0.05)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(step, (p, tx.init(p)), None, length=300)[0][0]

    theta_a = {"params": train(params)}
    perm = jnp.arange(16)[::-1]
    pa = theta_a["params"]
    theta_b = {"params": {"hidden": {"kernel": pa["hidden"]["kernel"][:, perm], "bias": pa["hidden"]["bias"][perm]},
                          "out": {"kernel": pa["out"]["kernel"][perm], "bias": pa["out"]["bias"]}}}
    accuracy = jax.jit(lambda v: jnp.mean(jnp.argmax(model.apply(v, x), -1) == y))
    xent = jax.jit(lambda v: loss(v["params"]))
    assert float(accuracy(theta_a)) > 0.95
    np.testing.assert_allclose(float(xent(theta_b)), float(xent(theta_a)), rtol=1e-4)  # the same function

    by_loss = rws.evaluate_path(theta_a, theta_b, xent, higher_is_better=False, num_points=11)
    by_acc = rws.evaluate_path(theta_a, theta_b, accuracy, higher_is_better=True, num_points=11)
    assert by_loss.barrier > 0.1 and 0.0 < by_loss.argmax_t < 1.0
    assert by_acc.barrier > 0.05 and 0.0 < by_acc.argmax_t < 1.0
    # Along a path within one basin (θ_a to itself, slightly shifted) there is none to speak of.
    near = jax.tree.map(lambda w: w * 1.001, theta_a)
    assert rws.evaluate_path(theta_a, near, xent, higher_is_better=False, num_points=5).barrier < 1e-3
