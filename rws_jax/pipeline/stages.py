"""The stages of an end-to-end RWS run, each cached on disk in the run directory.

Layout of a run directory::

    <out>/config.yaml             the config the run was made with (a rerun must match)
    <out>/checkpoints/<model>/    orbax checkpoints of every trained model (fit resumes)
    <out>/signatures/<c>.rws      RWS_c (float32); <c>.q8.rws, <c>.q4.rws ... quantized
    <out>/signatures/transfer/    RWSs of the transfer dataset (for the similarity plot)
    <out>/storage/model           the standard model saved like a signature (size ratio)
    <out>/metrics/*.json          accuracies and weight statistics
    <out>/report.md, figures/     written from the metrics by :mod:`rws_jax.pipeline.report`

Rerunning a stage whose outputs exist loads them instead of recomputing.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import rws_jax as rws
from rws_jax.errors import RWSError
from rws_jax import corruptions as corruptions_lib
from rws_jax.data import (ROTATIONS, ArraySplit, DatasetSplits, class_subset, load_cifar10_corrupted, load_dataset,
                          restrict_classes, rotation_task, split_disjoint)
from rws_jax.models import get_model, unit_order, uses_batch_norm, with_fresh_head
from rws_jax.pipeline.config import PipelineConfig, run_config_from_file
from rws_jax.pipeline.presets import SEEDS
from rws_jax.training import TrainConfig, evaluate, fit, make_eval_step
from rws_jax.training.augment import normalize_images

# Names of the trained models (checkpoint sub-directories).
INIT, INIT_UPDATED, STANDARD, STANDARD_UPDATED, MIXTURE = "init", "init_updated", "standard", "standard_updated", "mixture"


def robust_name(c: str) -> str:
    return f"robust_{c}"


def transfer_name(c: str | None) -> str:
    return "transfer_standard" if c is None else f"transfer_robust_{c}"


class ConfigMismatchError(RuntimeError):
    """The run directory was made with another config."""


class Run:
    """A run directory plus its config; loads data and models lazily."""

    def __init__(self, cfg: PipelineConfig, out: str | Path, *, progress: bool = True,
                 log: Callable[[str], None] = print, force_config: bool = False, test_sets: dict | None = None):
        """``test_sets``: a dict to keep the corrupted test and validation sets in, shared
        by runs with the same data (a study's seeds); default: this run's own."""
        self.cfg = cfg
        self._test_sets = {} if test_sets is None else test_sets
        self.dir = Path(out)
        self.progress = progress
        self.log = log
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = self.dir / "config.yaml"
        if saved.exists() and not force_config:
            import yaml  # noqa: PLC0415

            # fields added since the directory was made count as their defaults
            old = {**PipelineConfig().to_dict(), **(yaml.safe_load(saved.read_text()) or {})}
            new = cfg.to_dict()
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "description")
            if diff:
                raise ConfigMismatchError(
                    f"{self.dir} was made with another config (fields {diff} differ); "
                    "use another --out, delete it, or pass --force-config to reuse its stages anyway"
                )
            return  # the same config (fields added since at their defaults): the file stays as it is
        saved.write_text(cfg.to_yaml())

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # ------------------------------------------------------------------- data
    @functools.cached_property
    def _full_data(self) -> DatasetSplits:
        c = self.cfg
        return load_dataset(c.dataset, val_size=c.val_size, seed=c.seed, data_dir=c.data_dir,
                            source=c.dataset_source, max_test=c.test_examples)

    @functools.cached_property
    def data(self) -> DatasetSplits:
        """The main dataset, restricted to ``cfg.classes`` (renumbered) when set."""
        return class_subset(self._full_data, self.cfg.classes)

    @functools.cached_property
    def halves(self) -> tuple[ArraySplit, ArraySplit]:
        """(pre-training split, fine-tuning split): disjoint halves of the training set
        (halved before any class restriction, so every run with the same seed and dataset
        has the same halves). With an imported θ_init (``init`` kind ``'torch'``) the
        fine-tuning split is the whole training set, as the reference's; the pre-training half
        then only serves an updated backbone's rotation task (images, no labels)."""
        pre, fine = split_disjoint(self._full_data.train, 2, seed=self.cfg.seed)
        if self.cfg.init_kind == "torch":  # θ_init is imported: fine-tune on all of it, as the reference
            fine = self._full_data.train
        pre, fine = (restrict_classes(s, self.cfg.classes) for s in (pre, fine))
        return pre.head(self.cfg.pretrain_examples), fine.head(self.cfg.finetune_examples)

    @functools.cached_property
    def transfer_data(self):
        c = self.cfg
        if c.transfer_dataset is None:
            return None
        if c.transfer_dataset == c.dataset:
            # same domain, other classes: the transfer models train on the fine-tuning half
            full = self._full_data
            fine = split_disjoint(full.train, 2, seed=c.seed)[1]
            ds = class_subset(DatasetSplits(train=fine, val=full.val, test=full.test.head(c.transfer_test_examples),
                                            num_classes=full.num_classes, name=full.name), c.transfer_classes)
        else:
            ds = class_subset(load_dataset(c.transfer_dataset, seed=c.seed, max_test=c.transfer_test_examples),
                              c.transfer_classes)
        if ds.image_shape != self.data.image_shape or ds.num_classes != self.data.num_classes:
            raise ValueError(
                f"transfer dataset {c.transfer_dataset} has images {ds.image_shape} and {ds.num_classes} classes; "
                f"{c.dataset} has {self.data.image_shape} and {self.data.num_classes}: they must agree"
            )
        return ds

    # ------------------------------------------------------------------ model
    @functools.cached_property
    def model(self):
        return get_model(self.cfg.model, self.data.num_classes, **self.cfg.model_kwargs)

    @functools.cached_property
    def selection(self) -> rws.Selection:
        return rws.first_k(self.cfg.keep_units, order=unit_order(self.model), collections=self.cfg.collections)

    @functools.cached_property
    def eval_step(self):
        """One compiled evaluation step, with the input normalisation the models were trained with."""
        tc = self.train_config("finetune")
        return make_eval_step(self.model.apply, mean=tc.mean, std=tc.std)

    # ------------------------------------------------------------- BatchNorm
    @functools.cached_property
    def bn_mode(self) -> str:
        """How patching treats BatchNorm: ``cfg.bn`` resolved for this model (see
        :func:`rws_jax.patch_batch_norm`); 'patch' for models without BatchNorm."""
        return self.cfg.bn_mode(uses_batch_norm(self.model)) if uses_batch_norm(self.model) else "patch"

    @functools.cached_property
    def _stats_step(self):
        tc = self.train_config("finetune")
        return rws.make_batch_stats_step(self.model.apply, lambda x: normalize_images(x, tc.mean, tc.std))

    @functools.cached_property
    def _recalibration_cache(self) -> dict:
        return {}

    def recalibration_split(self, c: str, *, transfer: bool = False) -> ArraySplit:
        """The fine-tuning split (the transfer dataset's training split when ``transfer``)
        corrupted with ``c`` at the config's severity: the data the reference re-estimates
        BatchNorm statistics on (its corrupted training set). Seeded, made once."""
        key = (c, transfer)
        if key not in self._recalibration_cache:
            split = self.transfer_data.train if transfer else self.halves[1]
            self._recalibration_cache[key] = self._corrupt_split(split, c, SEEDS.recalibration,
                                                                  SEEDS.transfer_index if transfer else 0)
        return self._recalibration_cache[key]

    def _corrupt_split(self, split: ArraySplit, c: str, seed_offset: int, index_offset: int = 0,
                       severity: int | None = None) -> ArraySplit:
        """``split`` corrupted with ``c`` at ``severity`` (default: the config's) by our JAX
        corruptions, in chunks of 500, chunk ``i`` keyed ``fold_in(fold_in(key(seed +
        seed_offset), index(c) + index_offset), i)`` (another severity than the config's
        folds in ``SEEDS.severity_fold + severity`` first): seeded and fixed."""
        idx = list(corruptions_lib.CORRUPTIONS).index(c)
        base = jax.random.fold_in(jax.random.key(self.cfg.seed + seed_offset), idx + index_offset)
        severity = self.cfg.severity if severity is None else int(severity)
        if severity != self.cfg.severity:
            base = jax.random.fold_in(base, SEEDS.severity_fold + severity)
        chunks = [np.asarray(corruptions_lib.corrupt(
            jnp.asarray(split.images[i:i + 500]), c, severity, jax.random.fold_in(base, i),
            preset=self.cfg.corruption_preset)) for i in range(0, len(split), 500)]
        return ArraySplit(np.concatenate(chunks), split.labels)

    def _recalibration_batches(self, corruptions: list[str], transfer: bool):
        bs = int(self.cfg.finetune.get("batch_size", 128))
        for c in corruptions:
            images = self.recalibration_split(c, transfer=transfer).images
            for i in range(0, len(images), bs):
                yield images[i:i + bs]

    def patched(self, base: dict, corruptions: list[str], sigs, alphas=1.0, *, mode: str = "linear",
                transfer: bool = False) -> dict:
        """``base + Σ α·RWS`` with the run's BatchNorm mode (:attr:`bn_mode`).

        ``corruptions`` names the signatures' corruptions: with ``bn='reference'`` the
        BN/shortcut tensors become the mean over those robust models θ_rob,c and the
        statistics are re-estimated on the fine-tuning data corrupted with them (the
        transfer dataset's training data for ``transfer``), mixed with the reference's
        weight (:func:`rws_jax.reference_mix`)."""
        if self.bn_mode != "reference":
            return rws.patch_batch_norm(base, sigs, alphas, bn=self.bn_mode, mode=mode)
        return rws.patch_batch_norm(
            base, sigs, alphas, bn="reference", robust=[self.robust(c) for c in corruptions],
            apply_fn=self.model.apply, batches=self._recalibration_batches(list(corruptions), transfer),
            mode=mode, step=self._stats_step)

    def train_config(self, which: str, **changes) -> TrainConfig:
        base = {"pretrain": self.cfg.pretrain, "finetune": self.cfg.finetune,
                "transfer": self.cfg.transfer_finetune}[which]
        dtype = {"compute_dtype": self.cfg.compute_dtype} if self.cfg.compute_dtype else {}
        return TrainConfig(**{"seed": self.cfg.seed, "eval_batch_size": self.cfg.eval_batch_size,
                              "corruption_preset": self.cfg.corruption_preset, "severity": self.cfg.severity,
                              **dtype, **base, **changes})

    # --------------------------------------------------------------- training
    @functools.cached_property
    def _trained(self) -> dict:
        return {}

    def _fit(self, name: str, train: ArraySplit, val: ArraySplit, tc: TrainConfig, init=None, model=None) -> dict:
        if name in self._trained:
            return self._trained[name]
        t0 = time.time()
        done = (self.dir / "checkpoints" / name / "done").exists()
        variables, history = fit(self.model if model is None else model, train, val, tc, init_variables=init,
                                 workdir=str(self.path("checkpoints", name)), progress=self.progress)
        (self.dir / "checkpoints" / name / "done").write_text(json.dumps({"best_epoch": history.get("best_epoch")}))
        if not done:
            self.log(f"  trained {name}: best val acc {history.get('best_val_accuracy'):.4f} "
                     f"(epoch {history.get('best_epoch')}) in {time.time() - t0:.0f}s")
        self._trained[name] = variables
        return variables

    @property
    def theta_init(self) -> dict:
        """θ_init for this run's model: another run's (``init_from``), or made as ``cfg.init``
        says (see :attr:`PipelineConfig.init`), with this task's head."""
        if self.cfg.init_from:
            return self._shared_init
        return self._own_init

    @functools.cached_property
    def _pretraining_task(self) -> tuple:
        """(model, train split, validation split, TrainConfig) of θ_init's own task."""
        c = self.cfg
        kind = c.init_kind
        if kind == "supervised":
            return self.model, self.halves[0], self.data.val, self.train_config("pretrain")
        pre = split_disjoint(self._full_data.train, 2, seed=c.seed)[0]  # the pre-training half, every class
        if kind == "classes":
            cls = tuple(int(k) for k in c.init["classes"])
            model = get_model(c.model, len(cls), **c.model_kwargs)
            return (model, restrict_classes(pre, cls).head(c.pretrain_examples),
                    restrict_classes(self._full_data.val, cls), self.train_config("pretrain"))
        # rotation prediction (also the torch kind's task for an updated backbone): no labels
        model = get_model(c.model, ROTATIONS, **c.model_kwargs)
        return (model, rotation_task(pre.head(c.pretrain_examples)), rotation_task(self._full_data.val),
                self.train_config("pretrain", flip=False))

    def _for_task(self, variables: dict, model) -> dict:
        """``variables`` of θ_init's own model with this task's head (fresh, seed ``cfg.seed``)."""
        if model is self.model:
            return variables
        return with_fresh_head(variables, self.model, self.data.image_shape, self.cfg.seed, always=True)

    def pretrained(self) -> dict:
        """θ_init with the head of its own task (the rotation head, the init classes' head...)."""
        model, train, val, tc = self._pretraining_task
        if self.cfg.init_kind == "torch":
            return with_fresh_head(self._imported_init, model, self.data.image_shape, self.cfg.seed, always=True)
        return self._fit(INIT, train, val, tc, model=model)

    @functools.cached_property
    def _own_init(self) -> dict:
        if self.cfg.init_kind == "torch":
            return self._imported_init
        return self._for_task(self.pretrained(), self._pretraining_task[0])

    @functools.cached_property
    def _imported_init(self) -> dict:
        """θ_init from the PyTorch checkpoint ``cfg.init['path']``, its head dropped (the
        reference's ImageNet θ_init); a grayscale dataset gets the first conv summed over RGB."""
        from rws_jax.models import from_torch_state_dict, load_torch_checkpoint  # noqa: PLC0415

        path = check_init_source(self.cfg)
        gray = self.data.image_shape[-1] == 1
        imported = from_torch_state_dict(self.cfg.model, load_torch_checkpoint(path), num_classes=self.data.num_classes,
                                         head="drop", head_seed=self.cfg.seed, first_conv="gray" if gray else "keep",
                                         **self.cfg.model_kwargs)
        return with_fresh_head(imported.variables, self.model, self.data.image_shape, self.cfg.seed)

    @functools.cached_property
    def _shared_init(self) -> dict:
        """θ_init of the run ``cfg.init_from`` (head re-initialised for another class count)."""
        src = Path(self.cfg.init_from)
        src = src if src.is_absolute() else self.dir.parent / src
        if not (src / "config.yaml").is_file():
            raise FileNotFoundError(f"init_from: {src} is not a run directory (no config.yaml); run it first")
        src_cfg = run_config_from_file(src / "config.yaml")
        same = ("dataset", "model", "model_kwargs", "seed", "val_size", "pretrain_examples", "pretrain", "init")
        diff = [k for k in same if getattr(src_cfg, k) != getattr(self.cfg, k)]
        if diff:
            raise ConfigMismatchError(f"init_from: {src} was made with other {diff}; its θ_init is not this run's")
        source = Run(src_cfg, src, progress=self.progress, log=self.log)
        return with_fresh_head(source.theta_init, self.model, self.data.image_shape, self.cfg.seed)

    @property
    def theta_init_updated(self) -> dict:
        """An updated backbone: θ_init trained further on its own pre-training task (the
        rotation task for an imported θ_init), with this task's head."""
        model, train, val, tc = self._pretraining_task
        tc = tc.replace(epochs=self.cfg.update_backbone_epochs, warmup_epochs=0.0,
                        lr=self.cfg.finetune.get("lr", 0.01), seed=self.cfg.seed + SEEDS.updated_backbone)
        return self._for_task(self._fit(INIT_UPDATED, train, val, tc, init=self.pretrained(), model=model), model)

    def finetune(self, name: str, corruption=None, *, backbone: str = INIT, replicate: int = 0) -> dict:
        """Fine-tunes from θ_init (or the updated backbone); ``replicate`` r > 0 changes only
        the seed (data order, augmentation and corruption keys)."""
        _, fine = self.halves
        init = self.theta_init if backbone == INIT else self.theta_init_updated
        tc = self.train_config("finetune", corruption=corruption,
                               seed=self.cfg.fine_tuning_seed + SEEDS.fine_tuning + SEEDS.replicate_step * replicate)
        return self._fit(name, fine, self.data.val, tc, init=init)

    def standard(self) -> dict:
        return self.finetune(STANDARD)

    def standard_updated(self) -> dict:
        return self.finetune(STANDARD_UPDATED, backbone=INIT_UPDATED)

    def robust(self, c: str, replicate: int = 0) -> dict:
        return self.finetune(robust_name(c) + (f"_seed{replicate}" if replicate else ""), c, replicate=replicate)

    def mixture(self) -> dict:
        return self.finetune(MIXTURE, tuple(self.cfg.corruptions))

    def transfer(self, c: str | None) -> dict:
        ds = self.transfer_data
        tc = self.train_config("transfer", corruption=c, seed=self.cfg.fine_tuning_seed + SEEDS.transfer)
        return self._fit(transfer_name(c), ds.train, ds.val, tc, init=self.theta_init)

    # ------------------------------------------------------------- signatures
    def signature_path(self, c: str, bits: int | None = None, *, transfer: bool = False, replicate: int = 0) -> Path:
        suffix = ("" if not replicate else f".seed{replicate}") + ("" if bits is None else f".q{bits}")
        return self.path("signatures", *(("transfer",) if transfer else ()), f"{c}{suffix}.rws")

    def signature(self, c: str, *, transfer: bool = False, replicate: int = 0) -> rws.Signature:
        """RWS_c (extracted once, then loaded from its file); ``replicate`` r > 0: from the
        robust model trained with another seed."""
        path = self.signature_path(c, transfer=transfer, replicate=replicate)
        if path.exists():
            return rws.load_signature(path)
        std = self.transfer(None) if transfer else self.standard()
        rob = self.transfer(c) if transfer else self.robust(c, replicate)
        sig = rws.extract(self.theta_init, std, rob, self.selection, name=c, severity=self.cfg.severity)
        rws.save_signature(path, sig)
        return sig

    def quantized(self, c: str, bits: int) -> rws.Signature:
        path = self.signature_path(c, bits)
        if path.exists():
            return rws.load_signature(path)
        q = rws.quantize(self.signature(c), bits)
        rws.save_signature(path, q)
        return q

    # ------------------------------------------------------------- evaluation
    def forget_transfer_test_sets(self) -> None:
        """Drops the transfer dataset's test sets from the (maybe shared) test-set cache."""
        for k in [k for k in self._test_sets if k[1] is True]:
            del self._test_sets[k]

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
        if key in self._test_sets:
            return self._test_sets[key]
        test = (self.transfer_data if transfer else self.data).test
        name, _, sev = which.partition("@")
        if which == "clean":
            out = test
        elif sev:
            if name not in corruptions_lib.CORRUPTIONS or not sev.isdigit() or not 1 <= int(sev) <= 5:
                raise ValueError(f"test set {which!r}: expected '<corruption>@<severity 1..5>'")
            out = self._corrupt_split(test, name, SEEDS.test_corruption, SEEDS.transfer_index if transfer else 0,
                                      severity=int(sev))
        elif not transfer and self.cfg.corrupted_test_mode == "official":
            out = self._official_corrupted(which, test)
        else:
            out = self._corrupt_split(test, which, SEEDS.test_corruption, SEEDS.transfer_index if transfer else 0)
        self._test_sets[key] = out
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

    @functools.cached_property
    def _accuracy_file(self) -> Path:
        return self.path("metrics", "accuracy.json")

    @functools.cached_property
    def accuracies(self) -> dict:
        f = self._accuracy_file
        return json.loads(f.read_text()) if f.exists() else {}

    def accuracy(self, variant: str, variables_fn: Callable[[], Any], test_sets: list[str], *,
                 transfer: bool = False) -> dict[str, float]:
        """Accuracy of a model variant on test sets, cached in metrics/accuracy.json."""
        have = self.accuracies.setdefault(variant, {})
        missing = [t for t in test_sets if t not in have]
        if missing:
            variables = variables_fn()
            for t in missing:
                r = evaluate(variables, self.model.apply, self.test_set(t, transfer=transfer),
                             self.cfg.eval_batch_size, eval_step=self.eval_step)
                have[t] = r["accuracy"]
            self._accuracy_file.write_text(json.dumps(self.accuracies, indent=1, sort_keys=True))
        return {t: have[t] for t in test_sets}

    def val_set(self, which: str) -> ArraySplit:
        """The validation split, clean or corrupted with ``which`` (seeded, fixed; always our
        own corruptions): what α is chosen on, never the test set."""
        key = ("val", which)
        if key not in self._test_sets:
            val = self.data.val
            if which == "clean":
                out = val
            else:
                out = self._corrupt_split(val, which, SEEDS.val_corruption)
            self._test_sets[key] = out
        return self._test_sets[key]

    def val_accuracy(self, variables: dict, which: list[str]) -> dict[str, float]:
        """Validation accuracy of ``variables`` on the clean and corrupted validation sets."""
        n = self.cfg.alpha_search_examples
        return {t: evaluate(variables, self.model.apply, self.val_set(t).head(n), self.cfg.eval_batch_size,
                            eval_step=self.eval_step)["accuracy"] for t in which}

    def merged(self, method: str, sigs: list, alphas=1.0) -> rws.Signature:
        """``rws.compose`` of ``sigs`` (``'sum'`` or a merge method) with the config's
        parameters (DARE keyed by the run's seed)."""
        c = self.cfg
        return rws.compose(sigs, alphas, method=method, density=float(c.ties_density),
                           drop_rate=float(c.dare_drop_rate), key=jax.random.key(c.seed + SEEDS.dare),
                           name=f"{method}({'+'.join(s.name for s in sigs)})")

    def save_metrics(self, name: str, data: Any) -> None:
        self.path("metrics", f"{name}.json").write_text(json.dumps(data, indent=1))

    def load_metrics(self, name: str) -> Any:
        f = self.dir / "metrics" / f"{name}.json"
        return json.loads(f.read_text()) if f.exists() else None


# ---------------------------------------------------------------------------- stages


def stage_pretrain(run: Run) -> None:
    run.log("[pretrain] θ_init")
    _ = run.theta_init


def stage_finetune_standard(run: Run) -> None:
    run.log("[finetune-standard] θ_std")
    run.standard()


def stage_finetune_robust(run: Run, corruptions: list[str] | None = None) -> None:
    for c in corruptions or run.cfg.corruptions:
        run.log(f"[finetune-robust] θ_rob,{c}")
        for r in range(run.cfg.robust_replicates):
            run.robust(c, r)
    if run.cfg.mixture and not corruptions:
        run.log("[finetune-robust] mixture of all corruptions (data-augmentation baseline)")
        run.mixture()


def stage_transfer(run: Run) -> None:
    if run.cfg.transfer_dataset is not None:
        run.log(f"[transfer] {run.cfg.transfer_dataset}: standard and robust models from the same θ_init")
        run.transfer(None)
        for c in run.cfg.corruptions:
            run.transfer(c)
    if run.cfg.update_backbone_epochs:
        run.log("[transfer] updated backbone and its standard model")
        run.standard_updated()


def stage_extract(run: Run) -> None:
    run.log("[extract] signatures")
    for c in run.cfg.corruptions:
        for r in range(run.cfg.robust_replicates):
            run.signature(c, replicate=r)
        if run.cfg.transfer_dataset is not None:
            run.signature(c, transfer=True)


def stage_quantize(run: Run, bits: list[int] | None = None) -> None:
    for b in bits or run.cfg.quant_bits:
        run.log(f"[quantize] {b}-bit signatures")
        for c in run.cfg.corruptions:
            run.quantized(c, b)


def stage_weight_stats(run: Run) -> None:
    """Claims 1 and 2: layer-wise relative change and signature similarity."""
    run.log("[analyse] layer-wise weight change and signature similarity")
    order = [u for u in unit_order(run.model)] + ["head"]
    std = run.standard()
    change = {"units": order, "standard_vs_init": _ordered(rws.relative_change(run.theta_init, std), order)}
    for c in run.cfg.corruptions:
        change[c] = _ordered(rws.relative_change(std, run.robust(c)), order)
    run.save_metrics("layer_change", change)
    run.save_metrics("mechanism", mechanism(run, order))
    sigs = {f"{run.cfg.dataset}:{c}" + (f" (seed {r + 1})" if run.cfg.robust_replicates > 1 else ""):
            run.signature(c, replicate=r) for c in run.cfg.corruptions for r in range(run.cfg.robust_replicates)}
    if run.cfg.transfer_dataset is not None:
        sigs |= {f"{run.cfg.transfer_dataset}:{c}": run.signature(c, transfer=True) for c in run.cfg.corruptions}
    run.save_metrics("similarity", {"names": list(sigs), "cosine": signature_cosines(list(sigs.values()))})


def mechanism(run: Run, order: list[str]) -> dict:
    """The projection at work, per unit in forward order: for each corruption c,
    cos(Δ_c, a) and the share ‖proj‖/‖Δ_c‖ the projection removes, and ‖Δ_c‖/‖θ_init‖; with
    a's own size ‖a‖/‖θ_init‖ (Δ_c = θ_rob,c − θ_init, a = θ_std − θ_init; see
    :func:`rws_jax.projection_diagnostics`). ``kept`` = the units the signatures keep."""
    std = run.standard()
    out: dict = {"units": order, "kept": run.selection.units(std)[: run.cfg.keep_units], "corruptions": {}}
    for c in run.cfg.corruptions:
        d = rws.projection_diagnostics(run.theta_init, std, run.robust(c), collections=run.cfg.collections)
        out["corruptions"][c] = {k: [d.get(u, {}).get(k) for u in order] for k in ("cos", "removed", "robust_change")}
        out.setdefault("clean_change", [d.get(u, {}).get("clean_change") for u in order])  # a: the same for every c
    return out


def signature_cosines(sigs: list) -> list[list[float]]:
    """``[K][K]`` cosine similarity of the signatures' flattened kept tensors."""
    vecs = [jnp.concatenate([jnp.ravel(s.deltas[p]) for p in sorted(s.deltas)]) for s in sigs]
    return [[float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30)) for b in vecs] for a in vecs]


