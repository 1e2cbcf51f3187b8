"""Offline datasets as in-memory uint8 NHWC arrays, splits and numpy batch iterators.

Sources: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` IDX files, scikit-learn's
``digits`` (8x8 upscaled to 32x32), and prepared TFDS data (``cifar10``, ``cifar100``,
``fashion_mnist``, ``cifar10_corrupted/<name>_<severity>``) read with
``tfds.data_source`` (no TensorFlow needed). Nothing here downloads. Label-free synthetic
data: rendered IFS fractals (:mod:`rws_jax.data.fractals`, FractalDB-style).

Checkpoint selection must use ``val`` (carved from the training set), never ``test``.
"""

from rws_jax.data.core import (
    ArraySplit,
    DatasetSplits,
    class_subset,
    iterate_batches,
    num_batches,
    pad_images,
    ROTATIONS,
    restrict_classes,
    rotation_task,
    split_disjoint,
    split_train_val,
)
from rws_jax.data.datasets import DATASET_NAMES, DEFAULT_VAL_SIZE, NUM_CLASSES, load_dataset
from rws_jax.data.digits import load_digits_arrays, split_digits
from rws_jax.data.fractals import fractal_splits, ifs_codes, render_fractals
from rws_jax.data.idx import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    DatasetNotFoundError,
    IDXFormatError,
    fashion_mnist_dir,
    load_fashion_mnist_idx,
    parse_idx,
    read_idx,
)
from rws_jax.data.tfds_source import (
    TFDS_CIFAR10_CORRUPTIONS,
    TFDS_CORRUPTION_ALIASES,
    cifar10_corrupted_name,
    load_cifar10_corrupted,
    load_tfds_split,
    tfds_corruption_name,
)

__all__ = [
    "ArraySplit", "DatasetSplits", "class_subset", "iterate_batches", "num_batches", "pad_images",
    "restrict_classes", "ROTATIONS", "rotation_task",
    "split_disjoint", "split_train_val",
    "DATASET_NAMES", "DEFAULT_VAL_SIZE", "NUM_CLASSES", "load_dataset",
    "load_digits_arrays", "split_digits",
    "fractal_splits", "ifs_codes", "render_fractals",
    "DEFAULT_FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "FASHION_MNIST_ENV",
    "DatasetNotFoundError", "IDXFormatError", "fashion_mnist_dir",
    "load_fashion_mnist_idx", "parse_idx", "read_idx",
    "TFDS_CIFAR10_CORRUPTIONS", "TFDS_CORRUPTION_ALIASES", "cifar10_corrupted_name",
    "load_cifar10_corrupted", "load_tfds_split", "tfds_corruption_name",
]
