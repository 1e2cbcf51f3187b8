"""Hostile and broken inputs: every failure is a clear rws_jax error naming the problem,
and the user's model and files are left exactly as they were. Loading runs no code from
the file (no pickle). Complements tests/test_storage.py and tests/test_algebra.py."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax import files
from rws_jax.files import signature_format

PKG = Path(rws.__file__).parent


# ----------------------------------------------------------------------------- helpers
def dir_digest(path: Path) -> str:
    """sha256 over every file's relative path and bytes under ``path``."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*")):
        h.update(str(f.relative_to(path)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def host(tree):
    return jax.tree.map(np.asarray, tree)


def write_crafted(path: Path, meta: dict, arrays: dict) -> Path:
    """A file as a stranger could write it: any metadata, any arrays, and (since a
    checksum is no signature) a checksum that matches them."""
    return files.write_checked_dir(path, arrays, meta)


def parts_of(sig):
    entries, arrays = signature_format.tensor_entries(sig)
    return signature_format.signature_meta(sig, entries), arrays


@pytest.fixture(scope="module")
def sig(tiny_models):
    _, init, std, fog, _ = tiny_models
    return rws.extract(init, std, fog, rws.first_k(3), name="fog")


@pytest.fixture(scope="module")
def small_sig():
    x = jnp.arange(16, dtype=jnp.float32).reshape(4, 4) / 10
    return rws.Signature(
        deltas={"params/conv_0/kernel": x},
        meta=rws.SignatureMeta(base_fingerprint="0" * 16, leaf_specs=(("params/conv_0/kernel", (4, 4), "float32"),), name="s"),
    )


def expect_load_error(path, exc, match, **kw):
    before = dir_digest(path)
    with pytest.raises(exc, match=match):
        rws.load_signature(path, **kw)
    assert dir_digest(path) == before, "a failing load modified the file"


# ----------------------------------------------------------------------------- models
def with_leaf(tree, path, fn):
    from rws_jax import tree_paths

    flat, rebuild = tree_paths.flatten(tree)
    return rebuild({path: fn(flat[path])})


def bad_models(tiny_models):
    model_def, _, std, *_ = tiny_models
    k = "params/conv_0/kernel"
    return {
        "dtype": (with_leaf(std, k, lambda x: x.astype(jnp.bfloat16)), rws.IncompatibleSignatureError, "dtype"),
        "shape": (type(model_def)(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))),
                  rws.IncompatibleSignatureError, "shape"),
        "structure": ({"params": {k2: v for k2, v in std["params"].items() if k2 != "conv_1"}},
                      rws.IncompatibleSignatureError, "conv_1"),
        "renamed": ({"weights": std["params"]}, rws.IncompatibleSignatureError, "does not have"),
        "base": (type(model_def)(num_classes=3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))),
                 rws.IncompatibleSignatureError, "fingerprint"),
    }


@pytest.mark.parametrize("case", ["dtype", "shape", "structure", "renamed", "base"])
@pytest.mark.parametrize("donate", [False, True])
def test_mismatched_model_refused_and_unchanged(tiny_models, sig, case, donate):
    model, exc, match = bad_models(tiny_models)[case]
    model = jax.tree.map(jnp.copy, model)
    before = host(model)
    with pytest.raises(exc, match=match):
        rws.patch(model, sig, 1.0, donate=donate)
    with pytest.raises(exc, match=match):
        rws.patch(model, rws.quantize(sig, 4), 1.0, donate=donate)
    chex.assert_trees_all_equal(host(model), before)  # also: no buffer was donated
    jax.tree.map(lambda x: x.block_until_ready(), model)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("donate", [False, True])
def test_non_finite_signature_or_alpha_refused(tiny_models, sig, value, donate):
    _, _, std, *_ = tiny_models
    model = jax.tree.map(jnp.copy, std)
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(value), sig)
    with pytest.raises(rws.NonFiniteError, match="NaN/inf"):
        rws.patch(model, bad, donate=donate)
    q = rws.quantize(sig, 8)
    bad_q = q.replace(deltas={p: (v.replace(scale=jnp.full_like(v.scale, value)) if i == 0 else v)
                              for i, (p, v) in enumerate(sorted(q.deltas.items()))})
    with pytest.raises(rws.NonFiniteError):
        rws.patch(model, bad_q, donate=donate)
    with pytest.raises(rws.NonFiniteError, match="finite"):
        rws.patch(model, sig, value, donate=donate)
    chex.assert_trees_all_equal(host(model), host(std))


