"""The reproduction study's design, chosen by a rule fixed before the regime map was seen
(issue 31, item 2). Properties of θ_init, the network and the recipe decide it, never a verdict:

1. **θ_init kind**: the best linear probe among the kinds that never saw a label of the
   study's task: rotation, fractal, and supervised on disjoint classes (the reference's own
   kind: ImageNet's labels are disjoint from CIFAR-10's). The probes are compared on one task,
   :data:`regime_presets.COMMON_PROBE_CLASSES` (the disjoint-classes kind's task, which none
   of the three saw), read from the regime map's rows (``probe_common`` of each kind's cell
   with the study's recipe at width 1/8). Ties go to the kind listed first.
2. **Width and epochs**: the reference's recipe with one cut, the number of epochs (its
   learning rate, momentum, weight decay and the schedule's shape unchanged): as many epochs
   as fit the study's budget, at the widest of widths 1/8, 1/4, 1/2 where that is at least the
   study's current number of epochs. The epochs are counted for the study built on the chosen
   kind (:func:`rws_jax.pipeline.presets.reproduce_study`): with the other-classes kind the
   task is classes 0-4, half the images.

:func:`design_from_map` applies it; the regime map writes its result into ``regime.json``
and the report states the rule, the values that chose, and the
shrink the chosen recipe reaches against the reference's.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from rws_jax.pipeline.config import Study
from rws_jax.pipeline.presets import FINETUNE_EPOCHS, reference_recipe, reproduce_study
from rws_jax.pipeline.regime_presets import REFERENCE_SHRINK
from rws_jax.pipeline.run_data import RunData
from rws_jax.training import TrainConfig, weight_decay_shrink

LABEL_FREE_KINDS = ("rotation", "fractal", "other_classes")
WIDTHS = (0.125, 0.25, 0.5)
STUDY_BUDGET_S = 2.5 * 3600


@dataclasses.dataclass(frozen=True)
class StudyDesign:
    """The chosen θ_init kind, width and fine-tuning epochs, with the values that chose them:
    ``probes`` (kind → probe on the common task), ``epochs_by_width`` (width → epochs that
    fit), and the shrink factor the chosen recipe reaches on the main runs' fine-tuning split."""

    init: str
    width: float
    epochs: int
    probes: dict
    epochs_by_width: dict
    shrink: float | None = None

    def milestones(self) -> list[float]:
        """The reference's schedule shape (×0.1 at 40% and 80% of the epochs)."""
        return [0.4 * self.epochs, 0.8 * self.epochs]

    def to_dict(self) -> dict:
        return {"init": self.init, "width": self.width, "epochs": self.epochs, "probes": dict(self.probes),
                "epochs_by_width": {str(k): v for k, v in self.epochs_by_width.items()}, "shrink": self.shrink,
                "reference_shrink": REFERENCE_SHRINK, "current_epochs": FINETUNE_EPOCHS,
                "label_free_kinds": list(LABEL_FREE_KINDS), "widths": list(WIDTHS),
                "budget_s": STUDY_BUDGET_S}


def probes_from_rows(rows: list[dict]) -> dict[str, float]:
    """``probe_common`` of each label-free kind's cell with the study's recipe at width 1/8."""
    out = {}
    for row in rows:
        if (row.get("init") in LABEL_FREE_KINDS and row.get("recipe") == "current" and row.get("width") == WIDTHS[0]
                and row.get("probe_common") is not None):
            out[row["init"]] = float(row["probe_common"])
    return out


def choose_init(probes: Mapping[str, float]) -> str:
    """The label-free kind with the best probe (ties: the first in :data:`LABEL_FREE_KINDS`)."""
    missing = [k for k in LABEL_FREE_KINDS if k not in probes]
    if missing:
        raise ValueError(f"the design rule needs the probe of every label-free θ_init kind; missing: {missing}")
    return max(LABEL_FREE_KINDS, key=lambda k: (probes[k], -LABEL_FREE_KINDS.index(k)))


def choose_width(epochs_by_width: Mapping[float, int], current: int = FINETUNE_EPOCHS) -> tuple[float, int]:
    """The widest width whose epochs that fit are at least ``current``, with those epochs."""
    ok = [w for w in WIDTHS if int(epochs_by_width.get(w, 0)) >= current]
    if not ok:
        raise ValueError(f"no width fits {current} epochs in the budget: {dict(epochs_by_width)}")
    w = max(ok)
    return w, int(epochs_by_width[w])


