"""TFDS-backed loading via ``tfds.data_source`` (random access; TensorFlow not needed).

Needs prepared data (``tfds.builder(name, data_dir=...).download_and_prepare()`` on a
machine with a network, or a copied TFDS data dir). Nothing here downloads: we call
``tfds.data_source(..., download=False)``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rws_jax.corruptions import UnknownCorruptionError
from rws_jax.data.core import ArraySplit
from rws_jax.data.idx import DatasetNotFoundError

# Our (Hendrycks) corruption names -> TFDS cifar10_corrupted config names.
TFDS_CORRUPTION_ALIASES = {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}
# Corruption names as TFDS spells them (19 corruptions x severities 1..5 = 95 configs).
TFDS_CIFAR10_CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic", "fog", "frost",
    "frosted_glass_blur", "gaussian_blur", "gaussian_noise", "impulse_noise",
    "jpeg_compression", "motion_blur", "pixelate", "saturate", "shot_noise", "snow",
    "spatter", "speckle_noise", "zoom_blur",
)
TFDS_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10, "cifar10_corrupted": 10}


def _unknown_corruption(message: str) -> Exception:
    return UnknownCorruptionError(message)


def tfds_corruption_name(corruption: str) -> str:
    """Map a corruption name (ours or TFDS's) to the TFDS config name.

    Raises :class:`rws_jax.corruptions.UnknownCorruptionError` (a ``ValueError``) listing
    the valid names when ``corruption`` is none of the 19.
    """
    name = TFDS_CORRUPTION_ALIASES.get(corruption, corruption) if isinstance(corruption, str) else None
    if name not in TFDS_CIFAR10_CORRUPTIONS:
        ours = sorted(set(TFDS_CIFAR10_CORRUPTIONS) - set(TFDS_CORRUPTION_ALIASES.values())
                      | set(TFDS_CORRUPTION_ALIASES))
        raise _unknown_corruption(f"unknown corruption {corruption!r}; valid names: {', '.join(ours)} "
                                  f"(TFDS spellings {', '.join(TFDS_CORRUPTION_ALIASES.values())} "
                                  "are accepted too)")
    return name


def cifar10_corrupted_name(corruption: str, severity: int) -> str:
    """'glass_blur', 5 -> 'cifar10_corrupted/frosted_glass_blur_5'."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in (1, 2, 3, 4, 5):
        raise _unknown_corruption(f"severity must be an int in 1..5, got {severity!r}")
    return f"cifar10_corrupted/{tfds_corruption_name(corruption)}_{int(severity)}"


def _read_all(source: Any, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    n = len(source) if limit is None else min(limit, len(source))
    images, labels = [], []
    chunk = 1024
    batched = hasattr(source, "__getitems__")
    for start in range(0, n, chunk):
        keys = list(range(start, min(start + chunk, n)))
        records = None
        if batched:
            try:
                records = source.__getitems__(keys)
            except TypeError:  # e.g. tfds.testing.mock_data sources
                batched = False
        if records is None:
            records = [source[k] for k in keys]
        for r in records:
            images.append(np.asarray(r["image"], dtype=np.uint8))
            labels.append(int(r["label"]))
    if not images:
        raise ValueError("empty TFDS split")
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def load_tfds_split(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
                    max_examples: int | None = None) -> ArraySplit:
    """Read a whole TFDS split into memory as an :class:`ArraySplit`.

    ``name`` is a TFDS name such as 'cifar10', 'cifar100', 'fashion_mnist' or
    'cifar10_corrupted/gaussian_noise_5' (only split 'test' exists for the latter).
    Raises :class:`DatasetNotFoundError` when the data is not prepared under ``data_dir``.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415 - ~0.5 s to import; only TFDS datasets need it

    base = name.split("/")[0]
    if base == "cifar10_corrupted" and split != "test":
        raise ValueError("cifar10_corrupted has only a 'test' split (10,000 images)")
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (AssertionError, OSError, ValueError, RuntimeError, KeyError) as e:
        # tfds raises NotImplementedError (a RuntimeError) when nothing is prepared, or
        # when the data was prepared as TFRecord, which random access cannot read; with
        # the default data_dir and nothing prepared it raises KeyError ("splits is empty").
        raise DatasetNotFoundError(
            f"TFDS dataset {name!r} (split {split!r}) is not readable under data_dir="
            f"{data_dir or '~/tensorflow_datasets'} ({type(e).__name__}: {e})\n"
            f"Prepare it on a machine with a network, in a random-access format: "
            f"tfds.builder({name!r}, data_dir=..., file_format='array_record')"
            ".download_and_prepare() (or copy such a prepared TFDS data dir), then pass "
            "data_dir=...") from e
    images, labels = _read_all(source, max_examples)
    return ArraySplit(images, labels)


def load_cifar10_corrupted(corruption: str, severity: int, *,
                           data_dir: str | os.PathLike | None = None,
                           max_examples: int | None = None) -> ArraySplit:
    """The released CIFAR-10-C test set for one corruption and severity (TFDS
    ``cifar10_corrupted/<name>_<severity>``, v1.0.0): uint8 images ``[N, 32, 32, 3]`` and
    int32 labels, N = 10,000 or ``max_examples`` (the first ones).

    ``corruption`` is one of our 19 names (``glass_blur`` and ``elastic_transform`` are
    TFDS's ``frosted_glass_blur`` and ``elastic``; those spellings work too). The images
    are the CIFAR-10 test images corrupted by Hendrycks & Dietterich; TFDS stores both
    datasets' test splits in the same order (same integer keys, same shuffling salt), so
    the first N here are the corrupted versions of the first N of TFDS ``cifar10``'s test
    split.

    Raises :class:`rws_jax.corruptions.UnknownCorruptionError` for an unknown name or
    severity, and :class:`DatasetNotFoundError` (naming the config and how to prepare it)
    when the data is not prepared under ``data_dir``. Nothing is downloaded.
    """
    name = cifar10_corrupted_name(corruption, severity)
    config = name.split("/", 1)[1]
    try:
        return load_tfds_split(name, "test", data_dir=data_dir, max_examples=max_examples)
    except DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"CIFAR-10-C {corruption!r} at severity {int(severity)} (TFDS dataset 'cifar10_corrupted', "
            f"config {config!r}, split 'test') is not prepared (in a random-access format) under data_dir="
            f"{data_dir or '~/tensorflow_datasets'}.\n"
            "Either prepare it once on a machine with a network and TensorFlow, in a random-access "
            f"format: `tfds build cifar10_corrupted/{config} --file_format=array_record "
            "--data_dir=DIR` (or `tfds build cifar10_corrupted --file_format=array_record "
            "--data_dir=DIR` for all 95 configs), equivalently tfds.builder("
            f"{name!r}, data_dir=DIR, file_format='array_record').download_and_prepare(), then "
            "pass data_dir=DIR (pipeline: --set data_dir=DIR); or evaluate on test sets "
            "corrupted by rws_jax's own corruptions instead: --set corrupted_test=generated.\n"
            f"(TFDS said: {e.__cause__ and type(e.__cause__).__name__}: {e.__cause__})") from e
