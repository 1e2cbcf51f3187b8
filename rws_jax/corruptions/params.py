"""Reference constants of the 19 Hendrycks corruptions, per preset.

``'cifar10'``: CIFAR-10-C constants of ``hendrycks/robustness``
(ImageNet-C/create_c/make_cifar_c.py), tuned for 32x32 images.
``'imagenet'``: ImageNet-C constants as used by the ``imagecorruptions``
package (bethgelab/imagecorruptions, imagecorruptions/corruptions.py), tuned
for 224x224 images.

Spatial constants (blur radii and sigmas in pixels, glass-blur and motion
blur extents, snow flake zoom, mud blur) are stored at the preset's reference
size (:data:`REFERENCE_SIZE`).  For images LARGER than that size they are
multiplied by ``min(H, W) / REFERENCE_SIZE[preset]`` (integers rounded) in
:func:`scaled_params`, so that e.g. the cifar10 preset looks the same on a
64x64 image as on a 32x32 one.  For smaller images the constants are used
unchanged, as ``imagecorruptions`` does (shrinking them would turn
sub-pixel blurs into the identity and break the severity ordering).
Size-relative constants (zoom factors, pixelate factors, elastic fractions,
the fog fractal, the frost texture) adapt to any size by construction.
"""

from __future__ import annotations

import math
from typing import Any

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
    "glass_blur", "motion_blur", "zoom_blur", "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter",
    "saturate",
)
PRESETS: tuple[str, ...] = ("cifar10", "imagenet")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
REFERENCE_SIZE = {"cifar10": 32, "imagenet": 224}


def _arange(start, stop, step):
    """``np.arange`` semantics (length ceil((stop-start)/step)) in Python."""
    n = int(math.ceil((stop - start) / step))
    return tuple(start + i * step for i in range(n))


def _named(keys, rows):
    return [dict(zip(keys, r if isinstance(r, tuple) else (r,))) for r in rows]


_SNOW_KEYS = ("loc", "scale", "zoom", "threshold", "blur_radius",
              "blur_sigma", "gray_mix")
_SPATTER_KEYS = ("loc", "scale", "sigma", "threshold", "intensity_or_sigma",
                 "mud")

