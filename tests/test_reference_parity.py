"""Parity with the reference PyTorch code, via numpy re-implementations of it.

The replicas below follow VITA-Group/Robust_Weight_Signatures line by line:
``model_patching.decompose`` (the weighting, projection and the three quantizers),
``get_projection`` (tools.py) and ``linear_quant``/``affine_quant``
(quantize_utils/). Arithmetic is float32 as PyTorch runs it on CUDA, where the
reference runs: ``tensor / python_float`` is ``tensor * fl32(1 / fl32(b))``
(PyTorch's ``BinaryDivTrueKernel.cu`` multiplies by the float32 reciprocal of a CPU
scalar). ``device='cpu'`` gives PyTorch-on-CPU's true division instead.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax import quantization as qlib

# ----------------------------------------------------------------------------- replicas


def _scalar_div(x: np.ndarray, b: float, device: str) -> np.ndarray:
    """``tensor / python_float`` in PyTorch (float32 tensor)."""
    if device == "cuda":
        return x * (np.float32(1.0) / np.float32(b))
    return x / np.float32(b)


def ref_linear_quant(x, n_nums, mn, mx, clamp=True, device="cuda"):
    """quantize_utils/func.py ``linear_quant``: returns ``(values, codes)`` (float32).

    ``mn``/``mx`` are Python floats, as the reference passes ``.item()``; ``max - min``
    is therefore a Python (double) subtraction, cast to float32 by PyTorch.
    """
    mn, mx = float(mn), float(mx)
    if n_nums == 2:
        if mn != -mx:
            raise RuntimeError("Values of min and max don't match.")
        return np.sign(x).astype(np.float32) * np.float32(mx), None
    x = np.asarray(x, np.float32)
    scale = n_nums - 1
    if clamp:
        x = np.clip(x, np.float32(mn), np.float32(mx))
    x = _scalar_div(x - np.float32(mn), mx - mn, device)
    codes = np.round(x * np.float32(scale))  # affine_quant: x * scale - 0, round half to even
    x = _scalar_div(codes, scale, device) * np.float32(mx - mn) + np.float32(mn)
    return x.astype(np.float32), codes


def ref_quantize(vectors: np.ndarray, quantization: int, method: str, device="cuda"):
    """decompose lines 45-62 on the stacked ``[N, d]`` vectors: ``(values, codes)``.

    For 'log' the codes are the magnitude codes (the sign is kept separately)."""
    v = np.asarray(vectors, np.float32)
    if method == "log":
        sign = np.sign(v)
        with np.errstate(divide="ignore"):
            u = np.log2(np.abs(v))
        u, codes = ref_linear_quant(u, quantization >> 1, u.min(), u.max(), clamp=True, device=device)
        return (sign * np.exp2(u)).astype(np.float32), codes
    if method == "linear":
        return ref_linear_quant(v, quantization, v.min(), v.max(), clamp=False, device=device)
    t = np.tanh(v)
    t, codes = ref_linear_quant(t, quantization, t.min(), t.max(), clamp=False, device=device)
    with np.errstate(divide="ignore"):
        return np.arctanh(t).astype(np.float32), codes


def ref_get_projection(a: np.ndarray, param: np.ndarray) -> np.ndarray:
    """tools.py ``get_projection`` (its first branch): ``param − (aᵀa/(a·aᵀ)) paramᵀ``ᵀ."""
    a = a.reshape(1, -1)
    projection_matrix = (a.T @ a) / (a @ a.T)
    return param - (projection_matrix @ param.T).T


def ref_decompose_tensor(robust, init, base, patched, weight, quantization=None, method="linear"):
    """``decompose`` for one kept tensor: deltas weighted *before* projection, then
    (optionally) quantized together, then ``Σ diag(weight) @ vectors`` added to θ_P."""
    weight = np.asarray(weight, np.float64)
    param = np.stack([(r.astype(np.float64) - init) * w for r, w in zip(robust, weight)]).reshape(len(robust), -1)
    vectors = ref_get_projection((base.astype(np.float64) - init).reshape(-1), param)
    if quantization:
        vectors, _ = ref_quantize(vectors.astype(np.float32), quantization, method)
    combination = np.sum(np.diag(weight) @ vectors, axis=0)
    return combination.reshape(init.shape) + patched


def reference_weights(num: int, alpha: float = 1.0, finetune_alpha=None) -> np.ndarray:
    """``main`` lines 121-125: ``--alpha`` gives α/N each; ``--alpha 0 --finetune_alpha``
    gives the listed weights."""
    if alpha:
        return alpha * np.ones(num, np.float32) / num
    return np.asarray(finetune_alpha, np.float32)


# ------------------------------------------------------------------------------- models

PATHS = ["params/conv/kernel", "params/conv/bias", "params/dense/kernel"]


def _models(num_robust: int, seed: int = 0):
    """(init, base, robust_list) small variable dicts; the head stays unselected."""
    rng = np.random.default_rng(seed)
    shapes = {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "dense": {"kernel": (6, 5)}, "head": {"kernel": (5, 3)}}

    def tree(scale, base=None):
        out = {}
        for unit, leaves in shapes.items():
            out[unit] = {}
            for name, shape in leaves.items():
                x = (scale * rng.standard_normal(shape)).astype(np.float32)
                out[unit][name] = jnp.asarray(x if base is None else base["params"][unit][name] + x)
        return {"params": out}

    init = tree(1.0)
    base = tree(0.05, init)
    robust = [tree(0.05, init) for _ in range(num_robust)]
    return init, base, robust


def _leaf(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return np.asarray(tree)


def _signatures(init, base, robust):
    return [rws.extract(init, base, r, PATHS, name=f"c{i}") for i, r in enumerate(robust)]


# ------------------------------------------------------------------------------ weights


@pytest.mark.parametrize(
    "num,alpha,finetune",
    [(1, 1.0, None), (3, 1.0, None), (3, 2.5, None), (3, 0, [0.5, -1.0, 0.2]), (1, 0, [-0.7]), (3, -1.5, None)],
)
def test_patch_reference_mode_equals_decompose(num, alpha, finetune):
    init, base, robust = _models(num)
    sigs = _signatures(init, base, robust)
    w = reference_weights(num, alpha, finetune)
    ours = rws.patch(base, sigs, alpha if alpha else finetune, mode="reference")
    for p in PATHS:
        want = ref_decompose_tensor(
            [_leaf(r, p) for r in robust], _leaf(init, p), _leaf(base, p), _leaf(base, p), w
        )
        np.testing.assert_allclose(_leaf(ours, p), want, rtol=1e-5, atol=1e-7)
    # untouched (unselected) leaves stay those of θ_P
    assert ours["params"]["head"]["kernel"] is base["params"]["head"]["kernel"]


def test_reference_weights_lose_the_sign():
    init, base, robust = _models(2, seed=1)
    sigs = _signatures(init, base, robust)
    chex.assert_trees_all_close(
        rws.patch(base, sigs, [-0.5, 0.3], mode="reference"), rws.patch(base, sigs, [0.5, -0.3], mode="reference")
    )
    chex.assert_trees_all_close(rws.patch(base, sigs, -2.0, mode="reference"), rws.patch(base, sigs, 2.0, mode="reference"))


# --------------------------------------------------------------------------- quantizers


SIZE = 4096


def _random_tensors(seed: int, count: int, crafted_levels: int | None = None):
    """Random float32 tensors over many magnitudes, ``f32[SIZE]`` (one compile): the
    first ``n`` values, padded by repeating the first (min/max unchanged). With
    ``crafted_levels``, every other one holds values at (and one ulp around) the
    rounding ties of that many levels."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        x = _random_tensor(rng, i, crafted_levels)
        yield np.concatenate([x, np.full(SIZE - x.size, x[0], np.float32)])


