"""The Colab branch of the notebooks' install/prepare logic (rws_jax.colab and the notebook
cells themselves), with ``google.colab`` faked and every network call replaced by a recorder:
nothing here installs or downloads anything."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from rws_jax import colab

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "colabs" / "rws_cifar10_pipeline.ipynb"
PATCHING = REPO / "colabs" / "patch_with_signatures.ipynb"
URL = "git+https://github.com/someone/rws_jax"
PIP = [sys.executable, "-m", "pip", "install", "-q"]


@pytest.fixture
def fake_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


@pytest.fixture
def no_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "google.colab" else real(name, *a))


def make_clone(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "setup.cfg").write_text("[metadata]\nname = rws_jax\nversion = 0\n")
    return root


# ----------------------------------------------------------------------------- rws_jax.colab


def test_in_colab(fake_colab):
    assert colab.in_colab()


def test_not_in_colab(no_colab):
    assert not colab.in_colab()


def test_install_command_from_a_clone(tmp_path):
    clone = make_clone(tmp_path / "rws_jax")
    assert colab.install_command(URL, clone) == [*PIP, "-e", str(clone.resolve())]
    sub = clone / "colabs"
    sub.mkdir()
    assert colab.install_command(URL, sub) == [*PIP, "-e", str(clone.resolve())]  # a parent counts
    assert colab.install_command(URL, REPO / "colabs") == [*PIP, "-e", str(REPO)]


def test_install_command_from_the_source(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "setup.cfg").write_text("[metadata]\nname = something_else\n")  # not a clone of rws_jax
    assert colab.install_command(URL, other) == [*PIP, URL]
    drive_copy = tmp_path / "drive" / "rws_jax"
    drive_copy.mkdir(parents=True)
    assert colab.install_command(str(drive_copy), other) == [*PIP, "-e", str(drive_copy.resolve())]
    assert colab.install_command(URL, other, python="py") == ["py", "-m", "pip", "install", "-q", URL]


@pytest.mark.parametrize("source", [colab.PLACEHOLDER_SOURCE, "", "  "])
def test_install_command_refuses_the_placeholder(tmp_path, source):
    with pytest.raises(ValueError, match="RWS_JAX_SOURCE"):
        colab.install_command(source, tmp_path)


def test_tfds_data_dir_with_and_without_drive(monkeypatch, tmp_path):
    assert colab.tfds_data_dir(True, env={}) == "/content/drive/MyDrive/tensorflow_datasets"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert colab.tfds_data_dir(False, env={}) == str(tmp_path / "tensorflow_datasets")
    assert colab.tfds_data_dir(True, env={"TFDS_DATA_DIR": "/data/tfds"}) == "/data/tfds"
    assert colab.run_dir("x", True, env={}) == "/content/drive/MyDrive/rws_jax_runs/x"
    assert colab.run_dir("x", False, env={}) == "results/x"
    assert colab.run_dir("x", True, env={"RWS_JAX_RUN_DIR": "/r"}) == "/r"
    (tmp_path / "MyDrive").mkdir()
    assert colab.drive_mounted(tmp_path) and not colab.drive_mounted(tmp_path / "nothing")


def test_prepare_plan():
    assert colab.prepare_plan(True, False).prepare  # on Colab by default
    assert "on Colab" in colab.prepare_plan(True, False).reason
    off = colab.prepare_plan(False, False)  # elsewhere nothing is downloaded unless asked
    assert not off.prepare and "not on Colab" in off.reason
    assert colab.prepare_plan(False, False, prepare=True).prepare
    assert not colab.prepare_plan(True, False, prepare=False).prepare
    assert not colab.prepare_plan(True, True).prepare  # already prepared
    assert not colab.prepare_plan(True, False, tiny=True).prepare


class BuilderRecorder:
    """Stands in for tfds.builder: records the calls, never touches the network."""

    def __init__(self, error: Exception | None = None):
        self.calls, self.prepared, self.error = [], 0, error

    def __call__(self, name, **kwargs):
        self.calls.append((name, kwargs))
        return types.SimpleNamespace(download_and_prepare=self.download_and_prepare)

    def download_and_prepare(self):
        self.prepared += 1
        if self.error is not None:
            raise self.error


def test_prepare_cifar10_calls_tfds_builder(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    rec = BuilderRecorder()
    monkeypatch.setattr(tfds, "builder", rec)
    ok, msg = colab.prepare_cifar10(str(tmp_path / "tfds"))
    assert ok and msg == f"prepared CIFAR-10 under {tmp_path / 'tfds'}"
    assert rec.calls == [("cifar10", {"data_dir": str(tmp_path / "tfds"), "file_format": "array_record"})]
    assert rec.prepared == 1


def test_prepare_cifar10_failure_is_reported(tmp_path):
    rec = BuilderRecorder(ConnectionError("no network\nmore"))
    ok, msg = colab.prepare_cifar10(str(tmp_path), builder=rec)
    assert not ok and msg == f"preparing CIFAR-10 under {tmp_path} failed: ConnectionError: no network"


def test_choose_dataset_fallback_message():
    plan = colab.prepare_plan(True, False)
    ds, msg = colab.choose_dataset(tiny=False, have_cifar10=False, cifar10_info="not prepared",
                                   have_fashion_mnist=True, plan=plan, prepare_message="preparing failed: X")
    assert ds == "offline"
    assert msg == ("FALLING BACK to offline data: the 'offline' preset (Fashion-MNIST from local files), not CIFAR-10, "
                   "because CIFAR-10 is not usable (not prepared); preparing failed: X")
    assert colab.choose_dataset(tiny=False, have_cifar10=True, cifar10_info="", have_fashion_mnist=False,
                                plan=plan) == ("cifar10", "using: cifar10")
    with pytest.raises(RuntimeError, match="Neither TFDS CIFAR-10"):
        colab.choose_dataset(tiny=False, have_cifar10=False, cifar10_info="x", have_fashion_mnist=False, plan=plan)


# ----------------------------------------------------------------------------- the notebook cells


def cell_source(path: Path, contains: str) -> str:
    nb = nbformat.read(path, as_version=4)
    matches = [c.source for c in nb.cells if c.cell_type == "code" and contains in c.source]
    assert len(matches) == 1, f"{path.name}: {len(matches)} code cells contain {contains!r}"
    return matches[0]


class PipRecorder:
    """Stands in for subprocess.run in the install cell; 'installing' makes rws_jax findable."""

    def __init__(self):
        self.commands, self.installed = [], False

    def __call__(self, cmd, *args, **kwargs):
        self.commands.append(list(cmd))
        self.installed = True
        return subprocess.CompletedProcess(cmd, 0)


def run_install_cell(monkeypatch, path: Path, cwd: Path, source: str | None):
    code = cell_source(path, "RWS_JAX_SOURCE = ")
    assert f'RWS_JAX_SOURCE = "{colab.PLACEHOLDER_SOURCE}"' in code  # the one line a user edits
    if source is not None:
        code = code.replace(f'RWS_JAX_SOURCE = "{colab.PLACEHOLDER_SOURCE}"', f"RWS_JAX_SOURCE = {source!r}")
    rec = PipRecorder()
    real = importlib.util.find_spec
    # A fresh runtime: rws_jax not importable until the (recorded) pip install ran.
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (None if name == "rws_jax" and not rec.installed else real(name, *a)))
    monkeypatch.setattr(subprocess, "run", rec)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(cwd)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"{path.name}:install", "exec"), {"__name__": "__nb__"})  # noqa: S102
    return rec.commands, out.getvalue()


@pytest.mark.parametrize("path", [PIPELINE, PATCHING], ids=lambda p: p.name)
def test_install_cell_on_colab_installs_from_the_source(fake_colab, monkeypatch, tmp_path, path):
    cmds, out = run_install_cell(monkeypatch, path, tmp_path, URL)
    assert cmds == [[*PIP, URL]] == [colab.install_command(URL, tmp_path)]
    assert f"installing rws_jax: {' '.join([*PIP, URL])}" in out


@pytest.mark.parametrize("path", [PIPELINE, PATCHING], ids=lambda p: p.name)
def test_install_cell_on_colab_in_a_clone_installs_the_clone(fake_colab, monkeypatch, path):
    cmds, _ = run_install_cell(monkeypatch, path, REPO / "colabs", None)
    assert cmds == [[*PIP, "-e", str(REPO)]] == [colab.install_command(colab.PLACEHOLDER_SOURCE, REPO / "colabs")]


def test_install_cell_on_colab_with_the_placeholder_says_what_to_edit(fake_colab, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="set it at the top of the notebook"):
        run_install_cell(monkeypatch, PIPELINE, tmp_path, None)


def test_install_cell_outside_colab_installs_nothing(no_colab, monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="neither Colab nor a clone"):
        run_install_cell(monkeypatch, PIPELINE, tmp_path, URL)


def test_install_cell_outside_colab_in_a_clone_installs_the_clone(no_colab, monkeypatch):
    cmds, _ = run_install_cell(monkeypatch, PIPELINE, REPO, URL)  # as before: `pip install -e .`
    assert cmds == [[*PIP, "-e", str(REPO)]]


def run_data_cells(monkeypatch, tmp_path, *, drive: bool):
    """Executes the pipeline notebook's data cells (not tiny); returns (namespace, output, recorder)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    rec = BuilderRecorder()
    monkeypatch.setattr(tfds, "builder", rec)
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(colab, "DRIVE_TFDS_DIR", str(tmp_path / "drive" / "tensorflow_datasets"))
    monkeypatch.setattr(colab, "drive_mounted", lambda *a: drive)
    monkeypatch.setattr(colab, "fashion_mnist_available", lambda: True)
    ns = {"__name__": "__nb__", "TINY": False}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for marker in ("PREPARE_CIFAR10 = None", "colab.choose_dataset("):
            exec(compile(cell_source(PIPELINE, marker), "data", "exec"), ns)  # noqa: S102
    return ns, out.getvalue(), rec