def _ordered(d: dict, order: list[str]) -> list[float | None]:
    return [d.get(u) for u in order]


def stage_evaluate(run: Run) -> None:
    """Claims 3–6: TA/RA of every model variant on the clean and corrupted test sets."""
    cfg = run.cfg
    cs = list(cfg.corruptions)
    run.log("[evaluate] standard, robust, mixture models")
    std = run.standard
    run.accuracy("standard", std, ["clean", *cs, *severity_sets(cfg, cs)])
    for c in cs:
        run.accuracy(f"robust/{c}", lambda c=c: run.robust(c), ["clean", c, *severity_sets(cfg, [c])])
    if cfg.mixture:
        run.accuracy("mixture", run.mixture, ["clean", *cs])

    run.log("[evaluate] patched models (α sweep), quantized and composed signatures")
    for c in cs:
        sig = run.signature(c)
        for a in sorted(set(cfg.alphas) | {1.0}):
            run.accuracy(f"patched/{c}/alpha={a:g}", lambda a=a, sig=sig, c=c: run.patched(std(), [c], sig, a),
                         ["clean", c, *(severity_sets(cfg, [c]) if a == 1.0 else [])])
        for b in cfg.quant_bits:
            run.accuracy(f"patched_q{b}/{c}", lambda b=b, c=c: run.patched(std(), [c], run.quantized(c, b), 1.0),
                         ["clean", c])
    sigs = [run.signature(c) for c in cs]
    if not cfg.composition_rows:
        return _evaluate_transfer(run)
    run.accuracy("composed", lambda: run.patched(std(), cs, sigs, 1.0), ["clean", *cs])
    run.accuracy("composed_average", lambda: run.patched(std(), cs, sigs, 1.0 / len(sigs)), ["clean", *cs])
    # The reference code's default: α=1 with its (α/N)² weighting.
    run.accuracy("composed_reference_mode", lambda: run.patched(std(), cs, sigs, 1.0, mode="reference"),
                 ["clean", *cs])
    run.accuracy("composed_q8_shared_range", lambda: run.patched(std(), cs, rws.quantize_reference(sigs, 256), 1.0),
                 ["clean", *cs])
    _evaluate_transfer(run)