def _random_tensor(rng, i, crafted_levels):
    if True:
        n = int(rng.integers(2, SIZE - 2))
        x = (rng.standard_normal(n) * 10 ** rng.uniform(-6, 3)).astype(np.float32)
        if crafted_levels and i % 2 == 0:
            lo, hi = np.float64(x.min()), np.float64(x.max())
            k = rng.integers(0, crafted_levels - 1, n)
            ties = (lo + (k + 0.5) * (hi - lo) / (crafted_levels - 1)).astype(np.float32)
            nudge = rng.choice([-1.0, 0.0, 1.0], n).astype(np.float32)
            ties = np.where(nudge == 0, ties, np.nextafter(ties, ties + nudge)).astype(np.float32)
            x = np.concatenate([ties, [x.min(), x.max()]]).astype(np.float32)
        return x


@jax.jit(static_argnames=("bits", "scheme"))
def _quantize(x, bits, scheme="asymmetric"):
    qt = qlib.quantize_tensor(x, bits, scheme=scheme)
    return qlib.codes_of(qt), qlib.dequantize_tensor(qt)


@pytest.mark.parametrize("levels", [256, 16, 4])
def test_linear_codes_equal_the_reference_exactly(levels):
    bits = {256: 8, 16: 4, 4: 2}[levels]
    total = 0
    for x in _random_tensors(levels, 40, crafted_levels=levels):
        got_codes, got_values = _quantize(jnp.asarray(x), bits)
        values, codes = ref_linear_quant(x, levels, x.min(), x.max(), clamp=False)
        np.testing.assert_array_equal(np.asarray(got_codes), codes.astype(np.uint8))
        np.testing.assert_allclose(np.asarray(got_values), values, rtol=0, atol=4 * np.spacing(np.float32(np.abs(x).max())))
        total += x.size
    assert total == 40 * SIZE
    # eagerly (op by op) too, on a crafted one
    x = next(_random_tensors(levels + 1, 1, crafted_levels=levels))
    codes = ref_linear_quant(x, levels, x.min(), x.max(), clamp=False)[1]
    np.testing.assert_array_equal(np.asarray(qlib.codes_of(qlib.quantize_tensor(jnp.asarray(x), bits))), codes.astype(np.uint8))


