"""Studies: several pipeline runs that answer the paper's questions together.

A study is an ordered list of named runs (each a :class:`PipelineConfig`, each its own run
directory under the study's directory, each resumable like any run), plus which of them
are seeds of one another and which holds the same-domain transfer pair. ``run_study``
runs them in order and writes the study's report (:mod:`rws_jax.pipeline.study_report`).

The one study is ``reproduce``: the paper's claims on all of Fashion-MNIST with seeds,
severities 1–5, a BatchNorm ResNet-20 and two transfer pairs, sized for two CPU cores::

    rws-jax reproduce --out results/reproduce      # or: make reproduce

Layout::

    <out>/<run>/                     one pipeline run directory per run (see stages.py)
    <out>/metrics/timing.json        wall seconds per run, summed over resumed sessions
    <out>/metrics/similarity.json    cosine similarity of the seeds' signatures (claim 2)
    <out>/report.md, figures/        the study's report
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from rws_jax.pipeline.config import _GRAY, PipelineConfig
from rws_jax.pipeline.stages import Run, run_all


@dataclasses.dataclass(frozen=True)
class Study:
    """A named set of runs.

    Attributes:
      name / description: as a preset's.
      runs: ``(run name, PipelineConfig fields)`` in the order they run (a run whose
        ``init_from`` names another must come after it).
      seed_group: names of the runs that differ only in ``training_seed`` (same θ_init,
        data and test sets): their cells are reported as mean ± std.
      same_domain: the run whose transfer dataset is the main dataset's other classes.
      batch_norm: the BatchNorm model's run.
      autopatch: the run whose signatures are auto-patched on a mixed test stream
        (:mod:`rws_jax.pipeline.autopatch_eval`) after every run is done.
      cut: what the study leaves out to fit its budget, one sentence each.
    """

    name: str
    description: str
    runs: tuple
    seed_group: tuple
    same_domain: str | None = None
    batch_norm: str | None = None
    autopatch: str | None = None
    cut: tuple = ()

    def config(self, run_name: str) -> PipelineConfig:
        for name, fields in self.runs:
            if name == run_name:
                return PipelineConfig(**fields)
        raise KeyError(f"study {self.name!r} has no run {run_name!r}; runs: {[n for n, _ in self.runs]}")

    @property
    def run_names(self) -> list[str]:
        return [n for n, _ in self.runs]


# The corruptions of `reproduce`: grayscale-meaningful ones from each family (noise, blur,
# weather, digital). saturate is a no-op on grayscale; frost/snow/spatter paint coloured
# textures; the rest are cut to fit the budget (see Study.cut).
REPRODUCE_CORRUPTIONS = ("gaussian_noise", "impulse_noise", "defocus_blur", "motion_blur",
                         "fog", "contrast", "pixelate", "jpeg_compression")

_VGG = dict(
    dataset="fashion_mnist",
    val_size=5000,
    model="vgg16",
    model_kwargs={"width": 0.125, "init_scheme": "he_fan_in"},
    corruptions=list(REPRODUCE_CORRUPTIONS),
    severity=5,
    eval_severities=[1, 2, 3, 4, 5],
    pretrain=dict(epochs=15, batch_size=128, lr=0.03, schedule="cosine", warmup_epochs=0.5, **_GRAY),
    finetune=dict(epochs=2, batch_size=128, lr=0.01, schedule="cosine", **_GRAY),
    transfer_finetune=dict(epochs=8, batch_size=32, lr=0.02, schedule="cosine", **_GRAY),
    alphas=[0.0, 0.5, 1.0, 1.5],
    quant_bits=[8, 4],
    merge_methods=["ties"],
    alpha_search_budget=8,
    robust_replicates=1,
    update_backbone_epochs=1,
    seed=0,
)
# The extra seeds: only the main rows (θ_std, θ_rob,c, θ_std + RWS_c at severities 1–5).
_MAIN_ROWS_ONLY = dict(transfer_dataset=None, update_backbone_epochs=0, mixture=False, alphas=[1.0], quant_bits=[],
                       merge_methods=[], alpha_search=False, composition_rows=False, init_from="vgg16_seed0")

REPRODUCE = Study(
    name="reproduce",
    description="the paper's 7 claims on all of Fashion-MNIST: VGG-16 (width 1/8) with 3 training seeds, "
                "severities 1–5, 8 corruptions; ResNet-20 with the reference BatchNorm scheme; an updated "
                "backbone, a same-domain (disjoint classes) and a far-domain (digits) transfer pair, "
                "auto-patching; sized for at most 2 h on 2 CPU cores",
    runs=(
        ("vgg16_seed0", dict(_VGG, name="reproduce/vgg16_seed0", transfer_dataset="digits",
                             description="VGG-16 width 1/8, seed 0: every stage")),
        ("vgg16_seed1", dict(_VGG, **_MAIN_ROWS_ONLY, name="reproduce/vgg16_seed1", training_seed=1,
                             description="VGG-16 width 1/8, training seed 1 (θ_init of seed 0): main rows")),
        ("vgg16_seed2", dict(_VGG, **_MAIN_ROWS_ONLY, name="reproduce/vgg16_seed2", training_seed=2,
                             description="VGG-16 width 1/8, training seed 2 (θ_init of seed 0): main rows")),
        ("vgg16_classes", dict(
            _VGG, **{**_MAIN_ROWS_ONLY, "transfer_dataset": "fashion_mnist"}, name="reproduce/vgg16_classes",
            description="same-domain transfer: classes 0–4 → classes 5–9 of the fine-tuning half, each 5-way "
                        "head on θ_init of seed 0 (the CIFAR-10 → CIFAR-100 pair on one dataset)",
            classes=[0, 1, 2, 3, 4], transfer_classes=[5, 6, 7, 8, 9], eval_severities=[],
            transfer_finetune=dict(_VGG["finetune"]))),
        ("resnet20", dict(
            _VGG, name="reproduce/resnet20", model="resnet20", model_kwargs={},
            description="ResNet-20 with the reference BatchNorm scheme, its own θ_init, 4 corruptions, subsets",
            corruptions=["gaussian_noise", "defocus_blur", "fog", "contrast"], eval_severities=[],
            pretrain_examples=10000, finetune_examples=5000, bn="reference",
            pretrain=dict(epochs=3, batch_size=128, lr=0.05, schedule="cosine", warmup_epochs=0.25,
                          weight_decay=5e-4, **_GRAY),
            finetune=dict(epochs=2, batch_size=128, lr=0.01, schedule="cosine", weight_decay=5e-4, **_GRAY),
            transfer_dataset=None, update_backbone_epochs=0, mixture=False, alphas=[1.0],
            quant_bits=[], merge_methods=[], alpha_search=False, composition_rows=False)),
    ),
    seed_group=("vgg16_seed0", "vgg16_seed1", "vgg16_seed2"),
    same_domain="vgg16_classes",
    batch_norm="resnet20",
    autopatch="vgg16_seed0",
    cut=(
        "VGG-16 at width 1/8 instead of full width: both models' parameter counts and training images/s on "
        "this CPU are in docs/train_throughput_cpu.md (`make bench-train`)",
        "fine-tuning is 2 epochs (the reference: 50) and pre-training 15; θ_init is shared by the seeds",
        "8 of the 19 corruptions: saturate does nothing to grayscale images, frost/snow/spatter paint coloured "
        "textures; shot/speckle noise, glass/zoom/gaussian blur, brightness and elastic were cut for time",
        "severities 1–5 for θ_std, θ_rob,c and θ_std + RWS_c; every other row at severity 5 only, on seed 0",
        "robust models are trained at severity 5 only (as the paper), and tested at every severity",
        "ResNet-20: one seed, 4 corruptions, 10,000 pre-training (3 epochs) and 5,000 fine-tuning images, "
        "severity 5, "
        "only θ_std, θ_rob,c and θ_std + RWS_c (α = 1)",
        "the same-domain pair: one seed, severity 5, 5-way heads on the fine-tuning half",
        "α search with 8 validation evaluations per search and the TIES merge only (DARE cut)",
    ),
)

STUDIES: dict[str, Study] = {"reproduce": REPRODUCE}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; valid: {', '.join(STUDIES)}")
    return STUDIES[name]


def _data_key(cfg: PipelineConfig) -> tuple:
    """The fields that decide a run's test and validation sets."""
    return (cfg.dataset, cfg.dataset_source, cfg.data_dir, cfg.val_size, cfg.test_examples, cfg.seed,
            cfg.severity, cfg.corruption_preset, cfg.classes, cfg.corrupted_test_mode)


