"""The reference corruptions (``imagecorruptions``) and real photographs to compare on.

Shared by the corruption speed benchmark (:mod:`benchmarks.corruption`), the fidelity
table (:mod:`benchmarks.corruption_fidelity`) and ``tests/test_corruption_fidelity.py``.

``imagecorruptions`` 1.1.2 (bethgelab) predates numpy 2 and scikit-image 0.19; three
small shims make it run unchanged on current versions, without editing its files:

- ``pkg_resources`` (gone from setuptools >= 81): a stand-in module with the one
  function it uses, ``resource_filename``;
- ``np.float_`` (gone in numpy 2; used by ``fog``): set to ``np.float64`` inside its
  module namespace only (a proxy of numpy, so the user's numpy is untouched);
- ``skimage.filters.gaussian(..., multichannel=True)`` (renamed ``channel_axis`` in
  scikit-image 0.19; used by ``glass_blur`` and ``gaussian_blur``): its module's
  ``gaussian`` is wrapped to translate the keyword.

Photographs: the two photographs shipped with scikit-learn (``china.jpg``,
``flower.jpg``; a core dependency, so always available) and, when scikit-image is
installed (it comes with ``imagecorruptions``), four of its sample photographs
(astronaut, coffee, chelsea, rocket). Each is centre-cropped to a square and resized
with PIL's antialiasing filter to the requested side.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
import warnings

import numpy as np


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


class _NumpyWithFloat_(types.ModuleType):
    """numpy, plus the ``float_`` alias that numpy 2 removed."""

    def __init__(self):
        super().__init__("numpy")
        self.float_ = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


def _patch_module(mod) -> None:
    if not hasattr(np, "float_"):
        mod.np = _NumpyWithFloat_()
    gauss = getattr(mod, "gaussian", None)
    if gauss is not None and not getattr(gauss, "_rws_shim", False):
        def gaussian(image, *args, multichannel=None, **kwargs):
            if multichannel is not None and "channel_axis" not in kwargs:
                kwargs["channel_axis"] = -1 if multichannel else None
            return gauss(image, *args, **kwargs)

        gaussian._rws_shim = True
        mod.gaussian = gaussian


def load_imagecorruptions():
    """``(corrupt, None)`` with ``imagecorruptions.corrupt`` made to run on current
    numpy / scikit-image, or ``(None, reason)`` when it is not installed."""
    try:
        _ensure_pkg_resources()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module("imagecorruptions.corruptions")
            from imagecorruptions import corrupt as ic_corrupt
        _patch_module(mod)
        return ic_corrupt, None
    except Exception as e:
        return None, f"imagecorruptions not importable: {type(e).__name__}: {e}"


def reference_corrupt(ic_corrupt, image: np.ndarray, name: str, severity: int, seed: int,
                      return_invalid: bool = False):
    """One image through ``imagecorruptions`` with numpy's global RNG seeded (it draws
    from ``np.random``), returned as uint8 like the package does.

    With ``return_invalid=True`` also returns whether numpy warned about an invalid value
    on the way: spatter's water divides by the maximum of an empty liquid layer (0/0)
    when no pixel passes the threshold, and the NaN image becomes black in the uint8 cast.
    """
    np.random.seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(invalid="warn"):
            out = np.asarray(ic_corrupt(image, corruption_name=name, severity=severity), np.uint8)
    invalid = any("invalid value" in str(w.message) for w in caught)
    return (out, invalid) if return_invalid else out


def _square(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(img[top:top + s, left:left + s]))
    return np.asarray(crop.resize((size, size), Image.LANCZOS), np.uint8)


def photo_names() -> list[str]:
    names = ["china", "flower"]
    if importlib.util.find_spec("skimage") is not None:
        names += ["astronaut", "coffee", "chelsea", "rocket"]
    return names


def photographs(size: int, names=None) -> np.ndarray:
    """``uint8[n, size, size, 3]``: real photographs (see module doc)."""
    names = list(names or photo_names())
    out = []
    sk = None
    for n in names:
        if n in ("china", "flower"):
            from sklearn.datasets import load_sample_image

            img = load_sample_image(f"{n}.jpg")
        else:
            if sk is None:
                import skimage.data as sk
            img = getattr(sk, n)()
        out.append(_square(np.asarray(img)[..., :3], size))
    return np.stack(out)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB between uint8 images, one value per image over the leading axis."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    mse = np.maximum(np.mean((a - b) ** 2, axis=1), 1e-10)
    return 10.0 * np.log10(255.0 ** 2 / mse)
