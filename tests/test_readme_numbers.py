"""README's demo tables are the committed run's metrics, as `rws-jax report --summary` prints them.

`make demo` writes results/offline; its report, figures and metrics/*.json are committed to
docs/offline_run; README holds the tables of that run between the demo-summary markers
(written by `rws-jax report --preset offline --out docs/offline_run --summary --splice README.md`).
A number typed by hand, or a stale table after a rerun, fails here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from rws_jax.pipeline import Run, RunMetrics, load_config, summary_markdown
from rws_jax.pipeline.report import summary_block

ROOT = Path(__file__).resolve().parent.parent


def test_readme_demo_tables_equal_the_committed_run(tmp_path):
    run_dir = ROOT / "docs" / "offline_run"
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(run_dir / "metrics", tmp_path / "metrics")
    Run(load_config(None, preset_name="offline"), tmp_path, progress=False, log=lambda *_: None)  # config check
    expected = summary_markdown(RunMetrics.from_dir(tmp_path))
    readme = summary_block((ROOT / "README.md").read_text())
    assert readme is not None, "README has no demo-summary markers"
    assert readme == expected


def test_summary_lists_every_model_and_corruption(tmp_path):
    run_dir = ROOT / "docs" / "offline_run"
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(run_dir / "metrics", tmp_path / "metrics")
    cfg = load_config(None, preset_name="offline")
    Run(cfg, tmp_path, progress=False, log=lambda *_: None)  # the committed config is the preset's
    text = summary_markdown(RunMetrics.from_dir(tmp_path))
    for c in cfg.corruptions:
        assert f"RA {c}" in text and f"| {c} |" in text
    assert "Standard θ_std" in text and "mean TA" in text


def test_readme_expectations_equal_the_committed_reproduction(tmp_path):
    """README's "what to expect" block is `rws-jax report --preset reproduce --out
    docs/reproduce --summary` of the committed reproduction study (written by
    `make reproduce-docs`)."""
    from rws_jax.pipeline.markdown_blocks import read_block
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_report import SUMMARY_BEGIN, SUMMARY_END, study_summary_markdown

    study = STUDIES["reproduce"]
    shutil.copytree(ROOT / "docs" / "reproduce", tmp_path / "reproduce")
    for earlier in (ROOT / "docs").glob("reproduce_*"):  # the earlier designs, judged by the same rules
        shutil.copytree(earlier, tmp_path / earlier.name)
    expected = study_summary_markdown(study, tmp_path / "reproduce")
    readme = read_block((ROOT / "README.md").read_text(), SUMMARY_BEGIN, SUMMARY_END)
    assert readme is not None, "README has no reproduce-summary markers"
    assert readme == expected
    assert (ROOT / "docs" / "reproduce" / "report.md").is_file()


def test_readme_autopatch_tables_equal_the_committed_reproduction(tmp_path):
    from rws_jax.pipeline.markdown_blocks import read_block
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_report import AUTOPATCH_BEGIN, AUTOPATCH_END, autopatch_summary_markdown

    shutil.copytree(ROOT / "docs" / "reproduce", tmp_path / "reproduce")
    expected = autopatch_summary_markdown(STUDIES["reproduce"], tmp_path / "reproduce")
    assert expected is not None, "docs/reproduce has no auto-patching metrics"
    readme = read_block((ROOT / "README.md").read_text(), AUTOPATCH_BEGIN, AUTOPATCH_END)
    assert readme == expected


_PROSE = (  # README prose that quotes the committed study: (first line, the line that ends it)
    ("How to read it:", "## What `make demo` does"),
    ("What the stream says (every figure here", "**Cost** (`python -m benchmarks.autopatch"),
)
_QUOTED = re.compile(r"(?<![\w.])([-+]?\d+(?:\.\d+)?)(\s?pp|×|%)?|(?<![\w.])([-+]?\d+\.\d+)")


def _quoted_figures(text: str) -> list[str]:
    """The figures a prose passage quotes: decimals and numbers with a unit (pp, ×, %)."""
    figures = []
    for match in _QUOTED.finditer(text.replace("−", "-")):
        number, unit = match.group(1), match.group(2)
        if unit:
            figures.append(number + (" pp" if "pp" in unit else unit))
        elif number and "." in number:
            figures.append(number)
    return figures


def test_readme_prose_figures_are_in_the_committed_reports():
    """Every decimal, pp, × and % figure that README's prose quotes about the study is in the
    committed study reports (docs/reproduce and its earlier designs, docs/reproduce_*): none typed by hand."""
    readme = (ROOT / "README.md").read_text()
    reports = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("reproduce*/report.md")))
    reports = reports.replace("−", "-")
    for first, end in _PROSE:
        start = readme.index(first)
        passage = readme[start:readme.index(end, start)]
        figures = _quoted_figures(passage)
        assert len(figures) >= 5, (first, figures)
        missing = [f for f in figures
                   if f not in reports and not (f.endswith("%") and f[:-1] in reports)]
        assert not missing, f"README figures after {first!r} not in docs/reproduce*/report.md: {missing}"


def test_quoted_figures_finds_units_and_decimals():
    assert _quoted_figures("up to 15.7 pp, +3.7 pp, −0.022, 40%, 0.6× and 7 convs") == [
        "15.7 pp", "+3.7 pp", "-0.022", "40%", "0.6×"]
