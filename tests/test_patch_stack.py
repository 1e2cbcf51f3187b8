"""PatchStack: record of applied signatures with exact removal in any order."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws


@pytest.fixture(scope="module")
def sigs(tiny_models):
    _, init, std, fog, snow = tiny_models
    return {
        "fog": rws.extract(init, std, fog, rws.first_k(2), name="fog"),
        "snow": rws.extract(init, std, snow, rws.first_k(3), name="snow"),
        "snow8": rws.quantize(rws.extract(init, std, snow, rws.first_k(1), name="snow8"), 8, per_channel=True),
        "fog4": rws.quantize(rws.extract(init, std, fog, rws.first_k(3), name="fog4"), 4),
    }


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def _bits_equal(a, b):
    chex.assert_trees_all_equal(_host(a), _host(b))  # exact: same dtype, same bits


ALPHAS = {"fog": 0.8, "snow": -0.45, "snow8": 1.3, "fog4": 0.35}


def test_apply_records_and_matches_patch(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    stack = rws.PatchStack.create(std)
    assert stack.applied == () and len(stack) == 0
    stack, v = stack.apply(std, sigs["fog"], 0.8)
    stack, v = stack.apply(v, sigs["snow"], -0.45, name="snowy")
    assert stack.names == ("fog", "snowy") and "fog" in stack and len(stack) == 2
    (n0, a0, f0), (n1, a1, f1) = stack.applied
    assert (n0, a1) == ("fog", np.float32(-0.45))
    assert f0 == rws.signature_fingerprint(sigs["fog"]) and len(f1) == 64
    _bits_equal(v, rws.patch(rws.patch(std, sigs["fog"], 0.8), sigs["snow"], -0.45))
    # untouched leaves are untouched objects
    assert v["params"]["head"]["kernel"] is std["params"]["head"]["kernel"]
    assert set(stack.touched_paths) == set(sigs["snow"].deltas)
    assert "fog" in repr(stack)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::5])
def test_remove_in_any_order_is_bit_exact(tiny_models, sigs, order):
    _, _, std, *_ = tiny_models
    names = list(sigs)
    stack = rws.PatchStack.create(std)
    v = std
    for n in names:
        stack, v = stack.apply(v, sigs[n], ALPHAS[n])
    removed = []
    for i in order:
        stack, v = stack.remove(v, names[i])
        removed.append(names[i])
        # equals applying the remaining ones from scratch, in their original order
        fresh_stack, fresh = rws.PatchStack.create(std), std
        for n in names:
            if n not in removed:
                fresh_stack, fresh = fresh_stack.apply(fresh, sigs[n], ALPHAS[n])
        _bits_equal(v, fresh)
        assert stack.applied == fresh_stack.applied
    _bits_equal(v, std)
    assert stack.applied == () and stack.touched_paths == ()


def test_clear_restores_originals_even_after_donation(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    model = jax.tree.map(jnp.copy, std)
    stack = rws.PatchStack.create(model)
    stack, v = stack.apply(model, sigs["snow"], 0.5, donate=True)
    stack, v = stack.apply(v, sigs["fog4"], 2.0, donate=True)
    stack, restored = stack.clear(v)
    _bits_equal(restored, std)
    assert len(stack) == 0
    # The stack's copies are not handed out: donating the restored model is safe.
    stack2 = rws.PatchStack.create(restored)
    stack2, v2 = stack2.apply(restored, sigs["snow"], 0.5, donate=True)
    stack2, back = stack2.remove(v2, "snow")
    _bits_equal(back, std)


def test_duplicate_refused_unless_allowed(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    stack, v = rws.PatchStack.create(std).apply(std, sigs["fog"], 1.0)
    with pytest.raises(rws.PatchStackError, match="already applied"):
        stack.apply(v, sigs["fog"], 0.5)
    with pytest.raises(rws.PatchStackError, match="already applied"):  # a renamed copy is the same content
        stack.apply(v, sigs["fog"].relabel(name="fog-copy"), 0.5)
    stack2, v2 = stack.apply(v, sigs["fog"], 0.5, allow_duplicate=True)
    assert stack2.names == ("fog", "fog#2")
    stack3, v3 = stack2.remove(v2, "fog")
    _bits_equal(v3, rws.patch(std, sigs["fog"], 0.5))
    with pytest.raises(rws.PatchStackError, match="named 'fog' is already"):
        stack.apply(v, sigs["snow"], name="fog")
    # the failed calls changed nothing
    assert stack.names == ("fog",)


def test_unknown_name_lists_applied(tiny_models, sigs):
    _, _, std, *_ = tiny_models
    stack, v = rws.PatchStack.create(std).apply(std, sigs["fog"], 1.0)
    with pytest.raises(rws.PatchStackError, match=r"no patch named 'rain'.*\['fog'\]"):
        stack.remove(v, "rain")
    with pytest.raises(rws.PatchStackError, match="none"):
        rws.PatchStack.create(std).remove(std, "fog")


def test_refusals_leave_model_and_stack_unchanged(tiny_models, sigs):
    model_def, _, std, *_ = tiny_models
    stack, v = rws.PatchStack.create(std).apply(std, sigs["fog"], 1.0)
    before = _host(v)
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), sigs["snow"])
    with pytest.raises(rws.NonFiniteError):
        stack.apply(v, bad, 1.0, donate=True)
    with pytest.raises(rws.NonFiniteError):
        stack.apply(v, sigs["snow"], float("inf"), donate=True)
    wide = type(model_def)(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(rws.PatchStackError, match="not the model"):
        stack.apply(wide, sigs["snow"])
    other_base = sigs["snow"].relabel(base_fingerprint="0" * 16)
    with pytest.raises(rws.IncompatibleSignatureError, match="fingerprint"):
        stack.apply(v, other_base, donate=True)
    _bits_equal(v, before)
    assert stack.names == ("fog",) and set(stack.touched_paths) == set(sigs["fog"].deltas)


def test_signature_fingerprint_content_and_roundtrip(tmp_path, sigs):
    fp = rws.signature_fingerprint(sigs["fog4"])
    assert fp == rws.signature_fingerprint(sigs["fog4"].relabel(name="x", severity=3))
    assert fp != rws.signature_fingerprint(sigs["fog"])
    rws.save_signature(tmp_path / "f.rws", sigs["fog4"])
    assert rws.signature_fingerprint(rws.load_signature(tmp_path / "f.rws")) == fp
    nudged = jax.tree.map(lambda x: x.at[(0,) * x.ndim].add(1e-3), sigs["fog"])
    assert rws.signature_fingerprint(nudged) != rws.signature_fingerprint(sigs["fog"])
