"""Patch latency vs. model size, side by side with the baselines and the bandwidth bound.

For each parameter tree a signature covering *all* floating ``params`` leaves is
patched (bytes moved scale with the model), by:

- ``ours_donated``: ``rws.patch(v, sig, ±1, donate=True, check_values=False,
  check_base=False)`` — jitted, in place. Each repeat donates the previous repeat's
  output (the sign alternates so the values stay bounded);
- ``ours_donated_checked``: the same with ``check_values=True, check_base=True``
  (the defaults), to show what the checks cost;
- ``ours_plan_donated``: ``plan(v, ±1, donate=True)`` with ``plan = rws.patch_plan(v, sig)``
  built once (validated once, default checks): one flatten plus one jitted call;
- ``ours_jit_copy``: ``donate=False`` (jitted, writes a new buffer);
- ``ours_int8``: the fused int8 dequantize-and-patch (signature quantized per tensor,
  8-bit asymmetric; donated, checks off);
- ``naive_tree_map``: ``jax.tree.map(lambda p, d: p + a * d, params, delta)`` op by op,
  without ``jit``;
- ``torch_loop``: the reference's style, ``for k in sd: sd[k] = sd[k] + alpha * delta[k]``
  on CPU torch tensors, ``torch_add_``: ``sd[k].add_(delta[k], alpha=alpha)`` and
  ``torch_foreach_add_``: ``torch._foreach_add_(θs, Δs, alpha=alpha)`` (torch's fastest);
  when torch sees a GPU, also ``torch_cuda_loop`` and ``torch_cuda_foreach_add_`` there
  (each call ends with ``torch.cuda.synchronize()``);
- the bound (see :mod:`benchmarks.bandwidth`): on CPU ``bound_numpy_1t`` /
  ``bound_numpy_mt``, an in-place ``np.add`` over the same number of elements, one thread /
  one chunk per core; on GPU/TPU ``bound_device``, a jitted donated ``a + s·b`` there.

Effective bandwidth = logical bytes / median time, with logical bytes
``12·N`` for a float32 patch (read θ, read Δ, write θ) and ``9·N`` for int8
(1-byte codes). ``fraction_of_bound`` = effective GB/s / bound GB/s.
"""

from __future__ import annotations

import gc
from typing import Any

import jax
import numpy as np

import rws_jax as rws
from rws_jax import tree_paths

from benchmarks.bandwidth import bound_seconds, bound_variants, on_accelerator
from benchmarks.common import (available_bytes, device_label, fill_like, floating_param_paths, gbps, interleaved,
                               make_signature, model_shapes, num_elements, synthetic_shapes, torch_cuda,
                               vit_b16_shapes)

F32_VARIANTS = ("ours_donated", "ours_plan_donated", "ours_donated_checked", "ours_jit_copy", "naive_tree_map",
                "torch_loop", "torch_add_", "torch_foreach_add_", "torch_cuda_loop", "torch_cuda_foreach_add_")


def _torch():
    try:
        import torch

        return torch
    except Exception:
        return None


def _set_leaves(tree: Any, flat_values: dict) -> Any:
    _, rebuild = tree_paths.flatten(tree)
    return rebuild(flat_values)


class _PatchState:
    """The model being patched in place, repeat after repeat."""

    def __init__(self, variables):
        self.variables = variables
        self.sign = 1.0

    def flip(self) -> float:
        self.sign = -self.sign
        return self.sign


