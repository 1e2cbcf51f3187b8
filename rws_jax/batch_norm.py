"""BatchNorm handling when patching: the reference code's scheme, and the pure patch.

A weight patch ``θ + Σ_k α_k · RWS_k`` says nothing about BatchNorm statistics. For
ResNets the reference code (``model_patching.py``, lines 35–36 and 131–146, with
``bn_update`` in ``tools.py``) does something that is not a weight patch:

1. every tensor whose name contains ``bn`` or ``downsample`` — in *all* layers: BN γ,
   β, running mean and variance, and the shortcut convolutions — is replaced by its
   mean over the N robust models θ_rob,c whose signatures are applied (no projection,
   no α);
2. the conv weights of the first k units get ``Σ_k w_k · RWS_k`` as usual;
3. the running statistics are re-estimated on corrupted *training* data (one pass over
   each applied corruption's loader, every batch weighted by its size: a cumulative
   average of the per-batch mean and variance), and mixed with the averaged statistics
   of step 1 as ``(1 − α)·old + α·new`` when α < 1 (``new`` when α ≥ 1).

This module gives each step as a pure function and :func:`patch_batch_norm` with three
modes (``BN_MODES``):

- ``'reference'``: steps 1–3 above;
- ``'patch'``: the pure weight patch, exactly :func:`rws_jax.patch` (BN γ/β are patched
  when the signature's selection holds them; statistics when it holds ``batch_stats``);
- ``'none'``: the signature's deltas on BN/shortcut leaves are dropped, so every
  BN/shortcut tensor and statistic stays as in the patched model.

Our model zoo names BN layers ``bn``/``bn_0``/``proj_bn`` and shortcut convs
``proj_conv``; :data:`REFERENCE_BN_PATTERN` matches those and the reference's own names
(``bn1``, ``downsample``), so the scheme also applies to imported PyTorch checkpoints.

Difference from the reference, by design: Flax BatchNorm keeps the *biased* batch
variance in its running statistics, PyTorch the unbiased one (a factor n/(n−1), with n
= batch × height × width values per channel: below 0.01 % for a batch of 128 32×32
images). We re-estimate with the convention the model was trained with (Flax's).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax import tree_paths
from rws_jax.algebra import patch
from rws_jax.errors import IncompatibleSignatureError, NonFiniteError, RWSError
from rws_jax.signature import SignatureLike, signature_list
from rws_jax.types import Alphas, PyTree, Variables

#: Substrings of a leaf path that the reference replaces by the robust models' mean
#: (a regular expression): the reference tests ``'bn' in key or 'downsample' in key``;
#: ``proj_`` names our shortcut convs/BNs (``proj_conv``, ``proj_bn``).
REFERENCE_BN_PATTERN = r"bn|downsample|proj_"
#: The values of ``bn=`` in :func:`patch_batch_norm`, in order the reference's scheme, the
#: pure weight patch, and BatchNorm leaves left as they are.
BN_MODES = ("reference", "patch", "none")
STATS_COLLECTION = "batch_stats"


def batch_norm_paths(variables: Variables, pattern: str = REFERENCE_BN_PATTERN) -> tuple[str, ...]:
    """Floating leaf paths (any collection) that the reference's BN scheme replaces.

    With the default pattern: every BN scale/bias, every running mean/variance and every
    shortcut conv, e.g. ``'params/block_1_0/proj_conv/kernel'``,
    ``'batch_stats/stem/bn/mean'``.
    """
    rx = re.compile(pattern)
    flat, _ = tree_paths.flatten(variables)
    return tuple(p for p, x in flat.items()
                 if rx.search(p) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating))


@jax.jit
def _mean_leaves(stacks: dict) -> dict:
    return {p: jnp.mean(jnp.stack([x.astype(jnp.float32) for x in xs]), axis=0).astype(xs[0].dtype)
            for p, xs in stacks.items()}


def average_leaves(models: Sequence[Variables], paths: Sequence[str]) -> dict[str, jax.Array]:
    """``{path: mean over models}`` for each path (computed in float32, cast back).

    Every model must hold each path with the same shape and dtype as the first one.
    """
    if not models:
        raise RWSError("need at least one model to average")
    flats = [tree_paths.flatten(m)[0] for m in models]
    for i, f in enumerate(flats):
        for p in paths:
            if p not in f:
                raise IncompatibleSignatureError(f"model {i} has no leaf {p!r} to average")
            if tree_paths.leaf_spec(f[p]) != tree_paths.leaf_spec(flats[0][p]):
                raise IncompatibleSignatureError(
                    f"model {i} leaf {p!r} is {tree_paths.leaf_spec(f[p])}, model 0 has "
                    f"{tree_paths.leaf_spec(flats[0][p])} (shape, dtype)")
    return dict(_mean_leaves({p: tuple(f[p] for f in flats) for p in paths}))


def make_batch_stats_step(apply_fn: Callable, preprocess: Callable | None = None) -> Callable:
    """``step(variables, images) -> batch_stats``: one jitted ``train=True`` forward pass.

    ``apply_fn`` is a Linen ``model.apply`` taking ``(variables, x, train=True,
    mutable=['batch_stats'])``; ``preprocess(images) -> x`` (traced) maps a raw batch
    (e.g. uint8 NHWC) to model input. The returned statistics are Flax's running update
    ``m · old + (1 − m) · batch`` for the ``batch_stats`` given in ``variables``.
    """

    def step(variables: Variables, images: jax.Array) -> PyTree:
        x = images if preprocess is None else preprocess(images)
        _, updates = apply_fn(variables, x, train=True, mutable=[STATS_COLLECTION])
        return updates[STATS_COLLECTION]

    return jax.jit(step)


def _with_stats(variables: dict, stats: PyTree) -> dict:
    return {**variables, STATS_COLLECTION: stats}


def batch_statistics(apply_fn: Callable, variables: dict, batches: Iterable, *,
                     preprocess: Callable | None = None, step: Callable | None = None) -> PyTree:
    """BatchNorm statistics of ``variables`` re-estimated on ``batches``, as ``bn_update``.

    Like the reference (cumulative moving average with momentum ``b/(n+b)``): each BN
    layer's running mean/variance becomes the average, over all batches weighted by
    their size, of the per-batch mean/variance computed by a ``train=True`` forward pass
    of the model as it is (its weights, its batch statistics). Works for any Flax
    ``BatchNorm`` momentum: the momentum is read off one extra pass on the first batch.

    Args:
      apply_fn: ``model.apply``.
      variables: ``{'params': ..., 'batch_stats': ...}``.
      batches: iterable of image batches ``[B, H, W, C]`` (raw; see ``preprocess``), or
        of ``(images, labels)`` / ``{'image': ...}`` batches (labels are ignored).
      preprocess: ``images -> model input`` (e.g. normalisation), traced inside jit.
      step: a prebuilt :func:`make_batch_stats_step` (avoids recompiling).

    Returns:
      A tree shaped like ``variables['batch_stats']`` (float32 leaves cast to the
      originals' dtypes).
    """
    if STATS_COLLECTION not in variables:
        raise RWSError("these variables have no 'batch_stats' collection: nothing to re-estimate")
    step = step or make_batch_stats_step(apply_fn, preprocess)
    old = variables[STATS_COLLECTION]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, old)
    total, n, keep = None, 0, None
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else (
            batch["image"] if isinstance(batch, dict) else batch)
        b = int(np.shape(images)[0])
        if b == 0:
            continue
        part = step(_with_stats(variables, zeros), images)  # (1 - m) * batch statistic
        if keep is None:  # m = (m·1 + (1−m)·s) − (1−m)·s
            ones = jax.tree_util.tree_map(jnp.ones_like, old)
            keep = _difference(step(_with_stats(variables, ones), images), part)
            total = _weighted(part, jnp.float32(b))
        else:
            total = _accumulate(total, part, jnp.float32(b))
        n += b
    if total is None:
        raise RWSError("no batches to re-estimate the BatchNorm statistics on")
    stats, stuck = _finish(total, keep, old, jnp.float32(n))
    if bool(stuck):
        raise RWSError("a BatchNorm layer has momentum 1 (its statistics never update): cannot re-estimate")
    return stats


# The running sums of batch_statistics, one compiled call per batch (not one per BN leaf).
@jax.jit
def _difference(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.subtract, a, b)


@jax.jit
def _weighted(part: PyTree, b: jax.Array) -> PyTree:
    return jax.tree_util.tree_map(lambda s: s.astype(jnp.float32) * b, part)


@jax.jit
def _accumulate(total: PyTree, part: PyTree, b: jax.Array) -> PyTree:
    return jax.tree_util.tree_map(lambda t, s: t + s.astype(jnp.float32) * b, total, part)


@jax.jit
def _finish(total: PyTree, keep: PyTree, old: PyTree, n: jax.Array) -> tuple[PyTree, jax.Array]:
    """(statistics = total / n / (1 − m), any layer with momentum m = 1)."""
    def one(t: jax.Array, k: jax.Array, o: jax.Array) -> jax.Array:
        one_minus = 1.0 - k.astype(jnp.float32)
        return (t / n / jnp.where(one_minus > 0, one_minus, 1.0)).astype(o.dtype)

    stuck = jnp.any(jnp.stack([jnp.any(1.0 - k <= 1e-6) for k in jax.tree_util.tree_leaves(keep)]))
    return jax.tree_util.tree_map(one, total, keep, old), stuck


@jax.jit
def _mix(old: PyTree, new: PyTree, mix: jax.Array) -> PyTree:
    return jax.tree_util.tree_map(lambda o, s: ((1.0 - mix) * o.astype(jnp.float32)
                                                + mix * s.astype(jnp.float32)).astype(o.dtype), old, new)


def recalibrate_batch_stats(apply_fn: Callable, variables: dict, batches: Iterable, *, mix: float = 1.0,
                            preprocess: Callable | None = None, step: Callable | None = None) -> dict:
    """``variables`` with BatchNorm statistics re-estimated on ``batches`` (reference ``bn_update``).

    ``batch_stats ← (1 − mix) · old + mix · new``, with ``new`` from
    :func:`batch_statistics` (``mix=1``: the new statistics alone, as the reference does
    for α ≥ 1; it passes ``mix=α`` when α < 1). Parameters are untouched; the input is
    not modified.

    Args:
      apply_fn: ``model.apply``; variables: ``{'params', 'batch_stats'}``;
      batches: iterable of image batches ``[B, H, W, C]``; mix: in [0, 1];
      preprocess / step: see :func:`batch_statistics`.
    """
    mix = float(mix)
    if not np.isfinite(mix) or not 0.0 <= mix <= 1.0:
        raise RWSError(f"mix must be in [0, 1], got {mix}")
    new = batch_statistics(apply_fn, variables, batches, preprocess=preprocess, step=step)
    old = variables[STATS_COLLECTION]
    stats = new if mix == 1.0 else _mix(old, new, jnp.float32(mix))
    return _with_stats(variables, stats)


def reference_mix(alphas: Alphas) -> float:
    """The reference's mixing weight: ``min(α, 1)`` for a scalar α (clipped at 0); 1 for
    per-signature weights (the reference then runs with ``--alpha 0`` and keeps the
    averaged statistics, ``mix = 0``; pass ``mix=0.0`` to reproduce that)."""
    a = np.asarray(alphas, np.float64)
    if a.ndim == 0:
        return float(min(max(float(a), 0.0), 1.0))
    return 1.0


def patch_batch_norm(
    variables: dict,
    signatures: SignatureLike,
    alphas: Alphas = 1.0,
    *,
    bn: str = "reference",
    robust: Sequence[Variables] | None = None,
    apply_fn: Callable | None = None,
    batches: Iterable | None = None,
    preprocess: Callable | None = None,
    mix: float | None = None,
    mode: str = "linear",
    pattern: str = REFERENCE_BN_PATTERN,
    check_base: bool = True,
    step: Callable | None = None,
) -> dict:
    """Patches a BatchNorm model: ``θ + Σ_k α_k · RWS_k`` plus a BN scheme (``bn``).

    Args:
      variables: θ_P, ``{'params': ..., 'batch_stats': ...}`` (usually θ_std).
      signatures, alphas, mode, check_base: as for :func:`rws_jax.patch`.
      bn: ``'reference'`` (BN/shortcut tensors ← mean over ``robust``, then running
        statistics re-estimated on ``batches`` and mixed), ``'patch'`` (the pure weight
        patch) or ``'none'`` (BN/shortcut leaves left as in ``variables``).
      robust: ``'reference'`` only: the robust models θ_rob,c of the corruptions applied
        (one per signature as in the reference, or one per corruption merged into a composed
        signature; same structure as ``variables``).
      apply_fn, batches, preprocess, step: ``'reference'`` only: the model and the
        corrupted training batches to re-estimate statistics on (``batches=None`` skips
        step 3 and keeps the averaged statistics).
      mix: weight of the re-estimated statistics; ``None`` = :func:`reference_mix`.
      pattern: regular expression naming the BN/shortcut leaves.

    Returns:
      The patched variables (same structure). Nothing is modified on error.
    """
    if bn not in BN_MODES:
        raise RWSError(f"unknown BatchNorm mode {bn!r}: choose one of {BN_MODES}")
    sigs = signature_list(signatures)
    if bn == "patch":
        return patch(variables, sigs, alphas, mode=mode, check_base=check_base)
    bn_paths = set(batch_norm_paths(variables, pattern))
    kept = [s.replace(deltas={p: v for p, v in s.deltas.items() if p not in bn_paths}) for s in sigs]
    patched = patch(variables, kept, alphas, mode=mode, check_base=check_base) if any(
        s.deltas for s in kept) else variables
    if bn == "none":
        return patched
    if not robust:
        raise RWSError("bn='reference' needs the robust models of the corruptions applied (robust=[...]): got none")
    flat, rebuild = tree_paths.flatten(patched)
    avg = average_leaves(list(robust), sorted(bn_paths))
    for p, x in avg.items():
        if tree_paths.leaf_spec(x) != tree_paths.leaf_spec(flat[p]):
            raise IncompatibleSignatureError(f"robust models' {p!r} is {tree_paths.leaf_spec(x)}, "
                                             f"the patched model's is {tree_paths.leaf_spec(flat[p])}")
        if not bool(jnp.all(jnp.isfinite(x))):
            raise NonFiniteError(f"the robust models' mean of {p!r} holds NaN/inf")
    out = rebuild(avg)
    if batches is None:
        return out
    if apply_fn is None:
        raise RWSError("bn='reference' with batches needs apply_fn (model.apply) to re-estimate statistics")
    return recalibrate_batch_stats(apply_fn, out, batches, mix=reference_mix(alphas) if mix is None else mix,
                                   preprocess=preprocess, step=step)


# ----------------------------------------------------------------------------- precomputed

@dataclasses.dataclass(frozen=True)
class ReferenceBatchNorm:
    """The reference BN scheme of K signatures, precomputed once (a fixed tree per signature),
    so that it can be applied at patch time without the robust models or any data.

    Attributes:
      names: the signatures' names, in order.
      robust: ``{path: f32[K, ...]}``: θ_rob,c's BN scale/bias, shortcut convs and running
        statistics (every :func:`batch_norm_paths` leaf), stacked over the signatures.
      recalibrated: ``{path: f32[K, ...]}`` for the ``batch_stats`` paths: the statistics
        re-estimated on data corrupted with c, for θ_std + RWS_c (α = 1) with θ_rob,c's BN
        tensors: what :func:`patch_batch_norm` computes for one signature at α = 1.
    """

    names: tuple
    robust: dict
    recalibrated: dict

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self.robust)


jax.tree_util.register_dataclass(ReferenceBatchNorm, data_fields=["robust", "recalibrated"], meta_fields=["names"])


def precompute_reference_bn(variables: dict, signatures: SignatureLike, robust: Sequence[Variables], *,
                            apply_fn: Callable, batches_of: Callable[[int], Iterable],
                            preprocess: Callable | None = None, step: Callable | None = None,
                            pattern: str = REFERENCE_BN_PATTERN) -> ReferenceBatchNorm:
    """Runs the reference scheme once per signature (``patch_batch_norm(variables, sig_k, 1.0,
    robust=[robust[k]], batches=batches_of(k))``) and keeps its BN tensors: see
    :class:`ReferenceBatchNorm` and :func:`apply_reference_bn`.

    Args:
      variables: θ_std. signatures / robust: RWS_k and θ_rob,k, in the same order.
      apply_fn, preprocess, step: as for :func:`patch_batch_norm`.
      batches_of: ``k -> batches`` of training images corrupted with signature k's corruption.
    """
    sigs = signature_list(signatures)
    if len(sigs) != len(robust) or not sigs:
        raise RWSError(f"precompute_reference_bn needs one robust model per signature, got {len(sigs)} signatures "
                       f"and {len(robust)} robust models")
    paths = sorted(batch_norm_paths(variables, pattern))
    stats = [p for p in paths if p.startswith(STATS_COLLECTION + "/")]
    rob: dict[str, list[jax.Array]] = {p: [] for p in paths}
    rec: dict[str, list[jax.Array]] = {p: [] for p in stats}
    for k, (sig, model) in enumerate(zip(sigs, robust)):
        patched = patch_batch_norm(variables, [sig], 1.0, bn="reference", robust=[model], apply_fn=apply_fn,
                                   batches=batches_of(k), preprocess=preprocess, step=step, pattern=pattern)
        flat_r, flat_p = tree_paths.flatten(model)[0], tree_paths.flatten(patched)[0]
        for p in paths:
            rob[p].append(jnp.asarray(flat_r[p], jnp.float32))
        for p in stats:
            rec[p].append(jnp.asarray(flat_p[p], jnp.float32))
    return ReferenceBatchNorm(names=tuple(s.name for s in sigs), robust={p: jnp.stack(v) for p, v in rob.items()},
                              recalibrated={p: jnp.stack(v) for p, v in rec.items()})


def apply_reference_bn(patched: dict, bn: ReferenceBatchNorm, alphas: Alphas) -> dict:
    """``patched`` (θ_std + Σ α_k·RWS_k) with its BN/shortcut leaves set by the reference
    scheme from the precomputed trees (traceable: call it inside ``jit``).

    With A the signatures whose α_k > 0 and ā their mean α: BN scale/bias and shortcut convs
    are the mean of θ_rob,k's over A; statistics are ``(1 − m) · mean_A(θ_rob,k's) + m ·
    mean_A(re-estimated)`` with ``m = min(ā, 1)`` (the reference's mixing weight). For one
    signature this is :func:`patch_batch_norm` exactly, with its statistics estimated once at
    α = 1; for several, the mean of the per-corruption statistics stands in for statistics
    re-estimated on their mixed data (equal means; the variances miss the spread between the
    corruptions). All α = 0 leaves ``patched`` unchanged.
    """
    a = jnp.asarray(alphas, jnp.float32).reshape(-1)
    active = (a > 0).astype(jnp.float32)
    count = jnp.sum(active)
    w = active / jnp.maximum(count, 1.0)
    m = jnp.minimum(jnp.sum(a * w), 1.0)
    any_active = count > 0
    flat, rebuild = tree_paths.flatten(patched)
    out = {}
    for p, stack in bn.robust.items():
        value = jnp.tensordot(w, stack, axes=1)
        if p in bn.recalibrated:
            value = (1.0 - m) * value + m * jnp.tensordot(w, bn.recalibrated[p], axes=1)
        out[p] = jnp.where(any_active, value.astype(flat[p].dtype), flat[p])
    return rebuild(out)