def _stacked(sigs, path):
    return np.stack([np.asarray(s.deltas[path]).reshape(-1) for s in sigs])


@pytest.mark.parametrize("levels", [256, 16])
@pytest.mark.parametrize("method", ["linear", "log", "tanh"])
def test_quantize_reference_codes_and_values_match_decompose(levels, method):
    init, base, robust = _models(3, seed=2)
    sigs = _signatures(init, base, robust)
    qs = rws.quantize_reference(sigs, levels, method=method)
    for p in PATHS:
        vectors = _stacked(sigs, p)
        want_values, want_codes = ref_quantize(vectors, levels, method)
        got_codes = np.stack([np.asarray(qlib.codes_of(q.deltas[p])).reshape(-1) for q in qs])
        got_values = np.stack([np.asarray(rws.dequantize_tensor(q.deltas[p])).reshape(-1) for q in qs])
        if method == "log":
            half = levels >> 1
            np.testing.assert_array_equal(got_codes >= half, vectors < 0)  # the sign bit
            got_codes = got_codes % half
        np.testing.assert_array_equal(got_codes, want_codes.astype(np.uint8))
        # float32 rounding: the dequantization formulas differ in the order of operations
        # (q·scale + lo vs the reference's q·fl(1/(L−1))·(hi − lo) + lo), as do exp2/atanh
        tol = 4 * np.spacing(np.float32(np.abs(want_values).max()))
        np.testing.assert_allclose(got_values, want_values, rtol=1e-5 if method == "log" else 2e-6, atol=tol)


