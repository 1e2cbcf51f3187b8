"""Tests for rws_jax.training (tiny model + synthetic data; one slow real-data run)."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rws_jax.training import (TrainConfig, augment_batch, compute_dtype_of, prefetch_to_device,
                              with_compute_dtype, build_corrupt_fn, create_train_state,
                              epoch_permutation, evaluate, fit, make_eval_step, make_optimizer,
                              make_schedule, make_train_step, mixture_corrupt_fn,
                              normalize_images, prepare_inputs, random_crop, random_flip)


class Tiny(nn.Module):
    """Conv + BatchNorm + Dense: exercises the batch_stats path."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


class TinyNoBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(3)(x)


def synthetic(n=256, hw=8, c=1, seed=0):
    """Class k images have brightness around 40 + 80 k: easy to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype(np.int32)
    images = (rng.integers(0, 40, (n, hw, hw, c)) + 80 * labels[:, None, None, None]).astype(np.uint8)
    return images, labels


def batch_of(images, labels):
    return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def tiny_state(model=None, seed=0, tx=None, hw=8):
    model = model or Tiny()
    tx = tx or optax.sgd(0.1, momentum=0.9)
    return create_train_state(model, jax.random.PRNGKey(seed), tx, (1, hw, hw, 1)), model


# --------------------------------------------------------------------------- config / optax
def test_step_schedule_values_at_milestones():
    cfg = TrainConfig.reference_cifar()
    spe = 10
    s = make_schedule(cfg, spe)
    np.testing.assert_allclose([float(s(0)), float(s(199))], [0.01, 0.01], rtol=1e-6)
    np.testing.assert_allclose([float(s(200)), float(s(399))], [1e-3, 1e-3], rtol=1e-5)
    np.testing.assert_allclose([float(s(400)), float(s(499))], [1e-4, 1e-4], rtol=1e-5)


def test_cosine_and_warmup_schedules():
    cfg = TrainConfig(epochs=10, lr=0.1, schedule="cosine")
    s = make_schedule(cfg, 5)
    assert float(s(0)) == pytest.approx(0.1)
    assert float(s(25)) == pytest.approx(0.05, rel=1e-5)
    assert float(s(50)) == pytest.approx(0.0, abs=1e-7)
    w = make_schedule(cfg.replace(schedule="step", milestones=(4,), warmup_epochs=2), 5)
    assert float(w(0)) == 0.0
    assert float(w(5)) == pytest.approx(0.05)
    assert float(w(10)) == pytest.approx(0.1)
    assert float(w(19)) == pytest.approx(0.1)
    assert float(w(20)) == pytest.approx(0.01)


def test_reference_preset():
    cfg = TrainConfig.reference_cifar()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (0.01, 0.9, 5e-4, 128, 50)
    assert cfg.milestones == (20, 40) and cfg.schedule == "step" and cfg.weight_decay_mode == "l2"
    assert cfg.augment and cfg.flip and cfg.crop_padding == 4
    hash(cfg)  # usable as a static argument
    assert TrainConfig(corruption=["fog"]).corruption == "fog"
    assert TrainConfig(corruption=["fog", "snow"]).corruption == ("fog", "snow")
    with pytest.raises(ValueError):
        TrainConfig(schedule="linear")


def test_optimizer_l2_is_pytorch_sgd():
    cfg = TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.01, schedule="constant")
    tx = make_optimizer(cfg, 1)
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.5])}
    st = tx.init(p)
    u1, st = tx.update(g, st, p)
    d1 = g["w"] + 0.01 * p["w"]
    np.testing.assert_allclose(u1["w"], -0.1 * d1, rtol=1e-6)
    p2 = optax.apply_updates(p, u1)
    u2, _ = tx.update(g, st, p2)
    buf = 0.9 * d1 + (g["w"] + 0.01 * p2["w"])
    np.testing.assert_allclose(u2["w"], -0.1 * buf, rtol=1e-6)


def test_optimizer_decoupled():
    cfg = TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.01, schedule="constant",
                      weight_decay_mode="decoupled")
    tx = make_optimizer(cfg, 1)
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.5])}
    st = tx.init(p)
    _, st = tx.update(g, st, p)
    u2, _ = tx.update(g, st, p)
    np.testing.assert_allclose(u2["w"], -0.1 * (1.9 * g["w"] + 0.01 * p["w"]), rtol=1e-6)


# --------------------------------------------------------------------------- input pipeline
def test_augmentation_shapes_and_semantics():
    imgs = jnp.asarray(np.random.default_rng(0).integers(1, 255, (16, 8, 8, 3)), jnp.uint8)
    key = jax.random.PRNGKey(0)
    out = augment_batch(key, imgs)
    assert out.shape == imgs.shape and out.dtype == jnp.uint8
    # Crops with padding 0 are the identity; crops always come from the padded image.
    chex.assert_trees_all_equal(random_crop(key, imgs, 0), imgs)
    cropped = random_crop(key, imgs, 2)
    assert not np.array_equal(np.asarray(cropped), np.asarray(imgs))
    flipped = np.asarray(random_flip(key, imgs))
    for a, b in zip(flipped, np.asarray(imgs)):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
    x = normalize_images(imgs, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(x, (np.asarray(imgs) / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    # Corruption runs before augmentation and normalisation.
    seen = {}

    def corrupt(k, im):
        seen["dtype"] = im.dtype
        return jnp.zeros_like(im)

    y = prepare_inputs(key, imgs, corrupt_fn=corrupt, augment=True)
    assert seen["dtype"] == jnp.uint8
    assert float(jnp.abs(y).max()) == 0.0


def test_mixture_corrupt_fn_picks_per_image():
    fns = [lambda k, x: jnp.zeros_like(x), lambda k, x: jnp.full_like(x, 255)]
    mix = jax.jit(mixture_corrupt_fn(fns))
    out = np.asarray(mix(jax.random.PRNGKey(3), jnp.full((64, 4, 4, 1), 7, jnp.uint8)))
    per_image = out.reshape(64, -1)
    assert set(np.unique(per_image)) == {0, 255}
    assert all(len(np.unique(r)) == 1 for r in per_image)
    assert build_corrupt_fn(None) is None


def test_epoch_permutation_depends_on_seed_and_epoch_only():
    a = epoch_permutation(0, 3, 100)
    np.testing.assert_array_equal(a, epoch_permutation(0, 3, 100))
    assert not np.array_equal(a, epoch_permutation(0, 4, 100))
    assert not np.array_equal(a, epoch_permutation(1, 3, 100))
    assert sorted(a) == list(range(100))


# --------------------------------------------------------------------------- steps
@pytest.mark.slow
def test_train_step_decreases_loss_and_updates_batch_stats():
    images, labels = synthetic(64)
    state, model = tiny_state()
    bs0 = jax.tree_util.tree_map(np.asarray, state.batch_stats)
    step = make_train_step(model.apply, state.tx, augment=False)
    batch = batch_of(images, labels)
    key = jax.random.PRNGKey(1)
    losses = []
    for _ in range(30):
        state, m = step(state, batch, key)
        losses.append(float(m["loss"]))
    assert int(state.step) == 30
    assert losses[-1] < 0.5 * losses[0], losses
    assert float(m["accuracy"]) > 0.9
    assert not np.allclose(np.asarray(state.batch_stats["BatchNorm_0"]["mean"]),
                           bs0["BatchNorm_0"]["mean"])


def test_train_step_no_batchnorm_model():
    images, labels = synthetic(32)
    state, model = tiny_state(TinyNoBN())
    assert state.batch_stats == {} and "batch_stats" not in state.variables
    step = make_train_step(model.apply, state.tx, augment=True)
    state, m = step(state, batch_of(images, labels), jax.random.PRNGKey(0))
    assert np.isfinite(float(m["loss"]))


def test_train_step_is_bitwise_reproducible():
    images, labels = synthetic(32)
    outs = []
    for _ in range(2):
        state, model = tiny_state(seed=5)
        step = make_train_step(model.apply, state.tx, augment=True)
        for _ in range(3):
            state, _ = step(state, batch_of(images, labels), jax.random.PRNGKey(9))
        outs.append(jax.device_get(state.variables))
    chex.assert_trees_all_equal(outs[0], outs[1])


def test_corruption_is_applied_inside_the_step():
    images, labels = synthetic(32)
    key = jax.random.PRNGKey(0)
    calls = []

    def zero(k, im):
        calls.append(im.shape)  # traced once
        return jnp.zeros_like(im)

    results = {}
    for name, fn in [("clean", None), ("zero", zero)]:
        state, model = tiny_state(seed=0)
        step = make_train_step(model.apply, state.tx, corrupt_fn=fn, augment=False)
        _, m = step(state, batch_of(images, labels), key)
        results[name] = float(m["loss"])
    assert calls and calls[0] == images.shape
    assert results["clean"] != results["zero"]
    # The eval step applies it as well: with all-zero inputs every image gets the same logits.
    state, model = tiny_state(seed=0)
    ev = make_eval_step(model.apply, corrupt_fn=zero)
    m_zero = ev(state.variables, batch_of(images, labels), key)
    m_clean = make_eval_step(model.apply)(state.variables, batch_of(images, labels), key)
    assert float(m_zero["loss_sum"]) != float(m_clean["loss_sum"])


def test_evaluate_covers_every_example_with_partial_batch():
    images, labels = synthetic(103, seed=2)
    state, model = tiny_state(seed=1)
    variables = state.variables
    logits = model.apply(variables, normalize_images(jnp.asarray(images)), train=False)
    acc = float(np.mean(np.argmax(np.asarray(logits), -1) == labels))
    loss = float(np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)))
    res = evaluate(variables, model.apply, (images, labels), batch_size=25)
    assert res["count"] == 103
    assert res["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert res["loss"] == pytest.approx(loss, rel=1e-5)
    res2 = evaluate(variables, model.apply, {"image": images, "label": labels}, batch_size=200)
    assert res2["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert res2["loss"] == pytest.approx(loss, rel=1e-5)


def test_finetune_starts_exactly_at_given_variables():
    images, labels = synthetic(32)
    base, model = tiny_state(seed=3)
    theta_init = jax.device_get(base.variables)
    theta_init_dev = base.variables
    tx = make_optimizer(TrainConfig(lr=0.05), 10)
    state = create_train_state(model, theta_init_dev, tx)
    chex.assert_trees_all_equal(jax.device_get(state.variables), theta_init)
    assert int(state.step) == 0
    chex.assert_trees_all_equal(state.opt_state, tx.init(state.params))  # fresh optimizer
    step = make_train_step(model.apply, tx, augment=False)
    state, _ = step(state, batch_of(images, labels), jax.random.PRNGKey(0))
    # The caller's arrays survive the donated step unchanged.
    chex.assert_trees_all_equal(jax.device_get(theta_init_dev), theta_init)
    assert not np.array_equal(np.asarray(state.params["Dense_0"]["kernel"]),
                              theta_init["params"]["Dense_0"]["kernel"])


# --------------------------------------------------------------------------- fit
FIT_CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, milestones=(1,), eval_batch_size=64,
                      seed=7, augment=True, crop_padding=1)


def _splits():
    images, labels = synthetic(224, seed=4)
    return (images[:160], labels[:160]), (images[160:], labels[160:])


@pytest.mark.slow
def test_fit_resume_is_bitwise_identical(tmp_path):
    train, val = _splits()
    full_vars, full_hist = fit(Tiny(), train, val, FIT_CFG, workdir=str(tmp_path / "a"), progress=False)
    assert full_hist["finished"] and full_hist["epoch"] == [1, 2]

    wd = str(tmp_path / "b")
    part_vars, part_hist = fit(Tiny(), train, val, FIT_CFG, workdir=wd, progress=False, max_epochs=1)
    assert not part_hist["finished"] and part_hist["epoch"] == [1]
    res_vars, res_hist = fit(Tiny(), train, val, FIT_CFG, workdir=wd, progress=False)
    chex.assert_trees_all_equal(jax.device_get(res_vars), jax.device_get(full_vars))
    assert full_hist['epoch_seconds'] and all(t > 0 for t in full_hist['epoch_seconds'])
    assert len(full_hist['epoch_seconds']) == len(full_hist['epoch'])
    assert len(res_hist['epoch_seconds']) == len(res_hist['epoch'])  # the resumed epochs keep theirs
    assert {**res_hist, 'epoch_seconds': None} == {**full_hist, 'epoch_seconds': None}  # wall times differ
    # Restored values are jax Arrays (not numpy objects), placed on a device.
    leaf = jax.tree_util.tree_leaves(res_vars)[0]
    assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32

    # A finished run returns the stored result (no training: a model with another
    # structure would fail to train but is never called).
    again_vars, again_hist = fit(Tiny(), train, val, FIT_CFG, workdir=wd, progress=False)
    chex.assert_trees_all_equal(jax.device_get(again_vars), jax.device_get(full_vars))
    assert again_hist == {**full_hist, 'epoch_seconds': again_hist['epoch_seconds']}

    # Without a workdir the run is the same too (same seed -> same weights).
    nowd_vars, _ = fit(Tiny(), train, val, FIT_CFG, progress=False)
    chex.assert_trees_all_equal(jax.device_get(nowd_vars), jax.device_get(full_vars))


def test_fit_keeps_best_validation_and_finetunes(tmp_path):
    train, val = _splits()
    base, model = tiny_state(seed=11)
    theta_init = jax.device_get(base.variables)
    cfg = FIT_CFG.replace(epochs=3, milestones=(), lr=0.02)
    best, hist = fit(model, train, val, cfg, init_variables=base.variables, progress=False)
    accs = hist["val_accuracy"]
    assert len(accs) == 3 and hist["best_epoch"] == int(np.argmax(accs)) + 1
    assert hist["best_val_accuracy"] == max(accs)
    res = evaluate(best, model.apply, val, batch_size=64)
    assert res["accuracy"] == pytest.approx(max(accs), abs=1e-6)
    chex.assert_trees_all_equal(jax.device_get(base.variables), theta_init)  # not donated away


def test_fit_with_corruption_callable_and_eval_every():
    train, val = _splits()
    cfg = FIT_CFG.replace(epochs=2, eval_every=2)
    calls = []

    def corrupt(k, im):
        calls.append(im.dtype)
        return im // 2

    _, hist = fit(Tiny(), train, val, cfg, progress=False, corrupt_fn=corrupt)
    assert hist["val_accuracy"][0] is None and hist["val_accuracy"][1] is not None
    assert calls and all(d == jnp.uint8 for d in calls)


# --------------------------------------------------------------------------- integration
@pytest.mark.slow
def test_integration_fashion_mnist_real_run():
    data = pytest.importorskip("rws_jax.data")
    models = pytest.importorskip("rws_jax.models")
    try:
        ds = data.load_dataset("fashion_mnist", val_size=1000, max_train=4000)
    except Exception as e:  # DatasetNotFoundError when the Debian package is missing
        pytest.skip(f"Fashion-MNIST not available: {e}")
    model = models.get_model("resnet20", ds.num_classes, width=0.5)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, milestones=(1,), augment=True,
                      flip=False, eval_batch_size=500, seed=0)
    best, hist = fit(model, ds.train, ds.val, cfg, progress=False)
    assert hist["best_val_accuracy"] > 0.6, hist
    assert "batch_stats" in best
    res = evaluate(best, model.apply, ds.val, batch_size=500)
    assert res["accuracy"] == pytest.approx(hist["best_val_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_real_corruptions_inside_train_step():
    pytest.importorskip("rws_jax.corruptions")
    images, labels = synthetic(16, hw=32, c=3)
    for spec in ["gaussian_noise", ("contrast", "brightness")]:
        fn = build_corrupt_fn(spec, 5, "cifar10")
        out = jax.jit(fn)(jax.random.PRNGKey(0), jnp.asarray(images))
        assert out.shape == images.shape and out.dtype == jnp.uint8
        assert not np.array_equal(np.asarray(out), images)
        state, model = tiny_state(seed=0, hw=32)
        state = create_train_state(model, jax.random.PRNGKey(0), state.tx, (1, 32, 32, 3))
        step = make_train_step(model.apply, state.tx, corrupt_fn=fn, augment=True)
        state, m = step(state, batch_of(images, labels), jax.random.PRNGKey(1))
        assert np.isfinite(float(m["loss"]))


# --------------------------------------------------------------------------- mixed precision
def test_compute_dtype_is_validated_and_hashable():
    assert TrainConfig().compute_dtype == "float32"
    cfg = TrainConfig(compute_dtype="bfloat16")
    hash(cfg)
    assert compute_dtype_of(cfg) == jnp.bfloat16 and compute_dtype_of(TrainConfig()) == jnp.float32
    with pytest.raises(ValueError, match="compute_dtype.*float16.*loss scaling"):
        TrainConfig(compute_dtype="float16")
    with pytest.raises(ValueError, match="compute_dtype"):
        TrainConfig(compute_dtype="fp8")
    with pytest.raises(ValueError, match="prefetch"):
        TrainConfig(prefetch=-1)
    # A model without a 'dtype' attribute: float32 is fine, bfloat16 is refused by name.
    assert with_compute_dtype(Tiny(), "float32") == Tiny()
    with pytest.raises(ValueError, match="Tiny has none"):
        with_compute_dtype(Tiny(), "bfloat16")


def _small_resnet(dtype=jnp.float32):
    from rws_jax.models.resnet import ResNetCifar

    return ResNetCifar(depth=8, num_classes=3, width=0.5, dtype=dtype)


class TinyDtype(nn.Module):
    """Tiny with a computation ``dtype`` (as rws_jax.models have): bf16-capable."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), strides=(2, 2), dtype=self.dtype, name="conv")(jnp.asarray(x, self.dtype))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(3, dtype=self.dtype)(x).astype(jnp.float32)


