"""Property-based tests (hypothesis) of the signature algebra over random pytrees.

Trees are nested dicts of float32 arrays whose shapes come from a small set, so that
the jitted kernels are compiled once per structure and reused across examples.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rws_jax as rws
from rws_jax import tree_paths
from rws_jax.signature import leaf_specs_for

SETTINGS = settings(max_examples=25, deadline=None, derandomize=False)
SHAPES = [(4,), (2, 4), (3, 2, 4)]
alphas = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def models(draw):
    """(variables, seed): 1-3 units, each with a kernel of a drawn shape and a bias."""
    n_units = draw(st.integers(1, 3))
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(n_units)]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    tree = {"params": {f"conv_{i}": {"kernel": rng.normal(size=s).astype(np.float32),
                                     "bias": rng.normal(size=(4,)).astype(np.float32)}
                       for i, s in enumerate(shapes)}}
    return jax.tree.map(jnp.asarray, tree), seed


def random_sig(variables, paths, seed, name="s", scale=1.0):
    flat, _ = tree_paths.flatten(variables)
    rng = np.random.default_rng(seed)
    deltas = {p: jnp.asarray(scale * rng.normal(size=flat[p].shape).astype(np.float32)) for p in sorted(paths)}
    meta = rws.SignatureMeta(base_fingerprint=tree_paths.fingerprint(variables),
                             leaf_specs=leaf_specs_for(flat, paths), name=name)
    return rws.Signature(deltas=deltas, meta=meta)


@st.composite
def model_and_sigs(draw, k=2):
    variables, seed = draw(models())
    paths = sorted(tree_paths.flatten(variables)[0])
    sigs = []
    for i in range(k):
        chosen = draw(st.lists(st.sampled_from(paths), min_size=1, max_size=len(paths), unique=True))
        sigs.append(random_sig(variables, chosen, seed + 1 + i, name=f"s{i}"))
    return variables, sigs


def host(tree):
    return jax.tree.map(np.asarray, tree)


@SETTINGS
@given(model_and_sigs(), st.lists(alphas, min_size=2, max_size=2), st.booleans())
def test_patch_then_unpatch_is_bit_exact(ms, a, donate):
    variables, sigs = ms
    original = host(variables)
    model = jax.tree.map(jnp.copy, variables)
    patched, undo = rws.patch(model, sigs, a, donate=donate, return_undo=True)
    chex.assert_trees_all_equal(host(rws.unpatch(patched, undo)), original)


@SETTINGS
@given(model_and_sigs(), alphas, alphas)
def test_compose_is_order_independent(ms, a, b):
    _, (s0, s1) = ms
    ab = rws.compose([s0, s1], [a, b])
    ba = rws.compose([s1, s0], [b, a])
    assert set(ab.deltas) == set(s0.deltas) | set(s1.deltas)
    chex.assert_trees_all_close(ab.deltas, ba.deltas, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(model_and_sigs(k=1), alphas, alphas)
def test_scale_is_linear(ms, a, b):
    _, (s,) = ms
    chex.assert_trees_all_close(rws.scale(rws.scale(s, a), b).deltas, rws.scale(s, a * b).deltas, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(rws.add(rws.scale(s, a), rws.scale(s, b)).deltas, rws.scale(s, a + b).deltas,
                                rtol=1e-5, atol=1e-5)
    zero = rws.add(s, rws.negate(s))
    chex.assert_trees_all_equal(host(zero.deltas), jax.tree.map(np.zeros_like, host(s.deltas)))


@SETTINGS
@given(model_and_sigs(), st.lists(alphas, min_size=2, max_size=2))
def test_patch_with_compose_equals_patch_with_list(ms, a):
    variables, sigs = ms
    fused = rws.patch(variables, sigs, a)
    via = rws.patch(variables, rws.compose(sigs, a))
    chex.assert_trees_all_close(host(fused), host(via), rtol=1e-5, atol=1e-5)
    # and untouched leaves are the same objects
    touched = {p for s in sigs for p in s.deltas}
    flat_v, flat_f = tree_paths.flatten(variables)[0], tree_paths.flatten(fused)[0]
    assert all(flat_f[p] is flat_v[p] for p in flat_v if p not in touched)


@SETTINGS
@given(model_and_sigs(k=1), st.sampled_from([8, 4, 2]), st.sampled_from(["asymmetric", "symmetric"]), st.booleans(),
       st.floats(1e-3, 1e3))
def test_quantization_error_within_half_step(ms, bits, scheme, per_channel, magnitude):
    _, (s,) = ms
    s = rws.scale(s, magnitude)
    q = rws.quantize(s, bits, scheme=scheme, per_channel=per_channel)
    back = rws.dequantize(q)
    for p, x in s.deltas.items():
        qt = q.deltas[p]
        err = jnp.abs(back.deltas[p] - x)
        bound = qt.scale / 2 * (1 + 1e-5) + 1e-6 * jnp.max(jnp.abs(x))
        assert bool(jnp.all(err <= bound)), (p, float(jnp.max(err)), float(jnp.max(qt.scale)))
        codes = rws.quantization.codes_of(qt)
        assert codes.shape == x.shape and int(jnp.max(codes)) < 2**bits


@SETTINGS
@given(models(), st.floats(0.0, 1.0))
def test_projection_is_orthogonal_to_the_clean_direction(m, mix):
    init, seed = m
    rng = np.random.default_rng(seed + 7)
    std = jax.tree.map(lambda x: x + jnp.asarray(rng.normal(size=x.shape).astype(np.float32)), init)
    # the robust direction shares part of the clean one (mix), the rest is its own
    rob = jax.tree.map(lambda x, y: x + mix * (y - x) + jnp.asarray(rng.normal(size=x.shape).astype(np.float32)),
                       init, std)
    sig = rws.extract(init, std, rob, rws.by_pattern("."), name="r")
    fi, fs = tree_paths.flatten(init)[0], tree_paths.flatten(std)[0]
    for p, d in sig.deltas.items():
        a = np.asarray(fs[p] - fi[p], np.float64).ravel()
        r = np.asarray(d, np.float64).ravel()
        assert abs(a @ r) <= 1e-5 * np.linalg.norm(a) * max(np.linalg.norm(r), 1.0), p


@SETTINGS
@given(model_and_sigs(k=3), st.lists(alphas, min_size=3, max_size=3), st.permutations([0, 1, 2]))
def test_patch_stack_removal_in_any_order_restores(ms, a, order):
    variables, sigs = ms
    stack, v = rws.PatchStack.create(variables), variables
    for s, alpha in zip(sigs, a):
        stack, v = stack.apply(v, s, alpha)
    gone = set()
    for i in order:
        stack, v = stack.remove(v, sigs[i].name)
        gone.add(i)
        fresh = variables
        for j, (s, alpha) in enumerate(zip(sigs, a)):
            if j not in gone:
                fresh = rws.patch(fresh, s, alpha)
        chex.assert_trees_all_equal(host(v), host(fresh))  # bit for bit
    chex.assert_trees_all_equal(host(v), host(variables))