_TABLES: dict[str, dict[str, list[dict[str, Any]]]] = {
    "cifar10": {
        "gaussian_noise": _named(("sigma",), [.04, .06, .08, .09, .10]),
        "shot_noise": _named(("photons",), [500, 250, 100, 75, 50]),
        "impulse_noise": _named(("amount",), [.01, .02, .03, .05, .07]),
        "defocus_blur": _named(("radius", "alias_blur"),
                               [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)]),
        "glass_blur": _named(("sigma", "max_delta", "iterations"),
                             [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]),
        "motion_blur": _named(("radius", "sigma"),
                              [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)]),
        "zoom_blur": [{"zooms": _arange(1, s, 0.01)}
                      for s in (1.06, 1.11, 1.16, 1.21, 1.26)],
        "snow": _named(_SNOW_KEYS, [
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)]),
        "frost": _named(("image_weight", "frost_weight"),
                        [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]),
        "fog": _named(("strength", "wibble_decay"),
                      [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]),
        "brightness": _named(("delta_v",), [.05, .1, .15, .2, .3]),
        "contrast": _named(("factor",), [.75, .5, .4, .3, 0.15]),
        # fractions of the image size (the reference multiplies by IMSIZE=32)
        "elastic_transform": _named(("alpha_frac", "sigma_frac", "affine_frac"), [
            (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
            (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)]),
        "pixelate": _named(("factor",), [0.95, 0.9, 0.85, 0.75, 0.65]),
        "jpeg_compression": _named(("quality",), [80, 65, 58, 50, 40]),
        "speckle_noise": _named(("sigma",), [.06, .1, .12, .16, .2]),
        "gaussian_blur": _named(("sigma",), [.4, .6, 0.7, .8, 1]),
        "spatter": _named(_SPATTER_KEYS, [
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1)]),
        "saturate": _named(("scale", "shift"),
                           [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)]),
    },
    "imagenet": {
        "gaussian_noise": _named(("sigma",), [.08, .12, 0.18, 0.26, 0.38]),
        "shot_noise": _named(("photons",), [60, 25, 12, 5, 3]),
        "impulse_noise": _named(("amount",), [.03, .06, .09, 0.17, 0.27]),
        "defocus_blur": _named(("radius", "alias_blur"),
                               [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]),
        "glass_blur": _named(("sigma", "max_delta", "iterations"),
                             [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]),
        "motion_blur": _named(("radius", "sigma"),
                              [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]),
        "zoom_blur": [{"zooms": _arange(1, s, st)} for s, st in
                      ((1.11, .01), (1.16, .01), (1.21, .02), (1.26, .02), (1.31, .03))],
        "snow": _named(_SNOW_KEYS, [
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]),
        "frost": _named(("image_weight", "frost_weight"),
                        [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]),
        "fog": _named(("strength", "wibble_decay"),
                      [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)]),
        "brightness": _named(("delta_v",), [.1, .2, .3, .4, .5]),
        "contrast": _named(("factor",), [0.4, .3, .2, .1, .05]),
        # imagecorruptions: sigma = 0.01*size, max displacement draw 0.005*size
        "elastic_transform": _named(("alpha", "sigma_frac", "max_d_frac"), [
            (250 * 0.05, 0.01, 0.005), (250 * 0.065, 0.01, 0.005),
            (250 * 0.085, 0.01, 0.005), (250 * 0.1, 0.01, 0.005),
            (250 * 0.12, 0.01, 0.005)]),
        "pixelate": _named(("factor",), [0.6, 0.5, 0.4, 0.3, 0.25]),
        "jpeg_compression": _named(("quality",), [25, 18, 15, 10, 7]),
        "speckle_noise": _named(("sigma",), [.15, .2, 0.35, 0.45, 0.6]),
        "gaussian_blur": _named(("sigma",), [1, 2, 3, 4, 6]),
        "spatter": _named(_SPATTER_KEYS, [
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1)]),
        "saturate": _named(("scale", "shift"),
                           [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]),
    },
}

# which keys are lengths in pixels (rescaled with the image size)
_SPATIAL_FLOAT = {
    "defocus_blur": ("radius", "alias_blur"),
    "glass_blur": ("sigma",),
    "motion_blur": ("sigma",),
    "snow": ("blur_sigma",),
    "gaussian_blur": ("sigma",),
    "spatter": ("sigma",),
}
_SPATIAL_INT = {  # rounded, at least 1
    "glass_blur": ("max_delta",),
    "motion_blur": ("radius",),
    "snow": ("blur_radius",),
}


def raw_params(name: str, severity: int, preset: str) -> dict[str, Any]:
    """The reference constants (a fresh dict), no validation."""
    return dict(_TABLES[preset][name][severity - 1])


def scaled_params(name: str, severity: int, preset: str, height: int,
                  width: int) -> dict[str, Any]:
    """Constants adapted to an ``height x width`` image (see module doc)."""
    p = raw_params(name, severity, preset)
    s = max(1.0, min(height, width) / REFERENCE_SIZE[preset])
    if s == 1.0:
        return p
    for k in _SPATIAL_FLOAT.get(name, ()):
        p[k] = float(p[k]) * s
    for k in _SPATIAL_INT.get(name, ()):
        p[k] = max(1, int(round(p[k] * s)))
    if name == "snow":  # flake size in pixels ~ zoom factor; keep >= 1
        p["zoom"] = max(1.0, float(p["zoom"]) * s)
    if name == "spatter" and p["mud"]:  # mud: this entry is a blur sigma
        p["intensity_or_sigma"] = float(p["intensity_or_sigma"]) * s
    return p
