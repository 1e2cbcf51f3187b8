"""Fashion-MNIST from the original IDX files (Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "RWS_JAX_FASHION_MNIST_DIR"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

INSTALL_HINT = (
    "Install the Debian package (as root, no network needed at run time afterwards):\n"
    "    apt-get update && apt-get install -y dataset-fashion-mnist\n"
    f"which puts the IDX files in {DEFAULT_FASHION_MNIST_DIR}/, or point the environment "
    f"variable {FASHION_MNIST_ENV} (or the data_dir argument) at a directory holding "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
    "and t10k-labels-idx1-ubyte.gz. Alternatively use source='tfds' with a prepared "
    "TFDS data dir."
)

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where we looked; the message says how to install them."""


class IDXFormatError(ValueError):
    """An IDX file is truncated, corrupt, or not the expected kind."""


def parse_idx(data: bytes, *, expected_ndim: int | None = None, source: str = "<bytes>") -> np.ndarray:
    """Parse an (uncompressed) IDX buffer into a numpy array of its native dtype.

    Header: two zero bytes, a type code byte, the number of dimensions, then one
    big-endian uint32 per dimension; the payload must hold exactly prod(dims) items.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{source}: file too short for an IDX header ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise IDXFormatError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTNN with "
            f"type code TT in {{08,09,0B,0C,0D,0E}} and NN >= 1 dimensions)")
    if expected_ndim is not None and ndim != expected_ndim:
        raise IDXFormatError(f"{source}: expected an IDX file with {expected_ndim} "
                             f"dimension(s), the header says {ndim} (magic 0x{data[:4].hex()})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXFormatError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header_len
    if got < expected:
        raise IDXFormatError(f"{source}: truncated IDX file: header says shape {dims} "
                             f"({expected} payload bytes) but only {got} bytes follow")
    if got > expected:
        raise IDXFormatError(f"{source}: corrupt IDX file: {got - expected} unexpected "
                             f"trailing bytes after shape {dims}")
    arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(dims)), offset=header_len)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike, *, expected_ndim: int | None = None) -> np.ndarray:
    """Read a (gzip-compressed or plain) IDX file; raises IDXFormatError when corrupt."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise IDXFormatError(f"{path}: truncated or corrupt gzip stream ({e})") from e
    return parse_idx(raw, expected_ndim=expected_ndim, source=str(path))


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory to read: ``data_dir``, else $RWS_JAX_FASHION_MNIST_DIR, else Debian's."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get(FASHION_MNIST_ENV) or DEFAULT_FASHION_MNIST_DIR)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def load_fashion_mnist_idx(split: str, data_dir: str | os.PathLike | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Load an official Fashion-MNIST split ('train' or 'test') from IDX files.

    Returns ``(images uint8 [N, 28, 28, 1], labels int32 [N])``. The arrays are cached and
    read-only; copy before modifying.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = fashion_mnist_dir(data_dir)
    paths = [_find(directory, stem) for stem in FASHION_MNIST_FILES[split]]
    found = [p for p in paths if p is not None]
    if len(found) < len(paths):
        missing = [stem + ".gz" for stem, p in zip(FASHION_MNIST_FILES[split], paths) if p is None]
        raise DatasetNotFoundError(
            f"Fashion-MNIST {split} files not found in {directory} (missing: "
            f"{', '.join(missing)}).\n{INSTALL_HINT}")
    stats = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in found)
    return _load_cached(stats)


@functools.lru_cache(maxsize=8)
def _load_cached(stats) -> tuple[np.ndarray, np.ndarray]:
    (img_path, _, _), (lbl_path, _, _) = stats
    images = read_idx(img_path, expected_ndim=3)
    labels = read_idx(lbl_path, expected_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise IDXFormatError(f"{img_path} / {lbl_path}: expected unsigned-byte IDX files")
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(f"{img_path} has {images.shape[0]} images but {lbl_path} has "
                             f"{labels.shape[0]} labels")
    if labels.size and labels.max() >= 10:
        raise IDXFormatError(f"{lbl_path}: labels must be in 0..9, found {labels.max()}")
    images = images[..., None]
    labels = labels.astype(np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
