"""Where the time of one training step goes: our jitted step (``jax.profiler``) against the
PyTorch loop (``torch.profiler``), by category, with the convolutions' GFLOP/s.

    python -m benchmarks.train_profile --out DIR [--docs docs/benchmarks/train_profile_cpu.md] [--only vgg16_w0.125]

Each case (VGG-16 at width 1/8, the study's network, and ResNet-20) is profiled in a child
process per XLA setting, because ``XLA_FLAGS`` is read once when the backend starts: the
default (YNNPACK convolutions) and :func:`rws_jax.cpu_tuning.tuned_xla_flags` (Eigen
convolutions, 512-bit vectors where the CPU has AVX-512). The same step as
``benchmarks.train_throughput`` (batch 128, 32x32x3, reference optimizer, no augmentation).

Ours: the step's compiled HLO names every fusion; the trace's op events are summed per step
(5 steps, mean) into categories:

* ``conv forward`` / ``conv input grad`` / ``conv kernel grad``: fusions holding a
  ``convolution``; a kernel gradient is the one whose output is not batch-leading, forward and
  input gradient are told apart by running before or after the loss (softmax) in the step;
* ``layout transposes``: XLA's ``transpose``/``copy`` fusions (by name), which for these networks move
  activations and output gradients into the batch-minor layouts the kernel gradients need
  (plus, fused into them, the recomputed BatchNorm/ReLU of the activation);
* ``BatchNorm``, ``other forward``, ``other backward``, ``optimizer`` (ops outside the
  differentiated function) from the ops' metadata;
* ``untraced``: step wall time minus the traced op time. XLA:CPU's Eigen convolutions emit no
  trace event, so with the tuned flags the convolutions land here.

PyTorch: ``torch.profiler`` self CPU time per aten op over the same number of steps:
``conv forward`` (``*convolution*`` forward ops), ``conv backward`` (``convolution_backward``:
input and kernel gradient in one oneDNN call), ``BatchNorm``, ``max-pool``, ``optimizer`` (the
``Optimizer.step`` span), the rest ``other`` (ReLU and its gradient, residual adds, copies).
Conv GFLOP/s = the convolutions' FLOPs (counted from our HLO: 2 x output elements x window x
input channels, per convolution) / the category's time.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {"vgg16_w0.125": ("vgg16", {"width": 0.125}), "resnet20": ("resnet20", {})}
BATCH = 128
STEPS = 5
CATEGORIES = ("conv forward", "conv input grad", "conv kernel grad", "layout transposes", "BatchNorm",
              "other forward", "other backward", "optimizer", "untraced")
TORCH_CATEGORIES = ("conv forward", "conv backward", "BatchNorm", "max-pool", "optimizer", "other")


# ----------------------------------------------------------------------------- our HLO
def parse_hlo(txt: str) -> dict:
    """Fusion name -> ``{"body": str, "out": shape list}`` and plain op name -> its line."""
    comps = {m.group(1): m.group(2) for m in re.finditer(r"^%([\w.\-]+) .*?\{\n(.*?)^\}", txt, re.S | re.M)}
    insts = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* (\S+?)\((.*)$", txt, re.M):
        name, _, shape, op, rest = m.groups()
        call = re.search(r"calls=%([\w.\-]+)", rest)
        insts[name] = {"op": op, "out": [int(s) for s in shape.split(",") if s],
                       "body": comps.get(call.group(1), "") if call else m.group(0)}
    return insts


def shapes_of(txt: str) -> dict:
    """Every instruction's name -> its dimensions (HLO names are unique in a module)."""
    return {m.group(1): [int(s) for s in m.group(2).split(",") if s]
            for m in re.finditer(r"%([\w.\-]+) = \w+\[([\d,]*)\]", txt)}


