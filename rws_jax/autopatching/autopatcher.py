"""Auto-patching: choose and mix signatures per batch when the corruption is unknown.

A deployed model does not know which corruption its next batch carries. An
:class:`AutoPatcher` asks a :class:`rws_jax.CorruptionDetector` and patches
``θ_std + Σ_c α_c·RWS_c`` before the forward pass::

    det = rws.load_detector("run/signatures/detector", signatures=sigs)
    auto = rws.AutoPatcher(model, theta_std, sigs, det, mean=(0.286,), std=(0.353,))
    logits = auto(images)                    # f32[N, classes]; images u8[N, H, W, C]
    auto.coefficients(images)                # f32[K]: the α_c used for this batch
    logits = auto(images, per_image=True)    # group the batch by predicted corruption

Images whose statistics lie outside everything the detector was trained on (a corruption
without a signature) count as clean: they are not patched rather than patched with a guess.

**Batch mode** (default): the detector's class probabilities are averaged over the batch;
``α_c = max_alpha_c · p̄_c``, set to 0 where ``p̄_c < threshold`` and rounded to multiples of
``step``. A clean batch gets all-zero coefficients and runs θ_std itself (no patch). The
patch is one fused jitted call (:func:`rws_jax.patch_plan`), and the patched variables of
the last ``cache_size`` coefficient vectors are kept: a stream of batches of one
corruption patches once.

**Per-image mode**: each image goes to its most probable class (clean when no corruption
reaches ``threshold``); each group runs through θ_std + max_alpha_c·RWS_c, padded to the
batch size so that every group reuses one compiled forward pass.

Patching is the pure weight patch, unless ``batch_norm`` is given: a
:class:`rws_jax.ReferenceBatchNorm` (:func:`rws_jax.precompute_reference_bn`, once per
signature set) makes every patch apply the reference's BatchNorm scheme from precomputed
trees (:func:`rws_jax.apply_reference_bn`), with neither the robust models nor data at
patch time.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from rws_jax.batch_norm import ReferenceBatchNorm, apply_reference_bn
from rws_jax.autopatching.detector import CorruptionDetector
from rws_jax.errors import RWSError
from rws_jax.patch_plan import patch_plan
from rws_jax.signature import Signature
from rws_jax.training.augment import normalize_images
from rws_jax.types import Alphas, Variables


def _forward_fn(model: Any, mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable:
    """``(variables, images u8[N,H,W,C]) -> logits`` (not jitted) for a Flax module (called
    with ``train=False`` when it takes ``train``) or an ``apply(variables, x)`` callable."""
    if hasattr(model, "apply"):
        takes_train = "train" in inspect.signature(type(model).__call__).parameters
        apply = (lambda v, x: model.apply(v, x, train=False)) if takes_train else model.apply
    elif callable(model):
        apply = model
    else:
        raise RWSError(f"model must be a Flax module or an apply(variables, x) callable, got {type(model).__name__}")

    def forward(variables: Variables, images: jax.Array) -> jax.Array:
        out = apply(variables, normalize_images(images, mean, std))
        return out[0] if isinstance(out, tuple) else out

    return forward


class AutoPatcher:
    """θ_std patched per batch with the signatures a detector asks for.

    Args:
      model: a Flax module (``rws_jax.models``) or an ``apply(variables, x) -> logits``.
      standard_variables: θ_std, the variables the signatures patch.
      signatures: K signatures, in the detector's order (``detector.corruptions``).
      detector: a :class:`CorruptionDetector` trained for exactly these signatures
        (checked by content fingerprint; another set raises ``RWSError``).
      max_alpha: α applied for a certain detection: a scalar or K values (e.g. α chosen
        on validation).
      threshold: mean probability below which a signature is not applied at all.
      step: coefficients are rounded to multiples of this (0 disables rounding).
      mean, std: input normalisation the model was trained with (``(x/255 - mean)/std``).
      cache_size: patched variable sets kept, keyed by coefficient vector.
      check_base: the signatures must have been extracted for this model's structure.
      batch_norm: a :class:`rws_jax.ReferenceBatchNorm` of these signatures (same order): each
        patch then applies the reference's BatchNorm scheme; None: the pure weight patch.
    """

    def __init__(self, model: Any, standard_variables: Variables, signatures: Sequence[Signature],
                 detector: CorruptionDetector, *, max_alpha: Alphas = 1.0, threshold: float = 0.25,
                 step: float = 0.25, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 cache_size: int = 8, check_base: bool = True, batch_norm: ReferenceBatchNorm | None = None) -> None:
        sigs = list(signatures)
        if not isinstance(detector, CorruptionDetector):
            raise RWSError(f"detector must be a CorruptionDetector, got {type(detector).__name__}")
        detector.check_signatures(sigs)
        k = len(sigs)
        ma = np.broadcast_to(np.asarray(max_alpha, np.float32), (k,)).copy()
        if not np.all(np.isfinite(ma)):
            raise RWSError(f"max_alpha must be finite, got {max_alpha}")
        if not 0.0 <= float(threshold) <= 1.0 or float(step) < 0 or int(cache_size) < 1:
            raise RWSError("threshold must be in [0, 1], step >= 0 and cache_size >= 1")
        if batch_norm is not None and tuple(batch_norm.names) != tuple(s.name for s in sigs):
            raise RWSError(f"batch_norm was precomputed for the signatures {list(batch_norm.names)}, not for "
                           f"{[s.name for s in sigs]} (same order needed)")
        self.detector = detector
        self.signatures = tuple(sigs)
        self.batch_norm = batch_norm
        self.max_alpha = ma
        self.threshold = float(threshold)
        self.step = float(step)
        self._std_vars = standard_variables
        self._plan = patch_plan(standard_variables, sigs, check_base=check_base)
        forward = _forward_fn(model, mean, std)
        self._forward = jax.jit(forward)
        plan = self._plan

        def patch_only(variables: Variables, bn: ReferenceBatchNorm | None, alphas: jax.Array) -> Variables:
            patched = plan.traced(variables, alphas)
            return patched if bn is None else apply_reference_bn(patched, bn, alphas)

        def patch_and_forward(variables: Variables, bn: ReferenceBatchNorm | None, alphas: jax.Array,
                              images: jax.Array) -> tuple[jax.Array, Variables]:
            patched = patch_only(variables, bn, alphas)
            return forward(patched, images), patched

        # new coefficients: patch + forward in one compiled call; the patched tree is cached
        self._patch_only = jax.jit(patch_only)
        self._patch_and_forward = jax.jit(patch_and_forward)
        self._cache: collections.OrderedDict[tuple[float, ...], Variables] = collections.OrderedDict()
        self._cache_size = int(cache_size)
        self.patches_computed = 0
        self.patches_reused = 0

    @property
    def num_signatures(self) -> int:
        return len(self.signatures)

    # ------------------------------------------------------------------ coefficients
    def _round(self, a: np.ndarray) -> np.ndarray:
        a = np.where(a >= self.threshold, a, 0.0)
        if self.step > 0:
            a = np.round(a / self.step) * self.step
        return (a * self.max_alpha).astype(np.float32)

    def _probabilities(self, images: ArrayLike) -> np.ndarray:
        """Detector probabilities ``[N, K+1]``; an image out of the detector's distribution
        (a corruption it never saw) counts as clean."""
        probs, in_dist = self.detector.scores(images)
        p, ind = np.array(probs), np.asarray(in_dist)
        p[~ind] = 0.0
        p[~ind, 0] = 1.0
        return p

    def coefficients(self, images: ArrayLike) -> np.ndarray:
        """``f32[K]``: the α_c batch mode applies to ``images`` (``u8[N, H, W, C]``)."""
        return self._round(self._probabilities(images).mean(0)[1:])

    def assignments(self, images: ArrayLike) -> np.ndarray:
        """``i32[N]``: per-image mode's class of each image (0 = clean, k = signature k-1)."""
        p = self._probabilities(images)
        best = np.argmax(p[:, 1:], axis=1)
        conf = p[np.arange(len(p)), best + 1]
        return np.where((conf >= self.threshold) & (conf >= p[:, 0]), best + 1, 0).astype(np.int32)

    # ------------------------------------------------------------------ variables
    def _cached(self, a: np.ndarray) -> Variables | None:
        """The cached variables for coefficients ``a`` (θ_std for all zero), or None."""
        if not np.any(a):
            return self._std_vars
        key = tuple(float(x) for x in a)
        if key in self._cache:
            self._cache.move_to_end(key)
            self.patches_reused += 1
            return self._cache[key]
        return None

    def _store(self, a: np.ndarray, variables: Variables) -> None:
        self.patches_computed += 1
        self._cache[tuple(float(x) for x in a)] = variables
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def variables_for(self, alphas: Alphas) -> Variables:
        """θ_std + Σ_c α_c·RWS_c (θ_std itself for all-zero α), cached by ``alphas``."""
        a = np.asarray(alphas, np.float32).reshape(self.num_signatures)
        v = self._cached(a)
        if v is None:
            v = self._patch_only(self._std_vars, self.batch_norm, a)
            self._store(a, v)
        return v

    def apply_coefficients(self, alphas: Alphas, images: ArrayLike) -> jax.Array:
        """Logits of ``images`` under θ_std + Σ α·RWS (``alphas`` f32[K], e.g. from
        :meth:`coefficients`): cached variables, or one fused patch + forward call whose
        patched variables are then cached."""
        a = np.asarray(alphas, np.float32).reshape(self.num_signatures)
        x = jnp.asarray(images)
        v = self._cached(a)
        if v is not None:
            return self._forward(v, x)
        logits, v = self._patch_and_forward(self._std_vars, self.batch_norm, a, x)
        self._store(a, v)
        return logits

    # ------------------------------------------------------------------ forward
    def __call__(self, images: ArrayLike, *, per_image: bool = False) -> jax.Array:
        """Logits ``f32[N, classes]`` of ``images`` (``u8[N, H, W, C]``) through the
        auto-patched model (batch mode, or ``per_image``)."""
        x = jnp.asarray(images)
        if not per_image:
            return self.apply_coefficients(self.coefficients(x), x)
        n = x.shape[0]
        if n == 0:  # no image to group: θ_std's (empty) logits, as batch mode gives them
            return self.apply_coefficients(np.zeros(self.num_signatures, np.float32), x)
        groups = self.assignments(x)
        out = None
        for k in np.unique(groups):
            idx = np.nonzero(groups == k)[0]
            alphas = np.zeros(self.num_signatures, np.float32)
            if k > 0:
                alphas[k - 1] = self.max_alpha[k - 1]
            pad = np.concatenate([idx, np.full(n - len(idx), idx[0])]) if len(idx) < n else idx
            logits = self.apply_coefficients(alphas, x[pad])[: len(idx)]
            out = jnp.zeros((n, logits.shape[-1]), logits.dtype) if out is None else out
            out = out.at[idx].set(logits)
        assert out is not None  # n > 0 images: at least one group
        return out

    def __repr__(self) -> str:
        return (f"AutoPatcher(signatures={list(self.detector.corruptions)}, threshold={self.threshold}, "
                f"step={self.step}, max_alpha={self.max_alpha.tolist()})")
