"""Corruption throughput: our batched JAX corruptions vs. ``imagecorruptions``.

The same batch of 32×32×3 uint8 images goes to both:

- ours: ``rws_jax.corruptions.corrupt(batch, name, severity, key, preset='imagenet')``
  — one jitted, vmapped call for the whole batch, ``block_until_ready``; compile time
  (the first call) is reported separately and excluded from the throughput;
- ``imagecorruptions.corrupt(image, corruption_name=name, severity=severity)``
  — numpy, one image at a time, in a Python loop over the batch (its intended use).

``preset='imagenet'`` uses the ImageNet-C constants that ``imagecorruptions`` uses
(ours rescales spatial constants to the image size; ``imagecorruptions`` applies its
constants as they are, so the amount of work per image can differ for the blurs).
The two are run interleaved, ``repeats`` times each, median reported.

Images: a fixed synthetic batch (smooth random colour fields plus texture), so the
compression-based corruptions see image-like content rather than white noise.

``imagecorruptions`` 1.1.2 imports ``pkg_resources``, which recent setuptools no
longer ships; if it is missing we install a tiny stand-in module providing
``resource_filename`` (the only function it uses) before importing it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved


def _ensure_pkg_resources() -> None:
    try:
        import pkg_resources  # noqa: F401
        return
    except Exception:
        pass
    mod = types.ModuleType("pkg_resources")

    def resource_filename(package: str, name: str) -> str:
        spec = importlib.util.find_spec(package)
        return os.path.join(os.path.dirname(spec.origin), name)

    mod.resource_filename = resource_filename
    sys.modules["pkg_resources"] = mod


def load_imagecorruptions():
    """``imagecorruptions.corrupt`` or ``(None, reason)``."""
    try:
        _ensure_pkg_resources()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from imagecorruptions import corrupt as ic_corrupt
        return ic_corrupt, None
    except Exception as e:
        return None, f"imagecorruptions not importable: {type(e).__name__}: {e}"


def make_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``uint8[n, size, size, 3]``: smooth colour fields (bilinear upsampled 4×4 noise)
    plus mild texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    img = np.asarray(jax.image.resize(jnp.asarray(coarse), (n, size, size, 3), "linear"))
    img = img + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def run(quick: bool = False, log=print, severity: int = 3) -> dict:
    from rws_jax.corruptions import CORRUPTIONS, corrupt

    if quick:
        names = ("gaussian_noise", "contrast", "pixelate")
        n_images, repeats = 16, 3
    else:
        names = tuple(CORRUPTIONS)
        n_images, repeats = 256, 5  # a training-sized batch
    images = make_images(n_images)
    batch = jnp.asarray(images)
    ic_corrupt, ic_reason = load_imagecorruptions()
    out = {"num_images": n_images, "image_shape": list(images.shape[1:]), "severity": severity,
           "preset": "imagenet", "repeats": repeats, "imagecorruptions": ic_reason or "ok", "per_corruption": {}}
    key = jax.random.key(0)
    for name in names:
        rec: dict = {}
        state = {"key": key}

        def ours(name=name):
            state["key"], k = jax.random.split(state["key"])
            return corrupt(batch, name, severity, k, preset="imagenet")

        variants = {"ours": ours}
        ic_ok = ic_corrupt is not None
        if ic_ok:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ic_corrupt(images[0], corruption_name=name, severity=severity)
            except Exception as e:
                ic_ok = False
                rec["imagecorruptions_error"] = f"fails in imagecorruptions: {type(e).__name__}: {str(e)[:120]}"
        else:
            rec["imagecorruptions_error"] = ic_reason
        if ic_ok:
            def theirs(name=name):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for im in images:
                        ic_corrupt(im, corruption_name=name, severity=severity)
                return 0

            variants["imagecorruptions"] = theirs
        try:
            res = interleaved(variants, repeats)
        except Exception as e:  # ours failing must not stop the suite: record it
            rec["ours_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            out["per_corruption"][name] = rec
            log(f"  corruption {name}: ours failed: {rec['ours_error']}")
            continue
        rec["ours_compile_s"] = res["ours"]["first_s"]
        for k, v in res.items():
            v["images_per_s"] = n_images / v["median_s"]
        rec["variants"] = res
        if "imagecorruptions" in res:
            rec["speedup"] = res["imagecorruptions"]["median_s"] / res["ours"]["median_s"]
        out["per_corruption"][name] = rec
        sp = f"{rec['speedup']:.1f}x" if "speedup" in rec else rec.get("imagecorruptions_error", "")[:40]
        log(f"  corruption {name}: ours {res['ours']['images_per_s']:.0f} img/s "
            f"(compile {rec['ours_compile_s']:.1f} s), vs imagecorruptions: {sp}")
    speedups = [r["speedup"] for r in out["per_corruption"].values() if "speedup" in r]
    if speedups:
        out["geomean_speedup"] = float(np.exp(np.mean(np.log(speedups))))
        out["min_speedup"] = float(min(speedups))
        out["num_compared"] = len(speedups)
        out["num_at_least_20x"] = int(sum(s >= 20 for s in speedups))
    return out
