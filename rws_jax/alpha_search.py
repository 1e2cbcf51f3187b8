"""Coefficient (α) search for patching, on validation metrics only.

The library never sees data: the caller passes ``score_fn(alphas) -> metrics``, which
patches its model with ``alphas: {name: float}`` and evaluates it on its *validation*
split, returning e.g. ``{'ta': clean val accuracy, 'ra': {name: corrupted val accuracy}}``.

- One signature: grid search of α over ``grid``, maximising the objective (default: RA)
  subject to a clean-accuracy drop ``ta(0) − ta(α) ≤ max_ta_drop`` relative to α = 0.
- K signatures: coordinate ascent over ``(α_1 … α_K)``: start from ``1/K`` each (or the
  best single-signature α's, ``start='single'``), sweep each coordinate over ``grid``
  with the others fixed, move to the best point found, and repeat until a full round
  brings no improvement or ``budget`` evaluations are spent. Default objective: the
  mean RA over the K names, under the same TA constraint.

Every distinct α point is evaluated once (cached); ``budget`` bounds the number of
``score_fn`` calls, the α = 0 baseline included. Among points with equal objective the
one with the smaller ``Σ|α|`` wins (then the one found first). α = 0 is feasible by
definition, so the result always satisfies the constraint.

Works for any merge method: ``score_fn`` decides how to patch (e.g. with
``rws.compose(..., method='ties')``), see :func:`search_alphas`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from rws_jax.errors import RWSError

DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
STARTS = ("uniform", "single")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One evaluated point: ``alphas`` ``{name: α}``, the ``metrics`` ``score_fn`` returned,
    the ``objective`` value, the TA drop relative to α = 0 (``None`` without a TA
    constraint) and whether the point satisfies the constraint."""

    alphas: Mapping[str, float]
    metrics: Mapping[str, Any]
    objective: float
    ta_drop: float | None
    feasible: bool


@dataclasses.dataclass(frozen=True)
class AlphaSearchResult:
    """What :func:`search_alphas` found.

    Attributes:
      alphas: the chosen ``{name: α}``.
      score: the objective at ``alphas`` (validation).
      metrics: ``score_fn``'s metrics at ``alphas``.
      baseline: ``score_fn``'s metrics at α = 0.
      evaluations: every evaluated point, in order (:class:`Evaluation`).
      num_evaluations: ``len(evaluations)`` = the number of ``score_fn`` calls (≤ budget).
      exhausted: whether the search stopped because the budget was spent.
    """

    alphas: Mapping[str, float]
    score: float
    metrics: Mapping[str, Any]
    baseline: Mapping[str, Any]
    evaluations: tuple
    num_evaluations: int
    exhausted: bool

    def table(self) -> list[dict]:
        """``[{**alphas, 'objective', 'ta_drop', 'feasible'}, ...]`` for a report."""
        return [{**e.alphas, "objective": e.objective, "ta_drop": e.ta_drop, "feasible": e.feasible}
                for e in self.evaluations]


def mean_ra(metrics: Mapping[str, Any], names: Sequence[str]) -> float:
    """Default objective: ``metrics['ra']`` if a number, else the mean of ``metrics['ra'][name]``."""
    if "ra" not in metrics:
        raise RWSError(f"score_fn must return an 'ra' entry for the default objective, got keys {sorted(metrics)}")
    ra = metrics["ra"]
    if isinstance(ra, Mapping):
        missing = [n for n in names if n not in ra]
        if missing:
            raise RWSError(f"score_fn's 'ra' lacks {missing}")
        return float(sum(float(ra[n]) for n in names) / len(names))
    return float(ra)


class _Budget(Exception):
    pass


