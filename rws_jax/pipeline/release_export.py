"""A study's released model: seed 0's θ_std with its quantized signatures
(:mod:`rws_jax.files.release`), and measuring what a user of the release gets.

:func:`export_release` writes the release from a finished run directory: the run's θ_std,
its ``bits``-bit RWS_c of every corruption, and a manifest with the run's config and the
accuracies the run measured for θ_std and θ_std + RWS_c (α = 1, the same quantized
signature). :func:`evaluate_release` measures them again from the release alone: it rebuilds
the run's test sets from the config in the manifest (the same data, seeds and corruptions),
patches the released model with each released signature and evaluates it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import rws_jax as rws
from rws_jax.files.release import Release, load_release, write_release
from rws_jax.models import get_model
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.metrics_files import read_metrics
from rws_jax.pipeline.model_store import train_config
from rws_jax.pipeline.run import Run
from rws_jax.pipeline.run_data import RunData
from rws_jax.training import evaluate, make_eval_step

RELEASE_BITS = 8


def release_manifest(run: Run, bits: int, command: str | None = None) -> dict:
    """What a user of the release needs: the network and its preprocessing, the task's
    classes, the corruptions and severity, and the accuracies the run measured
    (``expected_accuracy``: θ_std on the clean and each corrupted test set; θ_std + RWS_c at
    α = 1 with the ``bits``-bit signature on both), with the run's whole config."""
    cfg = run.cfg
    acc = read_metrics(run.dir, "accuracy") or {}
    std = acc.get("standard", {})
    missing = [k for k in ["standard", *(f"patched_q{bits}/{c}" for c in cfg.corruptions)] if k not in acc]
    if missing:
        raise ValueError(f"{run.dir}: the run has not measured {missing} yet; finish the run first")
    tc = train_config(cfg, "finetune")
    expected = {"standard": {"clean": std["clean"], **{c: std[c] for c in cfg.corruptions}}}
    for c in cfg.corruptions:
        p = acc[f"patched_q{bits}/{c}"]
        expected[f"patched/{c}"] = {"clean": p["clean"], c: p[c]}
    return {
        "name": cfg.name,
        "description": f"θ_std of {cfg.name} ({cfg.model} {dict(cfg.model_kwargs)}, {cfg.dataset}) with its "
                       f"{bits}-bit robust weight signatures of {len(cfg.corruptions)} corruptions at severity "
                       f"{cfg.severity}",
        "network": {"model": cfg.model, "model_kwargs": dict(cfg.model_kwargs),
                    "num_classes": run.data.main.num_classes},
        "dataset": cfg.dataset,
        "classes": None if cfg.classes is None else list(cfg.classes),
        "preprocess": {"mean": None if tc.mean is None else list(tc.mean),
                       "std": None if tc.std is None else list(tc.std), "input": "images in [0, 1], NHWC"},
        "corruptions": list(cfg.corruptions),
        "severity": cfg.severity,
        "bits": bits,
        "alpha": 1.0,
        "expected_accuracy": expected,
        "test_examples": len(run.data.main.test.labels),
        "config": cfg.to_dict(),
        **({"command": command} if command else {}),
    }


def export_release(run: Run, dest: str | Path, *, bits: int = RELEASE_BITS, command: str | None = None,
                   readme: Callable[[dict], str] | None = None, overwrite: bool = True) -> Path:
    """Writes the release of a finished run to ``dest`` (replacing an older one only once the
    new one is complete); ``readme(manifest)``, when given, writes its ``README.md``."""
    manifest = release_manifest(run, bits, command)
    sigs = {c: run.signatures.quantized(c, bits) for c in run.cfg.corruptions}
    texts = {} if readme is None else {"README.md": readme(manifest)}
    return write_release(dest, run.models.standard(), sigs, manifest, text_files=texts, overwrite=overwrite)


def release_accuracy_fn(release: Release, *, log: Callable[[str], None] = lambda *_: None) -> Callable:
    """``accuracy(variables, test_set)`` on the test sets of the release's run (rebuilt from
    the manifest's config: ``'clean'`` or a corruption name)."""
    cfg = PipelineConfig(**release.manifest["config"])
    data = RunData(cfg, log=log)
    net = release.manifest["network"]
    model = get_model(net["model"], int(net["num_classes"]), **net["model_kwargs"])
    tc = train_config(cfg, "finetune")
    step = make_eval_step(model.apply, mean=tc.mean, std=tc.std)

    def accuracy(variables, which: str) -> float:  # RunData.test_set makes each test set once
        return float(evaluate(variables, model.apply, data.test_set(which), cfg.eval_batch_size,
                              eval_step=step)["accuracy"])

    return accuracy


def evaluate_release(release: Release | str | Path, names: Sequence[str] | None = None, *, alpha: float = 1.0,
                     log: Callable[[str], None] = lambda *_: None) -> dict:
    """Patches the released model with each released signature (``names``, default all) at
    ``alpha`` and measures it, from the release alone (and the dataset). ``release``: a
    release directory, or one :func:`~rws_jax.load_release` loaded (``names`` then unused).

    Returns ``{'standard': {test set: accuracy}, 'patched/<c>': {'clean': .., c: ..}}``, the
    layout of the manifest's ``expected_accuracy``."""
    if not isinstance(release, Release):
        release = load_release(release, names)
    accuracy = release_accuracy_fn(release, log=log)
    out: dict = {"standard": {"clean": accuracy(release.variables, "clean")}}
    for c, sig in release.signatures.items():
        out["standard"][c] = accuracy(release.variables, c)
        patched = rws.patch(release.variables, sig, alpha)
        out[f"patched/{c}"] = {"clean": accuracy(patched, "clean"), c: accuracy(patched, c)}
    return out
