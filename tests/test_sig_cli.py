"""``rws-jax sig ...``: extract/info/verify/compose/patch on orbax and msgpack checkpoints."""

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import rws_jax as rws
from rws_jax.cli import signature_commands as sig_cli
from rws_jax.cli import main
from rws_jax.selection import parse_selection


class TwoConv(nn.Module):
    """conv_b -> conv_a -> bn -> head: unit names that do not sort into forward order."""

    width: int = 4
    num_classes: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3), name="conv_b")(x))
        x = nn.relu(nn.Conv(self.width, (3, 3), name="conv_a")(x))
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        return nn.Dense(self.num_classes, name="head")(x.mean(axis=(1, 2)))


def _variables(width=4, num_classes=3, seed=0, in_ch=2):
    """TwoConv's variables, built in numpy (no jit compiles) in module creation order."""
    rng = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(rng.normal(0.0, 0.3, shape).astype(np.float32))  # noqa: E731
    return {
        "params": {
            "conv_b": {"kernel": f(3, 3, in_ch, width), "bias": f(width)},
            "conv_a": {"kernel": f(3, 3, width, width), "bias": f(width)},
            "bn": {"scale": f(width), "bias": f(width)},
            "head": {"kernel": f(width, num_classes), "bias": f(num_classes)},
        },
        "batch_stats": {"bn": {"mean": f(width), "var": jnp.asarray(np.ones(width, np.float32))}},
    }


def _perturb(variables, seed, scale=0.05):
    rng = np.random.default_rng(1000 + seed)
    if isinstance(variables, dict):
        return {k: _perturb(v, rng.integers(1 << 30), scale) for k, v in variables.items()}
    noise = rng.normal(0.0, scale, variables.shape).astype(np.float32)
    return jnp.asarray(np.asarray(variables) + noise)