def test_extract_refuses_non_finite_and_mismatched_models(tiny_models):
    _, init, std, fog, _ = tiny_models
    k = "params/conv_0/kernel"
    with pytest.raises(rws.NonFiniteError, match="NaN/inf"):
        rws.extract(init, std, with_leaf(fog, k, lambda x: x.at[0, 0, 0, 0].set(jnp.inf)), rws.first_k(2))
    with pytest.raises(rws.IncompatibleSignatureError, match="robust model leaf 'params/conv_0/kernel'"):
        rws.extract(init, std, with_leaf(fog, k, lambda x: x.astype(jnp.float16)), rws.first_k(2))


def test_signature_inconsistent_with_its_own_specs(tiny_models, sig):
    _, _, std, *_ = tiny_models
    p = "params/conv_0/kernel"
    wrong = sig.replace(deltas={**sig.deltas, p: sig.deltas[p].reshape(-1)})
    with pytest.raises(rws.IncompatibleSignatureError, match="delta of shape"):
        rws.patch(std, wrong, donate=True)


# ----------------------------------------------------------------------------- files
def test_failing_loads_leave_file_unchanged(tmp_path, sig, tiny_models):
    model_def, *_ = tiny_models
    p = rws.save_signature(tmp_path / "fog.rws", sig)
    wide = type(model_def)(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    expect_load_error(p, rws.IncompatibleSignatureError, "shape", like=wide)
    other = type(model_def)(num_classes=3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    expect_load_error(p, rws.IncompatibleSignatureError, "fingerprint", like=other)
    rws.load_signature(p, like=other, check_base=False)  # transfer is allowed explicitly


def test_overwrite_refused_keeps_file(tmp_path, sig):
    p = rws.save_signature(tmp_path / "fog.rws", sig)
    before = dir_digest(p)
    with pytest.raises(FileExistsError):
        rws.save_signature(p, rws.scale(sig, 2.0))
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), sig)
    with pytest.raises(rws.NonFiniteError):
        rws.save_signature(p, bad, overwrite=True)
    assert dir_digest(p) == before


def test_truncated_and_flipped_files_unchanged_after_load(tmp_path, small_sig):
    p = rws.save_signature(tmp_path / "a.rws", small_sig)
    meta_file = p / "meta" / "metadata"
    meta_file.write_bytes(meta_file.read_bytes()[:-7])
    expect_load_error(p, rws.SignatureFileError, "JSON")
    p = rws.save_signature(tmp_path / "b.rws", small_sig)
    data = [f for f in (p / "arrays").rglob("*") if f.is_file() and "/d/" in str(f)]
    for f in data:
        f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)])
    expect_load_error(p, rws.SignatureFileError, "truncated|corrupt|checksum")
    p = rws.save_signature(tmp_path / "c.rws", small_sig)
    for f in (p / "arrays").rglob("*"):
        if f.is_file():
            f.unlink()
    expect_load_error(p, rws.SignatureFileError, "truncated|corrupt|array metadata|holds")


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.__setitem__("format_version", 3), "newer rws_jax .*format version 3.*up to 2"),
        (lambda m: m.__setitem__("format_version", 0), "format_version"),
        (lambda m: m.__setitem__("format_version", True), "format_version"),
        (lambda m: m.__setitem__("format_version", "1"), "format_version"),
        (lambda m: m.__setitem__("format", "something.else"), "does not describe"),
        (lambda m: m.__setitem__("tensors", []), "no tensors"),
        (lambda m: m["tensors"][0].__setitem__("dtype", "object"), "unsupported dtype 'object'"),
        (lambda m: m["tensors"][0]["arrays"]["value"].__setitem__("dtype", "object"), "unsupported dtype 'object'"),
        (lambda m: m["tensors"][0].__setitem__("shape", [2**40, 2**30]), "GiB limit"),
        (lambda m: m["tensors"][0]["arrays"]["value"].__setitem__("shape", [2**31, 2**31]), "GiB limit"),
        (lambda m: m["tensors"][0].__setitem__("shape", [-1, 4]), "invalid shape"),
        (lambda m: m["tensors"][0].__setitem__("shape", "4,4"), "invalid shape"),
        (lambda m: m["tensors"][0].__setitem__("key", "../../etc/passwd"), "bad path or key"),
        (lambda m: m["tensors"][0].__setitem__("quant", {"bits": 8, "scheme": "log", "axis": None}), "unknown quantization scheme 'log'"),
        (lambda m: m["tensors"][0].__setitem__("quant", {"bits": 3, "scheme": "symmetric", "axis": None}), "bit width 3"),
        (lambda m: m["tensors"][0].__setitem__("quant", "int8"), "malformed quantization"),
        (lambda m: m["tensors"][0]["arrays"].__setitem__("extra", {"shape": [1], "dtype": "uint8"}), "must hold arrays"),
        (lambda m: m["tensors"][0]["arrays"]["value"].__setitem__("shape", [16]), "disagree"),
        (lambda m: m["tensors"][0].__setitem__("shape", [2, 8]), r"metadata says float32\[2, 8\]"),
        (lambda m: m["tensors"][0].__setitem__("dtype", "float16"), r"metadata says float16"),
        (lambda m: m.__setitem__("leaf_specs", [["params/other/kernel", [4, 4], "float32"]]), "different leaves"),
    ],
)
def test_lying_metadata_with_valid_checksum(tmp_path, small_sig, edit, match):
    """The checksum cannot be trusted (a stranger recomputes it): every lie is caught
    by a check of its own, with a message naming it, and the file stays as it was."""
    meta, arrays = parts_of(small_sig)
    edit(meta)
    p = write_crafted(tmp_path / "x.rws", meta, arrays)
    expect_load_error(p, rws.SignatureFileError, match)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        # 4-bit codes for 16 elements need 8 bytes: give it 5
        (lambda meta, arrays: arrays.__setitem__("t00000_data", np.zeros(5, np.uint8)), rws.SignatureFileError, "code bytes"),
        # per-tensor quantization with a per-channel-sized scale
        (lambda meta, arrays: (arrays.__setitem__("t00000_scale", np.ones(4, np.float32)),
                               arrays.__setitem__("t00000_offset", np.ones(4, np.float32))), rws.SignatureFileError, "scale/offset"),
        (lambda meta, arrays: meta["tensors"][0]["quant"].__setitem__("axis", 7), rws.SignatureFileError, "channel axis 7"),
        (lambda meta, arrays: arrays.__setitem__("t00000_scale", np.array(np.inf, np.float32)), rws.NonFiniteError, "NaN/inf"),
        (lambda meta, arrays: arrays.__setitem__("t00000_data", np.zeros(8, np.float32)), rws.SignatureFileError, "code bytes|disagree"),
    ],
)
def test_crafted_quantized_files(tmp_path, small_sig, make, exc, match):
    expect_crafted_error(tmp_path / "q.rws", rws.quantize(small_sig, 4), make, exc, match)


