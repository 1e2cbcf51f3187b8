"""Corruption throughput: our batched JAX corruptions vs. ``imagecorruptions``, at 32, 64
and 224 pixels, on real photographs.

For every image size the same batch of uint8 photographs (the photographs of
:mod:`benchmarks.corruption_reference`, repeated to fill the batch) goes to both:

- ours: ``rws_jax.corruptions.corrupt(batch, name, severity, key, preset='imagenet')``
  — one jitted, vmapped call for the whole batch, ``block_until_ready``; the first call
  (compilation, plus the frost field the first time) is reported as *compile* and
  excluded from the throughput;
- ``imagecorruptions.corrupt(image, corruption_name=name, severity=severity)`` — numpy,
  one image at a time in a Python loop (its intended use), on the first
  ``reference_images`` images of the batch (its cost per image does not depend on the
  batch), made to run on current numpy / scikit-image by the shims of
  :mod:`benchmarks.corruption_reference`.

The two are run interleaved, ``repeats`` times each, medians compared per image.
*Flatness*: our time per image at 4× the batch divided by our time per image at the
batch (1.0 = perfectly flat; the target is ≤ 1.25).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved
from benchmarks.corruption_reference import load_imagecorruptions, photographs

# compatibility name used by other benchmark modules and tests
__all__ = ["run", "load_imagecorruptions", "make_images", "TARGETS"]

TARGETS = {"min_speedup": 1.0, "geomean_speedup_224": 5.0, "max_flatness": 1.25, "max_compile_s": 10.0}
FULL = {"sizes": (32, 64, 224), "batch": {32: 128, 64: 64, 224: 16},
        "reference_images": {32: 32, 64: 16, 224: 4}, "repeats": 3}
QUICK = {"sizes": (32, 64), "batch": {32: 16, 64: 8}, "reference_images": {32: 8, 64: 4}, "repeats": 2}


def make_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``uint8[n, size, size, 3]``: the benchmark photographs, repeated to ``n``."""
    ph = photographs(size)
    reps = -(-n // len(ph))
    return np.concatenate([ph] * reps)[:n]


def _measure(name, images, ref_images, ic_corrupt, severity, repeats, key):
    from rws_jax.corruptions import corrupt

    n = len(images)
    batch = jnp.asarray(images)
    big = jnp.asarray(np.concatenate([images] * 4))
    rec: dict = {}
    state = {"key": key}

    def ours(b=batch):
        state["key"], k = jax.random.split(state["key"])
        return corrupt(b, name, severity, k, preset="imagenet")

    variants = {"ours": ours, "ours_4x": lambda: ours(big)}
    if ic_corrupt is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ic_corrupt(ref_images[0], corruption_name=name, severity=severity)

            def theirs():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for im in ref_images:
                        ic_corrupt(im, corruption_name=name, severity=severity)
                return 0

            variants["imagecorruptions"] = theirs
        except Exception as e:
            rec["imagecorruptions_error"] = f"fails in imagecorruptions: {type(e).__name__}: {str(e)[:120]}"
    try:
        res = interleaved(variants, repeats)
    except Exception as e:  # ours failing must not stop the suite: record it
        rec["ours_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        return rec
    rec["ours_compile_s"] = res["ours"]["first_s"]
    per = {"ours": n, "ours_4x": 4 * n, "imagecorruptions": len(ref_images)}
    for k, v in res.items():
        v["images"] = per[k]
        v["ms_per_image"] = 1e3 * v["median_s"] / per[k]
        v["images_per_s"] = per[k] / v["median_s"]
    rec["variants"] = res
    rec["flatness"] = res["ours_4x"]["ms_per_image"] / res["ours"]["ms_per_image"]
    if "imagecorruptions" in res:
        rec["speedup"] = res["imagecorruptions"]["ms_per_image"] / res["ours"]["ms_per_image"]
    return rec


def run(quick: bool = False, log=print, severity: int = 3) -> dict:
    from rws_jax.corruptions import CORRUPTIONS

    cfg = QUICK if quick else FULL
    names = ("gaussian_noise", "contrast", "pixelate") if quick else tuple(CORRUPTIONS)
    ic_corrupt, ic_reason = load_imagecorruptions()
    out = {"severity": severity, "preset": "imagenet", "repeats": cfg["repeats"], "sizes": list(cfg["sizes"]),
           "batch": {str(s): cfg["batch"][s] for s in cfg["sizes"]},
           "reference_images": {str(s): cfg["reference_images"][s] for s in cfg["sizes"]},
           "imagecorruptions": ic_reason or "ok", "targets": TARGETS, "per_size": {}}
    key = jax.random.key(0)
    for size in cfg["sizes"]:
        images = make_images(cfg["batch"][size], size)
        ref_images = images[:cfg["reference_images"][size]]
        per = {}
        for name in names:
            rec = _measure(name, images, ref_images, ic_corrupt, severity, cfg["repeats"], key)
            per[name] = rec
            if "ours_error" in rec:
                log(f"  {size:>3} px {name}: ours failed: {rec['ours_error']}")
                continue
            sp = f"{rec['speedup']:.1f}x" if "speedup" in rec else rec.get("imagecorruptions_error", "")[:40]
            log(f"  {size:>3} px {name:<18} ours {rec['variants']['ours']['ms_per_image']:.3f} ms/img "
                f"(compile {rec['ours_compile_s']:.1f} s, flatness {rec['flatness']:.2f}), vs imagecorruptions: {sp}")
        summary = {"per_corruption": per}
        speedups = [r["speedup"] for r in per.values() if "speedup" in r]
        if speedups:
            summary["geomean_speedup"] = float(np.exp(np.mean(np.log(speedups))))
            summary["min_speedup"] = float(min(speedups))
            summary["num_compared"] = len(speedups)
            summary["num_at_least_1x"] = int(sum(s >= TARGETS["min_speedup"] for s in speedups))
        flat = [r["flatness"] for r in per.values() if "flatness" in r]
        comp = [r["ours_compile_s"] for r in per.values() if "ours_compile_s" in r]
        if flat:
            summary["max_flatness"] = float(max(flat))
            summary["max_compile_s"] = float(max(comp))
        out["per_size"][str(size)] = summary
    return out

