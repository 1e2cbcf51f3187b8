"""The study's fine-tuning epoch under XLA's defaults and the tuned flags, and how many
fine-tuning epochs fit the study's 2.5 h budget.

    python -m benchmarks.study_epoch --out DIR [--docs docs/benchmarks/study_epoch_cpu.md]

1. **Per-image time of the study's fine-tuning.** For each network of the ``reproduce``
   study (VGG-16 width 1/8, ResNet-20), ``fit`` runs 2 epochs of the study's own fine-tuning
   ``TrainConfig`` (the reference recipe, batch 128, crop + flip, grayscale normalisation) on
   a slice of the study's fine-tuning half (6,400 images for VGG, 2,560 for ResNet-20), clean and with ``fog`` (the costliest
   corruption of the study), then times a forward-only evaluation pass, in one child process with ``XLA_FLAGS`` unset and one with
   :func:`rws_jax.tuned_xla_flags`; the second epoch's ``epoch_seconds`` (no compilation) /
   images is the time per image. The ratio default / tuned is the speed-up. VGG-16 at widths
   1/4 and 1/2 (the regime map's width axis) are timed the same way.
2. **The study's fine-tuning per epoch.** Image-epochs of one fine-tuning epoch of the whole
   study, counted from its presets: per run, the models trained with the ``finetune`` recipe
   (θ_std and the premise's second θ_std, θ_rob,c per corruption and replicate, the mixture
   model, the updated backbone's θ_std, the transfer models where the transfer recipe is the
   fine-tuning recipe) x the run's fine-tuning examples; x the per-image time (mean of clean
   and fog) of the run's network.
3. **Epochs that fit.** The rest of the study (pre-training, evaluation, signatures, reports)
   does not scale with the fine-tuning epochs. It is estimated as a committed study's
   measured wall time (``--committed``, default ``docs/reproduce``: its ``metrics/timing.json``,
   and per run the fine-tuning epochs and models of its own ``config.yaml``) minus its
   fine-tuning at the default per-image time measured here (an estimate where that study ran
   on another machine of the same 2-core size). Epochs that fit
   = floor((budget - rest) / (fine-tuning seconds per epoch at the tuned speed)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

# images per epoch of the timing fit (50, 20 and 10 steps)
SLICE = {"vgg16": 6400, "resnet20": 2560, "vgg16_w0.25": 2560, "vgg16_w0.5": 1280}
NETWORKS = ("vgg16", "resnet20", "vgg16_w0.25", "vgg16_w0.5")
WIDTHS = {"vgg16_w0.25": 0.25, "vgg16_w0.5": 0.5}  # the regime map's width axis (the study's is 1/8)


def _child(network: str) -> dict:
    from rws_jax.data import ArraySplit
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.model_store import train_config
    from rws_jax.pipeline.run_data import RunData
    from rws_jax.models import get_model
    from rws_jax.training import evaluate, fit

    study = STUDIES["reproduce"]
    name = "resnet20" if network == "resnet20" else "vgg16_seed0"
    cfg = study.config(name)
    if network in WIDTHS:
        cfg = cfg.replace(model_kwargs={**cfg.model_kwargs, "width": WIDTHS[network]})
    fine = RunData(cfg, log=lambda *_: None).halves[1]
    k = SLICE[network]
    part = ArraySplit(fine.images[:k], fine.labels[:k])
    model = get_model(cfg.model, 10, **cfg.model_kwargs)
    out = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "images": k}
    for corruption in (None, "fog"):
        tc = train_config(cfg, "finetune", corruption=corruption).replace(epochs=2, eval_every=100)
        variables, hist = fit(model, part, None, tc, progress=False)
        out[corruption or "clean"] = {"epoch_seconds": hist["epoch_seconds"],
                                      "seconds_per_image": hist["epoch_seconds"][1] / k}
    # evaluation (forward only, batch cfg.eval_batch_size): the second pass, compiled
    test = ArraySplit(fine.images[:2 * k], fine.labels[:2 * k])
    evaluate(variables, model.apply, test, cfg.eval_batch_size)
    t0 = time.perf_counter()
    evaluate(variables, model.apply, test, cfg.eval_batch_size)
    out["eval_seconds_per_image"] = (time.perf_counter() - t0) / (2 * k)
    return out


def _run_child(network: str, flags: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if flags:
        env["XLA_FLAGS"] = flags
    done = subprocess.run([sys.executable, "-m", "benchmarks.study_epoch", "--child", network], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"study_epoch child {network} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def finetune_image_epochs(premise: bool = True) -> dict:
    """Per run of the reproduce study: (network, image-epochs of one fine-tuning epoch)."""
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_design import study_finetune_image_epochs

    return study_finetune_image_epochs(STUDIES["reproduce"], premise=premise)


def committed_finetune_image_epochs(study_dir: str | Path) -> dict:
    """Per run of a committed study directory, from each run's own ``config.yaml``: image-epochs
    of one fine-tuning epoch (the premise's second θ_std counted only where the run measured
    the premise, ``metrics/premise.json``) and the run's fine-tuning epochs."""
    from rws_jax.pipeline.config import Study, run_config_from_file
    from rws_jax.pipeline.study_design import study_finetune_image_epochs

    runs, epochs = [], {}
    for cfg_file in sorted(Path(study_dir).glob("*/config.yaml")):
        cfg = run_config_from_file(cfg_file)
        measured = (cfg_file.parent / "metrics" / "premise.json").exists()
        name = cfg_file.parent.name
        runs.append((name, dict(cfg.to_dict(), premise=bool(cfg.premise and measured))))
        epochs[name] = int(cfg.finetune["epochs"])
    counts = study_finetune_image_epochs(Study(name="committed", description="", runs=tuple(runs), seed_group=()))
    return {n: {**v, "epochs": epochs[n]} for n, v in counts.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="directory for study_epoch.json/.md")
    p.add_argument("--docs", default=None, help="also write the Markdown (and .json beside it) here")
    p.add_argument("--committed", default="docs/reproduce",
                   help="a committed study directory whose measured wall time gives the part that does not scale "
                        "with the epochs (its metrics/timing.json and its runs' config.yaml)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return {}
    if not args.out:
        p.error("--out is required")
    from benchmarks.common import loadavg, machine_info, write_outputs
    from rws_jax.cpu_tuning import tuned_xla_flags
    from rws_jax.pipeline.presets import FINETUNE_EPOCHS
    from rws_jax.pipeline.study_design import STUDY_BUDGET_S

    command = "python -m benchmarks.study_epoch " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    tuned = tuned_xla_flags("")
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_info(),
                 "loadavg_start": loadavg(), "tuned_flags": tuned, "networks": {}}
    for net in NETWORKS:
        d, t = _run_child(net, None), _run_child(net, tuned)
        res["networks"][net] = {"default": d, "tuned": t,
                                "seconds_per_image_default": (d["clean"]["seconds_per_image"]
                                                              + d["fog"]["seconds_per_image"]) / 2,
                                "seconds_per_image_tuned": (t["clean"]["seconds_per_image"]
                                                            + t["fog"]["seconds_per_image"]) / 2}
        n = res["networks"][net]
        n["speedup"] = n["seconds_per_image_default"] / n["seconds_per_image_tuned"]
    runs_now = finetune_image_epochs(premise=True)
    runs_then = committed_finetune_image_epochs(args.committed)
    spi = {net: (v["seconds_per_image_default"], v["seconds_per_image_tuned"]) for net, v in res["networks"].items()}
    epoch_default = sum(r["image_epochs"] * spi[r["network"]][0] for r in runs_now.values())
    epoch_tuned = sum(r["image_epochs"] * spi[r["network"]][1] for r in runs_now.values())
    timing = json.loads((Path(args.committed) / "metrics" / "timing.json").read_text())
    committed_s = sum(v["seconds"] for v in timing.values())
    committed_finetune_s = sum(r["epochs"] * r["image_epochs"] * spi[r["network"]][0] for r in runs_then.values())
    rest = max(0.0, committed_s - committed_finetune_s)
    res.update(runs=runs_now, finetune_epoch_s_default=epoch_default, finetune_epoch_s_tuned=epoch_tuned,
               committed_study_s=committed_s, committed_finetune_s_estimate=committed_finetune_s,
               rest_s_estimate=rest, budget_s=STUDY_BUDGET_S, finetune_epochs_now=FINETUNE_EPOCHS,
               committed_study=str(args.committed), committed_runs=runs_then,
               epochs_fit_default=math.floor((STUDY_BUDGET_S - rest) / epoch_default),
               epochs_fit_tuned=math.floor((STUDY_BUDGET_S - rest) / epoch_tuned),
               wall_s=time.perf_counter() - t0, loadavg_end=loadavg())
    md = to_markdown(res, command)
    write_outputs(args.out, "study_epoch", res, md, args.docs)
    print(md)
    return res


