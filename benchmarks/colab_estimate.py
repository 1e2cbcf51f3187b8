"""Estimated wall time of the CIFAR-10 recipes on Colab accelerators, from a measured CPU
throughput and XLA's FLOP count (no GPU/TPU is used: the accelerator times are ESTIMATES).

    python benchmarks/colab_estimate.py [--batch 32] [--steps 4] [--out docs/benchmarks/colab_estimate]

1. Builds the full-width VGG-16 (no BN) on 32x32x3 and the pipeline's jitted train step
   (SGD + momentum + weight decay, crop + flip, on-device corruption as in a robust fine-tune)
   and eval step; counts their FLOPs with ``jax.jit(...).lower(...).compile().cost_analysis()``.
2. Times ``--steps`` train steps on this machine's CPU (after one compiling step): images/s and
   achieved FLOP/s.
3. Counts the images each preset trains on and evaluates (from its PipelineConfig; the
   evaluate/merge stages approximately, see ``workload``), and converts to time on the CPU
   (measured throughput) and on a T4 GPU and a TPU v2-8 (nominal peak FLOP/s x an assumed
   utilisation, both stated in the output).

Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax.data import ROTATIONS
from rws_jax.models import get_model
from rws_jax.pipeline import preset
from rws_jax.training import (TrainConfig, build_corrupt_fn, create_train_state, make_eval_step,
                              make_optimizer, make_train_step)

PRESETS = ("cifar10_vgg16_colab", "cifar10_vgg16")
CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000
# Nominal peak FLOP/s and the utilisation assumed for a float32 VGG-16 at batch 128 on 32x32 images.
ACCELERATORS = {
    "T4 GPU (Colab free tier)": dict(peak_flops=8.1e12, utilisation=0.35,
                                     note="8.1 TFLOP/s FP32 (no tensor cores in float32)"),
    "TPU v2-8 (Colab TPU)": dict(peak_flops=180e12, utilisation=0.15,
                                 note="180 TFLOP/s bf16 for the 8 cores (XLA runs float32 matmuls as bf16 passes "
                                      "by default); 128 images / 8 cores = 16 per core, so utilisation is low"),
}


def cost(compiled) -> float:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca.get("flops", 0.0))


def measure(batch: int, steps: int) -> dict:
    model = get_model("vgg16", 10)
    tc = TrainConfig(epochs=1, batch_size=batch, lr=0.01, momentum=0.9, weight_decay=5e-4)
    tx = make_optimizer(tc, 100)
    state = create_train_state(model, jax.random.key(0), tx, input_shape=(1, 32, 32, 3))
    corrupt = build_corrupt_fn("gaussian_noise", 5, preset="cifar10")
    train_step = make_train_step(corrupt_fn=corrupt, augment=True)
    eval_step = make_eval_step(model.apply)
    rng = np.random.default_rng(0)
    batch_ = {"image": jnp.asarray(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)),
              "label": jnp.asarray(rng.integers(0, 10, (batch,), dtype=np.int32))}
    key = jax.random.key(1)
    train_flops = cost(train_step.lower(state, batch_, key).compile())
    variables = {"params": state.params}
    eval_flops = cost(eval_step.lower(variables, batch_, key).compile())
    state, m = train_step(state, batch_, key)  # compile + warm up
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = train_step(state, batch_, key)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    return {
        "batch": batch, "steps_timed": steps, "step_seconds": [round(t, 4) for t in times],
        "median_step_s": step_s, "train_images_per_s": batch / step_s,
        "train_flops_per_image": train_flops / batch, "eval_flops_per_image": eval_flops / batch,
        "achieved_flops_per_s": train_flops / step_s,
    }


def workload(name: str) -> dict:
    """Images trained on and forward-evaluated by a full run of preset ``name``.

    Training is exact: θ_init, the updated backbone, θ_std (and θ_std of the updated backbone),
    the robust models (x replicates) and the mixture model, each for its epochs over its half
    of the training set, plus one validation pass per epoch. The evaluate and merge stages are
    approximated: each patched/quantized/robust/transfer variant on the clean and its corrupted
    test set, the standard/mixture/composed/merged models on the clean and every corrupted
    test set, and the α searches on the validation split.
    """
    cfg = preset(name)
    val = cfg.val_size or 5000
    half = (CIFAR10_TRAIN - val) // 2
    pre, fine = cfg.pretrain_examples or half, cfg.finetune_examples or half
    if cfg.init_kind == "torch":  # imported θ_init: nothing pre-trained, fine-tuning on the whole split
        fine = cfg.finetune_examples or (CIFAR10_TRAIN - val)
    if cfg.init_kind in ("rotation", "torch"):  # the rotation task (θ_init, updated backbone): 4 turns an image
        pre *= ROTATIONS
    n_c = len(cfg.corruptions)
    upd = int(cfg.update_backbone_epochs)
    pre_ep, ft_ep = int(cfg.pretrain.get("epochs", 1)), int(cfg.finetune.get("epochs", 1))
    if cfg.init_kind == "torch":
        pre_ep = 0
    finetunes = 1 + (1 if upd else 0) + n_c * cfg.robust_replicates + (1 if cfg.mixture else 0)
    trained = pre * pre_ep + pre * upd + fine * ft_ep * finetunes
    epochs = pre_ep + upd + ft_ep * finetunes
    test = cfg.test_examples or CIFAR10_TEST
    per_c_variants = len(cfg.alphas) + len(cfg.quant_bits) + 1 + (1 if upd else 0)  # patched, quantized, robust, transfer
    all_c_models = 1 + (1 if cfg.mixture else 0) + 1 + len(cfg.merge_methods)  # standard, mixture, composed, merges
    evaluated = (val * epochs + n_c * per_c_variants * 2 * test + all_c_models * (1 + n_c) * test
                 + (n_c + 1 + len(cfg.merge_methods)) * cfg.alpha_search_budget * 2 * val)
    return {"preset": name, "corruptions": n_c, "pretrain_epochs": pre_ep, "finetune_epochs": ft_ep,
            "update_backbone_epochs": upd, "finetuned_models": finetunes, "mixture": cfg.mixture,
            "train_images": trained, "eval_images": evaluated}


def estimate(m: dict, w: dict) -> dict:
    flops = w["train_images"] * m["train_flops_per_image"] + w["eval_images"] * m["eval_flops_per_image"]
    out = {"total_flops": flops,
           "cpu_hours_measured_throughput": flops / m["achieved_flops_per_s"] / 3600}
    for acc, a in ACCELERATORS.items():
        out[acc] = flops / (a["peak_flops"] * a["utilisation"]) / 3600
    return out


def fmt_h(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", default="docs/benchmarks/colab_estimate")
    args = p.parse_args(argv)
    command = "python benchmarks/colab_estimate.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    m = measure(args.batch, args.steps)
    rows = []
    for name in PRESETS:
        w = workload(name)
        rows.append({**w, **estimate(m, w)})
    result = {
        "command": command, "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
                    "backend": jax.default_backend()},
        "measured_on_cpu": m, "accelerators": ACCELERATORS, "presets": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    accs = list(ACCELERATORS)
    lines = [
        "# Estimated time of the CIFAR-10 recipes on Colab",
        "",
        f"Written by `{command}` on {result['date_utc']} UTC ({platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__}, backend {jax.default_backend()}); raw numbers in `{out.with_suffix('.json').name}`.",
        "",
        "**These are estimates, not measurements on a GPU or TPU.** Measured here: the CPU throughput of the "
        "jitted VGG-16 (no BN, full width, 32x32x3) train step with on-device corruption, crop and flip; "
        "counted by XLA (`cost_analysis()`): its FLOPs per image, and those of the eval step. The accelerator "
        "times divide the run's FLOPs by nominal peak FLOP/s x an *assumed* utilisation (below); they ignore "
        "compilation, host-side input and checkpointing, so a real run can be slower.",
        "",
        f"- measured: batch {m['batch']}, median step {m['median_step_s']:.2f} s over {m['steps_timed']} steps "
        f"= **{m['train_images_per_s']:.1f} images/s** on this CPU, {m['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s achieved",
        f"- XLA FLOPs per image: train step {m['train_flops_per_image'] / 1e9:.2f} GFLOP, "
        f"eval step {m['eval_flops_per_image'] / 1e9:.2f} GFLOP",
    ]
    for acc, a in ACCELERATORS.items():
        lines.append(f"- {acc}: peak {a['peak_flops'] / 1e12:.1f} TFLOP/s ({a['note']}), "
                     f"assumed utilisation {a['utilisation']:.0%}")
    lines += [
        "",
        "| preset | corruptions | epochs (pre-train + per fine-tune) | fine-tuned models | images trained | "
        "images evaluated (approx.) | " + " | ".join(f"est. {a}" for a in accs) + " | this CPU (measured rate) |",
        "|---|---|---|---|---|---|" + "---|" * len(accs) + "---|",
    ]
    for r in rows:
        upd = f" (+{r['update_backbone_epochs']} updated backbone)" if r["update_backbone_epochs"] else ""
        lines.append(
            f"| `{r['preset']}` | {r['corruptions']} | {r['pretrain_epochs']} + {r['finetune_epochs']}{upd} | "
            f"{r['finetuned_models']} | {r['train_images'] / 1e6:.2f} M | {r['eval_images'] / 1e6:.2f} M | "
            + " | ".join(fmt_h(r[a]) for a in accs) + f" | {fmt_h(r['cpu_hours_measured_throughput'])} |")
    lines += [
        "",
        "The images evaluated count is approximate (see `workload` in the script): the evaluate and merge "
        "stages are counted as each per-corruption variant (patched at every α, quantized at every bit width, "
        "robust, transfer) on 2 test sets, the standard/mixture/composed/merged models on every test set, and "
        "the α searches on the validation split.",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