@pytest.mark.parametrize("method", ["log", "tanh"])
def test_transform_codes_equal_replica_given_the_same_transform(method):
    """The linear stage is bit-exact; the only freedom is log2/tanh's last ulp, which
    differs between XLA and numpy (and CUDA): with numpy's transform codes may differ
    only at near-ties."""
    levels = 256
    n_codes, n_near = 0, 0
    for x in _random_tensors(7, 30):
        got = np.asarray(_quantize(jnp.asarray(x), 8, "log2" if method == "log" else "tanh")[0]).astype(np.int64)
        if method == "log":
            u_ours = np.asarray(jnp.log2(jnp.abs(jnp.asarray(x))))
            _, same = ref_linear_quant(u_ours, levels >> 1, u_ours.min(), u_ours.max())
            np.testing.assert_array_equal(got % (levels >> 1), same)
        else:
            t_ours = np.asarray(jnp.tanh(jnp.asarray(x)))
            _, same = ref_linear_quant(t_ours, levels, t_ours.min(), t_ours.max(), clamp=False)
            np.testing.assert_array_equal(got, same)
        _, numpy_codes = ref_quantize(x[None], levels, method)
        mism = (got % (levels >> 1) if method == "log" else got) != numpy_codes[0]
        n_codes += x.size
        n_near += int(mism.sum())
    assert n_near <= n_codes * 1e-4, (n_near, n_codes)


def test_two_bit_log_deviates_from_the_reference_special_case():
    """At 4 levels the reference's log path calls linear_quant with 2 levels, whose
    special case raises unless min = −max; ours uses the general formula (2 levels)."""
    x = np.array([[0.01, -0.02, 2.0, -8.0]], np.float32)
    with pytest.raises(RuntimeError, match="don't match"):
        ref_quantize(x, 4, "log")
    qt = qlib.quantize_tensor(jnp.asarray(x), 2, scheme="log2")
    np.testing.assert_allclose(np.asarray(qlib.dequantize_tensor(qt)), [[0.01, -0.01, 8.0, -8.0]], rtol=1e-6)


def test_reference_nans_on_zeros_ours_does_not():
    x = np.array([[0.0, 0.25, -1.0, 4.0]], np.float32)
    with np.errstate(invalid="ignore"):
        values, _ = ref_quantize(x, 256, "log")
    assert np.isnan(values).all()  # log2(0) = -inf poisons min/max
    qt = qlib.quantize_tensor(jnp.asarray(x), 8, scheme="log2")
    back = np.asarray(qlib.dequantize_tensor(qt))
    assert np.isfinite(back).all()
    np.testing.assert_allclose(back[0, [0, 1, 3]], [0.25, 0.25, 4.0], rtol=1e-6)  # zero -> smallest level
    assert back[0, 2] < 0 and abs(np.log2(-back[0, 2])) <= float(qt.scale) / 2 * (1 + 1e-5)


@pytest.mark.parametrize("method", ["linear", "log", "tanh"])
def test_full_decompose_with_quantization(method):
    """θ_P + Σ_k w_k · Q(w_k · RWS_k) with the range shared over the N signatures.

    --alpha path, linear/log: quantize_reference + mode='reference'. Any method with
    per-signature weights (and tanh always): quantize the weighted signatures, then
    apply the weights once more linearly (see quantize_reference)."""
    num, levels = 3, 256
    init, base, robust = _models(num, seed=3)
    sigs = _signatures(init, base, robust)
    cases = [(reference_weights(num, 0, [0.6, -0.4, 1.1]), "recipe")]
    if method != "tanh":
        cases.append((reference_weights(num, 1.0), "reference_mode"))
    for w, how in cases:
        if how == "reference_mode":
            ours = rws.patch(base, rws.quantize_reference(sigs, levels, method=method), 1.0, mode="reference")
        else:
            weighted = [rws.scale(s, float(wk)) for s, wk in zip(sigs, w)]
            ours = rws.patch(base, rws.quantize_reference(weighted, levels, method=method), w.tolist())
        for p in PATHS:
            want = ref_decompose_tensor(
                [_leaf(r, p) for r in robust], _leaf(init, p), _leaf(base, p), _leaf(base, p), w, levels, method
            )
            got = _leaf(ours, p)
            delta = np.abs(want - _leaf(base, p))
            # float rounding of the projection can move a value across a rounding tie:
            # nearly all elements agree to float precision, every one to a quantization step
            close = np.isclose(got, want, rtol=1e-5, atol=1e-6 * delta.max())
            assert close.mean() >= 0.98, (how, p, close.mean())
            np.testing.assert_allclose(got, want, rtol=0, atol=0.05 * delta.max() + 1e-6)
