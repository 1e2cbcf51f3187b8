"""Colab helpers for the notebooks in ``colabs/``: where to install from, where TFDS data lives,
whether to prepare CIFAR-10, and what to say when the notebook falls back to offline data.

Everything here is a small pure function (the tests fake ``google.colab`` and replace the
network calls), so the Colab branch of the notebooks cannot rot. Nothing here downloads unless
:func:`prepare_cifar10` is called, and the notebooks call it only on Colab (or when asked to).

The notebooks' *install* cell cannot import this module (on a fresh Colab runtime rws_jax is
not installed yet), so it repeats :func:`in_colab`, :func:`find_clone` and
:func:`install_command` in plain Python; ``tests/test_colab.py`` checks that both agree.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional

from rws_jax.data import DatasetNotFoundError, fashion_mnist_dir, load_tfds_split

# The placeholder the notebooks ship with; the user replaces <OWNER> (or the whole source).
PLACEHOLDER_SOURCE = "git+https://github.com/<OWNER>/rws_jax"
DRIVE_MOUNT = "/content/drive"
DRIVE_TFDS_DIR = DRIVE_MOUNT + "/MyDrive/tensorflow_datasets"
DRIVE_RUNS_DIR = DRIVE_MOUNT + "/MyDrive/rws_jax_runs"
DEFAULT_TFDS_DIR = "~/tensorflow_datasets"
_SETUP_NAME = re.compile(r"^\s*name\s*=\s*rws_jax\s*$", re.MULTILINE)


def in_colab() -> bool:
    """True inside a Google Colab runtime (``google.colab`` imported or importable)."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no 'google' package at all, or a module without a spec
        return False


def find_clone(cwd: str | os.PathLike) -> Optional[Path]:
    """The root of a clone of this repository: ``cwd`` or its nearest parent whose setup.cfg
    names rws_jax; None if there is none."""
    start = Path(cwd).resolve()
    for d in (start, *start.parents):
        cfg = d / "setup.cfg"
        try:
            if cfg.is_file() and _SETUP_NAME.search(cfg.read_text(encoding="utf-8", errors="replace")):
                return d
        except OSError:
            continue
    return None


def install_command(source: str, cwd: str | os.PathLike, python: str | None = None) -> list[str]:
    """The pip command that installs rws_jax on Colab.

    From inside a clone (``cwd`` or a parent has a setup.cfg naming rws_jax) that clone is
    installed in editable mode and ``source`` is ignored; otherwise ``source``: a local folder
    (e.g. a copy on Drive) is installed in editable mode, anything else (a ``git+https://...``
    URL, a wheel) as given. Raises ValueError when ``source`` is still the placeholder.
    """
    pip = [python or sys.executable, "-m", "pip", "install", "-q"]
    clone = find_clone(cwd)
    if clone is not None:
        return [*pip, "-e", str(clone)]
    source = (source or "").strip()
    if not source or "<OWNER>" in source:
        raise ValueError(
            f"RWS_JAX_SOURCE is {source!r}: set it at the top of the notebook to where rws_jax lives, "
            "e.g. 'git+https://github.com/YOUR_ACCOUNT/rws_jax' or a folder on Drive such as "
            "'/content/drive/MyDrive/rws_jax' (or run the notebook from inside a clone)")
    if Path(source).expanduser().is_dir():
        return [*pip, "-e", str(Path(source).expanduser().resolve())]
    return [*pip, source]


def drive_mounted(mount: str | os.PathLike = DRIVE_MOUNT) -> bool:
    """True when Google Drive is mounted at ``mount`` (its MyDrive folder exists)."""
    return (Path(mount) / "MyDrive").is_dir()


def tfds_data_dir(drive_mounted: bool, env: Mapping[str, str] | None = None) -> str:
    """Where TFDS data is read and prepared: $TFDS_DATA_DIR when set; else on Drive
    (``/content/drive/MyDrive/tensorflow_datasets``, survives the Colab session) when Drive is
    mounted; else TFDS's default ``~/tensorflow_datasets``."""
    env = os.environ if env is None else env
    if env.get("TFDS_DATA_DIR"):
        return str(env["TFDS_DATA_DIR"])
    if drive_mounted:
        return DRIVE_TFDS_DIR
    return os.path.expanduser(DEFAULT_TFDS_DIR)


def run_dir(name: str, drive_mounted: bool, env: Mapping[str, str] | None = None) -> str:
    """The run directory: $RWS_JAX_RUN_DIR, else ``MyDrive/rws_jax_runs/NAME`` when Drive is
    mounted (a disconnected session resumes there), else ``results/NAME``."""
    env = os.environ if env is None else env
    if env.get("RWS_JAX_RUN_DIR"):
        return str(env["RWS_JAX_RUN_DIR"])
    return f"{DRIVE_RUNS_DIR}/{name}" if drive_mounted else f"results/{name}"


