"""Run by tests/test_sharding.py in a subprocess with 8 fake CPU devices.

Checks that extract / quantize / dequantize / compose (sum, TIES, mean) / patch (donated or not, float or
fused-quantized) and PatchStack give, on parameters sharded over a (data=2, model=4)
mesh, bit-identical results to the unsharded computation; that every output leaf keeps
its input's sharding; and that the compiled kernels contain no all-gather (nothing is
gathered on one device). Prints SHARDING_OK at the end.
"""

from __future__ import annotations

import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import rws_jax as rws
from rws_jax import algebra, extraction, kernels, quantization, tree_paths


def model(seed):
    """A VGG-ish variable tree whose feature axes divide by 4 (the 'model' axis)."""
    ks = iter(jax.random.split(jax.random.key(seed), 16))
    nrm = lambda shape: 0.1 * jax.random.normal(next(ks), shape)  # noqa: E731
    return {
        "params": {
            "conv_0": {"kernel": nrm((3, 3, 4, 16)), "bias": nrm((16,))},
            "conv_1": {"kernel": nrm((3, 3, 16, 32)), "bias": nrm((32,))},
            "dense_in": {"kernel": nrm((32, 64)), "bias": nrm((64,))},
            "head": {"kernel": nrm((64, 8)), "bias": nrm((8,))},
        },
        "batch_stats": {"bn_0": {"mean": nrm((16,)), "var": 1 + nrm((16,)) ** 2}},
    }


def spec_for(path: str, ndim: int) -> P:
    if path.endswith("kernel") and ndim == 4:
        return P(None, None, None, "model")  # conv: output channels over 'model'
    if path.endswith("kernel") and ndim == 2:
        return P("data", "model")  # dense: inputs over 'data', outputs over 'model'
    if "conv_1" in path:
        return P()  # a replicated bias
    return P("model")


def shard(tree, mesh):
    flat, rebuild = tree_paths.flatten(tree)
    return rebuild({p: jax.device_put(x, NamedSharding(mesh, spec_for(p, x.ndim))) for p, x in flat.items()})


def to_host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def assert_equal(a, b, what, exact=True):
    fa, fb = tree_paths.flatten(a)[0], tree_paths.flatten(b)[0]
    assert fa.keys() == fb.keys(), (what, fa.keys(), fb.keys())
    for p in fa:
        x, y = np.asarray(fa[p]), np.asarray(fb[p])
        assert x.shape == y.shape and x.dtype == y.dtype, (what, p, x.shape, y.shape, x.dtype, y.dtype)
        if exact:
            np.testing.assert_array_equal(x, y, err_msg=f"{what} {p}")
        else:  # sharded dot products may sum in another order: float rounding only
            np.testing.assert_allclose(x, y, rtol=2e-6, atol=2e-7, err_msg=f"{what} {p}")


def assert_sharded_like(out, ref, what):
    """Every leaf of ``out`` whose path is in ``ref`` has ``ref``'s sharding."""
    fo, fr = tree_paths.flatten(out)[0], tree_paths.flatten(ref)[0]
    for p, x in fo.items():
        if p not in fr:
            continue
        want = fr[p].sharding
        assert x.sharding.is_equivalent_to(want, x.ndim), (what, p, x.sharding, want)


def assert_no_all_gather(lowered, what):
    hlo = lowered.compile().as_text()
    gathers = re.findall(r"^.*all-gather.*$", hlo, re.M)
    assert not gathers, (what, gathers[:3])
    return hlo