def severity_sets(cfg: PipelineConfig, corruptions: list[str]) -> list[str]:
    """The test-set names ``'<c>@<s>'`` of ``cfg.eval_severities`` (the config's own
    severity is the plain name ``c``)."""
    return [f"{c}@{s}" for c in corruptions for s in cfg.eval_severities if s != cfg.severity]


def _evaluate_transfer(run: Run) -> None:
    """Transfer rows of "evaluate": the transfer dataset's models, and the updated backbone."""
    cfg = run.cfg
    cs = list(cfg.corruptions)
    if cfg.transfer_dataset is not None:
        run.log(f"[evaluate] transfer to {cfg.transfer_dataset}")
        tstd = lambda: run.transfer(None)  # noqa: E731
        run.accuracy("transfer/standard", tstd, ["clean", *cs], transfer=True)
        for c in cs:
            run.accuracy(f"transfer/patched/{c}",
                         lambda c=c: run.patched(tstd(), [c], run.signature(c), 1.0, transfer=True), ["clean", c],
                         transfer=True)
            run.accuracy(f"transfer/robust/{c}", lambda c=c: run.transfer(c), ["clean", c], transfer=True)
        if cfg.transfer_dataset == cfg.dataset:
            # same domain, other classes: the transfer side's RWSs patch this side's θ_std too
            run.log("[evaluate] the other direction: RWSs of the transfer classes on this θ_std")
            for c in cs:
                run.accuracy(f"reverse/patched/{c}",
                             lambda c=c: run.patched(run.standard(), [c], run.signature(c, transfer=True), 1.0),
                             ["clean", c])
    if cfg.update_backbone_epochs:
        run.log("[evaluate] transfer to an updated backbone")
        ustd = run.standard_updated
        run.accuracy("updated/standard", ustd, ["clean", *cs])
        for c in cs:
            run.accuracy(f"updated/patched/{c}", lambda c=c: run.patched(ustd(), [c], run.signature(c), 1.0),
                         ["clean", c])