def test_with_compute_dtype_keeps_float32_model_unchanged():
    model = _small_resnet()
    assert with_compute_dtype(model, "float32") is model
    bf = with_compute_dtype(model, "bfloat16")
    assert bf.dtype == jnp.bfloat16 and with_compute_dtype(bf, "bfloat16") is bf


def test_bfloat16_train_step_decreases_loss_with_float32_state():
    images, labels = synthetic(32, seed=2)
    cfg = TrainConfig(lr=0.05, schedule="constant", compute_dtype="bfloat16")
    bf = with_compute_dtype(TinyDtype(), cfg.compute_dtype)  # BatchNorm model
    tx = make_optimizer(cfg, 5)
    state = create_train_state(bf, jax.random.PRNGKey(0), tx, (1, 8, 8, 1))
    # Activations are bf16, logits (and so the loss) float32.
    logits, inter = bf.apply(state.variables, jnp.zeros((2, 8, 8, 1)), capture_intermediates=True,
                             mutable=["intermediates"])
    assert logits.dtype == jnp.float32
    assert inter["intermediates"]["conv"]["__call__"][0].dtype == jnp.bfloat16
    step = make_train_step(bf.apply, tx, augment=False)
    batch = batch_of(images, labels)
    losses = []
    for _ in range(8):
        state, m = step(state, batch, jax.random.PRNGKey(1))
        assert m["loss"].dtype == jnp.float32
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses
    for tree in (state.params, state.batch_stats, state.opt_state):
        leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert leaves and all(x.dtype == jnp.float32 for x in leaves)