def _jax_variants(state: _PatchState, sig, qsig, paths) -> dict:
    def donated():
        state.variables = rws.patch(state.variables, sig, state.flip(), donate=True, check_values=False, check_base=False)
        return state.variables

    plan = rws.patch_plan(state.variables, sig)  # validated once, default checks

    def plan_donated():
        state.variables = plan(state.variables, state.flip(), donate=True)
        return state.variables

    def donated_checked():
        state.variables = rws.patch(state.variables, sig, state.flip(), donate=True)
        return state.variables

    def jit_copy():
        return rws.patch(state.variables, sig, state.flip(), donate=False, check_values=False, check_base=False)

    def int8():
        state.variables = rws.patch(state.variables, qsig, state.flip(), donate=True, check_values=False, check_base=False)
        return state.variables

    delta_tree = {p: sig.deltas[p] for p in paths}

    def naive():
        flat, _ = tree_paths.flatten(state.variables)
        params = {p: flat[p] for p in paths}
        a = state.flip()
        return jax.tree.map(lambda p, d: p + a * d, params, delta_tree)

    return {
        "ours_donated": donated,
        "ours_plan_donated": plan_donated,
        "ours_donated_checked": donated_checked,
        "ours_jit_copy": jit_copy,
        "ours_int8": int8,
        "naive_tree_map": naive,
    }


def _torch_variants(torch, shapes: dict, b: np.ndarray | None, device: str = "cpu") -> tuple[dict, dict]:
    """State dicts of the same shapes on ``device`` (own memory for θ; on CPU Δ are
    views of the numpy bound's ``b`` array when given, to save memory)."""
    sd, delta, off = {}, {}, 0
    for p, shape in shapes.items():
        n = int(np.prod(shape))
        sd[p] = torch.full(tuple(shape), 0.5, dtype=torch.float32, device=device)
        if b is not None and device == "cpu":
            delta[p] = torch.from_numpy(b[off:off + n]).reshape(tuple(shape))
        else:
            delta[p] = torch.full(tuple(shape), 1e-3, dtype=torch.float32, device=device)
        off += n
    sign = [1.0]
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    thetas, deltas = list(sd.values()), [delta[k] for k in sd]

    def loop():  # the reference's out-of-place style (model_patching.py `decompose`)
        sign[0] = -sign[0]
        alpha = sign[0]
        for k in sd:
            sd[k] = sd[k] + alpha * delta[k]

    def add_():
        sign[0] = -sign[0]
        alpha = sign[0]
        for k in sd:
            sd[k].add_(delta[k], alpha=alpha)

    def foreach_add_():  # torch's fastest: one multi-tensor kernel (per chunk of tensors)
        sign[0] = -sign[0]
        torch._foreach_add_(thetas, deltas, alpha=sign[0])

    def synced(fn):
        def run():
            fn()
            sync()
        return run

    if device != "cpu":
        return {"torch_cuda_loop": synced(loop), "torch_cuda_foreach_add_": synced(foreach_add_)}, sd
    return {"torch_loop": loop, "torch_add_": add_, "torch_foreach_add_": foreach_add_}, sd


def _all_torch_variants(torch, shapes: dict, b: np.ndarray | None) -> tuple[dict, list]:
    """CPU torch baselines, plus the CUDA ones when torch sees a GPU."""
    if torch is None:
        return {}, []
    variants, sd = _torch_variants(torch, shapes, b)
    keep = [sd]
    if torch_cuda(torch):
        cv, csd = _torch_variants(torch, shapes, None, device="cuda")
        variants.update(cv)
        keep.append(csd)
    return variants, keep


def _summarise(res: dict, n: int, bound_s: float) -> dict:
    bytes_f32 = 12 * n
    bytes_int8 = 9 * n
    bound_gbps = gbps(bytes_f32, bound_s)
    out = {}
    for name, st in res.items():
        nbytes = bytes_int8 if name == "ours_int8" else bytes_f32
        st = dict(st)
        st["logical_bytes"] = nbytes
        st["gbps"] = gbps(nbytes, st["median_s"])
        st["fraction_of_bound"] = st["gbps"] / bound_gbps
        out[name] = st
    return out


