"""Data-parallel training on 8 fake CPU devices agrees with a 1-device run; ``fit`` uses all
devices by default, prefetches sharded batches without changing results, and trains in bf16.

The check runs in a subprocess because the device count is fixed when JAX initialises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r"""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from rws_jax.training import (TrainConfig, create_train_state, evaluate, fit, make_data_mesh,
                                  make_optimizer, make_train_step, replicate, shard_batch)

    assert jax.device_count() == 8, jax.devices()

    from tests._tiny_bn import Tiny, separable_data

    n = 128
    images, labels = separable_data(n, seed=0)

    def corrupt(key, im):  # random per-image noise: checks RNG agrees across shardings
        noise = jax.random.randint(key, im.shape, 0, 30)
        return jnp.clip(im.astype(jnp.int32) + noise, 0, 255).astype(im.dtype)

    def run(mesh, steps=6, bs=32):
        model = Tiny()
        tx = make_optimizer(TrainConfig(lr=0.05, schedule="constant"), 1)
        state = replicate(create_train_state(model, jax.random.PRNGKey(0), tx, (1, 8, 8, 1)), mesh)
        step = make_train_step(model.apply, tx, corrupt_fn=corrupt, augment=True)
        key = jax.random.PRNGKey(1)
        losses = []
        for i in range(steps):
            idx = np.arange(i * bs, (i + 1) * bs) % n
            batch = shard_batch({"image": images[idx], "label": labels[idx]}, mesh)
            state, m = step(state, batch, key)
            losses.append(float(m["loss"]))
        leaf = jax.tree_util.tree_leaves(state.params)[0]
        return state, np.array(losses), leaf.sharding

    mesh8 = make_data_mesh()
    mesh1 = make_data_mesh(jax.devices()[:1])
    s8, l8, sh8 = run(mesh8)
    s1, l1, _ = run(mesh1)
    assert sh8.is_fully_replicated, sh8
    assert len(sh8.device_set) == 8
    np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-6)
    flat8 = jax.tree_util.tree_leaves(jax.device_get(s8.variables))
    flat1 = jax.tree_util.tree_leaves(jax.device_get(s1.variables))
    for a, b in zip(flat8, flat1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # evaluate with a sharded, padded last batch.
    e8 = evaluate(s8.variables, Tiny().apply, (images[:100], labels[:100]), 48, mesh=mesh8)
    e1 = evaluate(s1.variables, Tiny().apply, (images[:100], labels[:100]), 48, mesh=mesh1)
    assert e8["count"] == 100
    np.testing.assert_allclose(e8["accuracy"], e1["accuracy"], atol=1e-6)
    np.testing.assert_allclose(e8["loss"], e1["loss"], rtol=1e-5)

    # fit picks the 8-device mesh by default; a batch size that does not split is refused.
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, milestones=(), eval_batch_size=20)
    best, hist = fit(Tiny(), (images[:96], labels[:96]), (images[96:], labels[96:]), cfg, progress=False)
    assert np.isfinite(hist["train_loss"][0])
    assert jax.tree_util.tree_leaves(best)[0].sharding.is_fully_replicated
    from rws_jax.training import prefetch_to_device, resolve_mesh
    assert resolve_mesh().devices.size == 8  # the default mesh: all local devices
    # Prefetched batches are already sharded over the 8 devices; prefetch never changes results.
    host = [{"image": images[i * 32:(i + 1) * 32], "label": labels[i * 32:(i + 1) * 32]} for i in range(3)]
    for b, h in zip(prefetch_to_device(iter(host), mesh8, 2), host):
        assert len(b["image"].sharding.device_set) == 8 and not b["image"].sharding.is_fully_replicated
        np.testing.assert_array_equal(np.asarray(b["image"]), h["image"])
    best0, hist0 = fit(Tiny(), (images[:96], labels[:96]), (images[96:], labels[96:]), cfg.replace(prefetch=0),
                       progress=False)
    assert {**hist0, 'epoch_seconds': None} == {**hist, 'epoch_seconds': None}  # wall times differ
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(best0)), jax.tree_util.tree_leaves(jax.device_get(best))):
        np.testing.assert_array_equal(a, b)
    # bf16 compute, data parallel: float32 weights come back, replicated.
    from rws_jax.models.resnet import ResNetCifar
    bf_best, bf_hist = fit(ResNetCifar(depth=8, num_classes=3, width=0.25), (images[:96], labels[:96]), None,
                           cfg.replace(compute_dtype="bfloat16"), progress=False)
    assert np.isfinite(bf_hist["train_loss"][0])
    assert all(x.dtype == jnp.float32 and x.sharding.is_fully_replicated for x in jax.tree_util.tree_leaves(bf_best))
    try:
        fit(Tiny(), (images, labels), None, cfg.replace(batch_size=12), progress=False)
    except ValueError as e:
        assert "divisible" in str(e), e
    else:
        raise AssertionError("batch_size=12 on 8 devices should fail")
    print("MULTIDEVICE_OK", l8.tolist())
""")


@pytest.mark.slow
def test_data_parallel_8_fake_devices_matches_1_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-5000:]
    assert "MULTIDEVICE_OK" in proc.stdout
