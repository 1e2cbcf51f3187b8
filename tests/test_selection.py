import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rws_jax as rws
from rws_jax import selection as sel_lib


def _many_convs(n=12):
    return {"params": {f"conv_{i}": {"kernel": jnp.zeros((3, 3, 2, 2)), "bias": jnp.zeros(2)} for i in range(n)}
            | {"head": {"kernel": jnp.zeros((2, 10)), "bias": jnp.zeros(10)}}}


def test_first_k_uses_natural_order_not_lexicographic():
    v = _many_convs(12)
    paths = rws.first_k(3).resolve(v)
    assert {p.split("/")[1] for p in paths} == {"conv_0", "conv_1", "conv_2"}
    units = rws.first_k(11).units(v)
    assert units[:3] == ["conv_0", "conv_1", "conv_2"] and units[-1] == "conv_11"


def test_first_k_with_explicit_forward_order():
    v = _many_convs(3)
    paths = rws.first_k(1, order=["conv_2", "conv_0", "conv_1"]).resolve(v)
    assert paths == ("params/conv_2/bias", "params/conv_2/kernel")


def test_head_excluded_by_default_and_included_on_request(tiny_models):
    _, init, *_ = tiny_models
    assert not any("head" in p for p in rws.first_k(100).resolve(init))
    assert any("head" in p for p in rws.first_k(100, exclude_head=False).resolve(init))


def test_collections_choice(tiny_models):
    _, init, *_ = tiny_models
    only_params = rws.first_k(2).resolve(init)
    assert all(p.startswith("params/") for p in only_params)
    with_bn = rws.first_k(2, collections=("params", "batch_stats")).resolve(init)
    assert "batch_stats/bn_0/mean" in with_bn and "params/bn_0/scale" in with_bn


def test_pattern_and_paths(tiny_models):
    _, init, *_ = tiny_models
    assert rws.by_pattern(r"conv_\d/kernel$").resolve(init) == tuple(
        f"params/conv_{i}/kernel" for i in range(3)
    )
    assert rws.by_paths(["params/conv_1/bias"]).resolve(init) == ("params/conv_1/bias",)
    with pytest.raises(rws.SelectionError, match="not in the tree"):
        rws.by_paths(["params/nope"]).resolve(init)
    with pytest.raises(rws.SelectionError, match="matches no leaf"):
        rws.by_pattern("zzz").resolve(init)


def test_int_and_str_shorthands(tiny_models):
    _, init, *_ = tiny_models
    assert sel_lib.as_selection(1).resolve(init) == rws.first_k(1).resolve(init)
    assert sel_lib.as_selection("conv_0").resolve(init) == rws.by_pattern("conv_0").resolve(init)
    with pytest.raises(rws.SelectionError):
        rws.first_k(0)


def test_selection_json_roundtrip():
    s = rws.first_k(4, order=["a", "b"], collections=("params", "batch_stats"))
    assert sel_lib.Selection.from_json(s.to_json()) == s


def test_nnx_state_units_and_collections():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv_0 = nnx.Conv(1, 4, (3, 3), rngs=rngs)
            self.bn_0 = nnx.BatchNorm(4, rngs=rngs)
            self.conv_1 = nnx.Conv(4, 4, (3, 3), rngs=rngs)
            self.head = nnx.Linear(4, 10, rngs=rngs)

    _, state = nnx.split(Net(nnx.Rngs(0)))
    # NNX sorts State keys, so the forward order has to be given.
    order = ["conv_0", "bn_0", "conv_1", "head"]
    assert rws.first_k(1, order=order).resolve(state) == ("conv_0/bias", "conv_0/kernel")
    both = rws.first_k(2, order=order, collections=("params", "batch_stats")).resolve(state)
    assert "bn_0/mean" in both and "bn_0/scale" in both
    params_only = rws.first_k(2, order=order).resolve(state)
    assert "bn_0/mean" not in params_only and "bn_0/scale" in params_only


def test_linen_creation_order_is_forward_order(tiny_models):
    _, init, *_ = tiny_models
    assert rws.first_k(4).units(init) == ["conv_0", "bn_0", "conv_1", "conv_2"]
    # Once keys are sorted (e.g. after jax.tree_util or a checkpoint), names sort naturally.
    resorted = jax.tree.unflatten(jax.tree.structure({"params": dict(sorted(init["params"].items()))}),
                                  jax.tree.leaves({"params": dict(sorted(init["params"].items()))}))
    assert rws.first_k(4).units(resorted) == ["bn_0", "conv_0", "conv_1", "conv_2"]
