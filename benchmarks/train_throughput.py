"""Training throughput: our jitted train step against a PyTorch loop, same machine, same run.

    python -m benchmarks.train_throughput --out DIR [--quick] [--docs docs/benchmarks/train_throughput_cpu.md]

writes ``DIR/train_throughput.json`` and ``DIR/train_throughput.md`` (and the Markdown to
``--docs`` when given). Images per second of one optimizer step (forward, backward, SGD)
at 32x32x3, batch 128 (``--quick``: VGG-16 at width 1/8 only, batch 16, 2 repeats).

Method: three groups, each in its own child process, one after another, for ``--rounds``
rounds (default 2): ``torch``; ``ours`` and its variants; ``tuned`` (ours and ours bf16 in a
process started with :func:`rws_jax.tuned_xla_flags`, since XLA reads its flags once). Inside
a process the group's variants run interleaved (``benchmarks.common.interleaved``: warm-up /
compile first, then A, B, C, ... ``repeats`` times, median); a variant's step time is the
median over rounds. torch and JAX never share a process: interleaved in one, each slows the
other (PyTorch's OpenMP threads and XLA's pool keep spinning after their own work; in one run
of the previous method the same torch loop did 2,393 img/s beside six JAX variants and 3,146
beside two).

Variants:

* ``torch``: a PyTorch training loop of the same network (the reference VGG-16 without
  BatchNorm / the CIFAR ResNet with option-A shortcuts, written here in ``torch.nn``) with
  ``torch.optim.SGD(lr, momentum=0.9, weight_decay=5e-4)`` (the reference recipe), on a
  uint8 NCHW batch that it converts to float and normalises itself.
* ``ours``: ``make_train_step`` with the optimizer ``TrainConfig.reference_cifar()``
  builds (L2 weight decay + SGD momentum), donating the state, on a device-resident uint8
  NHWC batch; no augmentation, like the torch loop (the ratio ``ours / torch``).
* ``ours_augment``: plus the on-device random crop (pad 4) + flip of ``fit``.
* ``ours_<corruption>``: plus the on-device corruption (``gaussian_noise``: cheap; ``fog``:
  costly), severity 5, as ``TrainConfig(corruption=...)`` trains robust models.
* ``ours_bf16`` (not for full-width VGG-16): ``compute_dtype='bfloat16'``.
* ``ours_xla_conv``: ``ours`` with ``conv_impl='xla'``, i.e. plain ``flax.linen.Conv`` and
  ``nn.max_pool`` (the graph before :mod:`rws_jax.models.conv`), to show what the default
  ``conv_impl='auto'`` buys on this machine.

Thread situation: PyTorch uses ``torch.get_num_threads()`` intra-op threads; XLA:CPU runs
its convolutions/matmuls on its own Eigen thread pool with one thread per core
(``XLA_FLAGS`` is recorded; nothing is tuned here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from benchmarks.common import interleaved, machine_info, write_outputs

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CORRUPTIONS = ("gaussian_noise", "fog")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


# ----------------------------------------------------------------------------- torch models
def torch_vgg(cfg=VGG16_CFG, width: float = 1.0, num_classes: int = 10, in_ch: int = 3):
    """The reference VGG without BatchNorm (``models/vgg.py`` of the RWS code) in torch.nn,
    channels scaled like :func:`rws_jax.models.vgg.scale_width`."""
    import torch.nn as tnn

    from rws_jax.models.vgg import scale_width

    layers, c = [], in_ch
    for v in cfg:
        if v == "M":
            layers.append(tnn.MaxPool2d(2, 2))
        else:
            o = scale_width(v, width)
            layers += [tnn.Conv2d(c, o, 3, padding=1), tnn.ReLU(inplace=True)]
            c = o
    return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d((1, 1)), tnn.Flatten(), tnn.Linear(c, num_classes))


def torch_resnet_cifar(depth: int, width: float = 1.0, num_classes: int = 10):
    """CIFAR ResNet (He et al. 2016, option-A zero-pad shortcuts), as
    :class:`rws_jax.models.resnet.ResNetCifar` with its defaults."""
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    from rws_jax.models.vgg import scale_width

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv_0 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn_0 = tnn.BatchNorm2d(cout)
            self.conv_1 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn_1 = tnn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = F.relu(self.bn_0(self.conv_0(x)))
            out = self.bn_1(self.conv_1(out))
            sc = x
            if self.stride != 1 or self.extra:
                sc = x[:, :, ::self.stride, ::self.stride]
                sc = F.pad(sc, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            return F.relu(out + sc)

    n = (depth - 2) // 6
    c = scale_width(16, width)
    layers: list = [tnn.Conv2d(3, c, 3, 1, 1, bias=False), tnn.BatchNorm2d(c), tnn.ReLU(inplace=True)]
    for s in range(3):
        o = scale_width(16 * 2**s, width)
        for i in range(n):
            layers.append(Block(c, o, 2 if (s > 0 and i == 0) else 1))
            c = o
    del torch
    return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d((1, 1)), tnn.Flatten(), tnn.Linear(c, num_classes))


# ----------------------------------------------------------------------------- cases
def cases(quick: bool) -> list[dict]:
    """The benchmarked networks: name, our model, the torch twin, batch, repeats."""
    from rws_jax.models import get_model

    if quick:
        return [dict(name="vgg16_w0.125", ours=lambda: get_model("vgg16", 10, width=0.125),
                     torch=lambda: torch_vgg(width=0.125), batch=16, repeats=2,
                     corruptions=(), bf16=False, augment=False)]
    return [
        dict(name="vgg16", ours=lambda: get_model("vgg16", 10), torch=lambda: torch_vgg(),
             batch=128, repeats=3, corruptions=CORRUPTIONS, bf16=False, augment=True),
        dict(name="vgg16_w0.125", ours=lambda: get_model("vgg16", 10, width=0.125),
             torch=lambda: torch_vgg(width=0.125), batch=128, repeats=9, corruptions=CORRUPTIONS,
             bf16=True, augment=True),
        dict(name="resnet20", ours=lambda: get_model("resnet20", 10), torch=lambda: torch_resnet_cifar(20),
             batch=128, repeats=9, corruptions=CORRUPTIONS, bf16=True, augment=True),
        dict(name="resnet56", ours=lambda: get_model("resnet56", 10), torch=lambda: torch_resnet_cifar(56),
             batch=128, repeats=5, corruptions=CORRUPTIONS, bf16=False, augment=True),
    ]


def _num_params_ours(variables) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(variables["params"])))


def ours_variant(model, batch: int, *, corruption=None, augment=False, compute_dtype="float32",
                 seed: int = 0) -> tuple[Callable[[], Any], int]:
    """``(run_one_step, num_params)``: one donated, jitted train step per call on a fixed
    device-resident batch ``{'image': uint8[batch, 32, 32, 3], 'label': int32[batch]}``."""
    from rws_jax.training import (TrainConfig, build_corrupt_fn, create_train_state, make_optimizer,
                                  make_train_step, with_compute_dtype)

    cfg = TrainConfig.reference_cifar(corruption=corruption, augment=augment, compute_dtype=compute_dtype,
                                      mean=CIFAR_MEAN, std=CIFAR_STD)
    model = with_compute_dtype(model, cfg.compute_dtype)
    tx = make_optimizer(cfg, 350)
    rng = np.random.default_rng(seed)
    data = {"image": jax.device_put(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)),
            "label": jax.device_put(rng.integers(0, 10, (batch,), dtype=np.int32))}
    holder = {"state": create_train_state(model, jax.random.PRNGKey(seed), tx, (1, 32, 32, 3))}
    nparams = _num_params_ours(holder["state"].variables)
    step = make_train_step(model.apply, tx, build_corrupt_fn(corruption, cfg.severity, cfg.corruption_preset),
                           cfg.augment, crop_padding=cfg.crop_padding, flip=cfg.flip, mean=cfg.mean, std=cfg.std)
    key = jax.random.PRNGKey(seed + 1)

    def run():
        holder["state"], metrics = step(holder["state"], data, key)
        return metrics["loss"]

    return run, nparams


def torch_variant(net, batch: int, seed: int = 0) -> tuple[Callable[[], Any], int]:
    """``(run_one_step, num_params)``: one PyTorch SGD step (momentum 0.9, weight decay
    5e-4, lr 0.01) per call on a fixed uint8 NCHW batch, normalised inside the step."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (batch, 3, 32, 32), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, (batch,)).astype(np.int64))
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    nparams = int(sum(p.numel() for p in net.parameters()))

    def run():
        x = (images.float() / 255.0 - mean) / std
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return run, nparams


