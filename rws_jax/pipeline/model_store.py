"""The trained models of a run: θ_init, θ_std, every θ_rob,c, the mixture model, the
transfer dataset's models and the updated backbone, each trained once into
``<run>/checkpoints/<name>/`` (orbax; an interrupted fit resumes) and loaded afterwards.

θ_init is made as the config's ``init`` says (:attr:`PipelineConfig.init`): trained on a
supervised task, a rotation task, other classes or rendered IFS fractals (FractalDB), imported
from a PyTorch checkpoint, or taken from another run (``init_from``). A second θ_std
(``standard(1)``, another training seed) serves the premise and claim 1's seed-noise floor.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from rws_jax.data import ROTATIONS, ArraySplit, fractals, restrict_classes, rotation_task
from rws_jax.errors import RWSError
from rws_jax.models import from_torch_state_dict, get_model, load_torch_checkpoint, with_fresh_head
from rws_jax.pipeline.config import PipelineConfig, run_config_from_file
from rws_jax.pipeline.metrics_files import read_metrics, write_metrics
from rws_jax.pipeline.presets import SEEDS
from rws_jax.pipeline.run_data import RunData
from rws_jax.pipeline.run_dir import ConfigMismatchError, open_run_dir, run_path
from rws_jax.training import TrainConfig, fit

Variables = dict[str, Any]

# Names of the trained models (checkpoint sub-directories).
INIT, INIT_UPDATED, STANDARD, STANDARD_UPDATED, MIXTURE = "init", "init_updated", "standard", "standard_updated", "mixture"


def robust_name(c: str) -> str:
    return f"robust_{c}"


def transfer_name(c: str | None) -> str:
    return "transfer_standard" if c is None else f"transfer_robust_{c}"


def train_config(cfg: PipelineConfig, which: str, **changes) -> TrainConfig:
    """The :class:`TrainConfig` of ``which`` ('pretrain', 'finetune' or 'transfer') under
    ``cfg``, with ``changes`` on top."""
    base = {"pretrain": cfg.pretrain, "finetune": cfg.finetune, "transfer": cfg.transfer_finetune}[which]
    dtype = {"compute_dtype": cfg.compute_dtype} if cfg.compute_dtype else {}
    return TrainConfig(**{"seed": cfg.seed, "eval_batch_size": cfg.eval_batch_size,
                          "corruption_preset": cfg.corruption_preset, "severity": cfg.severity,
                          **dtype, **base, **changes})


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


class ModelStore:
    """Trains each model of the run once and keeps it (in memory and in its checkpoint).

    ``model`` is the run's network (this task's head); every variables tree returned is
    ``{'params': ..., 'batch_stats': ...}`` for it.
    """

    def __init__(self, cfg: PipelineConfig, run_dir: Path, data: RunData, *, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.data = data
        self.progress = progress
        self.log = log
        self._trained: dict[str, Variables] = {}

    @functools.cached_property
    def model(self):
        return get_model(self.cfg.model, self.data.main.num_classes, **self.cfg.model_kwargs)

    def fit(self, name: str, train: ArraySplit, val: ArraySplit, tc: TrainConfig, init: Variables | None = None,
            model=None) -> Variables:
        """Trains ``name`` (``model``, default the run's) from ``init`` once: later calls load
        ``checkpoints/<name>``; an interrupted fit resumes from its last epoch."""
        if name in self._trained:
            return self._trained[name]
        t0 = time.time()
        done_file = self.dir / "checkpoints" / name / "done"
        done = done_file.exists()
        variables, history = fit(self.model if model is None else model, train, val, tc, init_variables=init,
                                 workdir=str(run_path(self.dir, "checkpoints", name)), progress=self.progress)
        done_file.write_text(json.dumps({"best_epoch": history.get("best_epoch")}))
        self._record_training_time(name, history, len(train.labels), tc.batch_size)
        if not done:
            self.log(f"  trained {name}: best val acc {history.get('best_val_accuracy'):.4f} "
                     f"(epoch {history.get('best_epoch')}) in {time.time() - t0:.0f}s")
        self._trained[name] = variables
        return variables

    def _record_training_time(self, name: str, history: dict, examples: int, batch_size: int) -> None:
        """``metrics/training_time.json``: per trained model, the wall seconds of each epoch's
        training steps (``fit``'s ``epoch_seconds``; epochs trained in earlier sessions keep
        theirs), the median of the epochs after the first (whose time includes compiling the
        step; the only epoch's time when there is one), the examples and the XLA flags."""
        seconds = [float(t) for t in history.get("epoch_seconds") or []]
        record = read_metrics(self.dir, "training_time") or {}
        if not seconds or record.get(name, {}).get("epoch_seconds") == seconds:
            return
        steady = sorted(seconds[1:] or seconds)
        record[name] = {"epochs": len(seconds), "epoch_seconds": seconds,
                        "median_epoch_seconds": steady[len(steady) // 2], "examples": int(examples),
                        "batch_size": int(batch_size), "xla_flags": os.environ.get("XLA_FLAGS", "")}
        write_metrics(self.dir, "training_time", record)

    # ------------------------------------------------------------------ θ_init
    @property
    def theta_init(self) -> Variables:
        """θ_init for this run's model: another run's (``init_from``), or made as ``cfg.init``
        says (see :attr:`PipelineConfig.init`), with this task's head."""
        return self._shared_init if self.cfg.init_from else self._own_init

    @functools.cached_property
    def pretraining_task(self) -> tuple:
        """(model, train split, validation split, TrainConfig) of θ_init's own task."""
        c = self.cfg
        kind = c.init_kind
        if kind == "supervised":
            return self.model, self.data.halves[0], self.data.main.val, train_config(c, "pretrain")
        if kind == "fractal":
            # formula-driven (FractalDB): one class per IFS code, rendered at the dataset's image
            # size and channels; no natural image, no label. Flips on: the classes are shapes
            # with no handedness (the task's own flip setting is about its images, not these).
            k = int(c.init.get("classes", fractals.DEFAULT_CLASSES))
            n = int(c.init.get("images_per_class", fractals.DEFAULT_IMAGES_PER_CLASS))
            train, val = fractals.fractal_splits(k, n, self.data.main.image_shape, c.seed)
            return get_model(c.model, k, **c.model_kwargs), train, val, train_config(c, "pretrain", flip=True)
        pre = self.data.pretraining_half
        if kind == "classes":
            cls = tuple(int(k) for k in c.init["classes"])
            model = get_model(c.model, len(cls), **c.model_kwargs)
            return (model, restrict_classes(pre, cls).head(c.pretrain_examples),
                    restrict_classes(self.data.full.val, cls), train_config(c, "pretrain"))
        # rotation prediction (also the torch kind's task for an updated backbone): no labels
        model = get_model(c.model, ROTATIONS, **c.model_kwargs)
        return (model, rotation_task(pre.head(c.pretrain_examples)), rotation_task(self.data.full.val),
                train_config(c, "pretrain", flip=False))

    def _for_task(self, variables: Variables, model) -> Variables:
        """``variables`` of θ_init's own model with this task's head (fresh, seed ``cfg.seed``)."""
        if model is self.model:
            return variables
        return with_fresh_head(variables, self.model, self.data.main.image_shape, self.cfg.seed, always=True)

    def pretrained(self) -> Variables:
        """θ_init with the head of its own task (the rotation head, the init classes' head...)."""
        model, train, val, tc = self.pretraining_task
        if self.cfg.init_kind == "torch":
            return with_fresh_head(self._imported_init, model, self.data.main.image_shape, self.cfg.seed, always=True)
        return self.fit(INIT, train, val, tc, model=model)

    @functools.cached_property
    def _own_init(self) -> Variables:
        if self.cfg.init_kind == "torch":
            return self._imported_init
        return self._for_task(self.pretrained(), self.pretraining_task[0])

    @functools.cached_property
    def _imported_init(self) -> Variables:
        """θ_init from the PyTorch checkpoint ``cfg.init['path']``, its head dropped (the
        reference's ImageNet θ_init); a grayscale dataset gets the first conv summed over RGB."""
        path = check_init_source(self.cfg)
        assert path is not None, "used only when init kind is 'torch', which has a checked path"
        gray = self.data.main.image_shape[-1] == 1
        imported = from_torch_state_dict(self.cfg.model, load_torch_checkpoint(path),
                                         num_classes=self.data.main.num_classes, head="drop", head_seed=self.cfg.seed,
                                         first_conv="gray" if gray else "keep", **self.cfg.model_kwargs)
        return with_fresh_head(imported.variables, self.model, self.data.main.image_shape, self.cfg.seed)

    @functools.cached_property
    def _shared_init(self) -> Variables:
        """θ_init of the run ``cfg.init_from`` (head re-initialised for another class count)."""
        assert self.cfg.init_from is not None, "used only when init_from is set"
        src = Path(self.cfg.init_from)
        src = src if src.is_absolute() else self.dir.parent / src
        if not (src / "config.yaml").is_file():
            raise FileNotFoundError(f"init_from: {src} is not a run directory (no config.yaml); run it first")
        src_cfg = run_config_from_file(src / "config.yaml")
        same = ("dataset", "model", "model_kwargs", "seed", "val_size", "pretrain_examples", "pretrain", "init")
        diff = [k for k in same if getattr(src_cfg, k) != getattr(self.cfg, k)]
        if diff:
            raise ConfigMismatchError(f"init_from: {src} was made with other {diff}; its θ_init is not this run's")
        source = ModelStore(src_cfg, open_run_dir(src_cfg, src), RunData(src_cfg, log=self.log),
                            progress=self.progress, log=self.log)
        return with_fresh_head(source.theta_init, self.model, self.data.main.image_shape, self.cfg.seed)

    @property
    def theta_init_updated(self) -> Variables:
        """An updated backbone: θ_init trained further on its own pre-training task (the
        rotation task for an imported θ_init), with this task's head."""
        model, train, val, tc = self.pretraining_task
        tc = tc.replace(epochs=self.cfg.update_backbone_epochs, warmup_epochs=0.0,
                        lr=self.cfg.finetune.get("lr", 0.01), seed=self.cfg.seed + SEEDS.updated_backbone)
        return self._for_task(self.fit(INIT_UPDATED, train, val, tc, init=self.pretrained(), model=model), model)

    # -------------------------------------------------------------- fine-tuned
    def finetune(self, name: str, corruption=None, *, backbone: str = INIT, replicate: int = 0) -> Variables:
        """Fine-tunes from θ_init (or the updated backbone); ``replicate`` r > 0 changes only
        the seed (data order, augmentation and corruption keys)."""
        _, fine = self.data.halves
        init = self.theta_init if backbone == INIT else self.theta_init_updated
        tc = train_config(self.cfg, "finetune", corruption=corruption,
                          seed=self.cfg.fine_tuning_seed + SEEDS.fine_tuning + SEEDS.replicate_step * replicate)
        return self.fit(name, fine, self.data.main.val, tc, init=init)

    def standard(self, replicate: int = 0) -> Variables:
        """θ_std: fine-tuned on clean data; ``replicate`` r > 0: with another seed (the
        premise's second θ_std and claim 1's seed-noise floor)."""
        return self.finetune(STANDARD + (f"_seed{replicate}" if replicate else ""), replicate=replicate)

    def standard_updated(self) -> Variables:
        """θ_std of the updated backbone."""
        return self.finetune(STANDARD_UPDATED, backbone=INIT_UPDATED)

    def robust(self, c: str, replicate: int = 0) -> Variables:
        """θ_rob,c: fine-tuned on data corrupted with ``c``."""
        return self.finetune(robust_name(c) + (f"_seed{replicate}" if replicate else ""), c, replicate=replicate)

    def mixture(self) -> Variables:
        """Fine-tuned on a mixture of every corruption (the data-augmentation baseline)."""
        return self.finetune(MIXTURE, tuple(self.cfg.corruptions))

    def transfer(self, c: str | None) -> Variables:
        """The transfer dataset's standard model (``c`` None) or its θ_rob,c, from the same θ_init."""
        ds = self.data.transfer
        assert ds is not None, "transfer models are trained only with a transfer_dataset"
        tc = train_config(self.cfg, "transfer", corruption=c, seed=self.cfg.fine_tuning_seed + SEEDS.transfer)
        return self.fit(transfer_name(c), ds.train, ds.val, tc, init=self.theta_init)
