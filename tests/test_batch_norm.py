"""The reference's BatchNorm scheme: BN/shortcut averaging, statistics re-estimation, modes."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax.models import get_model


class InputBN(nn.Module):
    """BatchNorm straight on the input: its batch statistics are the input's."""

    momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, name="bn")(x)
        return nn.Dense(2, name="head")(x.mean(axis=(1, 2)))


def _batches(seed=0, sizes=(16, 16, 7)):
    rng = np.random.default_rng(seed)
    return [rng.normal(1.5, 2.0, (b, 4, 4, 3)).astype(np.float32) for b in sizes]


@pytest.mark.parametrize("momentum", [0.9, 0.5, 0.0])
def test_batch_statistics_is_the_size_weighted_average_of_batch_moments(momentum):
    model = InputBN(momentum=momentum)
    batches = _batches()
    v = model.init(jax.random.key(0), batches[0])
    got = rws.batch_statistics(model.apply, v, batches)
    n = sum(len(b) for b in batches)
    mean = sum(len(b) * b.mean(axis=(0, 1, 2)) for b in batches) / n
    var = sum(len(b) * b.var(axis=(0, 1, 2)) for b in batches) / n  # Flax: biased batch variance
    np.testing.assert_allclose(got["bn"]["mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(got["bn"]["var"], var, rtol=1e-5)


def test_recalibrate_mixes_old_and_new_and_leaves_params_and_input_alone():
    model = InputBN()
    batches = _batches(1)
    v = model.init(jax.random.key(0), batches[0])
    v = {**v, "batch_stats": jax.tree_util.tree_map(lambda x: x + 3.0, v["batch_stats"])}
    before = jax.tree_util.tree_map(np.array, v)
    new = rws.batch_statistics(model.apply, v, batches)
    out = rws.recalibrate_batch_stats(model.apply, v, batches, mix=0.25)
    chex.assert_trees_all_close(out["batch_stats"], jax.tree_util.tree_map(
        lambda o, s: 0.75 * o + 0.25 * s, v["batch_stats"], new), rtol=1e-6)
    chex.assert_trees_all_equal(out["params"], v["params"])
    chex.assert_trees_all_equal(v, before)
    full = rws.recalibrate_batch_stats(model.apply, v, batches)
    chex.assert_trees_all_close(full["batch_stats"], new, rtol=1e-6)
    with pytest.raises(rws.RWSError, match="mix"):
        rws.recalibrate_batch_stats(model.apply, v, batches, mix=1.5)
    with pytest.raises(rws.RWSError, match="no batches"):
        rws.recalibrate_batch_stats(model.apply, v, [])
    with pytest.raises(rws.RWSError, match="batch_stats"):
        rws.recalibrate_batch_stats(model.apply, {"params": v["params"]}, batches)


def test_preprocess_is_applied_inside_the_step():
    model = InputBN()
    raw = [(np.random.default_rng(2).integers(0, 255, (8, 4, 4, 3))).astype(np.uint8)]
    v = model.init(jax.random.key(0), raw[0].astype(np.float32))
    got = rws.batch_statistics(model.apply, v, raw, preprocess=lambda x: x.astype(jnp.float32) / 255.0)
    np.testing.assert_allclose(got["bn"]["mean"], (raw[0] / 255.0).mean(axis=(0, 1, 2)), rtol=1e-5)


@pytest.fixture(scope="module")
def resnets():
    """θ_init, θ_std and two θ_rob of a tiny CIFAR ResNet with projection shortcuts."""
    model = get_model("resnet20", 10, width=0.25, shortcut="projection")
    x = jnp.zeros((2, 8, 8, 3))
    init = model.init(jax.random.key(0), x)

    def moved(seed, scale):
        leaves, tdef = jax.tree_util.tree_flatten(init)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        return jax.tree_util.tree_unflatten(
            tdef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])

    std = moved(1, 0.01)
    robust = [moved(2, 0.02), moved(3, 0.02)]
    robust = [{**r, "batch_stats": jax.tree_util.tree_map(jnp.abs, r["batch_stats"])} for r in robust]
    return model, init, std, robust


def test_batch_norm_paths_cover_bn_statistics_and_shortcut_convs(resnets):
    model, init, _, _ = resnets
    paths = rws.batch_norm_paths(init)
    assert "params/stem/bn/scale" in paths and "batch_stats/stem/bn/mean" in paths
    assert "params/block_1_0/proj_conv/kernel" in paths and "batch_stats/block_2_0/proj_bn/var" in paths
    assert not any(p.endswith("conv_0/kernel") or p.startswith("params/head") for p in paths)
    assert "params/block_2_2/bn_1/bias" in paths  # all layers, not only the kept units


def test_reference_scheme_matches_the_reference_decompose(resnets):
    """BN/shortcut = mean over robust models; kept convs = θ_std + Σ w·RWS; the rest untouched."""
    model, init, std, robust = resnets
    sel = rws.first_k(3, order=model.unit_names)
    sigs = [rws.extract(init, std, r, sel, name=f"c{i}") for i, r in enumerate(robust)]
    out = rws.patch_batch_norm(std, sigs, 1.0, bn="reference", robust=robust, mode="reference")
    flat_out, _ = jax.tree_util.tree_flatten_with_path(out)
    bn = set(rws.batch_norm_paths(std))
    f_std = rws.tree_paths.flatten(std)[0]
    f_init = rws.tree_paths.flatten(init)[0]
    f_rob = [rws.tree_paths.flatten(r)[0] for r in robust]
    f_out = rws.tree_paths.flatten(out)[0]
    w = 1.0 / len(robust)
    for p, x in f_out.items():
        if p in bn:
            np.testing.assert_allclose(x, (f_rob[0][p] + f_rob[1][p]) / 2, rtol=1e-6, atol=1e-7)
        elif p in sigs[0].deltas:
            a = np.ravel(f_std[p] - f_init[p]).astype(np.float64)
            want = np.array(f_std[p], np.float64)
            for fr in f_rob:
                d = np.ravel(fr[p] - f_init[p]).astype(np.float64) * w
                rws_k = d - (d @ a) / (a @ a) * a
                want = want + w * rws_k.reshape(want.shape)
            np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, f_std[p])
    assert len(flat_out) == len(f_std)


