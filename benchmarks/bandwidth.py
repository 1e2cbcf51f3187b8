"""The memory-bandwidth bound of this device: numpy on CPU, a jitted donated add on GPU/TPU.

``θ ← θ + α·Δ`` reads two arrays and writes one. The same traffic, with no
framework in the way, is an in-place ``np.add(a, b, out=a)`` over two contiguous
float32 arrays of the same number of elements. numpy runs it on one thread; on a
machine with several cores, one thread may not saturate the memory system, so we
also run it split into one contiguous chunk per core on a thread pool (numpy
releases the GIL) and take the faster of the two as *the bound*. Both are reported.

Calls alternate ``np.add`` and ``np.subtract`` so the values stay bounded (same cost).

On a GPU or TPU (JAX's default backend) the bound is :class:`DeviceBound` instead: a
jitted, donated ``a + s·b`` over the same number of elements on that device, whose
GB/s is the device's bandwidth for this traffic (printed by the benchmarks).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class NumpyBound:
    """Holds two contiguous float32 arrays of ``n`` elements and times adds on them."""

    def __init__(self, n: int, threads: int | None = None, b: np.ndarray | None = None):
        self.n = int(n)
        self.a = np.full(self.n, 0.5, np.float32)
        self.b = np.full(self.n, 1e-3, np.float32) if b is None else b
        self.threads = max(1, threads or os.cpu_count() or 1)
        bounds = np.linspace(0, self.n, self.threads + 1).astype(np.int64)
        self.chunks = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._sign1 = self._signm = True

    @property
    def bytes_moved(self) -> int:
        return 3 * 4 * self.n  # read a, read b, write a

    def single(self):
        op = np.add if self._sign1 else np.subtract
        self._sign1 = not self._sign1
        op(self.a, self.b, out=self.a)

    def multi(self):
        op = np.add if self._signm else np.subtract
        self._signm = not self._signm
        if self.pool is None:
            op(self.a, self.b, out=self.a)
            return
        a, b = self.a, self.b
        list(self.pool.map(lambda c: op(a[c[0]:c[1]], b[c[0]:c[1]], out=a[c[0]:c[1]]), self.chunks))

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
        self.a = self.b = None


class DeviceBound:
    """The bound on an accelerator: a jitted, donated ``a + s·b`` over ``n`` float32
    elements on JAX's default device (the same traffic as a patch, with no tree,
    no Python per leaf). ``s`` alternates ±1 so the values stay bounded."""

    def __init__(self, n: int, device=None):
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        self.n = int(n)
        self.device = device or jax.devices()[0]
        self.a = jax.device_put(jnp.full((self.n,), 0.5, jnp.float32), self.device)
        self.b = jax.device_put(jnp.full((self.n,), 1e-3, jnp.float32), self.device)
        self._fn = jax.jit(lambda a, b, s: a + s * b, donate_argnums=0)
        self._s = [jax.device_put(np.float32(v), self.device) for v in (1.0, -1.0)]
        self._i = 0

    @property
    def bytes_moved(self) -> int:
        return 3 * 4 * self.n

    def run(self):
        self._i ^= 1
        self.a = self._fn(self.a, self.b, self._s[self._i])
        return self.a

    def close(self):
        self.a = self.b = None


def on_accelerator() -> bool:
    """True when JAX's default backend is a GPU or TPU (the bound is then measured there)."""
    import jax  # noqa: PLC0415

    return jax.default_backend() != "cpu"


def bound_variants(n: int, b: np.ndarray | None = None) -> tuple[dict, list]:
    """``({name: fn}, closers)``: the bound's variants for ``n`` elements on this device.

    CPU: ``bound_numpy_1t`` and ``bound_numpy_mt`` (the faster is the bound). GPU/TPU:
    ``bound_device`` (a jitted donated ``a + s·b`` there)."""
    if on_accelerator():
        d = DeviceBound(n)
        return {"bound_device": d.run}, [d]
    nb = NumpyBound(n, b=b)
    return {"bound_numpy_1t": nb.single, "bound_numpy_mt": nb.multi}, [nb]


BOUND_NAMES = ("bound_numpy_1t", "bound_numpy_mt", "bound_device")


def bound_seconds(res: dict) -> float:
    """The bound's median time among the variants of ``res`` (the fastest bound variant)."""
    return min(res[k]["median_s"] for k in BOUND_NAMES if k in res)