def search_alphas(
    score_fn: Callable[[dict], Mapping[str, Any]],
    names: Sequence[str] | str,
    *,
    objective: Callable[[Mapping[str, Any]], float] | None = None,
    budget: int = 64,
    grid: Sequence[float] = DEFAULT_GRID,
    max_ta_drop: float | None = 0.01,
    start: str | Mapping[str, float] = "uniform",
    max_rounds: int = 10,
) -> AlphaSearchResult:
    """Chooses the patching coefficients on validation metrics.

    Args:
      score_fn: ``score_fn({name: α}) -> metrics``; ``metrics['ta']`` (clean validation
        accuracy) is needed when ``max_ta_drop`` is set, and the default objective reads
        ``metrics['ra']`` (a number, or ``{name: corrupted validation accuracy}``).
      names: the K signature names (one name: grid search; several: coordinate ascent).
      objective: ``objective(metrics) -> float`` to maximise; default the mean RA over
        ``names`` (:func:`mean_ra`).
      budget: most ``score_fn`` calls, the α = 0 baseline included (≥ 1).
      grid: the values each α is swept over (finite numbers).
      max_ta_drop: τ: a point is feasible if ``ta(0) − ta(α) ≤ τ`` (same units as
        ``ta``); ``None`` for no constraint.
      start: ``'uniform'`` (every α = 1/K), ``'single'`` (each α at its best value when
        searched alone with the others at 0; costs up to K·len(grid) evaluations), or a
        ``{name: α}`` mapping. Ignored for one signature.
      max_rounds: most coordinate-ascent rounds (sweeps over all K coordinates).

    Returns:
      :class:`AlphaSearchResult`.

    Example (TIES-merged fog and snow signatures, chosen on the validation split)::

        def score_fn(alphas):
            sig = rws.compose([fog, snow], [alphas["fog"], alphas["snow"]], method="ties", density=0.2)
            patched = rws.patch(std_variables, sig)
            ta = evaluate(patched, model.apply, val)["accuracy"]
            ra = {n: evaluate(patched, model.apply, val, corrupt_fn=c)["accuracy"] for n, c in corruptions.items()}
            return {"ta": ta, "ra": ra}

        result = rws.search_alphas(score_fn, ["fog", "snow"], budget=40, max_ta_drop=0.01)
        result.alphas, result.score, result.num_evaluations     # {'fog': 1.0, 'snow': 0.75}, 0.71, 23
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names or len(set(names)) != len(names):
        raise RWSError(f"names must be distinct and non-empty, got {names}")
    try:
        budget_ok = int(budget) == budget and budget >= 1
    except (TypeError, ValueError):
        budget_ok = False
    if not budget_ok:
        raise RWSError(f"budget must be an integer ≥ 1 (the number of score_fn calls), got {budget!r}")
    grid = tuple(float(g) for g in grid)
    if not grid or not all(math.isfinite(g) for g in grid):
        raise RWSError(f"grid must hold finite numbers, got {grid}")
    if max_ta_drop is not None and not (math.isfinite(float(max_ta_drop)) and max_ta_drop >= 0):
        raise RWSError(f"max_ta_drop must be a finite number ≥ 0 or None, got {max_ta_drop!r}")
    if not isinstance(start, Mapping) and start not in STARTS:
        raise RWSError(f"unknown start {start!r}: choose one of {STARTS} or pass {{name: alpha}}")
    objective = objective or (lambda m: mean_ra(m, names))

    cache: dict[tuple, Evaluation] = {}
    order: list[Evaluation] = []
    baseline: dict = {}

    def key_of(point: Mapping[str, float]) -> tuple:
        return tuple(float(point[n]) + 0.0 for n in names)  # + 0.0: -0.0 == 0.0

    def evaluate(point: Mapping[str, float]) -> Evaluation:
        k = key_of(point)
        if k in cache:
            return cache[k]
        if len(order) >= budget:
            raise _Budget
        alphas = dict(zip(names, k))
        metrics = score_fn(dict(alphas))
        if not isinstance(metrics, Mapping):
            raise RWSError(f"score_fn must return a dict of metrics, got {type(metrics).__name__}")
        value = float(objective(metrics))
        drop = None
        feasible = math.isfinite(value)
        if max_ta_drop is not None:
            if "ta" not in metrics:
                raise RWSError("score_fn must return 'ta' (clean validation accuracy) when max_ta_drop is set")
            drop = float(baseline["ta"]) - float(metrics["ta"]) if baseline else 0.0
            feasible = feasible and drop <= max_ta_drop + 1e-12
        e = Evaluation(alphas=alphas, metrics=metrics, objective=value, ta_drop=drop, feasible=feasible)
        cache[k] = e
        order.append(e)
        return e

    def better(a: Evaluation, b: Evaluation) -> bool:
        """Is ``a`` strictly preferred to ``b``? Feasible first, higher objective, smaller Σ|α|."""
        if a.feasible != b.feasible:
            return a.feasible
        if a.objective != b.objective:
            return a.objective > b.objective
        return sum(abs(v) for v in a.alphas.values()) < sum(abs(v) for v in b.alphas.values())

    zero = {n: 0.0 for n in names}
    base = evaluate(zero)
    baseline.update(base.metrics)
    best = base
    exhausted = False

    def sweep(center: Mapping[str, float], name: str) -> Evaluation:
        nonlocal best
        local = None
        for g in grid:
            e = evaluate({**center, name: g})
            if local is None or better(e, local):
                local = e
            if better(e, best):
                best = e
        assert local is not None  # the grid is not empty (checked above)
        return local

    try:
        if len(names) == 1:
            sweep(zero, names[0])
        else:
            if isinstance(start, Mapping):
                unknown = set(start) - set(names)
                if unknown:
                    raise RWSError(f"start names {sorted(unknown)} are not in {names}")
                point = {n: float(start.get(n, 0.0)) for n in names}
            elif start == "single":
                point = {n: sweep(zero, n).alphas[n] for n in names}
            else:
                point = {n: 1.0 / len(names) for n in names}
            e = evaluate(point)
            if better(e, best):
                best = e
            for _ in range(max_rounds):
                before = best
                for n in names:
                    sweep(best.alphas, n)
                if best is before:
                    break
    except _Budget:
        exhausted = True
    return AlphaSearchResult(alphas=dict(best.alphas), score=best.objective, metrics=best.metrics,
                             baseline=dict(base.metrics), evaluations=tuple(order), num_evaluations=len(order),
                             exhausted=exhausted)