def conv_flops(body: str, shapes: dict | None = None) -> float:
    """FLOPs of the convolutions in an HLO fragment: 2 x output elements x window x input
    channels (the rhs operand's input-feature dimension). ``shapes``: the module's
    instruction shapes (:func:`shapes_of`; default: those declared in ``body``)."""
    shapes = shapes_of(body) if shapes is None else shapes
    total = 0.0
    for m in re.finditer(r"= \w+\[([\d,]*)\]\S* convolution\(%([\w.\-]+), %([\w.\-]+)\), window=\{size=([\dx]+)"
                         r"[^}]*\}, dim_labels=(\w+)_(\w+)->", body):
        out = [int(s) for s in m.group(1).split(",")]
        rhs = shapes.get(m.group(3))
        if rhs is None:
            continue
        window = 1
        for s in m.group(4).split("x"):
            window *= int(s)
        cin = rhs[m.group(6).index("i")]
        n = 1
        for s in out:
            n *= s
        total += 2.0 * n * window * cin
    return total


def _category(name: str, inst: dict, before_loss: bool, batch: int) -> str:
    body = inst["body"]
    if "convolution(" in body:
        if not inst["out"] or inst["out"][0] != batch:
            return "conv kernel grad"
        return "conv forward" if before_loss else "conv input grad"
    if inst["op"] in ("transpose", "copy") or name.startswith(("transpose", "copy")):
        return "layout transposes"
    names = re.findall(r'op_name="([^"]*)"', body)
    if names and not any("jvp(" in n for n in names):
        return "optimizer"
    if any(re.search(r"/bn\w*/|BatchNorm", n) for n in names):
        return "BatchNorm"
    return "other forward" if before_loss else "other backward"