@pytest.mark.parametrize("drive", [False, True])
def test_data_cells_on_colab_prepare_cifar10_then_say_why_they_fall_back(fake_colab, monkeypatch, tmp_path, drive):
    ns, out, rec = run_data_cells(monkeypatch, tmp_path, drive=drive)
    data_dir = str(tmp_path / "drive" / "tensorflow_datasets") if drive else str(tmp_path / "home" / "tensorflow_datasets")
    assert ns["TFDS_DATA_DIR"] == data_dir
    assert rec.calls == [("cifar10", {"data_dir": data_dir, "file_format": "array_record"})] and rec.prepared == 1
    assert "on Colab: downloading and preparing CIFAR-10" in out
    # The recorder prepared nothing, so CIFAR-10 is still not readable: the notebook falls back, loudly.
    assert ns["DATASET"] == "offline"
    assert "FALLING BACK to offline data" in out and "CIFAR-10 is not usable" in out


def test_data_cells_outside_colab_download_nothing(no_colab, monkeypatch, tmp_path):
    ns, out, rec = run_data_cells(monkeypatch, tmp_path, drive=False)
    assert rec.calls == [] and rec.prepared == 0
    assert ns["TFDS_DATA_DIR"] == str(tmp_path / "home" / "tensorflow_datasets")
    assert "not on Colab: nothing is downloaded" in out
    assert ns["DATASET"] == "offline" and "FALLING BACK" in out


