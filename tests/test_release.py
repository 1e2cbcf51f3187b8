"""A released model with its signatures: the files, their checksums, every refusal, and a
release exported from a real (tiny) run measured again from the release alone."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import chex
import pytest

import rws_jax as rws
from rws_jax.cli.main import main as cli_main
from rws_jax.files.release import SUMS_FILE, checksum_lines

ROOT = Path(__file__).parent.parent


@pytest.fixture()
def release(tmp_path, tiny_models, sigs):
    _, _, std, _, _ = tiny_models
    fog, snow = (rws.quantize(s, 8) for s in sigs)
    return rws.write_release(tmp_path / "rel", std, {"fog": fog, "snow": snow}, {"note": "tiny"})


def _snapshot(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_round_trip(release, tiny_models, sigs):
    _, _, std, _, _ = tiny_models
    rel = rws.load_release(release)
    chex.assert_trees_all_equal(rel.variables, std)
    assert set(rel.signatures) == {"fog", "snow"} and rel.manifest["note"] == "tiny"
    chex.assert_trees_all_close(rws.patch(rel.variables, rel.signatures["fog"]),
                                rws.patch(std, rws.quantize(sigs[0], 8)))
    assert rel.manifest["signatures"] == {"fog": "signatures/fog.rws", "snow": "signatures/snow.rws"}
    files = rws.verify_release(release)
    assert "model.msgpack" in files and "release.json" in files and any(f.startswith("signatures/fog.rws/") for f in files)
    only = rws.load_release(release, ["snow"])
    assert list(only.signatures) == ["snow"]


def test_sums_file_is_what_sha256sum_reads(release):
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum on this machine")
    done = subprocess.run(["sha256sum", "-c", "--quiet", SUMS_FILE], cwd=release, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (release / SUMS_FILE).read_text() == checksum_lines(release)


def _flip_last_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-1] ^= 1
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("damage,match", [
    (lambda r: _flip_last_byte(r / "model.msgpack"), "model.msgpack does not match its sha256"),
    (lambda r: (r / "model.msgpack").write_bytes((r / "model.msgpack").read_bytes()[:100]), "model.msgpack does not match"),
    (lambda r: (r / "release.json").write_text((r / "release.json").read_text().replace("tiny", "tinY")),
     "release.json does not match"),
    (lambda r: shutil.rmtree(r / "signatures" / "snow.rws"), "snow.rws/.* listed in SHA256SUMS but missing"),
    (lambda r: (r / "extra.txt").write_text("x"), "extra.txt not listed in SHA256SUMS"),
    (lambda r: (r / "signatures" / SUMS_FILE).write_text("x"), "signatures/SHA256SUMS not listed"),
    (lambda r: (r / SUMS_FILE).unlink(), "no SHA256SUMS"),
    (lambda r: (r / SUMS_FILE).write_text("nonsense\n"), "not a '<sha256>  <path>' line"),
    (lambda r: (r / SUMS_FILE).write_text("0" * 64 + "  ../outside\n"), "leaves the release directory"),
])
def test_damaged_release_is_refused_naming_the_file(release, damage, match):
    damage(release)
    before = _snapshot(release)
    with pytest.raises(rws.ReleaseFileError, match=match):
        rws.load_release(release)
    assert _snapshot(release) == before  # nothing the user had is changed


def test_other_refusals(release, tmp_path, tiny_models, sigs):
    with pytest.raises(rws.ReleaseFileError, match="no such release directory"):
        rws.load_release(tmp_path / "missing")
    with pytest.raises(rws.ReleaseFileError, match=r"no signature \['rain'\]"):
        rws.load_release(release, ["rain"])
    with pytest.raises(rws.OutputExistsError):
        rws.write_release(release, tiny_models[2], {}, {})
    with pytest.raises(rws.ReleaseFileError, match="cannot be a file name"):
        rws.write_release(tmp_path / "bad", tiny_models[2], {"../x": sigs[0]}, {})
    with pytest.raises(rws.ReleaseFileError, match="would replace a file of the release"):
        rws.write_release(tmp_path / "bad", tiny_models[2], {}, {}, text_files={"SHA256SUMS": ""})
    assert not (tmp_path / "bad").exists()


def test_cli_verify_and_its_refusal(release, capsys):
    assert cli_main(["release", "verify", str(release)]) == 0
    assert "ok:" in capsys.readouterr().out
    _flip_last_byte(release / "release.json")
    assert cli_main(["release", "verify", str(release)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rws-jax: error:") and "release.json does not match" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_release_of_a_tiny_run_measures_what_the_run_measured(tmp_path, capsys):
    from rws_jax.pipeline import Run, preset
    from rws_jax.pipeline.stages import run_stage
    from rws_jax.pipeline.config import PipelineConfig
    from rws_jax.pipeline.release_export import evaluate_release, export_release
    from rws_jax.pipeline.run_data import RunData

    cfg = preset("tiny", name="tiny_release", corruptions=["contrast"], quant_bits=[8], alphas=[1.0],
                 eval_severities=[], merge_methods=[], alpha_search=False, transfer_dataset=None,
                 update_backbone_epochs=0, robust_replicates=1, composition_rows=False, mixture=False, premise=False)
    run = Run(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="has not measured"):
        export_release(run, tmp_path / "early")
    # only the stages a release needs
    for stage in ("run-facts", "pretrain-init", "finetune-standard", "finetune-robust", "extract-signatures",
                  "quantize-signatures", "evaluate-accuracy"):
        run_stage(run, stage)
    dest = export_release(run, tmp_path / "release")
    manifest = json.loads((dest / "release.json").read_text())
    assert manifest["bits"] == 8 and manifest["corruptions"] == ["contrast"]
    got = evaluate_release(dest)
    # the release alone (its model, its 8-bit signatures, the test sets rebuilt from its config)
    # gives what the run measured ...
    exp = manifest["expected_accuracy"]
    assert got.keys() == exp.keys() and all(got[v] == pytest.approx(exp[v]) for v in got)
    # ... because each piece is the run's: the patched model bit for bit, the test sets image for image
    rel = rws.load_release(dest)
    for c in cfg.corruptions:
        chex.assert_trees_all_equal(rws.patch(rel.variables, rel.signatures[c]),
                                    rws.patch(run.models.standard(), run.signatures.quantized(c, 8)))
        rebuilt = RunData(PipelineConfig(**manifest["config"]), log=lambda *_: None).test_set(c)
        chex.assert_trees_all_equal((rebuilt.images, rebuilt.labels), (run.data.test_set(c).images,
                                                                      run.data.test_set(c).labels))
    assert cli_main(["release", "evaluate", str(dest), "--sig", "contrast"]) == 0
    out = capsys.readouterr().out
    assert "patched/contrast" in out and "the run measured" in out
    # the CLI export writes the same release, and splices its accuracies into a Markdown file
    from rws_jax.pipeline.release_report import RELEASE_BEGIN, RELEASE_END

    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    doc.write_text(f"before\n{RELEASE_BEGIN}\nold\n{RELEASE_END}\nafter\n")
    assert cli_main(["release", "export", "--run", str(run.dir), "--out", str(tmp_path / "again"),
                     "--splice", str(doc)]) == 0
    again = json.loads((tmp_path / "again" / "release.json").read_text())
    assert again["command"] == f"rws-jax release export --run {run.dir} --out {tmp_path / 'again'} --bits 8"
    assert (tmp_path / "again" / "README.md").is_file()
    assert {k: v for k, v in again.items() if k != "command"} == {k: v for k, v in manifest.items() if k != "command"}
    assert (tmp_path / "again" / "model.msgpack").read_bytes() == (dest / "model.msgpack").read_bytes()
    readme = (tmp_path / "again" / "README.md").read_text()  # written from the manifest, checksummed
    assert "README.md" in rws.verify_release(tmp_path / "again") and "## What to expect" in readme
    assert f"| contrast | {100 * exp['standard']['contrast']:.1f} |" in readme
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert f"| RA θ_std (%) | {100 * exp['standard']['contrast']:.1f} |" in text
    assert "[the release's README](../again/README.md)" in text  # the link as the page reaches it


RELEASE = ROOT / "docs" / "reproduce" / "release"


@pytest.mark.skipif(not RELEASE.is_dir(), reason="no committed release yet (make reproduce-docs)")
def test_the_committed_release_verifies_and_fits_its_network():
    rel = rws.load_release(RELEASE)
    from rws_jax.models import get_model

    net = rel.manifest["network"]
    model = get_model(net["model"], net["num_classes"], **net["model_kwargs"])
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1))))
    chex.assert_trees_all_equal_shapes_and_dtypes(rel.variables, shapes)
    assert sorted(rel.signatures) == sorted(rel.manifest["corruptions"]) and len(rel.signatures) == 8
    from rws_jax.quantized_tensor import QuantizedTensor

    assert all(isinstance(v, QuantizedTensor) and v.bits == 8 for s in rel.signatures.values() for v in s.deltas.values())
    total = sum(p.stat().st_size for p in RELEASE.rglob("*") if p.is_file())
    assert total < 5 * 2 ** 20  # a few MB at most


@pytest.mark.slow
@pytest.mark.skipif(not RELEASE.is_dir(), reason="no committed release yet (make reproduce-docs)")
def test_the_committed_release_gives_the_accuracy_readme_states():
    from rws_jax.pipeline.release_export import evaluate_release

    rel = json.loads((RELEASE / "release.json").read_text())
    names = ["fog", "gaussian_noise"]
    got = evaluate_release(RELEASE, names)
    exp = rel["expected_accuracy"]
    for v, sets in got.items():
        for t, acc in sets.items():
            assert acc == pytest.approx(exp[v][t], abs=0.002), (v, t)  # 10 test images of 5,000 at most


def test_release_summary_lists_every_corruption_in_order():
    from rws_jax.pipeline.release_report import release_summary_markdown

    exp = {"standard": {"clean": 0.9, "fog": 0.3, "snow": 0.5},
           "patched/fog": {"clean": 0.8, "fog": 0.7}, "patched/snow": {"clean": 0.85, "snow": 0.6}}
    md = release_summary_markdown({"expected_accuracy": exp, "corruptions": ["fog", "snow"], "bits": 8,
                                   "test_examples": 1000}, "rel")
    assert "θ_std's TA 90.0%" in md and "1,000 test images" in md and "(rel/README.md)" in md
    assert "| corruption | fog | snow |" in md
    assert "| RA θ_std (%) | 30.0 | 50.0 |" in md and "| RA patched (%) | 70.0 | 60.0 |" in md
    assert "| TA patched (%) | 80.0 | 85.0 |" in md


@pytest.mark.skipif(not RELEASE.is_dir(), reason="no committed release yet (make reproduce-docs)")
def test_readme_release_block_is_the_committed_release():
    """README's accuracies of the released model are `make reproduce-docs`'s splice of its release.json."""
    from rws_jax.pipeline.markdown_blocks import read_block
    from rws_jax.pipeline.release_report import RELEASE_BEGIN, RELEASE_END, release_summary_markdown

    manifest = json.loads((RELEASE / "release.json").read_text())
    block = read_block((ROOT / "README.md").read_text(), RELEASE_BEGIN, RELEASE_END)
    assert block is not None, "README.md has no release-summary markers"
    assert block == release_summary_markdown(manifest, "docs/reproduce/release")