def main():
    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    init, std, fog, snow = model(0), model(1), model(2), model(3)
    s_init, s_std, s_fog, s_snow = (shard(t, mesh) for t in (init, std, fog, snow))
    sel = rws.first_k(3)

    # ---- extract: equal to unsharded, deltas sharded like the leaves, no all-gather
    ref_fog = rws.extract(init, std, fog, sel, name="fog")
    ref_snow = rws.extract(init, std, snow, sel, name="snow")
    sh_fog = rws.extract(s_init, s_std, s_fog, sel, name="fog")
    sh_snow = rws.extract(s_init, s_std, s_snow, sel, name="snow")
    assert sh_fog.meta == ref_fog.meta
    assert_equal(sh_fog.deltas, ref_fog.deltas, "extract", exact=False)
    assert_sharded_like(sh_fog.deltas, s_init, "extract")
    flat_i = tree_paths.flatten(s_init)[0]
    pick = lambda t: {p: tree_paths.flatten(t)[0][p] for p in sh_fog.deltas}  # noqa: E731
    shardings = tree_paths.static_shardings({p: flat_i[p].sharding for p in sh_fog.deltas})
    assert_no_all_gather(
        extraction._extract_leaves.lower(pick(s_init), pick(s_std), pick(s_fog), project=True, eps=1e-12,
                                         shardings=shardings), "extract")

    # From here on, the sharded signatures hold exactly the unsharded values (the
    # projection's sharded dot products may round differently), so that every later
    # result must be bit-identical: quantize, compose and patch are elementwise or
    # min/max reductions, which do not depend on the summation order.
    def reshard(sig):
        return sig.replace(deltas={p: jax.device_put(x, flat_i[p].sharding) for p, x in sig.deltas.items()})

    sh_fog = reshard(ref_fog)
    del sh_snow, ref_snow

    # ---- quantize / dequantize: per tensor and per channel, 8/4/2 bit, both schemes
    for bits in (8, 4, 2):
        for per_channel in (False, True):
            for scheme in ("asymmetric", "symmetric"):
                tag = f"quantize {bits} bit per_channel={per_channel} {scheme}"
                ref_q = rws.quantize(ref_fog, bits, per_channel=per_channel, scheme=scheme)
                sh_q = rws.quantize(sh_fog, bits, per_channel=per_channel, scheme=scheme)
                for p, qt in sh_q.deltas.items():
                    rq = ref_q.deltas[p]
                    assert qt.data.shape == rq.data.shape, (tag, p, qt.data.shape, rq.data.shape)
                    np.testing.assert_array_equal(np.asarray(qt.data), np.asarray(rq.data), err_msg=f"{tag} {p}")
                    np.testing.assert_array_equal(np.asarray(qt.scale), np.asarray(rq.scale), err_msg=f"{tag} {p}")
                    np.testing.assert_array_equal(np.asarray(qt.offset), np.asarray(rq.offset), err_msg=f"{tag} {p}")
                    leaf_sh = flat_i[p].sharding
                    if bits != 8 and flat_i[p].ndim:
                        # packed along the last axis, per shard: same partitioning as the leaf
                        assert qt.data.shape[-1] * (8 // bits) == qt.shape[-1], (tag, p, qt.data.shape)
                    assert qt.data.sharding.is_equivalent_to(
                        tree_paths.derived_sharding(leaf_sh, qt.data.ndim), qt.data.ndim), (tag, p, qt.data.sharding)
                deq = rws.dequantize(sh_q)
                assert_equal(deq.deltas, rws.dequantize(ref_q).deltas, tag + " dequantize")
                assert_sharded_like(deq.deltas, s_init, tag + " dequantize")
                hlo = assert_no_all_gather(
                    quantization._quantize_all_jit.lower(
                        sh_fog.deltas, bits=bits, scheme=scheme, axis=-1 if per_channel else None,
                        packs=tuple(sorted((p, quantization.can_pack_last_axis(
                            tuple(x.shape), bits, tree_paths.shard_shape(x))) for p, x in sh_fog.deltas.items())),
                        shardings=None), tag)
                del hlo
                # the fused quantized patch (donated for the per-channel cases)
                for donate in (per_channel,):
                    model_in = jax.tree_util.tree_map(jnp.copy, s_std)
                    out = rws.patch(model_in, sh_q, 0.7, donate=donate)
                    assert_equal(to_host(out), to_host(rws.patch(std, ref_q, 0.7)), tag + f" patch donate={donate}")
                    assert_sharded_like(out, s_std, tag + f" patch donate={donate}")

    # ---- 1 bit (sign scheme): codes exact, packed per shard where each shard's last
    # axis divides by 8 (else one code a byte); scale = mean|x| is a sum, which a
    # sharded reduction may add in another order, so scales and everything
    # dequantized from them are compared up to float rounding
    for per_channel in (False, True):
        tag = f"quantize 1 bit per_channel={per_channel}"
        ref_q = rws.quantize(ref_fog, 1, per_channel=per_channel)
        sh_q = rws.quantize(sh_fog, 1, per_channel=per_channel)
        assert sh_q.meta.quantization == ref_q.meta.quantization == f"sign/{'per_channel' if per_channel else 'per_tensor'}/1"
        for p, qt in sh_q.deltas.items():
            rq, leaf = ref_q.deltas[p], flat_i[p]
            packs = quantization.can_pack_last_axis(tuple(leaf.shape), 1, tree_paths.shard_shape(leaf))
            assert qt.data.shape == ((*qt.shape[:-1], qt.shape[-1] // 8) if packs else qt.shape), (tag, p, qt.data.shape)
            np.testing.assert_array_equal(np.asarray(quantization.codes_of(qt)), np.asarray(quantization.codes_of(rq)),
                                          err_msg=f"{tag} {p}")
            np.testing.assert_allclose(np.asarray(qt.scale), np.asarray(rq.scale), rtol=2e-6, err_msg=f"{tag} {p}")
            np.testing.assert_array_equal(quantization.to_flat_packed(qt), quantization.to_flat_packed(rq))
            assert qt.data.sharding.is_equivalent_to(
                tree_paths.derived_sharding(leaf.sharding, qt.data.ndim), qt.data.ndim), (tag, p, qt.data.sharding)
        deq = rws.dequantize(sh_q)
        assert_equal(deq.deltas, rws.dequantize(ref_q).deltas, tag + " dequantize", exact=False)
        assert_sharded_like(deq.deltas, s_init, tag + " dequantize")
        assert_no_all_gather(
            quantization._quantize_all_jit.lower(
                sh_fog.deltas, bits=1, scheme="sign", axis=-1 if per_channel else None,
                packs=tuple(sorted((p, quantization.can_pack_last_axis(
                    tuple(x.shape), 1, tree_paths.shard_shape(x))) for p, x in sh_fog.deltas.items())),
                shardings=None), tag)
        model_in = jax.tree_util.tree_map(jnp.copy, s_std)
        out = rws.patch(model_in, sh_q, 0.7, donate=per_channel)
        assert_equal(to_host(out), to_host(rws.patch(std, ref_q, 0.7)), tag + " patch", exact=False)
        assert_sharded_like(out, s_std, tag + " patch")

    # ---- compose and patch (K=2, different selections), donate or not
    ref_snow2 = rws.extract(init, std, snow, rws.first_k(2), name="snow")
    sh_snow2 = reshard(ref_snow2)
    ref_c = rws.compose([ref_fog, ref_snow2], [0.5, -1.5])
    sh_c = rws.compose([sh_fog, sh_snow2], [0.5, -1.5])
    assert_equal(sh_c.deltas, ref_c.deltas, "compose")
    assert_sharded_like(sh_c.deltas, s_init, "compose")
    for donate in (False, True):
        model_in = jax.tree_util.tree_map(jnp.copy, s_std)
        out, undo = rws.patch(model_in, [sh_fog, sh_snow2], [0.5, -1.5], donate=donate, return_undo=True)
        assert_equal(to_host(out), to_host(rws.patch(std, [ref_fog, ref_snow2], [0.5, -1.5])), f"patch donate={donate}")
        assert_sharded_like(out, s_std, f"patch donate={donate}")
        back = rws.unpatch(out, undo)
        assert_equal(to_host(back), to_host(std), "unpatch")
        for p, x in tree_paths.flatten(back)[0].items():
            np.testing.assert_array_equal(np.asarray(x), np.asarray(tree_paths.flatten(std)[0][p]))
        assert_sharded_like(back, s_std, f"unpatch donate={donate}")
    leaves = {p: tree_paths.flatten(s_std)[0][p] for p in sorted(sh_c.deltas)}
    alphas = rws.coefficients([0.5, -1.5], 2)
    deltas = (sh_fog.deltas, sh_snow2.deltas)
    assert_no_all_gather(kernels.combine_jit.lower(leaves, deltas, alphas,
                                                   shardings=kernels.out_shardings(leaves, deltas)), "patch")
    assert_no_all_gather(kernels.combine_donated_jit.lower(leaves, deltas, alphas,
                                                           shardings=kernels.out_shardings(leaves, deltas)),
                         "patch donated")
    assert_no_all_gather(kernels.combine_jit.lower(None, deltas, alphas,
                                                   shardings=kernels.out_shardings(None, deltas)), "compose")
    q4 = rws.quantize(sh_fog, 4, per_channel=True)
    assert_no_all_gather(kernels.combine_jit.lower(leaves, (q4.deltas,), rws.coefficients(1.0, 1),
                                                   shardings=kernels.out_shardings(leaves, (q4.deltas,))),
                         "fused quantized patch")

    # ---- interference-aware merging: TIES (per-tensor top-k by bisection on the threshold:
    # counts only) and mean equal the unsharded merge, keep each leaf's sharding, and gather
    # nothing. (DARE is checked the same way by hand; its RNG compiles too slowly for here.)
    for method in ("ties", "mean"):
        ref_m = rws.compose([ref_fog, ref_snow2], [0.5, -1.5], method=method, density=0.3)
        sh_m = rws.compose([sh_fog, sh_snow2], [0.5, -1.5], method=method, density=0.3)
        assert_equal(sh_m.deltas, ref_m.deltas, f"compose {method}")
        assert_sharded_like(sh_m.deltas, s_init, f"compose {method}")
        assert_no_all_gather(algebra._merge_jit.lower(deltas, alphas, None, method=method, density=0.3,
                                                      drop_rate=0.0, shardings=kernels.out_shardings(None, deltas)),
                             f"merge {method}")

    # ---- PatchStack on the sharded model: bit-exact restore, sharding kept
    stack = rws.PatchStack.create(s_std)
    stack, v = stack.apply(s_std, sh_fog, 0.8)
    stack, v = stack.apply(v, q4, 0.3, name="fog-q4")
    assert_sharded_like(v, s_std, "stack apply")
    stack, v = stack.remove(v, "fog")
    ref_only_q4 = rws.patch(s_std, q4, 0.3)
    for p, x in tree_paths.flatten(v)[0].items():
        np.testing.assert_array_equal(np.asarray(x), np.asarray(tree_paths.flatten(ref_only_q4)[0][p]))
    stack, v = stack.remove(v, "fog-q4")
    for p, x in tree_paths.flatten(v)[0].items():
        np.testing.assert_array_equal(np.asarray(x), np.asarray(tree_paths.flatten(std)[0][p]))
    assert_sharded_like(v, s_std, "stack remove")

    # ---- per-device memory: no device ever holds a whole sharded leaf
    out = rws.patch(s_std, [sh_fog, sh_snow2], [0.5, -1.5])
    for p, x in tree_paths.flatten(out)[0].items():
        if not x.sharding.is_fully_replicated:
            for shard_ in x.addressable_shards:
                assert shard_.data.size < x.size, (p, shard_.data.shape, x.shape)
    print("SHARDING_OK", os.environ.get("XLA_FLAGS", ""), file=sys.stdout)


if __name__ == "__main__":
    main()