@pytest.mark.slow
def test_bfloat16_fit_returns_float32_variables_and_signature():
    from rws_jax import extract
    from rws_jax.models.vgg import VGG

    images, labels = synthetic(160, seed=2)
    train, val = (images[:128], labels[:128]), (images[128:], labels[128:])
    model = VGG(num_classes=3, cfg=(8, "M", 16, 16), init_scheme="he_fan_in")
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="constant", compute_dtype="bfloat16",
                      eval_batch_size=32, seed=3, augment=False)
    theta_init = create_train_state(model, jax.random.PRNGKey(5), make_optimizer(cfg), (1, 8, 8, 1)).variables
    std, hist = fit(model, train, val, cfg, init_variables=theta_init, progress=False)
    rob, _ = fit(model, train, val, cfg.replace(seed=4), init_variables=theta_init, progress=False,
                 corrupt_fn=lambda k, im: im // 2)
    assert hist["train_loss"][1] < hist["train_loss"][0], hist["train_loss"]
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(std))
    sig = extract(theta_init, std, rob, 2)
    assert sig.deltas and all(d.dtype == jnp.float32 for d in sig.deltas.values())


def test_prefetch_does_not_change_results():
    train, val = _splits()
    cfg = FIT_CFG.replace(epochs=1)
    a, ha = fit(Tiny(), train, val, cfg.replace(prefetch=0), progress=False)
    b, hb = fit(Tiny(), train, val, cfg, progress=False)  # default: double buffering
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    assert {**ha, "epoch_seconds": None} == {**hb, "epoch_seconds": None}  # wall times differ


def test_prefetch_to_device_keeps_order_and_puts_ahead():
    host = [{"x": np.full((2,), i, np.float32)} for i in range(5)]
    seen = []

    def gen():
        for i, b in enumerate(host):
            seen.append(i)
            yield b

    out = []
    for b in prefetch_to_device(gen(), None, 2):
        assert isinstance(b["x"], jax.Array)
        out.append(int(b["x"][0]))
        assert max(seen) == min(out[-1] + 1, 4)  # the next batch is already on device
    assert out == list(range(5))
    assert [int(b["x"][0]) for b in prefetch_to_device(iter(host), None, 0)] == list(range(5))
