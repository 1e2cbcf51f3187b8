"""rws.search_alphas on synthetic score functions with known optima, and on a tiny Flax
model patched with rws.patch and evaluated with rws_jax.training.evaluate."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax import tree_paths
from rws_jax.alpha_search import DEFAULT_GRID
from rws_jax.signature import leaf_specs_for
from rws_jax.training.steps import evaluate


class Counting:
    """A score function that counts its calls and records the points it saw."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, alphas):
        self.calls.append(dict(alphas))
        return self.fn(alphas)


def single(ra, ta):
    return Counting(lambda a: {"ta": ta(a["fog"]), "ra": {"fog": ra(a["fog"])}})


def test_single_signature_concave_optimum():
    fn = single(lambda a: 1 - (a - 1.25) ** 2, lambda a: 0.9 - 0.02 * a)
    r = rws.search_alphas(fn, "fog", max_ta_drop=0.03)
    assert r.alphas == {"fog": 1.25}
    assert r.score == pytest.approx(1.0)
    assert r.num_evaluations == len(DEFAULT_GRID) == len(fn.calls)  # α = 0 is the baseline, evaluated once
    assert r.baseline["ta"] == pytest.approx(0.9)
    assert not r.exhausted


def test_single_signature_ta_constraint_binds():
    fn = single(lambda a: 1 - (a - 1.25) ** 2, lambda a: 0.9 - 0.02 * a)
    r = rws.search_alphas(fn, ["fog"], max_ta_drop=0.02)  # feasible: α ≤ 1
    assert r.alphas == {"fog": 1.0}
    assert all(e.feasible == (e.alphas["fog"] <= 1.0) for e in r.evaluations)
    assert r.metrics["ta"] == pytest.approx(0.88)
    # no constraint: the unconstrained optimum
    assert rws.search_alphas(fn, ["fog"], max_ta_drop=None).alphas == {"fog": 1.25}


def test_ties_go_to_the_smaller_alpha():
    fn = single(lambda a: min(a, 1.0), lambda a: 0.9)  # plateau on α ≥ 1
    r = rws.search_alphas(fn, "fog", grid=(2.0, 1.5, 1.0, 0.5, 0.0))
    assert r.alphas == {"fog": 1.0}
    fn = single(lambda a: 0.5, lambda a: 0.9)  # flat: nothing beats α = 0
    assert rws.search_alphas(fn, "fog").alphas == {"fog": 0.0}
    fn = Counting(lambda a: {"ta": 0.9, "ra": {"f": 0.5 + 0.1 * min(abs(a["f"]) + abs(a["s"]), 1.0),
                                                "s": 0.5}})
    r = rws.search_alphas(fn, ["f", "s"], grid=(0.0, 0.5, 1.0, 1.5), start={"f": 1.5, "s": 1.5})
    assert sum(r.alphas.values()) == 1.0  # the smallest Σ|α| on the plateau


def separable(ta_drop=lambda a: 0.0):
    def fn(a):
        return {"ta": 0.9 - ta_drop(a), "ra": {"fog": 1 - (a["fog"] - 0.75) ** 2, "snow": 1 - (a["snow"] - 1.5) ** 2}}
    return Counting(fn)


def brute_force(fn, names, grid, tau):
    base = fn({n: 0.0 for n in names})["ta"]
    best = None
    for point in itertools.product(grid, repeat=len(names)):
        m = fn(dict(zip(names, point)))
        if base - m["ta"] > tau + 1e-12:
            continue
        val = np.mean([m["ra"][n] for n in names])
        if best is None or val > best[0] + 1e-12:
            best = (val, dict(zip(names, point)))
    return best


@pytest.mark.parametrize("start", ["uniform", "single", {"fog": 2.0, "snow": 0.0}])
def test_coordinate_ascent_finds_the_separable_optimum(start):
    fn = separable()
    r = rws.search_alphas(fn, ["fog", "snow"], start=start, budget=200)
    assert r.alphas == {"fog": 0.75, "snow": 1.5}
    assert r.score == pytest.approx(1.0)
    assert r.score == pytest.approx(brute_force(separable(), ["fog", "snow"], DEFAULT_GRID, 0.01)[0])
    assert len(fn.calls) == r.num_evaluations == len({tuple(c.values()) for c in fn.calls})  # cached
    assert r.num_evaluations < len(DEFAULT_GRID) ** 2  # fewer than the full grid
    assert not r.exhausted


def test_coordinate_ascent_with_a_binding_ta_constraint():
    drop = lambda a: 0.01 * a["snow"]  # noqa: E731 - only snow costs clean accuracy
    r = rws.search_alphas(separable(drop), ["fog", "snow"], max_ta_drop=0.01)
    assert r.alphas == {"fog": 0.75, "snow": 1.0}
    assert r.alphas == brute_force(separable(drop), ["fog", "snow"], DEFAULT_GRID, 0.01)[1]
    assert r.evaluations[0].alphas == {"fog": 0.0, "snow": 0.0}  # the baseline comes first
    assert all(e.ta_drop <= 0.01 + 1e-12 for e in r.evaluations if e.feasible)


