"""Studies (the `reproduce` preset's machinery) on a tiny study: seeds sharing θ_init,
severities, the same-domain class-split pair, the BatchNorm run, the report and summary."""

import json
import shutil

import chex
import jax
import numpy as np
import pytest

from rws_jax.data import ArraySplit, DatasetSplits, class_subset, restrict_classes
from rws_jax.models import with_fresh_head
from rws_jax.pipeline import PRESETS, STUDIES, RunMetrics, Study, preset, run_study, seed_mean
from rws_jax.pipeline import study_report
from rws_jax.pipeline.study import open_study_run

_BASE = dict(PRESETS["tiny"], corruptions=["gaussian_noise", "contrast"], eval_severities=[2, 5], alphas=[1.0],
             quant_bits=[8], merge_methods=[], alpha_search=False, mixture=False, robust_replicates=1,
             transfer_dataset=None, update_backbone_epochs=0, init={"kind": "rotation"})
_EXTRA = dict(quant_bits=[], composition_rows=False, init_from="s0")
# the class-split runs skip the premise (s0 and the pipeline tests measure it) to keep the fixture cheap
_CLASSES = dict(classes=[0, 1, 2, 3, 4], eval_severities=[], corruptions=["contrast"], premise=False)
TINY_STUDY = Study(
    name="tiny_study", description="tiny",
    runs=(("s0", dict(_BASE, name="t/s0")),
          ("s1", dict(_BASE, **_EXTRA, name="t/s1", training_seed=1)),
          ("classes", dict(_BASE, **{**_EXTRA, "transfer_dataset": "fashion_mnist"}, **_CLASSES, name="t/classes",
                           transfer_classes=[5, 6, 7, 8, 9])),
          ("init_classes", dict(_BASE, **{**_EXTRA, "init_from": None}, **_CLASSES, name="t/init_classes",
                                init={"kind": "classes", "classes": [5, 6, 7, 8, 9]}))),
    # the report's single-run section is drawn for s1 here (the BN pipeline: test_pipeline_batch_norm.py)
    seed_group=("s0", "s1"), same_domain="classes", batch_norm="s1", init_comparison=("classes", "init_classes"),
    cut=("everything",))


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    run_study(TINY_STUDY, out, progress=False, log=lambda s: None)
    return out


def _acc(out, name):
    return json.loads((out / name / "metrics" / "accuracy.json").read_text())


@pytest.mark.slow
def test_seeds_share_theta_init_and_data_but_not_training(study_dir):
    runs = [open_study_run(TINY_STUDY, study_dir, n, progress=False) for n in ("s0", "s1")]
    assert not (study_dir / "s1" / "checkpoints" / "init").exists()  # θ_init is s0's
    chex.assert_trees_all_equal(runs[0].models.theta_init, runs[1].models.theta_init)
    np.testing.assert_array_equal(runs[0].data.halves[1].labels, runs[1].data.halves[1].labels)
    std0, std1 = runs[0].models.standard(), runs[1].models.standard()
    assert not np.allclose(std0["params"]["conv_0"]["kernel"], std1["params"]["conv_0"]["kernel"])
    a0, a1 = _acc(study_dir, "s0"), _acc(study_dir, "s1")
    # main rows at every severity, on the same test images
    for a in (a0, a1):
        assert {"clean", "gaussian_noise", "gaussian_noise@2", "contrast@2"} <= set(a["standard"])
        assert {"clean", "contrast", "contrast@2"} <= set(a["patched/contrast/alpha=1"])
    assert "composed" in a0 and "composed" not in a1