def stage_storage(run: Run) -> None:
    """Claim 7 (size half): bytes on disk of the signature files vs. the full model."""
    run.log("[storage] signature files vs. the full model file")
    model_path = run.dir / "storage" / "model"
    if not model_path.exists():
        rws.save_variables(run.path("storage", "model"), run.standard())
    model_bytes = rws.bytes_on_disk(model_path)
    rows = []
    for b in (None, *run.cfg.quant_bits):
        sizes = [rws.bytes_on_disk(run.signature_path(c, b)) for c in run.cfg.corruptions]
        mean = float(np.mean(sizes))
        rows.append({"bits": 32 if b is None else b, "signature_bytes": mean, "model_bytes": model_bytes,
                     "ratio": model_bytes / mean})
    sig = run.signature(run.cfg.corruptions[0])
    n_model = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(run.standard()))
    run.save_metrics("storage", {"rows": rows, "signature_elements": sig.num_elements(), "model_elements": n_model,
                                 "kept_tensors": len(sig.deltas)})


def stage_merge(run: Run) -> None:
    """Beyond the paper: merges (TIES, DARE) of all signatures, and α chosen on the validation
    split (per corruption, then for the set, for sum and each merge method); test accuracies of
    the choices go to metrics/accuracy.json, the searches to metrics/alpha_search.json."""
    cfg = run.cfg
    cs = list(cfg.corruptions)
    std = run.standard
    sigs = [run.signature(c) for c in cs]
    run.log(f"[merge] {', '.join(cfg.merge_methods) or 'no merge methods'} of {len(sigs)} signatures")
    for m in cfg.merge_methods:
        run.accuracy(f"composed_{m}", lambda m=m: run.patched(std(), cs, run.merged(m, sigs), 1.0), ["clean", *cs])
    if not cfg.alpha_search:
        return

    def set_patched(method: str, alphas: dict) -> dict:
        """θ_std patched with the merge (or sum) of α_c·RWS_c over all corruptions."""
        return run.patched(std(), cs, run.merged(method, sigs, [alphas[c] for c in cs]), 1.0)

    found = run.load_metrics("alpha_search") or {}
    if not {"single", "set"} <= set(found):
        run.log("[merge] α search on the validation split")
        found = {"single": {}, "set": {}, "max_ta_drop": cfg.max_ta_drop, "grid": list(cfg.alpha_grid),
                 "budget": cfg.alpha_search_budget}

        def score_fn_for(names, patched_at):
            def score(alphas):
                v = run.val_accuracy(patched_at(alphas), ["clean", *names])
                return {"ta": v["clean"], "ra": {n: v[n] for n in names}}
            return score

        for c, sig in zip(cs, sigs):
            res = rws.search_alphas(score_fn_for([c], lambda a, sig=sig, c=c: run.patched(std(), [c], sig, a[c])), [c],
                                    grid=cfg.alpha_grid, budget=cfg.alpha_search_budget, max_ta_drop=cfg.max_ta_drop)
            found["single"][c] = _search_record(res)
        for method in ("sum", *cfg.merge_methods):
            res = rws.search_alphas(score_fn_for(cs, lambda a, method=method: set_patched(method, a)), cs,
                                    grid=cfg.alpha_grid, budget=cfg.alpha_search_budget, max_ta_drop=cfg.max_ta_drop)
            found["set"][method] = _search_record(res)
        run.save_metrics("alpha_search", found)
    for c, sig in zip(cs, sigs):
        a = found["single"][c]["alphas"][c]
        run.accuracy(f"searched/{c}", lambda sig=sig, a=a, c=c: run.patched(std(), [c], sig, a), ["clean", c])
    for method, rec in found["set"].items():
        run.accuracy(f"composed_searched_{method}", lambda method=method, a=rec["alphas"]: set_patched(method, a),
                     ["clean", *cs])