@dataclasses.dataclass(frozen=True)
class PreparePlan:
    """Whether to download and prepare TFDS CIFAR-10, and why (printed by the notebook)."""

    prepare: bool
    reason: str


def prepare_plan(in_colab: bool, have_cifar10: bool, *, tiny: bool = False,
                 prepare: Optional[bool] = None, data_dir: str = "") -> PreparePlan:
    """Decides whether to prepare CIFAR-10.

    ``prepare`` is the notebook's PREPARE_CIFAR10: None (the default) means "on Colab yes,
    elsewhere no" (outside Colab nothing is downloaded unless asked); True/False force it.
    Never in the tiny smoke test, never when CIFAR-10 is already prepared.
    """
    where = f" under {data_dir}" if data_dir else ""
    if tiny:
        return PreparePlan(False, "RWS_JAX_NOTEBOOK_TINY=1: the smoke test uses Fashion-MNIST and downloads nothing")
    if have_cifar10:
        return PreparePlan(False, f"CIFAR-10 is already prepared{where}")
    if prepare is False:
        return PreparePlan(False, "PREPARE_CIFAR10 = False: not downloading CIFAR-10")
    if prepare is True:
        return PreparePlan(True, f"PREPARE_CIFAR10 = True: downloading and preparing CIFAR-10 (about 170 MB){where}")
    if in_colab:
        return PreparePlan(True, f"on Colab: downloading and preparing CIFAR-10 (about 170 MB, array_record){where}")
    return PreparePlan(False, "not on Colab: nothing is downloaded (set PREPARE_CIFAR10 = True to prepare CIFAR-10 "
                              "with tensorflow-datasets, which needs a network)")


def prepare_cifar10(data_dir: str, *, builder: Callable | None = None) -> tuple[bool, str]:
    """Downloads and prepares TFDS ``cifar10`` (array_record) under ``data_dir``.

    Returns (ok, message); a failure (no network, full disk, ...) is reported, not raised, so
    the notebook can fall back to offline data and say why. ``builder`` defaults to
    ``tensorflow_datasets.builder``.
    """
    try:
        if builder is None:
            import tensorflow_datasets as tfds  # noqa: PLC0415 - ~0.5 s to import; only when preparing data

            builder = tfds.builder
        Path(data_dir).expanduser().mkdir(parents=True, exist_ok=True)
        builder("cifar10", data_dir=data_dir, file_format="array_record").download_and_prepare()
    except Exception as e:  # noqa: BLE001 - any failure means "fall back", with the reason shown
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return False, f"preparing CIFAR-10 under {data_dir} failed: {type(e).__name__}: {first}"
    return True, f"prepared CIFAR-10 under {data_dir}"


def choose_dataset(*, tiny: bool, have_cifar10: bool, cifar10_info: str, have_fashion_mnist: bool,
                   plan: PreparePlan, prepare_message: str = "") -> tuple[str, str]:
    """(dataset, message): 'tiny', 'cifar10' or 'offline', and a line saying what is used and,
    on a fall-back to offline data, why. Raises RuntimeError when nothing is usable."""
    if tiny:
        return "tiny", "using: tiny (Fashion-MNIST smoke test; RWS_JAX_NOTEBOOK_TINY=1)"
    if have_cifar10:
        return "cifar10", "using: cifar10"
    why = "; ".join(s for s in (f"CIFAR-10 is not usable ({cifar10_info})" if cifar10_info else
                                "CIFAR-10 is not usable", prepare_message or plan.reason) if s)
    if have_fashion_mnist:
        return "offline", ("FALLING BACK to offline data: the 'offline' preset (Fashion-MNIST from local files), "
                           f"not CIFAR-10, because {why}")
    raise RuntimeError(f"Neither TFDS CIFAR-10 nor the offline Fashion-MNIST files are available ({why}). "
                       "On Colab check the network and rerun the data cell; elsewhere set PREPARE_CIFAR10 = True "
                       "(needs a network) or install Debian's dataset-fashion-mnist.")


def cifar10_available(data_dir: str) -> tuple[bool, str]:
    """(True, info) when prepared TFDS CIFAR-10 is readable under ``data_dir``, else (False, why)."""
    try:
        sample = load_tfds_split("cifar10", "test", data_dir=data_dir, max_examples=8)
        return True, f"images {sample.images.shape[1:]} {sample.images.dtype}"
    except DatasetNotFoundError as e:
        return False, str(e).splitlines()[0]
    except Exception as e:  # noqa: BLE001 - tfds raises various errors for missing/partial data
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def fashion_mnist_available() -> bool:
    """True when the offline Fashion-MNIST IDX files are readable (the 'offline' preset's data)."""
    try:
        d = Path(fashion_mnist_dir())
        return any((d / f"train-images-idx3-ubyte{ext}").is_file() for ext in (".gz", ""))
    except Exception:  # noqa: BLE001
        return False
