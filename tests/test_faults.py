"""Faults: a save killed part-way leaves the earlier file intact and readable; training
killed after a checkpoint resumes to the same result as an uninterrupted run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

import rws_jax as rws

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def dir_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        h.update(str(f.relative_to(path)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> float:
    """SIGKILLs ``proc`` as soon as ``ready()`` is true; returns when that was (s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ready():
            assert proc.poll() is None, "the process finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return time.monotonic() - t0
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended early (rc {proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("timed out waiting for the moment to kill")


# ----------------------------------------------------------------------------- save
SAVE_SCRIPT = textwrap.dedent(r"""
    import sys, jax, jax.numpy as jnp
    import rws_jax as rws
    target, n_tensors = sys.argv[1], int(sys.argv[2])
    deltas = {f"params/conv_{i}/kernel": jax.random.normal(jax.random.key(i), (512, 1024)) for i in range(n_tensors)}
    sig = rws.Signature(deltas=deltas, meta=rws.SignatureMeta(
        base_fingerprint="0" * 16, leaf_specs=tuple((p, (512, 1024), "float32") for p in sorted(deltas)), name="big"))
    print("SAVING", flush=True)
    rws.save_signature(target, sig, overwrite=True)
    print("SAVED", flush=True)
""")


@pytest.fixture(scope="module")
def good_sig(tiny_models):
    _, init, std, fog, _ = tiny_models
    return rws.extract(init, std, fog, rws.first_k(3), name="fog")


@pytest.mark.slow
@pytest.mark.parametrize("existing", [True, False])
def test_save_killed_part_way_keeps_earlier_file(tmp_path, good_sig, existing):
    target = tmp_path / "fog.rws"
    if existing:
        rws.save_signature(target, good_sig)
        before = dir_digest(target)
    # 16 x 2 MiB float32 tensors (32 MiB): long enough to be caught while writing
    proc = subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT, str(target), "16"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    temporaries = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".fog.rws.tmp-")]  # noqa: E731
    kill_when(proc, lambda: bool(temporaries()))
    assert proc.returncode == -signal.SIGKILL
    if existing:
        assert dir_digest(target) == before  # not a byte changed
        back = rws.load_signature(target)
        chex.assert_trees_all_equal(back.deltas, good_sig.deltas)
        assert back.name == "fog"
    else:
        assert not target.exists()  # nothing half-written at the target path
    # the half-written temporary is hidden and is not a loadable signature
    for tmp in temporaries():
        with pytest.raises(rws.SignatureFileError):
            rws.load_signature(tmp)
    # a later save still works and replaces the file atomically
    rws.save_signature(target, rws.scale(good_sig, 2.0), overwrite=True)
    chex.assert_trees_all_equal(rws.load_signature(target).deltas, rws.scale(good_sig, 2.0).deltas)


# ----------------------------------------------------------------------------- training
TRAIN_COMMON = textwrap.dedent(r"""
    from rws_jax.training import TrainConfig, fit
    from tests._tiny_bn import Tiny, separable_data

    images, labels = separable_data(1024, seed=3)
    TRAIN, VAL = (images[:896], labels[:896]), (images[896:], labels[896:])
    CFG = TrainConfig(epochs=6, batch_size=32, lr=0.05, milestones=(3,), eval_batch_size=128, seed=11,
                      augment=True, crop_padding=1)
""")

TRAIN_SCRIPT = TRAIN_COMMON + textwrap.dedent(r"""
    import sys
    fit(Tiny(), TRAIN, VAL, CFG, workdir=sys.argv[1], progress=False)
    print("FINISHED", flush=True)
""")


@pytest.mark.slow
def test_training_killed_after_checkpoint_resumes_to_same_result(tmp_path):
    ns: dict = {}
    exec(TRAIN_COMMON, ns)  # noqa: S102 - the same definitions as the subprocess
    Tiny, fit, TRAIN, VAL, CFG = ns["Tiny"], ns["fit"], ns["TRAIN"], ns["VAL"], ns["CFG"]

    wd = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(wd)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when(proc, lambda: (wd / "state" / "1").is_dir())
    assert proc.returncode == -signal.SIGKILL
    steps = sorted(int(p.name) for p in (wd / "state").iterdir() if p.name.isdigit())
    assert steps and steps[-1] < CFG.epochs, steps  # killed before the end

    resumed, hist = fit(Tiny(), TRAIN, VAL, CFG, workdir=str(wd), progress=False)
    straight, hist2 = fit(Tiny(), TRAIN, VAL, CFG, progress=False)
    chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(straight))  # bit for bit
    assert hist["finished"] and hist["epoch"] == list(range(1, CFG.epochs + 1))
    assert {**hist, 'epoch_seconds': None} == {**hist2, 'epoch_seconds': None}  # wall times differ


@pytest.mark.slow
def test_training_killed_between_best_and_state_checkpoints(tmp_path):
    """fit writes best/<k> and then state/<k>: a kill in between leaves a best
    checkpoint newer than the last state. Resuming must re-run epoch k and finish
    exactly like an uninterrupted run (it used to fail with StepAlreadyExistsError)."""
    import shutil

    ns: dict = {}
    exec(TRAIN_COMMON, ns)  # noqa: S102
    Tiny, fit, TRAIN, VAL = ns["Tiny"], ns["fit"], ns["TRAIN"], ns["VAL"]
    cfg = ns["CFG"].replace(epochs=2)
    wd = tmp_path / "run"
    fit(Tiny(), TRAIN, VAL, cfg, workdir=str(wd), progress=False, max_epochs=1)
    assert (wd / "best" / "1").is_dir()
    shutil.rmtree(wd / "state")  # as if killed after best/1 was written, before state/1
    resumed, hist = fit(Tiny(), TRAIN, VAL, cfg, workdir=str(wd), progress=False)
    straight, hist2 = fit(Tiny(), TRAIN, VAL, cfg, progress=False)
    chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(straight))
    assert {**hist, 'epoch_seconds': None} == {**hist2, 'epoch_seconds': None}  # wall times differ
