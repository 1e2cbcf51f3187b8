import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws


def _leaf(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return tree


def test_patch_formula(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    fog, snow = sigs
    out = rws.patch(std, [fog, snow], [0.7, -0.3])
    for p in snow.deltas:
        want = _leaf(std, p) + 0.7 * fog.deltas.get(p, 0.0) - 0.3 * snow.deltas[p]
        chex.assert_trees_all_close(_leaf(out, p), want, rtol=1e-6, atol=1e-7)
    # untouched leaves are the very same arrays
    assert out["params"]["head"]["kernel"] is std["params"]["head"]["kernel"]
    assert out["batch_stats"]["bn_0"]["mean"] is std["batch_stats"]["bn_0"]["mean"]


@pytest.mark.parametrize("donate", [False, True])
def test_patch_then_unpatch_is_bit_exact(tiny_models, sigs, donate):
    _, _, std, *_ = tiny_models
    model = jax.tree.map(jnp.copy, std)
    patched, undo = rws.patch(model, list(sigs), [1.3, 0.6], donate=donate, return_undo=True)
    restored = rws.unpatch(patched, undo)
    chex.assert_trees_all_equal(restored, std)
    assert undo.paths == tuple(sorted(sigs[1].deltas))


def test_compose_is_order_independent(tiny_models, sigs):
    fog, snow = sigs
    ab = rws.compose([fog, snow], [0.4, 0.9])
    ba = rws.compose([snow, fog], [0.9, 0.4])
    chex.assert_trees_all_close(ab.deltas, ba.deltas, rtol=1e-6, atol=1e-7)
    assert set(ab.deltas) == set(fog.deltas) | set(snow.deltas)
    assert ab.name == "fog+snow" and ab.meta.kind == "composed"


def test_compose_equals_patching_with_all(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    fused = rws.patch(std, list(sigs), [0.5, 2.0])
    via_compose = rws.patch(std, rws.compose(list(sigs), [0.5, 2.0]))
    sequential = rws.patch(rws.patch(std, sigs[0], 0.5), sigs[1], 2.0)
    chex.assert_trees_all_close(fused, via_compose, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(fused, sequential, rtol=1e-6, atol=1e-7)


def test_scale_is_linear(sigs):
    fog, _ = sigs
    chex.assert_trees_all_close(rws.scale(rws.scale(fog, 2.0), 3.0).deltas, rws.scale(fog, 6.0).deltas, rtol=1e-6)
    chex.assert_trees_all_close(
        rws.add(rws.scale(fog, 0.25), rws.scale(fog, 0.75)).deltas, fog.deltas, rtol=1e-6, atol=1e-7
    )
    chex.assert_trees_all_close(rws.add(fog, rws.negate(fog)).deltas, jax.tree.map(jnp.zeros_like, fog.deltas))


def test_subtract_undoes_patch_up_to_rounding(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    back = rws.subtract(rws.patch(std, sigs[0], 0.8), sigs[0], 0.8)
    chex.assert_trees_all_close(back, std, atol=1e-6)


def test_tree_map_over_signatures_gives_signature(sigs):
    fog, _ = sigs
    fog2 = fog.relabel(name="fog-seed2")
    avg = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, fog, fog2)
    assert isinstance(avg, rws.Signature)
    chex.assert_trees_all_close(avg.deltas, fog.deltas)
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, fog)
    assert isinstance(doubled, rws.Signature) and doubled.name == "fog"


def test_reference_mode_scalar_alpha_is_squared_over_n(tiny_models, sigs):
    """The reference's default path (--alpha α): w = α/N, applied twice."""
    _, _, std, *_ = tiny_models
    chex.assert_trees_all_close(rws.coefficients(1.0, 2, "reference"), jnp.array([0.25, 0.25]))
    chex.assert_trees_all_close(rws.coefficients(1.5, 3, "reference"), jnp.full((3,), 0.25))
    chex.assert_trees_all_close(rws.coefficients(0.8, 1, "reference"), jnp.array([0.64]))
    # the sign is lost by squaring, as in the reference
    chex.assert_trees_all_close(rws.coefficients(-1.0, 2, "reference"), jnp.array([0.25, 0.25]))
    ref = rws.patch(std, list(sigs), 1.0, mode="reference")  # the pipeline's "reference default" row
    lin = rws.patch(std, list(sigs), 0.25)
    chex.assert_trees_all_close(ref, lin)


def test_reference_mode_per_signature_weights_are_squared_without_n(tiny_models, sigs):
    """The reference's --alpha 0 --finetune_alpha w_1 … w_N path: w_k², no division by N."""
    _, _, std, *_ = tiny_models
    chex.assert_trees_all_close(rws.coefficients([1.0, 1.0], 2, "reference"), jnp.array([1.0, 1.0]))
    chex.assert_trees_all_close(rws.coefficients([0.5, -0.3, 2.0], 3, "reference"), jnp.array([0.25, 0.09, 4.0]))
    chex.assert_trees_all_close(rws.coefficients([-0.5], 1, "reference"), jnp.array([0.25]))
    # N = 1: a scalar and a one-element sequence agree (α/1 = w)
    chex.assert_trees_all_equal(rws.coefficients(0.7, 1, "reference"), rws.coefficients([0.7], 1, "reference"))
    # linear mode is unchanged: scalar broadcast, sequence as given, signs kept
    chex.assert_trees_all_close(rws.coefficients([0.5, -0.3], 2), jnp.array([0.5, -0.3]))
    ref = rws.patch(std, list(sigs), [0.6, -1.2], mode="reference")
    lin = rws.patch(std, list(sigs), [0.36, 1.44])
    chex.assert_trees_all_close(ref, lin)
    composed = rws.compose(list(sigs), [0.6, -1.2], mode="reference")
    chex.assert_trees_all_close(rws.patch(std, composed), lin, rtol=1e-6, atol=1e-7)
    # subtract with reference weights removes exactly what patch added
    back = rws.subtract(ref, list(sigs), [0.6, -1.2], mode="reference")
    chex.assert_trees_all_close(back, std, atol=1e-6)


def test_bad_coefficients(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    with pytest.raises(rws.RWSError, match="3 coefficients for 2"):
        rws.patch(std, list(sigs), [1.0, 2.0, 3.0])
    with pytest.raises(rws.NonFiniteError):
        rws.patch(std, list(sigs), [1.0, float("nan")])
    with pytest.raises(rws.RWSError, match="mode"):
        rws.patch(std, list(sigs), 1.0, mode="squared")


def test_incompatible_models_are_refused_and_untouched(tiny_models, sigs):
    model, _, std, *_ = tiny_models
    model_cls = type(model)
    fog, _ = sigs
    wide = model_cls(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    before = jax.tree.map(np.asarray, wide)
    with pytest.raises(rws.IncompatibleSignatureError, match="shape"):
        rws.patch(wide, fog, 1.0, donate=True)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, wide), before)
    other_head = model_cls(num_classes=3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(rws.IncompatibleSignatureError, match="fingerprint"):
        rws.patch(other_head, fog)
    rws.patch(other_head, fog, check_base=False)  # transfer: shares the patched layers
    missing = {"params": {k: v for k, v in std["params"].items() if k != "conv_1"}}
    with pytest.raises(rws.IncompatibleSignatureError, match="conv_1"):
        rws.patch(missing, sigs[1], check_base=False)


def test_nan_signature_refused_model_untouched(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    fog, _ = sigs
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), fog)
    model = jax.tree.map(jnp.copy, std)
    with pytest.raises(rws.NonFiniteError, match="fog"):
        rws.patch(model, bad, donate=True)
    chex.assert_trees_all_equal(model, std)


def test_compose_refuses_other_base(tiny_models, sigs):
    fog, _ = sigs
    other = fog.replace(meta=fog.meta.__class__(base_fingerprint="0" * 16, leaf_specs=fog.meta.leaf_specs))
    with pytest.raises(rws.IncompatibleSignatureError, match="different base"):
        rws.compose([fog, other])


# ----------------------------------------------------------------------------- rws.patch's cache
# A call on a tree structure and signatures already checked reuses that work (fast path);
# it must give exactly what the full path gives, and never a stale result or a missed error.


def _full(variables, sigs, alphas=1.0, *, mode="linear", donate=False, check_base=True):
    from rws_jax import algebra

    sigs = list(sigs) if isinstance(sigs, (list, tuple)) else [sigs]
    return algebra._patch_full(variables, sigs, algebra.host_coefficients(alphas, len(sigs), mode), donate=donate,
                               check_base=check_base, check_values=True, return_undo=False)


@pytest.mark.parametrize("mode", ["linear", "reference"])
def test_patch_cache_is_bit_exact_with_the_full_path(tiny_models, sigs, mode):
    _, _, std, *_ = tiny_models
    want = _full(std, list(sigs), [0.7, -0.4], mode=mode)
    for _ in range(3):  # the first call fills the cache, later ones use it
        got = rws.patch(std, list(sigs), [0.7, -0.4], mode=mode)
        chex.assert_trees_all_equal(got, want)
        chex.assert_trees_all_equal_dtypes(got, want)
        assert got["params"]["head"]["kernel"] is std["params"]["head"]["kernel"]
    for check_base in (True, False):
        model = jax.tree.map(jnp.copy, std)
        for _ in range(2):
            model = rws.patch(model, sigs[1], 0.5, donate=True, check_base=check_base)
        ref = _full(_full(std, sigs[1], 0.5), sigs[1], 0.5)
        chex.assert_trees_all_equal(model, ref)


def test_patch_cache_sees_new_leaf_shapes(tiny_models, sigs):
    model, _, std, *_ = tiny_models
    fog, _ = sigs
    rws.patch(std, fog, 1.0)  # cache filled for this structure
    rws.patch(std, fog, 1.0)
    wide = type(model)(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))  # same structure, other shapes
    assert jax.tree.structure(wide) == jax.tree.structure(std)
    before = jax.tree.map(np.asarray, wide)
    for check_base in (True, False):
        with pytest.raises(rws.IncompatibleSignatureError, match="was made for"):
            rws.patch(wide, fog, 1.0, donate=True, check_base=check_base)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, wide), before)  # nothing donated
    # an unpatched leaf of another shape: refused with check_base, patched without
    head = dict(std["params"]["head"], kernel=jnp.zeros((7, 3)))
    other = {**std, "params": {**std["params"], "head": head}}
    with pytest.raises(rws.IncompatibleSignatureError, match="fingerprint"):
        rws.patch(other, fog, 1.0)
    got = rws.patch(other, fog, 1.0, check_base=False)
    chex.assert_trees_all_equal(got, _full(other, fog, 1.0, check_base=False))
    # and the original tree still patches
    chex.assert_trees_all_equal(rws.patch(std, fog, 1.0), _full(std, fog, 1.0))


