"""Extraction (projection) and quantization throughput.

On every parameter of a ResNet-50 (25.6M elements; the default selection is
reported too), interleaved:

- ``extract``: ``rws.extract(init, std, rob, by_paths(...))`` — per-tensor rank-1
  projection, one jitted pass plus the API's checks (finite check per leaf);
- ``numpy_projection``: the same arithmetic per tensor with numpy
  (``d - (d·a)/(a·a) a`` on flattened float32 tensors), single-threaded;
- ``torch_projection``: the reference's per-tensor loop in torch (if installed).

Then ``rws.quantize(sig, bits)`` for 8/4/2 bit (per tensor, asymmetric) and
per-channel 8 bit, and ``rws.dequantize`` of the 8-bit signature.
Throughput is given in elements/s and in GB/s of float32 input read
(extraction reads 3 trees: 12 B/element; quantization reads 4 B/element).
"""

from __future__ import annotations

import gc
import warnings

import jax
import numpy as np

import rws_jax as rws
from rws_jax import tree_paths

from benchmarks.common import fill_like, floating_param_paths, interleaved, model_shapes, num_elements


def _torch():
    try:
        import torch

        return torch
    except Exception:
        return None


def run(quick: bool = False, log=print) -> dict:
    name, kwargs = ("resnet18", {"width": 0.25}) if quick else ("resnet50", {})
    repeats = 3 if quick else 7
    model, shapes = model_shapes(name, 1000, **kwargs)
    init = fill_like(shapes, seed=0, scale=0.05)
    std = fill_like(shapes, seed=1, scale=0.05)
    rob = fill_like(shapes, seed=2, scale=0.05)
    out = {"model": f"{name}{' (width 0.25)' if quick else ''}", "selections": []}
    selections = [("all params", floating_param_paths(init))]
    if not quick:
        selections.append(("default selection (first 7 units)",
                           list(rws.first_k(7, order=model.unit_names).resolve(init))))
    torch = _torch()
    for sel_label, paths in selections:
        n = num_elements(init, paths)
        sel = rws.by_paths(paths)
        fi, fs, fr = (tree_paths.flatten(t)[0] for t in (init, std, rob))
        np_i = {p: np.asarray(fi[p]).reshape(-1) for p in paths}
        np_s = {p: np.asarray(fs[p]).reshape(-1) for p in paths}
        np_r = {p: np.asarray(fr[p]).reshape(-1) for p in paths}

        def ours():
            return rws.extract(init, std, rob, sel).deltas

        def numpy_proj():
            res = {}
            for p in paths:
                a = np_s[p] - np_i[p]
                d = np_r[p] - np_i[p]
                nn = float(a @ a)
                res[p] = d - (float(d @ a) / nn) * a if nn > 0 else d
            return 0

        variants = {"extract": ours, "numpy_projection": numpy_proj}
        if torch is not None:
            with warnings.catch_warnings():  # read-only views of JAX buffers: torch only reads them
                warnings.simplefilter("ignore", UserWarning)
                t_i = {p: torch.from_numpy(np_i[p]) for p in paths}
                t_s = {p: torch.from_numpy(np_s[p]) for p in paths}
                t_r = {p: torch.from_numpy(np_r[p]) for p in paths}

            def torch_proj():
                res = {}
                for p in paths:
                    a = t_s[p] - t_i[p]
                    d = t_r[p] - t_i[p]
                    res[p] = d - (torch.dot(d, a) / torch.dot(a, a)) * a
                return 0

            variants["torch_projection"] = torch_proj
        log(f"  extract: {sel_label}: {n / 1e6:.1f}M elements")
        res = interleaved(variants, repeats)
        for v in res.values():
            v["elements_per_s"] = n / v["median_s"]
            v["input_gbps"] = 12 * n / v["median_s"] / 1e9
        rec = {"selection": sel_label, "num_elements": n, "extraction": res}
        rec["numpy_over_ours"] = res["numpy_projection"]["median_s"] / res["extract"]["median_s"]
        if "torch_projection" in res:
            rec["torch_over_ours"] = res["torch_projection"]["median_s"] / res["extract"]["median_s"]

        sig = rws.extract(init, std, rob, sel)
        q8 = rws.quantize(sig, 8)
        qv = {
            "quantize_8bit": lambda: rws.quantize(sig, 8).deltas,
            "quantize_4bit": lambda: rws.quantize(sig, 4).deltas,
            "quantize_2bit": lambda: rws.quantize(sig, 2).deltas,
            "quantize_8bit_per_channel": lambda: rws.quantize(sig, 8, per_channel=True).deltas,
            "dequantize_8bit": lambda: rws.dequantize(q8).deltas,
        }
        if quick:  # skip the extra compilations
            qv = {k: v for k, v in qv.items() if k in ("quantize_8bit", "dequantize_8bit")}
        qres = interleaved(qv, repeats)
        for v in qres.values():
            v["elements_per_s"] = n / v["median_s"]
            v["input_gbps"] = 4 * n / v["median_s"] / 1e9
        rec["quantization"] = qres
        out["selections"].append(rec)
        log(f"    extract {res['extract']['median_s'] * 1e3:.1f} ms ({n / res['extract']['median_s'] / 1e9:.2f} Gelem/s), "
            f"numpy {rec['numpy_over_ours']:.1f}x slower; quantize 8-bit {qres['quantize_8bit']['median_s'] * 1e3:.1f} ms")
        del sig, q8, np_i, np_s, np_r, fi, fs, fr
        gc.collect()
    return out
