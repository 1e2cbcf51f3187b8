"""``load_dataset``: one entry point returning :class:`DatasetSplits`."""

from __future__ import annotations

import os

import numpy as np

from rws_jax.data.core import ArraySplit, DatasetSplits, pad_images, split_train_val
from rws_jax.data.digits import split_digits
from rws_jax.data.idx import load_fashion_mnist_idx
from rws_jax.data.tfds_source import load_tfds_split

DATASET_NAMES = ("fashion_mnist", "digits", "cifar10", "cifar100")
NUM_CLASSES = {"fashion_mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100}
# Validation examples carved out of the official training set by default.
DEFAULT_VAL_SIZE = {"fashion_mnist": 5000, "digits": 180, "cifar10": 5000, "cifar100": 5000}
DEFAULT_DIGITS_TEST_SIZE = 360


def load_dataset(name: str, *, val_size: int | None = None, seed: int = 0,
                 data_dir: str | os.PathLike | None = None, pad_to: int | None = 32,
                 max_train: int | None = None, max_test: int | None = None,
                 source: str | None = None, test_size: int | None = None) -> DatasetSplits:
    """Load a dataset into memory as uint8 NHWC train/val/test splits.

    Args:
      name: 'fashion_mnist', 'digits', 'cifar10' or 'cifar100'.
      val_size: validation examples carved (seeded, at random) out of the official
        training set. Defaults: 5000 (CIFAR: 45k/5k as in the paper; Fashion-MNIST:
        55k/5k), 180 for digits.
      seed: seed of the train/val (and digits' test) split.
      data_dir: Fashion-MNIST IDX directory (source 'idx'), or the TFDS data dir.
      pad_to: zero-pad smaller images symmetrically to pad_to x pad_to (28x28
        Fashion-MNIST -> 32x32); None keeps the native size. Digits are already 32x32.
      max_train: keep only the first ``max_train`` training examples (after the split;
        the split itself is random, so this is a random subset); val is unaffected.
      max_test: keep only the first ``max_test`` test examples.
      source: for 'fashion_mnist': 'idx' (default, Debian's files, see
        :func:`load_fashion_mnist_idx`) or 'tfds'. CIFAR always uses 'tfds'.
      test_size: digits only (no official test set): size of the seeded stratified test
        split (default 360 of 1797).

    ``test`` is the official test set (digits: a held-out stratified split). Select
    checkpoints and hyper-parameters on ``val``, never on ``test``.
    """
    key = name.lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)} "
                         "(CIFAR-10-C test sets: load_cifar10_corrupted)")
    val_size = DEFAULT_VAL_SIZE[key] if val_size is None else int(val_size)

    if key == "digits":
        if source not in (None, "sklearn"):
            raise ValueError("digits only comes from scikit-learn (source='sklearn')")
        train, val, test = split_digits(val_size, DEFAULT_DIGITS_TEST_SIZE if test_size is None
                                        else int(test_size), seed)
    else:
        if test_size is not None:
            raise ValueError(f"test_size only applies to 'digits'; {key} has an official test set")
        if key == "fashion_mnist" and source in (None, "idx"):
            full_train = ArraySplit(*load_fashion_mnist_idx("train", data_dir))
            test = ArraySplit(*load_fashion_mnist_idx("test", data_dir))
        elif source in (None, "tfds"):
            full_train = load_tfds_split(key, "train", data_dir=data_dir)
            test = load_tfds_split(key, "test", data_dir=data_dir, max_examples=max_test)
        else:
            raise ValueError(f"unknown source {source!r} for {key}; valid: "
                             + ("'idx', 'tfds'" if key == "fashion_mnist" else "'tfds'"))
        train, val = split_train_val(full_train, val_size, seed)

    train = train.head(max_train)
    test = test.head(max_test)
    if pad_to is not None:
        train, val, test = (ArraySplit(pad_images(s.images, pad_to), s.labels)
                            for s in (train, val, test))
    if not (test.images.flags.writeable and test.labels.flags.writeable):
        test = ArraySplit(np.array(test.images), np.array(test.labels))  # un-share the cache
    return DatasetSplits(train=train, val=val, test=test,
                         num_classes=NUM_CLASSES[key], name=key)