def open_run(study: Study, out: str | Path, run_name: str, **kwargs) -> Run:
    """The :class:`Run` of ``run_name`` in the study directory ``out``."""
    return Run(study.config(run_name), Path(out) / run_name, **kwargs)


def run_study(study: Study, out: str | Path, *, progress: bool = True,
              log: Callable[[str], None] = print, only: list[str] | None = None) -> Path:
    """Runs every run of ``study`` (or ``only`` these) in order, each resuming what its
    directory already holds, then writes the study's report; returns its path."""
    from rws_jax.pipeline.study_report import write_study_report  # noqa: PLC0415

    out = Path(out)
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    timing_file = out / "metrics" / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    shared: dict = {}  # corrupted test/val sets, shared by runs with the same data
    for name in study.run_names:
        if only and name not in only:
            continue
        run = open_run(study, out, name, progress=progress, log=log)
        key = _data_key(run.cfg)
        run.__dict__["_corrupted_cache"] = shared.setdefault(key, {})
        log(f"=== {study.name}: run {name} ({run.cfg.description})")
        t0 = time.time()
        try:
            run_all(run)
        finally:  # an interrupted session's time counts too
            rec = timing.setdefault(name, {"seconds": 0.0, "sessions": 0})
            rec["seconds"] += time.time() - t0
            rec["sessions"] += 1
            timing_file.write_text(json.dumps(timing, indent=1))
        # transfer test sets belong to one run only
        for k in [k for k in run._corrupted_cache if k[1] is True]:
            del run._corrupted_cache[k]
    if study.autopatch and (not only or study.autopatch in only):
        from rws_jax.pipeline.autopatch_eval import stage_autopatch  # noqa: PLC0415

        run = open_run(study, out, study.autopatch, progress=progress, log=log)
        if not (run.dir / "metrics" / "autopatch.json").exists():
            t0 = time.time()
            stage_autopatch(run)
            rec = timing.setdefault("autopatch", {"seconds": 0.0, "sessions": 0})
            rec["seconds"] += time.time() - t0
            rec["sessions"] += 1
            timing_file.write_text(json.dumps(timing, indent=1))
    return write_study_report(study, out, log=log)
