"""The premise, measured: is the straight path between two models a path of good models?

Patching ``θ + α · RWS`` is a linear step between models fine-tuned from one θ_init; it
can only work where those models lie in one linear basin (*linear mode connectivity*,
Frankle et al. 2020; Entezari et al. 2022). This module measures it::

    θ(t) = (1 − t) · θ_a + t · θ_b,    t ∈ [0, 1]                     (interpolate)
    m(t) = metric(θ(t))  on an even grid of t, endpoints included     (evaluate_path)
    gap(t) = line(t) − m(t)   for a metric to maximise (accuracy)
           = m(t) − line(t)   for a metric to minimise (loss)
    line(t) = (1 − t) · m(0) + t · m(1)
    barrier = max_t gap(t) ≥ 0                                        (barrier)

The barrier is in the metric's units and positive for a dip in accuracy or a bump in
loss; it is 0 when the path never falls below (rises above, for a loss) the straight line
joining the endpoint values. It is measured against that line, not against the mean of
the two endpoints, so that endpoints of unequal quality do not count as a barrier.

BatchNorm: the interpolated running statistics are not the statistics of the interpolated
network (the mean activation of θ(t) is not the mix of the endpoints' means, and variances
mix even less). :func:`evaluate_path` takes ``recompute_stats`` (e.g. built from
:func:`rws_jax.recalibrate_batch_stats`, the reference's ``bn_update``) to re-estimate them
at every t, endpoints included, before the metric.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rws_jax import tree_paths
from rws_jax.errors import IncompatibleSignatureError, NonFiniteError, RWSError
from rws_jax.types import Variables

DEFAULT_NUM_POINTS = 11


def _is_interpolated(leaf: Any) -> bool:
    """Floating (and complex) leaves are interpolated; integer, bool and PRNG-key leaves are not."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        dtype = np.asarray(leaf).dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return False
    return bool(jnp.issubdtype(dtype, jnp.inexact))


def _traced(*xs: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _same_values(a: Any, b: Any) -> bool:
    if jax.dtypes.issubdtype(getattr(a, "dtype", np.asarray(a).dtype), jax.dtypes.prng_key):
        a, b = jax.random.key_data(a), jax.random.key_data(b)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


@jax.jit
def _all_finite(leaves: dict) -> jax.Array:
    """``bool[num_leaves]``: whether each leaf (sorted path order) is all finite."""
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves.values()])


def _check_finite(flat: dict[str, Any], label: str) -> None:
    concrete = {p: x for p, x in flat.items() if not _traced(x)}
    if not concrete:
        return
    ok = np.asarray(_all_finite(concrete))
    bad = [p for p, good in zip(sorted(concrete), ok) if not good]
    if bad:
        raise NonFiniteError(f"{label} holds NaN/inf in {bad[:5]}: a path to or from it is not defined")


def _check_pair(theta_a: Variables, theta_b: Variables) -> tuple[dict[str, Any], dict[str, Any], Callable]:
    """``(floating leaves of a, floating leaves of b, rebuild)`` after checking that the two
    trees have the same leaf paths, shapes and dtypes, equal non-floating leaves and no NaN/inf.

    ``rebuild({path: array})`` gives a tree of θ_a's structure (its non-floating leaves kept).
    """
    flat_a, rebuild = tree_paths.flatten(theta_a)
    flat_b, _ = tree_paths.flatten(theta_b)
    if list(flat_a) != list(flat_b):
        only_a = [p for p in flat_a if p not in flat_b]
        only_b = [p for p in flat_b if p not in flat_a]
        raise IncompatibleSignatureError(
            "theta_a and theta_b have different structures: "
            + (f"only in theta_a: {only_a[:5]}; only in theta_b: {only_b[:5]}" if only_a or only_b
               else "the same leaves in another order"))
    for p, x in flat_a.items():
        if tree_paths.leaf_spec(x) != tree_paths.leaf_spec(flat_b[p]):
            raise IncompatibleSignatureError(
                f"leaf {p!r} is {tree_paths.leaf_spec(x)} in theta_a but {tree_paths.leaf_spec(flat_b[p])} "
                "in theta_b (shape, dtype)")
    floating = [p for p, x in flat_a.items() if _is_interpolated(x)]
    for p in flat_a:
        if p not in floating and not _traced(flat_a[p], flat_b[p]) and not _same_values(flat_a[p], flat_b[p]):
            raise IncompatibleSignatureError(
                f"non-floating leaf {p!r} (a step counter, an RNG key or count...) differs between theta_a and "
                "theta_b: it cannot be interpolated, so the path would not end at theta_b. Pass only the "
                "floating variables (e.g. nnx.state(model, nnx.Param, nnx.BatchStat)) or make them equal")
    fa = {p: flat_a[p] for p in floating}
    fb = {p: flat_b[p] for p in floating}
    _check_finite(fa, "theta_a")
    _check_finite(fb, "theta_b")
    return fa, fb, rebuild


