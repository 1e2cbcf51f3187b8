"""Interference-aware merging of K weight deltas, per tensor: TIES and DARE.

Pure, traceable functions on one tensor (or a stack of K of them); :func:`rws_jax.compose`
applies them leaf by leaf inside one jitted pass (``method='ties' | 'dare' | 'dare_ties'``).

TIES-merging (Yadav et al., 2023), for a stack ``x: f32[K, *shape]`` of deltas that were
already multiplied by their coefficients ``α_k``:

1. **trim** — per signature, keep the ``ceil(density · n)`` largest magnitudes of the
   tensor (``n`` = its number of elements) and zero the rest (:func:`trim`);
2. **elect** — per element, the sign of the total mass ``Σ_k trimmed_k`` (:func:`elect_sign`);
3. **disjoint mean** — per element, the mean of the trimmed entries whose sign equals the
   elected one, dividing by the number of *agreeing* signatures, not K
   (:func:`disjoint_mean`). Where nothing agrees (or the mass is exactly 0) the result is 0.

Decisions:

- **Where α enters.** Signature k is multiplied by ``α_k`` *before* trimming, so the election
  weighs each signature by its coefficient (a negative ``α_k`` flips its votes). Trimming
  is invariant to ``|α_k|`` (it ranks magnitudes within one tensor of one signature), and
  a scalar α (the same for all K) gives exactly ``α · TIES(RWS_1..K)``: the scalar is the
  paper's λ applied to the merged result.
- **Ties at the trim threshold.** The threshold is the ``k``-th largest magnitude ``t``
  (found exactly by bisection on its float32 bit pattern, :func:`kth_largest_bits`: counts
  only, so a sharded tensor is never gathered), and every entry with ``|x| ≥ t`` is kept: with distinct
  magnitudes that is exactly the top ``k``; entries tied with the ``k``-th are all kept
  (so more than ``k`` survive only when magnitudes tie at the threshold). Zeros are
  never counted as kept values, as they carry no sign.

DARE (Yu et al., 2024): each element is dropped with probability ``p`` (Bernoulli) and the
survivors are rescaled by ``1/(1−p)`` (:func:`dare`), so ``E[dare(x)] = x``. ``p = 0`` is the
identity (no random numbers are drawn). Keying: signature k's leaf ``path`` uses
``fold_in(fold_in(key, k), crc32(path))`` (:func:`leaf_key`), so a fixed key gives the same
masks on every call and every machine, and the masks of different leaves and signatures
are independent. The masks follow the signatures' *positions*, so unlike TIES, DARE with a
fixed key is not invariant to reordering the signatures (only in distribution).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import jax
import jax.numpy as jnp

from rws_jax.errors import RWSError

METHODS = ("sum", "mean", "ties", "dare", "dare_ties")
RANDOM_METHODS = ("dare", "dare_ties")
TRIM_METHODS = ("ties", "dare_ties")


def check_method(method: str, density: float, drop_rate: float, key: object) -> None:
    """Raises :class:`RWSError` for an unknown method, a density outside ``(0, 1]``, a
    drop rate outside ``[0, 1)`` (checked for every method, used or not), or a missing
    key for DARE."""
    if method not in METHODS:
        raise RWSError(f"unknown merge method {method!r}: choose one of {METHODS}")
    d = _as_float(density, "density")
    if not (0.0 < d <= 1.0):
        raise RWSError(f"density must be in (0, 1] (the fraction of each tensor kept), got {density!r}")
    p = _as_float(drop_rate, "drop_rate")
    if not (0.0 <= p < 1.0):
        raise RWSError(f"drop_rate must be in [0, 1) (the probability of dropping an element), got {drop_rate!r}")
    if method in RANDOM_METHODS:
        if key is None:
            raise RWSError(f"method {method!r} is random: pass key=jax.random.key(seed)")


def _as_float(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise RWSError(f"{what} must be a number, got {value!r}") from None
    if math.isnan(v):
        raise RWSError(f"{what} must be a number, got NaN")
    return v


def keep_count(n: int, density: float) -> int:
    """``ceil(density · n)`` clipped to ``[1, n]`` (0 for an empty tensor): entries kept by :func:`trim`."""
    if n == 0:
        return 0
    # 1e-9 slack: 0.3 * 10 is 3.0000000000000004 in floats, which must keep 3, not 4
    return int(min(n, max(1, math.ceil(density * n - 1e-9))))


def trim(x: jax.Array, density: float) -> jax.Array:
    """``x`` with all but its ``ceil(density · x.size)`` largest magnitudes set to 0.

    Args:
      x: ``f[*shape]``, one signature's delta for one tensor.
      density: static fraction kept, in ``(0, 1]``.

    Returns:
      ``f[*shape]``. Entries whose magnitude ties with the threshold (the k-th largest
      magnitude) are all kept; see the module doc. Magnitudes are compared in float32.
    """
    n = int(x.size)
    k = keep_count(n, density)
    if k >= n:
        return x
    if jnp.dtype(x.dtype).itemsize > 4:  # float64: sort (the bisection below works on 32-bit patterns)
        mag = jnp.abs(x)
        return jnp.where(mag >= jnp.sort(mag.reshape(-1))[n - k], x, jnp.zeros_like(x))
    bits = magnitude_bits(x)
    return jnp.where(bits >= kth_largest_bits(bits, k), x, jnp.zeros_like(x))


def magnitude_bits(x: jax.Array) -> jax.Array:
    """``int32[*shape]``: the bit patterns of ``|x|`` as float32, ordered like the magnitudes
    (for non-negative IEEE floats, larger value ⟺ larger bit pattern)."""
    return jax.lax.bitcast_convert_type(jnp.abs(x).astype(jnp.float32), jnp.int32)


def kth_largest_bits(bits: jax.Array, k: int) -> jax.Array:
    """The ``k``-th largest of ``bits: int32[*shape]`` (all ``≥ 0``), exactly, as an int32 scalar.

    Bisection on the value: the largest ``t`` with ``#{bits ≥ t} ≥ k`` is the k-th largest
    element. 31 steps of one count each — elementwise work plus a scalar reduction, so a
    sharded tensor is never gathered on one device (a sort of it would be)."""

    def step(_: jax.Array, lo_hi: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = lo_hi
        mid = lo + (hi - lo) // 2
        ok = jnp.sum(bits >= mid, dtype=jnp.int32) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    # invariant: #{bits ≥ lo} ≥ k > #{bits ≥ hi}; +inf is 0x7F800000, so hi = 0x7F800001 starts it
    lo, _ = jax.lax.fori_loop(0, 31, step, (jnp.int32(0), jnp.int32(0x7F800001)))
    return lo


def elect_sign(trimmed: jax.Array) -> jax.Array:
    """``sign(Σ_k trimmed[k])``: ``f[K, *shape] -> f[*shape]`` in ``{-1, 0, 1}``."""
    return jnp.sign(jnp.sum(trimmed, axis=0))


def disjoint_mean(trimmed: jax.Array, elected: jax.Array) -> jax.Array:
    """Mean over k of the entries of ``trimmed: f[K, *shape]`` whose sign is ``elected: f[*shape]``.

    Divides by the number of agreeing (nonzero, same-sign) entries per element; 0 where none agree."""
    agree = (jnp.sign(trimmed) == elected[None]) & (trimmed != 0)
    total = jnp.sum(jnp.where(agree, trimmed, jnp.zeros_like(trimmed)), axis=0)
    count = jnp.sum(agree, axis=0).astype(trimmed.dtype)
    return total / jnp.maximum(count, 1)


def ties_merge(stacked: jax.Array, density: float) -> jax.Array:
    """TIES-merging of ``stacked: f[K, *shape]`` (already scaled by ``α_k``) -> ``f[*shape]``.

    ``density`` (static, in ``(0, 1]``) is the fraction of each signature's tensor kept.
    """
    trimmed = jnp.stack([trim(stacked[k], density) for k in range(stacked.shape[0])])
    return disjoint_mean(trimmed, elect_sign(trimmed))


def dare(delta: jax.Array, key: jax.Array, p: float) -> jax.Array:
    """Drop-and-rescale: ``delta · m / (1 − p)`` with ``m ~ Bernoulli(1 − p)`` elementwise.

    Args:
      delta: ``f[*shape]``.
      key: a ``jax.random`` key.
      p: static drop probability in ``[0, 1)``; ``p = 0`` returns ``delta`` unchanged.

    Returns:
      ``f[*shape]``, unbiased: ``E[dare(delta, ·, p)] = delta``.
    """
    if p == 0:
        return delta
    keep = jax.random.bernoulli(key, 1.0 - p, delta.shape)
    return jnp.where(keep, delta / jnp.asarray(1.0 - p, delta.dtype), jnp.zeros_like(delta))


def path_salt(path: str) -> int:
    """A stable 31-bit integer of a leaf path (crc32), for :func:`leaf_key`."""
    return zlib.crc32(path.encode()) & 0x7FFFFFFF


def leaf_key(key: jax.Array, k: int, path: str) -> jax.Array:
    """The DARE key of signature ``k``'s leaf ``path``: ``fold_in(fold_in(key, k), crc32(path))``."""
    return jax.random.fold_in(jax.random.fold_in(key, k), path_salt(path))


def merge_leaf(terms: list[tuple[int, jax.Array]], path: str, method: str, density: float, drop_rate: float,
               key: jax.Array | None) -> jax.Array:
    """Merges one leaf: ``terms = [(k, α_k · RWS_k[path]), ...]`` over the signatures holding it.

    ``sum``: ``Σ``; ``mean``: ``Σ / len(terms)`` (over the signatures holding the leaf);
    ``ties``; ``dare``: ``Σ_k dare(α_k RWS_k)``; ``dare_ties``: TIES of the DARE'd terms.
    Returns ``f[*shape]``.
    """
    values = [v for _, v in terms]
    if method in RANDOM_METHODS:
        if key is None:
            raise RWSError(f"method {method!r} is random: pass key=jax.random.key(seed)")
        values = [dare(v, leaf_key(key, k, path), drop_rate) for k, v in terms]
    if method in TRIM_METHODS:
        return ties_merge(jnp.stack(values), density)
    out = values[0]
    for v in values[1:]:
        out = out + v
    if method == "mean":
        out = out / jnp.asarray(len(values), out.dtype)
    return out
