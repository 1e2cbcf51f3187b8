"""README's demo tables are the committed run's metrics, as `rws-jax report --summary` prints them.

`make demo` writes results/offline; its report, figures and metrics/*.json are committed to
docs/offline_run; README holds the tables of that run between the demo-summary markers
(written by `rws-jax report --preset offline --out docs/offline_run --summary --splice README.md`).
A number typed by hand, or a stale table after a rerun, fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rws_jax.pipeline import Run, load_config, summary_markdown
from rws_jax.pipeline.report import summary_block

ROOT = Path(__file__).resolve().parent.parent


def test_readme_demo_tables_equal_the_committed_run(tmp_path):
    run_dir = ROOT / "docs" / "offline_run"
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(run_dir / "metrics", tmp_path / "metrics")
    run = Run(load_config(None, preset_name="offline"), tmp_path, progress=False, log=lambda *_: None)
    expected = summary_markdown(run)
    readme = summary_block((ROOT / "README.md").read_text())
    assert readme is not None, "README has no demo-summary markers"
    assert readme == expected


def test_summary_lists_every_model_and_corruption(tmp_path):
    run_dir = ROOT / "docs" / "offline_run"
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(run_dir / "metrics", tmp_path / "metrics")
    cfg = load_config(None, preset_name="offline")
    text = summary_markdown(Run(cfg, tmp_path, progress=False, log=lambda *_: None))
    for c in cfg.corruptions:
        assert f"RA {c}" in text and f"| {c} |" in text
    assert "Standard θ_std" in text and "mean TA" in text


def test_readme_expectations_equal_the_committed_reproduction(tmp_path):
    """README's "what to expect" block is `rws-jax report --preset reproduce --out
    docs/reproduce --summary` of the committed reproduction study (written by
    `make reproduce-docs`)."""
    from rws_jax.markdown_blocks import read_block
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_report import SUMMARY_BEGIN, SUMMARY_END, study_summary_markdown

    study = STUDIES["reproduce"]
    shutil.copytree(ROOT / "docs" / "reproduce", tmp_path / "reproduce")
    if (ROOT / "docs" / "reproduce_previous").is_dir():  # the earlier design, judged by the same rules
        shutil.copytree(ROOT / "docs" / "reproduce_previous", tmp_path / "reproduce_previous")
    expected = study_summary_markdown(study, tmp_path / "reproduce")
    readme = read_block((ROOT / "README.md").read_text(), SUMMARY_BEGIN, SUMMARY_END)
    assert readme is not None, "README has no reproduce-summary markers"
    assert readme == expected
    assert (ROOT / "docs" / "reproduce" / "report.md").is_file()


def test_readme_autopatch_tables_equal_the_committed_reproduction(tmp_path):
    from rws_jax.markdown_blocks import read_block
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_report import AUTOPATCH_BEGIN, AUTOPATCH_END, autopatch_summary_markdown

    shutil.copytree(ROOT / "docs" / "reproduce", tmp_path / "reproduce")
    expected = autopatch_summary_markdown(STUDIES["reproduce"], tmp_path / "reproduce")
    assert expected is not None, "docs/reproduce has no auto-patching metrics"
    readme = read_block((ROOT / "README.md").read_text(), AUTOPATCH_BEGIN, AUTOPATCH_END)
    assert readme == expected
