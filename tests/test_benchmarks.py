"""The benchmark suite's quick mode runs and writes sane JSON and Markdown."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds benchmarks/

from benchmarks.__main__ import SECTIONS, run


def _positive_finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_mode_writes_json_and_markdown(tmp_path):
    res = run(quick=True, out=tmp_path, log=lambda *a: None)
    js = json.loads((tmp_path / "results.json").read_text())
    md = (tmp_path / "results.md").read_text()
    assert js["mode"] == "quick"
    for section in SECTIONS:
        assert section in js, section
        assert "error" not in js[section], js[section].get("error")
    assert res["total_s"] > 0

    # 1. patch: every JAX variant and the bound have positive finite medians and ratios
    case = js["patch"]["cases"][0]
    for name in ("bound_numpy_1t", "bound_numpy_mt", "ours_donated", "ours_donated_checked",
                 "ours_jit_copy", "ours_int8", "naive_tree_map"):
        v = case["variants"][name]
        assert _positive_finite(v["median_s"]) and _positive_finite(v["gbps"]), name
    for key in ("ours_fraction_of_bound", "naive_over_ours", "int8_over_ours"):
        assert _positive_finite(case["ratios"][key]), key
    assert _positive_finite(case["bound_gbps"])
    assert case["donated_in_place"] in (True, False)
    # the patch_plan row, torch's fastest loop (when torch is there) and the device label
    assert _positive_finite(case["variants"]["ours_plan_donated"]["median_s"])
    for key in ("plan_fraction_of_bound", "plan_over_bound"):
        assert _positive_finite(case["ratios"][key]), key
    if "torch_skipped" not in case:
        assert _positive_finite(case["variants"]["torch_foreach_add_"]["median_s"])
        assert _positive_finite(case["ratios"]["torch_foreach_over_ours"])
    assert case["device"] and case["bound_kind"]

    # 2. compose: K=1 and K=4
    per_k = js["compose"]["cases"][0]["per_k"]
    assert set(per_k) == {"1", "4"}
    for r in per_k.values():
        assert _positive_finite(r["fused_over_one"]) and _positive_finite(r["sequential_over_fused"])
        for key in ("fused_fraction_of_bound", "plan_fraction_of_bound", "bound_gbps"):
            assert _positive_finite(r[key]), key
        assert _positive_finite(r["variants"]["plan_fused"]["median_s"])

    # 3. extraction / quantization throughput
    sel = js["extract"]["selections"][0]
    assert _positive_finite(sel["extraction"]["extract"]["elements_per_s"])
    assert _positive_finite(sel["quantization"]["quantize_8bit"]["elements_per_s"])

    # 4. corruptions: every size; ours ran for each; imagecorruptions compared or reason recorded
    sizes = js["corruption"]["sizes"]
    assert sizes and set(js["corruption"]["per_size"]) == {str(s) for s in sizes}
    for size, summary in js["corruption"]["per_size"].items():
        pc = summary["per_corruption"]
        assert len(pc) >= 2
        for name, r in pc.items():
            assert _positive_finite(r["variants"]["ours"]["images_per_s"]), (size, name)
            assert _positive_finite(r["flatness"]), (size, name)
            assert "speedup" in r or r.get("imagecorruptions_error") or js["corruption"]["imagecorruptions"] != "ok"

    # 5. storage: signatures are smaller than the full model, quantized smaller than fp32
    rows = js["storage"]["rows"]
    assert rows and all(_positive_finite(r["ratio_fp32"]) for r in rows)
    k7 = [r for r in rows if r["k"] == 7][0]
    assert k7["ratio_8"] > k7["ratio_fp32"] > 1

    # targets table and Markdown sections
    assert {t["status"] for t in js["targets"]} <= {"met", "not met", "not measured"}
    names = " ".join(t["target"] for t in js["targets"])
    for needle in ("torch._foreach_add_", "patch_plan", "K + 2 streams", js["patch"]["cases"][0]["device"]):
        assert needle in names, needle
    for heading in ("## Targets", "## 1. Patch latency", "## 2. Composition", "## 3. Extraction",
                    "## 4. Corruption", "## 5. Storage"):
        assert heading in md, heading


def test_only_rejects_unknown_section(tmp_path):
    with pytest.raises(SystemExit):
        run(quick=True, out=tmp_path, only=["nope"])


def test_report_renders_targets_from_minimal_results():
    from benchmarks import report

    results = {"mode": "quick", "machine": {}, "storage": {
        "model": "vgg16 (width 1.0, 10 classes)", "num_params": 10, "full_model_bytes": 1000, "deltas": "x",
        "rows": [{"k": 7, "num_params": 5, "fraction_of_params": 0.5, "bytes_fp32": 100, "ratio_fp32": 10.0,
                  "bytes_8": 25, "ratio_8": 40.0, "bytes_4": 20, "ratio_4": 50.0, "bytes_2": 10, "ratio_2": 100.0}]}}
    tg = report.targets(results)
    st = [t for t in tg if "8-bit" in t["target"]][0]
    assert st["status"] == "met"
    results["targets"] = tg
    md = report.render(results)
    assert "40.0×" in md and "## 5. Storage" in md


def test_report_judges_patch_targets_per_device():
    from benchmarks import report

    def case(label, n, dev, frac, plan_frac, plan_over_bound, foreach):
        return {"label": label, "device": dev, "num_params_patched": n, "bound_s": 1e-3, "bound_kind": "numpy",
                "variants": {"ours_plan_donated": {"median_s": plan_over_bound * 1e-3}},
                "ratios": {"ours_fraction_of_bound": frac, "plan_fraction_of_bound": plan_frac,
                           "plan_over_bound": plan_over_bound, "torch_foreach_over_ours": foreach,
                           "torch_foreach_over_plan": foreach, "torch_loop_over_ours": 2.0}}

    results = {"patch": {"cases": [case("ResNet-50", 25.6e6, "cpu (x)", 0.80, 0.90, 1.1, 1.05),
                                   case("ResNet-50, default selection", 1.2e6, "cpu (x)", 0.2, 0.6, 1.7, 0.5),
                                   case("ResNet-50", 25.6e6, "gpu (y)", 0.70, 0.75, 1.3, 0.9)]},
               "compose": {"cases": [{"label": "all", "device": "cpu (x)", "per_k": {
                   "19": {"fused_fraction_of_bound": 0.7, "plan_fraction_of_bound": 0.82, "fused_over_one": 8.0}}}]}}
    tg = {t["target"]: t for t in report.targets(results)}
    assert tg["patch ≥ 25M params vs. bandwidth bound [cpu (x)]"]["status"] == "met"
    assert tg["patch ≥ 25M params vs. bandwidth bound [gpu (y)]"]["status"] == "not met"
    assert "75%" in tg["patch ≥ 25M params vs. bandwidth bound [gpu (y)]"]["measured"]
    assert tg["patch vs. torch._foreach_add_ (torch's fastest loop) [cpu (x)]"]["status"] == "not met"
    small = tg["small patch (default 7-unit selection) through patch_plan vs. bound [cpu (x)]"]
    assert small["status"] == "met" and "1.70×" in small["measured"]
    comp = tg["compose K signatures (fused) vs. its bound (K + 2 streams) [cpu (x)]"]
    assert comp["status"] == "met" and "82%" in comp["measured"]


def test_benchmark_summary_is_the_committed_run():
    """The targets table of docs/results/benchmarks.md is docs/benchmarks/benchmark_results_cpu.json
    as benchmarks.report renders it."""
    import json
    from pathlib import Path

    from benchmarks.report import RESULTS_JSON, SUMMARY_DOC, summary_block, summary_block_in

    root = Path(__file__).resolve().parent.parent
    results = json.loads((root / RESULTS_JSON).read_text())
    assert summary_block_in((root / SUMMARY_DOC).read_text()) == summary_block(results)


@pytest.mark.parametrize("name", ["cpu_spread", "autopatch_overhead_cpu"])
def test_committed_side_benchmarks_are_their_json(name):
    """docs/benchmarks/cpu_spread.md and docs/benchmarks/autopatch_overhead_cpu.md are what their benchmark writes
    from the JSON committed beside them (no number edited by hand)."""
    import importlib
    import re

    md_path = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / f"{name}.md"
    md = md_path.read_text()
    result = json.loads(md_path.with_suffix(".json").read_text())
    command = re.search(r"Written by `([^`]+)`", md).group(1)
    module = importlib.import_module("benchmarks." + {"cpu_spread": "cpu_spread",
                                                       "autopatch_overhead_cpu": "autopatch"}[name])
    assert module.to_markdown(result, command) == md


def test_committed_study_budget_is_the_committed_study():
    """docs/benchmarks/study_budget_cpu.{md,json} are what `benchmarks.study_budget` computes from
    the committed study and cost file now (it reads files only, so the numbers are exact)."""
    import re

    from benchmarks import study_budget

    root = Path(__file__).resolve().parents[1]
    md_path = root / "docs" / "benchmarks" / "study_budget_cpu.md"
    committed = json.loads(md_path.with_suffix(".json").read_text())
    command = re.search(r"Written by `([^`]+)`", md_path.read_text()).group(1)
    assert study_budget.to_markdown(committed, command) == md_path.read_text()
    costs = json.loads((root / committed["costs_file"]).read_text())
    again = study_budget.study_budget(root / committed["study"], costs)
    again.update(study=committed["study"], costs_file=committed["costs_file"])
    assert again == committed
    # the split adds up, and the epochs that fit are the floor of what the budget leaves
    assert sum(r["finetune_s"] + r["rest_s"] for r in committed["runs"].values()) + sum(
        committed["stages_without_run"].values()) == pytest.approx(committed["wall_s"])
    fit = (committed["budget_s"] - committed["rest_s"]) / committed["finetune_epoch_s"]
    assert committed["epochs_fit"] == max(0, int(fit // 1))


def test_study_budget_counts_only_the_finetuning_recipe(tmp_path):
    """Transfer models count as fine-tuning only where the transfer recipe is the fine-tuning
    recipe; pre-training never does; a fine-tuned model trained for other epochs is refused."""
    import shutil
    from types import SimpleNamespace

    from benchmarks.study_budget import finetune_models, run_budget

    names = ["init", "init_updated", "standard", "standard_seed1", "robust_fog", "mixture", "standard_updated",
             "transfer_standard", "transfer_robust_fog"]
    same = SimpleNamespace(finetune={"epochs": 7}, transfer_finetune={"epochs": 7})
    other = SimpleNamespace(finetune={"epochs": 7}, transfer_finetune={"epochs": 8})
    assert finetune_models(other, names) == names[2:7]
    assert finetune_models(same, names) == names[2:]

    root = Path(__file__).resolve().parents[1]
    costs = json.loads((root / "docs" / "benchmarks" / "study_epoch_cpu.json").read_text())
    run = tmp_path / "vgg16_seed0"
    (run / "metrics").mkdir(parents=True)
    shutil.copy(root / "docs" / "reproduce" / "vgg16_seed0" / "config.yaml", run / "config.yaml")
    times = json.loads((root / "docs" / "reproduce" / "vgg16_seed0" / "metrics" / "training_time.json").read_text())
    (run / "metrics" / "training_time.json").write_text(json.dumps(times))
    ok = run_budget(run, 3000.0, 1, costs)
    assert ok["finetune_models"] == 12 and ok["finetune_s"] + ok["rest_s"] == pytest.approx(3000.0)
    times["robust_fog"]["epochs"] = 5
    (run / "metrics" / "training_time.json").write_text(json.dumps(times))
    with pytest.raises(ValueError, match="robust_fog"):
        run_budget(run, 3000.0, 1, costs)


@pytest.mark.parametrize("page", ["docs/results/reproduction.md", "docs/guides/accelerators_and_colab.md"])
def test_pages_quote_the_committed_study_budget(page):
    """The pages that quote the study's measured budget quote docs/benchmarks/study_budget_cpu.json."""
    root = Path(__file__).resolve().parents[1]
    b = json.loads((root / "docs" / "benchmarks" / "study_budget_cpu.json").read_text())
    text = " ".join((root / page).read_text().split())
    minutes = lambda s: f"{s / 60:.1f} min"  # noqa: E731
    assert "benchmarks.study_budget" in text
    for key in ("finetune_epoch_s", "rest_s"):
        assert minutes(b[key]) in text, (page, key)
    if page.endswith("reproduction.md"):
        for key in ("wall_s", "costs_predicted_wall_s", "costs_rest_s_estimate", "finetune_s", "floor_wall_s"):
            assert minutes(b[key]) in text, (page, key)
        assert f"**{b['epochs_fit']} epochs** fit" in text
