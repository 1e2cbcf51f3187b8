"""The memory-bandwidth bound of this machine, measured with numpy.

``θ ← θ + α·Δ`` reads two arrays and writes one. The same traffic, with no
framework in the way, is an in-place ``np.add(a, b, out=a)`` over two contiguous
float32 arrays of the same number of elements. numpy runs it on one thread; on a
machine with several cores, one thread may not saturate the memory system, so we
also run it split into one contiguous chunk per core on a thread pool (numpy
releases the GIL) and take the faster of the two as *the bound*. Both are reported.

Calls alternate ``np.add`` and ``np.subtract`` so the values stay bounded (same cost).
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
