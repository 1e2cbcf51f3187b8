"""In-memory dataset representation, splitting and batching (numpy only)."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split held in memory.

    Attributes:
      images: uint8 array [N, H, W, C] (NHWC, values 0..255).
      labels: int32 array [N].
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.ndim != 4:
            raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be [N={images.shape[0]}], got shape {labels.shape}")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(self.images.shape[1:])

    def take(self, indices) -> "ArraySplit":
        """A new split with the rows ``indices`` (copies)."""
        indices = np.asarray(indices)
        return ArraySplit(self.images[indices], self.labels[indices])

    def head(self, n: int | None) -> "ArraySplit":
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return ArraySplit(self.images[:n], self.labels[:n])


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """train / val / test splits of one dataset.

    ``val`` is carved out of the official training set (seeded); ``test`` is the official
    test set. Select checkpoints and hyper-parameters on ``val``, never on ``test``.
    """

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    num_classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def __repr__(self) -> str:
        return (f"DatasetSplits(name={self.name!r}, num_classes={self.num_classes}, "
                f"image_shape={self.image_shape}, train={len(self.train)}, "
                f"val={len(self.val)}, test={len(self.test)})")


def pad_images(images: np.ndarray, size: int | None) -> np.ndarray:
    """Zero-pad NHWC images symmetrically to ``size`` x ``size`` (None: unchanged)."""
    if size is None:
        return images
    h, w = images.shape[1:3]
    if h == size and w == size:
        return images
    if h > size or w > size:
        raise ValueError(f"cannot pad {h}x{w} images to {size}x{size} (pad_to is smaller)")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))


def split_train_val(split: ArraySplit, val_size: int, seed: int = 0) -> tuple[ArraySplit, ArraySplit]:
    """Seeded random split into (train, val) with ``len(val) == val_size``."""
    n = len(split)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(perm[:val_size])
    train_idx = np.sort(perm[val_size:])
    return split.take(train_idx), split.take(val_idx)


def split_disjoint(split: ArraySplit, parts: int = 2, seed: int = 0, *,
                   stratify: bool = True) -> tuple[ArraySplit, ...]:
    """Carve ``split`` into ``parts`` disjoint pieces of (almost) equal size.

    Used for "another dataset" transfer experiments (e.g. two halves of a training set).
    With ``stratify`` each class is spread evenly over the pieces. Deterministic in
    ``seed``; every example lands in exactly one piece.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    n = len(split)
    if parts > n:
        raise ValueError(f"cannot split {n} examples into {parts} parts")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if stratify:
        # Deal the shuffled examples of each class round-robin, starting each class at a
        # random piece so the piece sizes stay balanced.
        assignment = np.empty(n, dtype=np.int64)
        offset = 0
        labels = split.labels[perm]
        for c in np.unique(labels):
            members = np.nonzero(labels == c)[0]
            assignment[members] = (np.arange(members.size) + offset) % parts
            offset = (offset + members.size) % parts
        pieces = [np.sort(perm[assignment == p]) for p in range(parts)]
    else:
        pieces = [np.sort(p) for p in np.array_split(perm, parts)]
    return tuple(split.take(p) for p in pieces)


def restrict_classes(split: ArraySplit, classes) -> ArraySplit:
    """The examples of ``split`` whose label is in ``classes``, relabelled by position:
    ``classes[i]`` becomes label ``i`` (``classes=None``: ``split`` unchanged).

    ``restrict_classes(s, (5, 6, 7, 8, 9))`` keeps classes 5..9 as labels 0..4 (a
    5-way problem with its own head).
    """
    if classes is None:
        return split
    classes = np.asarray(list(classes), np.int64)
    mapping = np.full(max(int(classes.max()), int(split.labels.max(initial=0))) + 1, -1, np.int64)
    mapping[classes] = np.arange(classes.size)
    keep = np.nonzero(mapping[split.labels] >= 0)[0]
    return ArraySplit(split.images[keep], mapping[split.labels[keep]].astype(np.int32))


ROTATIONS = 4  # the rotation task's classes: 0, 90, 180, 270 degrees


def rotation_task(split: ArraySplit) -> ArraySplit:
    """Self-supervised rotation prediction (Gidaris et al., 2018) on ``split``'s images:
    every image four times, turned by k quarter turns counter-clockwise, labelled k
    (``[4N, H, W, C]``, labels ``0..3``; image i turned by k is at ``k * N + i``). The
    split's own labels are not used. Needs square images."""
    images = np.asarray(split.images)
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"the rotation task needs square images, got {images.shape[1]}x{images.shape[2]}")
    turned = [np.rot90(images, k, axes=(1, 2)) for k in range(ROTATIONS)]
    labels = np.repeat(np.arange(ROTATIONS, dtype=np.int32), len(images))
    return ArraySplit(np.ascontiguousarray(np.concatenate(turned)), labels)


def class_subset(ds: "DatasetSplits", classes) -> "DatasetSplits":
    """``ds`` with every split passed through :func:`restrict_classes` (``num_classes`` =
    ``len(classes)``); ``classes=None`` returns ``ds``. Unknown class indices fail."""
    if classes is None:
        return ds
    bad = [c for c in classes if not 0 <= int(c) < ds.num_classes]
    if bad:
        raise ValueError(f"classes {bad} do not exist in {ds.name} ({ds.num_classes} classes: 0..{ds.num_classes - 1})")
    return DatasetSplits(train=restrict_classes(ds.train, classes), val=restrict_classes(ds.val, classes),
                         test=restrict_classes(ds.test, classes), num_classes=len(classes), name=ds.name)


def num_batches(split: ArraySplit, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches per epoch that :func:`iterate_batches` yields."""
    n = len(split)
    return n // batch_size if drop_remainder else -(-n // batch_size)


def iterate_batches(split: ArraySplit, batch_size: int, *, seed: int | None = None,
                    shuffle: bool = True, drop_remainder: bool = True,
                    epochs: int | None = 1) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{'image': uint8 [B,H,W,C], 'label': int32 [B]}`` numpy batches.

    Each epoch is a fresh permutation drawn from ``np.random.default_rng(seed)`` (so the
    whole stream is deterministic for a given seed; ``seed=None`` is non-deterministic).
    ``epochs=None`` repeats forever. With ``drop_remainder`` the last partial batch of each
    epoch is dropped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    if n == 0 or (drop_remainder and batch_size > n):
        raise ValueError(f"split of {n} examples yields no batch of size {batch_size} "
                         f"(drop_remainder={drop_remainder})")
    rng = np.random.default_rng(seed)
    epoch = 0
    while epochs is None or epoch < epochs:
        order = rng.permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_remainder else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield {"image": split.images[idx], "label": split.labels[idx]}
        epoch += 1


__all__: Sequence[str] = (
    "ArraySplit", "DatasetSplits", "pad_images", "split_train_val", "split_disjoint",
    "num_batches", "iterate_batches",
)