def expect_crafted_error(path, q, make, exc, match):
    """Writes ``q`` with ``make(meta, arrays)`` applied (declared array shapes kept honest:
    only the content lies) and expects loading it to raise ``exc`` matching ``match``."""
    meta, arrays = parts_of(q)
    make(meta, arrays)
    for t in meta["tensors"]:
        for part, a in t["arrays"].items():
            arr = np.asarray(arrays[f"{t['key']}_{part}"])
            a.update(shape=list(arr.shape), dtype=str(arr.dtype))
    expect_load_error(write_crafted(path, meta, arrays), exc, match)


def _set_quant(meta, **kw):
    for t in meta["tensors"]:
        t["quant"].update(kw)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        # 1 bit only with 'sign', 'sign' only with 1 bit
        (lambda meta, arrays: _set_quant(meta, scheme="asymmetric"), rws.SignatureFileError,
         "1-bit 'asymmetric'.*only with the 'sign' scheme"),
        (lambda meta, arrays: _set_quant(meta, bits=8), rws.SignatureFileError, "8-bit 'sign'"),
        (lambda meta, arrays: _set_quant(meta, bits=True), rws.SignatureFileError, "bit width True"),
        # a format-1 file cannot hold a 1-bit tensor; a newer format than ours is refused
        (lambda meta, arrays: meta.__setitem__("format_version", 1), rws.SignatureFileError,
         "'sign' scheme, which format version 1 does not have"),
        (lambda meta, arrays: meta.__setitem__("format_version", 3), rws.SignatureFileError, "newer rws_jax"),
        # 16 signs need 2 bytes: give it 3, or 16 (one code a byte is only the in-memory layout)
        (lambda meta, arrays: arrays.__setitem__("t00000_data", np.zeros(3, np.uint8)), rws.SignatureFileError,
         r"3 code bytes for \[4, 4\] at 1 bit \(want 2\)"),
        (lambda meta, arrays: arrays.__setitem__("t00000_data", np.zeros(16, np.uint8)), rws.SignatureFileError,
         "16 code bytes"),
        # per-tensor with a per-channel-sized scale, per-channel with a per-tensor one
        (lambda meta, arrays: (arrays.__setitem__("t00000_scale", np.ones(4, np.float32)),
                               arrays.__setitem__("t00000_offset", np.zeros(4, np.float32))),
         rws.SignatureFileError, "scale/offset"),
        (lambda meta, arrays: _set_quant(meta, axis=1), rws.SignatureFileError, r"want float32\[1, 4\]"),
        (lambda meta, arrays: arrays.__setitem__("t00000_scale", np.array(np.nan, np.float32)), rws.NonFiniteError,
         "NaN/inf"),
        (lambda meta, arrays: arrays.__setitem__("t00000_scale", np.array(-np.inf, np.float32)), rws.NonFiniteError,
         "NaN/inf"),
        # finite scales that overflow the tensor's dtype (with the factor-2 margin)
        (lambda meta, arrays: arrays.__setitem__("t00000_scale", np.array(3e38, np.float32)), rws.NonFiniteError,
         "overflowing float32"),
        (lambda meta, arrays: (meta["tensors"][0].__setitem__("dtype", "float16"),
                               arrays.__setitem__("t00000_scale", np.array(6e4, np.float32))),
         rws.NonFiniteError, "overflowing float16"),
        # scale = mean|x| is never negative, offset always 0
        (lambda meta, arrays: arrays.__setitem__("t00000_scale", np.array(-0.5, np.float32)), rws.SignatureFileError,
         "scale = mean"),
        (lambda meta, arrays: arrays.__setitem__("t00000_offset", np.array(0.25, np.float32)), rws.SignatureFileError,
         "offset 0"),
    ],
)
def test_crafted_one_bit_files(tmp_path, small_sig, make, exc, match):
    expect_crafted_error(tmp_path / "q1.rws", rws.quantize(small_sig, 1), make, exc, match)