def test_patch_cache_sees_new_signature_values_and_metadata(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    fog, _ = sigs
    rws.patch(std, fog, 1.0)
    rws.patch(std, fog, 1.0)
    # same metadata object, other values: the new values are used
    doubled = fog.replace(deltas={p: 2 * v for p, v in fog.deltas.items()})
    assert doubled.meta is fog.meta
    chex.assert_trees_all_equal(rws.patch(std, doubled, 1.0), _full(std, doubled, 1.0))
    # a delta dict changed in place (same signature object): the new values are used
    mutable = fog.replace(deltas=dict(fog.deltas))
    rws.patch(std, mutable, 1.0)
    p0 = sorted(mutable.deltas)[0]
    mutable.deltas[p0] = jnp.zeros_like(mutable.deltas[p0])
    chex.assert_trees_all_equal(rws.patch(std, mutable, 1.0), _full(std, mutable, 1.0))
    mutable.deltas[p0] = jnp.zeros((2, 2))
    with pytest.raises(rws.IncompatibleSignatureError, match="holds a delta of shape"):
        rws.patch(std, mutable, 1.0)
    del mutable.deltas[p0]  # fewer leaves: another structure
    chex.assert_trees_all_equal(rws.patch(std, mutable, 1.0), _full(std, mutable, 1.0))
    # same values, metadata of another base: refused (and accepted without check_base)
    other_base = fog.replace(meta=fog.meta.__class__(base_fingerprint="0" * 16, leaf_specs=fog.meta.leaf_specs,
                                                     name="other"))
    with pytest.raises(rws.IncompatibleSignatureError, match="'other' was extracted"):
        rws.patch(std, other_base, 1.0)
    chex.assert_trees_all_equal(rws.patch(std, other_base, 1.0, check_base=False), _full(std, fog, 1.0))
    # NaN values behind the cached metadata object: still refused, model untouched
    bad = fog.replace(deltas={p: v.at[(0,) * v.ndim].set(jnp.nan) for p, v in fog.deltas.items()})
    model = jax.tree.map(jnp.copy, std)
    with pytest.raises(rws.NonFiniteError, match="fog"):
        rws.patch(model, bad, 1.0, donate=True)
    chex.assert_trees_all_equal(model, std)


def test_patch_cache_numpy_leaves_take_the_full_path(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    fog, _ = sigs
    as_numpy = jax.tree.map(np.asarray, std)
    chex.assert_trees_all_equal(rws.patch(as_numpy, fog, 0.3), _full(std, fog, 0.3))
    wrong = jax.tree.map(lambda x: np.asarray(x, np.float64), std)  # float64 leaves: refused as before
    with pytest.raises(rws.IncompatibleSignatureError, match="float64"):
        rws.patch(wrong, fog, 0.3)


def test_patch_fast_path_leaves_the_input_unchanged(tiny_models, sigs):
    """Without ``donate``, repeated (cached) patches never touch the caller's arrays."""
    _, _, std, *_ = tiny_models
    before = jax.tree.map(lambda x: np.array(x, copy=True), std)
    for a in (1.0, -1.0, 0.3, 1.0):
        out = rws.patch(std, list(sigs), a)
        assert not any(x.is_deleted() for x in jax.tree.leaves(std))
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, std), before)
    chex.assert_trees_all_equal(out, _full(std, list(sigs), 1.0))


def test_host_coefficients_of_scalars_are_memoised_exactly():
    """Python scalars hit a memo: same values as computed fresh, read-only, -0.0 kept
    apart from 0.0, and bad input raises the same errors every time."""
    from rws_jax import algebra

    for mode in ("linear", "reference"):
        for a in (1.0, -1.0, 0.3, 2, 0.0, -0.0):
            first, again = algebra.host_coefficients(a, 3, mode), algebra.host_coefficients(a, 3, mode)
            want = algebra._host_coefficients(a, 3, mode)
            np.testing.assert_array_equal(again, want)
            assert again.dtype == np.float32 and not again.flags.writeable and again is first
            assert np.signbit(again).tolist() == np.signbit(want).tolist()
    assert np.signbit(algebra.host_coefficients(-0.0, 1))[0] and not np.signbit(algebra.host_coefficients(0.0, 1))[0]
    for _ in range(2):
        with pytest.raises(rws.NonFiniteError):
            algebra.host_coefficients(float("nan"), 2)
        with pytest.raises(rws.RWSError, match="unknown combination mode"):
            algebra.host_coefficients(1.0, 2, "nope")
    assert algebra.host_coefficients(True, 1).tolist() == [1.0]  # bool: not memoised, same value
