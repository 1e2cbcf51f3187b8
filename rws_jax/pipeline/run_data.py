"""The data of one run: the dataset, its pre-training and fine-tuning halves, the transfer
dataset, and the corrupted copies the run is evaluated and recalibrated on.

Everything is loaded or generated on first use and kept in memory; corrupted test and
validation sets can live in a cache shared by runs with the same data (a study's seeds).
Corrupted copies are made by our JAX corruptions, seeded and fixed
(:func:`corrupt_split`), except the released CIFAR-10-C test sets of ``corrupted_test:
official``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax import corruptions as corruptions_lib
from rws_jax.data import (ArraySplit, DatasetSplits, class_subset, load_cifar10_corrupted, load_dataset,
                          restrict_classes, split_disjoint)
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.presets import SEEDS

CHUNK = 500  # images corrupted per call (each chunk keyed by its own index)


def corrupt_split(cfg: PipelineConfig, split: ArraySplit, c: str, seed_offset: int, index_offset: int = 0,
                  severity: int | None = None) -> ArraySplit:
    """``split`` corrupted with ``c`` at ``severity`` (default: the config's) by our JAX
    corruptions, in chunks of 500, chunk ``i`` keyed ``fold_in(fold_in(key(seed +
    seed_offset), index(c) + index_offset), i)`` (another severity than the config's
    folds in ``SEEDS.severity_fold + severity`` first): seeded and fixed. Labels unchanged."""
    idx = list(corruptions_lib.CORRUPTIONS).index(c)
    base = jax.random.fold_in(jax.random.key(cfg.seed + seed_offset), idx + index_offset)
    severity = cfg.severity if severity is None else int(severity)
    if severity != cfg.severity:
        base = jax.random.fold_in(base, SEEDS.severity_fold + severity)
    chunks = [np.asarray(corruptions_lib.corrupt(
        jnp.asarray(split.images[i:i + CHUNK]), c, severity, jax.random.fold_in(base, i),
        preset=cfg.corruption_preset)) for i in range(0, len(split), CHUNK)]
    return ArraySplit(np.concatenate(chunks), split.labels)


def check_corrupted_test_data(cfg: PipelineConfig) -> None:
    """Fails before any training when the released corrupted test sets the run will be
    evaluated on (``corrupted_test`` 'official') are not prepared: one image of each."""
    if cfg.corrupted_test_mode == "official":
        for name in cfg.corruptions:
            load_cifar10_corrupted(name, cfg.severity, data_dir=cfg.data_dir, max_examples=1)


class RunData:
    """The datasets of one run (``cfg``), loaded once.

    Attributes (loaded on first use):
      full: the dataset with every class (train / val / test splits).
      main: ``full`` restricted to ``cfg.classes`` (renumbered) when set.
      halves: ``(pre-training split, fine-tuning split)``.
      transfer: the transfer dataset's splits (None without one).
    """

    def __init__(self, cfg: PipelineConfig, *, corrupted_cache: dict | None = None,
                 log: Callable[[str], None] = print):
        """``corrupted_cache``: a dict to keep the corrupted test and validation sets in,
        shared by runs with the same data (a study's seeds); default: this run's own."""
        self.cfg = cfg
        self.log = log
        self._corrupted = {} if corrupted_cache is None else corrupted_cache
        self._recalibration: dict = {}

    @functools.cached_property
    def full(self) -> DatasetSplits:
        c = self.cfg
        return load_dataset(c.dataset, val_size=c.val_size, seed=c.seed, data_dir=c.data_dir,
                            source=c.dataset_source, max_test=c.test_examples)

    @functools.cached_property
    def main(self) -> DatasetSplits:
        """The main dataset, restricted to ``cfg.classes`` (renumbered) when set."""
        return class_subset(self.full, self.cfg.classes)

    @functools.cached_property
    def pretraining_half(self) -> ArraySplit:
        """The first of two disjoint halves of the training set, every class: θ_init's data."""
        return split_disjoint(self.full.train, 2, seed=self.cfg.seed)[0]

    @functools.cached_property
    def halves(self) -> tuple[ArraySplit, ArraySplit]:
        """(pre-training split, fine-tuning split): disjoint halves of the training set
        (halved before any class restriction, so every run with the same seed and dataset
        has the same halves). With an imported θ_init (``init`` kind ``'torch'``) the
        fine-tuning split is the whole training set, as the reference's; the pre-training half
        then only serves an updated backbone's rotation task (images, no labels)."""
        pre, fine = split_disjoint(self.full.train, 2, seed=self.cfg.seed)
        if self.cfg.init_kind == "torch":  # θ_init is imported: fine-tune on all of it, as the reference
            fine = self.full.train
        pre, fine = (restrict_classes(s, self.cfg.classes) for s in (pre, fine))
        return pre.head(self.cfg.pretrain_examples), fine.head(self.cfg.finetune_examples)

    @functools.cached_property
    def transfer(self) -> DatasetSplits | None:
        c = self.cfg
        if c.transfer_dataset is None:
            return None
        if c.transfer_dataset == c.dataset:
            # same domain, other classes: the transfer models train on the fine-tuning half
            full = self.full
            fine = split_disjoint(full.train, 2, seed=c.seed)[1]
            ds = class_subset(DatasetSplits(train=fine, val=full.val, test=full.test.head(c.transfer_test_examples),
                                            num_classes=full.num_classes, name=full.name), c.transfer_classes)
        else:
            ds = class_subset(load_dataset(c.transfer_dataset, seed=c.seed, max_test=c.transfer_test_examples),
                              c.transfer_classes)
        if ds.image_shape != self.main.image_shape or ds.num_classes != self.main.num_classes:
            raise ValueError(
                f"transfer dataset {c.transfer_dataset} has images {ds.image_shape} and {ds.num_classes} classes; "
                f"{c.dataset} has {self.main.image_shape} and {self.main.num_classes}: they must agree"
            )
        return ds

    def sizes(self) -> dict[str, int]:
        """Images per split: ``pretrain`` and ``finetune`` halves, ``val`` and ``test``."""
        pre, fine = self.halves
        return {"pretrain": len(pre), "finetune": len(fine), "val": len(self.main.val), "test": len(self.main.test)}

    # ------------------------------------------------------------ corrupted copies
    def test_set(self, which: str, *, transfer: bool = False) -> ArraySplit:
        """The clean test split (``which='clean'``), or the corrupted test set of ``which``
        at the config's severity (``'<corruption>@<severity>'``: at that severity, always
        generated by our corruptions).

        Main dataset with ``cfg.corrupted_test_mode == 'official'`` (the default for
        cifar10): the released CIFAR-10-C (TFDS ``cifar10_corrupted``), its first
        ``test_examples`` images, i.e. the corrupted versions of the clean test images.
        Otherwise, and always for the transfer dataset: the clean test split corrupted by
        our JAX corruptions (``corruption_preset`` constants, seeded, fixed).
        """
        key = (which, transfer)
        if key in self._corrupted:
            return self._corrupted[key]
        splits = self.transfer if transfer else self.main
        assert splits is not None, "transfer test sets are asked for only with a transfer_dataset"
        test = splits.test
        name, _, sev = which.partition("@")
        index_offset = SEEDS.transfer_index if transfer else 0
        if which == "clean":
            out = test
        elif sev:
            if name not in corruptions_lib.CORRUPTIONS or not sev.isdigit() or not 1 <= int(sev) <= 5:
                raise ValueError(f"test set {which!r}: expected '<corruption>@<severity 1..5>'")
            out = corrupt_split(self.cfg, test, name, SEEDS.test_corruption, index_offset, severity=int(sev))
        elif not transfer and self.cfg.corrupted_test_mode == "official":
            out = self._official_corrupted(which, test)
        else:
            out = corrupt_split(self.cfg, test, which, SEEDS.test_corruption, index_offset)
        self._corrupted[key] = out
        return out

    def _official_corrupted(self, which: str, clean: ArraySplit) -> ArraySplit:
        """CIFAR-10-C for ``which``, truncated like the clean test split; warns when its labels
        do not match the clean ones (data prepared differently: RA is then still measured,
        but not on the same images as TA)."""
        c = self.cfg
        out = load_cifar10_corrupted(which, c.severity, data_dir=c.data_dir, max_examples=c.test_examples)
        if len(out) != len(clean) or not np.array_equal(out.labels, clean.labels):
            same = float(np.mean(out.labels[: len(clean)] == clean.labels[: len(out)])) if len(out) and len(clean) else 0.0
            self.log(f"  warning: CIFAR-10-C {which} has {len(out)} images whose labels agree with the clean test "
                     f"split's ({len(clean)} images) on {100 * same:.1f}%; expected the same images in the same "
                     "order (TFDS cifar10 and cifar10_corrupted prepared alike)")
        return out

    def val_set(self, which: str) -> ArraySplit:
        """The validation split, clean or corrupted with ``which`` (seeded, fixed; always our
        own corruptions): what α is chosen on, never the test set."""
        key = ("val", which)
        if key not in self._corrupted:
            val = self.main.val
            self._corrupted[key] = val if which == "clean" else corrupt_split(self.cfg, val, which, SEEDS.val_corruption)
        return self._corrupted[key]

    def recalibration_split(self, c: str, *, transfer: bool = False) -> ArraySplit:
        """The fine-tuning split (the transfer dataset's training split when ``transfer``)
        corrupted with ``c`` at the config's severity: the data the reference re-estimates
        BatchNorm statistics on (its corrupted training set). Seeded, made once."""
        key = (c, transfer)
        if key not in self._recalibration:
            if transfer:
                assert self.transfer is not None, "transfer recalibration is asked for only with a transfer_dataset"
                split = self.transfer.train
            else:
                split = self.halves[1]
            self._recalibration[key] = corrupt_split(self.cfg, split, c, SEEDS.recalibration,
                                                     SEEDS.transfer_index if transfer else 0)
        return self._recalibration[key]

    def forget_transfer_test_sets(self) -> None:
        """Drops the transfer dataset's test sets from the (maybe shared) corrupted-set cache."""
        for k in [k for k in self._corrupted if k[1] is True]:
            del self._corrupted[k]