def to_markdown(r: dict, command: str) -> str:
    m = r["machine"]
    lines = ["# The study's fine-tuning epoch, default vs. tuned XLA flags", "",
             f"Written by `{command}` on {r['date']} (wall time {r['wall_s']:.0f} s). Machine: "
             f"{m.get('cpu_model', m.get('processor'))}, {os.cpu_count()} cores, jax {m['jax']}; load average "
             f"{r['loadavg_start']} at the start, {r['loadavg_end']} at the end. Tuned: `XLA_FLAGS={r['tuned_flags']}`. "
             "Method: the docstring of `benchmarks/study_epoch.py`.", "",
             "| network | clean ms/image default | tuned | fog ms/image default | tuned | speed-up (mean) | "
             "eval ms/image tuned |", "|---|---:|---:|---:|---:|---:|---:|"]
    for net, v in r["networks"].items():
        d, t = v["default"], v["tuned"]
        lines.append(f"| {net} | {1000 * d['clean']['seconds_per_image']:.3f} | "
                     f"{1000 * t['clean']['seconds_per_image']:.3f} | {1000 * d['fog']['seconds_per_image']:.3f} | "
                     f"{1000 * t['fog']['seconds_per_image']:.3f} | **{v['speedup']:.2f}x** | "
                     f"{1000 * t['eval_seconds_per_image']:.3f} |")
    lines += ["", "| run | network | models fine-tuned | examples | image-epochs per epoch |", "|---|---|---:|---:|---:|"]
    for name, v in r["runs"].items():
        lines.append(f"| {name} | {v['network']} | {v['models']} | {v['finetune_examples']:,} | {v['image_epochs']:,} |")
    lines += ["",
              f"One fine-tuning epoch of the whole study: **{r['finetune_epoch_s_default'] / 60:.1f} min** at XLA's "
              f"defaults, **{r['finetune_epoch_s_tuned'] / 60:.1f} min** tuned. The committed study "
              f"(`{r.get('committed_study', 'docs/reproduce')}`) took {r['committed_study_s'] / 60:.0f} min, "
              f"of which fine-tuning ≈ {r['committed_finetune_s_estimate'] / 60:.0f} min at this machine's default "
              f"speed, leaving ≈ {r['rest_s_estimate'] / 60:.0f} min that does not scale with the epochs "
              "(an estimate across machines).", "",
              f"Fine-tuning epochs that fit the {r['budget_s'] / 3600:.1f} h budget: **{r['epochs_fit_tuned']}** tuned "
              f"({r['epochs_fit_default']} at XLA's defaults; the study now runs {r['finetune_epochs_now']}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