def run_case(label: str, variables: Any, paths: list[str], repeats: int, *, with_torch: bool = True,
             phased: bool = False, delta_kind: str = "normal") -> dict:
    """Times every variant on ``variables`` patched at ``paths``.

    ``phased``: for trees too large to hold every variant's copy at once, the JAX
    variants run first (interleaved together), are freed, then the numpy bound and
    torch variants run (interleaved together): the bound is then measured right
    after ours rather than alongside it, and the record says so.
    """
    flat, _ = tree_paths.flatten(variables)
    n = num_elements(variables, paths)
    shapes = {p: tuple(flat[p].shape) for p in paths}
    torch = _torch() if with_torch else None
    rec: dict[str, Any] = {
        "label": label,
        "device": device_label(),
        "bound_kind": "device (jitted donated a + s*b)" if on_accelerator() else "numpy (faster of 1 thread, all cores)",
        "num_params_patched": n,
        "num_leaves_patched": len(paths),
        "num_params_total": num_elements(variables),
        "patched_mb_f32": 4 * n / 1e6,
        "repeats": repeats,
        "phased": phased,
        "timed_with": "check_values=False, check_base=False (except ours_donated_checked)",
    }
    if torch is None:
        rec["torch_skipped"] = "torch not importable (pip install 'rws_jax[bench]' or torch)"

    sig = make_signature(variables, paths, seed=11, kind=delta_kind)
    qsig = rws.quantize(sig, 8)
    jax.block_until_ready(qsig)

    # Is the donated patch really in place? Compare buffer addresses.
    probe = max(paths, key=lambda p: int(np.prod(flat[p].shape)))
    before = flat[probe].unsafe_buffer_pointer()
    variables = rws.patch(variables, sig, 1.0, donate=True, check_values=False, check_base=False)
    after = tree_paths.flatten(variables)[0][probe].unsafe_buffer_pointer()
    rec["donated_in_place"] = bool(before == after)
    variables = rws.patch(variables, sig, -1.0, donate=True, check_values=False, check_base=False)
    del flat

    state = _PatchState(variables)
    del variables
    jax_vars = _jax_variants(state, sig, qsig, paths)

    if not phased:
        bvars, closers = bound_variants(n)
        b = getattr(closers[0], "b", None) if not on_accelerator() else None
        tv, _keep = _all_torch_variants(torch, shapes, b)
        res = interleaved({**bvars, **jax_vars, **tv}, repeats)
        for c in closers:
            c.close()
        del _keep
    else:
        # JAX side first: its trees already exist.
        res = interleaved(jax_vars, repeats)
        state.variables = None
        del jax_vars, sig, qsig
        gc.collect()
        bvars, closers = bound_variants(n)
        b = getattr(closers[0], "b", None) if not on_accelerator() else None
        tv, _keep = _all_torch_variants(torch, shapes, b)
        res.update(interleaved({**bvars, **tv}, repeats))
        for c in closers:
            c.close()
        del _keep, tv, bvars
        rec["phased_note"] = (
            "tree too large to hold every variant at once: JAX variants ran interleaved, then "
            "bound/torch variants ran interleaved; the bound was measured right after ours"
        )
    gc.collect()

    bound_s = bound_seconds(res)
    rec["bound_s"] = bound_s
    rec["bound_gbps"] = gbps(12 * n, bound_s)
    rec["variants"] = _summarise(res, n, bound_s)
    v = rec["variants"]
    ours = v["ours_donated"]["median_s"]
    rec["ratios"] = {
        "ours_fraction_of_bound": v["ours_donated"]["fraction_of_bound"],
        "plan_fraction_of_bound": v["ours_plan_donated"]["fraction_of_bound"],
        "plan_over_bound": v["ours_plan_donated"]["median_s"] / bound_s,
        "plan_over_ours": v["ours_plan_donated"]["median_s"] / ours,
        "int8_fraction_of_bound": v["ours_int8"]["fraction_of_bound"],
        "naive_over_ours": v["naive_tree_map"]["median_s"] / ours,
        "jit_copy_over_ours": v["ours_jit_copy"]["median_s"] / ours,
        "checked_over_ours": v["ours_donated_checked"]["median_s"] / ours,
        "int8_over_ours": v["ours_int8"]["median_s"] / ours,
    }
    if "torch_loop" in v:
        rec["ratios"]["torch_loop_over_ours"] = v["torch_loop"]["median_s"] / ours
        rec["ratios"]["torch_add__over_ours"] = v["torch_add_"]["median_s"] / ours
        rec["ratios"]["torch_foreach_over_ours"] = v["torch_foreach_add_"]["median_s"] / ours
        rec["ratios"]["torch_foreach_over_plan"] = v["torch_foreach_add_"]["median_s"] / v["ours_plan_donated"]["median_s"]
    if "torch_cuda_foreach_add_" in v:
        best = min(v["ours_donated"]["median_s"], v["ours_plan_donated"]["median_s"])
        rec["ratios"]["torch_cuda_foreach_over_ours"] = v["torch_cuda_foreach_add_"]["median_s"] / best
        rec["ratios"]["torch_cuda_loop_over_ours"] = v["torch_cuda_loop"]["median_s"] / best
    rec["compile_s_ours_donated"] = v["ours_donated"]["first_s"]
    return rec


