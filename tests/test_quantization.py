import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax import quantization as qlib


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_pack_unpack_roundtrip(bits):
    shape = (3, 5, 7)
    q = jax.random.randint(jax.random.key(bits), shape, 0, 2**bits).astype(jnp.uint8)
    packed = qlib.pack_codes(q, bits)
    assert packed.dtype == jnp.uint8 and packed.size == -(-q.size * bits // 8)
    chex.assert_trees_all_equal(qlib.unpack_codes(packed, bits, shape), q)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric"])
@pytest.mark.parametrize("axis", [None, -1])
def test_error_within_bound(bits, scheme, axis):
    x = jax.random.normal(jax.random.key(0), (3, 3, 4, 6)) * jnp.arange(1.0, 7.0)
    qt = rws.quantize_tensor(x, bits, scheme=scheme, axis=axis)
    xhat = rws.dequantize_tensor(qt)
    chex.assert_shape(xhat, x.shape)
    err = jnp.abs(xhat - x)
    assert bool(jnp.all(err <= qt.scale / 2 * (1 + 1e-5) + 1e-7))
    if axis is not None:
        chex.assert_shape(qt.scale, (1, 1, 1, 6))
    # the bound shrinks with the bit width: scale = range / (levels - 1)
    levels = 2**bits - 1 if scheme == "asymmetric" else 2 ** (bits - 1) - 1
    rng = (jnp.max(x) - jnp.min(x)) if scheme == "asymmetric" else jnp.max(jnp.abs(x))
    if axis is None:
        np.testing.assert_allclose(float(qt.scale), float(rng) / levels, rtol=1e-6)


def test_symmetric_keeps_zero_exact_and_bias_is_per_tensor():
    x = jnp.array([0.0, 1.0, -0.5, 0.25])
    qt = rws.quantize_tensor(x, 4, scheme="symmetric", axis=-1)
    assert qt.axis is None  # 1-D leaves fall back to per tensor
    assert float(rws.dequantize_tensor(qt)[0]) == 0.0


def test_constant_and_zero_tensors():
    for x in (jnp.zeros((4, 4)), jnp.full((4, 4), 3.0)):
        for scheme in ("asymmetric", "symmetric"):
            out = rws.dequantize_tensor(rws.quantize_tensor(x, 2, scheme=scheme))
            chex.assert_trees_all_close(out, x)


def test_round_half_to_even():
    # codes 0..255 over [0, 255]: scale 1, 0.5 -> 0 and 1.5 -> 2 (half to even)
    x = jnp.array([0.0, 0.5, 1.5, 255.0])
    qt = rws.quantize_tensor(x, 8)
    chex.assert_trees_all_equal(qlib.unpack_codes(qt.data, 8, (4,)), jnp.array([0, 0, 2, 255], jnp.uint8))


def test_quantize_signature_and_fused_patch(tiny_models):
    _, init, std, fog, _ = tiny_models
    sig = rws.extract(init, std, fog, rws.first_k(3), name="fog")
    q8 = rws.quantize(sig, 8, per_channel=True)
    assert q8.is_quantized and q8.meta.quantization == "asymmetric/per_channel/8"
    assert q8.nbytes() < sig.nbytes()
    q4 = rws.quantize(sig, 4)
    assert sum(v.data.size for v in q4.deltas.values()) < sum(v.data.size for v in rws.quantize(sig, 8).deltas.values())
    fused = rws.patch(std, q8, 0.7)
    separate = rws.patch(std, rws.dequantize(q8), 0.7)
    chex.assert_trees_all_close(fused, separate, rtol=1e-6, atol=1e-7)
    close = rws.patch(std, sig, 0.7)
    chex.assert_trees_all_close(fused, close, atol=0.7 * max(float(jnp.max(v.scale)) for v in q8.deltas.values()))
    with pytest.raises(rws.RWSError, match="already quantized"):
        rws.quantize(q8, 4)
    with pytest.raises(rws.RWSError, match="bit width"):
        rws.quantize(sig, 3)
    with pytest.raises(rws.RWSError, match="scheme"):
        rws.quantize(sig, 8, scheme="log")


def test_reference_quantizer_shares_range(tiny_models):
    _, init, std, fog, snow = tiny_models
    a = rws.extract(init, std, fog, rws.first_k(2), name="fog")
    b = rws.extract(init, std, snow, rws.first_k(2), name="snow")
    qa, qb = rws.quantize_reference([a, b], levels=16)
    assert qa.meta.quantization == "asymmetric/per_tensor/4/shared_range"
    for p in a.deltas:
        chex.assert_trees_all_equal(qa.deltas[p].scale, qb.deltas[p].scale)
        lo = min(float(jnp.min(a.deltas[p])), float(jnp.min(b.deltas[p])))
        np.testing.assert_allclose(float(qa.deltas[p].offset), lo, rtol=1e-6)
        err = jnp.abs(rws.dequantize_tensor(qa.deltas[p]) - a.deltas[p])
        assert bool(jnp.all(err <= qa.deltas[p].scale / 2 * (1 + 1e-5) + 1e-7))
    with pytest.raises(rws.RWSError, match="levels"):
        rws.quantize_reference([a], levels=100)