def _cpu_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores; /proc/stat), None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(v) for v in fields]
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU used by *other* processes while a case runs, in cores (machine busy time minus
    this process's CPU time, over wall time), and the 1-min load average at the end."""

    def __enter__(self):
        self.busy0, self.own0, self.t0 = _cpu_busy_s(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy1, own1, t1 = _cpu_busy_s(), time.process_time(), time.perf_counter()
        self.other_cores = (None if self.busy0 is None or busy1 is None else
                            round(max(0.0, (busy1 - self.busy0) - (own1 - self.own0)) / (t1 - self.t0), 2))
        self.loadavg_1min = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        return False


GROUPS = ("torch", "ours", "tuned")


def measure_group(case: dict, group: str) -> dict:
    """In this process: the variants of one group, interleaved (median of ``repeats`` steps
    after a warm-up): ``torch``; ``ours`` and its variants (augmentation, corruptions, bf16,
    ``nn.Conv``) under this process's XLA flags; ``tuned``: ours and ours bf16, in a process
    started with the tuned flags."""
    bs = int(case["batch"])
    variants: dict[str, Callable[[], Any]] = {}
    params = None
    if group == "torch":
        variants["torch"], params = torch_variant(case["torch"](), bs)
    elif group == "ours":
        variants["ours"], params = ours_variant(case["ours"](), bs)
        if case.get("augment"):
            variants["ours_augment"] = ours_variant(case["ours"](), bs, augment=True)[0]
        for c in case.get("corruptions", ()):
            variants[f"ours_{c}"] = ours_variant(case["ours"](), bs, corruption=c)[0]
        if case.get("bf16"):
            variants["ours_bf16"] = ours_variant(case["ours"](), bs, compute_dtype="bfloat16")[0]
        if case.get("xla_conv", True):
            variants["ours_xla_conv"] = ours_variant(case["ours"]().clone(conv_impl="xla"), bs)[0]
    elif group == "tuned":
        variants["ours_tuned"], params = ours_variant(case["ours"](), bs)
        if case.get("bf16"):
            variants["ours_bf16_tuned"] = ours_variant(case["ours"](), bs, compute_dtype="bfloat16")[0]
    else:
        raise ValueError(f"unknown group {group!r}; groups: {GROUPS}")
    with OtherLoad() as load:
        res = interleaved(variants, repeats=int(case["repeats"]), warmup=1)
    return {"params": params, "xla_flags": os.environ.get("XLA_FLAGS", ""), "other_cores": load.other_cores,
            "variants": {n: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in st.items()}
                         for n, st in res.items()}}


def run_group(name: str, group: str, quick: bool) -> dict:
    """:func:`measure_group` in a child process; the ``tuned`` group's ``XLA_FLAGS`` are
    :func:`rws_jax.cpu_tuning.tuned_xla_flags` (XLA reads them once, at backend start)."""
    import subprocess

    from rws_jax.cpu_tuning import tuned_xla_flags

    env = dict(os.environ)
    if group == "tuned":
        env["XLA_FLAGS"] = tuned_xla_flags(os.environ.get("XLA_FLAGS", ""))
    argv = [sys.executable, "-m", "benchmarks.train_throughput", "--group-child", name, group]
    done = subprocess.run(argv + (["--quick"] if quick else []), env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name}/{group} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_case(case: dict, quick: bool, rounds: int) -> dict:
    """``rounds`` rounds of one child process per group (torch, ours, tuned), in that order;
    a variant's step time is the median over rounds of its per-process medians."""
    bs = int(case["batch"])
    per: dict[str, list[dict]] = {}
    params: dict[str, Any] = {}
    other: list[float] = []
    flags = ""
    t0 = time.perf_counter()
    for _ in range(rounds):
        for g in GROUPS:
            r = run_group(case["name"], g, quick)
            params[g] = r["params"]
            other.append(r["other_cores"] or 0.0)
            flags = r["xla_flags"] if g == "tuned" else flags
            for n, st in r["variants"].items():
                per.setdefault(n, []).append(st)
    if params["ours"] != params["torch"]:
        raise AssertionError(f"{case['name']}: our model has {params['ours']} parameters, the torch twin "
                             f"{params['torch']}")
    out: dict[str, Any] = {"batch": bs, "params": params["ours"], "repeats": int(case["repeats"]), "rounds": rounds,
                           "wall_s": round(time.perf_counter() - t0, 1), "other_processes_cpu_cores": max(other),
                           "tuned_xla_flags": flags, "variants": {}}
    for n, sts in per.items():
        med = float(np.median([st["median_s"] for st in sts]))
        out["variants"][n] = {"median_s": round(med, 5), "round_medians_s": [st["median_s"] for st in sts],
                              "first_s": sts[0]["first_s"], "images_per_s": round(bs / med, 1)}
    v = out["variants"]
    for key, num in (("ratio_ours_over_torch", "ours"), ("ratio_tuned_over_torch", "ours_tuned"),
                     ("ratio_bf16_tuned_over_torch", "ours_bf16_tuned")):
        if num in v:
            out[key] = round(v[num]["images_per_s"] / v["torch"]["images_per_s"], 3)
    return out


def thread_info() -> dict:
    import torch

    return {"torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(),
            "os_cpu_count": os.cpu_count(),
            "sched_affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
            "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()],
            "xla_cpu_threads": "XLA:CPU Eigen pool, one thread per core (default, untuned)"}


def _fmt_cores(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def to_markdown(result: dict, command: str) -> str:
    m, th = result["machine"], result["threads"]
    lines = [
        "# Training throughput: our jitted train step vs. a PyTorch loop",
        "",
        f"Written by `{command}` on {result['date']}",
        f"({'quick mode' if result['quick'] else 'full run'}; wall time {result['wall_s']:.0f} s).",
        "",
        f"Machine: {m.get('cpu_model', m.get('processor'))}, {th['os_cpu_count']} CPU cores "
        f"({th['sched_affinity_cpus']} usable), backend `{th['jax_backend']}`; jax {m['jax']}, "
        f"flax {m.get('flax')}, torch {m.get('torch')}. torch threads: {th['torch_num_threads']} intra-op / "
        f"{th['torch_num_interop_threads']} inter-op; XLA: {th['xla_cpu_threads']}, "
        f"`XLA_FLAGS={th['XLA_FLAGS'] or '(unset)'}`.",
        "",
        "One optimizer step (forward, backward, SGD momentum 0.9 + L2 weight decay 5e-4) on a "
        "32x32x3 uint8 batch, normalised inside the step. `torch`: a PyTorch loop of the same network "
        "(`torch.optim.SGD`); `ours`: `make_train_step` with `TrainConfig.reference_cifar()`'s optimizer, "
        "state donated. Both without augmentation; `ours +aug` adds the on-device random crop + flip, "
        "`ours +<corruption>` the on-device corruption (severity 5) as robust fine-tuning runs it, "
        "`ours bf16` `compute_dtype='bfloat16'`; `ours nn.Conv` is `ours` with `conv_impl='xla'` "
        "(plain `flax.linen.Conv` + `nn.max_pool`, the graph before `rws_jax.models.conv`; `ours` uses "
        "the default `conv_impl='auto'`). Each group (torch; ours and its variants; ours under the tuned "
        "flags) runs in its own process, the groups one after another, for `rounds` rounds; inside a "
        "process its variants run interleaved after a warm-up (compilation), median of `repeats` steps; a "
        "variant's step time is the median over rounds; images/s = batch / that time.",
        "",
        "`other CPU`: cores used by other processes while the case ran (from `/proc/stat`); "
        "where it is well above 0 the ratio ours/torch is not reliable (PyTorch's OpenMP threads slow "
        "down far more than XLA's pool when cores are taken), the ratio ours / ours nn.Conv still is.",
        "",
        "| model | params | batch | repeats x rounds | torch img/s | ours img/s | **ours / torch** | ours +aug | "
        "ours +gaussian_noise | ours +fog | ours bf16 | ours nn.Conv | ours compile+1st step s | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def g(v, k):
        return f"{v[k]['images_per_s']:.1f}" if k in v else "–"

    for name, r in result["cases"].items():
        v = r["variants"]
        lines.append(
            f"| {name} | {r['params']:,} | {r['batch']} | {r['repeats']} x {r['rounds']} | {g(v, 'torch')} | "
            f"{g(v, 'ours')} | "
            f"**{r['ratio_ours_over_torch']:.2f}x** | {g(v, 'ours_augment')} | {g(v, 'ours_gaussian_noise')} | "
            f"{g(v, 'ours_fog')} | {g(v, 'ours_bf16')} | {g(v, 'ours_xla_conv')} | {v['ours']['first_s']:.1f} | "
            f"{_fmt_cores(r.get('other_processes_cpu_cores'))} |")
    lines += ["", f"**Tuned** (`rws_jax.apply_cpu_tuning()`, which `rws-jax` applies at start-up): "
              f"`XLA_FLAGS={result.get('tuned_xla_flags')}`; `ours bf16` adds `compute_dtype='bfloat16'` "
              "(float32 parameters, gradients and optimizer, bf16 activations) against the same float32 torch loop.",
              "", "| model | torch img/s | ours tuned img/s | **ours tuned / torch** | ours bf16 tuned img/s | "
              "ours bf16 tuned / torch |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in result["cases"].items():
        v = r["variants"]
        bf = r.get("ratio_bf16_tuned_over_torch")
        lines.append(f"| {name} | {g(v, 'torch')} | {g(v, 'ours_tuned')} | **{r['ratio_tuned_over_torch']:.2f}x** | "
                     f"{g(v, 'ours_bf16_tuned')} | {'–' if bf is None else f'{bf:.2f}x'} |")
    goals = result.get("goals") or {}
    if goals:
        lines += ["", "| goal (issue 30) | target | measured (tuned, float32) | status |", "|---|---:|---:|---|"]
        for name, gl in goals.items():
            lines.append(f"| ours / torch, {name} | ≥ {gl['target']:.1f}x | {gl['measured']:.2f}x | "
                         f"{'met' if gl['met'] else '**missed**'} |")
    lines += ["", "Per-round medians of every variant are in `train_throughput.json` (beside `--docs`: the same "
              "name with `.json`).", ""]
    notes = result.get("notes")
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="directory for train_throughput.json/.md (required)")
    p.add_argument("--quick", action="store_true", help="VGG-16 width 1/8, batch 16, 2 repeats (seconds)")
    p.add_argument("--docs", default=None, help="also write the Markdown to this path")
    p.add_argument("--only", default=None, help="comma-separated case names to run (default: all)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of one process per group (default 2; quick 1)")
    p.add_argument("--group-child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.group_child:
        name, group = args.group_child
        case = next(c for c in cases(args.quick) if c["name"] == name)
        print(json.dumps(measure_group(case, group)))
        return {}
    if not args.out:
        p.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.train_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    selected = cases(args.quick)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {c["name"] for c in selected})
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; valid: {[c['name'] for c in selected]}")
        selected = [c for c in selected if c["name"] in names]
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": bool(args.quick),
                    "machine": machine_info(), "threads": thread_info(), "cases": {}}
    for case in selected:
        print(f"[train_throughput] {case['name']} (batch {case['batch']}) ...", flush=True)
        rounds = args.rounds or (1 if args.quick else 2)
        result["cases"][case["name"]] = r = measure_case(case, args.quick, rounds)
        print(f"[train_throughput]   torch {r['variants']['torch']['images_per_s']} img/s, ours "
              f"{r['variants']['ours']['images_per_s']} ({r['ratio_ours_over_torch']}x), tuned "
              f"{r['variants']['ours_tuned']['images_per_s']} ({r['ratio_tuned_over_torch']}x)", flush=True)
    result["wall_s"] = time.perf_counter() - t0
    result["tuned_xla_flags"] = next((r["tuned_xla_flags"] for r in result["cases"].values()), None)
    goals = {} if args.quick else {"vgg16_w0.125": 1.0, "resnet20": 0.8}
    result["goals"] = {n: {"target": goals[n], "measured": r["ratio_tuned_over_torch"],
                           "met": r["ratio_tuned_over_torch"] >= goals[n]}
                       for n, r in result["cases"].items() if n in goals}
    below = [n for n, r in result["cases"].items() if r["ratio_tuned_over_torch"] < 1.0]
    busy = [n for n, r in result["cases"].items() if (r.get("other_processes_cpu_cores") or 0) > 0.25]
    caveat = " (but see the next note)" if busy else ""
    result["notes"] = ([f"below 1.0x torch: {', '.join(below)}{caveat}"] if below else
                       [f"ours >= 1.0x torch for every model measured{caveat}"])
    if busy:
        result["notes"].append(
            f"other processes used CPU during {', '.join(busy)} (column `other CPU`): the torch "
            "numbers and the ours/torch ratios of those rows are not reliable; rerun on an idle machine")
    md = to_markdown(result, command)
    write_outputs(out, "train_throughput", result, md, args.docs)
    print(md)
    return result


if __name__ == "__main__":
    main()
