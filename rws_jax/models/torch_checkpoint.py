"""Reading a PyTorch checkpoint file into a flat numpy state dict.

:func:`load_torch_checkpoint` reads a ``.pth``/``.pt``/``.tar`` file (with
:func:`torch_load`, ``weights_only=True``) or a ``.npz`` file (numpy, no torch needed) and
unwraps it (:func:`unwrap_state_dict`): ``{'state_dict': ...}`` unwrapped, a ``module.``
prefix stripped, ``num_batches_tracked`` dropped. Every problem is a
:class:`TorchImportError` (a ``ValueError``), also raised by the rest of the import
(:mod:`rws_jax.models.torch_layout`, :mod:`rws_jax.models.torch_import`). torch is an
optional extra: it is imported only in :func:`torch_load`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rws_jax.errors import RWSError

TORCH_SUFFIXES = (".pth", ".pt", ".tar")


class TorchImportError(RWSError):
    """A PyTorch state dict does not fit the named model (keys, shapes, values, name)."""


def _to_numpy(key: str, value: Any) -> np.ndarray:
    """A torch tensor or array-like -> numpy array (no torch import)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        t = value.detach().cpu()
        if str(getattr(t, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return np.asarray(t.numpy())
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - report any unconvertible value by key
        raise TorchImportError(f"{key}: cannot convert a {type(value).__name__} to an array ({e})") from None
    if arr.dtype == object:
        raise TorchImportError(f"{key}: expected a tensor or array, got a {type(value).__name__}")
    return arr


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flat ``{key: numpy array}`` from a state dict or a checkpoint holding one.

    Accepts a bare state dict or ``{'state_dict': state_dict, ...}`` (as the reference
    saves trained models); strips a ``module.`` prefix (``nn.DataParallel``) and drops
    ``*.num_batches_tracked``.
    """
    if not isinstance(checkpoint, Mapping):
        raise TorchImportError(f"expected a state dict (a mapping of names to tensors), got {type(checkpoint).__name__}")
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise TorchImportError(f"checkpoint['state_dict'] is a {type(sd).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        if not isinstance(key, str):
            raise TorchImportError(f"state dict keys must be strings, got {key!r}")
        name = key[len("module."):] if key.startswith("module.") else key
        if name.endswith("num_batches_tracked"):
            continue
        if name in out:
            raise TorchImportError(f"key {name!r} appears twice (with and without the 'module.' prefix)")
        out[name] = _to_numpy(key, value)
    if not out:
        raise TorchImportError("the state dict holds no tensors")
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, whatever the file's suffix;
    torch is imported here (the ``torch`` extra). Raises :class:`TorchImportError` (one
    line) when torch is missing or the file cannot be loaded."""
    try:
        import torch  # noqa: PLC0415 - optional dependency (the 'torch' extra), and slow to import
    except ImportError:
        raise TorchImportError(f"reading {path} needs PyTorch: pip install -e '.[torch]', or convert it to "
                               ".npz with numpy.savez(path, **state_dict)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unreadable or not a weights-only checkpoint
        raise TorchImportError(f"cannot load {path} with torch.load(weights_only=True): {_first_line(e)}") from None


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint file into a flat ``{key: numpy array}`` state dict.

    * ``.pth`` / ``.pt`` / ``.tar`` (e.g. ``model_best.pth.tar``, ``vgg16-397923af.pth``):
      ``torch.load(path, map_location="cpu", weights_only=True)``; torch is imported here
      only (the ``torch`` extra).
    * ``.npz``: read with numpy (no torch needed), one array per state-dict key, as
      written by ``numpy.savez(path, **{k: v.numpy() for k, v in state_dict.items()})``.

    The result is :func:`unwrap_state_dict` of the file's content: a checkpoint
    ``{'state_dict': ..., ...}`` is unwrapped, a ``module.`` prefix stripped and
    ``num_batches_tracked`` dropped; other keys (``normalize.*`` included) are kept as
    they are. Pass it to :func:`~rws_jax.models.from_torch_state_dict`.

    Raises:
      TorchImportError: a missing file (named), another suffix, torch missing for a
        ``.pth``/``.pt``/``.tar`` file (install torch or convert the file to ``.npz``), or
        a file that cannot be read (one line each).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise TorchImportError(f"{path}: {what}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                content = {k: np.asarray(npz[k]) for k in npz.files}
        except Exception as e:  # noqa: BLE001 - corrupt or pickled (object) arrays
            raise TorchImportError(f"cannot read {path} with numpy.load: {_first_line(e)}") from None
    elif suffix in TORCH_SUFFIXES:
        content = torch_load(path)
    else:
        raise TorchImportError(f"{path}: unknown checkpoint suffix {path.suffix!r}; expected "
                               f"{', '.join(TORCH_SUFFIXES)} (torch.load) or .npz (numpy)")
    return unwrap_state_dict(content)
