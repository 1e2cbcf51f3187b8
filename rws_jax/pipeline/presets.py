"""The pipeline's config values, as code apart from the schema (:mod:`rws_jax.pipeline.config`):
the named presets, the ``reproduce`` study, and the table of seed offsets every random
stream of a run is keyed by; plus :func:`preset` and :func:`load_config`, which turn a name
or a config file into a :class:`PipelineConfig`.

A config file is YAML (``*.yaml``/``*.yml``) or Python (``*.py`` defining ``CONFIG``, a
dict or a :class:`PipelineConfig`). Either may name a ``preset`` to start from and
override any field.
"""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import yaml

from rws_jax.pipeline.config import PipelineConfig, Study, apply_overrides
from rws_jax.training import TrainConfig


@dataclasses.dataclass(frozen=True)
class SeedOffsets:
    """Every random stream of a run, keyed by ``cfg.seed`` (data, θ_init, test and
    validation corruptions) or ``cfg.fine_tuning_seed`` (the fine-tuning runs) plus one of
    these offsets, so that no two streams share a key. Named once, here."""

    fine_tuning: int = 2           # θ_std, θ_rob,c, mixture: fine_tuning_seed + 2 (+ replicate · replicate_step)
    replicate_step: int = 1000     # the r-th extra robust model of a corruption (claim 2's seeds)
    transfer: int = 3              # the transfer dataset's models: fine_tuning_seed + 3
    updated_backbone: int = 1      # θ_init trained further (the updated backbone): seed + 1
    test_corruption: int = 777     # corrupted test sets: key(seed + 777), folded with the corruption's index
    val_corruption: int = 333      # corrupted validation sets (α search)
    recalibration: int = 555       # BatchNorm re-estimation data (the corrupted fine-tuning split)
    transfer_index: int = 100      # added to the corruption's index for the transfer dataset's sets
    severity_fold: int = 50        # another severity than the config's: fold_in(key, 50 + severity)
    dare: int = 4242               # the DARE merge's drop masks
    detector: int = 9090           # the corruption detector's training (auto-patching)
    stream_order: int = 0          # the mixed test stream's batch order: seed + 0 + batch size
    probe: int = 7070              # the randomly initialised network θ_init's linear probe is compared with
    composition: int = 6060        # which triples of signatures claim 5 samples when there are more than 10


SEEDS = SeedOffsets()

# The reference's fine-tuning recipe (CIFAR-10, VGG-16) and its length: 50 epochs of 391
# steps (50,000 images at batch 128); the shrink factor of every run is reported beside its.
REFERENCE_FINETUNE = TrainConfig.reference_cifar()
REFERENCE_FINETUNE_STEPS = 50 * 391

# Grayscale Fashion-MNIST: no horizontal flip; inputs standardised with its pixel mean/std
# (without it the 13-conv VGG-16 without BatchNorm barely trains in a few epochs).
GRAYSCALE = {"flip": False, "mean": [0.286], "std": [0.353]}

# ~10 minutes on 2 CPU cores: a narrow VGG-16 on Fashion-MNIST, four corruptions.
_OFFLINE = dict(
    name="offline",
    description="Fashion-MNIST (Debian IDX files), VGG-16 at width 1/8, 4 corruptions; minutes on 2 CPU cores",
    dataset="fashion_mnist",
    val_size=1000,
    pretrain_examples=12000,
    finetune_examples=4000,
    test_examples=2000,
    transfer_dataset="digits",
    model="vgg16",
    model_kwargs={"width": 0.125, "init_scheme": "he_fan_in"},
    corruptions=["gaussian_noise", "defocus_blur", "fog", "contrast"],
    pretrain=dict(epochs=3, batch_size=64, lr=0.02, schedule="cosine", warmup_epochs=0.2, **GRAYSCALE),
    finetune=dict(epochs=2, batch_size=64, lr=0.01, schedule="cosine", **GRAYSCALE),
    transfer_finetune=dict(epochs=8, batch_size=32, lr=0.02, schedule="cosine", **GRAYSCALE),
    update_backbone_epochs=1,
    robust_replicates=2,
)
_ONE_EPOCH = dict(epochs=1, batch_size=64, schedule="constant", **GRAYSCALE)

