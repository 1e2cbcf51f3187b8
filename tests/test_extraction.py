import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rws_jax as rws


def _flat_dot(a, b):
    return float(jnp.vdot(jnp.ravel(a), jnp.ravel(b)))


def test_signature_is_orthogonal_to_clean_direction(tiny_models):
    _, init, std, fog, _ = tiny_models
    sig = rws.extract(init, std, fog, rws.first_k(3), name="fog", severity=5)
    assert sig.name == "fog" and sig.meta.severity == 5 and sig.meta.kind == "projected"
    for p, d in sig.deltas.items():
        coll, unit, leaf = p.split("/")
        a = std[coll][unit][leaf] - init[coll][unit][leaf]
        raw = fog[coll][unit][leaf] - init[coll][unit][leaf]
        chex.assert_equal_shape([d, a])
        assert abs(_flat_dot(d, a)) <= 1e-5 * float(jnp.linalg.norm(raw)) * float(jnp.linalg.norm(a))
        # d = raw - c * a: the removed part is parallel to a
        resid = raw - d
        cos = _flat_dot(resid, a) / (float(jnp.linalg.norm(resid)) * float(jnp.linalg.norm(a)))
        assert abs(cos) > 0.999


def test_projection_matches_dense_formula():
    key = jax.random.key(0)
    d, a = jax.random.normal(key, (2, 50))
    ahat = a / jnp.linalg.norm(a)
    want = d - jnp.dot(d, ahat) * ahat
    chex.assert_trees_all_close(rws.project_out(d, a), want, atol=1e-6)


@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e-8])
def test_zero_or_tiny_clean_direction_is_safe(scale):
    d = jnp.arange(6.0).reshape(2, 3)
    a = jnp.ones((2, 3)) * scale
    out = rws.project_out(d, a)
    assert bool(jnp.all(jnp.isfinite(out)))
    if scale == 0.0 or scale == 1e-30:
        chex.assert_trees_all_equal(out, d)
    else:  # tiny but above eps: still a proper projection
        assert abs(float(jnp.sum(out * a))) < 1e-12


def test_unchanged_standard_model_gives_plain_difference(tiny_models):
    _, init, _, fog, _ = tiny_models
    sig = rws.extract(init, init, fog, rws.first_k(2))
    diff = rws.extract(init, init, fog, rws.first_k(2), project=False)
    chex.assert_trees_all_close(sig.deltas, diff.deltas)
    assert diff.meta.kind == "difference"


def test_difference_option(tiny_models):
    _, init, std, fog, _ = tiny_models
    sig = rws.extract(init, std, fog, rws.first_k(2), project=False)
    for p, v in sig.deltas.items():
        c, u, l = p.split("/")
        chex.assert_trees_all_close(v, fog[c][u][l] - init[c][u][l])


def test_low_precision_models_give_float32_deltas(tiny_models):
    _, init, std, fog, _ = tiny_models
    cast = lambda t: jax.tree.map(lambda x: x.astype(jnp.bfloat16), t)  # noqa: E731
    sig = rws.extract(cast(init), cast(std), cast(fog), rws.first_k(1))
    assert all(v.dtype == jnp.float32 for v in sig.deltas.values())


def test_mismatched_models_are_refused(tiny_models):
    _, init, std, fog, _ = tiny_models
    bad = jax.tree.map(lambda x: x, fog)
    bad["params"]["conv_0"]["kernel"] = jnp.zeros((3, 3, 1, 5))
    with pytest.raises(rws.IncompatibleSignatureError, match="conv_0/kernel"):
        rws.extract(init, std, bad, rws.first_k(1))
    nan = jax.tree.map(lambda x: x, fog)
    nan["params"]["conv_0"]["bias"] = nan["params"]["conv_0"]["bias"].at[0].set(jnp.nan)
    with pytest.raises(rws.NonFiniteError, match="conv_0/bias"):
        rws.extract(init, std, nan, rws.first_k(1))


def test_nnx_state_extract_and_patch():
    def make(seed):
        return nnx.Sequential(nnx.Conv(1, 4, (3, 3), rngs=nnx.Rngs(seed)), nnx.Linear(4, 3, rngs=nnx.Rngs(seed)))

    graphdef, init = nnx.split(make(0))
    _, std = nnx.split(make(1))
    _, rob = nnx.split(make(2))
    sig = rws.extract(init, std, rob, rws.by_pattern(r"^layers/0/"))
    assert set(sig.deltas) == {"layers/0/kernel", "layers/0/bias"}
    patched = rws.patch(std, sig, 0.5)
    model = nnx.merge(graphdef, patched)
    want = std["layers"][0]["kernel"][...] + 0.5 * sig.deltas["layers/0/kernel"]
    chex.assert_trees_all_close(model.layers[0].kernel[...], want)


def test_relative_change_per_unit(tiny_models):
    _, init, std, *_ = tiny_models
    rc = rws.relative_change(init, std)
    assert set(rc) == {"conv_0", "bn_0", "conv_1", "conv_2", "head"}
    assert all(v > 0 for v in rc.values())
    assert rws.relative_change(init, init)["conv_0"] == 0.0