def _check_t(t: float | jax.Array) -> jax.Array:
    if jnp.ndim(t) != 0:
        raise RWSError(f"t must be a scalar, got shape {jnp.shape(t)}")
    if not _traced(t):
        v = float(np.asarray(t))
        if not np.isfinite(v):
            raise NonFiniteError(f"t must be finite, got {v}")
        if not 0.0 <= v <= 1.0:
            raise RWSError(f"t must be in [0, 1] (0: theta_a, 1: theta_b), got {v}")
    return jnp.asarray(t, jnp.float32)


@jax.jit
def _lerp(a: dict, b: dict, t: jax.Array) -> dict:
    """``(1 − t)·a + t·b`` per leaf in at least float32, cast back; exactly ``a`` at t = 0 and
    ``b`` at t = 1 (signed zeros included, which the formula alone would not keep)."""
    out = {}
    for p, x in a.items():
        ct = jnp.promote_types(x.dtype, jnp.float32)
        tt = t.astype(ct)
        mixed = ((1 - tt) * x.astype(ct) + tt * b[p].astype(ct)).astype(x.dtype)
        out[p] = jnp.where(t == 0, x, jnp.where(t == 1, b[p], mixed))
    return out


def interpolate(theta_a: Variables, theta_b: Variables, t: float | jax.Array) -> Variables:
    """θ(t) = (1 − t)·θ_a + t·θ_b, leaf by leaf, in one jitted call.

    Args:
      theta_a, theta_b: two trees with the same leaf paths, shapes and dtypes (Linen
        variable dicts, NNX ``State``, any pytree; a ``FrozenDict`` and a plain dict of the
        same paths match). Floating leaves are interpolated (in at least float32, cast
        back: a ``bf16[3, 3, C, K]`` kernel stays ``bf16[3, 3, C, K]``). Non-floating
        leaves (integer step counters, RNG counts and keys, boolean masks) are not: they
        must be equal in both trees and are kept; if they differ the call is refused,
        since θ(1) would not be θ_b.
      t: a scalar in [0, 1], traced (a new t does not recompile).

    Returns:
      A tree of θ_a's structure. θ(0) is θ_a and θ(1) is θ_b bit for bit.

    Raises:
      IncompatibleSignatureError: different paths, shapes or dtypes, or unequal
        non-floating leaves.
      NonFiniteError: NaN/inf in either tree, or a NaN t.
      RWSError: t not a scalar in [0, 1].

    Under ``jax.jit``/``vmap`` (traced leaves or t) the structure is still checked; the
    value checks (finiteness, range of t, equal non-floating leaves) are skipped.
    """
    tt = _check_t(t)
    fa, fb, rebuild = _check_pair(theta_a, theta_b)
    return rebuild(_lerp(fa, fb, tt)) if fa else rebuild({})


@dataclasses.dataclass(frozen=True)
class PathResult:
    """The metric along the straight path θ(t) = (1 − t)·θ_a + t·θ_b.

    Attributes:
      ts: the grid, increasing, ``ts[0] = 0.0`` and ``ts[-1] = 1.0`` (N values).
      values: the metric at each t (N floats).
      barrier: ``max_t gap(t) ≥ 0`` in the metric's units (see :func:`barrier`).
      argmax_t: the t where the gap is largest (the first one; 0.0 when the barrier is 0).
      higher_is_better: whether the metric is to be maximised (accuracy) or minimised (loss).
    """

    ts: tuple[float, ...]
    values: tuple[float, ...]
    barrier: float
    argmax_t: float
    higher_is_better: bool


