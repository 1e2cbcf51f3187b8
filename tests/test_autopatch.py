"""Auto-patching: the corruption detector (training, orbax files, refusals) and the
AutoPatcher (coefficients, fused patch reuse, per-image groups), on a tiny real run."""

import json
import shutil

import chex
import jax
import numpy as np
import pytest

import rws_jax as rws
from rws_jax import corruptions as C
from rws_jax.cli import main as cli_main
from rws_jax.pipeline import Run, preset, run_all
from rws_jax.pipeline.model_store import train_config
from rws_jax.pipeline.autopatch_eval import detector_path, evaluate_autopatching, train_run_detector
from rws_jax.pipeline.autopatch_report import autopatch_markdown

pytestmark = pytest.mark.slow

CS = ["gaussian_noise", "contrast"]


def _cfg():
    return preset("tiny", name="tiny_auto", corruptions=CS, alphas=[1.0], quant_bits=[], merge_methods=[],
                  alpha_search=False, transfer_dataset=None, update_backbone_epochs=0, robust_replicates=1,
                  composition_rows=False, mixture=False)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("auto_run")
    run = Run(_cfg(), out, progress=False, log=lambda s: None)
    run_all(run)
    train_run_detector(run, examples=200)
    return run


@pytest.fixture(scope="module")
def patcher(auto_run):
    run = auto_run
    det = rws.load_detector(detector_path(run), signatures=[run.signatures.signature(c) for c in CS])
    tc = train_config(run.cfg, "finetune")
    return rws.AutoPatcher(run.models.model, run.models.standard(), [run.signatures.signature(c) for c in CS], det, mean=tc.mean, std=tc.std)


def _forward(run, variables, x):
    tc = train_config(run.cfg, "finetune")
    from rws_jax.training.augment import normalize_images

    return run.models.model.apply(variables, normalize_images(jax.numpy.asarray(x), tc.mean, tc.std), train=False)


def test_detector_tells_clean_from_corrupted(auto_run):
    run = auto_run
    det = rws.load_detector(detector_path(run))
    assert det.classes == ("clean", *CS) and det.image_shape == run.data.main.image_shape
    x = run.data.main.test.images[:100]
    p = np.asarray(det.probabilities(x))
    chex.assert_shape(p, (100, 3))
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    assert np.mean(p.argmax(1) == 0) > 0.8
    xc = np.asarray(C.corrupt(x, "contrast", 5, jax.random.key(1)))
    assert np.mean(np.asarray(det.predict(xc)) == 2) > 0.8
    xb = np.asarray(C.corrupt(x, "brightness", 5, jax.random.key(2)))  # never seen: mostly out of distribution
    _, ind = det.scores(xb)
    assert np.mean(np.asarray(ind)) < 0.5


def test_detector_file_round_trip_and_refusals(auto_run, tmp_path):
    run = auto_run
    sigs = [run.signatures.signature(c) for c in CS]
    det = rws.load_detector(detector_path(run), signatures=sigs)
    path = rws.save_detector(tmp_path / "det", det)
    again = rws.load_detector(path, signatures=sigs)
    chex.assert_trees_all_equal(dict(again.params), dict(det.params))
    with pytest.raises(FileExistsError):
        rws.save_detector(path, det)
    with pytest.raises(rws.RWSError, match="trained for the signatures"):
        rws.load_detector(path, signatures=sigs[::-1])
    with pytest.raises(rws.RWSError, match="trained for the signatures"):
        rws.load_detector(path, signatures=[sigs[0], rws.scale(sigs[1], 2.0)])
    # tampered metadata: the checksum fails
    meta = path / "meta" / "metadata"
    d = json.loads(meta.read_text())
    d["classes"][1] = "fog"
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    (bad / "meta" / "metadata").write_text(json.dumps(d))
    with pytest.raises(rws.SignatureFileError, match="checksum"):
        rws.load_detector(bad)
    truncated = tmp_path / "truncated"
    shutil.copytree(path, truncated)
    shutil.rmtree(truncated / "arrays")
    with pytest.raises(rws.SignatureFileError):
        rws.load_detector(truncated)
    with pytest.raises(rws.SignatureFileError, match="not a detector"):
        rws.load_detector(tmp_path / "nowhere")
    with pytest.raises(rws.RWSError, match="takes images"):
        det.probabilities(np.zeros((2, 28, 28, 1), np.uint8))


def test_clean_batch_runs_theta_std_unpatched(auto_run, patcher):
    run = auto_run
    x = run.data.main.test.images[:64]
    a = patcher.coefficients(x)
    chex.assert_shape(a, (2,))
    assert not np.any(a)
    assert patcher.variables_for(a) is patcher._std_vars
    np.testing.assert_allclose(np.asarray(patcher(x)), np.asarray(_forward(run, run.models.standard(), x)), rtol=1e-5,
                               atol=1e-5)


