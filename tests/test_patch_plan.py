"""rws.patch_plan: validate once, then patch with one jitted call, bit-identical to rws.patch."""

import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from tests.conftest import TinyCNN, perturb

# the module (rws_jax.patch_plan the attribute is the function of the same name)
pp_module = importlib.import_module("rws_jax.patch_plan")


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def test_single_signature_equals_patch(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    plan = rws.patch_plan(std, sigs[0])
    for alpha in (1.0, -0.7, 2.5):
        chex.assert_trees_all_equal(plan(std, alpha), rws.patch(std, sigs[0], alpha))
    out = plan(std, 0.3)
    assert out["params"]["head"]["kernel"] is std["params"]["head"]["kernel"]  # untouched leaves: same objects
    assert plan.paths == sigs[0].paths and plan.num_signatures == 1


@pytest.mark.parametrize("mode", ["linear", "reference"])
def test_several_signatures_equal_patch(tiny_models, sigs, mode):
    _, _, std, *_ = tiny_models
    plan = rws.patch_plan(std, list(sigs), mode=mode)
    for alphas in ([0.7, -0.3], 1.5):
        chex.assert_trees_all_equal(plan(std, alphas), rws.patch(std, list(sigs), alphas, mode=mode))
    assert plan.paths == tuple(sorted(set(sigs[0].deltas) | set(sigs[1].deltas)))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_and_mixed_signatures_equal_patch(tiny_models, sigs, bits):
    _, _, std, *_ = tiny_models
    q = rws.quantize(sigs[1], bits)
    for group in ([q], [sigs[0], q]):
        plan = rws.patch_plan(std, group)
        alphas = [0.9, -0.4][: len(group)]
        chex.assert_trees_all_equal(plan(std, alphas), rws.patch(std, group, alphas))


def test_donated_equals_patch_and_chains(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    plan = rws.patch_plan(std, list(sigs))
    want = rws.patch(std, list(sigs), [0.5, 2.0])
    got = plan(_copy(std), [0.5, 2.0], donate=True)
    chex.assert_trees_all_equal(got, want)
    again = plan(got, [0.5, 2.0], donate=True)  # donating the previous output
    chex.assert_trees_all_equal(again, rws.patch(want, list(sigs), [0.5, 2.0]))


def test_second_call_does_not_retrace(tiny_models, sigs, monkeypatch):
    _, _, std, *_ = tiny_models
    traces = []
    impl = pp_module._plan_impl

    def counting(*args, **kwargs):
        traces.append(1)
        return impl(*args, **kwargs)

    monkeypatch.setattr(pp_module, "_plan_impl", counting)
    plan = rws.patch_plan(std, list(sigs))
    plan(std, [0.1, 0.2])
    plan(std, [0.3, -0.4])
    plan(perturb(std, jax.random.key(9)), 1.0)  # other values, same shapes
    assert len(traces) == 1
    plan(_copy(std), 1.0, donate=True)  # the donating function: at most one more trace
    n = len(traces)
    assert n <= 2
    plan(_copy(std), 2.0, donate=True)
    assert len(traces) == n
    for fn in (plan._copy, plan._donated):  # and one compiled executable each
        if hasattr(fn, "_cache_size"):
            assert fn._cache_size() == 1


def test_construction_refuses_wrong_shapes(tiny_models, sigs):
    wide = TinyCNN(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(rws.IncompatibleSignatureError, match="shape"):
        rws.patch_plan(wide, sigs[0], check_base=False)
    other_head = TinyCNN(num_classes=5).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(rws.IncompatibleSignatureError, match="fingerprint"):
        rws.patch_plan(other_head, sigs[0])
    plan = rws.patch_plan(other_head, sigs[0], check_base=False)  # transfer, as rws.patch allows
    chex.assert_trees_all_equal(plan(other_head, 0.5), rws.patch(other_head, sigs[0], 0.5, check_base=False))


def test_construction_refuses_missing_paths_and_nan(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    no_conv = {"params": {k: v for k, v in std["params"].items() if k != "conv_0"},
               "batch_stats": std["batch_stats"]}
    with pytest.raises(rws.IncompatibleSignatureError, match="conv_0"):
        rws.patch_plan(no_conv, sigs[0], check_base=False)
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), sigs[0])
    with pytest.raises(rws.NonFiniteError, match="NaN"):
        rws.patch_plan(std, bad)
    rws.patch_plan(std, bad, check_values=False)  # the switch is honoured
    with pytest.raises(rws.RWSError, match="mode"):
        rws.patch_plan(std, sigs[0], mode="nope")


def test_call_refuses_other_architecture_and_keeps_input(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    plan = rws.patch_plan(std, sigs[0])
    other = {"params": std["params"]}  # another structure (no batch_stats)
    with pytest.raises(rws.IncompatibleSignatureError, match="another structure"):
        plan(other, 1.0)
    # same structure, other shapes: caught when the jitted function is traced for them
    wide = TinyCNN(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    assert jax.tree.structure(wide) == jax.tree.structure(std)
    with pytest.raises(rws.IncompatibleSignatureError, match="shape"):
        plan(wide, 1.0, donate=True)
    assert not any(x.is_deleted() for x in jax.tree.leaves(wide))  # nothing donated
    model = _copy(std)
    with pytest.raises(rws.RWSError, match="coefficients"):
        plan(model, [1.0, 2.0], donate=True)
    with pytest.raises(rws.NonFiniteError):
        plan(model, float("nan"), donate=True)
    chex.assert_trees_all_equal(model, std)  # still valid and unchanged


def test_plan_is_immutable_and_repr(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    plan = rws.patch_plan(std, list(sigs))
    with pytest.raises(AttributeError):
        plan.mode = "reference"
    assert "signatures=2" in repr(plan)
    assert plan.fingerprint == rws.fingerprint(std)
    assert isinstance(plan, rws.PatchPlan)
    np.testing.assert_array_equal(np.asarray(plan(std, 0.0)["params"]["conv_0"]["kernel"]),
                                  np.asarray(std["params"]["conv_0"]["kernel"]))


@pytest.mark.parametrize("mode", ["linear", "reference"])
@pytest.mark.parametrize("alphas", [1.0, -0.6, [0.5, -2.0, 3.0]])
def test_host_coefficients_equal_coefficients(mode, alphas):
    np.testing.assert_array_equal(pp_module.host_coefficients(alphas, 3, mode),
                                  np.asarray(rws.coefficients(alphas, 3, mode)))


def test_traced_fuses_into_a_callers_jit(tiny_models, sigs):
    model, _, std, _, _ = tiny_models
    plan = rws.patch_plan(std, list(sigs))
    a = np.array([0.7, -0.3], np.float32)
    fused = jax.jit(lambda v, a: plan.traced(v, a))
    chex.assert_trees_all_close(fused(std, a), plan(std, a), rtol=1e-6, atol=1e-7)
    x = jnp.ones((2, 8, 8, 1))
    step = jax.jit(lambda v, a, x: model.apply(plan.traced(v, a), x))
    np.testing.assert_allclose(step(std, a, x), model.apply(plan(std, a), x), rtol=1e-5, atol=1e-6)
    with pytest.raises(rws.IncompatibleSignatureError, match="another structure"):
        plan.traced({"params": std["params"]}, a)
