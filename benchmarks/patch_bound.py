"""``rws.patch`` against the memory-bandwidth bound: the two patch-latency goals, side by side.

    python -m benchmarks.patch_bound --out results/bench-patch-bound --docs docs/benchmarks/patch_bound.md

Goals (issue "Training at least as fast as PyTorch", item 4), each a row of the written
table with its measured ratio, target and met/missed:

1. ``rws.patch`` itself reaches ≥ 95% of the memory bound on full models of ≥ 25M
   parameters (ResNet-50, 25.6M; the ViT-B/16-sized tree, 86.6M; every floating
   ``params`` leaf patched);
2. the default 7-unit patch of ResNet-50 (``rws.first_k(7)``, 63 leaves, 1.16M values)
   through ``rws.patch`` takes ≤ 2× the bound's time for the same number of elements.

Per tree, these variants run interleaved in one loop, in a new random order every round
(median of ``--repeats``; see :func:`shuffled_interleaved` and :mod:`benchmarks.common`),
on the same model, the same float32 signature and the same numpy arrays (the bound of :mod:`benchmarks.bandwidth`: an in-place ``np.add`` over as
many elements, one thread or one chunk per core, the faster is *the bound*):

- ``rws_patch``: ``rws.patch(v, sig, ±1, donate=True, check_values=False, check_base=False)``,
  as ``ours_donated`` of :mod:`benchmarks.patch` (the goals' figure);
- ``rws_patch_checked``: the same with the default checks (``check_values``, ``check_base``);
- ``rws_patch_full_path``: ``rws_jax.algebra._patch_full``, the path every ``rws.patch`` call
  took before the fast path (all checks in Python on every call, ``{path: leaf}`` dicts to
  the jitted kernel): the "before" figure, measured in the same run;
- ``plan``: ``plan(v, ±1, donate=True)`` with ``plan = rws.patch_plan(v, sig)``;
- ``kernel_only``: the jitted, donated kernel ``rws.patch`` calls, on its own copy of the
  patched leaves, arguments already flat (no tree, no cache lookup): the device work
  plus jit's dispatch, i.e. the floor for any host path;
- ``jit_identity_donated``: a jitted, donated identity over the same P leaves (nothing
  computed): what jit and the runtime cost per donated input/output buffer;
- ``xla_one_array``: a jitted, donated ``a + s·b`` over one array of the same number of
  elements (:class:`benchmarks.bandwidth.DeviceBound`, here on the CPU): XLA's add with no
  per-leaf cost, i.e. what the same bytes cost as a single buffer;
- ``host_numpy_fresh`` (CPU only): the host path an ``rws.patch`` could take instead of
  XLA: per patched leaf, ``np.add`` of the zero-copy numpy views of the leaf and its
  delta into a fresh 64-byte-aligned numpy buffer, wrapped back as a jax array without a
  copy (:func:`wrap_zero_copy`); bit-identical to the kernel for α = ±1. A fresh buffer
  cannot be written in place, so it moves more bytes than the in-place bound (and is
  page-faulted in when large): what that path would cost, measured, not taken.

The profile (:func:`host_steps`) times, per tree, each step of a fast-path call in
sequence inside a loop of calls: the signature list, the coefficients, flattening the
tree, the leaf-type check, flattening the signature, the cache lookup, the argument
lists, the jitted call returning (``call``), rebuilding the tree, and waiting for the
result (``block``). ``host_overhead_s`` = ``rws_patch`` − ``kernel_only`` medians.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

import rws_jax as rws
from rws_jax import algebra, kernels

from benchmarks.bandwidth import DeviceBound, bound_seconds, bound_variants, on_accelerator
from benchmarks.common import (fill_like, floating_param_paths, loadavg, machine_info, make_signature, model_shapes,
                               num_elements, stats, timed, vit_b16_shapes, write_outputs)

FULL_MODEL_TARGET = 0.95  # fraction of the bound, rws.patch, full models of >= 25M params
SMALL_PATCH_TARGET = 2.0  # rws.patch time / bound time, ResNet-50's default 7-unit patch


def _cases(quick: bool) -> list[dict]:
    if quick:
        return [{"label": "ResNet-18 (width 0.25)", "kind": "model", "model": "resnet18", "kwargs": {"width": 0.25},
                 "goal": None},
                {"label": "ResNet-18 (width 0.25), first 7 units", "kind": "model_default", "model": "resnet18",
                 "kwargs": {"width": 0.25}, "goal": None}]
    return [{"label": "ResNet-50", "kind": "model", "model": "resnet50", "kwargs": {}, "goal": "full"},
            {"label": "ViT-B/16-sized tree", "kind": "vit", "goal": "full"},
            {"label": "ResNet-50, default selection (first 7 units)", "kind": "model_default", "model": "resnet50",
             "kwargs": {}, "goal": "small"}]


def _tree(case: dict) -> tuple[Any, list[str]]:
    if case["kind"] == "vit":
        variables = fill_like(vit_b16_shapes(), seed=0, kind="normal", scale=0.05)
        return variables, floating_param_paths(variables)
    model, shapes = model_shapes(case["model"], 1000, **case["kwargs"])
    variables = fill_like(shapes, seed=0, kind="normal", scale=0.05)
    if case["kind"] == "model_default":
        return variables, list(rws.first_k(7, order=model.unit_names).resolve(variables))
    return variables, floating_param_paths(variables)


def aligned_empty(shape: tuple, dtype: Any, align: int = 64) -> np.ndarray:
    """An uninitialised numpy array whose data starts on an ``align``-byte boundary (the
    CPU client wraps such a buffer without a copy; numpy's own are only 16-aligned)."""
    n, itemsize = _size_of(shape, dtype)
    buf = np.empty(n + align // itemsize, dtype)
    off = (-buf.ctypes.data) % align // itemsize
    return buf[off:off + n].reshape(shape)


@functools.lru_cache(maxsize=None)
def _size_of(shape: tuple, dtype: Any) -> tuple[int, int]:
    return int(np.prod(shape, dtype=np.int64)), np.dtype(dtype).itemsize


def wrap_zero_copy(x: np.ndarray) -> jax.Array:
    """``x`` as a jax array on the CPU device without a copy (the buffer stays ``x``'s):
    jaxlib's batched device put, ~3 µs (``jax.device_put`` does the same in ~20-30 µs)."""
    from jax._src.lib import xla_client as xc  # noqa: PLC0415

    aval, sharding, dev = _wrap_args(x.shape, x.dtype)
    return xc.batched_device_put(aval, sharding, [x], [dev], True)


@functools.lru_cache(maxsize=None)
def _wrap_args(shape: tuple, dtype: Any) -> tuple:
    from jax._src import core  # noqa: PLC0415

    dev = jax.devices("cpu")[0]
    return core.ShapedArray(shape, dtype), jax.sharding.SingleDeviceSharding(dev), dev


def _median_call(fn: Callable[[], Any], n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def host_steps(variables: Any, sig: Any, n: int = 200) -> tuple[dict, Any]:
    """Median seconds of each step of a fast-path ``rws.patch(..., donate=True, check_values=False,
    check_base=False)`` call, timed in sequence inside a loop of such calls (so every step
    sees the caches as a patch loop leaves them: the kernel streams the patched bytes
    through them). The steps are those of ``rws_jax.algebra._patch_fast``, re-run here with
    a timer between them; ``call_s`` is the jitted call returning (dispatch), ``block_s``
    the wait for its result after the tree was rebuilt.

    Donates ``variables``' patched leaves; returns ``(steps, variables)`` patched an even
    number of times (±1 alternately: equal to the input up to rounding)."""
    from rws_jax.signature import signature_list  # noqa: PLC0415

    names = ("signature_list_s", "coefficients_s", "flatten_tree_s", "leaf_type_check_s", "flatten_signature_s",
             "cache_lookup_s", "argument_lists_s", "call_s", "rebuild_tree_s", "block_s")
    times: dict[str, list[float]] = {k: [] for k in names}
    variables = rws.patch(variables, sig, 1.0, donate=True, check_values=False, check_base=False)  # fills the cache
    info = {}
    for it in range(2 * (n // 2) + 1):
        a = -1.0 if it % 2 == 0 else 1.0
        t = [time.perf_counter()]
        sigs = signature_list(sig)
        t.append(time.perf_counter())
        alpha = algebra.host_coefficients(a, len(sigs))
        t.append(time.perf_counter())
        leaves, treedef = jax.tree_util.tree_flatten(variables)
        t.append(time.perf_counter())
        ok = all(map(kernels._is_array_type, set(map(type, leaves))))
        t.append(time.perf_counter())
        delta_leaves, _ = jax.tree_util.tree_flatten(tuple(s.deltas for s in sigs))
        t.append(time.perf_counter())
        entry = algebra.PATCH_CACHE.entry(treedef, False, sigs)
        assert entry is not None
        t.append(time.perf_counter())
        args = ([leaves[i] for i in entry.indices], [leaves[i] for i in entry.other_indices])
        t.append(time.perf_counter())
        new = entry.donated(*args, delta_leaves, alpha)
        t.append(time.perf_counter())
        for i, x in zip(entry.indices, new):
            leaves[i] = x
        variables = jax.tree_util.tree_unflatten(treedef, leaves)
        t.append(time.perf_counter())
        jax.block_until_ready(variables)
        t.append(time.perf_counter())
        assert ok
        del args, new
        if it == 0:
            info = {"num_model_leaves": len(leaves), "num_patched_leaves": len(entry.indices)}
            continue  # warm-up
        for k, t0, t1 in zip(names, t[:-1], t[1:]):
            times[k].append(t1 - t0)
    res: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    res["host_steps_total_s"] = sum(res[k] for k in names if k not in ("call_s", "block_s"))
    res.update(info)
    return res, variables


def shuffled_interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                         seed: int = 0) -> dict[str, dict]:
    """:func:`benchmarks.common.interleaved` with the order drawn anew every round (seeded):
    each variant follows every other one equally often on average. The patch variants
    share one donated model and the trees outgrow the caches only together, so in a fixed
    (or rotated) order the variant that always follows the bound finds the model evicted
    while the next ones find it where the previous variant left it."""
    names = list(variants)
    first = {}
    for name in names:
        for i in range(max(1, warmup)):
            t = timed(variants[name])
            if i == 0:
                first[name] = t
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        for k in rng.permutation(len(names)):
            times[names[k]].append(timed(variants[names[k]]))
    return {name: stats(ts, first=first[name]) for name, ts in times.items()}


class _State:
    def __init__(self, variables: Any):
        self.variables = variables
        self.sign = 1.0

    def flip(self) -> float:
        self.sign = -self.sign
        return self.sign


def run_case(case: dict, repeats: int, log=print) -> dict:
    variables, paths = _tree(case)
    n = num_elements(variables, paths)
    log(f"  {case['label']}: {n / 1e6:.2f}M values in {len(paths)} leaves")
    sig = make_signature(variables, paths, seed=11, kind="normal")
    jax.block_until_ready(sig)
    profile, variables = host_steps(variables, sig)

    state = _State(variables)
    del variables
    plan = rws.patch_plan(state.variables, sig)

    # kernel_only: rws.patch's own jitted donated kernel on a private copy of the leaves.
    rws.patch(state.variables, sig, 1.0, donate=False, check_values=False, check_base=False)
    leaves, treedef = jax.tree_util.tree_flatten(state.variables)
    entry = algebra.PATCH_CACHE.entry(treedef, False, [sig])
    assert entry is not None
    kleaves = [leaves[i] + 0 for i in entry.indices]
    delta_leaves = jax.tree_util.tree_leaves((sig.deltas,))
    alphas = [algebra.host_coefficients(s, 1) for s in (1.0, -1.0)]
    kstate: dict[str, Any] = {"leaves": kleaves, "i": 0}
    del leaves

    def rws_patch():
        state.variables = rws.patch(state.variables, sig, state.flip(), donate=True, check_values=False,
                                    check_base=False)
        return state.variables

    def rws_patch_checked():
        state.variables = rws.patch(state.variables, sig, state.flip(), donate=True)
        return state.variables

    def rws_patch_full_path():
        state.variables = algebra._patch_full(state.variables, [sig], algebra.host_coefficients(state.flip(), 1),
                                              donate=True, check_base=False, check_values=False, return_undo=False)
        return state.variables

    def plan_donated():
        state.variables = plan(state.variables, state.flip(), donate=True)
        return state.variables

    def kernel_only():
        kstate["i"] ^= 1
        kstate["leaves"] = entry.donated(kstate["leaves"], [], delta_leaves, alphas[kstate["i"]])
        return kstate["leaves"]

    hstate = {"leaves": [x + 0 for x in kleaves], "i": 0}
    hdeltas = [np.asarray(d) for d in delta_leaves]

    def host_numpy_fresh():
        hstate["i"] ^= 1
        op = np.add if hstate["i"] else np.subtract  # x ± d: XLA's x + (±1)·d, bit for bit
        outs = []
        for x, d in zip(hstate["leaves"], hdeltas):
            o = aligned_empty(x.shape, x.dtype)
            op(np.asarray(x), d, out=o)
            outs.append(o)
        hstate["leaves"] = [wrap_zero_copy(o) for o in outs]
        return hstate["leaves"]

    ident = jax.jit(lambda xs: list(xs), donate_argnums=0)
    istate = {"leaves": [x + 0 for x in kleaves]}

    def jit_identity_donated():
        istate["leaves"] = ident(istate["leaves"])
        return istate["leaves"]

    one = DeviceBound(n)
    bvars, closers = bound_variants(n)
    closers.append(one)
    variants = {**bvars, "rws_patch": rws_patch, "rws_patch_checked": rws_patch_checked,
                "rws_patch_full_path": rws_patch_full_path, "plan": plan_donated, "kernel_only": kernel_only,
                "jit_identity_donated": jit_identity_donated, "xla_one_array": one.run}
    if not on_accelerator():
        variants["host_numpy_fresh"] = host_numpy_fresh
    res = shuffled_interleaved(variants, repeats, warmup=2)
    for c in closers:
        c.close()
    bound_s = bound_seconds(res)
    for name, st in res.items():
        st["over_bound"] = st["median_s"] / bound_s
        st["fraction_of_bound"] = bound_s / st["median_s"]
        st["gbps"] = 12 * n / st["median_s"] / 1e9
    profile["host_overhead_s"] = res["rws_patch"]["median_s"] - res["kernel_only"]["median_s"]
    rec = {"label": case["label"], "goal": case["goal"], "num_values": n, "num_leaves": len(paths),
           "bound_s": bound_s, "bound_gbps": 12 * n / bound_s / 1e9, "repeats": repeats, "variants": res,
           "profile": profile}
    v = res
    log(f"    bound {bound_s * 1e3:.3f} ms ({rec['bound_gbps']:.1f} GB/s); rws.patch {v['rws_patch']['median_s'] * 1e3:.3f} ms "
        f"= {v['rws_patch']['over_bound']:.2f}x ({100 * v['rws_patch']['fraction_of_bound']:.0f}%), "
        f"checked {v['rws_patch_checked']['over_bound']:.2f}x, full path (before) {v['rws_patch_full_path']['over_bound']:.2f}x, "
        f"plan {v['plan']['over_bound']:.2f}x, kernel only {v['kernel_only']['over_bound']:.2f}x, "
        f"identity {v['jit_identity_donated']['over_bound']:.2f}x, one array {v['xla_one_array']['over_bound']:.2f}x")
    del state, plan, kstate, kleaves, sig, istate, hstate, hdeltas
    gc.collect()
    return rec


def targets(cases: list[dict]) -> list[dict]:
    rows = []
    full = [c for c in cases if c["goal"] == "full"]
    if full:
        worst = min(c["variants"]["rws_patch"]["fraction_of_bound"] for c in full)
        before = min(c["variants"]["rws_patch_full_path"]["fraction_of_bound"] for c in full)
        rows.append({
            "target": "rws.patch on full models (≥ 25M params) vs. the memory bound",
            "goal": f"≥ {100 * FULL_MODEL_TARGET:.0f}% of the bound (bound time / rws.patch time), every model",
            "measured": ", ".join(f"{c['label']} ({c['num_values'] / 1e6:.1f}M): "
                                  f"{100 * c['variants']['rws_patch']['fraction_of_bound']:.0f}%" for c in full),
            "ratio": worst, "target_value": FULL_MODEL_TARGET, "met": worst >= FULL_MODEL_TARGET,
            "before": before,
        })
    small = [c for c in cases if c["goal"] == "small"]
    for c in small:
        r = c["variants"]["rws_patch"]["over_bound"]
        rows.append({
            "target": f"{c['label']} through rws.patch vs. the numpy in-place-add bound",
            "goal": f"≤ {SMALL_PATCH_TARGET:.0f}× the bound's time",
            "measured": f"{r:.2f}× ({c['variants']['rws_patch']['median_s'] * 1e3:.3f} ms vs. {c['bound_s'] * 1e3:.3f} ms)",
            "ratio": r, "target_value": SMALL_PATCH_TARGET, "met": r <= SMALL_PATCH_TARGET,
            "before": c["variants"]["rws_patch_full_path"]["over_bound"],
        })
    return rows


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def to_markdown(result: dict, command: str) -> str:
    m = result["machine"]
    lines = ["# rws.patch vs. the memory-bandwidth bound", "",
             f"Written by `{command}` on {result['date']} (wall time {result['wall_s']:.0f} s).", "",
             f"Machine: {m.get('cpu_model', m.get('device', '?'))} ({m.get('cpu_count', '?')} cores), backend "
             f"`{m.get('jax_backend', '?')}`, jax {m.get('jax', '?')}; load average {result.get('loadavg_start')} at the start, "
             f"{result.get('loadavg_end')} at the end; bound: {result['bound_kind']}. Every variant of a "
             "tree ran interleaved in one loop, in a new random order every round; medians. Method: the docstring of "
             "`benchmarks/patch_bound.py`.", "",
             "| goal | target | measured | ratio | before (full path, same run) | status |", "|---|---|---|---|---|---|"]
    for t in result["targets"]:
        fmt = (lambda x: f"{100 * x:.0f}%") if t["target_value"] < 1 else (lambda x: f"{x:.2f}×")
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {fmt(t['ratio'])} | {fmt(t['before'])} | "
                     f"**{'met' if t['met'] else 'missed'}** |")
    names = ("bound_numpy_1t", "bound_numpy_mt", "bound_device", "rws_patch", "rws_patch_checked",
             "rws_patch_full_path", "plan", "kernel_only", "jit_identity_donated", "xla_one_array",
             "host_numpy_fresh")
    lines += ["", "Median time per call, ms (time / bound time):", "",
              "| variant | " + " | ".join(f"{c['label']} ({c['num_values'] / 1e6:.2f}M, {c['num_leaves']} leaves)"
                                         for c in result["cases"]) + " |",
              "|---|" + "---|" * len(result["cases"])]
    for name in names:
        if not any(name in c["variants"] for c in result["cases"]):
            continue
        cells = [f"{_ms(c['variants'][name]['median_s'])} ({c['variants'][name]['over_bound']:.2f}×)"
                 if name in c["variants"] else "–" for c in result["cases"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Profile of a fast-path `rws.patch` call, µs (its steps timed in sequence in a loop of calls, "
                  "medians):", "",
              "| step | " + " | ".join(c["label"] for c in result["cases"]) + " |",
              "|---|" + "---|" * len(result["cases"])]
    steps = ("signature_list_s", "coefficients_s", "flatten_tree_s", "leaf_type_check_s", "flatten_signature_s",
             "cache_lookup_s", "argument_lists_s", "rebuild_tree_s", "host_steps_total_s", "call_s", "block_s",
             "host_overhead_s")
    for s in steps:
        lines.append(f"| {s[:-2]} | " + " | ".join(f"{1e6 * c['profile'][s]:.1f}" for c in result["cases"]) + " |")
    lines += ["", "`host_steps_total`: the Python steps (all but `call` and `block`); `call`: the jitted call "
                  "returning (dispatch of P donated leaves); `block`: the wait for its result; `host_overhead`: "
                  "`rws_patch` − `kernel_only` medians (the whole host cost of a call; a negative value is noise between "
                  "two equal figures)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench-patch-bound")
    p.add_argument("--docs", default=None, help="also write the Markdown (and the JSON beside it) to this file")
    p.add_argument("--repeats", type=int, default=None, help="repeats per variant (default 45 full models, 207 small)")
    p.add_argument("--quick", action="store_true", help="a tiny tree, seconds (no goals judged)")
    args = p.parse_args(argv)
    t0 = time.time()
    load_start = loadavg()
    cases = []
    for case in _cases(args.quick):
        reps = args.repeats or (5 if args.quick else (207 if case["goal"] == "small" else 45))
        cases.append(run_case(case, reps))
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine_info(),
              "bound_kind": ("a jitted donated a + s·b on the device" if on_accelerator()
                             else "numpy in-place add, the faster of 1 thread and 1 chunk per core"),
              "cases": cases, "targets": targets(cases), "wall_s": time.time() - t0,
              "loadavg_start": load_start, "loadavg_end": loadavg()}
    command = "python -m benchmarks.patch_bound " + " ".join(sys.argv[1:] if argv is None else argv)
    command = command.strip()
    result["command"] = command
    md = to_markdown(result, command)
    write_outputs(args.out, "patch_bound", result, md, args.docs)
    print(md)
    return result


if __name__ == "__main__":
    main()
