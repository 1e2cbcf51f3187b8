"""``fit``: the epoch loop with best-on-validation selection, orbax checkpoints and resume."""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from .augment import build_corrupt_fn
from .config import TrainConfig, make_optimizer, make_schedule, steps_per_epoch
from .parallel import check_batch_size, prefetch_to_device, replicate, resolve_mesh
from .state import TrainState, create_train_state, variables_of, with_compute_dtype
from .steps import evaluate, make_eval_step, make_train_step, split_arrays

_DEFAULT = object()
STATE_DIR = "state"
BEST_DIR = "best"


# ----------------------------------------------------------------------------- randomness
def run_keys(seed: int) -> Tuple[jax.Array, jax.Array]:
    """(init_key, step_key) of a run: both depend only on the seed."""
    base = jax.random.PRNGKey(seed)
    return jax.random.fold_in(base, 0), jax.random.fold_in(base, 1)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Training order of epoch ``epoch``: depends only on (seed, epoch)."""
    return np.random.default_rng([abs(int(seed)), int(seed < 0), int(epoch)]).permutation(n)


# ----------------------------------------------------------------------------- checkpoints
def _abstract(tree):
    def f(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
    return jax.tree_util.tree_map(f, tree)


def _flat(tree) -> dict:
    leaves = jax.tree_util.tree_leaves(tree)
    return {f"{i:05d}": x for i, x in enumerate(leaves)}


def _unflat(flat: dict, like):
    treedef = jax.tree_util.tree_structure(like)
    return jax.tree_util.tree_unflatten(treedef, [flat[f"{i:05d}"] for i in range(len(flat))])


class _Checkpoints:
    """Two orbax CheckpointManagers under ``workdir``: ``state/`` (latest train states, for
    resume; items ``state`` (flattened leaves) + ``meta`` (json)) and ``best/`` (the
    best-validation variables; items ``variables`` + ``meta``). Steps are epoch counts."""

    def __init__(self, workdir: str, keep: int = 1):
        self.ocp = ocp
        workdir = os.path.abspath(os.fspath(workdir))
        opts = dict(create=True, enable_async_checkpointing=False)
        self.state_mgr = ocp.CheckpointManager(
            os.path.join(workdir, STATE_DIR), item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), **opts))
        self.best_mgr = ocp.CheckpointManager(
            os.path.join(workdir, BEST_DIR), item_names=("variables", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

    def latest_epoch(self) -> Optional[int]:
        return self.state_mgr.latest_step()

    def restore_meta(self, epoch: int) -> dict:
        ocp = self.ocp
        return self.state_mgr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_state(self, epoch: int, state: TrainState) -> TrainState:
        ocp = self.ocp
        items = state.checkpoint_items()
        out = self.state_mgr.restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(_flat(items)))))
        return state.replace(**_unflat(out["state"], items))

    def restore_best(self, like_variables: dict) -> Tuple[dict, dict]:
        ocp = self.ocp
        step = self.best_mgr.latest_step()
        if step is None:
            raise FileNotFoundError("no best checkpoint")
        out = self.best_mgr.restore(step, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(_abstract(like_variables)),
            meta=ocp.args.JsonRestore()))
        return dict(out["variables"]), out["meta"]

    def save(self, epoch: int, state: TrainState, meta: dict) -> None:
        ocp = self.ocp
        self.state_mgr.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_flat(state.checkpoint_items())), meta=ocp.args.JsonSave(meta)),
            force=True)
        self.state_mgr.wait_until_finished()

    def save_best(self, epoch: int, variables: dict, meta: dict) -> None:
        ocp = self.ocp
        self.best_mgr.save(epoch, args=ocp.args.Composite(
            variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(meta)), force=True)
        self.best_mgr.wait_until_finished()

    def close(self):
        self.state_mgr.close()
        self.best_mgr.close()


def load_best_variables(workdir: str, like_variables: dict) -> dict:
    """Best-validation variables stored by :func:`fit` in ``workdir`` (``like_variables``
    gives structure, dtypes and shardings, e.g. ``model.init(...)``)."""
    ck = _Checkpoints(workdir)
    try:
        return ck.restore_best(like_variables)[0]
    finally:
        ck.close()


# ----------------------------------------------------------------------------- fit
def _new_history() -> Dict[str, Any]:
    return {"epoch": [], "lr": [], "train_loss": [], "train_accuracy": [], "val_loss": [],
            "val_accuracy": [], "epoch_seconds": [], "best_epoch": None, "best_val_accuracy": None,
            "finished": False}


def _copy(tree):
    # The train step donates the state: keep an independent copy of what we return.
    return jax.tree_util.tree_map(jnp.copy, tree)


def _host_batch(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> dict:
    """``{'image': uint8 [B, H, W, C], 'label': int32 [B]}`` of the examples ``idx``."""
    return {"image": images[idx], "label": labels[idx]}


def _config_mismatch(saved: dict, config: TrainConfig) -> list:
    cur = _jsonable(config.to_dict())
    # compute_dtype: the stored state is float32 whatever the compute dtype, so a run may be
    # resumed in another one (e.g. a bfloat16 TPU run on a float32 CPU) without a warning.
    ignore = {"eval_every", "eval_batch_size", "keep_checkpoints", "compute_dtype", "prefetch"}
    return sorted(k for k in cur if k not in ignore and saved.get(k, cur[k]) != cur[k])


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def fit(model, split_train, split_val, config: TrainConfig, *, init_variables: Optional[dict] = None,
        workdir: Optional[str] = None, progress: bool = True, max_epochs: Optional[int] = None,
        mesh=None, corrupt_fn: Any = _DEFAULT, input_shape=None) -> Tuple[dict, dict]:
    """Train ``model`` (Flax Linen, ``apply(vars, x, train=..., mutable=[...])``) on ``split_train``.

    Args:
      split_train / split_val: ``ArraySplit``-like (``.images`` uint8 NHWC, ``.labels``
        int32), a dict or an ``(images, labels)`` tuple. ``split_val`` may be None (then
        the last epoch's weights are "best"). The test split is never touched.
      config: :class:`TrainConfig`. ``config.compute_dtype='bfloat16'`` trains ``model``
        cloned with ``dtype=bfloat16`` (see :func:`with_compute_dtype`); the returned
        variables and the stored states are float32 either way.
      init_variables: start from these Flax variables (fine-tuning from theta_init: exactly
        these weights, fresh optimizer); default: ``model.init`` with the seed's init key.
      workdir: orbax checkpoints (latest state + best variables). Calling ``fit`` again
        with the same workdir resumes after the last saved epoch; a finished run returns
        the stored result at once.
      max_epochs: stop (resumably) after this many epochs in total (< ``config.epochs``).
      mesh: data-parallel mesh (axis 'data'); default: all devices when there are several
        (e.g. the 8 cores of a Colab TPU). Batches are put on the mesh ``config.prefetch``
        steps ahead (double buffering by default); the results do not depend on it.
      corrupt_fn: override the training corruption callable (default: built from
        ``config.corruption`` via ``rws_jax.corruptions``); None disables corruption.
      input_shape: init shape, default ``(1,) + images.shape[1:]``.

    Returns:
      ``(best_variables, history)``: the variables with the best validation accuracy
      (ties: the earlier epoch) and a dict of per-epoch lists (``epoch``, ``lr``,
      ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``; val entries are
      None for epochs without validation) plus ``best_epoch``, ``best_val_accuracy``,
      ``finished``.
    """
    model = with_compute_dtype(model, config.compute_dtype)
    images, labels = split_arrays(split_train)
    images = np.asarray(images)
    labels = np.asarray(labels, np.int32)
    n = int(len(labels))
    bs = int(config.batch_size)
    spe = steps_per_epoch(n, bs)
    mesh = resolve_mesh(mesh)
    check_batch_size(bs, mesh, "batch_size")
    eval_bs = int(config.eval_batch_size)
    if mesh is not None and eval_bs % mesh.devices.size:
        eval_bs += mesh.devices.size - eval_bs % mesh.devices.size

    tx = make_optimizer(config, spe)
    schedule = make_schedule(config, spe)
    init_key, step_key = run_keys(config.seed)
    if input_shape is None:
        input_shape = (1,) + tuple(images.shape[1:])
    state = create_train_state(model, init_key if init_variables is None else init_variables, tx, input_shape)
    # Every leaf committed alike (replicated over the mesh, or on the default device): the
    # first step then sees the input shardings of all later ones, so the step compiles once
    # even when init_variables were restored from a checkpoint (committed) and the fresh
    # optimizer state was not.
    state = replicate(state, mesh) if mesh is not None else jax.device_put(state, jax.devices()[0])

    if corrupt_fn is _DEFAULT:
        corrupt_fn = build_corrupt_fn(config.corruption, config.severity, config.corruption_preset)
    train_step = make_train_step(model.apply, tx, corrupt_fn, config.augment,
                                 crop_padding=config.crop_padding, flip=config.flip,
                                 mean=config.mean, std=config.std)
    eval_step = make_eval_step(model.apply, corrupt_fn if config.val_corrupted else None,
                               mean=config.mean, std=config.std)
    # Validation keys are fixed across epochs (seed-derived) so epochs are compared on the
    # same corrupted validation images.
    val_seed = int(config.seed) + 10_000

    total_epochs = int(config.epochs)
    stop = total_epochs if max_epochs is None else max(0, min(int(max_epochs), total_epochs))

    history = _new_history()
    best_variables = None
    best_acc = None
    start_epoch = 0
    ck = _Checkpoints(workdir, config.keep_checkpoints) if workdir is not None else None
    try:
        if ck is not None:
            # A kill between save_best(k) and save(k) leaves a best checkpoint newer than
            # the last state. Its epoch is re-run (deterministically) and saves it again,
            # so drop it now; keeping it would make that save fail (step exists).
            last_state = ck.latest_epoch() or 0
            for step in list(ck.best_mgr.all_steps()):
                if step > last_state:
                    ck.best_mgr.delete(step)
        last_epoch = ck.latest_epoch() if ck is not None else None
        if ck is not None and last_epoch is not None:
            last = int(last_epoch)
            meta = ck.restore_meta(last)
            diff = _config_mismatch(meta.get("config", {}), config)
            if diff:
                warnings.warn(f"fit: resuming {workdir} whose stored config differs in {diff}")
            history = meta["history"]
            like = state.variables
            if ck.best_mgr.latest_step() is not None:
                best_variables, _ = ck.restore_best(like)
                best_acc = history.get("best_val_accuracy")
            if meta.get("finished"):
                if best_variables is None:
                    best_variables = ck.restore_state(last, state).variables
                return best_variables, history
            state = ck.restore_state(last, state)
            start_epoch = last

        disable = (not progress) or not sys.stderr.isatty()
        bar = tqdm(total=(stop - start_epoch) * spe, disable=disable, desc="fit", unit="step",
                   dynamic_ncols=True) if stop > start_epoch else None
        for epoch in range(start_epoch, stop):
            t_epoch = time.perf_counter()
            perm = epoch_permutation(config.seed, epoch, n)
            sums = None
            host_batches = (_host_batch(images, labels, perm[i * bs:(i + 1) * bs]) for i in range(spe))
            for i, batch in enumerate(prefetch_to_device(host_batches, mesh, config.prefetch)):
                state, metrics = train_step(state, batch, step_key)
                sums = metrics if sums is None else jax.tree_util.tree_map(jnp.add, sums, metrics)
                if bar is not None:
                    bar.update(1)
                    if not disable and (i % 20 == 0 or i == spe - 1):
                        bar.set_postfix(epoch=epoch + 1, loss=f"{float(metrics['loss']):.3f}")
            sums = jax.device_get(sums)  # waits for the epoch's last step
            history.setdefault("epoch_seconds", []).append(round(time.perf_counter() - t_epoch, 3))
            lr = float(schedule(epoch * spe))
            history["epoch"].append(epoch + 1)
            history["lr"].append(lr)
            history["train_loss"].append(float(sums["loss"]) / spe)
            history["train_accuracy"].append(float(sums["accuracy"]) / spe)

            is_last = epoch + 1 == total_epochs
            do_eval = split_val is not None and ((epoch + 1) % max(config.eval_every, 1) == 0 or is_last)
            improved = False
            if do_eval:
                val = evaluate(state.variables, model.apply, split_val, eval_bs, seed=val_seed,
                               mesh=mesh, eval_step=eval_step)
                history["val_loss"].append(val["loss"])
                history["val_accuracy"].append(val["accuracy"])
                if best_acc is None or val["accuracy"] > best_acc:
                    best_acc = val["accuracy"]
                    improved = True
                if bar is not None and not disable:
                    bar.write(f"epoch {epoch + 1}/{total_epochs}: train_loss "
                              f"{history['train_loss'][-1]:.4f} val_acc {val['accuracy']:.4f}")
            else:
                history["val_loss"].append(None)
                history["val_accuracy"].append(None)
                if split_val is None:
                    improved = True  # no validation: the latest weights are the result
            if improved:
                best_variables = _copy(state.variables)
                history["best_epoch"] = epoch + 1
                history["best_val_accuracy"] = best_acc
            history["finished"] = is_last
            if ck is not None:
                meta = {"epoch": epoch + 1, "finished": is_last, "history": history,
                        "config": _jsonable(config.to_dict())}
                if improved and best_variables is not None:  # improved: just copied
                    ck.save_best(epoch + 1, best_variables,
                                 {"epoch": epoch + 1, "val_accuracy": best_acc})
                ck.save(epoch + 1, state, meta)
        if bar is not None:
            bar.close()
        if best_variables is None:  # e.g. max_epochs=0 or only epochs without validation
            best_variables = _copy(state.variables)
        return best_variables, history
    finally:
        if ck is not None:
            ck.close()
