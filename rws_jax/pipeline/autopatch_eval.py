"""The auto-patching stages of a run: train the corruption detector, and evaluate
:class:`rws_jax.AutoPatcher` on a mixed test stream.

``train_run_detector`` trains the detector on the fine-tuning split (clean + each corruption of
the run at its severity) and saves it with orbax beside the signatures
(``signatures/detector``); a saved one is reloaded and refused when it does not match the
signature set. ``evaluate_autopatching`` writes ``metrics/autopatch.json``: on the first
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

import time
from pathlib import Path

import jax
import numpy as np

import rws_jax as rws
from rws_jax.corruptions import CORRUPTIONS
from rws_jax.pipeline.autopatch_targets import autopatch_targets, mixed_targets
from rws_jax.pipeline.metrics_files import write_metrics
from rws_jax.pipeline.model_store import train_config
from rws_jax.pipeline.presets import SEEDS
from rws_jax.pipeline.run import Run
from rws_jax.training.augment import normalize_images

DEFAULT_BATCH_SIZES = (1, 8, 64)
DEFAULT_HELDOUT = ("zoom_blur", "brightness", "shot_noise")
DETECTOR_EXAMPLES = 2000


DEFAULT_SEVERITIES = (1, 2, 3, 4, 5)
MIXED_BATCH_SIZES = (8, 64)
MIXED_EXAMPLES = 500


def detector_path(run: Run, severities: tuple | None = None) -> Path:
    """``signatures/detector`` (trained at the run's severity) or ``signatures/detector_sev1-5``."""
    sev = tuple(severities or (run.cfg.severity,))
    suffix = "" if sev == (run.cfg.severity,) else f"_sev{min(sev)}-{max(sev)}"
    return run.dir / "signatures" / f"detector{suffix}"


def train_run_detector(run: Run, examples: int = DETECTOR_EXAMPLES, severities: tuple | None = None) -> rws.CorruptionDetector:
    """Trains (once) and saves the run's detector (on ``severities``, default the run's
    severity); returns it, checked against the signatures."""
    sigs = [run.signatures.signature(c) for c in run.cfg.corruptions]
    sev = tuple(severities or (run.cfg.severity,))
    path = detector_path(run, sev)
    if path.exists():
        return rws.load_detector(path, signatures=sigs)
    run.log(f"[detect] corruption detector on {examples} fine-tuning images x {len(sigs) + 1} classes, "
            f"severities {list(sev)}")
    t0 = time.time()
    images = run.data.halves[1].images[:examples]
    det = rws.train_detector(images, sigs, severity=sev if len(sev) > 1 else sev[0],
                             key=jax.random.key(run.cfg.seed + SEEDS.detector),
                             corruption_preset=run.cfg.corruption_preset)
    rws.save_detector(path, det)
    run.log(f"  detector: train accuracy {det.train_accuracy:.4f} in {time.time() - t0:.0f}s")
    return det


def reference_batch_norm(run: Run) -> rws.ReferenceBatchNorm | None:
    """The reference BN scheme of the run's signatures, precomputed once (BatchNorm models
    patched with ``bn='reference'``); None for the pure weight patch."""
    if run.patcher.bn_mode != "reference":
        return None
    cs = list(run.cfg.corruptions)
    run.log(f"[autopatch] precomputing the reference BatchNorm trees of {len(cs)} signatures")
    bs = int(run.cfg.finetune.get("batch_size", 128))

    def batches_of(k):
        images = run.data.recalibration_split(cs[k]).images
        return [images[i:i + bs] for i in range(0, len(images), bs)]

    tc = train_config(run.cfg, "finetune")
    return rws.precompute_reference_bn(run.models.standard(), [run.signatures.signature(c) for c in cs], [run.models.robust(c) for c in cs],
                                       apply_fn=run.models.model.apply, batches_of=batches_of,
                                       preprocess=lambda x: normalize_images(x, tc.mean, tc.std))


def _accuracy(logits, labels) -> int:
    return int(np.sum(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


def evaluate_autopatching(run: Run, *, batch_sizes=DEFAULT_BATCH_SIZES, examples: int = 2000,
                    heldout=DEFAULT_HELDOUT, threshold: float = 0.25, step: float = 0.25,
                    severities=DEFAULT_SEVERITIES, mixed_batch_sizes=MIXED_BATCH_SIZES,
                    mixed_examples: int = MIXED_EXAMPLES) -> dict:
    """Evaluates auto-patching; writes and returns metrics/autopatch.json.

    Two streams: batches of one source each (clean, a corruption with a signature, a held-out
    one) at the run's severity, batch sizes ``batch_sizes``; and *mixed* batches, each drawing
    its images from every source, at ``severities``, batch sizes ``mixed_batch_sizes``, with
    the detector trained at the run's severity and one trained at ``severities``, against the
    per-image oracle (each image patched with its own corruption's RWS). BatchNorm models
    (``bn='reference'``) are auto-patched with the reference BN scheme, precomputed."""
    cfg = run.cfg
    cs = list(cfg.corruptions)
    unknown = [h for h in heldout if h not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown held-out corruption(s) {unknown}; valid: {', '.join(CORRUPTIONS)}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes) or int(examples) < 1:
        raise ValueError(f"batch sizes and examples must be >= 1, got {list(batch_sizes)} and {examples}")
    heldout = [h for h in heldout if h not in cs]
    det = train_run_detector(run)
    sigs = [run.signatures.signature(c) for c in cs]
    std = run.models.standard()
    tc = train_config(run.cfg, "finetune")
    sources = ["clean", *cs, *heldout]
    data = {s: run.data.test_set(s).head(examples) for s in sources}
    run.log(f"[autopatch] mixed stream: {len(sources)} sources x {examples} test images, batch sizes "
            f"{list(batch_sizes)}")

    acc_of = run.evaluator.split_accuracy
    bn_ref = reference_batch_norm(run)
    oracle = {c: run.patcher.patched(std, [c], sig, 1.0) for c, sig in zip(cs, sigs)}
    average = run.patcher.patched(std, cs, sigs, 1.0 / len(sigs))
    baselines = {"standard": {s: acc_of(std, data[s]) for s in sources},
                 "oracle": {s: acc_of(oracle.get(s, std), data[s]) for s in sources},
                 "average": {s: acc_of(average, data[s]) for s in sources}}
    if cfg.mixture:
        mix = run.models.mixture()
        baselines["mixture"] = {s: acc_of(mix, data[s]) for s in sources}

    auto, detection, patches, coefficient_log = {}, {}, {}, {}
    for bs in batch_sizes:
        stream = [(s, i) for s in sources for i in range(0, len(data[s]), bs)]
        order = np.random.default_rng(cfg.seed + SEEDS.stream_order + bs).permutation(len(stream))
        for mode in ("batch", "per_image") if bs > 1 else ("batch",):
            patcher = rws.AutoPatcher(run.models.model, std, sigs, det, threshold=threshold, step=step,
                                      mean=tc.mean, std=tc.std, batch_norm=bn_ref)
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
    out["bn"] = "reference (precomputed)" if bn_ref is not None else "none (pure weight patch)"
    detectors = {f"sev{cfg.severity}": det}
    if tuple(severities) != (cfg.severity,):
        detectors[f"sev{min(severities)}-{max(severities)}"] = train_run_detector(run, severities=tuple(severities))
    out["mixed"] = _mixed_streams(run, sources, cs, oracle, std, detectors, bn_ref, severities=tuple(severities),
                                  batch_sizes=tuple(mixed_batch_sizes), examples=mixed_examples,
                                  threshold=threshold, step=step, acc_of=acc_of)
    out["mixed_targets"] = mixed_targets(out["mixed"])
    write_metrics(run.dir, "autopatch", out)
    return out


def _mixed_streams(run: Run, sources, cs, oracle, std, detectors, bn_ref, *, severities, batch_sizes, examples,
                   threshold, step, acc_of) -> dict:
    """Mixed batches: at each severity the first ``examples`` test images of every source are
    shuffled together and cut into batches, so that a batch holds clean images and several
    corruptions. Per source: θ_std, the per-image oracle and each auto-patcher (detector x
    mode x batch size)."""
    cfg = run.cfg
    tc = train_config(run.cfg, "finetune")
    sigs = [run.signatures.signature(c) for c in cs]
    res = {"severities": list(severities), "batch_sizes": list(batch_sizes), "examples": examples,
           "detectors": {k: {"severities": list(d.trained_severities),
                             "train_accuracy": d.train_accuracy} for k, d in detectors.items()},
           "standard": {}, "oracle": {}, "auto": {}}
    for sev in severities:
        data = {s: run.data.test_set(s if s == "clean" or sev == cfg.severity else f"{s}@{sev}").head(examples)
                for s in sources}
        key = f"sev{sev}"
        res["standard"][key] = {s: acc_of(std, data[s]) for s in sources}
        res["oracle"][key] = {s: acc_of(oracle.get(s, std), data[s]) for s in sources}
        images = np.concatenate([data[s].images for s in sources])
        labels = np.concatenate([data[s].labels for s in sources])
        origin = np.concatenate([np.full(len(data[s]), i) for i, s in enumerate(sources)])
        run.log(f"[autopatch] mixed batches at severity {sev}: {len(images)} images of {len(sources)} sources")
        for bs in batch_sizes:
            order = np.random.default_rng([cfg.seed + SEEDS.stream_order, int(bs), int(sev)]).permutation(len(images))
            for dname, det in detectors.items():
                for mode in ("batch", "per_image"):
                    patcher = rws.AutoPatcher(run.models.model, std, sigs, det, threshold=threshold, step=step,
                                              mean=tc.mean, std=tc.std, batch_norm=bn_ref)
                    correct = np.zeros(len(sources))
                    for i in range(0, len(order), bs):
                        idx = order[i:i + bs]
                        x = images[idx]
                        if len(idx) < bs:  # the last batch: padded to the batch size, the padding dropped
                            x = np.concatenate([x, images[order[: bs - len(idx)]]])
                        logits = np.asarray(patcher(x, per_image=mode == "per_image"))[: len(idx)]
                        hit = np.argmax(logits, -1) == labels[idx]
                        np.add.at(correct, origin[idx], hit)
                    res["auto"].setdefault(f"{dname}/{mode}/{bs}", {})[key] = {
                        s: float(correct[i] / len(data[s])) for i, s in enumerate(sources)}
    res["corruptions"], res["sources"] = list(cs), list(sources)
    return res