def _search_record(res) -> dict:
    """A JSON-able record of an ``rws.search_alphas`` result."""
    return {"alphas": {k: float(v) for k, v in res.alphas.items()}, "objective": float(res.score),
            "metrics": res.metrics, "baseline": res.baseline, "evaluations": res.num_evaluations,
            "exhausted": bool(res.exhausted), "trace": res.table()}


STAGES = {
    "pretrain": stage_pretrain,
    "finetune-standard": stage_finetune_standard,
    "finetune-robust": stage_finetune_robust,
    "transfer": stage_transfer,
    "extract": stage_extract,
    "quantize": stage_quantize,
    "analyse": stage_weight_stats,
    "evaluate": stage_evaluate,
    "merge": stage_merge,
    "storage": stage_storage,
}


def check_corrupted_test_data(run: Run) -> None:
    """Fails before any training when the released corrupted test sets the run will be
    evaluated on (``corrupted_test`` 'official') are not prepared: one image of each."""
    c = run.cfg
    if c.corrupted_test_mode == "official":
        for name in c.corruptions:
            load_cifar10_corrupted(name, c.severity, data_dir=c.data_dir, max_examples=1)


class InitSourceError(RWSError):
    """θ_init's source (a PyTorch checkpoint) is not there."""


def check_init_source(cfg: PipelineConfig) -> str | None:
    """The checkpoint θ_init is imported from (``init`` kind ``'torch'``), checked to exist
    before any training; None for the other kinds."""
    if cfg.init_kind != "torch":
        return None
    path = cfg.init.get("path")
    if not path or not Path(path).is_file():
        where = "is not set" if not path else f"{path} does not exist"
        raise InitSourceError(
            f"θ_init is an ImageNet checkpoint and init.path {where}: download torchvision's VGG-16 weights "
            "(https://download.pytorch.org/models/vgg16-397923af.pth) on a machine with a network and pass "
            "--set init.path=FILE (.pth needs the torch extra; a numpy .npz of the state dict does not)")
    return str(path)


def run_stages(run: Run) -> None:
    """Every stage in order (each skips what is already on disk). Writes metrics, no report
    (``rws_jax.pipeline.run.run_all`` runs the stages, then writes the report)."""
    t0 = time.time()
    check_init_source(run.cfg)
    check_corrupted_test_data(run)
    for name, fn in STAGES.items():
        t = time.time()
        fn(run)
        run.log(f"  ({name}: {time.time() - t:.0f}s)")
    run.log(f"  (all stages: {time.time() - t0:.0f}s)")
