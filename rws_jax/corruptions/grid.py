"""Figure of every corruption at every severity.

    python -m rws_jax.corruptions.grid --out docs/guides/corruption_grid.png \\
        [--preset cifar10|imagenet] [--dataset fashion_mnist|synthetic] [--index I]

Rows: the 19 corruptions; columns: the clean image and severities 1..5.
``fashion_mnist`` reads the Debian ``dataset-fashion-mnist`` IDX files
(28x28 grayscale, zero-padded to 32x32); ``synthetic`` draws a procedural
32x32 RGB test scene (sky gradient, sun, hills, a house) that needs no data.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys

import jax
import numpy as np

from rws_jax.corruptions.params import CORRUPTIONS
from rws_jax.corruptions.registry import corrupt

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_TEST = os.path.join(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz")


class DatasetMissingError(FileNotFoundError):
    pass


def load_fashion_mnist(n: int = 8, path: str = FASHION_MNIST_TEST, pad_to: int = 32):
    """First ``n`` test images as uint8 ``(n, pad_to, pad_to, 1)``."""
    if not os.path.exists(path):
        raise DatasetMissingError(
            f"Fashion-MNIST not found at {path}. Install it with:\n"
            f"    apt-get update && apt-get install -y dataset-fashion-mnist\n"
            f"or use --dataset synthetic.")
    with gzip.open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{path}: not an IDX3 image file (magic {magic})")
        n = min(n, count)
        data = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
    imgs = data.reshape(n, rows, cols)
    ph, pw = max(0, pad_to - rows), max(0, pad_to - cols)
    imgs = np.pad(imgs, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    return imgs[..., None]


def synthetic_rgb(size: int = 32):
    """A procedural RGB scene, uint8 ``(1, size, size, 3)``."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    img = np.zeros((size, size, 3))
    img[...] = np.stack([0.35 + 0.3 * yy, 0.55 + 0.3 * yy, 0.95 - 0.1 * yy], -1)  # sky
    sun = (xx - 0.78) ** 2 + (yy - 0.22) ** 2 < 0.012
    img[sun] = (1.0, 0.85, 0.2)
    hill = yy > 0.62 + 0.12 * np.sin(5.0 * xx)
    img[hill] = np.stack([0.15 + 0.1 * xx, 0.55 - 0.2 * yy, 0.15 + 0 * xx], -1)[hill]
    wall = (xx > 0.18) & (xx < 0.48) & (yy > 0.45) & (yy < 0.78)
    img[wall] = (0.85, 0.75, 0.6)
    roof = (yy <= 0.45) & (yy > 0.25) & (np.abs(xx - 0.33) < (yy - 0.25) * 1.0)
    img[roof] = (0.7, 0.15, 0.1)
    door = (xx > 0.29) & (xx < 0.37) & (yy > 0.6) & (yy < 0.78)
    img[door] = (0.35, 0.2, 0.1)
    window = (xx > 0.39) & (xx < 0.45) & (yy > 0.52) & (yy < 0.6)
    img[window] = (0.6, 0.85, 1.0)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)[None]


def make_grid(images, out_path: str, preset: str = "cifar10", key=None,
              index: int = 0, title: str | None = None) -> str:
    """Write a 19 x 6 PNG grid for ``images[index]`` (NHWC uint8/float)."""
    import matplotlib  # noqa: PLC0415 - matplotlib (~0.4 s to import) only for this figure
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if key is None:
        key = jax.random.key(0)
    x = np.asarray(images)[index:index + 1]
    gray = x.shape[-1] == 1
    rows = []
    for i, name in enumerate(CORRUPTIONS):
        k = jax.random.fold_in(key, i)
        row = [x[0]] + [np.asarray(corrupt(x, name, s, k, preset=preset))[0]
                        for s in range(1, 6)]
        rows.append(row)
    fig, axes = plt.subplots(len(CORRUPTIONS), 6, figsize=(6 * 1.05, len(CORRUPTIONS) * 1.05))
    for r, (name, row) in enumerate(zip(CORRUPTIONS, rows)):
        for c, img in enumerate(row):
            ax = axes[r, c]
            img = np.asarray(img)
            if img.dtype != np.uint8:
                img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            if gray:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {c}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title or f"rws_jax.corruptions ({preset} preset)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    return out_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rws_jax.corruptions.grid",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output PNG path")
    ap.add_argument("--preset", default="cifar10", choices=("cifar10", "imagenet"))
    ap.add_argument("--dataset", default="fashion_mnist",
                    choices=("fashion_mnist", "synthetic"))
    ap.add_argument("--index", type=int, default=0, help="which image to show")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.dataset == "fashion_mnist":
        try:
            images = load_fashion_mnist(n=args.index + 1)
        except DatasetMissingError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        title = f"Fashion-MNIST test[{args.index}], {args.preset} preset"
    else:
        images = synthetic_rgb()
        args.index = 0
        title = f"synthetic RGB scene, {args.preset} preset"
    path = make_grid(images, args.out, preset=args.preset,
                     key=jax.random.key(args.seed), index=args.index, title=title)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