def profile_ours(model_name: str, kwargs: dict, trace_dir: str) -> dict:
    """Profiles ``STEPS`` train steps in this process (its XLA_FLAGS as they are)."""
    import jax
    import numpy as np

    from benchmarks.train_throughput import CIFAR_MEAN, CIFAR_STD
    from rws_jax.models import get_model
    from rws_jax.training import TrainConfig, create_train_state, make_optimizer, make_train_step

    model = get_model(model_name, 10, **kwargs)
    cfg = TrainConfig.reference_cifar(augment=False, mean=CIFAR_MEAN, std=CIFAR_STD)
    tx = make_optimizer(cfg, 350)
    state = create_train_state(model, jax.random.PRNGKey(0), tx, (1, 32, 32, 3))
    step = make_train_step(model.apply, tx, None, False, mean=cfg.mean, std=cfg.std)
    rng = np.random.default_rng(0)
    data = {"image": jax.device_put(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)),
            "label": jax.device_put(rng.integers(0, 10, (BATCH,), dtype=np.int32))}
    key = jax.random.PRNGKey(1)
    hlo = step.lower(state, data, key).compile().as_text()
    insts, shapes = parse_hlo(hlo), shapes_of(hlo)
    holder = {"s": state}

    def run():
        holder["s"], m = step(holder["s"], data, key)
        jax.block_until_ready(m["loss"])

    for _ in range(3):
        run()
    walls = []
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(STEPS):
            with jax.profiler.TraceAnnotation("rws_profile_step"):
                t0 = time.perf_counter()
                run()
                walls.append(time.perf_counter() - t0)
    path = next(Path(trace_dir).rglob("*perfetto_trace.json.gz"))
    raw = json.load(gzip.open(path))
    events = [e for e in (raw["traceEvents"] if isinstance(raw, dict) else raw) if e.get("ph") == "X"]
    steps = sorted(e["ts"] for e in events if e["name"] == "rws_profile_step")
    op_events = [e for e in events if e["name"] in insts]
    loss_ops = {n for n, i in insts.items() if "exponential(" in i["body"]}
    per_step_loss = {}
    for e in op_events:
        if e["name"] in loss_ops:
            k = max(i for i, t in enumerate(steps) if t <= e["ts"])
            per_step_loss.setdefault(k, e["ts"])
    ms = collections.Counter()
    flops = collections.Counter()
    counted_flops = set()
    for e in op_events:
        k = max((i for i, t in enumerate(steps) if t <= e["ts"]), default=0)
        inst = insts[e["name"]]
        cat = _category(e["name"], inst, e["ts"] < per_step_loss.get(k, float("inf")), BATCH)
        ms[cat] += e.get("dur", 0) / 1000.0 / STEPS
        if cat.startswith("conv") and (e["name"], k) not in counted_flops and k == 0:
            counted_flops.add((e["name"], k))
            flops[cat] += conv_flops(inst["body"], shapes)
    wall_ms = 1000.0 * sorted(walls)[len(walls) // 2]
    ms["untraced"] = max(0.0, wall_ms - sum(ms.values()))
    # the convolutions XLA:CPU runs outside a fusion (Eigen) are still in the HLO: their FLOPs
    eigen = {n: i for n, i in insts.items() if i["op"] == "convolution"}
    eigen_flops = sum(conv_flops(i["body"], shapes) for i in eigen.values())
    return {"step_ms": round(wall_ms, 2), "ms": {c: round(ms.get(c, 0.0), 2) for c in CATEGORIES},
            "conv_gflop": {c: round(v / 1e9, 3) for c, v in flops.items()},
            "untraced_conv_gflop": round(eigen_flops / 1e9, 3),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


# ----------------------------------------------------------------------------- torch
def _torch_category(name: str) -> str | None:
    n = name.lower()
    if "convolution_backward" in n:
        return "conv backward"
    if "conv" in n and "backward" not in n:
        return "conv forward"
    if "batch_norm" in n:
        return "BatchNorm"
    if "max_pool" in n:
        return "max-pool"
    return "other"


def profile_torch(case: str) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.train_throughput import torch_resnet_cifar, torch_variant, torch_vgg

    net = torch_vgg(width=0.125) if case.startswith("vgg16") else torch_resnet_cifar(20)
    run, _ = torch_variant(net, BATCH)
    for _ in range(3):
        run()
    walls = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(STEPS):
            t0 = time.perf_counter()
            run()
            walls.append(time.perf_counter() - t0)
    ms = collections.Counter()
    for ev in prof.key_averages():
        if ev.key.startswith("Optimizer.step"):
            # a record_function span around the update: its total; its aten ops (add_, mul_) are
            # also in `other` by their self time, so they are taken out of it again
            ms["optimizer"] += ev.cpu_time_total / 1000.0 / STEPS
            ms["other"] -= (ev.cpu_time_total - ev.self_cpu_time_total) / 1000.0 / STEPS
            continue
        if ev.key.startswith("Optimizer."):
            continue  # zero_grad's span: its ops count by their own self time
        cat = _torch_category(ev.key)
        if cat:
            ms[cat] += ev.self_cpu_time_total / 1000.0 / STEPS
    wall_ms = 1000.0 * sorted(walls)[len(walls) // 2]
    return {"step_ms": round(wall_ms, 2), "ms": {c: round(ms.get(c, 0.0), 2) for c in TORCH_CATEGORIES},
            "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- driver
def child(case: str, which: str) -> dict:
    if which == "torch":
        return profile_torch(case)
    model_name, kwargs = CASES[case]
    with tempfile.TemporaryDirectory() as d:
        return profile_ours(model_name, kwargs, d)


def run_child(case: str, which: str, xla_flags: str | None) -> dict:
    env = dict(os.environ)
    if xla_flags is None:
        env.pop("XLA_FLAGS", None)
    else:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-m", "benchmarks.train_profile", "--child", case, which],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"profile child {case}/{which} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gflops(gflop: float, ms: float) -> str:
    return f"{gflop / (ms / 1000.0):.1f}" if ms > 0 and gflop > 0 else "–"


def to_markdown(result: dict, command: str) -> str:
    m = result["machine"]
    lines = [
        "# Where a training step's time goes: ours vs. PyTorch",
        "",
        f"Written by `{command}` on {result['date']} (wall time {result['wall_s']:.0f} s).",
        "",
        f"Machine: {m.get('cpu_model', m.get('processor'))}, {os.cpu_count()} cores; jax {m['jax']}, "
        f"torch {m.get('torch')}; load average {result['loadavg_start']} at the start, "
        f"{result['loadavg_end']} at the end. One optimizer step at batch {BATCH}, 32x32x3, mean of "
        f"{STEPS} profiled steps (method: the docstring of `benchmarks/train_profile.py`). "
        "`ours` = XLA:CPU defaults (YNNPACK convolutions); `ours tuned` = "
        f"`XLA_FLAGS={result['tuned_flags']}` (`rws_jax.tuned_xla_flags()`), whose Eigen convolutions "
        "emit no trace event and so are counted in `untraced`.",
        "",
    ]
    for case, r in result["cases"].items():
        o, t, tu = r["ours"], r["torch"], r["ours_tuned"]
        g = o["conv_gflop"]
        lines += [f"## {case}", "",
                  f"Step: torch {t['step_ms']:.1f} ms, ours {o['step_ms']:.1f} ms "
                  f"({t['step_ms'] / o['step_ms']:.2f}x torch's speed), ours tuned {tu['step_ms']:.1f} ms "
                  f"({t['step_ms'] / tu['step_ms']:.2f}x).", "",
                  "| category | ours ms | ours GFLOP/s | ours tuned ms |", "|---|---:|---:|---:|"]
        for c in CATEGORIES:
            lines.append(f"| {c} | {o['ms'][c]:.1f} | {_gflops(g.get(c, 0.0), o['ms'][c]) if c.startswith('conv') else ''} "
                         f"| {tu['ms'][c]:.1f} |")
        lines += ["", "| torch category | ms | GFLOP/s |", "|---|---:|---:|"]
        fwd = g.get("conv forward", 0.0)
        bwd = g.get("conv input grad", 0.0) + g.get("conv kernel grad", 0.0)
        for c in TORCH_CATEGORIES:
            gf = {"conv forward": fwd, "conv backward": bwd}.get(c, 0.0)
            lines.append(f"| {c} | {t['ms'][c]:.1f} | {_gflops(gf, t['ms'][c]) if gf else ''} |")
        conv_ours = sum(o["ms"][c] for c in ("conv forward", "conv input grad", "conv kernel grad"))
        conv_torch = t["ms"]["conv forward"] + t["ms"]["conv backward"]
        lines += ["", f"Convolutions ({fwd + bwd:.2f} GFLOP a step): ours {conv_ours:.1f} ms "
                  f"({_gflops(fwd + bwd, conv_ours)} GFLOP/s), plus {o['ms']['layout transposes']:.1f} ms of "
                  f"layout transposes; torch {conv_torch:.1f} ms ({_gflops(fwd + bwd, conv_torch)} GFLOP/s).", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="directory for train_profile.json/.md")
    p.add_argument("--docs", default=None, help="also write the Markdown to this path")
    p.add_argument("--only", default=None, help="comma-separated cases (default: all)")
    p.add_argument("--child", nargs=2, metavar=("CASE", "WHICH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return {}
    if not args.out:
        p.error("--out is required")
    from benchmarks.common import loadavg, machine_info, write_outputs
    from rws_jax.cpu_tuning import tuned_xla_flags

    names = args.only.split(",") if args.only else list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; valid: {list(CASES)}")
    command = "python -m benchmarks.train_profile " + " ".join(argv if argv is not None else sys.argv[1:])
    tuned = tuned_xla_flags("")
    t0 = time.perf_counter()
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_info(),
                    "loadavg_start": loadavg(), "tuned_flags": tuned, "cases": {}}
    for case in names:
        print(f"[train_profile] {case} ...", flush=True)
        result["cases"][case] = {"torch": run_child(case, "torch", None), "ours": run_child(case, "ours", None),
                                 "ours_tuned": run_child(case, "ours", tuned)}
    result["wall_s"] = time.perf_counter() - t0
    result["loadavg_end"] = loadavg()
    md = to_markdown(result, command)
    write_outputs(args.out, "train_profile", result, md, args.docs)
    print(md)
    return result


if __name__ == "__main__":
    main()
