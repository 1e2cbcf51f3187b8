"""Storage: bytes on disk of signature files vs. the full model file.

VGG-16 (full width, 10 classes, 14.7M parameters). The full model is written with
``rws.save_variables``; signatures of the first k = 1..13 conv layers with
``rws.save_signature`` at fp32 and 8/4/2 bit (per-tensor asymmetric), both as
orbax checkpoints, and ``rws.bytes_on_disk`` counts every file. Ratio = full model
bytes / signature bytes.

The deltas are random normal (extracted from three random trees), not zeros: the
values do not change the raw size, but zeros would compress if a storage layer
compressed, and real fine-tuning deltas do not compress much either.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import rws_jax as rws

from benchmarks.common import fill_like, model_shapes, num_elements

BITS = ("fp32", 8, 4, 2)


def run(quick: bool = False, log=print, workdir: str | None = None) -> dict:
    width = 0.25 if quick else 1.0
    ks = (1, 7) if quick else tuple(range(1, 14))
    model, shapes = model_shapes("vgg16", 10, image=32, width=width)
    init = fill_like(shapes, seed=0, scale=0.05)
    std = fill_like(shapes, seed=1, scale=0.05)
    rob = fill_like(shapes, seed=2, scale=0.05)
    tmp = Path(tempfile.mkdtemp(prefix="rws_bench_storage_", dir=workdir))
    try:
        full_path = rws.save_variables(tmp / "full_model", init)
        full_bytes = rws.bytes_on_disk(full_path)
        out = {
            "model": f"vgg16 (width {width}, 10 classes)",
            "num_params": num_elements(init),
            "full_model_bytes": full_bytes,
            "deltas": "random normal (extracted from three random trees)",
            "rows": [],
        }
        log(f"  storage: full model {out['num_params'] / 1e6:.1f}M params, {full_bytes / 1e6:.1f} MB on disk")
        for k in ks:
            sig = rws.extract(init, std, rob, rws.first_k(k, order=model.unit_names), name=f"k{k}")
            row = {"k": k, "num_params": sig.num_elements(), "fraction_of_params": sig.num_elements() / out["num_params"]}
            for bits in BITS:
                s = sig if bits == "fp32" else rws.quantize(sig, bits)
                p = rws.save_signature(tmp / f"sig_k{k}_{bits}.rws", s)
                b = rws.bytes_on_disk(p)
                row[f"bytes_{bits}"] = b
                row[f"ratio_{bits}"] = full_bytes / b
                shutil.rmtree(p, ignore_errors=True)
            out["rows"].append(row)
            log(f"    k={k}: fp32 {row['ratio_fp32']:.1f}x, 8-bit {row['ratio_8']:.1f}x, "
                f"4-bit {row['ratio_4']:.1f}x, 2-bit {row['ratio_2']:.1f}x smaller")
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
