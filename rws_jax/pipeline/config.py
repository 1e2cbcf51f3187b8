"""Pipeline configuration schema: :class:`PipelineConfig` (one run), :class:`Study` (several
runs), ``key=value`` overrides and reading a run directory's ``config.yaml``.

The values (named presets, the ``reproduce`` study, seed offsets) live apart, in
:mod:`rws_jax.pipeline.presets`, which also reads config files. ``pretrain``/``finetune``/
``transfer_finetune`` are dicts of :class:`rws_jax.training.TrainConfig` fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from rws_jax.corruptions import CORRUPTIONS, PRESETS

# Merge methods of the "merge" stage beyond the linear rows of "evaluate" (rws.compose methods).
MERGE_METHODS = ("ties", "dare")

# Values of PipelineConfig.bn (rws_jax.batch_norm.BN_MODES; kept here so configs load fast).
BN_MODES = ("reference", "patch", "none")

# Values of PipelineConfig.compute_dtype (rws_jax.training.COMPUTE_DTYPES, or None = float32).
COMPUTE_DTYPES = (None, "float32", "bfloat16")

# Values of PipelineConfig.init["kind"]: how θ_init is made (see PipelineConfig.init).
INIT_KINDS = ("supervised", "rotation", "classes", "torch", "fractal")
# Values of PipelineConfig.init["head"] for kind "torch" (rws_jax.models.from_torch_state_dict).
TORCH_HEADS = ("drop",)

# Values of PipelineConfig.corrupted_test, and the datasets with a released corrupted test set.
CORRUPTED_TEST_MODES = (None, "official", "generated")
OFFICIAL_CORRUPTED_TEST = {"cifar10": "cifar10_corrupted"}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides an end-to-end RWS run.

    Data: ``dataset`` is split into a pre-training half (θ_init) and a fine-tuning half
    (θ_std, θ_rob,c, the mixture model); ``*_examples`` cap each (None = all).
    ``transfer_dataset`` is a second dataset whose models are fine-tuned from the same
    θ_init (the transfer experiment and the cross-dataset similarity).
    """

    name: str = "custom"
    description: str = ""
    # data
    dataset: str = "fashion_mnist"
    dataset_source: str | None = None
    data_dir: str | None = None
    val_size: int | None = None
    pretrain_examples: int | None = None
    finetune_examples: int | None = None
    test_examples: int | None = None
    transfer_dataset: str | None = "digits"
    transfer_test_examples: int | None = None
    # Class subsets (labels renumbered 0..k-1, own k-way head): ``classes`` of the main
    # dataset, ``transfer_classes`` of the transfer dataset. With transfer_dataset ==
    # dataset the transfer models train on the fine-tuning half (same domain, disjoint
    # classes: the CIFAR-10 -> CIFAR-100 pair of the paper on one dataset).
    classes: tuple | None = None
    transfer_classes: tuple | None = None
    # model
    model: str = "vgg16"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    # corruptions
    corruptions: tuple = ("gaussian_noise", "defocus_blur", "fog", "contrast")
    severity: int = 5
    # Further severities the main rows (θ_std, θ_rob,c, θ_std + RWS_c) are tested at
    # (accuracy keys '<corruption>@<severity>'); models and signatures stay at ``severity``.
    eval_severities: tuple = ()
    corruption_preset: str = "cifar10"
    # Corrupted test sets of the main dataset: "official" = the released CIFAR-10-C (TFDS
    # cifar10_corrupted, cifar10 only, as the reference evaluates), "generated" = the test
    # split corrupted by rws_jax's corruptions (seeded); None = "official" for cifar10,
    # else "generated" (see ``corrupted_test_mode``). The transfer dataset's are generated.
    corrupted_test: str | None = None
    # signatures
    keep_units: int = 7
    collections: tuple = ("params",)
    # BatchNorm models: "reference" (BN γ/β/statistics and shortcut convs <- mean over the
    # robust models applied, statistics re-estimated on corrupted fine-tuning data, as the
    # reference code), "patch" (the pure weight patch) or "none" (BN leaves untouched);
    # None = "reference" for models with BatchNorm (see ``bn_mode``). No effect on VGG.
    bn: str | None = None
    alphas: tuple = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    quant_bits: tuple = (8, 4, 2, 1)
    # Composition beyond the paper (the "merge" stage): interference-aware merges of all the
    # signatures (rws.compose methods) and α chosen on the validation split only.
    merge_methods: tuple = ("ties", "dare")
    ties_density: float = 0.2
    dare_drop_rate: float = 0.9
    alpha_search: bool = True
    alpha_grid: tuple = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    alpha_search_budget: int = 24  # validation evaluations per search
    alpha_search_examples: int | None = None  # validation images each search evaluation uses (None = all)
    max_ta_drop: float = 0.05  # searched α: clean validation accuracy may drop at most this much
    # training (TrainConfig overrides)
    # Compute dtype of every training run ('float32' | 'bfloat16'; None = TrainConfig's
    # default, float32): bf16 activations and matmuls, float32 weights, optimizer state and
    # signatures. The notebooks set 'bfloat16' on a TPU. A 'compute_dtype' key in
    # pretrain/finetune/transfer_finetune wins over this one.
    compute_dtype: str | None = None
    pretrain: dict = dataclasses.field(default_factory=dict)
    finetune: dict = dataclasses.field(default_factory=dict)
    transfer_finetune: dict = dataclasses.field(default_factory=dict)
    update_backbone_epochs: int = 1
    mixture: bool = True
    # The composition rows of "evaluate" (sum, average, reference mode, shared-range 8 bit);
    # off for the extra seeds of a study, which only need the main rows.
    composition_rows: bool = True
    # Robust models per corruption (same θ_init, different seeds); the extra ones only
    # enter the similarity analysis (claim 2: same corruption across seeds).
    robust_replicates: int = 1
    # The premise (one linear basin): a second θ_std (another training seed) and the
    # accuracy barriers on the straight lines θ_std seed 0 ↔ seed 1 and θ_std ↔ θ_rob,c,
    # measured at ``premise_points`` evenly spaced points (metrics/premise.json).
    premise: bool = True
    # The seed half of the premise (a second θ_std, the θ_std seed 0 ↔ 1 barrier and claim 1's
    # seed-noise floor); off only where a design names it as a cut (the regime map).
    premise_seeds: bool = True
    premise_points: int = 11
    seed: int = 0
    # Seed of the fine-tuning runs (θ_std, θ_rob,c, mixture, transfer models); None = seed.
    # ``seed`` alone keys the data splits and θ_init, so runs that differ in training_seed
    # share both (the seeds of a study).
    training_seed: int | None = None
    # Start from the θ_init of another run directory (relative: beside this run's directory)
    # instead of pre-training one; its classifier head is re-initialised when the class
    # count differs. The source run must use the same model, dataset and seed.
    init_from: str | None = None
    # How θ_init is made, when not taken from another run (init_from):
    #   {"kind": "supervised"}  the pre-training half with the task's own labels (θ_init then
    #                           saw the fine-tuning labels: not the paper's generic θ_init);
    #   {"kind": "rotation"}    self-supervised rotation prediction on the pre-training half's
    #                           images (4-way head; no label is used); flip is off;
    #   {"kind": "classes", "classes": [5, 6, 7, 8, 9]}  the pre-training half's examples of
    #                           these classes, own head; must be disjoint from the classes
    #                           the run fine-tunes on (``classes``, and ``transfer_classes``
    #                           for a same-domain pair);
    #   {"kind": "torch", "path": FILE, "head": "drop"}  an imported PyTorch checkpoint (e.g.
    #                           torchvision's ImageNet VGG-16) with its head dropped, the
    #                           reference's θ_init; the run refuses to start without ``path``;
    #   {"kind": "fractal", "classes": 100, "images_per_class": 500}  formula-driven
    #                           pre-training (FractalDB): classify rendered IFS fractals, one
    #                           class per random IFS code, at the dataset's image size and
    #                           channels (rws_jax.data.fractals; own head, seeded by ``seed``;
    #                           defaults 100 x 500); no natural image and no label is seen.
    # In every case the task's head is then initialised afresh (seed ``seed``).
    init: dict = dataclasses.field(default_factory=lambda: {"kind": "supervised"})
    eval_batch_size: int = 500

    def __post_init__(self):
        for f in ("corruptions", "collections", "alphas", "quant_bits", "merge_methods", "alpha_grid",
                  "eval_severities"):
            v = getattr(self, f)
            if not isinstance(v, tuple):
                object.__setattr__(self, f, tuple(v))
        for f in ("classes", "transfer_classes"):
            v = getattr(self, f)
            if v is not None:
                v = tuple(int(x) for x in v)
                if len(v) < 2 or len(set(v)) != len(v) or min(v) < 0:
                    raise ValueError(f"{f} must list at least two distinct class indices >= 0, got {list(v)}")
                object.__setattr__(self, f, v)
        self._check_init()
        if self.transfer_classes is not None and self.transfer_dataset is None:
            raise ValueError("transfer_classes needs a transfer_dataset")
        if (self.transfer_dataset == self.dataset and self.transfer_dataset is not None
                and (self.classes is None or self.transfer_classes is None
                     or set(self.classes) & set(self.transfer_classes))):
            raise ValueError("a transfer dataset equal to the main dataset needs disjoint classes and "
                             "transfer_classes (same domain, other classes)")
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption(s) {unknown}; valid: {', '.join(CORRUPTIONS)}")
        if not self.corruptions:
            raise ValueError("the config names no corruption")
        if self.corruption_preset not in PRESETS:
            raise ValueError(f"unknown corruption preset {self.corruption_preset!r}; valid: {PRESETS}")
        if not 1 <= int(self.severity) <= 5:
            raise ValueError(f"severity must be 1..5, got {self.severity}")
        bad_sev = [s for s in self.eval_severities if not (isinstance(s, int) and 1 <= s <= 5)]
        if bad_sev:
            raise ValueError(f"eval_severities must be integers 1..5, got {bad_sev}")
        if int(self.robust_replicates) < 1:
            raise ValueError(f"robust_replicates must be >= 1, got {self.robust_replicates}")
        bad_bits = [b for b in self.quant_bits if b not in (1, 2, 4, 8)]
        if bad_bits:
            raise ValueError(f"quant_bits must be among 1, 2, 4, 8; got {bad_bits}")
        bad_methods = [m for m in self.merge_methods if m not in MERGE_METHODS]
        if bad_methods:
            raise ValueError(f"merge_methods must be among {MERGE_METHODS}; got {bad_methods}")
        if not 0.0 < float(self.ties_density) <= 1.0 or not 0.0 <= float(self.dare_drop_rate) < 1.0:
            raise ValueError("ties_density must be in (0, 1] and dare_drop_rate in [0, 1)")
        if int(self.alpha_search_budget) < 1 or not 0.0 <= float(self.max_ta_drop) <= 1.0:
            raise ValueError("alpha_search_budget must be >= 1 and max_ta_drop in [0, 1]")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if self.bn not in (None, *BN_MODES):
            raise ValueError(f"bn must be one of {BN_MODES} (or unset), got {self.bn!r}")
        if self.corrupted_test not in CORRUPTED_TEST_MODES:
            raise ValueError(f"corrupted_test must be one of {CORRUPTED_TEST_MODES}, got {self.corrupted_test!r}")
        if self.corrupted_test == "official" and self.dataset not in OFFICIAL_CORRUPTED_TEST:
            raise ValueError(
                f"corrupted_test='official' needs a released corrupted test set; only "
                f"{', '.join(OFFICIAL_CORRUPTED_TEST)} has one (TFDS cifar10_corrupted), not {self.dataset!r}: "
                "use corrupted_test='generated' (or leave it unset)")

    def _check_init(self) -> None:
        init = self.init
        if not isinstance(init, dict) or init.get("kind") not in INIT_KINDS:
            raise ValueError(f"init must be a mapping with kind one of {INIT_KINDS}, got {init!r}")
        allowed = {"supervised": {"kind"}, "rotation": {"kind"}, "classes": {"kind", "classes"},
                   "torch": {"kind", "path", "head", "first_conv"},
                   "fractal": {"kind", "classes", "images_per_class"}}[init["kind"]]
        extra = sorted(set(init) - allowed)
        if extra:
            raise ValueError(f"init kind {init['kind']!r} takes only {sorted(allowed)}, got also {extra}")
        if init["kind"] == "classes":
            cls = init.get("classes")
            if not isinstance(cls, (list, tuple)) or len(cls) < 2 or len(set(cls)) != len(cls):
                raise ValueError(f"init kind 'classes' needs at least two distinct classes, got {cls!r}")
            tuned = set(range(10**6)) if self.classes is None else set(self.classes)
            if self.transfer_dataset == self.dataset and self.transfer_classes is not None:
                tuned |= set(self.transfer_classes)
            if set(cls) & tuned:
                raise ValueError(f"init classes {list(cls)} overlap the classes the run fine-tunes on "
                                 f"({'all' if self.classes is None else sorted(tuned)}): θ_init would have seen "
                                 "the fine-tuning labels")
        if init["kind"] == "fractal":
            for key, what in (("classes", "IFS codes, one per class"), ("images_per_class", "images per code")):
                v = init.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
                    raise ValueError(f"init kind 'fractal' needs {key} ({what}) an integer >= 2, got {v!r}")
        if init["kind"] == "torch" and init.get("head", "drop") not in TORCH_HEADS:
            raise ValueError(f"init head must be one of {TORCH_HEADS}, got {init.get('head')!r}")

    @property
    def init_kind(self) -> str:
        """``init['kind']`` (``'supervised'``, ``'rotation'``, ``'classes'``, ``'torch'`` or ``'fractal'``)."""
        return self.init["kind"]

    def bn_mode(self, has_batch_norm: bool) -> str:
        """'reference', 'patch' or 'none': ``bn`` with None resolved ('reference' for
        BatchNorm models, else 'patch', which is then the plain weight patch)."""
        if self.bn is not None:
            return self.bn
        return "reference" if has_batch_norm else "patch"

    @property
    def corrupted_test_mode(self) -> str:
        """'official' or 'generated': ``corrupted_test`` with None resolved by the dataset."""
        if self.corrupted_test is not None:
            return self.corrupted_test
        return "official" if self.dataset in OFFICIAL_CORRUPTED_TEST else "generated"

    @property
    def fine_tuning_seed(self) -> int:
        """``training_seed`` with None resolved (= ``seed``)."""
        return int(self.seed if self.training_seed is None else self.training_seed)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(cfg: PipelineConfig, overrides: list[str] | None) -> PipelineConfig:
    """Applies ``key=value`` strings (YAML values; ``finetune.epochs=3`` for nested dicts)."""
    if not overrides:
        return cfg
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        parts = key.split(".")
        if parts[0] not in d:
            raise ValueError(f"unknown config field {parts[0]!r}")
        target = d
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = _parse_value(value)
    return PipelineConfig(**d)