def test_crafted_one_bit_file_that_is_honest_loads(tmp_path, small_sig):
    """The crafting above changes only what it says: untouched, the same file loads,
    also with a half-float dtype and a scale just inside its range."""
    q = rws.quantize(small_sig, 1)
    meta, arrays = parts_of(q)
    p = write_crafted(tmp_path / "ok.rws", meta, arrays)
    chex.assert_trees_all_equal(rws.load_signature(p).deltas, q.deltas)
    meta["tensors"][0]["dtype"] = "float16"
    meta["leaf_specs"] = [[k, s, "float16"] for k, s, _ in meta["leaf_specs"]]
    arrays["t00000_scale"] = np.array(3e4, np.float32)
    back = rws.load_signature(write_crafted(tmp_path / "f16.rws", meta, arrays))
    out = rws.dequantize(back).deltas["params/conv_0/kernel"]
    assert out.dtype == jnp.float16 and bool(jnp.all(jnp.abs(out) == 3e4))


def test_non_finite_values_in_file(tmp_path, small_sig):
    for v in (np.nan, np.inf):
        bad = small_sig.replace(deltas={k: x.at[1, 1].set(v) for k, x in small_sig.deltas.items()})
        p = rws.save_signature(tmp_path / f"{v}.rws", bad, check_values=False)
        expect_load_error(p, rws.NonFiniteError, "NaN/inf")


# ----------------------------------------------------------------------------- no code execution
def test_no_pickle_in_the_loading_code():
    for mod in ("files/signature_files.py", "files/signature_format.py", "files/checked_dirs.py",
                "files/array_reading.py", "files/atomic_dirs.py", "files/variables_files.py", "files/sizes.py",
                "signature.py", "quantization.py", "algebra.py", "patch_stack.py"):
        src = (PKG / mod).read_text()
        assert not re.search(r"\b(pickle|cloudpickle|dill|marshal|shelve|joblib)\b", src), mod
        assert "allow_pickle" not in src and "np.load(" not in src and "eval(" not in src, mod


def test_loading_never_unpickles(tmp_path, sig, monkeypatch):
    paths = [rws.save_signature(tmp_path / "f.rws", sig), rws.save_signature(tmp_path / "q.rws", rws.quantize(sig, 2))]

    def boom(*a, **k):
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    for p in paths:
        rws.load_signature(p)
        rws.read_signature_info(p)


class _Bomb:
    """Unpickling this creates a marker file (it would run any code the same way)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payloads_in_a_file_are_never_run(tmp_path, small_sig):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Bomb(str(marker)))
    # an object array as numpy would pickle it, next to a real signature's arrays
    p = rws.save_signature(tmp_path / "a.rws", small_sig)
    (p / "arrays" / "t00000_value.npy").write_bytes(payload)
    (p / "arrays" / "t00000_value.pkl").write_bytes(payload)
    rws.load_signature(p)  # extra files are ignored: never opened
    # metadata and arrays replaced by pickles: refused, nothing run
    q = tmp_path / "b.rws"
    (q / "meta").mkdir(parents=True)
    (q / "arrays").mkdir()
    (q / "meta" / "metadata").write_bytes(payload)
    (q / "arrays" / "t00000_value").write_bytes(payload)
    expect_load_error(q, rws.SignatureFileError, "JSON|not describe")
    assert not marker.exists()
    # orbax (tensorstore) refuses to even write object arrays, so no signature file
    # can hold one; and a file claiming one is refused from its metadata (see
    # test_lying_metadata_with_valid_checksum, dtype 'object').
    with pytest.raises(ValueError, match="object"):
        write_crafted(tmp_path / "c.rws", {"format": "rws_jax.signature"}, {"t00000_value": np.array([1, "a"], dtype=object)})