PRESETS: dict[str, dict] = {
    "offline": _OFFLINE,
    # Seconds-scale, for tests: the offline preset's stages on a few hundred images.
    "tiny": dict(
        _OFFLINE,
        name="tiny",
        description="smoke test of every stage on a few hundred images",
        val_size=200, pretrain_examples=512, finetune_examples=256, test_examples=200, transfer_test_examples=100,
        model_kwargs={"width": 0.0625, "init_scheme": "he_fan_in"},
        keep_units=3,
        corruptions=["gaussian_noise", "contrast"],
        alphas=[0.0, 0.5, 1.0, 2.0],
        quant_bits=[8, 4],
        alpha_grid=[0.0, 0.5, 1.0],
        alpha_search_budget=4,
        premise_points=5,
        pretrain=dict(_ONE_EPOCH, lr=0.02),
        finetune=dict(_ONE_EPOCH, lr=0.01),
        transfer_finetune=dict(_ONE_EPOCH, lr=0.01),
        eval_batch_size=100,
    ),
    # The full Fashion-MNIST run: all training data, VGG-16 at width 1/2, 8 corruptions.
    "fashion_mnist_full": dict(
        name="fashion_mnist_full",
        description="Fashion-MNIST, VGG-16 at width 1/2, 8 corruptions, reference-like schedule (hours on CPU)",
        dataset="fashion_mnist",
        val_size=5000,
        transfer_dataset="digits",
        model="vgg16",
        model_kwargs={"width": 0.5, "init_scheme": "he_fan_in"},
        corruptions=[
            "gaussian_noise", "impulse_noise", "defocus_blur", "motion_blur",
            "fog", "contrast", "pixelate", "jpeg_compression",
        ],
        pretrain=dict(epochs=20, batch_size=128, lr=0.02, schedule="cosine", warmup_epochs=1, **GRAYSCALE),
        finetune=dict(epochs=10, batch_size=128, lr=0.01, schedule="step", milestones=[5, 8], **GRAYSCALE),
        transfer_finetune=dict(epochs=20, batch_size=64, lr=0.01, schedule="cosine", **GRAYSCALE),
        update_backbone_epochs=5,
        robust_replicates=2,
    ),
}

# CIFAR presets: the reference's experiment (docs/design.md) with TFDS data, for TPU/GPU users:
# θ_init = torchvision's ImageNet VGG-16 with its head dropped (init.path: the run refuses to
# start without it), fine-tuned with the reference recipe on the whole training split.
_REFERENCE = dict(
    epochs=50, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="step", milestones=[20, 40]
)
# The reference's input normalisation (its NormalizeByChannelMeanStd layer).
_NORMALIZE = {"cifar10": dict(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616]),
              "cifar100": dict(mean=[0.5071, 0.4866, 0.4409], std=[0.2673, 0.2564, 0.2762])}
_IMAGENET_VGG16 = {"kind": "torch", "path": None, "head": "drop"}
_ALL19 = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
]
for _name, _ds, _other in (("cifar10_vgg16", "cifar10", "cifar100"), ("cifar100_vgg16", "cifar100", "cifar10")):
    PRESETS[_name] = dict(
        name=_name,
        description=f"{_ds} with tensorflow-datasets, VGG-16 (no BN) from ImageNet weights (init.path), reference "
                    "recipe, all 19 corruptions",
        dataset=_ds,
        val_size=5000,
        transfer_dataset=None,
        model="vgg16",
        model_kwargs={},
        corruptions=_ALL19,
        keep_units=7,
        init=dict(_IMAGENET_VGG16),
        # pretrain: only the updated backbone's rotation task (θ_init itself is imported)
        pretrain=dict(_REFERENCE, **_NORMALIZE[_ds]),
        finetune=dict(_REFERENCE, **_NORMALIZE[_ds]),
        transfer_finetune=dict(_REFERENCE, **_NORMALIZE[_ds]),
        update_backbone_epochs=10,
        # RA on the released CIFAR-10-C as the reference; CIFAR-100 has none in TFDS.
        corrupted_test="official" if _ds == "cifar10" else "generated",
    )

