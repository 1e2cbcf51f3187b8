import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax import quantization as qlib


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
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


# ------------------------------------------------------------- log2 and tanh schemes


def _mixed(key, shape):
    """Values over many magnitudes, both signs."""
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, shape) * 10.0 ** jax.random.uniform(k2, shape, minval=-4, maxval=1)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("axis", [None, -1])
def test_log2_relative_error_within_half_a_log_step(bits, axis):
    x = _mixed(jax.random.key(bits), (3, 3, 4, 8))
    qt = rws.quantize_tensor(x, bits, scheme="log2", axis=axis)
    assert qt.scheme == "log2" and qt.data.dtype == jnp.uint8
    if bits < 8:  # packed along the last axis like the uniform codes
        chex.assert_shape(qt.data, (3, 3, 4, 8 * bits // 8))
    codes = qlib.codes_of(qt)
    assert int(jnp.max(codes)) < 2**bits
    chex.assert_trees_all_equal(codes >= 2 ** (bits - 1), x < 0)  # the sign bit
    xhat = rws.dequantize_tensor(qt)
    chex.assert_shape(xhat, x.shape)
    assert bool(jnp.all(jnp.sign(xhat) == jnp.sign(x)))
    log_err = jnp.abs(jnp.log2(jnp.abs(xhat)) - jnp.log2(jnp.abs(x)))
    assert bool(jnp.all(log_err <= qt.scale / 2 * (1 + 1e-5) + 1e-5))
    rel = jnp.abs(xhat - x) / jnp.abs(x)
    assert bool(jnp.all(rel <= 2.0 ** (qt.scale / 2 * (1 + 1e-5) + 1e-5) - 1))
    # the range is that of log2|x|, with 2**(bits-1) levels
    lo = jnp.min(jnp.log2(jnp.abs(x)), axis=None if axis is None else (0, 1, 2), keepdims=axis is not None)
    chex.assert_trees_all_close(qt.offset, lo, rtol=1e-6)


def test_log2_zeros_and_all_zero_tensors():
    x = jnp.array([[0.0, -0.0, 0.5, -2.0], [1e-3, 0.0, 4.0, -0.25]])
    qt = rws.quantize_tensor(x, 8, scheme="log2")
    xhat = rws.dequantize_tensor(qt)
    assert bool(jnp.all(jnp.isfinite(xhat)))
    np.testing.assert_allclose(float(qt.offset), np.log2(1e-3), rtol=1e-6)  # min over nonzero magnitudes
    # zeros take code 0: the smallest nonzero magnitude, positive (documented deviation)
    zeros = np.asarray(x) == 0
    chex.assert_trees_all_equal(np.asarray(qlib.codes_of(qt))[zeros], np.zeros(3, np.uint8))
    np.testing.assert_allclose(np.asarray(xhat)[zeros], 1e-3, rtol=1e-5)
    # a tensor (or channel) without any nonzero value dequantizes to exact zeros
    for bits in (8, 4, 2):
        z = rws.quantize_tensor(jnp.zeros((4, 6)), bits, scheme="log2")
        assert float(z.scale) == 0.0 and float(z.offset) == qlib.LOG2_EMPTY_OFFSET
        chex.assert_trees_all_equal(rws.dequantize_tensor(z), jnp.zeros((4, 6)))
    pc = rws.quantize_tensor(jnp.array([[0.0, 1.0], [0.0, -3.0]]), 4, scheme="log2", axis=-1)
    out = rws.dequantize_tensor(pc)
    chex.assert_trees_all_equal(out[:, 0], jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(out[:, 1]), [1.0, -3.0], rtol=1e-6)
    # a single nonzero magnitude (zero log range) is exact
    one = rws.quantize_tensor(jnp.array([0.3, -0.3, 0.3]), 2, scheme="log2")
    np.testing.assert_allclose(np.asarray(rws.dequantize_tensor(one)), [0.3, -0.3, 0.3], rtol=1e-6)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("axis", [None, -1])
def test_tanh_error_within_half_step_in_tanh_space(bits, axis):
    x = jax.random.normal(jax.random.key(bits), (3, 3, 4, 8)) * jnp.linspace(0.1, 3.0, 8)
    qt = rws.quantize_tensor(x, bits, scheme="tanh", axis=axis)
    codes = qlib.codes_of(qt)
    assert int(jnp.max(codes)) < 2**bits
    xhat = rws.dequantize_tensor(qt)
    err = jnp.abs(jnp.tanh(xhat) - jnp.tanh(x))
    assert bool(jnp.all(err <= qt.scale / 2 * (1 + 1e-4) + 1e-6))
    red = None if axis is None else (0, 1, 2)
    chex.assert_trees_all_close(qt.offset, jnp.min(jnp.tanh(x), axis=red, keepdims=axis is not None), rtol=1e-6)


def test_tanh_saturation_is_clipped_not_inf():
    x = jnp.array([-30.0, -9.5, -1.0, 0.0, 0.5, 12.0, 100.0])
    qt = rws.quantize_tensor(x, 8, scheme="tanh")
    xhat = rws.dequantize_tensor(qt)
    assert bool(jnp.all(jnp.isfinite(xhat)))
    limit = float(np.arctanh(np.float64(qlib.TANH_LIMIT)))
    np.testing.assert_allclose(np.asarray(xhat)[[0, 1, 5, 6]], [-limit, -limit, limit, limit], rtol=1e-5)
    assert 8.6 < limit < 8.7
    # constant input: zero range, exact
    c = rws.quantize_tensor(jnp.full((5,), 0.7), 4, scheme="tanh")
    np.testing.assert_allclose(np.asarray(rws.dequantize_tensor(c)), 0.7, rtol=1e-6)


@pytest.mark.parametrize("method,scheme", [("log", "log2"), ("tanh", "tanh"), ("linear", "asymmetric")])
def test_reference_methods_share_the_range(tiny_models, method, scheme):
    _, init, std, fog, snow = tiny_models
    a = rws.extract(init, std, fog, rws.first_k(2), name="fog")
    b = rws.extract(init, std, snow, rws.first_k(3), name="snow")
    qa, qb = rws.quantize_reference([a, b], levels=16, method=method)
    assert qa.meta.quantization == f"{scheme}/per_tensor/4/shared_range"
    space = {"log": lambda v: jnp.log2(jnp.abs(v)), "tanh": jnp.tanh, "linear": lambda v: v}[method]
    for p in b.deltas:
        holders = [s for s in (a, b) if p in s.deltas]
        lo = min(float(jnp.min(space(s.deltas[p]))) for s in holders)
        hi = max(float(jnp.max(space(s.deltas[p]))) for s in holders)
        levels = 8 if method == "log" else 16
        np.testing.assert_allclose(float(qb.deltas[p].offset), lo, rtol=1e-6)
        np.testing.assert_allclose(float(qb.deltas[p].scale), (hi - lo) / (levels - 1), rtol=1e-5)
        if p in a.deltas:
            chex.assert_trees_all_equal((qa.deltas[p].scale, qa.deltas[p].offset), (qb.deltas[p].scale, qb.deltas[p].offset))
        assert qb.deltas[p].scheme == scheme and qb.deltas[p].bits == 4


def test_reference_method_and_input_errors(tiny_models):
    _, init, std, fog, _ = tiny_models
    a = rws.extract(init, std, fog, rws.first_k(2), name="fog")
    with pytest.raises(rws.RWSError, match=r"unknown reference quantization method 'sqrt'.*'linear', 'log', 'tanh'"):
        rws.quantize_reference([a], 256, method="sqrt")
    with pytest.raises(rws.RWSError, match="already quantized"):
        rws.quantize_reference([rws.quantize(a, 8)], 256)
    with pytest.raises(rws.RWSError, match=r"unknown quantization scheme 'log'.*log2"):
        rws.quantize(a, 8, scheme="log")


def test_asymmetric_codes_use_the_reference_order_of_operations():
    """round((x − lo) · fl(1/(hi − lo)) · (L − 1)) can differ by one from the old
    round((x − lo)/scale) at near-ties; these values are such ties."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000).astype(np.float32)
    lo, hi = x.min(), x.max()
    ties = (np.float64(lo) + (np.arange(20000) % 255 + 0.5) * (np.float64(hi) - lo) / 255).astype(np.float32)
    x = np.concatenate([ties, [lo, hi]])
    want = np.round((x - lo) * (np.float32(1) / (hi - lo)) * np.float32(255))
    old = np.round((x - lo) / ((hi - lo) / np.float32(255)))
    assert (want != old).sum() > 100  # the two formulas do disagree here
    got = qlib.codes_of(rws.quantize_tensor(jnp.asarray(x), 8))
    chex.assert_trees_all_equal(np.asarray(got), want.astype(np.uint8))


@pytest.mark.parametrize("scheme", ["log2", "tanh"])
def test_quantize_signature_with_new_schemes_and_fused_patch(tiny_models, scheme):
    from rws_jax import kernels

    _, init, std, fog, snow = tiny_models
    sig = rws.extract(init, std, fog, rws.first_k(3), name="fog")
    q = rws.quantize(sig, 4, scheme=scheme, per_channel=True)
    assert q.meta.quantization == f"{scheme}/per_channel/4"
    fused = rws.patch(std, q, 0.7)
    separate = rws.patch(std, rws.dequantize(q), 0.7)
    chex.assert_trees_all_close(fused, separate, rtol=1e-6, atol=1e-7)
    # the fused patch is one jitted function: a new coefficient does not recompile it
    before = kernels.combine_jit._cache_size()
    rws.patch(std, q, -0.2)
    assert kernels.combine_jit._cache_size() == before


@pytest.mark.parametrize("method", ["log", "tanh"])
def test_patch_with_reference_quantized_equals_its_dequantized_float(tiny_models, method):
    _, init, std, fog, snow = tiny_models
    sigs = [rws.extract(init, std, r, rws.first_k(3), name=n) for r, n in ((fog, "fog"), (snow, "snow"))]
    qs = rws.quantize_reference(sigs, 256, method=method)
    for alphas, mode in (([0.5, 1.5], "linear"), (1.0, "reference")):
        fused = rws.patch(std, qs, alphas, mode=mode)
        separate = rws.patch(std, [rws.dequantize(q) for q in qs], alphas, mode=mode)
        chex.assert_trees_all_close(fused, separate, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------- files with the new schemes


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_new_schemes_save_and_load(tmp_path, tiny_models, bits):
    _, init, std, fog, snow = tiny_models
    sigs = [rws.extract(init, std, r, rws.first_k(3), name=n) for r, n in ((fog, "fog"), (snow, "snow"))]
    for method in ("log", "tanh"):
        q = rws.quantize_reference(sigs, 2**bits, method=method)[0]
        p = rws.save_signature(tmp_path / f"{method}{bits}.rws", q)
        back = rws.load_signature(p, like=std)
        assert back.meta == q.meta
        for k, v in q.deltas.items():
            w = back.deltas[k]
            assert (w.scheme, w.bits, w.axis, w.shape) == (v.scheme, v.bits, v.axis, v.shape)
            chex.assert_trees_all_equal(qlib.codes_of(w), qlib.codes_of(v))
        chex.assert_trees_all_equal(rws.dequantize(back).deltas, rws.dequantize(q).deltas)
        chex.assert_trees_all_equal(rws.patch(std, back, 0.8), rws.patch(std, q, 0.8))
    per_channel = rws.quantize(sigs[0], bits, scheme="log2", per_channel=True)
    back = rws.load_signature(rws.save_signature(tmp_path / f"pc{bits}.rws", per_channel))
    chex.assert_trees_all_equal(rws.dequantize(back).deltas, rws.dequantize(per_channel).deltas)


def _one_tensor_sig(qt):
    path = "params/conv_0/kernel"
    return rws.Signature(
        deltas={path: qt},
        meta=rws.SignatureMeta(base_fingerprint="0" * 16, leaf_specs=((path, qt.shape, "float32"),), name="x"),
    )


def test_loader_refuses_scale_offset_that_overflow(tmp_path):
    x = jax.random.normal(jax.random.key(0), (3, 3, 2, 4))
    good = rws.quantize_tensor(x, 8, scheme="log2")
    # finite scale/offset, but 2**(127·scale + offset) is inf in float32
    for i, bad in enumerate((good.replace(offset=jnp.float32(200.0)), good.replace(scale=jnp.float32(2.0)),
                             rws.quantize_tensor(x, 8).replace(scale=jnp.float32(3e37)))):
        p = rws.save_signature(tmp_path / f"bad{i}.rws", _one_tensor_sig(bad), check_values=False)
        with pytest.raises(rws.NonFiniteError, match="overflowing float32"):
            rws.load_signature(p)
    # the same tensor with sane parameters loads
    ok = rws.load_signature(rws.save_signature(tmp_path / "ok.rws", _one_tensor_sig(good)))
    chex.assert_trees_all_equal(rws.dequantize(ok).deltas, rws.dequantize(_one_tensor_sig(good)).deltas)


def test_loader_refuses_quantized_tensor_of_integer_dtype(tmp_path):
    qt = rws.quantize_tensor(jnp.arange(8.0).reshape(2, 4), 8, scheme="tanh").replace(dtype="uint8")
    p = rws.save_signature(tmp_path / "u8.rws", _one_tensor_sig(qt), check_values=False)
    with pytest.raises(rws.SignatureFileError, match="non-float dtype 'uint8'"):
        rws.load_signature(p)


# ------------------------------------------------------------- 1 bit: the sign scheme


def _with_zeros(key, shape):
    x = jax.random.normal(key, shape) * jnp.linspace(0.5, 2.0, shape[-1])
    return x.at[..., 0].set(0.0).at[0].set(0.0)  # exact zeros, scattered


@pytest.mark.parametrize("axis", [None, -1])
def test_sign_scheme_signs_scale_and_packing(axis):
    x = _with_zeros(jax.random.key(1), (3, 3, 4, 16))
    qt = rws.quantize_tensor(x, 1, axis=axis)  # bits=1 selects the sign scheme
    assert (qt.bits, qt.scheme) == (1, "sign") and qt.data.dtype == jnp.uint8
    chex.assert_shape(qt.data, (3, 3, 4, 2))  # 8 codes a byte along the last axis
    codes = qlib.codes_of(qt)
    chex.assert_trees_all_equal(codes, (x >= 0).astype(jnp.uint8))
    red = None if axis is None else (0, 1, 2)
    chex.assert_trees_all_close(qt.scale, jnp.mean(jnp.abs(x), axis=red, keepdims=axis is not None), rtol=1e-6)
    chex.assert_trees_all_equal(qt.offset, jnp.zeros_like(qt.scale))
    if axis is not None:
        chex.assert_shape(qt.scale, (1, 1, 1, 16))
    xhat = rws.dequantize_tensor(qt)
    chex.assert_shape(xhat, x.shape)
    nz = x != 0
    assert bool(jnp.all(jnp.where(nz, jnp.sign(xhat) == jnp.sign(x), True)))  # signs kept
    chex.assert_trees_all_equal(jnp.abs(xhat), jnp.broadcast_to(qt.scale, x.shape))  # ±scale
    # exact zeros come back as +scale (documented: there is no code for 0)
    chex.assert_trees_all_equal(jnp.where(nz, 0.0, xhat), jnp.where(nz, 0.0, jnp.broadcast_to(qt.scale, x.shape)))
    # error_bound: (n − 1)·scale for n elements sharing a scale, and it holds
    n = x.size if axis is None else x.size // 16
    chex.assert_trees_all_close(qt.error_bound, qt.scale * (n - 1))
    assert bool(jnp.all(jnp.abs(xhat - x) <= qt.error_bound))
    # on disk: ceil(n/8) bytes, and back to the same in-memory layout
    flat = qlib.to_flat_packed(qt)
    assert flat.shape == (-(-x.size // 8),)
    np.testing.assert_array_equal(qlib.from_flat_packed(flat, 1, qt.shape), np.asarray(qt.data))


def test_sign_layouts_zero_channels_and_bounds():
    # last axis not a multiple of 8: one code a byte in memory, still ceil(n/8) on disk
    x = jnp.arange(-17.0, 18.0).reshape(5, 7)
    qt = rws.quantize_tensor(x, 1, scheme="sign")
    chex.assert_shape(qt.data, (5, 7))
    assert qlib.to_flat_packed(qt).shape == (5,)
    chex.assert_trees_all_equal(qlib.codes_of(qt), (x >= 0).astype(jnp.uint8))
    # 1-D leaves (biases) fall back to per tensor; pack=False keeps one code a byte
    b = rws.quantize_tensor(jnp.array([1.0, -3.0, 0.0, 2.0, -2.0, 5.0, -1.0, 0.5]), 1, axis=-1)
    assert b.axis is None and b.data.shape == (1,) and float(b.scale) == pytest.approx(14.5 / 8)
    assert rws.quantize_tensor(jnp.ones((2, 8)), 1, pack=False).data.shape == (2, 8)
    # an all-zero tensor, or channel, has scale 0 and comes back exact
    z = rws.quantize_tensor(jnp.zeros((4, 8)), 1)
    assert float(z.scale) == 0.0
    chex.assert_trees_all_equal(rws.dequantize_tensor(z), jnp.zeros((4, 8)))
    pc = rws.quantize_tensor(jnp.array([[0.0, 1.0, -3.0], [0.0, -3.0, 1.0]]), 1, axis=-1)
    out = rws.dequantize_tensor(pc)
    chex.assert_trees_all_equal(out[:, 0], jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(out[:, 1:]), [[2.0, -2.0], [-2.0, 2.0]])
    # error_bound is attained: one element holding all the mass of its group
    one = jnp.zeros((4, 8)).at[1, 3].set(-8.0)
    q1 = rws.quantize_tensor(one, 1)
    assert float(q1.scale) == 0.25
    assert float(jnp.max(jnp.abs(rws.dequantize_tensor(q1) - one))) == pytest.approx(float(q1.error_bound)) == 31 * 0.25
    # a tensor of one element is exact (n − 1 = 0)
    s = rws.quantize_tensor(jnp.array([-0.7]), 1)
    assert float(s.error_bound) == 0.0 and float(rws.dequantize_tensor(s)[0]) == pytest.approx(-0.7)


@pytest.mark.parametrize("axis", [None, -1])
def test_sign_scale_is_the_l2_optimal_magnitude(axis):
    """c* = mean|x| minimises ‖x − c·sign(x)‖² over c > 0: every perturbation of the
    stored scale (per tensor, or of any one channel's) increases the error."""
    x = jax.random.normal(jax.random.key(3), (3, 3, 4, 8)) * jnp.linspace(0.2, 3.0, 8)
    qt = rws.quantize_tensor(x, 1, axis=axis)
    x64 = np.asarray(x, np.float64)
    signs = np.where(x64 >= 0, 1.0, -1.0)
    scale = np.asarray(qt.scale, np.float64)

    def err(c):
        return ((x64 - c * signs) ** 2).sum(axis=None if axis is None else (0, 1, 2))

    best = err(scale)
    np.testing.assert_allclose(
        best, np.asarray(((x64 - np.asarray(rws.dequantize_tensor(qt), np.float64)) ** 2)
                         .sum(axis=None if axis is None else (0, 1, 2))), rtol=1e-5)
    for rel in (-0.5, -0.05, -1e-3, 1e-3, 0.05, 0.5, 2.0):
        assert np.all(err(scale * (1 + rel)) > best), rel
    # and the closed form: err(c) = ‖x‖² − 2c·Σ|x| + n·c², minimal at c = mean|x|
    n = x64.size if axis is None else x64.size // 8
    grad = -2 * np.abs(x64).sum(axis=None if axis is None else (0, 1, 2)) + 2 * n * scale.reshape(-1 if axis is not None else ())
    np.testing.assert_allclose(grad, 0.0, atol=1e-3)


def test_one_bit_api_and_refusals(tiny_models):
    _, init, std, fog, _ = tiny_models
    sig = rws.extract(init, std, fog, rws.first_k(3), name="fog")
    q = rws.quantize(sig, 1)
    assert q.meta.quantization == "sign/per_tensor/1"
    assert all(v.scheme == "sign" and v.bits == 1 for v in q.deltas.values())
    explicit = rws.quantize(sig, 1, scheme="sign", per_channel=True)
    assert explicit.meta.quantization == "sign/per_channel/1"
    assert rws.quantize(sig, 8).meta.quantization == "asymmetric/per_tensor/8"  # default unchanged at 8 bit
    for scheme in ("asymmetric", "symmetric", "log2", "tanh"):
        with pytest.raises(rws.RWSError, match="1-bit quantization has only the 'sign' scheme"):
            rws.quantize(sig, 1, scheme=scheme)
    for bits in (8, 4, 2):
        with pytest.raises(rws.RWSError, match="'sign' scheme is 1 bit"):
            rws.quantize(sig, bits, scheme="sign")
    with pytest.raises(rws.RWSError, match="bit width 3"):
        rws.quantize(sig, 3, scheme="sign")
    with pytest.raises(rws.RWSError, match="no value range"):
        rws.quantize_tensor(jnp.ones(4), 1, value_range=(0.0, 1.0))
    with pytest.raises(rws.RWSError, match="levels"):
        rws.quantize_reference([sig], levels=2)  # the reference has no 1-bit quantizer
    # bytes: the codes take an eighth of the 8-bit codes (rounded up per tensor)
    q8 = rws.quantize(sig, 8)
    for p, v in q.deltas.items():
        assert qlib.to_flat_packed(v).size == -(-q8.deltas[p].data.size // 8)


@pytest.mark.parametrize("per_channel", [False, True])
def test_one_bit_fused_patch_stack_and_no_recompile(tiny_models, per_channel):
    from rws_jax import kernels

    _, init, std, fog, snow = tiny_models
    sig = rws.extract(init, std, fog, rws.first_k(3), name="fog")
    q = rws.quantize(sig, 1, per_channel=per_channel)
    deq = rws.dequantize(q)
    assert not deq.is_quantized
    for p, v in q.deltas.items():
        chex.assert_trees_all_equal(deq.deltas[p], rws.dequantize_tensor(v))
    fused = rws.patch(std, q, 0.7)
    chex.assert_trees_all_close(fused, rws.patch(std, deq, 0.7), rtol=1e-6, atol=1e-7)
    before = kernels.combine_jit._cache_size()
    again = rws.patch(std, q, -0.3)  # a new α: same compiled kernel
    assert kernels.combine_jit._cache_size() == before
    chex.assert_trees_all_close(again, rws.patch(std, deq, -0.3), rtol=1e-6, atol=1e-7)
    # mixed with a float signature in one fused pass
    other = rws.extract(init, std, snow, rws.first_k(2), name="snow")
    chex.assert_trees_all_close(rws.patch(std, [q, other], [0.5, 1.0]), rws.patch(std, [deq, other], [0.5, 1.0]),
                                rtol=1e-6, atol=1e-7)
    # PatchStack: apply, remove, back to the original bit for bit
    stack = rws.PatchStack.create(std)
    stack, v = stack.apply(std, q, 0.7, name="fog-1bit")
    chex.assert_trees_all_close(v, fused, rtol=1e-6, atol=1e-7)
    stack, v = stack.remove(v, "fog-1bit")
    chex.assert_trees_all_equal(v, std)
