"""XLA:CPU flags that make our training steps faster on a CPU, and how to apply them.

XLA reads ``XLA_FLAGS`` once, when the first computation starts the backend; flags set later
are ignored. So the flags are a property of the process, chosen before any JAX work:
``rws-jax`` sets them at start-up (unless ``--xla-defaults`` is given or ``XLA_FLAGS``
already names them), and a Python user calls :func:`apply_cpu_tuning` first thing.

The flags (measured by ``python -m benchmarks.train_profile`` and
``python -m benchmarks.train_throughput``, see ``docs/benchmarks/train_profile_cpu.md``):

* ``--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION``:
  convolutions stay with XLA's Eigen kernels instead of YNNPACK. YNNPACK's kernel
  gradients of the narrow CIFAR convolutions (16-64 channels) are the slowest part of the
  step; dots and elementwise fusions still go to YNNPACK.
* ``--xla_cpu_prefer_vector_width=512`` where the CPU has AVX-512 (``avx512f`` in
  ``/proc/cpuinfo``): XLA's own loops (the layout transposes, BatchNorm) use 512-bit vectors.

Neither changes what is computed, only the order of the float32 sums inside a convolution:
``tests/test_cpu_tuning.py`` trains a few steps with and without them and compares the loss
trajectories. On GPU and TPU they do nothing (both are ``xla_cpu_`` flags).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Iterable, MutableMapping, Optional

EIGEN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
WIDE_VECTORS = "--xla_cpu_prefer_vector_width=512"


def cpu_features(cpuinfo: Optional[str] = None) -> frozenset[str]:
    """The CPU's feature flags (``flags`` of ``/proc/cpuinfo``; empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def tuned_xla_flags(existing: str, features: Optional[Iterable[str]] = None) -> str:
    """``existing`` XLA_FLAGS plus the tuning flags it does not already set.

    A flag the user already gave (by name, whatever its value) is left as the user set it.
    ``features``: the CPU's feature flags (default: this machine's, :func:`cpu_features`).
    """
    feats = cpu_features() if features is None else frozenset(features)
    given = {tok.split("=", 1)[0] for tok in shlex.split(existing or "")}
    wanted = [EIGEN_CONVOLUTIONS] + ([WIDE_VECTORS] if "avx512f" in feats else [])
    extra = [f for f in wanted if f.split("=", 1)[0] not in given]
    return " ".join([existing.strip()] + extra if existing and existing.strip() else extra)


def apply_cpu_tuning(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Sets ``environ['XLA_FLAGS']`` (default: ``os.environ``) to :func:`tuned_xla_flags` of
    its current value and returns the new value. Call it before the first JAX computation of
    the process (XLA reads the flags once, at backend start); afterwards it has no effect."""
    env = os.environ if environ is None else environ
    env["XLA_FLAGS"] = tuned_xla_flags(env.get("XLA_FLAGS", ""))
    return env["XLA_FLAGS"]