def test_corrupted_batch_is_patched_once_then_reused(auto_run, patcher):
    run = auto_run
    x = np.asarray(C.corrupt(run.data.main.test.images[:64], "contrast", 5, jax.random.key(3)))
    a = patcher.coefficients(x)
    assert a[1] > 0 and a[1] % patcher.step == 0
    before = (patcher.patches_computed, patcher.patches_reused)
    logits = patcher(x)
    expect = _forward(run, rws.patch(run.models.standard(), [run.signatures.signature(c) for c in CS], a), x)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expect), rtol=1e-5, atol=1e-5)
    patcher(x)
    after = (patcher.patches_computed, patcher.patches_reused)
    assert after[0] - before[0] <= 1 and after[1] > before[1]


def test_per_image_mode_patches_each_group(auto_run, patcher):
    run = auto_run
    clean = run.data.main.test.images[:4]
    cont = np.asarray(C.corrupt(run.data.main.test.images[4:8], "contrast", 5, jax.random.key(4)))
    x = np.concatenate([clean, cont])
    groups = patcher.assignments(x)
    logits = np.asarray(patcher(x, per_image=True))
    sigs = [run.signatures.signature(c) for c in CS]
    for i, g in enumerate(groups):
        alphas = np.zeros(2, np.float32)
        if g:
            alphas[g - 1] = 1.0
        v = rws.patch(run.models.standard(), sigs, alphas) if g else run.models.standard()
        np.testing.assert_allclose(logits[i], np.asarray(_forward(run, v, x[i:i + 1]))[0], rtol=1e-4, atol=1e-4)


def test_autopatcher_refuses_a_foreign_detector_or_bad_settings(auto_run):
    run = auto_run
    sigs = [run.signatures.signature(c) for c in CS]
    det = rws.load_detector(detector_path(run))
    with pytest.raises(rws.RWSError, match="trained for the signatures"):
        rws.AutoPatcher(run.models.model, run.models.standard(), sigs[:1], det)
    with pytest.raises(rws.RWSError, match="threshold"):
        rws.AutoPatcher(run.models.model, run.models.standard(), sigs, det, threshold=2.0)
    with pytest.raises(rws.RWSError, match="finite"):
        rws.AutoPatcher(run.models.model, run.models.standard(), sigs, det, max_alpha=[1.0, float("nan")])
    with pytest.raises(rws.RWSError, match="CorruptionDetector"):
        rws.AutoPatcher(run.models.model, run.models.standard(), sigs, "detector")


def test_mixed_stream_evaluation_and_cli(auto_run, capsys):
    run = auto_run
    m = evaluate_autopatching(run, batch_sizes=(1, 8), examples=16, heldout=("brightness",), severities=(2, 5),
                        mixed_batch_sizes=(8,), mixed_examples=12)
    assert set(m["auto"]) == {"batch/1", "batch/8", "per_image/8"}
    # mixed batches at severities 2 and 5, detectors trained at 5 and at 2-5, against the per-image oracle
    x = m["mixed"]
    assert set(x["auto"]) == {f"{d}/{mode}/8" for d in ("sev5", "sev2-5") for mode in ("batch", "per_image")}
    assert x["detectors"]["sev2-5"]["severities"] == [2, 5] and detector_path(run, (2, 5)).is_dir()
    for sev in ("sev2", "sev5"):
        assert set(x["oracle"][sev]) == set(m["sources"])
        for h in ("clean", "brightness"):  # no signature: the oracle is θ_std there
            assert x["oracle"][sev][h] == x["standard"][sev][h]
        assert all(0.0 <= v <= 1.0 for a in x["auto"].values() for v in a[sev].values())
    assert x["oracle"]["sev5"]["contrast"] == m["baselines"]["oracle"]["contrast"] or len(m["sources"]) > 0
    assert len(m["mixed_targets"]) == 4
    assert all(set(t["met"]) == {"ra", "ta", "severity"} for t in m["mixed_targets"])
    assert set(m["baselines"]) == {"standard", "oracle", "average"}
    assert m["sources"] == ["clean", *CS, "brightness"]
    # the oracle is θ_std on clean and held-out sources
    assert m["baselines"]["oracle"]["clean"] == m["baselines"]["standard"]["clean"]
    assert m["baselines"]["oracle"]["brightness"] == m["baselines"]["standard"]["brightness"]
    assert len(m["targets"]) == 3 and all(set(t["met"]) == {"ra", "ta", "heldout"} for t in m["targets"])
    assert m["patches"]["batch/1"]["batches"] == 4 * 16
    text = "\n".join(autopatch_markdown(m))
    assert "oracle patch" in text and "RA brightness (held out)" in text
    assert "Mixed batches" in text and "per-image oracle" in text and "worst severity" in text
    with pytest.raises(ValueError, match="unknown held-out"):
        evaluate_autopatching(run, examples=4, heldout=("fgo",))
    # CLI: the stored metrics are printed without re-evaluating
    rc = cli_main(["autopatch", "--out", str(run.dir), "--preset", "tiny", "--quiet",
                   *sum((["--set", f"{k}={json.dumps(v)}"] for k, v in _cfg().to_dict().items()
                         if k != "description" and v != preset("tiny").to_dict()[k]), [])])
    out = capsys.readouterr().out
    assert rc == 0 and "exists (--redo re-evaluates)" in out and "mixed test stream" in out.lower()