# Colab-sized CIFAR-10 (fits a free Colab session; estimated times in docs/benchmarks/colab_estimate.md,
# written by benchmarks/colab_estimate.py): the reference recipe, shorter, 4 corruptions, and a
# θ_init that needs no download: rotation prediction on the other half of the training split.
PRESETS["cifar10_vgg16_colab"] = dict(
    PRESETS["cifar10_vgg16"],
    name="cifar10_vgg16_colab",
    description="cifar10 with tensorflow-datasets, VGG-16 (no BN), θ_init by rotation prediction (no labels, no "
                "download), reference recipe shortened to 5 (x 4 rotations) + 10 epochs, 4 corruptions, no mixture "
                "model: sized for a free Colab session",
    corruptions=["gaussian_noise", "defocus_blur", "fog", "contrast"],
    init={"kind": "rotation"},
    # 5 epochs over the 4 rotations of the pre-training half: as many images as 20 plain epochs
    pretrain=dict(_REFERENCE, epochs=5, milestones=[2.5, 3.75], **_NORMALIZE["cifar10"]),
    finetune=dict(_REFERENCE, epochs=10, milestones=[5, 8], **_NORMALIZE["cifar10"]),
    transfer_finetune=dict(_REFERENCE, epochs=10, milestones=[5, 8], **_NORMALIZE["cifar10"]),
    update_backbone_epochs=2,
    mixture=False,
)


# The corruptions of `reproduce`: grayscale-meaningful ones from each family (noise, blur,
# weather, digital). saturate is a no-op on grayscale; frost/snow/spatter paint coloured
# textures; the rest are cut to fit the budget (see Study.cut).
REPRODUCE_CORRUPTIONS = ("gaussian_noise", "impulse_noise", "defocus_blur", "motion_blur",
                         "fog", "contrast", "pixelate", "jpeg_compression")

# The fine-tuning epochs of the study before issue 31's design rule (the regime map's "current"
# recipe and the rule's floor): the reference's recipe cut to 4 epochs.
FINETUNE_EPOCHS = 4


def reference_recipe(epochs: int) -> dict:
    """The reference's fine-tuning recipe (SGD 0.01, momentum 0.9, wd 5e-4, batch 128, ×0.1 at
    40% and 80% of the epochs, crop + flip) cut to ``epochs``, on grayscale inputs."""
    return dict(epochs=epochs, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="step",
                milestones=[0.4 * epochs, 0.8 * epochs], augment=True, flip=True, mean=GRAYSCALE["mean"],
                std=GRAYSCALE["std"])


# How θ_init is made (the study and the regime map): (label, init dict, pre-training recipe,
# the task's classes or None for all ten). A θ_init supervised on classes 5-9 of the
# pre-training half makes the task classes 0-4, which it never saw (the reference's kind:
# ImageNet's labels are disjoint from CIFAR-10's).
PRETRAIN_INIT: dict = dict(epochs=5, batch_size=128, lr=0.03, schedule="cosine", warmup_epochs=0.25, **GRAYSCALE)
THETA_INIT_KINDS: tuple[tuple[str, dict, dict, list | None], ...] = (
    ("rotation", {"kind": "rotation"}, PRETRAIN_INIT, None),
    ("rotation_4x", {"kind": "rotation"}, dict(PRETRAIN_INIT, epochs=4 * PRETRAIN_INIT["epochs"]), None),
    ("fractal", {"kind": "fractal"}, PRETRAIN_INIT, None),
    ("other_classes", {"kind": "classes", "classes": [5, 6, 7, 8, 9]}, dict(PRETRAIN_INIT, epochs=8), [0, 1, 2, 3, 4]),
    ("same_classes", {"kind": "supervised"}, PRETRAIN_INIT, None),
)