def cases(quick: bool) -> list[dict]:
    """The parameter trees to patch, smallest first."""
    if quick:
        return [
            {"label": "ResNet-18 (width 0.25)", "kind": "model", "model": "resnet18", "kwargs": {"width": 0.25}, "repeats": 5},
        ]
    return [
        {"label": "ResNet-18", "kind": "model", "model": "resnet18", "kwargs": {}, "repeats": 15},
        {"label": "ResNet-50", "kind": "model", "model": "resnet50", "kwargs": {}, "repeats": 15},
        {"label": "ResNet-50, default selection (first 7 units)", "kind": "model_default", "model": "resnet50",
         "kwargs": {}, "repeats": 25},
        {"label": "ViT-B/16-sized tree", "kind": "vit", "repeats": 9},
        {"label": "1B synthetic (64 x 4096x4096)", "kind": "synthetic", "repeats": 5},
    ]


def run(quick: bool = False, log=print) -> dict:
    out = {"cases": [], "skipped": []}
    for case in cases(quick):
        label = case["label"]
        phased = False
        if case["kind"] in ("model", "model_default"):
            model, shapes = model_shapes(case["model"], 1000, **case["kwargs"])
            variables = fill_like(shapes, seed=0, kind="normal", scale=0.05)
            if case["kind"] == "model_default":
                paths = list(rws.first_k(7, order=model.unit_names).resolve(variables))
            else:
                paths = floating_param_paths(variables)
        elif case["kind"] == "vit":
            variables = fill_like(vit_b16_shapes(), seed=0, kind="normal", scale=0.05)
            paths = floating_param_paths(variables)
        else:
            shapes = synthetic_shapes()
            need = sum(int(np.prod(s.shape)) * 4 for s in jax.tree.leaves(shapes))
            avail = available_bytes()
            if avail < 4 * need:
                reason = (f"needs ~{4 * need / 1e9:.1f} GB free (4x the {need / 1e9:.1f} GB tree), "
                          f"{avail / 1e9:.1f} GB available")
                log(f"  patch: skip {label}: {reason}")
                out["skipped"].append({"label": label, "reason": reason})
                continue
            variables = fill_like(shapes, kind="const", scale=0.5)
            paths = floating_param_paths(variables)
            phased = True
        log(f"  patch: {label}: {num_elements(variables, paths) / 1e6:.1f}M params patched")
        rec = run_case(label, variables, paths, case["repeats"], phased=phased,
                       delta_kind="const" if phased else "normal")
        del variables
        gc.collect()
        out["cases"].append(rec)
        r = rec["ratios"]
        log(f"    ours {rec['variants']['ours_donated']['median_s'] * 1e3:.2f} ms, "
            f"{100 * r['ours_fraction_of_bound']:.0f}% of bound ({rec['bound_gbps']:.1f} GB/s on {rec['device']}), "
            f"plan {100 * r['plan_fraction_of_bound']:.0f}% ({r['plan_over_bound']:.2f}x bound time), "
            f"naive {r['naive_over_ours']:.1f}x" + (f", torch loop {r['torch_loop_over_ours']:.1f}x, "
                                                     f"torch _foreach_add_ {r['torch_foreach_over_ours']:.2f}x"
                                                     if "torch_loop_over_ours" in r else ""))
    return out