@pytest.mark.slow
def test_theta_init_never_saw_the_fine_tuning_labels(study_dir):
    s0 = open_study_run(TINY_STUDY, study_dir, "s0", progress=False)
    # rotation prediction: θ_init's own head has 4 outputs (quarter turns), the task's a fresh 10-way one
    assert s0.models.pretrained()["params"]["head"]["kernel"].shape[-1] == 4
    assert s0.models.theta_init["params"]["head"]["kernel"].shape[-1] == 10
    chex.assert_trees_all_equal(s0.models.pretrained()["params"]["conv_0"], s0.models.theta_init["params"]["conv_0"])
    other = open_study_run(TINY_STUDY, study_dir, "init_classes", progress=False)
    assert other.models.pretrained()["params"]["head"]["kernel"].shape[-1] == 5  # classes 5-9, its own head
    assert not np.allclose(other.models.pretrained()["params"]["head"]["kernel"], other.models.theta_init["params"]["head"]["kernel"])
    # the mechanism diagnostics: per unit, for every corruption, what the projection removes
    mech = json.loads((study_dir / "s0" / "metrics" / "mechanism.json").read_text())
    assert mech["kept"] == list(s0.signatures.selection.units(s0.models.standard())[: s0.cfg.keep_units])
    for c in s0.cfg.corruptions:
        d = mech["corruptions"][c]
        assert len(d["cos"]) == len(mech["units"]) and all(-1 <= x <= 1 for x in d["cos"])
        assert all(0 <= x <= 1 + 1e-9 for x in d["removed"])
    report = (study_dir / "report.md").read_text()
    assert "Two generic θ_init on one task" in report and "share of Δ_c removed" in report
    assert "cos(Δ_c, a)" in (study_dir / "s0" / "report.md").read_text()


@pytest.mark.slow
def test_same_domain_pair_has_disjoint_classes_and_own_heads(study_dir):
    run = open_study_run(TINY_STUDY, study_dir, "classes", progress=False)
    s0 = open_study_run(TINY_STUDY, study_dir, "s0", progress=False)
    assert run.data.main.num_classes == 5 and run.data.transfer.num_classes == 5
    assert run.models.theta_init["params"]["head"]["kernel"].shape[-1] == 5
    assert s0.models.theta_init["params"]["head"]["kernel"].shape[-1] == 10
    chex.assert_trees_all_equal(run.models.theta_init["params"]["conv_0"], s0.models.theta_init["params"]["conv_0"])
    # the transfer side trains on the fine-tuning half only: none of its images is in θ_init's half
    pre = {im.tobytes() for im in s0.data.halves[0].images}
    assert not any(im.tobytes() in pre for im in run.data.transfer.train.images)
    assert set(np.unique(run.data.transfer.test.labels)) <= set(range(5))
    acc = _acc(study_dir, "classes")
    assert {"transfer/standard", "transfer/patched/contrast", "transfer/robust/contrast",
            "reverse/patched/contrast"} <= set(acc)  # both directions of the pair


@pytest.mark.slow
def test_report_summary_and_export(study_dir, tmp_path):
    report = (study_dir / "report.md").read_text()
    for text in ("mean ± std over seeds", "What was cut", "Transfer: updated backbone, same domain, far domain",
                 "BatchNorm model: vgg16", "figures/severity.png", "[`s0`](s0/report.md)"):
        assert text in report, text
    assert (study_dir / "figures" / "severity.png").stat().st_size > 1000
    sim = json.loads((study_dir / "metrics" / "similarity.json").read_text())
    assert len(sim["names"]) == 2 * 2
    runs = [RunMetrics.from_dir(study_dir / n) for n in TINY_STUDY.seed_group]
    mean = seed_mean(runs)
    expect = np.mean([r.accuracies["standard"]["contrast@2"] for r in runs])
    assert mean.accuracies["standard"]["contrast@2"] == pytest.approx(expect)
    # the summary needs no checkpoint: the exported copy gives the same text
    summary = study_report.study_summary_markdown(TINY_STUDY, study_dir)
    dest = study_report.export_study(TINY_STUDY, study_dir, tmp_path / "docs")
    assert not list(dest.rglob("checkpoints")) and not list(dest.rglob("*.rws"))
    assert study_report.study_summary_markdown(TINY_STUDY, dest) == summary
    assert "±" in summary and "| 3. a patch recovers robustness |" in summary