def _check_grid(ts: Sequence[float] | np.ndarray) -> np.ndarray:
    grid = np.asarray(ts, np.float64)
    if grid.ndim != 1 or grid.size < 2:
        raise RWSError(f"ts must be a 1-D grid of at least 2 values, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise NonFiniteError(f"ts must be finite, got {grid.tolist()}")
    if grid[0] != 0.0 or grid[-1] != 1.0 or not np.all(np.diff(grid) > 0):
        raise RWSError(f"ts must increase strictly from 0.0 to 1.0 (both endpoints included), got {grid.tolist()}")
    return grid


def path_gaps(ts: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, *,
              higher_is_better: bool) -> np.ndarray:
    """``f64[N]``: how much worse than the straight line between the endpoint values the
    path is at each t (positive: worse; 0 at both endpoints). See :func:`barrier`."""
    grid = _check_grid(ts)
    v = np.asarray(values, np.float64)
    if v.shape != grid.shape:
        raise RWSError(f"got {v.size} values for {grid.size} points t")
    if not np.all(np.isfinite(v)):
        bad = [float(t) for t, x in zip(grid, v) if not np.isfinite(x)]
        raise NonFiniteError(f"the metric is NaN/inf at t = {bad[:5]}")
    line = (1.0 - grid) * v[0] + grid * v[-1]
    return line - v if higher_is_better else v - line


def barrier(ts: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, *,
            higher_is_better: bool) -> float:
    """The barrier of a path: the largest gap between the straight line joining the
    endpoint values and the value at t.

    ``line(t) = (1 − t)·values[0] + t·values[-1]``; the gap is ``line(t) − value(t)`` for
    a metric to maximise (``higher_is_better=True``: accuracy) and ``value(t) − line(t)``
    for one to minimise (a loss), so a barrier is positive for a dip in accuracy and for a
    bump in loss, in the metric's units. It is 0 when the path is at or above (below, for a
    loss) the line: the gap is 0 at both endpoints, so it is never negative.

    Args:
      ts: ``[N]`` increasing, from 0.0 to 1.0 included (N ≥ 2).
      values: ``[N]`` finite metric values at ``ts``.
      higher_is_better: required: the sign convention depends on it.

    Raises:
      RWSError: a grid that is not increasing from 0 to 1, or lengths that differ.
      NonFiniteError: a NaN/inf value.
    """
    return float(np.max(path_gaps(ts, values, higher_is_better=higher_is_better)))


def evaluate_path(
    theta_a: Variables,
    theta_b: Variables,
    metric_fn: Callable[[Variables], float | jax.Array],
    *,
    higher_is_better: bool,
    ts: Sequence[float] | np.ndarray | None = None,
    num_points: int | None = None,
    recompute_stats: Callable[[Variables], Variables] | None = None,
) -> PathResult:
    """The metric along θ(t) = (1 − t)·θ_a + t·θ_b, and its barrier.

    Args:
      theta_a, theta_b: the endpoints, as for :func:`interpolate` (checked once).
      metric_fn: ``Variables -> float``, e.g. a test accuracy (``higher_is_better=True``)
        or a loss (``higher_is_better=False``). Called once per t on θ(t), a tree of
        θ_a's structure.
      higher_is_better: the direction of the metric; decides the sign of the barrier.
      ts: the grid (increasing from 0.0 to 1.0, both included); or
      num_points: the size N ≥ 2 of an even grid ``linspace(0, 1, N)`` (default 11:
        steps of 0.1). Give one of ``ts`` and ``num_points``.
      recompute_stats: ``Variables -> Variables`` applied to θ(t) before the metric, at
        every t including the endpoints. For BatchNorm models: the interpolated running
        statistics are not the statistics of the interpolated network, so evaluating
        θ(t) with them measures a mismatch, not the path. For example
        ``lambda v: rws.recalibrate_batch_stats(model.apply, v, batches)`` with
        ``batches`` a list (it is iterated once per t).

    Returns:
      :class:`PathResult` with the N values, the barrier (:func:`barrier`) and its t.

    Raises:
      as :func:`interpolate` and :func:`barrier`; NonFiniteError names the t where the
      metric is NaN/inf; RWSError if both ``ts`` and ``num_points`` are given.
    """
    if ts is not None and num_points is not None:
        raise RWSError("give either ts or num_points, not both")
    if ts is None:
        n = DEFAULT_NUM_POINTS if num_points is None else int(num_points)
        if n < 2:
            raise RWSError(f"num_points must be at least 2 (both endpoints), got {num_points}")
        ts = np.linspace(0.0, 1.0, n)
    grid = _check_grid(ts)
    fa, fb, rebuild = _check_pair(theta_a, theta_b)
    values = []
    for t in grid:
        theta = rebuild(_lerp(fa, fb, jnp.float32(t))) if fa else rebuild({})
        if recompute_stats is not None:
            theta = recompute_stats(theta)
        values.append(float(np.asarray(metric_fn(theta))))
    gaps = path_gaps(grid, values, higher_is_better=higher_is_better)
    i = int(np.argmax(gaps))
    return PathResult(ts=tuple(float(t) for t in grid), values=tuple(values), barrier=float(gaps[i]),
                      argmax_t=float(grid[i]), higher_is_better=bool(higher_is_better))
