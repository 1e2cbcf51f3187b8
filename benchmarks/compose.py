"""Composition of K signatures: one fused pass vs. K sequential patches.

For each K, interleaved in one loop (all donated, checks off):

- ``one``: ``rws.patch(v, sig_0, ±1)`` — a single signature (the yardstick);
- ``fused``: ``rws.patch(v, [sig_0..sig_{K-1}], ±1)`` — one jitted pass that reads θ
  and the K deltas once and writes θ once;
- ``sequential``: K calls ``rws.patch(v, sig_k, ±1)`` one after the other;
- ``plan_fused``: ``plan(v, ±1, donate=True)`` with ``plan = rws.patch_plan(v, sigs[:K])``
  (validated once): the fused pass at the cost of one jitted call;
- the bound over the same N elements (numpy on CPU, a jitted donated ``a + s·b`` on
  GPU/TPU; see :mod:`benchmarks.bandwidth`), which moves 3 streams of 4 N bytes.

A fused pass moves K + 2 streams (read θ and K deltas, write θ): its own bound is the
bound's GB/s applied to ``4 N (K + 2)`` bytes, and ``fused_fraction_of_bound`` (and
``plan_fraction_of_bound``) = fused GB/s / bound GB/s.

Also timed (outside the loop): ``rws.compose(sigs)``, which folds the K signatures
into one ahead of time, after which patching costs the same as ``one``.

Two selections: the realistic default (first 7 units of ResNet-50, what the paper
composes) and every parameter of the model (bandwidth-bound: the fused pass must
still read K deltas, so its cost grows with K).
"""

from __future__ import annotations

import gc

import jax
import numpy as np

import rws_jax as rws

from benchmarks.bandwidth import bound_seconds, bound_variants
from benchmarks.common import (device_label, fill_like, floating_param_paths, interleaved, make_signature,
                               model_shapes, num_elements, stats, timed)


def _bench_k(variables, sigs, k: int, repeats: int, n: int) -> tuple[dict, object]:
    state = {"v": variables, "sign": 1.0}
    plan = rws.patch_plan(variables, sigs[:k])
    kw = dict(donate=True, check_values=False, check_base=False)

    def flip():
        state["sign"] = -state["sign"]
        return state["sign"]

    def one():
        state["v"] = rws.patch(state["v"], sigs[0], flip(), **kw)
        return state["v"]

    def fused():
        state["v"] = rws.patch(state["v"], sigs[:k], flip(), **kw)
        return state["v"]

    def sequential():
        s = flip()
        for sig in sigs[:k]:
            state["v"] = rws.patch(state["v"], sig, s, **kw)
        return state["v"]

    def plan_fused():
        state["v"] = plan(state["v"], flip(), donate=True)
        return state["v"]

    bvars, closers = bound_variants(n)
    res = interleaved({**bvars, "one": one, "fused": fused, "plan_fused": plan_fused, "sequential": sequential},
                      repeats)
    for c in closers:
        c.close()
    ts = []
    for _ in range(max(3, repeats // 3)):
        ts.append(timed(lambda: rws.compose(sigs[:k], 1.0 / k)))
    res["compose_ahead"] = stats(ts)
    return res, state["v"]


def run(quick: bool = False, log=print) -> dict:
    if quick:
        setups = [("ResNet-18 (width 0.25), all params", "resnet18", {"width": 0.25}, "all")]
        ks, repeats = (1, 4), 5
    else:
        setups = [
            ("ResNet-50, default selection (first 7 units)", "resnet50", {}, "default"),
            ("ResNet-50, all params", "resnet50", {}, "all"),
        ]
        ks, repeats = (1, 4, 19), 9
    out = {"cases": []}
    for label, name, kwargs, which in setups:
        model, shapes = model_shapes(name, 1000, **kwargs)
        variables = fill_like(shapes, seed=0, scale=0.05)
        if which == "default":
            paths = list(rws.first_k(7, order=model.unit_names).resolve(variables))
        else:
            paths = floating_param_paths(variables)
        sigs = [make_signature(variables, paths, seed=100 + i, name=f"c{i}") for i in range(max(ks))]
        n = num_elements(variables, paths)
        rec = {"label": label, "device": device_label(), "num_params_patched": n, "num_leaves_patched": len(paths), "repeats": repeats,
               "per_k": {}}
        log(f"  compose: {label}: {n / 1e6:.1f}M params, K={ks}")
        for k in ks:
            res, variables = _bench_k(variables, sigs, k, repeats, n)
            one, fused, seq, pf = (res[x]["median_s"] for x in ("one", "fused", "sequential", "plan_fused"))
            bound_gbps = 12 * n / bound_seconds(res) / 1e9
            rec["per_k"][str(k)] = {
                "variants": res,
                "fused_over_one": fused / one,
                "sequential_over_fused": seq / fused,
                "compile_s_fused": res["fused"]["first_s"],
                # bandwidth view: fused reads θ and K deltas and writes θ
                "fused_gbps": 4 * n * (k + 2) / fused / 1e9,
                "plan_gbps": 4 * n * (k + 2) / pf / 1e9,
                "bound_gbps": bound_gbps,
                "bound_s_k_streams": 4 * n * (k + 2) / bound_gbps / 1e9,
                "fused_fraction_of_bound": 4 * n * (k + 2) / fused / 1e9 / bound_gbps,
                "plan_fraction_of_bound": 4 * n * (k + 2) / pf / 1e9 / bound_gbps,
            }
            r = rec["per_k"][str(k)]
            log(f"    K={k}: one {one * 1e3:.2f} ms, fused {fused * 1e3:.2f} ms ({fused / one:.2f}x one, "
                f"{100 * r['fused_fraction_of_bound']:.0f}% of its bound), plan {pf * 1e3:.2f} ms "
                f"({100 * r['plan_fraction_of_bound']:.0f}%), sequential {seq * 1e3:.2f} ms ({seq / fused:.2f}x fused); "
                f"bound {bound_gbps:.1f} GB/s on {rec['device']}")
        out["cases"].append(rec)
        del variables, sigs
        gc.collect()
    return out


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick=True), indent=1, default=float))
