"""The study's design rule (issue 31): the θ_init kind by its probe, the width and epochs by
the budget, the study built on the chosen kind, and the preset following the committed map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rws_jax.pipeline import presets, regime
from rws_jax.pipeline.regime_report import design_section
from rws_jax.pipeline.study_design import LABEL_FREE_KINDS, WIDTHS, choose_design, choose_init, design_from_map

ROOT = Path(__file__).parent.parent
COSTS = json.loads((ROOT / "docs" / "benchmarks" / "study_epoch_cpu.json").read_text())


def _rows(best: str) -> list[dict]:
    return [{"init": k, "recipe": "current", "width": 0.125, "probe_common": 0.9 if k == best else 0.8}
            for k in LABEL_FREE_KINDS]


def test_study_design_rule():
    from rws_jax.pipeline.study_design import LABEL_FREE_KINDS, choose_design, choose_init, choose_width

    rows = [{"init": k, "recipe": "current", "width": 0.125, "probe_common": p}
            for k, p in (("rotation", 0.80), ("fractal", 0.85), ("other_classes", 0.85), ("same_classes", 0.99))]
    rows.append({"init": "rotation", "recipe": "long", "width": 0.125, "probe_common": 0.99})  # not the study's recipe
    d = choose_design(rows, {0.125: 7, 0.25: 4, 0.5: 1})
    # same_classes saw the task's labels: never chosen; a tie goes to the kind listed first
    assert d.init == "fractal" and LABEL_FREE_KINDS.index("fractal") < LABEL_FREE_KINDS.index("other_classes")
    assert (d.width, d.epochs) == (0.25, 4)  # the widest width that fits at least the current 4 epochs
    assert d.milestones() == [pytest.approx(1.6), pytest.approx(3.2)]
    assert choose_width({0.125: 9, 0.25: 3}) == (0.125, 9)
    with pytest.raises(ValueError, match="missing"):
        choose_init({"rotation": 0.5})
    with pytest.raises(ValueError, match="no width"):
        choose_width({0.125: 2})


def test_epochs_by_width_agrees_with_the_benchmark_file():
    from pathlib import Path

    from rws_jax.pipeline.study_design import WIDTHS, epochs_by_width

    costs = json.loads((Path(__file__).parent.parent / "docs" / "benchmarks" / "study_epoch_cpu.json").read_text())
    got = epochs_by_width(costs)
    assert got[WIDTHS[0]] == costs["epochs_fit_tuned"]  # the benchmark's own figure at width 1/8
    assert got[WIDTHS[0]] >= got[WIDTHS[1]] >= got[WIDTHS[2]]  # wider networks never fit more epochs


def _fake_image_epochs(study) -> dict:
    """Image-epochs without reading the data: 27,500 fine-tuning images a run, half for a five-class task."""
    out = {}
    for name, _ in study.runs:
        cfg = study.config(name)
        n = 27500 if cfg.classes is None else 13750
        out[name] = {"network": cfg.model, "models": 4, "finetune_examples": n, "image_epochs": 4 * n}
    return out


def test_design_counts_the_study_built_on_the_chosen_kind():
    rot = design_from_map(_rows("rotation"), COSTS, runs_for=_fake_image_epochs)
    cls = design_from_map(_rows("other_classes"), COSTS, runs_for=_fake_image_epochs)
    assert (rot.init, cls.init) == ("rotation", "other_classes")
    # the other-classes kind makes the task five classes: half the images an epoch, so more epochs fit
    assert cls.epochs > rot.epochs >= presets.FINETUNE_EPOCHS
    assert cls.width == rot.width == WIDTHS[0]
    assert 0 < cls.shrink < 1 and 0 < rot.shrink < 1
    d = cls.to_dict()
    assert d["reference_shrink"] == pytest.approx(0.649) and d["epochs_by_width"]["0.125"] == cls.epochs
    text = "\n".join(design_section({**d, "costs_file": "docs/benchmarks/study_epoch_cpu.json"}))
    assert "→ **other_classes**" in text and f"{cls.epochs} epochs" in text
    assert "Not chosen yet" in "\n".join(design_section(None))


def test_map_design_waits_for_every_label_free_kind():
    rows = [r for r in _rows("rotation") if r["init"] != "fractal"]
    assert regime.map_design(rows) is None


@pytest.mark.parametrize("kind", LABEL_FREE_KINDS)
def test_reproduce_study_on_each_label_free_kind(kind):
    study = presets.reproduce_study(kind, 0.125, 9)
    init, pretrain, classes = presets.theta_init_kind(kind)
    for name in study.run_names:
        cfg = study.config(name)  # every run is a valid config (θ_init never saw the task's labels)
        if name.startswith("vgg16_seed"):
            assert cfg.init == init and cfg.finetune["epochs"] == 9
            assert list(cfg.finetune["milestones"]) == [pytest.approx(3.6), pytest.approx(7.2)]
            assert (cfg.classes is None) == (classes is None)
    # the same-domain pair needs a second set of unseen classes: only with a ten-class task
    assert (study.same_domain is None) == (classes is not None)
    assert all(n in study.run_names for n in study.init_comparison)
    a, b = (study.config(n) for n in study.init_comparison)
    assert a.classes == b.classes == (0, 1, 2, 3, 4) and a.init != b.init
    assert any("9 epochs" in c for c in study.cut)


def test_the_rotation_design_is_the_earlier_study():
    study = presets.reproduce_study("rotation", 0.125, presets.FINETUNE_EPOCHS)
    seed0 = study.config("vgg16_seed0")
    assert seed0.init == {"kind": "rotation"} and seed0.classes is None and seed0.finetune["epochs"] == 4
    assert study.same_domain == "vgg16_classes" and study.init_comparison == ("vgg16_classes", "vgg16_init_classes")


def test_the_reproduce_preset_follows_the_committed_design():
    data = json.loads((ROOT / "docs" / "regime" / "metrics" / "regime.json").read_text())
    design = data.get("design")
    assert design is not None, "docs/regime has no design: export the full map (make regime-docs)"
    assert (presets.REPRODUCE_INIT, presets.REPRODUCE_WIDTH, presets.REPRODUCE_EPOCHS) == (
        design["init"], design["width"], design["epochs"])
    # the rule on the committed rows gives the committed design (the epochs need the data's sizes)
    assert choose_init({k: v for k, v in design["probes"].items()}) == design["init"]
    assert choose_design(data["rows"], {float(k): v for k, v in design["epochs_by_width"].items()}).init == design["init"]


@pytest.mark.slow
def test_the_committed_design_is_the_rule_on_the_committed_files():
    data = json.loads((ROOT / "docs" / "regime" / "metrics" / "regime.json").read_text())
    got = design_from_map(data["rows"], COSTS).to_dict()
    assert {k: got[k] for k in ("init", "width", "epochs")} == {k: data["design"][k] for k in ("init", "width", "epochs")}
    assert got["shrink"] == pytest.approx(data["design"]["shrink"])


def test_readme_regime_paragraph_is_the_committed_map():
    """README's paragraph on the regime map is `make regime-docs`'s splice of docs/regime."""
    from rws_jax.pipeline.markdown_blocks import read_block
    from rws_jax.pipeline.regime_report import REGIME_BEGIN, REGIME_END, regime_summary_markdown

    data = json.loads((ROOT / "docs" / "regime" / "metrics" / "regime.json").read_text())
    for doc, rel in (("README.md", "docs/regime"), ("docs/results/regime.md", "../regime")):
        block = read_block((ROOT / doc).read_text(), REGIME_BEGIN, REGIME_END)
        assert block is not None, f"{doc} has no regime-summary markers"
        assert block == regime_summary_markdown(data, docs=rel).strip("\n") + "\n", doc