@pytest.mark.slow
def test_rerun_is_resumed_not_recomputed(study_dir):
    before = {n: _acc(study_dir, n) for n in TINY_STUDY.run_names}
    ckpt = sorted(p.name for p in (study_dir / "s1" / "checkpoints").iterdir())
    run_study(TINY_STUDY, study_dir, progress=False, log=lambda s: None)
    assert {n: _acc(study_dir, n) for n in TINY_STUDY.run_names} == before
    assert sorted(p.name for p in (study_dir / "s1" / "checkpoints").iterdir()) == ckpt
    timing = json.loads((study_dir / "metrics" / "timing.json").read_text())
    assert all(timing[n]["sessions"] == 2 for n in TINY_STUDY.run_names)


@pytest.mark.slow
def test_init_from_a_missing_or_other_run_is_refused(study_dir, tmp_path):
    from rws_jax.pipeline import ConfigMismatchError, Run

    cfg = preset("tiny", name="x", init_from="nowhere")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        _ = Run(cfg, tmp_path / "x", progress=False).models.theta_init
    other = preset("tiny", name="y", init_from=str(study_dir / "s0"), model_kwargs={"width": 0.125})
    with pytest.raises(ConfigMismatchError, match="model_kwargs"):
        _ = Run(other, tmp_path / "y", progress=False).models.theta_init


@pytest.mark.parametrize("bad", [dict(classes=[1]), dict(classes=[1, 1]), dict(eval_severities=[0]),
                                 dict(transfer_dataset="fashion_mnist"),
                                 dict(transfer_dataset="fashion_mnist", classes=[0, 1], transfer_classes=[1, 2]),
                                 dict(transfer_dataset=None, transfer_classes=[0, 1])])
def test_bad_study_fields_are_refused(bad):
    with pytest.raises(ValueError):
        preset("tiny", **bad)


def test_restrict_classes_renumbers_and_class_subset_checks():
    split = ArraySplit(np.zeros((6, 2, 2, 1), np.uint8), np.array([0, 5, 7, 5, 9, 1]))
    sub = restrict_classes(split, (5, 7, 9))
    np.testing.assert_array_equal(sub.labels, [0, 1, 0, 2])
    ds = DatasetSplits(train=split, val=split, test=split, num_classes=10, name="x")
    assert class_subset(ds, (5, 9)).num_classes == 2
    with pytest.raises(ValueError, match="do not exist"):
        class_subset(ds, (5, 10))


def test_with_fresh_head_keeps_the_backbone():
    from tests.conftest import TinyCNN

    m10, m5 = TinyCNN(num_classes=10), TinyCNN(num_classes=5)
    x = np.zeros((1, 8, 8, 1), np.float32)
    v10 = m10.init(jax.random.key(0), x)
    out = with_fresh_head(v10, m5, (8, 8, 1), seed=3)
    assert out["params"]["head"]["kernel"].shape[-1] == 5
    chex.assert_trees_all_equal(out["params"]["conv_0"], v10["params"]["conv_0"])
    chex.assert_trees_all_equal(out["batch_stats"], v10["batch_stats"])
    assert m5.apply(out, x).shape == (1, 5)
    assert with_fresh_head(v10, m10, (8, 8, 1))["params"]["head"] is v10["params"]["head"]
    with pytest.raises(ValueError, match="another architecture or width"):
        with_fresh_head(v10, TinyCNN(num_classes=5, width=8), (8, 8, 1))


def test_reproduce_study_is_well_formed():
    st = STUDIES["reproduce"]
    cfgs = {n: st.config(n) for n in st.run_names}
    assert len(cfgs["vgg16_seed0"].corruptions) >= 8 and cfgs["vgg16_seed0"].test_examples is None
    assert cfgs["vgg16_seed0"].pretrain_examples is None and cfgs["vgg16_seed0"].finetune_examples is None
    assert set(cfgs["vgg16_seed0"].eval_severities) == {1, 2, 3, 4, 5}
    assert {cfgs[n].fine_tuning_seed for n in st.seed_group} == {0, 1, 2}
    assert cfgs["resnet20"].bn_mode(True) == "reference"
    names = st.run_names
    for n, c in cfgs.items():  # a run's θ_init source runs before it
        if c.init_from:
            assert names.index(c.init_from) < names.index(n)