def test_reference_scheme_reestimates_statistics_with_the_reference_mix(resnets):
    model, init, std, robust = resnets
    sigs = [rws.extract(init, std, robust[0], rws.first_k(2, order=model.unit_names), name="fog")]
    batches = [np.random.default_rng(i).normal(size=(8, 8, 8, 3)).astype(np.float32) for i in range(3)]
    avg_only = rws.patch_batch_norm(std, sigs, 0.5, bn="reference", robust=robust[:1])
    out = rws.patch_batch_norm(std, sigs, 0.5, bn="reference", robust=robust[:1], apply_fn=model.apply,
                               batches=batches)
    chex.assert_trees_all_equal(out["params"], avg_only["params"])
    new = rws.batch_statistics(model.apply, avg_only, batches)
    chex.assert_trees_all_close(out["batch_stats"], jax.tree_util.tree_map(
        lambda o, s: 0.5 * o + 0.5 * s, avg_only["batch_stats"], new), rtol=1e-5, atol=1e-6)
    # α ≥ 1: the re-estimated statistics alone
    full = rws.patch_batch_norm(std, sigs, 1.5, bn="reference", robust=robust[:1], apply_fn=model.apply,
                                batches=batches)
    new15 = rws.batch_statistics(model.apply, rws.patch_batch_norm(std, sigs, 1.5, bn="reference",
                                                                   robust=robust[:1]), batches)
    chex.assert_trees_all_close(full["batch_stats"], new15, rtol=1e-5, atol=1e-6)
    assert rws.reference_mix(0.3) == pytest.approx(0.3) and rws.reference_mix(2.0) == 1.0
    assert rws.reference_mix([0.5, 0.7]) == 1.0


def test_patch_and_none_modes(resnets):
    model, init, std, robust = resnets
    sel = rws.first_k(3, order=model.unit_names)
    sig = rws.extract(init, std, robust[0], sel, name="fog")
    chex.assert_trees_all_equal(rws.patch_batch_norm(std, sig, 0.7, bn="patch"), rws.patch(std, sig, 0.7))
    none = rws.patch_batch_norm(std, sig, 0.7, bn="none")
    f_none, f_std = rws.tree_paths.flatten(none)[0], rws.tree_paths.flatten(std)[0]
    f_patch = rws.tree_paths.flatten(rws.patch(std, sig, 0.7))[0]
    for p in rws.batch_norm_paths(std):
        np.testing.assert_array_equal(f_none[p], f_std[p])
    changed = [p for p in sig.deltas if p not in set(rws.batch_norm_paths(std))]
    assert changed
    for p in changed:
        np.testing.assert_array_equal(f_none[p], f_patch[p])