@pytest.mark.parametrize("budget", [1, 2, 5, 13])
def test_budget_is_respected(budget):
    fn = separable()
    r = rws.search_alphas(fn, ["fog", "snow"], budget=budget)
    assert r.num_evaluations == len(fn.calls) == budget
    assert r.exhausted
    assert r.evaluations[0].alphas == {"fog": 0.0, "snow": 0.0}
    assert r.score == max(e.objective for e in r.evaluations if e.feasible)


def test_custom_objective_and_report_table():
    fn = separable()
    worst = lambda m: min(m["ra"].values())  # noqa: E731 - worst-case RA
    r = rws.search_alphas(fn, ["fog", "snow"], objective=worst, grid=(0.0, 0.5, 1.0, 1.5))
    assert r.score == pytest.approx(min(1 - (r.alphas["fog"] - 0.75) ** 2, 1 - (r.alphas["snow"] - 1.5) ** 2))
    assert r.alphas["snow"] == 1.5 and r.alphas["fog"] in (0.5, 1.0)
    rows = r.table()
    assert len(rows) == r.num_evaluations and set(rows[0]) == {"fog", "snow", "objective", "ta_drop", "feasible"}
    # a plain-number RA is accepted by the default objective
    assert rws.search_alphas(lambda a: {"ta": 1.0, "ra": -abs(a["x"] - 0.5)}, "x").alphas == {"x": 0.5}


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=0), "budget must be an integer"),
    (dict(budget=2.5), "budget must be an integer"),
    (dict(grid=(0.0, float("nan"))), "grid must hold finite numbers"),
    (dict(grid=()), "grid must hold finite numbers"),
    (dict(max_ta_drop=-0.1), "max_ta_drop must be"),
    (dict(start="best"), "unknown start 'best'"),
    (dict(start={"rain": 1.0}), r"start names \['rain'\]"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(rws.RWSError, match=match):
        rws.search_alphas(separable(), ["fog", "snow"], **kwargs)


def test_score_fn_must_return_what_is_needed():
    with pytest.raises(rws.RWSError, match="'ta'"):
        rws.search_alphas(lambda a: {"ra": 1.0}, "fog")
    with pytest.raises(rws.RWSError, match="'ra'"):
        rws.search_alphas(lambda a: {"ta": 1.0}, "fog")
    with pytest.raises(rws.RWSError, match="lacks"):
        rws.search_alphas(lambda a: {"ta": 1.0, "ra": {"fog": 1.0}}, ["fog", "snow"])
    with pytest.raises(rws.RWSError, match="distinct"):
        rws.search_alphas(separable(), ["fog", "fog"])


# ---------------------------------------------------------------- a real (tiny) Flax model


class Centroids(nn.Module):
    """Dense(3) on the flattened image; set by hand to a nearest-centroid rule on brightness."""

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def centroid_params(mu):
    """``logit_c = 2 μ_c f − μ_c²`` with ``f`` the mean pixel: nearest centroid on f."""
    mu = np.asarray(mu, np.float32)
    return {"params": {"Dense_0": {"kernel": jnp.asarray(np.tile(2 * mu / 64, (64, 1))),
                                   "bias": jnp.asarray(-mu ** 2)}}}


def test_search_on_a_patched_flax_model():
    """Brightness +60 is the corruption; the 'robust' model's centroids are shifted by 60/255.
    Half the shift (α = 0.5) keeps clean accuracy and fixes the corrupted one; less does not
    fix it, more costs clean accuracy: α = 0.5 is the unique feasible optimum at τ = 0."""
    from tests._tiny_bn import separable_data

    model = Centroids()
    mu = (19.5 + 80 * np.arange(3)) / 255
    std = centroid_params(mu)
    robust = centroid_params(mu + 60 / 255)
    flat_s, flat_r = tree_paths.flatten(std)[0], tree_paths.flatten(robust)[0]
    sig = rws.Signature(deltas={p: flat_r[p] - flat_s[p] for p in flat_s},
                        meta=rws.SignatureMeta(base_fingerprint=tree_paths.fingerprint(std),
                                               leaf_specs=leaf_specs_for(flat_s, flat_s), name="bright"))
    val = separable_data(300, seed=1)  # the validation split: the library never sees it

    def brighten(key, images):
        return jnp.clip(images.astype(jnp.int32) + 60, 0, 255).astype(jnp.uint8)

    def score_fn(alphas):
        patched = rws.patch(std, sig, alphas["bright"])
        return {"ta": evaluate(patched, model.apply, val, batch_size=300)["accuracy"],
                "ra": {"bright": evaluate(patched, model.apply, val, batch_size=300, corrupt_fn=brighten)["accuracy"]}}

    r = rws.search_alphas(score_fn, "bright", max_ta_drop=0.0, grid=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert r.baseline["ta"] == 1.0 and r.baseline["ra"]["bright"] < 0.5
    assert r.alphas == {"bright": 0.5}
    assert r.metrics == {"ta": 1.0, "ra": {"bright": 1.0}}
    by_alpha = {e.alphas["bright"]: e for e in r.evaluations}
    assert by_alpha[1.0].metrics["ra"]["bright"] == 1.0 and not by_alpha[1.0].feasible  # robust but TA drops
    assert by_alpha[0.25].metrics["ra"]["bright"] < 1.0
