import json
import os
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rws_jax as rws
from rws_jax import files
from rws_jax.files import signature_files


@pytest.fixture(scope="module")
def sig(tiny_models):
    _, init, std, fog, _ = tiny_models
    return rws.extract(init, std, fog, rws.first_k(3), name="fog", severity=5)


def _largest_data_file(path: Path) -> Path:
    files = [f for f in (path / "arrays").rglob("*") if f.is_file() and "ocdbt.process_0/d/" in str(f)]
    return max(files, key=lambda f: f.stat().st_size)


@pytest.fixture(scope="module")
def big_sig():
    """A signature large enough that its array bytes dominate the file."""
    x = jax.random.normal(jax.random.key(0), (3, 3, 32, 64))
    return rws.Signature(
        deltas={"params/conv_0/kernel": x},
        meta=rws.SignatureMeta(base_fingerprint="0" * 16, leaf_specs=(("params/conv_0/kernel", x.shape, "float32"),), name="big"),
    )


def test_roundtrip_float_is_exact(tmp_path, sig, tiny_models):
    _, _, std, *_ = tiny_models
    rws.save_signature(tmp_path / "fog.rws", sig)
    back = rws.load_signature(tmp_path / "fog.rws", like=std)
    chex.assert_trees_all_equal(back.deltas, sig.deltas)
    assert back.meta == sig.meta and back.meta.leaf_specs == sig.meta.leaf_specs
    assert back.name == "fog" and back.meta.severity == 5 and json.loads(back.meta.selection)["k"] == 3
    info = rws.read_signature_info(tmp_path / "fog.rws")
    assert info["num_tensors"] == len(sig.deltas) and info["format_version"] == files.FORMAT_VERSION == 2


@pytest.mark.parametrize("bits,per_channel,scheme", [(8, False, "asymmetric"), (4, True, "symmetric"), (2, False, "symmetric")])
def test_roundtrip_quantized(tmp_path, sig, bits, per_channel, scheme):
    q = rws.quantize(sig, bits, per_channel=per_channel, scheme=scheme)
    rws.save_signature(tmp_path / "q.rws", q)
    back = rws.load_signature(tmp_path / "q.rws")
    chex.assert_trees_all_equal(back.deltas, q.deltas)
    assert back.meta.quantization == q.meta.quantization


