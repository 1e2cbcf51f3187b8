"""The auto-patching stages of a run: train the corruption detector, and evaluate
:class:`rws_jax.AutoPatcher` on a mixed test stream.

``stage_detect`` trains the detector on the fine-tuning split (clean + each corruption of
the run at its severity) and saves it with orbax beside the signatures
(``signatures/detector``); a saved one is reloaded and refused when it does not match the
signature set. ``stage_autopatch`` writes ``metrics/autopatch.json``: on the first
``examples`` test images of every source (clean, each corruption with a signature, and
held-out corruptions without one), cut into batches of each size and shuffled into one
stream, the accuracy of the auto-patched model (batch and per-image mode) next to θ_std,
the oracle patch (θ_std + RWS_c of the true corruption, θ_std on clean and held-out
batches), the average composition and the mixture-trained model; detection accuracy; and
how often a patch was computed vs. reused.

Run them with ``rws-jax autopatch --preset NAME`` (a study: on its auto-patching run); the
report's tables come from :mod:`rws_jax.pipeline.autopatch_report`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np

import rws_jax as rws
from rws_jax.pipeline.presets import SEEDS
from rws_jax.pipeline.stages import Run
from rws_jax.training import evaluate

DEFAULT_BATCH_SIZES = (1, 8, 64)
DEFAULT_HELDOUT = ("zoom_blur", "brightness", "shot_noise")
DETECTOR_EXAMPLES = 2000


def detector_path(run: Run) -> Path:
    return run.dir / "signatures" / "detector"


def stage_detect(run: Run, examples: int = DETECTOR_EXAMPLES) -> rws.CorruptionDetector:
    """Trains (once) and saves the run's detector; returns it, checked against the signatures."""
    sigs = [run.signature(c) for c in run.cfg.corruptions]
    path = detector_path(run)
    if path.exists():
        return rws.load_detector(path, signatures=sigs)
    run.log(f"[detect] corruption detector on {examples} fine-tuning images x {len(sigs) + 1} classes")
    t0 = time.time()
    images = run.halves[1].images[:examples]
    det = rws.train_detector(images, sigs, severity=run.cfg.severity, key=jax.random.key(run.cfg.seed + SEEDS.detector),
                             corruption_preset=run.cfg.corruption_preset)
    rws.save_detector(path, det)
    run.log(f"  detector: train accuracy {det.train_accuracy:.4f} in {time.time() - t0:.0f}s")
    return det


