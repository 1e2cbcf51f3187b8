"""The regime map's values, as code apart from its schema and rule (:mod:`rws_jax.pipeline.regime`).

Every value here was fixed before the map ran, from the issue that asked for it (issue 31) and
the study's current design; none was chosen from a verdict. The map's axes:

- θ_init kinds: rotation prediction as the study makes it; the same trained 4x longer;
  FractalDB-style fractals; supervised on the other classes (classes 5-9 of the pre-training
  half; the task is then classes 0-4); supervised on the task's own classes (the earlier
  design, where patches worked: the map's positive control);
- fine-tuning recipes: the study's current one (the reference's recipe cut to
  ``FINETUNE_EPOCHS`` epochs); its learning rate / 10; the reference's recipe at the longest
  length the budget allows (:func:`rws_jax.pipeline.regime.plan_regime`);
- one cell with the weight decay raised until the recipe's shrink factor is the reference's;
- widths 1/4 and 1/2 with the study's θ_init kind and recipe (1/8 is the grid's own width).
"""

from __future__ import annotations

from typing import Any

from rws_jax.pipeline.presets import FINETUNE_EPOCHS, REFERENCE_FINETUNE, THETA_INIT_KINDS, reference_recipe

# The corruptions, in the order: a noise, a blur, and the one whose signature the
# projection barely touched. Cutting to two drops the last (the rule cuts from the end).
REGIME_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "fog")
REGIME_BUDGET_S = 2 * 3600.0

# The study's fine-tuning recipe before the design rule (the reference's, cut to FINETUNE_EPOCHS epochs).
CURRENT_RECIPE: dict[str, Any] = reference_recipe(FINETUNE_EPOCHS)
# The reference's own length (50 epochs at ×0.1 at 20 and 40) bounds the longest recipe.
REFERENCE_EPOCHS = int(REFERENCE_FINETUNE.epochs)
# The longest recipe must be longer than the current one to be a cell of its own.
MIN_LONG_EPOCHS = FINETUNE_EPOCHS + 1
# The shrink factor of the reference's fine-tune (weight decay alone, 50 epochs of 391 steps).
REFERENCE_SHRINK = 0.649

# θ_init kinds: (label, init dict, pre-training recipe, task classes or None for all ten).
INIT_KINDS = THETA_INIT_KINDS
# The task every label-free θ_init kind is probed on for the study's design rule (issue 31):
# the other-classes kind's task, classes 0-4 (rotation and fractal θ_inits never saw them either).
COMMON_PROBE_CLASSES = (0, 1, 2, 3, 4)
# The study's θ_init kind and recipe: the wd cell and the width axis vary them.
STUDY_INIT = "rotation"
WIDTHS = (0.25, 0.5)
STUDY_WIDTH = 0.125

# What every cell runs, besides its θ_init and recipe: the study's network and data, one
# seed, and only the stages the map's row reads (no transfer, no quantization or merges,
# no α search, no other severities, the seed half of the premise off; the premise's paths at
# 5 points).
BASE: dict[str, Any] = dict(
    dataset="fashion_mnist",
    val_size=5000,
    model="vgg16",
    model_kwargs={"width": STUDY_WIDTH, "init_scheme": "he_fan_in"},
    corruptions=list(REGIME_CORRUPTIONS),
    severity=5,
    eval_severities=[],
    transfer_dataset=None,
    update_backbone_epochs=0,
    mixture=False,
    alphas=[0.5, 1.0],
    quant_bits=[],
    merge_methods=[],
    alpha_search=False,
    composition_rows=False,
    premise=True,
    premise_seeds=False,
    premise_points=5,
    robust_replicates=1,
    seed=0,
)

# What the map leaves out to fit its budget, beyond what plan_regime cuts.
REGIME_CUT = (
    "one seed per cell (the study has three for its main rows)",
    "the premise's seed half (a second θ_std and the θ_std seed 0 ↔ 1 barrier) is not measured; "
    "the θ_std ↔ θ_rob,c barriers are, at 5 points a line (the study: 11)",
    "the patched rows at α = 0.5 and 1 only; no quantization, merges, α search, transfer or other severities",
)

# Seconds a cell spends besides training and evaluation (compilation, data, checkpoints),
# added per cell by the cost model.
CELL_OVERHEAD_S = 60.0
# The file the cost model reads (written by `python -m benchmarks.study_epoch --docs ...`).
COSTS_FILE = "docs/benchmarks/study_epoch_cpu.json"

# A smoke-test map (tests, `rws-jax regime --tiny`): the first θ_init kind's current and
# lr / 10 cells on a few hundred images, one corruption, one epoch each. Not a result.
TINY_CELLS = ("rotation/current", "rotation/lr_div10")
TINY_FIELDS: dict[str, Any] = dict(
    val_size=200, pretrain_examples=256, finetune_examples=256, test_examples=200, eval_batch_size=100,
    model_kwargs={"width": 0.0625, "init_scheme": "he_fan_in"}, corruptions=["gaussian_noise"], premise_points=3,
)
TINY_EPOCHS = 1