def run_config_from_file(path: str | Path) -> PipelineConfig:
    """The config a run directory was made with (its ``config.yaml``); fields added since
    count as their defaults."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    return PipelineConfig(**{**PipelineConfig().to_dict(), **{k: v for k, v in data.items() if k in fields}})


@dataclasses.dataclass(frozen=True)
class Study:
    """A named set of pipeline runs that answer the paper's questions together.

    Attributes:
      name / description: as a preset's.
      runs: ``(run name, PipelineConfig fields)`` in the order they run (a run whose
        ``init_from`` names another must come after it).
      seed_group: names of the runs that differ only in ``training_seed`` (same θ_init,
        data and test sets): their cells are reported as mean ± std.
      same_domain: the run whose transfer dataset is the main dataset's other classes.
      batch_norm: the BatchNorm model's run.
      autopatch: the run(s) whose signatures are auto-patched on mixed test streams
        (:mod:`rws_jax.pipeline.autopatch_eval`) after every run is done: a name or a tuple.
      init_comparison: two runs on the same task whose θ_init was made differently.
      cut: what the study leaves out to fit its budget, one sentence each.
    """

    name: str
    description: str
    runs: tuple
    seed_group: tuple
    same_domain: str | None = None
    batch_norm: str | None = None
    autopatch: str | tuple | None = None
    # Two runs on the same task that differ in how θ_init was made: reported side by side.
    init_comparison: tuple | None = None
    cut: tuple = ()

    def config(self, run_name: str) -> PipelineConfig:
        for name, fields in self.runs:
            if name == run_name:
                return PipelineConfig(**fields)
        raise KeyError(f"study {self.name!r} has no run {run_name!r}; runs: {[n for n, _ in self.runs]}")

    @property
    def run_names(self) -> list[str]:
        return [n for n, _ in self.runs]

    @property
    def autopatch_runs(self) -> tuple:
        """The runs auto-patching is evaluated on (``autopatch`` as a tuple)."""
        if not self.autopatch:
            return ()
        return (self.autopatch,) if isinstance(self.autopatch, str) else tuple(self.autopatch)