def test_bad_input_is_refused_and_nothing_changes(resnets):
    model, init, std, robust = resnets
    sig = rws.extract(init, std, robust[0], rws.first_k(2, order=model.unit_names), name="fog")
    before = jax.tree_util.tree_map(np.array, std)
    with pytest.raises(rws.RWSError, match="unknown BatchNorm mode"):
        rws.patch_batch_norm(std, sig, bn="bogus")
    with pytest.raises(rws.RWSError, match="needs the robust models"):
        rws.patch_batch_norm(std, [sig, sig], bn="reference", robust=[])
    other = get_model("resnet20", 10, width=0.5, shortcut="projection").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(rws.IncompatibleSignatureError, match="shape, dtype|is"):
        rws.patch_batch_norm(std, sig, bn="reference", robust=[other])
    nan = jax.tree_util.tree_map(lambda x: x * jnp.nan, robust[0])
    with pytest.raises(rws.NonFiniteError):
        rws.patch_batch_norm(std, sig, bn="reference", robust=[nan])
    with pytest.raises(rws.RWSError, match="apply_fn"):
        rws.patch_batch_norm(std, sig, bn="reference", robust=robust[:1], batches=[np.zeros((2, 8, 8, 3))])
    chex.assert_trees_all_equal(std, before)


def test_precomputed_reference_scheme_is_the_reference_scheme_and_autopatcher_applies_it(tiny_models, sigs):
    """One tree per signature, computed once: applied for one signature at α = 1 it equals
    patch_batch_norm's reference scheme; all α = 0 changes nothing; an AutoPatcher refuses
    trees of another signature set."""
    model, init, std, fog, snow = tiny_models
    rng = np.random.default_rng(0)
    data = {k: [rng.normal(k, 1.0, (16, 8, 8, 1)).astype(np.float32) for _ in range(3)] for k in (0, 1)}
    ref = rws.precompute_reference_bn(std, list(sigs), [fog, snow], apply_fn=model.apply, batches_of=lambda k: data[k])
    assert set(ref.paths) == set(rws.batch_norm_paths(std)) and ref.names == ("fog", "snow")
    for k, robust in enumerate((fog, snow)):
        a = np.zeros(2, np.float32)
        a[k] = 1.0
        got = jax.jit(rws.apply_reference_bn)(rws.patch(std, list(sigs), a), ref, a)
        want = rws.patch_batch_norm(std, [sigs[k]], 1.0, bn="reference", robust=[robust], apply_fn=model.apply,
                                    batches=data[k])
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(rws.apply_reference_bn(std, ref, np.zeros(2, np.float32)), std)
    # two signatures: BN tensors are the mean of the robust models', statistics mixed with min(mean α, 1)
    both = rws.apply_reference_bn(std, ref, np.array([0.5, 0.5], np.float32))
    flat = rws.tree_paths.flatten(both)[0]
    np.testing.assert_allclose(flat["params/bn_0/scale"], 0.5 * (np.asarray(fog["params"]["bn_0"]["scale"])
                                                                 + np.asarray(snow["params"]["bn_0"]["scale"])),
                               rtol=1e-6)
    other = rws.ReferenceBatchNorm(names=("snow", "fog"), robust=ref.robust, recalibrated=ref.recalibrated)
    det = rws.train_detector(np.zeros((4, 8, 8, 1), np.uint8) + np.arange(4, dtype=np.uint8)[:, None, None, None],
                             [rws.extract(init, std, fog, rws.first_k(2), name="fog"),
                              rws.extract(init, std, snow, rws.first_k(3), name="snow")],
                             key=jax.random.key(0), steps=5)
    with pytest.raises(rws.RWSError, match="precomputed for the signatures"):
        rws.AutoPatcher(model, std, list(sigs), det, batch_norm=other)
