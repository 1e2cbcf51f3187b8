"""TIES / DARE / mean merging (rws_jax/merging.py through rws.compose): laws as property
tests (hypothesis), plus errors, quantized inputs, partial selections and patching."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rws_jax as rws
from rws_jax import merging, tree_paths
from rws_jax.signature import leaf_specs_for

SETTINGS = settings(max_examples=12, deadline=None)  # each new tree structure compiles
SHAPES = [(5,), (2, 6), (3, 2, 4)]
PATHS = ["params/conv_0/kernel", "params/conv_0/bias", "params/conv_1/kernel"]
alphas = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, width=32).filter(lambda a: abs(a) > 1e-3)
densities = st.sampled_from([0.05, 0.2, 0.3, 0.5, 0.9, 1.0])


def variables_for(shapes):
    return {"params": {"conv_0": {"kernel": jnp.zeros(shapes[0]), "bias": jnp.zeros((4,))},
                       "conv_1": {"kernel": jnp.zeros(shapes[1])}}}


def make_sig(variables, values: dict, name="s"):
    flat, _ = tree_paths.flatten(variables)
    meta = rws.SignatureMeta(base_fingerprint=tree_paths.fingerprint(variables),
                             leaf_specs=leaf_specs_for(flat, values), name=name)
    return rws.Signature(deltas={p: jnp.asarray(v, jnp.float32) for p, v in values.items()}, meta=meta)


@st.composite
def sig_sets(draw, k=2, same_paths=False, sign_pattern=None):
    """(variables, [k signatures]) with continuous random values (distinct magnitudes a.s.)."""
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(2)]
    variables = variables_for(shapes)
    flat, _ = tree_paths.flatten(variables)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    sigs = []
    signs = {p: rng.choice([-1.0, 1.0], size=flat[p].shape) for p in PATHS}
    for i in range(k):
        paths = PATHS if same_paths else draw(st.lists(st.sampled_from(PATHS), min_size=1, unique=True))
        if sign_pattern == "shared":
            vals = {p: signs[p] * rng.uniform(0.1, 2.0, size=flat[p].shape) for p in paths}
        else:
            vals = {p: rng.normal(size=flat[p].shape) for p in paths}
        sigs.append(make_sig(variables, vals, f"s{i}"))
    return variables, sigs


def host(tree):
    return jax.tree.map(np.asarray, tree)


def ties(sigs, a=1.0, density=0.2):
    return rws.compose(sigs, a, method="ties", density=density)


def np_trim(x: np.ndarray, density: float) -> np.ndarray:
    """Reference: keep |x| ≥ the k-th largest magnitude, k = ceil(density·n)."""
    k = merging.keep_count(x.size, density)
    t = np.sort(np.abs(x).ravel())[::-1][k - 1]
    return np.where(np.abs(x) >= t, x, 0)


# ------------------------------------------------------------------------------ TIES laws


@SETTINGS
@given(sig_sets(k=1), alphas)
def test_ties_of_one_signature_at_full_density_is_alpha_times_it(vs, a):
    _, (s,) = vs
    chex.assert_trees_all_close(host(ties([s], a, 1.0).deltas), host(rws.scale(s, a).deltas), rtol=1e-6, atol=1e-7)


@SETTINGS
@given(sig_sets(k=3), st.lists(alphas, min_size=3, max_size=3), st.permutations([0, 1, 2]), densities)
def test_ties_is_invariant_to_the_order_of_the_signatures(vs, a, order, density):
    _, sigs = vs
    ref = ties(sigs, a, density)
    perm = ties([sigs[i] for i in order], [a[i] for i in order], density)
    assert set(ref.deltas) == set(perm.deltas) == {p for s in sigs for p in s.deltas}
    chex.assert_trees_all_close(host(ref.deltas), host(perm.deltas), rtol=1e-6, atol=1e-7)


@SETTINGS
@given(sig_sets(k=1), st.integers(2, 4), alphas, densities)
def test_ties_of_k_copies_is_the_signature(vs, k, a, density):
    """Disjoint mean: K identical votes average to the value itself (not value/K)."""
    _, (s,) = vs
    chex.assert_trees_all_close(host(ties([s] * k, a, density).deltas), host(ties([s], a, density).deltas),
                                rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(host(ties([s] * k, a, 1.0).deltas), host(rws.scale(s, a).deltas),
                                rtol=1e-6, atol=1e-7)


@SETTINGS
@given(sig_sets(k=3, same_paths=True, sign_pattern="shared"), st.floats(0.1, 3.0))
def test_ties_at_full_density_of_sign_agreeing_signatures_is_their_mean(vs, lam):
    _, sigs = vs
    mean = rws.compose(sigs, lam, method="mean")
    chex.assert_trees_all_close(host(ties(sigs, lam, 1.0).deltas), host(mean.deltas), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(host(mean.deltas), host(rws.compose(sigs, lam / 3).deltas), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(sig_sets(k=3), st.floats(0.1, 3.0), densities)
def test_scalar_alpha_is_lambda_times_the_merge(vs, lam, density):
    _, sigs = vs
    chex.assert_trees_all_close(host(ties(sigs, lam, density).deltas),
                                host(rws.scale(ties(sigs, 1.0, density), lam).deltas), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(st.integers(1, 60), densities, st.integers(0, 2**31 - 1), st.booleans())
def test_trim_keeps_exactly_the_top_ceil_density_n_magnitudes(n, density, seed, with_ties):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    if with_ties:  # magnitudes drawn from 3 values: many ties at the threshold
        x = (rng.choice([-1.0, 1.0], n) * rng.choice([0.5, 1.0, 2.0], n)).astype(np.float32)
    out = np.asarray(merging.trim(jnp.asarray(x), density))
    k = math.ceil(density * n - 1e-9)
    np.testing.assert_array_equal(out, np_trim(x, density))
    kept = np.count_nonzero(out)
    if len(set(np.abs(x).tolist())) == n:  # distinct magnitudes: exactly the top k
        assert kept == k
        np.testing.assert_array_equal(np.sort(np.abs(out[out != 0])), np.sort(np.abs(x))[n - k:])
    else:  # ties at the threshold are all kept
        t = np.sort(np.abs(x))[n - k]
        assert kept == int(np.sum(np.abs(x) >= t)) >= k


def test_keep_count_and_small_example():
    assert [merging.keep_count(10, d) for d in (0.05, 0.1, 0.3, 0.31, 1.0)] == [1, 1, 3, 4, 10]
    x = jnp.array([[1.0, -2.0, 3.0, 0.5], [-1.0, -1.0, 2.0, 0.1]])
    # row 0 keeps (-2, 3); row 1 keeps 2 and both tied 1's; signs (-, -, +, 0); disjoint means
    np.testing.assert_allclose(np.asarray(rws.ties_merge(x, 0.5)), [-1.0, -1.5, 2.5, 0.0])
    # no entry agrees with a zero elected sign
    np.testing.assert_array_equal(np.asarray(rws.ties_merge(jnp.array([[1.0], [-1.0]]), 1.0)), [0.0])


def test_threshold_bisection_is_exact_on_zeros_subnormals_and_huge_values():
    x = np.array([0.0, -0.0, 1e-45, -3e-42, 1e-30, -2.5, 2.5, 3e38, -np.float32(3.4e38), 7.0], np.float32)
    for k in range(1, x.size + 1):
        want = np.sort(np.abs(x))[::-1][k - 1]
        got = merging.kth_largest_bits(merging.magnitude_bits(jnp.asarray(x)), k)
        assert np.asarray(got).view(np.float32) == want, k
    np.testing.assert_array_equal(np.asarray(merging.trim(jnp.asarray(x, jnp.bfloat16), 0.3)),
                                  np_trim(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32), 0.3))


def test_per_signature_alpha_weighs_the_election():
    v = variables_for([(5,), (5,)])
    p = "params/conv_0/bias"
    a = make_sig(v, {p: np.array([1.0, 1.0, 1.0, 1.0])}, "a")
    b = make_sig(v, {p: np.array([-1.5, -1.5, -1.5, -1.5])}, "b")
    np.testing.assert_allclose(np.asarray(ties([a, b], [1.0, 1.0], 1.0).deltas[p]), -1.5)  # b's mass wins
    np.testing.assert_allclose(np.asarray(ties([a, b], [2.0, 1.0], 1.0).deltas[p]), 2.0)   # 2·a wins
    np.testing.assert_allclose(np.asarray(ties([a, b], [1.0, -1.0], 1.0).deltas[p]), 1.25)  # both positive


def test_a_leaf_merges_over_the_signatures_that_hold_it():
    v = variables_for([(5,), (5,)])
    rng = np.random.default_rng(0)
    p0, p1 = "params/conv_0/kernel", "params/conv_1/kernel"
    a = make_sig(v, {p0: rng.normal(size=5), p1: rng.normal(size=5)}, "a")
    b = make_sig(v, {p0: rng.normal(size=5)}, "b")
    out = ties([a, b], [0.5, 2.0], 0.4)
    np.testing.assert_allclose(np.asarray(out.deltas[p1]), np_trim(0.5 * np.asarray(a.deltas[p1]), 0.4), rtol=1e-6)
    mean = rws.compose([a, b], [0.5, 2.0], method="mean")
    np.testing.assert_allclose(np.asarray(mean.deltas[p1]), 0.5 * np.asarray(a.deltas[p1]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mean.deltas[p0]),
                               (0.5 * np.asarray(a.deltas[p0]) + 2.0 * np.asarray(b.deltas[p0])) / 2, rtol=1e-6)
    assert out.meta.kind == "merged-ties" and out.name == "ties(a+b)"
    assert {p for p, *_ in out.meta.leaf_specs} == {p0, p1}


def test_quantized_signatures_are_dequantized_first():
    v = variables_for([(3, 2, 4), (2, 6)])
    rng = np.random.default_rng(1)
    flat = tree_paths.flatten(v)[0]
    sigs = [make_sig(v, {p: rng.normal(size=flat[p].shape) for p in PATHS}, f"s{i}") for i in range(2)]
    q = [rws.quantize(s, 4, per_channel=True) for s in sigs]
    for method in ("mean", "ties", "dare", "dare_ties"):
        got = rws.compose(q, [0.7, 1.2], method=method, key=jax.random.key(3))
        want = rws.compose([rws.dequantize(s) for s in q], [0.7, 1.2], method=method, key=jax.random.key(3))
        chex.assert_trees_all_close(host(got.deltas), host(want.deltas), rtol=1e-6, atol=1e-7)


def test_patch_with_a_merged_signature(tiny_models):
    _, init, std, fog, snow = tiny_models
    sigs = [rws.extract(init, std, m, rws.first_k(2), name=n) for m, n in ((fog, "fog"), (snow, "snow"))]
    for method in ("ties", "dare"):
        merged = rws.compose(sigs, 1.0, method=method, key=jax.random.key(0))
        out = rws.patch(std, merged)
        flat_o, flat_s = tree_paths.flatten(out)[0], tree_paths.flatten(std)[0]
        for p, d in merged.deltas.items():
            np.testing.assert_allclose(np.asarray(flat_o[p]), np.asarray(flat_s[p] + d), rtol=1e-6, atol=1e-7)


def test_sum_keeps_its_behaviour_and_reference_mode():
    v = variables_for([(5,), (2, 6)])
    rng = np.random.default_rng(2)
    flat = tree_paths.flatten(v)[0]
    a, b = (make_sig(v, {p: rng.normal(size=flat[p].shape) for p in PATHS}, n) for n in "ab")
    chex.assert_trees_all_equal(host(rws.compose([a, b], [0.5, 2.0], method="sum").deltas),
                                host(rws.compose([a, b], [0.5, 2.0]).deltas))
    ref = rws.compose([a, b], 1.0, mode="reference")
    chex.assert_trees_all_close(host(ref.deltas), host(rws.compose([a, b], 0.25).deltas), rtol=1e-6)
    assert ref.name == "a+b" and ref.meta.kind == "composed"


# ------------------------------------------------------------------------------ DARE laws


@SETTINGS
@given(sig_sets(k=2), st.lists(alphas, min_size=2, max_size=2), st.integers(0, 2**31 - 1))
def test_dare_with_p_zero_is_sum(vs, a, seed):
    _, sigs = vs
    got = rws.compose(sigs, a, method="dare", drop_rate=0.0, key=jax.random.key(seed))
    chex.assert_trees_all_close(host(got.deltas), host(rws.compose(sigs, a).deltas), rtol=1e-6, atol=1e-7)


@settings(max_examples=6, deadline=None)
@given(sig_sets(k=2), st.integers(0, 2**31 - 1))
def test_dare_is_deterministic_for_a_fixed_key(vs, seed):
    _, sigs = vs
    one = rws.compose(sigs, [0.5, 1.5], method="dare", drop_rate=0.7, key=jax.random.key(seed))
    two = rws.compose(sigs, [0.5, 1.5], method="dare", drop_rate=0.7, key=jax.random.key(seed))
    chex.assert_trees_all_equal(host(one.deltas), host(two.deltas))
    # an int seed is the same as jax.random.key(seed)
    chex.assert_trees_all_equal(
        host(rws.compose(sigs, [0.5, 1.5], method="dare", drop_rate=0.7, key=seed).deltas), host(one.deltas))


def test_dare_drops_about_p_and_rescales_survivors():
    x = jnp.linspace(1.0, 2.0, 20000)
    out = np.asarray(rws.dare(x, jax.random.key(0), 0.9))
    kept = out != 0
    np.testing.assert_allclose(out[kept], np.asarray(x)[kept] / 0.1, rtol=1e-6)
    # Binomial(20000, 0.1): sd = 42.4; 6 sd bound, deterministic for this key
    assert abs(kept.sum() - 2000) < 6 * math.sqrt(20000 * 0.9 * 0.1)
    # different keys, different masks; different leaves of one key, independent masks
    assert not np.array_equal(kept, np.asarray(rws.dare(x, jax.random.key(1), 0.9)) != 0)
    assert merging.path_salt("params/a/kernel") != merging.path_salt("params/b/kernel")


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_dare_is_unbiased(p):
    """Mean over N fixed keys ≈ Σ α_k RWS_k within 6 standard errors per element.

    Var[dare(x)] = x² p/(1−p) per element, independent over signatures, so the mean of N
    draws has SE = sqrt(Σ_k α_k² x_k² p/(1−p) / N). The keys are fixed: no flakes; the
    bound fails with probability ~1e-9 per element for a key set drawn at random."""
    v = variables_for([(3, 2, 4), (2, 6)])
    rng = np.random.default_rng(5)
    flat = tree_paths.flatten(v)[0]
    sigs = [make_sig(v, {p_: rng.normal(size=flat[p_].shape) for p_ in PATHS}, f"s{i}") for i in range(2)]
    a = np.array([0.7, -1.3], np.float32)
    n = 400
    draws = [host(rws.compose(sigs, a, method="dare", drop_rate=p, key=jax.random.key(i)).deltas) for i in range(n)]
    want = host(rws.compose(sigs, a).deltas)
    zs = []
    for path in want:
        mean = np.mean([d[path] for d in draws], axis=0)
        var = sum((a[k] * np.asarray(s.deltas[path])) ** 2 for k, s in enumerate(sigs)) * p / (1 - p)
        se = np.sqrt(var / n)
        assert np.all(np.abs(mean - want[path]) <= 6 * se + 1e-6), path
        zs.append(((mean - want[path]) / se).ravel())
    z = np.concatenate(zs)
    assert abs(z.mean()) < 6 / math.sqrt(z.size)  # no systematic bias either


def test_dare_ties_is_ties_of_the_dare_deltas():
    v = variables_for([(5,), (2, 6)])
    rng = np.random.default_rng(4)
    flat = tree_paths.flatten(v)[0]
    sigs = [make_sig(v, {p: rng.normal(size=flat[p].shape) for p in PATHS}, f"s{i}") for i in range(3)]
    key = jax.random.key(7)
    got = rws.compose(sigs, [1.0, 0.5, 2.0], method="dare_ties", drop_rate=0.5, density=0.4, key=key)
    for p in PATHS:
        dared = jnp.stack([rws.dare(a * s.deltas[p], merging.leaf_key(key, k, p), 0.5)
                           for k, (a, s) in enumerate(zip([1.0, 0.5, 2.0], sigs))])
        np.testing.assert_allclose(np.asarray(got.deltas[p]), np.asarray(rws.ties_merge(dared, 0.4)), rtol=1e-6)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="task_arithmetic"), r"unknown merge method 'task_arithmetic': choose one of \('sum', 'mean', 'ties'"),
    (dict(method="ties", density=0.0), r"density must be in \(0, 1\]"),
    (dict(method="ties", density=1.5), r"density must be in \(0, 1\]"),
    (dict(method="ties", density=float("nan")), "density must be a number"),
    (dict(method="ties", density="high"), "density must be a number"),
    (dict(method="dare", drop_rate=1.0, key=0), r"drop_rate must be in \[0, 1\)"),
    (dict(method="dare", drop_rate=-0.1, key=0), r"drop_rate must be in \[0, 1\)"),
    (dict(method="dare"), r"random: pass key=jax.random.key"),
    (dict(method="dare_ties"), r"random: pass key=jax.random.key"),
    (dict(method="ties", mode="reference"), "mode='reference' is defined for method='sum' only"),
    (dict(method="sum", mode="squared"), "unknown combination mode"),
])
def test_bad_arguments_are_refused(kwargs, match):
    v = variables_for([(5,), (5,)])
    s = make_sig(v, {"params/conv_0/bias": np.ones(4)})
    with pytest.raises(rws.RWSError, match=match):
        rws.compose([s, s], **kwargs)


@pytest.mark.parametrize("method", merging.METHODS)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_inputs_are_refused(method, value):
    v = variables_for([(5,), (5,)])
    s = make_sig(v, {"params/conv_0/bias": np.ones(4)}, "good")
    bad = make_sig(v, {"params/conv_0/bias": np.array([1.0, value, 0.0, 1.0])}, "bad")
    with pytest.raises(rws.NonFiniteError, match="'bad'"):
        rws.compose([s, bad], method=method, key=jax.random.key(0))
    with pytest.raises(rws.NonFiniteError, match="finite"):
        rws.compose([s, s], [1.0, value], method=method, key=jax.random.key(0))