def theta_init_kind(label: str) -> tuple[dict, dict, list | None]:
    """(init dict, pre-training recipe, task classes) of a :data:`THETA_INIT_KINDS` label."""
    for name, init, pretrain, classes in THETA_INIT_KINDS:
        if name == label:
            return dict(init), dict(pretrain), None if classes is None else list(classes)
    raise KeyError(f"unknown θ_init kind {label!r}; known: {[k[0] for k in THETA_INIT_KINDS]}")


_ALPHA_GRID = [0.0, 0.5, 1.0, 1.5]
_CLASSES_0_4 = [0, 1, 2, 3, 4]
_CLASSES_5_9 = [5, 6, 7, 8, 9]
# ResNet-20's rotation pre-training (its 10,000-image subset): the recipe the earlier designs used.
_RESNET_ROTATION_PRETRAIN = dict(epochs=3, batch_size=128, lr=0.05, schedule="cosine", warmup_epochs=0.25,
                                 weight_decay=5e-4, **GRAYSCALE)


def reproduce_study(init: str, width: float, epochs: int) -> Study:
    """The ``reproduce`` study on a design: θ_init kind ``init`` (a :data:`THETA_INIT_KINDS`
    label), VGG-16 at ``width`` and the reference's fine-tuning recipe cut to ``epochs``
    (:mod:`rws_jax.pipeline.study_design` chooses them by a rule). The task is all ten classes,
    or the classes θ_init did not see for the other-classes kind; the θ_init comparison sets
    the design's kind beside rotation (or beside the other-classes kind when the design is
    rotation or fractal) on classes 0–4."""
    init_dict, pretrain, classes = theta_init_kind(init)
    finetune = reference_recipe(epochs)
    vgg = dict(
        dataset="fashion_mnist",
        val_size=5000,
        model="vgg16",
        model_kwargs={"width": width, "init_scheme": "he_fan_in"},
        corruptions=list(REPRODUCE_CORRUPTIONS),
        severity=5,
        eval_severities=[1, 2, 3, 4, 5],
        init=init_dict,
        pretrain=pretrain,
        classes=classes,
        finetune=finetune,
        transfer_finetune=dict(epochs=8, batch_size=32, lr=0.02, schedule="cosine", **GRAYSCALE),
        alphas=[0.0, 0.5, 1.0, 1.5],
        quant_bits=[8, 4],
        merge_methods=["ties"],
        alpha_grid=_ALPHA_GRID,
        # one full round of coordinate ascent over the 8 coefficients: α = 0, the start, 8 × 4 grid points
        alpha_search_budget=2 + len(REPRODUCE_CORRUPTIONS) * len(_ALPHA_GRID),
        alpha_search_examples=2000,
        robust_replicates=1,
        update_backbone_epochs=1,
        seed=0,
    )
    # The extra seeds: only the main rows (θ_std, θ_rob,c, θ_std + RWS_c at severities 1–5).
    main_only = dict(transfer_dataset=None, update_backbone_epochs=0, mixture=False, alphas=[1.0], quant_bits=[],
                     merge_methods=[], alpha_search=False, composition_rows=False, init_from="vgg16_seed0")
    classes_0_4 = dict(classes=_CLASSES_0_4, eval_severities=[])
    task = "all ten classes" if classes is None else f"classes {classes[0]}–{classes[-1]}"
    w = f"width 1/{round(1 / width)}"
    other = "rotation" if init == "other_classes" else "other_classes"
    o_init, o_pretrain, _ = theta_init_kind(other)
    if init == "other_classes":
        # the design's run on classes 0-4 is seed 0 itself
        comparison_pair = ("vgg16_seed0", "vgg16_init_rotation")
    else:
        comparison_pair = ("vgg16_classes", "vgg16_init_classes")
    resnet_pretrain = (_RESNET_ROTATION_PRETRAIN if init == "rotation"
                       else dict(pretrain, weight_decay=5e-4))
    # The same-domain pair needs two class sets θ_init never saw: with a θ_init supervised on
    # classes 5-9 only the task's classes remain, so the pair is cut (named in ``cut``).
    same_domain = None if classes is not None else ("vgg16_classes", dict(
        vgg, **{**main_only, "transfer_dataset": "fashion_mnist"}, **classes_0_4,
        name="reproduce/vgg16_classes",
        description="the paper's transfer: classes 0–4 and classes 5–9 of the fine-tuning half, each with its "
                    "own 5-way head and the full schedule from seed 0's θ_init; each side's RWSs patch the other",
        transfer_classes=_CLASSES_5_9, transfer_finetune=dict(finetune)))
    runs = (
        ("vgg16_seed0", dict(vgg, name="reproduce/vgg16_seed0", transfer_dataset="digits",
                             description=f"VGG-16 {w}, seed 0: every stage")),
        ("vgg16_seed1", dict(vgg, **main_only, name="reproduce/vgg16_seed1", training_seed=1,
                             description=f"VGG-16 {w}, training seed 1 (θ_init of seed 0): main rows")),
        ("vgg16_seed2", dict(vgg, **main_only, name="reproduce/vgg16_seed2", training_seed=2,
                             description=f"VGG-16 {w}, training seed 2 (θ_init of seed 0): main rows")),
        *(() if same_domain is None else (same_domain,)),
        (comparison_pair[1], dict(
            vgg, **{**main_only, "init_from": None}, **classes_0_4,
            name=f"reproduce/{comparison_pair[1]}",
            description=f"the other generic θ_init: {other.replace('_', ' ')} (own pre-training), fine-tuned on "
                        "classes 0–4; 4 corruptions",
            corruptions=["gaussian_noise", "defocus_blur", "fog", "contrast"],
            init=o_init, pretrain=o_pretrain)),
        ("resnet20", dict(
            vgg, name="reproduce/resnet20", model="resnet20", model_kwargs={},
            description=f"ResNet-20 with the reference BatchNorm scheme, its own θ_init ({init.replace('_', ' ')}), "
                        "4 corruptions, subsets",
            corruptions=["gaussian_noise", "defocus_blur", "fog", "contrast"], eval_severities=[],
            pretrain_examples=10000, finetune_examples=5000, bn="reference", pretrain=resnet_pretrain,
            transfer_dataset=None, update_backbone_epochs=0, mixture=False, alphas=[1.0],
            quant_bits=[], merge_methods=[], alpha_search=False, composition_rows=False)),
    )
    init_text = {"rotation": "rotation prediction on the pre-training half (5 epochs over its 4 rotations)",
                 "rotation_4x": "rotation prediction on the pre-training half (20 epochs over its 4 rotations)",
                 "fractal": "supervised on FractalDB-style fractal images (5 epochs)",
                 "other_classes": "supervised on classes 5–9 of the pre-training half (8 epochs); the task is classes "
                                  "0–4, which θ_init never saw",
                 "same_classes": "supervised on the task's own classes of the pre-training half"}[init]
    return Study(
        name="reproduce",
        description=f"the paper's 7 claims on Fashion-MNIST ({task}) with the reference's experiment: θ_init "
                    f"{init_text}, fine-tuned with the reference's recipe for {epochs} epochs; VGG-16 ({w}) with 3 "
                    "training seeds, severities 1–5, 8 corruptions; the same-domain transfer pair (classes 0–4 and 5–9 "
                    "from one θ_init, both directions), an updated backbone and, beyond the paper, digits; another "
                    "θ_init kind for comparison; ResNet-20 with the reference BatchNorm scheme; auto-patching; sized for "
                    "at most 2.5 h on 2 CPU cores (the design: rws_jax.pipeline.study_design)",
        runs=runs,
        seed_group=("vgg16_seed0", "vgg16_seed1", "vgg16_seed2"),
        same_domain=None if same_domain is None else same_domain[0],
        batch_norm="resnet20",
        autopatch=("vgg16_seed0", "resnet20"),
        init_comparison=comparison_pair,
        cut=(
            f"VGG-16 at {w} instead of full width: both models' parameter counts and training images/s on "
            "this CPU are in docs/benchmarks/train_throughput_cpu.md (`make bench-train`)",
            f"fine-tuning: the reference's recipe (SGD 0.01, momentum 0.9, wd 5e-4, batch 128, ×0.1 at 40% and 80%, "
            f"crop + flip) for {epochs} epochs instead of 50 ({epochs / 50:.0%}): as many as fit the budget on this "
            "CPU (rws_jax.pipeline.study_design)",
            f"θ_init: {init_text}, instead of ImageNet weights, which Fashion-MNIST has no offline equivalent of; "
            "the seeds share it",
            "8 of the 19 corruptions: saturate does nothing to grayscale images, frost/snow/spatter paint coloured "
            "textures; shot/speckle noise, glass/zoom/gaussian blur, brightness and elastic were cut for time",
            "severities 1–5 for θ_std, θ_rob,c and θ_std + RWS_c; every other row at severity 5 only, on seed 0",
            "robust models are trained at severity 5 only (as the paper), and tested at every severity",
            "ResNet-20: one seed, 4 corruptions, 10,000 pre-training and 5,000 fine-tuning images (before the task's "
            "classes are taken), severity 5, only θ_std, θ_rob,c and θ_std + RWS_c (α = 1)",
            ("the same-domain pair: one seed, severity 5, on the fine-tuning half (about 14,000 images a side)"
             if same_domain is not None else
             "the same-domain transfer pair: cut, since it needs a second set of classes θ_init never saw and θ_init "
             "saw classes 5–9; signatures' transfer is judged on the updated backbone and digits"),
            f"the θ_init comparison ({other.replace('_', ' ')}): one seed, 4 corruptions, severity 5",
            "α search on 2,000 validation images, one full round of coordinate ascent, the TIES merge only (DARE cut)",
        ),
    )


