"""The pipeline on a BatchNorm model: the reference's BN scheme is the default and is what
the stored accuracies measure."""

import json

import chex
import jax
import numpy as np
import pytest

import rws_jax as rws
from rws_jax.pipeline import Run, preset, run_all
from rws_jax.pipeline.model_store import train_config
from rws_jax.training import evaluate
from rws_jax.training.augment import normalize_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    cfg = preset("tiny", name="tiny_resnet", model="resnet20", model_kwargs={"width": 0.25}, keep_units=2,
                 corruptions=["contrast", "fog"], alphas=[0.5, 1.0], quant_bits=[8], transfer_dataset=None,
                 update_backbone_epochs=0, mixture=False, robust_replicates=1,
                 # the merge stage runs (one TIES row, re-estimated statistics); its α search is
                 # the VGG pipeline's (test_pipeline.py): on a BN model each of its validation
                 # evaluations re-estimates statistics, which made it a fifth of this fixture
                 merge_methods=["ties"], alpha_search=False,
                 premise_points=3)  # each point re-estimates BN statistics: 3 points check the scheme
    run = Run(cfg, tmp_path_factory.mktemp("bn_run"), progress=False, log=lambda s: None)
    run_all(run)
    return run


def test_bn_models_default_to_the_reference_scheme(bn_run):
    assert bn_run.patcher.bn_mode == "reference"
    assert preset("tiny").bn_mode(False) == "patch" and preset("tiny", bn="patch").bn_mode(True) == "patch"
    with pytest.raises(ValueError, match="bn must be one of"):
        preset("tiny", bn="average")
    assert "BatchNorm, as the reference code" in (bn_run.dir / "report.md").read_text()


def test_stored_patched_accuracy_is_the_reference_scheme(bn_run):
    run = bn_run
    std, c = run.models.standard(), "fog"
    sig = rws.load_signature(run.signatures.path(c))
    rob = run.models.robust(c)
    # statistics re-estimated on the fine-tuning split corrupted with c, in batches of the fine-tuning size
    split = run.data.recalibration_split(c)
    bs = run.cfg.finetune["batch_size"]
    tc = train_config(run.cfg, "finetune")
    batches = [split.images[i:i + bs] for i in range(0, len(split), bs)]
    expect = rws.patch_batch_norm(std, sig, 0.5, bn="reference", robust=[rob], apply_fn=run.models.model.apply,
                                  batches=batches, preprocess=lambda x: rws_normalize(x, tc))
    got = run.patcher.patched(std, [c], sig, 0.5)
    chex.assert_trees_all_close(got, expect, rtol=1e-5, atol=1e-6)
    # BN/shortcut leaves come from the robust model (N = 1), not from θ_std + α·RWS
    f_got, f_rob = rws.tree_paths.flatten(got)[0], rws.tree_paths.flatten(rob)[0]
    np.testing.assert_array_equal(f_got["params/stem/bn/scale"], f_rob["params/stem/bn/scale"])
    acc = evaluate(got, run.models.model.apply, run.data.test_set(c), run.cfg.eval_batch_size, eval_step=run.evaluator.eval_step)
    stored = json.loads((run.dir / "metrics" / "accuracy.json").read_text())["patched/fog/alpha=0.5"]
    assert acc["accuracy"] == pytest.approx(stored[c])
    assert {"composed", "composed_reference_mode", "patched_q8/contrast"} <= set(
        json.loads((run.dir / "metrics" / "accuracy.json").read_text()))


def test_pure_patch_mode_differs_from_the_reference_scheme(bn_run):
    run = bn_run
    sig = rws.load_signature(run.signatures.path("contrast"))
    pure = rws.patch_batch_norm(run.models.standard(), sig, 1.0, bn="patch")
    ref = run.patcher.patched(run.models.standard(), ["contrast"], sig, 1.0)
    diff = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                                  pure["batch_stats"], ref["batch_stats"])
    assert max(jax.tree_util.tree_leaves(diff)) > 1e-4


def rws_normalize(x, tc):
    from rws_jax.training.augment import normalize_images

    return normalize_images(x, tc.mean, tc.std)


def test_premise_recomputes_batch_norm_statistics_along_the_path(bn_run):
    run = bn_run
    p = json.loads((run.dir / "metrics" / "premise.json").read_text())
    seeds = p["standard_seeds"]["clean"]
    assert set(p["robust"]) == set(run.cfg.corruptions) and seeds["barrier"] >= 0
    # t = 0 is θ_std with its statistics re-estimated on the clean fine-tuning images (bn_update)
    tc = train_config(run.cfg, "finetune")
    bs = int(run.cfg.finetune.get("batch_size", 128))
    images = run.data.halves[1].images[:1024]
    v = rws.recalibrate_batch_stats(run.models.model.apply, run.models.standard(),
                                    [images[i:i + bs] for i in range(0, len(images), bs)],
                                    preprocess=lambda x: normalize_images(x, tc.mean, tc.std),
                                    step=run.patcher.stats_step)
    assert seeds["values"][0] == run.evaluator.test_accuracy(v, "clean")
