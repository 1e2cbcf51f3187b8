"""A cheap corruption detector: which signature (if any) does a batch of images need?

The detector reads 22 image statistics (intensity moments, gradient and Laplacian
energy at several scales, 8×8 block and pixel-repeat structure, saturated pixels)
and classifies them with a small MLP into ``('clean', c_1, ..., c_K)``, the corruptions of
a signature set. It never looks at the classifier's weights, so it works for any model of
the same image size; it costs 11–52% of the forward pass of a batch on the 2-core CPU of
docs/benchmarks/autopatch_overhead_cpu.md (VGG-16 width 1/8: 11% at batch 64, 21% at batch 8, 52% at
batch 1; ``python -m benchmarks.autopatch`` measures it)::

    det = rws.train_detector(images, [fog, contrast], severity=5, key=jax.random.key(0))
    p = det.probabilities(batch)          # f32[N, K+1], rows sum to 1, column 0 = clean
    rws.save_detector("sigs/detector", det)
    det = rws.load_detector("sigs/detector", signatures=[fog, contrast])  # refuses another set

A detector records the content fingerprints (:func:`rws_jax.signature_fingerprint`) of
the signatures it was trained for; :func:`load_detector` and :class:`rws_jax.AutoPatcher`
refuse it for any other set or order.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from rws_jax import corruptions as corruptions_lib
from rws_jax.errors import RWSError, SignatureFileError, one_line
from rws_jax.files.checked_dirs import read_checked_dir, write_checked_dir
from rws_jax.signature import Signature, signature_fingerprint

FORMAT = "rws_jax.detector/1"
CLEAN = "clean"
NUM_FEATURES = 22


# ----------------------------------------------------------------------------- features

def _gray(images: jax.Array) -> jax.Array:
    """uint8 or [0, 1] float NHWC -> f32[N, H, W] luminance in [0, 1]."""
    x = images.astype(jnp.float32)
    if jnp.issubdtype(images.dtype, jnp.integer):
        x = x / 255.0
    return jnp.mean(x, axis=-1)


def _pool(g: jax.Array, s: int) -> jax.Array:
    """``s``×``s`` block means of ``g`` ``[N, H, W]`` (H, W cropped to multiples of s)."""
    n, h, w = g.shape
    g = g[:, : h - h % s, : w - w % s]
    return g.reshape(n, h // s, s, w // s, s).mean((2, 4))


def image_features(images: jax.Array) -> jax.Array:
    """``f32[N, 22]`` statistics of ``images`` (uint8 or float in [0, 1], ``[N, H, W, C]``).

    Per image, all in one pass over the pixels (no sort, no FFT): mean, std, min, max,
    skewness, kurtosis; the fraction of pixels near 0 and near 1 (impulse noise); mean ``|∂x|``,
    mean ``|∂y|``, std and max of ∂x; mean and std of ``|Laplacian|`` and the Laplacian/gradient
    ratio (noise vs. blur); the gradient of the 2×2, 4×4 and 8×8 block means relative to
    the std (the spectrum's bands: fog, contrast, blur); 8×8 block-boundary vs. all
    differences (JPEG); the fraction of zero horizontal and vertical differences
    (pixelate); the mean std within 2×2 blocks relative to the global std.
    """
    g = _gray(images)
    n = g.shape[0]
    flat = g.reshape(n, -1)
    eps = 1e-4
    mean, std = jnp.mean(flat, 1), jnp.std(flat, 1)
    z = (flat - mean[:, None]) / (std[:, None] + eps)
    dxs, dys = jnp.diff(g, axis=2), jnp.diff(g, axis=1)
    dx, dy = jnp.abs(dxs), jnp.abs(dys)
    grad = 0.5 * (dx.mean((1, 2)) + dy.mean((1, 2)))
    lap = jnp.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
    scales = []
    for s in (2, 4, 8):
        p = _pool(g, s)
        scales.append((jnp.abs(jnp.diff(p, axis=2)).mean((1, 2)) + jnp.abs(jnp.diff(p, axis=1)).mean((1, 2)))
                      / (std + eps))
    on_block = dx[:, :, 7::8].mean((1, 2)) + dy[:, 7::8, :].mean((1, 2))
    p2, p2sq = _pool(g, 2), _pool(g * g, 2)
    local_std = jnp.sqrt(jnp.maximum(p2sq - p2 * p2, 0.0)).mean((1, 2))
    feats = [
        mean, std, flat.min(1), flat.max(1), jnp.mean(z ** 3, 1), jnp.mean(z ** 4, 1),
        jnp.mean(flat < 0.02, 1), jnp.mean(flat > 0.98, 1),
        dx.mean((1, 2)), dy.mean((1, 2)), jnp.std(dxs, (1, 2)), dx.max((1, 2)),
        lap.mean((1, 2)), lap.std((1, 2)), lap.mean((1, 2)) / (grad + eps),
        *scales,
        on_block / (dx.mean((1, 2)) + dy.mean((1, 2)) + eps),
        jnp.mean(dx < 1e-3, (1, 2)), jnp.mean(dy < 1e-3, (1, 2)),
        local_std / (std + eps),
    ]
    return jnp.stack(feats, axis=1)


# ----------------------------------------------------------------------------- model

def _mlp(params: dict, feats: jax.Array) -> jax.Array:
    """Standardised features -> logits ``[N, K+1]`` (one hidden layer, ReLU)."""
    z = (feats - params["mu"]) / params["sigma"]
    hidden = jax.nn.relu(z @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


@jax.jit
def _probabilities(params: dict, images: jax.Array) -> jax.Array:
    return jax.nn.softmax(_mlp(params, image_features(images)), axis=-1)


def _class_distance(params: dict, feats: jax.Array, cls: jax.Array) -> jax.Array:
    """Mean squared z-score of each row of ``feats`` under the diagonal Gaussian of its class."""
    z = (feats - params["class_mu"][cls]) / params["class_sd"][cls]
    return jnp.mean(z * z, axis=-1)


@jax.jit
def _scores(params: dict, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(probabilities f32[N, K+1], in-distribution bool[N])."""
    feats = image_features(images)
    p = jax.nn.softmax(_mlp(params, feats), axis=-1)
    cls = jnp.argmax(p, axis=-1)
    return p, _class_distance(params, feats, cls) <= params["ood_limit"][cls]


@dataclasses.dataclass(frozen=True, eq=False)
class CorruptionDetector:
    """A trained detector.

    Attributes:
      classes: ``('clean', c_1, ..., c_K)``: column k of :meth:`probabilities` is class k.
      params: ``{'mu', 'sigma': f32[22], 'w1': f32[22, H], 'b1': f32[H], 'w2': f32[H, K+1],
        'b2': f32[K+1], 'class_mu', 'class_sd': f32[K+1, 22], 'ood_limit': f32[K+1]}``.
      fingerprints: content fingerprints of the K signatures, in the order of ``classes[1:]``.
      image_shape: ``(H, W, C)`` of the images it was trained on.
      severity: the corruption severity of its training data (the highest, when several).
      train_accuracy: per-image accuracy on its own training data.
      severities: the severities of its training data when there were several (else ``()``).
    """

    classes: tuple
    params: dict
    fingerprints: tuple
    image_shape: tuple
    severity: int
    train_accuracy: float = float("nan")
    severities: tuple = ()

    @property
    def trained_severities(self) -> tuple:
        """Every severity of its training data."""
        return tuple(self.severities) or (self.severity,)

    @property
    def corruptions(self) -> tuple:
        """``classes[1:]``: the corruption of each signature, in order."""
        return tuple(self.classes[1:])

    def probabilities(self, images: ArrayLike) -> jax.Array:
        """``f32[N, K+1]`` class probabilities of ``images`` (``[N, H, W, C]`` uint8 or
        float in [0, 1]). Column 0 is 'clean'."""
        return _probabilities(self.params, self._check(images))

    def scores(self, images: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """``(probabilities f32[N, K+1], in_distribution bool[N])``: an image is out of
        distribution when its statistics are farther from its predicted class's training
        images (mean squared z-score, diagonal Gaussian) than the 99.5th percentile of that
        class's own: a corruption the detector never saw, which :class:`rws_jax.AutoPatcher`
        then treats as clean (no patch) rather than guess a signature."""
        images = self._check(images)
        return _scores(self.params, images)

    def _check(self, images: ArrayLike) -> jax.Array:
        images = jnp.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
            raise RWSError(f"the detector takes images [N, {', '.join(map(str, self.image_shape))}], "
                           f"got shape {tuple(images.shape)}")
        return images

    def predict(self, images: ArrayLike) -> jax.Array:
        """``i32[N]``: the most probable class index of each image."""
        return jnp.argmax(self.probabilities(images), axis=-1)

    def check_signatures(self, signatures: Sequence[Signature]) -> None:
        """Raises ``RWSError`` unless ``signatures`` are, in order, the ones this detector
        was trained for (same content fingerprints)."""
        got = tuple(signature_fingerprint(s) for s in signatures)
        if got != tuple(self.fingerprints):
            names = [s.name for s in signatures]
            raise RWSError(
                f"this detector was trained for the signatures {list(self.corruptions)} (fingerprints "
                f"{[f[:12] for f in self.fingerprints]}), not for {names} (fingerprints {[f[:12] for f in got]}): "
                "train a detector for this signature set (rws.train_detector) or pass the signatures it was "
                "trained for, in the same order")


def train_detector(images: ArrayLike, signatures: Sequence[Signature], *, severity: int | Sequence[int] = 5, key: jax.Array,
                   corruption_preset: str = "cifar10", hidden: int = 64, steps: int = 600,
                   learning_rate: float = 3e-3, chunk: int = 500) -> CorruptionDetector:
    """Trains a detector for ``signatures`` on ``images`` (uint8 ``[N, H, W, C]``: e.g. the
    fine-tuning split, never the test split).

    The data are ``images`` clean plus ``images`` corrupted by each signature's corruption
    (``Signature.name`` must be a corruption of :mod:`rws_jax.corruptions`) at
    ``severity``: ``(K+1)·N`` examples, balanced. Several severities (``severity=(1, 2, 3,
    4, 5)``) split each corruption's copy of ``images`` into equal consecutive parts, one per
    severity. An MLP with ``hidden`` units is trained
    full-batch with Adam for ``steps`` steps.
    """
    sigs = list(signatures)
    if not sigs:
        raise RWSError("train_detector needs at least one signature")
    names = [s.name for s in sigs]
    unknown = [n for n in names if n not in corruptions_lib.CORRUPTIONS]
    if unknown:
        raise RWSError(f"signatures {unknown} are not named after a corruption; valid: "
                       f"{', '.join(corruptions_lib.CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise RWSError(f"two signatures for one corruption: {names}")
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) < 2:
        raise RWSError(f"train_detector takes uint8 images [N >= 2, H, W, C], got {images.dtype} {images.shape}")
    # one severity or several, told apart by np.ndim (so that numpy scalars and arrays pass too)
    sevs = ((int(cast(int, severity)),) if np.ndim(severity) == 0
            else tuple(int(v) for v in cast(Sequence[int], severity)))
    if not sevs or any(not 1 <= v <= 5 for v in sevs):
        raise RWSError(f"severity must be 1..5 or a non-empty sequence of them, got {severity!r}")
    part = -(-len(images) // len(sevs))  # consecutive parts of the images, one per severity
    chunk = min(int(chunk), part)
    feats, labels = [], []
    for k, name in enumerate([CLEAN, *names]):
        ck = jax.random.fold_in(key, k)
        for i in range(0, len(images), chunk):
            x = jnp.asarray(images[i:i + chunk])
            if name != CLEAN:
                x = corruptions_lib.corrupt(x, name, sevs[min(i // part, len(sevs) - 1)], jax.random.fold_in(ck, i),
                                            preset=corruption_preset)
            feats.append(np.asarray(image_features(x)))
        labels.append(np.full(len(images), k, np.int32))
    x, y = jnp.asarray(np.concatenate(feats)), jnp.asarray(np.concatenate(labels))
    mu, sigma = jnp.mean(x, 0), jnp.std(x, 0) + 1e-6
    k1, k2 = jax.random.split(jax.random.fold_in(key, 10_000))
    n_cls = len(names) + 1
    params = {"mu": mu, "sigma": sigma,
              "w1": jax.random.normal(k1, (NUM_FEATURES, hidden)) * jnp.sqrt(2.0 / NUM_FEATURES),
              "b1": jnp.zeros(hidden), "w2": jax.random.normal(k2, (hidden, n_cls)) * jnp.sqrt(1.0 / hidden),
              "b2": jnp.zeros(n_cls)}
    trainable = {k: v for k, v in params.items() if k not in ("mu", "sigma")}
    tx = optax.adam(learning_rate)

    def loss_fn(tr: dict[str, jax.Array]) -> jax.Array:
        logits = _mlp({**tr, "mu": mu, "sigma": sigma}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def fit(tr: dict[str, jax.Array]) -> dict[str, jax.Array]:
        def step(carry: tuple[dict[str, jax.Array], Any], _: None) -> tuple[tuple[dict[str, jax.Array], Any], None]:
            tr, opt = carry
            grads = jax.grad(loss_fn)(tr)
            upd, opt = tx.update(grads, opt, tr)
            return (optax.apply_updates(tr, upd), opt), None

        (tr, _), _ = jax.lax.scan(step, (tr, tx.init(tr)), None, length=steps)
        return tr

    trainable = fit(trainable)
    params = {**trainable, "mu": mu, "sigma": sigma}
    params["class_mu"] = jnp.stack([jnp.mean(x[y == k], 0) for k in range(n_cls)])
    params["class_sd"] = jnp.stack([jnp.std(x[y == k], 0) + 1e-3 * sigma for k in range(n_cls)])
    dist = _class_distance(params, x, y)
    params["ood_limit"] = jnp.stack([jnp.quantile(dist[y == k], 0.995) for k in range(n_cls)])
    acc = float(jnp.mean(jnp.argmax(_mlp(params, x), -1) == y))
    return CorruptionDetector(classes=(CLEAN, *names), params=jax.device_get(params),
                              fingerprints=tuple(signature_fingerprint(s) for s in sigs),
                              image_shape=tuple(int(d) for d in images.shape[1:]), severity=max(sevs),
                              train_accuracy=acc, severities=sevs if len(sevs) > 1 else ())


# ----------------------------------------------------------------------------- files

def save_detector(path: str | os.PathLike, detector: CorruptionDetector, *, overwrite: bool = False) -> Path:
    """Writes ``detector`` to the directory ``path`` with orbax (atomically; checksummed:
    :func:`rws_jax.files.checked_dirs.write_checked_dir`)."""
    arrays = {k: np.asarray(v, np.float32) for k, v in detector.params.items()}
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise RWSError("the detector holds NaN/inf parameters; not saved")
    meta = {"format": FORMAT, "classes": list(detector.classes), "fingerprints": list(detector.fingerprints),
            "image_shape": list(detector.image_shape), "severity": detector.severity,
            "train_accuracy": detector.train_accuracy}
    if detector.severities:  # only then: files of one severity stay as they were
        meta["severities"] = list(detector.severities)
    return write_checked_dir(path, arrays, meta, overwrite=overwrite)


def load_detector(path: str | os.PathLike, *, signatures: Sequence[Signature] | None = None) -> CorruptionDetector:
    """Reads a detector written by :func:`save_detector`; with ``signatures``, refuses it
    unless it was trained for exactly those (in order).

    Raises:
      SignatureFileError: missing, truncated or tampered directory (checksum mismatch:
        :func:`rws_jax.files.checked_dirs.read_checked_dir`), or malformed metadata.
      RWSError: ``signatures`` given and not the detector's.
    """
    meta, arrays = read_checked_dir(path, format=FORMAT, what="detector")
    try:
        det = CorruptionDetector(classes=tuple(meta["classes"]), params={k: jnp.asarray(v) for k, v in arrays.items()},
                                 fingerprints=tuple(meta["fingerprints"]), image_shape=tuple(meta["image_shape"]),
                                 severity=int(meta["severity"]), train_accuracy=float(meta["train_accuracy"]),
                                 severities=tuple(int(v) for v in meta.get("severities", ())))
    except (KeyError, TypeError, ValueError) as e:  # a checksum is no signature: the fields can lie
        raise SignatureFileError(f"{Path(path).absolute()}: malformed detector metadata: {one_line(e)}") from None
    if signatures is not None:
        det.check_signatures(signatures)
    return det