def study_finetune_image_epochs(study: Study, premise: bool = True) -> dict[str, dict]:
    """Per run of ``study``: its network, the models trained with its ``finetune`` recipe (θ_std
    and, with ``premise``, the premise's second θ_std; θ_rob,c per corruption and replicate;
    the mixture model; the updated backbone's θ_std), its fine-tuning examples, and the
    image-epochs of one fine-tuning epoch (those models x the examples, plus the transfer
    models where the transfer recipe is the fine-tuning recipe). Reads the datasets' sizes."""
    out = {}
    for name, _ in study.runs:
        cfg = study.config(name)
        data = RunData(cfg, log=lambda *_: None)
        n_fine = len(data.halves[1].labels)
        models = ((2 if premise and cfg.premise and cfg.premise_seeds else 1)
                  + len(cfg.corruptions) * cfg.robust_replicates
                  + int(bool(cfg.mixture)) + int(bool(cfg.update_backbone_epochs)))
        images = models * n_fine
        transfer = data.transfer if cfg.transfer_dataset is not None else None
        if transfer is not None and dict(cfg.transfer_finetune) == dict(cfg.finetune):
            images += (1 + len(cfg.corruptions)) * len(transfer.train.labels)
        out[name] = {"network": cfg.model, "models": models, "finetune_examples": n_fine, "image_epochs": images}
    return out


def epochs_by_width(costs: Mapping, runs: Mapping | None = None, budget_s: float = STUDY_BUDGET_S) -> dict[float, int]:
    """Fine-tuning epochs that fit the study's budget at each of :data:`WIDTHS`, from the file
    ``benchmarks.study_epoch`` writes (``docs/benchmarks/study_epoch_cpu.json``): the per-image tuned
    costs per network and its estimate of the part of the study that does not scale with the
    epochs (``rest_s_estimate``, measured at width 1/8), with the image-epochs of one
    fine-tuning epoch per run of ``runs`` (:func:`study_finetune_image_epochs`; default: the
    file's own, the study it timed). At another width the VGG runs' fine-tuning costs that
    width's per-image time and the rest is scaled by the same ratio (pre-training and
    evaluation are the same network's forward and backward passes); ResNet-20's run is
    unchanged."""
    nets = costs["networks"]
    runs = costs["runs"] if runs is None else runs
    base = float(nets["vgg16"]["seconds_per_image_tuned"])
    out = {}
    for w in WIDTHS:
        key = "vgg16" if w == WIDTHS[0] else f"vgg16_w{w}"
        spi = float(nets[key]["seconds_per_image_tuned"])
        epoch = sum(float(r["image_epochs"]) * (spi if r["network"] == "vgg16"
                                                else float(nets[r["network"]]["seconds_per_image_tuned"]))
                    for r in runs.values())
        rest = float(costs["rest_s_estimate"]) * spi / base
        out[w] = max(0, int((budget_s - rest) // epoch))
    return out


def choose_design(rows: list[dict], epochs_by_width: Mapping[float, int],
                  current: int = FINETUNE_EPOCHS) -> StudyDesign:
    """The rule of the module docstring, from the regime map's rows and the epochs that fit
    the study's budget at each width."""
    probes = probes_from_rows(rows)
    init = choose_init(probes)
    width, epochs = choose_width(epochs_by_width, current)
    return StudyDesign(init, width, epochs, probes, {float(k): int(v) for k, v in epochs_by_width.items()})


def design_from_map(rows: list[dict], costs: Mapping,
                    runs_for: Callable[[Study], Mapping] = study_finetune_image_epochs) -> StudyDesign:
    """The whole rule: the θ_init kind from the map's probes, then the epochs that fit at each
    width for the study built on that kind (:func:`rws_jax.pipeline.presets.reproduce_study`;
    a kind that changes the task changes the fine-tuning images), the widest width that fits
    at least the current epochs, and the shrink of the chosen recipe on seed 0's fine-tuning
    split."""
    probes = probes_from_rows(rows)
    init = choose_init(probes)
    runs = runs_for(reproduce_study(init, WIDTHS[0], FINETUNE_EPOCHS))
    fits = epochs_by_width(costs, runs)
    width, epochs = choose_width(fits)
    examples = int(runs["vgg16_seed0"]["finetune_examples"])
    shrink = weight_decay_shrink(TrainConfig(**reference_recipe(epochs)), num_examples=examples)
    return StudyDesign(init, width, epochs, probes, fits, float(shrink))