@pytest.mark.parametrize("per_channel", [False, True])
def test_roundtrip_one_bit(tmp_path, sig, tiny_models, per_channel):
    _, _, std, *_ = tiny_models
    q = rws.quantize(sig, 1, per_channel=per_channel)
    p = rws.save_signature(tmp_path / "q1.rws", q)
    back = rws.load_signature(p, like=std)
    chex.assert_trees_all_equal(back.deltas, q.deltas)
    assert back.meta == q.meta and back.meta.quantization == f"sign/{'per_channel' if per_channel else 'per_tensor'}/1"
    assert rws.signature_fingerprint(back) == rws.signature_fingerprint(q)
    chex.assert_trees_all_equal(rws.patch(std, back, 0.6), rws.patch(std, q, 0.6))
    meta = json.loads((p / "meta" / "metadata").read_text())
    assert meta["format_version"] == 2
    # on disk every tensor's codes take ceil(n/8) bytes: 8 signs a byte
    arrays = signature_files.read_declared_arrays(p, meta)
    for t in meta["tensors"]:
        n = int(np.prod(t["shape"]))
        assert t["quant"] == {"bits": 1, "scheme": "sign", "axis": q.deltas[t["path"]].axis}
        assert t["arrays"]["data"] == {"shape": [-(-n // 8)], "dtype": "uint8"}
        assert arrays[f"{t['key']}_data"].shape == (-(-n // 8),)


def test_one_bit_file_codes_are_an_eighth_of_eight_bit(tmp_path):
    # Uniform values, so that every bit width's codes are near-incompressible: with normal
    # values the 2-bit codes (mostly the two middle levels) compress to about the 1-bit
    # file's size, and OCDBT's layout moves a file's size by a few hundred bytes between runs.
    x = jax.random.uniform(jax.random.key(0), (3, 3, 32, 64), minval=-1.0, maxval=1.0)
    sig = rws.Signature(deltas={"params/conv_0/kernel": x}, meta=rws.SignatureMeta(
        base_fingerprint="0" * 16, leaf_specs=(("params/conv_0/kernel", x.shape, "float32"),), name="uniform"))
    sizes, code_bytes = {}, {}
    for bits in (8, 2, 1):
        p = rws.save_signature(tmp_path / f"s{bits}", rws.quantize(sig, bits))
        sizes[bits] = rws.bytes_on_disk(p)
        meta = json.loads((p / "meta" / "metadata").read_text())
        code_bytes[bits] = sum(int(np.prod(t["arrays"]["data"]["shape"])) for t in meta["tensors"])
    assert code_bytes[1] * 8 == code_bytes[8] == 3 * 3 * 32 * 64
    assert sizes[8] > sizes[2] > sizes[1]
    # on top of the codes each file has a few KB of fixed overhead (orbax metadata, JSON),
    # and the 8-bit codes compress a little: the whole 8-bit file is still over 3x the 1-bit one
    assert sizes[8] > 3 * sizes[1]


def test_storage_ratio_grows_with_quantization(tmp_path):
    def model(seed):
        ks = jax.random.split(jax.random.key(seed), 4)
        return {"params": {f"conv_{i}": {"kernel": jax.random.normal(ks[i], (3, 3, 32, 32))} for i in range(4)}}

    init, std, rob = model(0), model(1), model(2)
    s = rws.extract(init, std, rob, rws.first_k(1))
    rws.save_variables(tmp_path / "model", std)
    sizes = {}
    for bits in (None, 8, 4, 2):
        path = tmp_path / f"s{bits}"
        rws.save_signature(path, s if bits is None else rws.quantize(s, bits))
        sizes[bits] = rws.bytes_on_disk(path)
    assert sizes[None] > sizes[8] > sizes[4] > sizes[2]
    ratio_fp32 = rws.storage_ratio(tmp_path / "sNone", tmp_path / "model")
    assert 2.5 < ratio_fp32 < 4.5  # 1 of 4 equal layers kept, plus per-file overhead
    assert rws.storage_ratio(tmp_path / "s8", tmp_path / "model") > 2.5 * ratio_fp32


def test_model_roundtrip(tmp_path, tiny_models):
    _, _, std, *_ = tiny_models
    rws.save_variables(tmp_path / "m", std)
    chex.assert_trees_all_equal(rws.load_variables(tmp_path / "m", like=std), std)


def test_no_silent_overwrite_and_atomic_replace(tmp_path, sig):
    p = tmp_path / "fog.rws"
    rws.save_signature(p, sig)
    with pytest.raises(FileExistsError):
        rws.save_signature(p, sig)
    doubled = rws.scale(sig, 2.0)
    rws.save_signature(p, doubled, overwrite=True)
    chex.assert_trees_all_equal(rws.load_signature(p).deltas, doubled.deltas)
    assert sorted(os.listdir(tmp_path)) == ["fog.rws"]  # no temporaries left behind


def test_nan_is_refused_on_save_and_on_load(tmp_path, sig):
    bad = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), sig)
    with pytest.raises(rws.NonFiniteError):
        rws.save_signature(tmp_path / "bad.rws", bad)
    assert not (tmp_path / "bad.rws").exists()
    rws.save_signature(tmp_path / "bad.rws", bad, check_values=False)
    with pytest.raises(rws.NonFiniteError, match="NaN"):
        rws.load_signature(tmp_path / "bad.rws")


def test_missing_and_not_a_signature(tmp_path):
    with pytest.raises(rws.SignatureFileError, match="no such signature file"):
        rws.load_signature(tmp_path / "nope.rws")
    (tmp_path / "dir").mkdir()
    with pytest.raises(rws.SignatureFileError, match="meta"):
        rws.load_signature(tmp_path / "dir")


def test_bit_flip_is_detected(tmp_path, big_sig):
    p = rws.save_signature(tmp_path / "fog.rws", big_sig)
    f = _largest_data_file(p)
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    f.write_bytes(bytes(raw))
    with pytest.raises(rws.SignatureFileError, match="checksum|corrupt|truncated"):
        rws.load_signature(p)


def test_truncated_file_is_detected(tmp_path, big_sig):
    p = rws.save_signature(tmp_path / "fog.rws", big_sig)
    f = _largest_data_file(p)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with pytest.raises(rws.SignatureFileError, match="truncated|corrupt|checksum"):
        rws.load_signature(p)
    (p / "meta" / "metadata").write_text('{"format": "rws_jax.sig')
    with pytest.raises(rws.SignatureFileError, match="JSON"):
        rws.load_signature(p)


def _edit_meta(p: Path, fn):
    m = p / "meta" / "metadata"
    meta = json.loads(m.read_text())
    fn(meta)
    m.write_text(json.dumps(meta))


def test_lying_metadata(tmp_path, sig):
    p = rws.save_signature(tmp_path / "fog.rws", sig)
    _edit_meta(p, lambda m: m["tensors"][0]["arrays"]["value"].__setitem__("shape", [7]))
    with pytest.raises(rws.SignatureFileError, match="disagree"):
        rws.load_signature(p)


def test_relabelled_file_fails_checksum(tmp_path, sig):
    p = rws.save_signature(tmp_path / "fog.rws", sig)
    _edit_meta(p, lambda m: m.__setitem__("name", "snow"))
    with pytest.raises(rws.SignatureFileError, match="checksum"):
        rws.load_signature(p)


def test_newer_format_unknown_scheme_huge_size(tmp_path, sig):
    p = rws.save_signature(tmp_path / "a.rws", rws.quantize(sig, 8))
    _edit_meta(p, lambda m: m.__setitem__("format_version", 99))
    with pytest.raises(rws.SignatureFileError, match="newer"):
        rws.load_signature(p)
    p = rws.save_signature(tmp_path / "b.rws", rws.quantize(sig, 8))
    _edit_meta(p, lambda m: m["tensors"][0]["quant"].__setitem__("scheme", "log"))
    with pytest.raises(rws.SignatureFileError, match="unknown quantization scheme 'log'"):
        rws.load_signature(p)
    p = rws.save_signature(tmp_path / "c.rws", sig)
    _edit_meta(p, lambda m: m["tensors"][0]["arrays"]["value"].__setitem__("shape", [1 << 20, 1 << 20]))
    with pytest.raises(rws.SignatureFileError, match="GiB"):
        rws.load_signature(p)


def test_load_against_another_model(tmp_path, sig, tiny_models):
    model, *_ = tiny_models
    p = rws.save_signature(tmp_path / "fog.rws", sig)
    wide = type(model)(width=8).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(rws.IncompatibleSignatureError, match="shape"):
        rws.load_signature(p, like=wide)


def test_relative_paths(tmp_path, sig, tiny_models, monkeypatch):
    _, _, std, *_ = tiny_models
    monkeypatch.chdir(tmp_path)
    rws.save_signature("rel/fog.rws", sig)
    chex.assert_trees_all_equal(rws.load_signature("rel/fog.rws").deltas, sig.deltas)
    assert rws.read_signature_info("rel/fog.rws")["name"] == "fog"
    rws.save_variables("rel/model", std)
    chex.assert_trees_all_equal(rws.load_variables("rel/model", like=std), std)


# ------------------------------------------------------------- files of an older format version
V1_DIR = Path(__file__).parent / "data" / "signature_v1"


def test_format_v1_fixture_still_loads(tmp_path):
    """Files written by the format-1 writer (tests/data/make_signature_v1.py, committed
    before the format changed) still load: checksum verified, values as written."""
    from tests.data.make_signature_v1 import tiny_delta

    want = tiny_delta()
    expected = json.loads((V1_DIR / "expected.json").read_text())
    f = rws.load_signature(V1_DIR / "float.rws")  # verify=True: the checksum is checked
    assert rws.read_signature_info(V1_DIR / "float.rws")["format_version"] == 1
    assert f.name == "fog" and f.meta.severity == 3 and f.meta.base_fingerprint == "0123456789abcdef"
    assert set(f.deltas) == set(want)
    for p, v in want.items():
        np.testing.assert_array_equal(np.asarray(f.deltas[p]), v)
    for name, quant in (("q8_asymmetric_per_channel.rws", "asymmetric/per_channel/8"),
                        ("q4_symmetric.rws", "symmetric/per_tensor/4")):
        q = rws.load_signature(V1_DIR / name)
        assert q.meta.quantization == quant and q.is_quantized
        deq = rws.dequantize(q).deltas
        for p, v in want.items():
            np.testing.assert_array_equal(np.asarray(deq[p]).reshape(-1), np.asarray(expected[name][p], np.float32))
            qt = q.deltas[p]
            assert bool(np.all(np.abs(np.asarray(deq[p]) - v) <= np.asarray(qt.scale) / 2 * (1 + 1e-5) + 1e-7))
        # a loaded old file saves again (in the current format) and round-trips
        back = rws.load_signature(rws.save_signature(tmp_path / name, q))
        chex.assert_trees_all_equal(rws.dequantize(back).deltas, deq)
    # the checksum really is checked on these files: a relabelled copy is refused
    import shutil

    shutil.copytree(V1_DIR / "float.rws", tmp_path / "relabelled.rws")
    _edit_meta(tmp_path / "relabelled.rws", lambda m: m.__setitem__("name", "snow"))
    with pytest.raises(rws.SignatureFileError, match="checksum"):
        rws.load_signature(tmp_path / "relabelled.rws")


# ------------------------------------------------------- checked directories, refusals


def test_checked_dir_round_trip_and_refusals(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float16)}
    p = files.write_checked_dir(tmp_path / "x", arrays, {"format": "test/1", "note": "hi"})
    meta, back = files.read_checked_dir(p, format="test/1", what="test")
    assert meta["note"] == "hi" and meta["checksum"] == files.checksum(meta, arrays) and list(meta)[-1] == "checksum"
    assert sorted(back) == ["b", "w"] and all(back[k].dtype == arrays[k].dtype for k in arrays)
    np.testing.assert_array_equal(back["w"], arrays["w"])
    with pytest.raises(rws.OutputExistsError) as e:  # also a FileExistsError, and a library error (a refusal)
        files.write_checked_dir(p, arrays, {"format": "test/1"})
    assert isinstance(e.value, FileExistsError) and isinstance(e.value, rws.RWSError)
    with pytest.raises(rws.SignatureFileError, match="format 'test/1' is not 'other/1'"):
        files.read_checked_dir(p, format="other/1", what="other")
    with pytest.raises(rws.SignatureFileError, match="no such test file"):
        files.read_checked_dir(tmp_path / "nope", format="test/1", what="test")
    meta_file = p / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text().replace('"hi"', '"ho"'))
    with pytest.raises(rws.SignatureFileError, match="checksum mismatch"):
        files.read_checked_dir(p, format="test/1", what="test")


def test_damaged_arrays_are_one_short_error(tmp_path, big_sig, tiny_models):
    """A truncated data file: a SignatureFileError naming the file in one short line (the
    tensorstore spec cut), from the signature, model and plain array readers alike."""
    _, _, std, *_ = tiny_models
    p = rws.save_signature(tmp_path / "fog.rws", big_sig)
    m = rws.save_variables(tmp_path / "model", std)
    for d in (p, m):
        for f in (d / "arrays").rglob("d/*"):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    for read, path, exc in ((rws.load_signature, p, rws.SignatureFileError),
                            (lambda q: rws.load_variables(q, like=std), m, rws.SignatureFileError),
                            (rws.load_model, m, rws.ModelFileError)):
        with pytest.raises(exc) as e:
            read(path)
        text = str(e.value)
        assert text.startswith(f"{path}: cannot read the arrays (truncated or corrupt file: "), text
        assert "\n" not in text and len(text) < 300 and "tensorstore_spec" not in text, text


def test_wrong_type_fields_and_unchecked_info(tmp_path, sig):
    p = rws.save_signature(tmp_path / "fog.rws", sig)
    meta = json.loads((p / "meta" / "metadata").read_text())
    meta["severity"] = "high"
    meta["checksum"] = files.checksum(meta, files.read_arrays(p / "arrays"))
    (p / "meta" / "metadata").write_text(json.dumps(meta))
    for read in (rws.load_signature, rws.read_signature_info):
        with pytest.raises(rws.SignatureFileError, match="metadata field 'severity' must be an integer or null, got str"):
            read(p)
    info = rws.read_signature_info(p, checked=False)  # for display: as stored
    assert info["severity"] == "high" and info["name"] == "fog" and info["num_tensors"] == len(sig.deltas)


def test_missing_variables_and_unwritable_output(tmp_path, sig, tiny_models):
    _, _, std, *_ = tiny_models
    with pytest.raises(rws.SignatureFileError, match="no such variables file"):
        rws.load_variables(tmp_path / "nope", like=std)
    (tmp_path / "file").write_text("x")  # a file where a parent folder should be
    with pytest.raises(rws.FileWriteError, match="cannot write it"):
        rws.save_signature(tmp_path / "file" / "fog.rws", sig)
