"""Jitted train / eval steps and a full-split evaluation.

Batches are dicts ``{'image': uint8 NHWC, 'label': int32 [N]}`` (eval batches may also
carry ``'mask'``: 1 for real examples, 0 for padding). A ``(images, labels)`` tuple is
accepted too.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .augment import CorruptFn, prepare_inputs
from .parallel import check_batch_size, shard_batch
from .state import TrainState

Batch = Dict[str, Any]


def _unpack(batch) -> Tuple[jax.Array, jax.Array, Optional[jax.Array]]:
    if isinstance(batch, (tuple, list)):
        images, labels = batch[0], batch[1]
        mask = batch[2] if len(batch) > 2 else None
        return images, labels, mask
    return batch["image"], batch["label"], batch.get("mask")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels (float32)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _variables(params, batch_stats) -> dict:
    v = {"params": params}
    if jax.tree_util.tree_leaves(batch_stats):
        v["batch_stats"] = batch_stats
    return v


def make_train_step(apply_fn: Optional[Callable] = None,
                    tx: Optional[optax.GradientTransformation] = None,
                    corrupt_fn: Optional[CorruptFn] = None, augment: bool = True, *,
                    crop_padding: int = 4, flip: bool = True,
                    mean: Optional[Tuple[float, ...]] = None,
                    std: Optional[Tuple[float, ...]] = None,
                    donate: bool = True) -> Callable:
    """Build ``train_step(state, batch, key) -> (state, metrics)``, jitted, donating ``state``.

    ``key`` is the run's base step key; the step uses ``fold_in(key, state.step)`` so the
    randomness of step *t* depends only on (key, t). Inside the step the uint8 batch is
    corrupted (``corrupt_fn(key, images)``, if given), augmented (random crop + flip, if
    ``augment``), normalised to float32, and the model is applied with ``train=True`` and
    ``mutable=['batch_stats']``. ``apply_fn`` / ``tx`` default to the state's own.
    Metrics: mean ``loss`` and ``accuracy`` over the batch.
    """

    def train_step(state: TrainState, batch, key: jax.Array):
        fn = apply_fn if apply_fn is not None else state.apply_fn
        images, labels, _ = _unpack(batch)
        k = jax.random.fold_in(key, state.step)
        k_in, k_drop = jax.random.split(k)
        x = prepare_inputs(k_in, images, corrupt_fn=corrupt_fn, augment=augment,
                           crop_padding=crop_padding, flip=flip, mean=mean, std=std)
        has_bs = bool(jax.tree_util.tree_leaves(state.batch_stats))

        def loss_fn(params):
            logits, updates = fn(_variables(params, state.batch_stats), x, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": k_drop})
            loss = jnp.mean(cross_entropy(logits, labels))
            return loss, (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_bs = updates["batch_stats"] if (has_bs and "batch_stats" in updates) else state.batch_stats
        if tx is not None:
            upd, opt_state = tx.update(grads, state.opt_state, state.params)
            new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, upd),
                                      batch_stats=new_bs, opt_state=opt_state)
        else:
            new_state = state.apply_gradients(grads, new_bs)
        acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        return new_state, {"loss": loss, "accuracy": acc}

    return jax.jit(train_step, donate_argnums=(0,) if donate else ())


def make_eval_step(apply_fn: Callable, corrupt_fn: Optional[CorruptFn] = None, *,
                   mean: Optional[Tuple[float, ...]] = None,
                   std: Optional[Tuple[float, ...]] = None) -> Callable:
    """Build ``eval_step(variables, batch, key) -> metrics``, jitted.

    Metrics are sums so that batches of any size (and padded batches, via ``batch['mask']``)
    combine exactly: ``loss_sum``, ``correct`` and ``count``. ``key`` feeds ``corrupt_fn``
    (if given); no augmentation; the model runs with ``train=False``.
    """

    def eval_step(variables, batch, key: jax.Array):
        images, labels, mask = _unpack(batch)
        x = prepare_inputs(key, images, corrupt_fn=corrupt_fn, augment=False, mean=mean, std=std)
        logits = apply_fn(variables, x, train=False)
        if isinstance(logits, tuple):  # tolerate models that also return mutated collections
            logits = logits[0]
        m = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
        loss = cross_entropy(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return {"loss_sum": jnp.sum(loss * m), "correct": jnp.sum(correct * m), "count": jnp.sum(m)}

    return jax.jit(eval_step)


def split_arrays(split) -> Tuple[np.ndarray, np.ndarray]:
    """(images, labels) from an ``ArraySplit``-like object, a dict or a tuple."""
    if isinstance(split, (tuple, list)):
        return split[0], split[1]
    if isinstance(split, dict):
        return split["image"] if "image" in split else split["images"], \
            split["label"] if "label" in split else split["labels"]
    return split.images, split.labels


def evaluate(variables, apply_fn: Callable, split, batch_size: int = 500,
             corrupt_fn: Optional[CorruptFn] = None, seed: int = 0, *, mesh=None,
             eval_step: Optional[Callable] = None, mean=None, std=None) -> Dict[str, float]:
    """Accuracy and mean loss over *every* example of ``split``.

    The last batch is padded to ``batch_size`` (one compiled shape) and masked. Batch *i*
    is corrupted with key ``fold_in(PRNGKey(seed), i)``, so a given (seed, batch_size)
    always sees the same corrupted images. Pass a prebuilt ``eval_step`` (from
    :func:`make_eval_step`) to avoid recompiling across calls; ``mean``/``std``/``corrupt_fn``
    are then ignored in favour of the prebuilt step's.
    """
    images, labels = split_arrays(split)
    n = int(len(labels))
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    check_batch_size(batch_size, mesh, "eval batch_size")
    if eval_step is None:
        eval_step = make_eval_step(apply_fn, corrupt_fn, mean=mean, std=std)
    base = jax.random.PRNGKey(seed)
    totals = None
    for i, start in enumerate(range(0, n, batch_size)):
        img = np.asarray(images[start:start + batch_size])
        lab = np.asarray(labels[start:start + batch_size], np.int32)
        k = img.shape[0]
        mask = np.ones((batch_size,), np.float32)
        if k < batch_size:
            pad = batch_size - k
            img = np.concatenate([img, np.zeros((pad,) + img.shape[1:], img.dtype)])
            lab = np.concatenate([lab, np.zeros((pad,), np.int32)])
            mask[k:] = 0.0
        batch = shard_batch({"image": img, "label": lab, "mask": mask}, mesh)
        m = eval_step(variables, batch, jax.random.fold_in(base, i))
        totals = m if totals is None else jax.tree_util.tree_map(jnp.add, totals, m)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"accuracy": float(totals["correct"]) / count, "loss": float(totals["loss_sum"]) / count,
            "count": int(round(count))}
