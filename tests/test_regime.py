"""The regime map: its cells, the plan's rule, a row's geometry, and the smoke-test map end to end."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from rws_jax.pipeline import presets, regime
from rws_jax.pipeline import regime_presets as P
from rws_jax.pipeline.regime_report import points, summary_sentence
from rws_jax.training import TrainConfig, weight_decay_shrink

SIZES = {"finetune": 27500, "pretrain": 27500, "test": 10000, "finetune_classes": 13748, "test_classes": 5000,
         "pretrain_classes": 13749, "fractal": 50000}


def _costs(scale: float) -> dict:
    base = {"vgg16": 5e-4, "vgg16_w0.25": 1.5e-3, "vgg16_w0.5": 5e-3}
    return {k: {"train": v * scale, "eval": v * scale / 5} for k, v in base.items()}


def test_cells_cover_the_grid_and_share_their_theta_init():
    cells = regime.regime_cells(P.REGIME_CORRUPTIONS, 12, SIZES["finetune"])
    names = [c.name for c in cells]
    assert len(names) == len(set(names)) == 5 * 3 + 1 + 2
    for init, *_ in P.INIT_KINDS:
        own = [c for c in cells if c.init == init and c.width == P.STUDY_WIDTH]
        assert own[0].fields["init_from"] is None  # the first cell of a θ_init trains it
        assert all(c.fields["init_from"] == "current" for c in own[1:])  # the others take it from there
    by = {c.name: c for c in cells}
    # the study's design is the grid's rotation/current cell: its θ_init recipe and fine-tuning recipe
    study = presets.REPRODUCE.config("vgg16_seed0")
    cur = by["rotation/current"].config()
    assert cur.finetune == study.finetune and cur.pretrain == study.pretrain and cur.init == study.init
    assert cur.model_kwargs == study.model_kwargs
    assert by["rotation/lr_div10"].config().finetune["lr"] == pytest.approx(study.finetune["lr"] / 10)
    assert by["rotation/long"].config().finetune["epochs"] == 12
    assert list(by["rotation/long"].config().finetune["milestones"]) == [pytest.approx(4.8), pytest.approx(9.6)]
    assert by["rotation_4x/current"].config().pretrain["epochs"] == 4 * study.pretrain["epochs"]
    assert by["other_classes/current"].config().classes == (0, 1, 2, 3, 4)
    assert by["other_classes/current"].config().init == {"kind": "classes", "classes": [5, 6, 7, 8, 9]}
    assert by["same_classes/current"].config().init_kind == "supervised"
    assert by["width_0.5"].config().model_kwargs["width"] == 0.5 and by["width_0.5"].fields.get("init_from") is None
    for c in cells:
        assert c.config().premise and not c.config().premise_seeds
        assert tuple(c.config().corruptions) == P.REGIME_CORRUPTIONS


def test_the_weight_decay_cell_reaches_the_reference_shrink():
    wd = regime.wd_for_shrink(P.CURRENT_RECIPE, SIZES["finetune"])
    got = weight_decay_shrink(TrainConfig(**dict(P.CURRENT_RECIPE, weight_decay=wd)), num_examples=SIZES["finetune"])
    assert got == pytest.approx(P.REFERENCE_SHRINK, abs=1e-6)
    assert wd > P.CURRENT_RECIPE["weight_decay"]  # 4 epochs need far more decay than the reference's 50
    cell = next(c for c in regime.regime_cells(P.REGIME_CORRUPTIONS, 8, SIZES["finetune"]) if c.recipe == "wd_shrink")
    assert cell.config().finetune["weight_decay"] == pytest.approx(wd)


def test_plan_takes_the_longest_recipe_that_fits():
    plan = regime.plan_regime(_costs(0.2), SIZES)
    assert plan.corruptions == P.REGIME_CORRUPTIONS and not plan.cut
    assert plan.estimate_s <= plan.budget_s
    longer = regime.regime_cells(plan.corruptions, plan.long_epochs + 1, SIZES["finetune"])
    over = sum(regime.cell_seconds(c, _costs(0.2), SIZES) for c in longer)
    assert plan.long_epochs == P.REFERENCE_EPOCHS or over > plan.budget_s  # one more epoch would not fit
    cheap = regime.plan_regime(_costs(0.001), SIZES)
    assert cheap.long_epochs == P.REFERENCE_EPOCHS  # never beyond the reference's own length


def test_plan_cuts_a_corruption_before_any_cell_then_cells_in_order():
    order = []
    for scale in (0.2, 0.8, 1.2, 1.6, 2.0, 2.6):
        try:
            plan = regime.plan_regime(_costs(scale), SIZES)
        except ValueError as e:
            assert "does not fit" in str(e)
            order.append(("impossible",))
            continue
        assert plan.estimate_s <= plan.budget_s and plan.long_epochs >= P.MIN_LONG_EPOCHS
        names = {c.name for c in plan.cells}
        cut_cells = tuple(n for n in regime.CUT_ORDER if n not in names)
        assert cut_cells == regime.CUT_ORDER[:len(cut_cells)]  # cells go in CUT_ORDER's order
        if cut_cells:
            assert plan.corruptions == P.REGIME_CORRUPTIONS[:-1]  # ... only after the corruption
            assert "fog" in plan.cut[0]
        order.append((len(plan.corruptions), cut_cells))
    assert order[0] == (3, ())
    assert any(o[0] == 2 for o in order if o != ("impossible",))  # the scan reaches the corruption cut


def test_kept_geometry_by_hand():
    init = {"params": {"conv_0": {"kernel": jnp.array([1.0, 0.0]), "bias": jnp.array([0.0])},
                       "head": {"kernel": jnp.array([5.0])}}}
    std = {"params": {"conv_0": {"kernel": jnp.array([1.0, 1.0]), "bias": jnp.array([0.0])},
                      "head": {"kernel": jnp.array([9.0])}}}
    rob = {"params": {"conv_0": {"kernel": jnp.array([2.0, 1.0]), "bias": jnp.array([0.0])},
                      "head": {"kernel": jnp.array([0.0])}}}
    g = regime.kept_geometry(init, std, rob, ["conv_0"])
    # a = (0, 1, 0), Δ = (1, 1, 0), θ_init = (1, 0, 0) over conv_0 only (the head is not kept)
    assert g["clean_change"] == pytest.approx(1.0)
    assert g["robust_change"] == pytest.approx(math.sqrt(2))
    assert g["cos"] == pytest.approx(1 / math.sqrt(2))


def test_summary_splits_points_by_the_premise():
    row = {"cell": "x", "init": "rotation", "recipe": "current", "width": 0.125, "probe": 0.8, "shrink": 0.98,
           "corruptions": {"fog": {"barrier_ta": 0.0, "barrier_ra": 0.01, "gap_closed_1": 0.8,
                                   "ta_cost_vs_standard": -0.01},
                           "gaussian_noise": {"barrier_ta": 0.05, "barrier_ra": 0.0, "gap_closed_1": -0.2,
                                              "ta_cost_vs_standard": -0.1}}}
    data = {"rows": [row], "threshold": 0.02}
    assert [p["met"] for p in points(data)] == [True, False]
    s = summary_sentence(data)
    assert "premise met (every barrier < 2 pp): 1 points, gap closed at α = 1 80%" in s
    assert "premise not met (a barrier ≥ 2 pp): 1 points, gap closed at α = 1 -20%" in s


def test_plan_needs_its_cost_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks.study_epoch"):
        regime.load_costs(tmp_path / "missing.json")


@pytest.mark.slow
def test_tiny_map_end_to_end_and_resumes(tmp_path, capsys):
    from rws_jax.cli import main

    out = tmp_path / "map"
    assert main(["regime", "--tiny", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "metrics" / "regime.json").read_text())
    assert [r["cell"] for r in data["rows"]] == list(P.TINY_CELLS) and data["missing"] == []
    for r in data["rows"]:
        v = r["corruptions"]["gaussian_noise"]
        for k in ("barrier_ta", "barrier_ra", "ta_standard", "ta_robust", "ta_patched", "clean_change", "cos"):
            assert v[k] is not None and np.isfinite(v[k]), (r["cell"], k)
        assert r["probe"] is not None and r["shrink"] is not None and 0.0 <= r["probe_common"] <= 1.0
    # the lr / 10 cell fine-tuned from the current cell's θ_init (it trained none of its own)
    assert not (out / "rotation" / "lr_div10" / "checkpoints" / "init").exists()
    assert (out / "rotation" / "current" / "checkpoints" / "init").exists()
    report = (out / "report.md").read_text()
    assert report.count("| rotation/") == 2 and (out / "figures" / "regime.png").stat().st_size > 10_000
    before = (out / "metrics" / "regime.json").read_text()
    assert main(["regime", "--tiny", "--out", str(out), "--quiet", "--export", str(tmp_path / "docs")]) == 0
    assert (out / "metrics" / "regime.json").read_text() == before  # resumed: nothing retrained or changed
    assert (tmp_path / "docs" / "report.md").is_file() and (tmp_path / "docs" / "figures" / "regime.png").is_file()
    assert main(["regime", "--tiny", "--plan", "--out", str(tmp_path / "new")]) == 0
    assert "rotation/lr_div10" in capsys.readouterr().out
    # a started map keeps its plan: the stored one round-trips exactly
    stored = regime.stored_plan(out)
    assert stored is not None and stored.to_dict() == regime.tiny_plan().to_dict()


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
