"""Statistics of the frost photographs that ``imagecorruptions`` blends in.

``python -m benchmarks.frost_reference_stats`` prints the table that
``rws_jax/corruptions/frost_texture.py`` holds as ``REFERENCE_FROST`` (and
``tests/test_corruption_fidelity.py`` checks that the two agree when
``imagecorruptions`` is installed).

The reference picks one of ``frost1..frost5`` uniformly (``np.random.randint(5)``;
``frost6`` is never used), rescales it by 1.1 with ``cv2.INTER_CUBIC`` when it is at
least as large as the image, and crops a random window of the image's size. What
matters for the strength of the corruption is each photograph's mean colour and how
much its luminance varies *within a crop* of that size, so per photograph we measure the
RGB mean in [0, 1] and the mean standard deviation of the luminance over
``CROPS`` random crops of 32, 64 and 224 pixels (fixed seed).
"""

from __future__ import annotations

import os

import numpy as np

CROP_SIZES = (32, 64, 224)
CROPS = 200
FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def measure(seed: int = 0) -> list[dict]:
    import cv2

    from benchmarks.corruption_reference import load_imagecorruptions

    ic, reason = load_imagecorruptions()
    if ic is None:
        raise RuntimeError(reason)
    import imagecorruptions

    folder = os.path.join(os.path.dirname(imagecorruptions.__file__), "frost")
    rng = np.random.default_rng(seed)
    rows = []
    for f in FILES:
        bgr = cv2.imread(os.path.join(folder, f))
        big = cv2.resize(bgr, (int(np.ceil(bgr.shape[1] * 1.1)), int(np.ceil(bgr.shape[0] * 1.1))),
                         interpolation=cv2.INTER_CUBIC)
        rgb = big[..., ::-1].astype(np.float64) / 255.0
        lum = rgb @ np.array([0.2989, 0.5870, 0.1140])
        stds = []
        for s in CROP_SIZES:
            H, W = lum.shape
            ys = rng.integers(0, H - s, CROPS)
            xs = rng.integers(0, W - s, CROPS)
            stds.append(float(np.mean([lum[y:y + s, x:x + s].std() for y, x in zip(ys, xs)])))
        rows.append({"file": f, "mean_rgb": [round(float(v), 3) for v in rgb.mean((0, 1))],
                     "crop_std": [round(v, 3) for v in stds]})
    return rows


def main() -> int:
    rows = measure()
    print(f"# crop sizes {CROP_SIZES}; written by python -m benchmarks.frost_reference_stats")
    print("REFERENCE_FROST = (  # (mean R, G, B), luminance std within a crop of 32 / 64 / 224 px")
    for r in rows:
        m, s = r["mean_rgb"], r["crop_std"]
        print(f"    (({m[0]}, {m[1]}, {m[2]}), ({s[0]}, {s[1]}, {s[2]})),  # {r['file']}")
    print(")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