def test_tree_is_the_flax_model():
    shapes = jax.eval_shape(TwoConv().init, jax.random.key(0), jnp.zeros((1, 6, 6, 2)))
    assert rws.fingerprint(shapes) == rws.fingerprint(_variables())


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Model trees and their checkpoint paths: orbax dirs (``*_dir``) and msgpack files (``*_mp``)."""
    root = tmp_path_factory.mktemp("sigcli")
    init = _variables()
    trees = {"init": init, "std": _perturb(init, 1), "fog": _perturb(init, 2), "snow": _perturb(init, 3),
             "other": _variables(width=5), "head5": _variables(num_classes=5)}
    paths = {}
    for name, tree in trees.items():
        paths[f"{name}_dir"] = str(rws.save_variables(root / f"{name}.vars", tree))
        mp = root / f"{name}.bin"  # content decides the format, not the extension
        mp.write_bytes(serialization.to_bytes(tree))
        paths[f"{name}_mp"] = str(mp)
    return trees, paths, root


def _run(capsys, *argv):
    rc = main(["sig", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(capsys, out_path, *argv, match=None):
    before = Path(out_path).exists() if out_path else False
    rc, out, err = _run(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("rws-jax: error: "), err
    assert "Traceback" not in err
    if match:
        assert match in lines[0], lines[0]
    if out_path is not None and not before:
        assert not Path(out_path).exists()
        assert not [p for p in Path(out_path).parent.iterdir() if p.name.startswith(f".{Path(out_path).name}.")]
    return lines[0], out


def _assert_sig_equal(a, b, exact=True):
    assert sorted(a.deltas) == sorted(b.deltas)
    assert a.meta.base_fingerprint == b.meta.base_fingerprint
    value = lambda v: np.asarray(rws.dequantize_tensor(v) if isinstance(v, rws.QuantizedTensor) else v)  # noqa: E731
    for p in a.deltas:
        x, y = value(a.deltas[p]), value(b.deltas[p])
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _assert_tree_equal(a, b):
    fa, fb = rws.tree_paths.flatten(a)[0], rws.tree_paths.flatten(b)[0]
    assert sorted(fa) == sorted(fb)
    for p in fa:
        np.testing.assert_allclose(np.asarray(fa[p]), np.asarray(fb[p]), rtol=1e-6, atol=1e-7)
        assert np.asarray(fa[p]).dtype == np.asarray(fb[p]).dtype


# --------------------------------------------------------------------- model loading


def test_load_model_orbax_and_msgpack(ckpts):
    trees, paths, _ = ckpts
    for key in ("std_dir", "std_mp"):
        loaded = rws.load_model(paths[key])
        _assert_tree_equal(loaded, trees["std"])
        assert rws.fingerprint(loaded) == rws.fingerprint(trees["std"])
    assert rws.model_format(paths["std_dir"]) == "orbax"
    assert rws.model_format(paths["std_mp"]) == "msgpack"
    # msgpack keeps the tree's key order (module creation order); save_variables stores sorted paths
    assert list(rws.load_model(paths["std_mp"])["params"]) == ["conv_b", "conv_a", "bn", "head"]
    assert list(rws.load_model(paths["std_dir"])["params"]) == ["bn", "conv_a", "conv_b", "head"]


def test_load_generic_orbax_checkpoint(tmp_path):
    import orbax.checkpoint as ocp

    tree = _variables()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "ck", tree)
    ckptr.wait_until_finished()
    ckptr.close()
    assert rws.model_format(tmp_path / "ck") == "orbax-pytree"
    _assert_tree_equal(rws.load_model(tmp_path / "ck"), tree)
    # the layouts orbax's _METADATA can declare: without OCDBT, zarr3 (read with tensorstore too)
    for name, handler in (("plain", ocp.PyTreeCheckpointHandler(use_ocdbt=False)),
                          ("zarr3", ocp.PyTreeCheckpointHandler(use_zarr3=True))):
        ckptr = ocp.Checkpointer(handler)
        ckptr.save(tmp_path / name, ocp.args.PyTreeSave(tree))
        ckptr.close()
        _assert_tree_equal(rws.load_model(tmp_path / name), tree)


def test_selection_parsing(ckpts):
    _, paths, _ = ckpts
    init = rws.load_model(paths["init_mp"])
    # first_k in the tree's own order: module creation order from msgpack, natural name order from orbax
    assert parse_selection("first_k:1", init).resolve(init) == ("params/conv_b/bias", "params/conv_b/kernel")
    init_dir = rws.load_model(paths["init_dir"])
    assert parse_selection("first_k:1", init_dir).resolve(init_dir) == ("params/bn/bias", "params/bn/scale")
    sel = parse_selection("first_k:1", init_dir, order_from=init)  # order from the msgpack tree
    assert sel.resolve(init_dir) == ("params/conv_b/bias", "params/conv_b/kernel")
    sel = parse_selection("first_k:3:params,batch_stats", init)
    assert "batch_stats/bn/mean" in sel.resolve(init) and sel.collections == ("params", "batch_stats")
    assert parse_selection("conv_a/kernel$", init).resolve(init) == ("params/conv_a/kernel",)
    sel = parse_selection("params/conv_a/kernel,params/head/bias", init)
    assert sel.mode == "paths" and set(sel.resolve(init)) == {"params/conv_a/kernel", "params/head/bias"}
    assert parse_selection("params/conv_a/bias", init).mode == "paths"
    # without the colon, "first_k" is a regex (and matches no leaf here)
    for bad in ("first_k:0", "first_k:x", "first_k:2:", "conv_[", "params/nope,params/conv_a/bias", "nomatch",
                "first_k"):
        with pytest.raises(rws.SelectionError, match=re.escape(repr(bad))):
            parse_selection(bad, init)


# -------------------------------------------------------------------------- pipeline


def test_extract_info_verify_compose_patch(ckpts, tmp_path, capsys):
    trees, paths, _ = ckpts
    fog, snow = tmp_path / "fog.rws", tmp_path / "snow.rws"
    rc, out, err = _run(capsys, "extract", "--init", paths["init_dir"], "--standard", paths["std_mp"],
                        "--robust", paths["fog_dir"], "--select", "first_k:2", "--name", "fog", "--severity", 5,
                        "--out", fog)
    assert rc == 0, err
    assert "wrote" in out
    want = rws.extract(trees["init"], trees["std"], trees["fog"], rws.first_k(2), name="fog", severity=5)
    got = rws.load_signature(fog)
    _assert_sig_equal(got, want)  # conv_b, conv_a: the unit order of the msgpack --standard
    assert got.paths == ("params/conv_a/bias", "params/conv_a/kernel", "params/conv_b/bias", "params/conv_b/kernel")
    assert got.name == "fog" and got.meta.severity == 5
    assert _run(capsys, "extract", "--init", paths["init_mp"], "--standard", paths["std_mp"], "--robust",
                paths["snow_mp"], "--select", "conv_", "--name", "snow", "--out", snow)[0] == 0
    snow_want = rws.extract(trees["init"], trees["std"], trees["snow"], rws.by_pattern("conv_"), name="snow")
    _assert_sig_equal(rws.load_signature(snow), snow_want)

    # info
    rc, out, err = _run(capsys, "info", fog)
    assert rc == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith(" "))
    assert fields["name"].strip() == "fog" and fields["severity"].strip() == "5"
    assert fields["selection"].strip().startswith("first_k:2")
    assert fields["tensors"].strip() == str(len(want.deltas))
    assert fields["values"].strip() == f"{want.num_elements():,}"
    assert fields["quantization"].strip() == "none (float)"
    assert fields["base model"].strip() == rws.fingerprint(trees["init"])
    assert fields["checksum"].strip() == "ok"
    assert f"{rws.bytes_on_disk(fog):,} bytes" in fields["on disk"]

    # verify
    assert _run(capsys, "verify", fog)[:2] == (0, "ok\n")
    assert _run(capsys, "verify", fog, "--like", paths["std_mp"])[:2] == (0, "ok\n")
    _refused(capsys, None, "verify", fog, "--like", paths["other_dir"], match="fog")
    _refused(capsys, None, "verify", fog, "--like", paths["head5_dir"], match="fingerprint")
    assert _run(capsys, "verify", fog, "--like", paths["head5_dir"], "--no-check-base")[:2] == (0, "ok\n")

    # compose (sum, mean) against the library
    for method, alphas in (("sum", ["1", "0.5"]), ("mean", ["0.8"])):
        out_path = tmp_path / f"{method}.rws"
        rc, out, err = _run(capsys, "compose", fog, snow, "--method", method, "--alpha", *alphas, "--out", out_path)
        assert rc == 0, err
        a = [float(x) for x in alphas]
        want_c = rws.compose([want, snow_want], a[0] if len(a) == 1 else a, method=method)
        _assert_sig_equal(rws.load_signature(out_path), want_c, exact=False)
    # --alpha repeated equals --alpha with several values
    assert _run(capsys, "compose", fog, snow, "--alpha", 1, "--alpha", 0.5, "--out", tmp_path / "sum2.rws")[0] == 0
    _assert_sig_equal(rws.load_signature(tmp_path / "sum2.rws"), rws.load_signature(tmp_path / "sum.rws"))

    # patch: orbax in, orbax out, and msgpack in, msgpack out
    out_dir = tmp_path / "patched.vars"
    rc, out, err = _run(capsys, "patch", "--model", paths["std_dir"], "--sig", fog, "--alpha", 0.7,
                        "--sig", snow, "--alpha", -0.2, "--out", out_dir)
    assert rc == 0, err
    want_p = rws.patch(trees["std"], [want, snow_want], [0.7, -0.2])
    _assert_tree_equal(rws.load_variables(out_dir, trees["std"]), want_p)
    out_mp = tmp_path / "patched.msgpack"
    assert _run(capsys, "patch", "--model", paths["std_mp"], "--sig", tmp_path / "sum.rws", "--out", out_mp)[0] == 0
    restored = serialization.msgpack_restore(out_mp.read_bytes())
    _assert_tree_equal(restored, rws.patch(trees["std"], rws.load_signature(tmp_path / "sum.rws")))
    # the patched model is a valid input again, and --no-check-base patches a model with another head
    assert _run(capsys, "verify", fog, "--like", out_mp)[0] == 0
    assert _run(capsys, "patch", "--model", paths["head5_mp"], "--sig", fog, "--no-check-base",
                "--out", tmp_path / "h5.vars")[0] == 0
    _assert_tree_equal(rws.load_variables(tmp_path / "h5.vars", trees["head5"]),
                       rws.patch(trees["head5"], want, 1.0, check_base=False))
    # --overwrite replaces an existing output
    assert _run(capsys, "patch", "--model", paths["std_dir"], "--sig", fog, "--alpha", 0.7, "--sig", snow,
                "--alpha", -0.2, "--out", out_mp, "--overwrite")[0] == 0
    _assert_tree_equal(serialization.msgpack_restore(out_mp.read_bytes()), want_p)


@pytest.mark.parametrize("bits", [8, pytest.param(4, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(1, marks=pytest.mark.slow)])
def test_extract_quantized(ckpts, tmp_path, capsys, bits):
    trees, paths, _ = ckpts
    out = tmp_path / f"fog{bits}.rws"
    argv = ["extract", "--init", paths["init_mp"], "--standard", paths["std_mp"], "--robust", paths["fog_mp"],
            "--select", "first_k:2", "--bits", bits, "--name", "fog", "--out", out]
    if bits not in rws.quantization.BITS:  # 1 bit: only where rws.quantize supports it
        _refused(capsys, out, *argv, match=f"--bits {bits}")
        return
    rc, stdout, err = _run(capsys, *argv)
    assert rc == 0, err
    base = rws.extract(trees["init"], trees["std"], trees["fog"], rws.first_k(2), name="fog")
    _assert_sig_equal(rws.load_signature(out), rws.quantize(base, bits))
    rc, stdout, _ = _run(capsys, "info", out)
    assert rc == 0 and f"/{bits}" in stdout and "checksum:     ok" in stdout


@pytest.mark.slow  # compiles the TIES and DARE merges (several seconds on 2 CPU cores)
def test_compose_merge_methods(ckpts, tmp_path, capsys):
    trees, paths, _ = ckpts
    sigs = [rws.extract(trees["init"], trees["std"], trees[c], rws.first_k(2), name=c) for c in ("fog", "snow")]
    files = [str(rws.save_signature(tmp_path / f"{s.name}.rws", s)) for s in sigs]
    cases = [("ties", ["--density", "0.5"], {"density": 0.5}),
             ("dare", ["--drop-rate", "0.3", "--seed", "7"], {"drop_rate": 0.3, "key": jax.random.key(7)})]
    for method, extra, kwargs in cases:
        out = tmp_path / f"{method}.rws"
        rc, _, err = _run(capsys, "compose", *files, "--method", method, "--alpha", 1, 0.5, *extra, "--out", out)
        assert rc == 0, err
        want = rws.compose(sigs, [1.0, 0.5], method=method, **kwargs)
        _assert_sig_equal(rws.load_signature(out), want, exact=False)
    # another seed, another DARE mask
    rc, _, _ = _run(capsys, "compose", *files, "--method", "dare", "--drop-rate", "0.3", "--seed", 8,
                    "--out", tmp_path / "dare8.rws")
    a, b = rws.load_signature(tmp_path / "dare.rws"), rws.load_signature(tmp_path / "dare8.rws")
    assert any(not np.array_equal(a.deltas[p], b.deltas[p]) for p in a.deltas)


# -------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def bad_files(ckpts):
    trees, paths, root = ckpts
    d = root / "bad"
    d.mkdir()
    fog = rws.extract(trees["init"], trees["std"], trees["fog"], rws.first_k(2), name="fog")
    files = {"fog": str(rws.save_signature(d / "fog.rws", fog))}
    other = rws.extract(trees["other"], _perturb(trees["other"], 4), _perturb(trees["other"], 5), rws.first_k(2))
    files["other"] = str(rws.save_signature(d / "other.rws", other))
    nan = fog.replace(deltas={p: v.at[0].set(jnp.nan) if i == 0 else v for i, (p, v) in
                              enumerate(sorted(fog.deltas.items()))})
    files["nan"] = str(rws.save_signature(d / "nan.rws", nan, check_values=False))
    tampered = Path(rws.save_signature(d / "tampered.rws", fog))
    meta = tampered / "meta" / "metadata"
    m = json.loads(meta.read_text())
    m["name"] = "snow"
    meta.write_text(json.dumps(m))
    files["tampered"] = str(tampered)
    (d / "model.pkl").write_bytes(pickle.dumps({"params": {"w": np.ones(3)}}, protocol=4))
    (d / "model.txt").write_text("hello")
    (d / "trunc.msgpack").write_bytes(Path(paths["std_mp"]).read_bytes()[:200])
    (d / "empty").write_bytes(b"")
    (d / "emptydir").mkdir()
    files["nan_model"] = str(d / "nan.msgpack")
    Path(files["nan_model"]).write_bytes(serialization.to_bytes(
        jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), trees["fog"])))
    return files, d


def test_refusals(ckpts, bad_files, tmp_path, capsys):
    trees, paths, _ = ckpts
    files, d = bad_files
    out = tmp_path / "out.rws"
    ex = ["extract", "--init", paths["init_dir"], "--standard", paths["std_dir"]]

    def extract(robust, *extra, match=None):
        return _refused(capsys, out, *ex, "--robust", robust, "--out", out, *extra, match=match)

    extract(tmp_path / "missing", match="no such model")
    extract(d / "model.pkl", match="pickle")
    extract(d / "model.txt", match="unknown model format")
    extract(d / "trunc.msgpack", match="msgpack")
    extract(d / "empty", match="empty")
    extract(d / "emptydir", match="not a model directory")
    extract(files["fog"], match="signature file, not a model")
    extract(paths["other_mp"], match="architecture")
    extract(files["nan_model"], match="NaN")
    for sel in ("first_k:0", "first_k:two", "conv_[", "params/x,params/y", "nothing_matches"):
        extract(paths["fog_dir"], "--select", sel, match="--select")
    extract(paths["fog_dir"], "--bits", 3, match="--bits 3")
    extract(paths["fog_dir"], "--bits", 8, "--scheme", "nope", match="nope")

    # existing output: refused, left untouched
    out.mkdir()
    (out / "keep").write_text("x")
    _refused(capsys, out, *ex, "--robust", paths["fog_dir"], "--out", out, match="--overwrite")
    assert (out / "keep").read_text() == "x"
    out = tmp_path / "out2.rws"

    # info / verify of bad signature files
    _, stdout = _refused(capsys, None, "info", files["tampered"], match="checksum BAD")
    assert "checksum:     BAD" in stdout and "name:         snow" in stdout
    _, stdout = _refused(capsys, None, "info", files["nan"], match="NaN")
    assert "checksum:     ok" in stdout
    _refused(capsys, None, "verify", files["tampered"], match="checksum")
    _refused(capsys, None, "verify", files["nan"], match="NaN")
    _refused(capsys, None, "verify", tmp_path / "missing.rws", match="no such signature")
    _refused(capsys, None, "info", tmp_path / "missing.rws", match="no such signature")
    _refused(capsys, None, "verify", paths["std_dir"], match="signature")
    _refused(capsys, None, "verify", files["fog"], "--like", d / "model.pkl", match="pickle")

    # compose
    co = ["compose", files["fog"], files["fog"]]
    _refused(capsys, out, *co, "--alpha", 1, 2, 3, "--out", out, match="3 --alpha values for 2")
    _refused(capsys, out, *co, "--alpha", "nan", "--out", out, match="finite")
    _refused(capsys, out, *co, "--method", "median", "--out", out, match="unknown --method")
    _refused(capsys, out, *co, "--density", 0.5, "--out", out, match="--density")
    _refused(capsys, out, *co, "--drop-rate", 0.5, "--out", out, match="--drop-rate")
    _refused(capsys, out, "compose", files["fog"], files["other"], "--out", out, match="base models")
    _refused(capsys, out, "compose", files["fog"], files["nan"], "--out", out, match="NaN")
    _refused(capsys, out, "compose", files["fog"], files["tampered"], "--out", out, match="checksum")

    # patch
    pa = ["patch", "--model", paths["std_dir"], "--out", out]
    _refused(capsys, out, *pa, "--sig", files["other"], match="other.rws: signature")
    _refused(capsys, out, "patch", "--model", paths["head5_dir"], "--sig", files["fog"], "--out", out,
             match="fingerprint")
    _refused(capsys, out, *pa, "--sig", files["nan"], match="NaN")
    _refused(capsys, out, *pa, "--sig", files["tampered"], match="checksum")
    _refused(capsys, out, *pa, "--sig", files["fog"], "--alpha", 1, 2, match="2 --alpha values for 1")
    _refused(capsys, out, *pa, match="--sig")
    _refused(capsys, out, "patch", "--model", d / "model.pkl", "--sig", files["fog"], "--out", out, match="pickle")
    _refused(capsys, out, *pa, "--sig", files["fog"], "--alpha", "inf", match="finite")


def test_argument_errors_are_one_line(tmp_path, capsys):
    for argv in (["sig", "extract", "--init", "a"], ["sig", "compose", "--out", "x"], ["sig", "frobnicate"],
                 ["sig", "extract", "--init", "a", "--standard", "b", "--robust", "c", "--out", "o", "--bits", "x"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rws-jax: error: "), err


def test_entry_point_subprocess(bad_files):
    files, _ = bad_files
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "rws_jax", "sig", "info", files["fog"]], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "checksum:     ok" in r.stdout and "name:         fog" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rws_jax", "sig", "verify", files["tampered"]], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "checksum" in r.stderr and "Traceback" not in r.stderr


def test_unknown_extra_argument_is_one_line_exit_2(capsys):
    from rws_jax import cli

    assert cli.main(["sig", "info", "nothing.rws", "--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --bogus" in err[0]


# ------------------------------------------------------------ refusals without tracebacks


def _rewrite_meta(sig_dir: Path, edit) -> None:
    """Applies ``edit`` to a signature file's metadata and recomputes its checksum, as anyone
    can (a checksum is no signature): only the type checks stand between it and the loader."""
    from rws_jax import files

    f = sig_dir / "meta" / "metadata"
    meta = json.loads(f.read_text())
    edit(meta)
    meta["checksum"] = files.checksum(meta, files.read_arrays(sig_dir / "arrays"))
    f.write_text(json.dumps(meta))


def _set(*keys_and_value):
    """``edit(meta)`` setting ``meta[k1][k2]... = value``."""
    *keys, value = keys_and_value

    def edit(meta):
        node = meta
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


# every top-level field of a signature's metadata, each with wrong types (the checksum is recomputed)
TOP_LEVEL = [("format", 5), ("format_version", "2"), ("format_version", 2.0), ("name", []), ("name", None),
             ("severity", "x"), ("severity", 2.5), ("severity", True), ("kind", 5), ("selection", 7),
             ("selection", {}), ("quantization", {}), ("quantization", 8), ("base_fingerprint", 3),
             ("leaf_specs", 5), ("leaf_specs", {}), ("leaf_specs", [5]), ("leaf_specs", [["p", "4", "float32"]]),
             ("leaf_specs", [[1, [4], "float32"]]), ("tensors", 5), ("tensors", {})]
PER_TENSOR = [("path", 5), ("key", 5), ("shape", "4"), ("dtype", 5), ("quant", "int8"), ("arrays", []),
              ("quant", "bits", "8"), ("quant", "bits", 8.0), ("quant", "axis", "0"), ("quant", "scheme", 5),
              ("arrays", "data", 5), ("arrays", "data", "shape", "x"), ("arrays", "data", "dtype", 5)]


def test_wrong_types_in_metadata_under_a_valid_checksum(ckpts, bad_files, tmp_path, capsys):
    import shutil

    trees, _, _ = ckpts
    files, d = bad_files
    fog = Path(files["fog"])
    q8 = rws.save_signature(tmp_path / "q8.rws", rws.quantize(rws.load_signature(fog), 8))
    stored = set(json.loads((fog / "meta" / "metadata").read_text())) - {"checksum"}
    assert stored == {field for field, _ in TOP_LEVEL}  # every field is covered
    cases = [(fog, field, _set(field, value)) for field, value in TOP_LEVEL]
    cases += [(q8, "tensor", _set("tensors", 0, *keys)) for keys in PER_TENSOR]
    cases.append((fog, "checksum", None))  # a checksum that is not a string
    for i, (src, field, edit) in enumerate(cases):
        p = Path(shutil.copytree(src, tmp_path / f"case{i}.rws"))
        if edit is None:
            _set("checksum", 5)(meta := json.loads((p / "meta" / "metadata").read_text()))
            (p / "meta" / "metadata").write_text(json.dumps(meta))
        else:
            _rewrite_meta(p, edit)
        for read in (rws.load_signature, rws.read_signature_info):
            with pytest.raises(rws.SignatureFileError, match=field) as e:
                read(p)
            assert str(p) in str(e.value) and "\n" not in str(e.value)
        line, stdout = _refused(capsys, None, "info", p, match=field)
        assert stdout.startswith(f"file:         {p}\n") or field == "format"  # what it can show, then refuse
        _refused(capsys, None, "verify", p, match=field)
        _refused(capsys, None, "verify", p, "--like", d / "nan.msgpack", match=field)
    # what `sig info` shows of a field of the wrong type
    p = Path(shutil.copytree(fog, tmp_path / "named.rws"))
    _rewrite_meta(p, _set("name", ["fog", 1]))
    _, stdout = _refused(capsys, None, "info", p, match="'name' must be a string")
    assert 'name:         ["fog", 1]' in stdout and "checksum:     not verified" in stdout


def _truncate_arrays(path: Path) -> None:
    """Cuts every data file of an orbax directory's arrays (``d/*``) to half its size."""
    for f in (path / "arrays").rglob("d/*"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_damaged_arrays_one_short_line_no_traceback(ckpts, tmp_path):
    """Truncated array files: one short line naming the file, nothing after it on stderr
    (orbax's restore used to leave reads in flight on an event loop it had closed: an
    "Event loop is closed" traceback in most runs, and a 1 KB line with the tensorstore spec)."""
    import shutil

    trees, paths, _ = ckpts
    sig = rws.save_signature(tmp_path / "s.rws", rws.extract(trees["init"], trees["std"], trees["fog"],
                                                              rws.first_k(2), name="fog"))
    bad_sig = Path(shutil.copytree(sig, tmp_path / "bad.rws"))
    bad_model = Path(shutil.copytree(paths["std_dir"], tmp_path / "bad.vars"))
    for p in (bad_sig, bad_model):
        _truncate_arrays(p)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for argv, named in ((["verify", bad_sig], bad_sig),
                        (["patch", "--model", bad_model, "--sig", sig, "--out", tmp_path / "o.msgpack"], bad_model)):
        r = subprocess.run([sys.executable, "-m", "rws_jax", "sig", *map(str, argv)], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.endswith("\n"), r.stderr  # exactly one line
        assert r.stderr.startswith(f"rws-jax: error: {named}: cannot read the arrays (truncated or corrupt file: ")
        assert len(r.stderr) < 300 and "tensorstore_spec" not in r.stderr, r.stderr
    assert not (tmp_path / "o.msgpack").exists()


def test_a_bug_is_a_traceback_and_exit_1(monkeypatch, capsys):
    """Only the library's own errors are refusals: a plain ValueError is a bug."""
    def buggy(args):
        raise ValueError("a bug, not a refusal")

    monkeypatch.setattr(sig_cli, "cmd_info", buggy)
    assert main(["sig", "info", "anything.rws"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("ValueError: a bug, not a refusal")
    assert "rws-jax: error" not in err


def test_more_refusals(ckpts, bad_files, tmp_path, capsys):
    import zipfile

    import orbax.checkpoint as ocp

    trees, paths, _ = ckpts
    files, d = bad_files
    out = tmp_path / "out.rws"
    # --alpha finite as a Python float but not as float32
    _refused(capsys, out, "compose", files["fog"], files["fog"], "--alpha", "1e39", "--out", out,
             match="--alpha 1e+39 overflows float32")
    _refused(capsys, out, "patch", "--model", paths["std_dir"], "--sig", files["fog"], "--alpha=-1e39",
             "--out", out, match="--alpha -1e+39 overflows float32")
    # --method choices are rws_jax.merging.METHODS
    _refused(capsys, out, "compose", files["fog"], "--method", "median", "--out", out,
             match="choose from " + ", ".join(rws.merging.METHODS))
    # first_k over the number of units (the default first_k:7 keeps every unit of a smaller model)
    _refused(capsys, out, "extract", "--init", paths["init_dir"], "--standard", paths["std_dir"], "--robust",
             paths["fog_dir"], "--select", "first_k:9", "--out", out,
             match="bad --select: 'first_k:9': the model has only 3 units (bn, conv_a, conv_b)")
    # a model whose keys cannot be leaf path names
    (tmp_path / "slash.msgpack").write_bytes(serialization.to_bytes({"params": {"a/b": np.ones(2, np.float32)}}))
    _refused(capsys, None, "verify", files["fog"], "--like", tmp_path / "slash.msgpack",
             match="key 'a/b' at 'params' is not a module or variable name")
    # info/verify on files and directories that are not signatures say what they are
    with zipfile.ZipFile(tmp_path / "model.pth", "w") as z:
        z.writestr("archive/data.pkl", b"x")
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "ck", {"w": np.ones(3, np.float32)})
    ckptr.wait_until_finished()
    ckptr.close()
    kinds = {paths["std_dir"]: "is a model directory written by save_variables, not a signature",
             paths["std_mp"]: "is a Flax msgpack file, not a signature",
             d / "model.pkl": "is a Python pickle, not a signature",
             tmp_path / "model.pth": "is a zip archive (a PyTorch checkpoint?), not a signature",
             tmp_path / "ck": "is an orbax checkpoint (no rws_jax metadata), not a signature",
             d / "empty": "is an empty file, not a signature",
             d / "model.txt": "is a file of unknown format, not a signature"}
    for path, what in kinds.items():
        for cmd in ("info", "verify"):
            line, stdout = _refused(capsys, None, cmd, path, match=what)
            assert line == f"rws-jax: error: {path}: {what}" and stdout == ""


def test_patch_out_creates_parent_folders(ckpts, bad_files, tmp_path, capsys):
    trees, paths, _ = ckpts
    files, _ = bad_files
    for out in (tmp_path / "a" / "b" / "p.msgpack", tmp_path / "c" / "d" / "p.vars"):
        rc, _, err = _run(capsys, "patch", "--model", paths["std_mp"], "--sig", files["fog"], "--out", out)
        assert rc == 0, err
        _assert_tree_equal(rws.load_model(out), rws.patch(trees["std"], rws.load_signature(files["fog"])))