# ----------------------------------------------------------------------------- 8 devices (a TPU v2-8)

EIGHT_DEVICES = r'''
import os, sys
import nbformat
import jax
nb = nbformat.read(sys.argv[1], as_version=4)
ns = {"__name__": "__main__"}
for src in (c.source for c in nb.cells if c.cell_type == "code"):
    exec(compile(src, "cell", "exec"), ns)
    if 'stage("pretrain-init")' in src:
        break
else:
    raise SystemExit("no pretrain cell")
assert jax.device_count() == 8, jax.devices()
leaf = jax.tree_util.tree_leaves(ns["run"].models.theta_init)[0]
print("SHARDING", len(leaf.sharding.device_set), dict(leaf.sharding.mesh.shape))
'''


@pytest.mark.slow
def test_pipeline_notebook_trains_data_parallel_on_8_devices(tmp_path):
    """The notebook's cells up to pre-training, in tiny mode, on 8 fake CPU devices: fit runs
    over a data mesh of all 8 (as on a TPU v2-8); about 40 s."""
    env = {k: v for k, v in os.environ.items() if k not in ("RWS_JAX_RUN_DIR", "TFDS_DATA_DIR")}
    env.update(RWS_JAX_NOTEBOOK_TINY="1", RWS_JAX_RUN_DIR=str(tmp_path / "run"), MPLBACKEND="Agg",
               JAX_PLATFORMS="cpu", TMPDIR=str(tmp_path),
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip())
    proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, str(PIPELINE)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training: data parallel over 8 devices (mesh {'data': 8})" in proc.stdout
    assert "SHARDING 8 {'data': 8}" in proc.stdout
    assert "(pretrain-init:" in proc.stdout


# ----------------------------------------------------------------------------- the Colab-sized preset


def test_colab_sized_preset_and_its_estimate():
    from rws_jax.pipeline import preset

    full, small = preset("cifar10_vgg16"), preset("cifar10_vgg16_colab")
    assert small.dataset == full.dataset == "cifar10" and small.model == full.model and small.model_kwargs == {}
    assert len(small.corruptions) == 4 and not small.mixture
    assert small.pretrain["epochs"] == 5 and small.finetune["epochs"] == 10  # 5 epochs of 4 rotations each
    assert small.init_kind == "rotation" and full.init_kind == "torch"
    assert {k: v for k, v in small.finetune.items() if k not in ("epochs", "milestones")} == \
        {k: v for k, v in full.finetune.items() if k not in ("epochs", "milestones")}  # same recipe otherwise

    sys.path.insert(0, str(REPO))
    try:
        from benchmarks.colab_estimate import workload
    finally:
        sys.path.remove(str(REPO))
    w = workload("cifar10_vgg16_colab")
    # 22,500 images per half, 4 rotations each: 5 + 2 pre-training epochs; 6 models x 10 fine-tuning epochs.
    assert w["finetuned_models"] == 6 and w["train_images"] == 4 * 22_500 * (5 + 2) + 22_500 * 10 * 6
    # the reference's preset: θ_init imported (nothing pre-trained), fine-tuning on all 45,000 images
    w_full = workload("cifar10_vgg16")
    assert w_full["pretrain_epochs"] == 0
    assert w_full["train_images"] == 4 * 22_500 * 10 + 45_000 * 50 * w_full["finetuned_models"]
    doc = (REPO / "docs" / "benchmarks" / "colab_estimate.md").read_text()
    assert "python benchmarks/colab_estimate.py" in doc and "estimates, not measurements" in doc
    assert "`cifar10_vgg16_colab`" in doc and "`cifar10_vgg16`" in doc
