"""The end-to-end pipeline on the tiny preset, the CLI and config files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rws_jax as rws
from rws_jax import cli
from rws_jax.pipeline import ConfigMismatchError, Run, load_config, preset, run_all
from rws_jax.pipeline.model_store import train_config

pytestmark = pytest.mark.slow

FIGURES = ["layer_change.png", "similarity.png", "alpha.png", "transfer.png", "storage.png"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    logs: list[str] = []
    run = Run(preset("tiny"), out, progress=False, log=logs.append)
    run_all(run)
    return run, logs


def test_pipeline_writes_report_figures_and_signatures(tiny_run):
    run, logs = tiny_run
    report = (run.dir / "report.md").read_text()
    for fig in FIGURES:
        assert (run.dir / "figures" / fig).stat().st_size > 5000
        assert f"figures/{fig}" in report
    for section in ("## 1.", "## 2.", "## 3.", "## 4.", "## 6.", "## 7.", "## Config"):
        assert section in report
    assert "command:" in report and "gaussian_noise" in report
    for c in run.cfg.corruptions:
        sig = rws.load_signature(run.signatures.path(c), like=run.models.standard())
        assert sig.name == c and len(sig.deltas) == 2 * run.cfg.keep_units  # kernel + bias per conv
        for b in run.cfg.quant_bits:
            assert rws.load_signature(run.signatures.path(c, b)).meta.quantization.endswith(f"/{b}")
    sim = json.loads((run.dir / "metrics" / "similarity.json").read_text())
    n = len(run.cfg.corruptions) * (run.cfg.robust_replicates + 1)  # seeds on the main dataset + transfer
    assert len(sim["names"]) == n and len(sim["cosine"]) == n
    assert all(abs(sim["cosine"][i][i] - 1.0) < 1e-5 for i in range(n))
    assert rws.load_signature(run.signatures.path(run.cfg.corruptions[0], replicate=1)).name == run.cfg.corruptions[0]
    acc = json.loads((run.dir / "metrics" / "accuracy.json").read_text())
    expected = {"standard", "mixture", "composed", "composed_q8_shared_range", "transfer/standard",
                "updated/standard", *(f"patched/{c}/alpha={a:g}" for c in run.cfg.corruptions for a in run.cfg.alphas)}
    assert expected <= set(acc)
    assert all(0.0 <= v <= 1.0 for d in acc.values() for v in d.values())
    storage = json.loads((run.dir / "metrics" / "storage.json").read_text())
    assert [r["bits"] for r in storage["rows"]] == [32, 8, 4]
    assert all(r["ratio"] > 1 for r in storage["rows"])


def test_merge_stage_merges_and_searches_alpha_on_validation(tiny_run):
    run, _ = tiny_run
    acc = json.loads((run.dir / "metrics" / "accuracy.json").read_text())
    cs = run.cfg.corruptions
    assert {"composed_ties", "composed_dare", "composed_searched_sum", "composed_searched_ties",
            *(f"searched/{c}" for c in cs)} <= set(acc)
    found = json.loads((run.dir / "metrics" / "alpha_search.json").read_text())
    for c in cs:
        rec = found["single"][c]
        assert rec["alphas"][c] in run.cfg.alpha_grid and 1 <= rec["evaluations"] <= run.cfg.alpha_search_budget
        # the constraint held on the validation split
        assert rec["baseline"]["ta"] - rec["metrics"]["ta"] <= run.cfg.max_ta_drop + 1e-9
    assert set(found["set"]) == {"sum", *run.cfg.merge_methods}
    # the stored TIES row is recomputable through the public API
    sigs = [rws.load_signature(run.signatures.path(c)) for c in cs]
    merged = rws.compose(sigs, 1.0, method="ties", density=run.cfg.ties_density)
    from rws_jax.training import evaluate

    a = evaluate(rws.patch(run.models.standard(), merged, 1.0), run.models.model.apply, run.data.test_set(cs[0]),
                 run.cfg.eval_batch_size, eval_step=run.evaluator.eval_step)["accuracy"]
    assert a == pytest.approx(acc["composed_ties"][cs[0]])
    report = (run.dir / "report.md").read_text()
    assert "Choosing α on the validation split" in report and "TIES merge" in report


def test_patched_accuracy_is_recomputable(tiny_run):
    """The stored number for θ_std + RWS_c equals a fresh evaluation through the public API."""
    from rws_jax.training import evaluate

    run, _ = tiny_run
    c = run.cfg.corruptions[0]
    patched = rws.patch(run.models.standard(), rws.load_signature(run.signatures.path(c)), 1.0)
    tc = train_config(run.cfg, "finetune")  # the models were trained on standardised inputs
    acc = evaluate(patched, run.models.model.apply, run.data.test_set(c), run.cfg.eval_batch_size, mean=tc.mean, std=tc.std)["accuracy"]
    stored = json.loads((run.dir / "metrics" / "accuracy.json").read_text())[f"patched/{c}/alpha=1"][c]
    assert acc == pytest.approx(stored)


def test_rerun_skips_finished_stages(tiny_run):
    run, first_logs = tiny_run
    assert any(line.strip().startswith("trained init") for line in first_logs)
    logs: list[str] = []
    run_all(Run(run.cfg, run.dir, progress=False, log=logs.append))
    assert not any(line.strip().startswith("trained") for line in logs)


def test_other_config_in_same_dir_is_refused(tiny_run):
    run, _ = tiny_run
    with pytest.raises(ConfigMismatchError, match="another config"):
        Run(run.cfg.replace(severity=3), run.dir)


def test_cli_patch_and_report(tiny_run, capsys, tmp_path):
    run, _ = tiny_run
    c = run.cfg.corruptions[0]
    rc = cli.main(["evaluate-patch", "--preset", "tiny", "--out", str(run.dir), "--signature", c, "--bits", "8",
                   "--save", str(tmp_path / "patched")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "patched" in out and c in out and (tmp_path / "patched").is_dir()
    assert cli.main(["report", "--preset", "tiny", "--out", str(run.dir), "--quiet"]) == 0


def test_config_files_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("preset: tiny\nseverity: 3\nfinetune:\n  epochs: 2\n")
    cfg = load_config(y, overrides=["keep_units=2", "corruptions=[fog]"])
    assert (cfg.name, cfg.severity, cfg.finetune, cfg.keep_units, cfg.corruptions) == ("tiny", 3, {"epochs": 2}, 2, ("fog",))
    p = tmp_path / "c.py"
    p.write_text("CONFIG = {'preset': 'offline', 'keep_units': 5}\n")
    assert load_config(p).keep_units == 5 and load_config(p).name == "offline"
    with pytest.raises(ValueError, match="unknown corruption"):
        load_config(preset_name="tiny", overrides=["corruptions=[fgo]"])
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(preset_name="nope")
    with pytest.raises(ValueError, match="unknown config field"):
        load_config(preset_name="tiny", overrides=["epochs=3"])
    for name in ("offline", "fashion_mnist_full", "cifar10_vgg16", "cifar100_vgg16"):
        preset(name)


def test_cli_entry_points(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rws_jax", "presets"], capture_output=True, text=True, check=True)
    assert "offline" in r.stdout and "cifar10_vgg16" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rws_jax", "demo", "--preset", "nope", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "unknown preset 'nope'" in r.stderr


def test_shipped_config_files_load():
    configs = Path(__file__).resolve().parent.parent / "configs"
    loaded = {p.name: load_config(p) for p in sorted(configs.glob("*.yaml")) + sorted(configs.glob("*.py"))}
    assert loaded["offline.yaml"] == preset("offline")
    assert loaded["cifar10_vgg16.yaml"].dataset == "cifar10" and len(loaded["cifar10_vgg16.yaml"].corruptions) == 19
    assert loaded["fog_and_snow_example.yaml"].corruptions == ("fog", "snow", "frost")
    assert loaded["custom_example.py"].model == "resnet20"


def test_premise_is_measured_and_reported(tiny_run):
    run, _ = tiny_run
    p = json.loads((run.dir / "metrics" / "premise.json").read_text())
    acc = json.loads((run.dir / "metrics" / "accuracy.json").read_text())
    assert (run.dir / "checkpoints" / "standard_seed1" / "done").exists()  # the second θ_std
    seeds = p["standard_seeds"]["clean"]
    assert len(seeds["ts"]) == run.cfg.premise_points and seeds["ts"][0] == 0.0 and seeds["ts"][-1] == 1.0
    assert seeds["values"][0] == acc["standard"]["clean"]  # t = 0 is θ_std itself
    assert set(p["robust"]) == set(run.cfg.corruptions)
    for c, paths in p["robust"].items():
        assert paths[c]["values"][0] == acc["standard"][c] and paths[c]["values"][-1] == acc[f"robust/{c}"][c]
    barriers = [seeds["barrier"]] + [q["barrier"] for paths in p["robust"].values() for q in paths.values()]
    assert all(b >= 0 for b in barriers) and p["max_barrier"] == max(barriers)
    assert p["met"] == (max(barriers) < p["threshold"])
    report = (run.dir / "report.md").read_text()
    assert ("**premise met**" in report) != ("**premise not met**" in report) and "figures/premise.png" in report
    change = json.loads((run.dir / "metrics" / "layer_change.json").read_text())
    assert len(change["standard_seeds"]) == len(change["units"]) and change["standard_seeds"][0] > 0
    cs = list(run.cfg.corruptions)
    for i, a in enumerate(cs):  # claim 5's sums of two signatures, every pair
        for b in cs[i + 1:]:
            assert set(acc[f"composed/{a}+{b}"]) == {"clean", a, b}
    probe = json.loads((run.dir / "metrics" / "probe.json").read_text())
    assert set(probe) == {"theta_init", "random_init"} and "linear probe" in report
    assert all(0 <= probe[k]["test_accuracy"] <= 1 and probe[k]["train_examples"] == len(run.data.halves[1])
               for k in probe)
    facts = json.loads((run.dir / "metrics" / "run_facts.json").read_text())
    assert 0 < facts["shrink"]["finetune"] <= 1 and abs(facts["shrink"]["reference"] - 0.649) < 0.002
