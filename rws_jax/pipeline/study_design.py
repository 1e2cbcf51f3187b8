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
   study's current number of epochs.

:func:`choose_design` applies it; the report states the rule, the values that chose, and the
shrink the chosen recipe reaches against the reference's.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from rws_jax.pipeline.presets import FINETUNE_EPOCHS

LABEL_FREE_KINDS = ("rotation", "fractal", "other_classes")
WIDTHS = (0.125, 0.25, 0.5)


@dataclasses.dataclass(frozen=True)
class StudyDesign:
    """The chosen θ_init kind, width and fine-tuning epochs, with the values that chose them."""

    init: str
    width: float
    epochs: int
    probes: dict
    epochs_by_width: dict

    def milestones(self) -> list[float]:
        """The reference's schedule shape (×0.1 at 40% and 80% of the epochs)."""
        return [0.4 * self.epochs, 0.8 * self.epochs]


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


def epochs_by_width(costs: Mapping, budget_s: float = 2.5 * 3600) -> dict[float, int]:
    """Fine-tuning epochs that fit the study's budget at each of :data:`WIDTHS`, from the file
    ``benchmarks.study_epoch`` writes (``docs/benchmarks/study_epoch_cpu.json``): its per-run
    image-epochs of one fine-tuning epoch, its per-image tuned costs per network and its
    estimate of the part of the study that does not scale with the epochs (``rest_s_estimate``,
    measured at width 1/8). At another width the VGG runs' fine-tuning costs that width's
    per-image time and the rest is scaled by the same ratio (pre-training and evaluation are
    the same network's forward and backward passes); ResNet-20's run is unchanged."""
    nets = costs["networks"]
    base = float(nets["vgg16"]["seconds_per_image_tuned"])
    out = {}
    for w in WIDTHS:
        key = "vgg16" if w == WIDTHS[0] else f"vgg16_w{w}"
        spi = float(nets[key]["seconds_per_image_tuned"])
        epoch = sum(float(r["image_epochs"]) * (spi if r["network"] == "vgg16"
                                                else float(nets[r["network"]]["seconds_per_image_tuned"]))
                    for r in costs["runs"].values())
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