# The study's design (issue 31's rule, rws_jax.pipeline.study_design.choose_design, applied to the
# committed regime map docs/regime/metrics/regime.json and the per-image costs of
# docs/benchmarks/study_epoch_cpu.json; a test checks these values are the rule's).
REPRODUCE_INIT = "rotation"
REPRODUCE_WIDTH = 0.125
REPRODUCE_EPOCHS = 7
REPRODUCE = reproduce_study(REPRODUCE_INIT, REPRODUCE_WIDTH, REPRODUCE_EPOCHS)

STUDIES: dict[str, Study] = {"reproduce": REPRODUCE}


def preset(preset_name: str, /, **overrides) -> PipelineConfig:
    """A named preset (``'offline'``, ``'tiny'``, ``'fashion_mnist_full'``, ``'cifar10_vgg16'``, ...),
    with any field overridden: ``preset('offline', name='mine', keep_units=5)``."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; valid: {', '.join(PRESETS)}")
    return PipelineConfig(**{**PRESETS[preset_name], **overrides})


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}")
    return STUDIES[name]


def load_config(source: str | Path | None = None, *, preset_name: str | None = None,
                overrides: list[str] | None = None) -> PipelineConfig:
    """Builds a config from a preset name and/or a YAML/Python file, then overrides."""
    data: dict = {}
    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        if path.suffix == ".py":
            obj = runpy.run_path(str(path)).get("CONFIG")
            if obj is None:
                raise ValueError(f"{path} defines no CONFIG")
            data = obj.to_dict() if isinstance(obj, PipelineConfig) else dict(obj)
        else:
            data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a mapping")
    base = data.pop("preset", None) or preset_name
    if base and base not in PRESETS:
        raise ValueError(f"unknown preset {base!r}; valid: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)}")
    merged = {**(PRESETS[base] if base else {}), **data}
    return apply_overrides(PipelineConfig(**merged), overrides)