def _accuracy(logits, labels) -> int:
    return int(np.sum(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


def stage_autopatch(run: Run, *, batch_sizes=DEFAULT_BATCH_SIZES, examples: int = 2000,
                    heldout=DEFAULT_HELDOUT, threshold: float = 0.25, step: float = 0.25) -> dict:
    """Evaluates auto-patching on the mixed test stream; writes and returns metrics/autopatch.json."""
    from rws_jax.corruptions import CORRUPTIONS  # noqa: PLC0415

    cfg = run.cfg
    cs = list(cfg.corruptions)
    unknown = [h for h in heldout if h not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown held-out corruption(s) {unknown}; valid: {', '.join(CORRUPTIONS)}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes) or int(examples) < 1:
        raise ValueError(f"batch sizes and examples must be >= 1, got {list(batch_sizes)} and {examples}")
    heldout = [h for h in heldout if h not in cs]
    det = stage_detect(run)
    sigs = [run.signature(c) for c in cs]
    std = run.standard()
    tc = run.train_config("finetune")
    sources = ["clean", *cs, *heldout]
    data = {s: run.test_set(s).head(examples) for s in sources}
    run.log(f"[autopatch] mixed stream: {len(sources)} sources x {examples} test images, batch sizes "
            f"{list(batch_sizes)}")

    def acc_of(variables, split):
        return evaluate(variables, run.model.apply, split, cfg.eval_batch_size, eval_step=run.eval_step)["accuracy"]

    oracle = {c: rws.patch(std, sig, 1.0) for c, sig in zip(cs, sigs)}
    average = rws.patch(std, sigs, 1.0 / len(sigs))
    baselines = {"standard": {s: acc_of(std, data[s]) for s in sources},
                 "oracle": {s: acc_of(oracle.get(s, std), data[s]) for s in sources},
                 "average": {s: acc_of(average, data[s]) for s in sources}}
    if cfg.mixture:
        mix = run.mixture()
        baselines["mixture"] = {s: acc_of(mix, data[s]) for s in sources}

    auto, detection, patches, coefficient_log = {}, {}, {}, {}
    for bs in batch_sizes:
        stream = [(s, i) for s in sources for i in range(0, len(data[s]), bs)]
        order = np.random.default_rng(cfg.seed + SEEDS.stream_order + bs).permutation(len(stream))
        for mode in ("batch", "per_image") if bs > 1 else ("batch",):
            patcher = rws.AutoPatcher(run.model, std, sigs, det, threshold=threshold, step=step,
                                      mean=tc.mean, std=tc.std)
            correct = {s: 0 for s in sources}
            hit_batch = {s: 0 for s in sources}
            alphas_sum = {s: np.zeros(len(cs)) for s in sources}
            for j in order:
                s, i = stream[j]
                x, y = data[s].images[i:i + bs], data[s].labels[i:i + bs]
                if mode == "per_image":
                    logits = patcher(x, per_image=True)
                else:  # patcher(x) in two steps, to record the coefficients
                    a = patcher.coefficients(x)
                    logits = patcher.apply_coefficients(a, x)
                correct[s] += _accuracy(logits, y)
                if mode == "batch":
                    alphas_sum[s] += a
                    truth = sources.index(s) if s in cs else -1
                    hit_batch[s] += (int(np.argmax(a)) + 1 if np.any(a) else 0) == max(truth, 0)
            n_batches = {s: len(range(0, len(data[s]), bs)) for s in sources}
            auto[f"{mode}/{bs}"] = {s: correct[s] / len(data[s]) for s in sources}
            patches[f"{mode}/{bs}"] = {"computed": patcher.patches_computed, "reused": patcher.patches_reused,
                                       "batches": len(stream)}
            if mode == "batch":
                detection[str(bs)] = {s: hit_batch[s] / n_batches[s] for s in sources}
                coefficient_log[str(bs)] = {s: (alphas_sum[s] / n_batches[s]).round(3).tolist() for s in sources}
    # per-image detection (the detector alone)
    per_image = {}
    for k, s in enumerate(sources):
        p, ind = det.scores(data[s].images)
        pred = np.where(np.asarray(ind), np.argmax(np.asarray(p), -1), 0)
        per_image[s] = float(np.mean(pred == (k if s in ["clean", *cs] else 0)))
    out = {"batch_sizes": list(batch_sizes), "examples": examples, "sources": sources, "corruptions": cs,
           "heldout": heldout, "threshold": threshold, "step": step, "severity": cfg.severity,
           "detector": {"train_accuracy": det.train_accuracy, "examples": DETECTOR_EXAMPLES,
                        "per_image_accuracy": per_image},
           "baselines": baselines, "auto": auto, "detection_per_batch": detection, "patches": patches,
           "mean_coefficients": coefficient_log}
    out["targets"] = autopatch_targets(out)
    run.save_metrics("autopatch", out)
    return out


def mean_over(d: dict, keys) -> float:
    """Mean of ``d[k]`` over ``keys`` (accuracies of a stream over its corruptions)."""
    return float(np.mean([d[k] for k in keys]))


def autopatch_targets(m: dict) -> list[dict]:
    """The issue's targets per batch size and mode: mean RA within 2 pp of the oracle patch,
    TA on clean batches within 0.5 pp of θ_std, held-out RA not below θ_std by > 1 pp."""
    cs, held = m["corruptions"], m["heldout"]
    std, oracle = m["baselines"]["standard"], m["baselines"]["oracle"]
    rows = []
    for key, acc in m["auto"].items():
        ra_gap = mean_over(acc, cs) - mean_over(oracle, cs)
        ta_gap = acc["clean"] - std["clean"]
        held_gap = min((acc[h] - std[h] for h in held), default=0.0)
        rows.append({"stream": key, "mean_ra_minus_oracle": ra_gap, "ta_minus_standard": ta_gap,
                     "worst_heldout_minus_standard": held_gap,
                     "met": {"ra": ra_gap >= -0.02, "ta": ta_gap >= -0.005, "heldout": held_gap >= -0.01}})
    return rows


def load_autopatch(run_dir: Path) -> dict | None:
    f = Path(run_dir) / "metrics" / "autopatch.json"
    return json.loads(f.read_text()) if f.exists() else None
