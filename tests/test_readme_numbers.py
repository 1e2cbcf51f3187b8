"""README's and the results pages' tables are the committed runs' metrics, as `rws-jax report
--summary` prints them.

`make demo` writes results/offline; its report, figures and metrics/*.json are committed to
docs/offline_run; docs/results/demo.md holds the tables of that run between the demo-summary
markers (written by `rws-jax report --preset offline --out docs/offline_run --summary --splice
docs/results/demo.md`). The reproduction study's tables are spliced by `make reproduce-docs`:
its headline into README, its summary into docs/results/reproduction.md, its auto-patching
tables into docs/results/autopatching.md. A number typed by hand, or a stale table after a
rerun, fails here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from rws_jax.pipeline import Run, RunMetrics, load_config, summary_markdown
from rws_jax.pipeline.report import summary_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def test_demo_tables_equal_the_committed_run(tmp_path):
    run_dir = ROOT / "docs" / "offline_run"
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(run_dir / "metrics", tmp_path / "metrics")
    Run(load_config(None, preset_name="offline"), tmp_path, progress=False, log=lambda *_: None)  # config check
    expected = summary_markdown(RunMetrics.from_dir(tmp_path))
    page = summary_block((RESULTS / "demo.md").read_text())
    assert page is not None, "docs/results/demo.md has no demo-summary markers"
    assert page == expected


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


def _committed_study(tmp_path):
    """A copy of the committed study and of the earlier designs beside it (docs/reproduce_*)."""
    shutil.copytree(ROOT / "docs" / "reproduce", tmp_path / "reproduce")
    for earlier in (ROOT / "docs").glob("reproduce_*"):  # the earlier designs, judged by the same rules
        shutil.copytree(earlier, tmp_path / earlier.name)
    return tmp_path / "reproduce"


def test_expectations_equal_the_committed_reproduction(tmp_path):
    """docs/results/reproduction.md's "what to expect" block is `rws-jax report --preset reproduce
    --out docs/reproduce --summary` of the committed reproduction study (written by
    `make reproduce-docs`)."""
    from rws_jax.pipeline.markdown_blocks import read_block
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_report import SUMMARY_BEGIN, SUMMARY_END, study_summary_markdown

    expected = study_summary_markdown(STUDIES["reproduce"], _committed_study(tmp_path))
    page = read_block((RESULTS / "reproduction.md").read_text(), SUMMARY_BEGIN, SUMMARY_END)
    assert page is not None, "docs/results/reproduction.md has no reproduce-summary markers"
    assert page == expected
    assert (ROOT / "docs" / "reproduce" / "report.md").is_file()


def test_readme_headline_is_the_first_table_of_the_committed_reproduction(tmp_path):
    """README's headline block opens with the first part of the study's summary, then the claims'
    verdicts of this design beside every earlier design's, from the same command."""
    from rws_jax.pipeline.markdown_blocks import read_block
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_report import (HEADLINE_BEGIN, HEADLINE_END, headline_lines, study_headline_markdown,
                                               study_summary_markdown)
    from rws_jax.pipeline.study_tables import seed_runs

    study = STUDIES["reproduce"]
    out = _committed_study(tmp_path)
    expected = study_headline_markdown(study, out)
    first = "\n".join(headline_lines(study, out, seed_runs(study, out))).rstrip("\n")
    assert expected.startswith(first) and study_summary_markdown(study, out).startswith(first)
    table = [line for line in expected[len(first):].splitlines() if line.startswith("|")]
    assert table[0] == "| claim | this design | earlier: reproduce_4_epochs | earlier: reproduce_previous |"
    assert len(table) == 2 + 7  # header, rule, the seven claims
    readme = read_block((ROOT / "README.md").read_text(), HEADLINE_BEGIN, HEADLINE_END)
    assert readme is not None, "README has no reproduce-headline markers"
    assert readme == expected


def test_autopatch_tables_equal_the_committed_reproduction(tmp_path):
    from rws_jax.pipeline.markdown_blocks import read_block
    from rws_jax.pipeline import STUDIES
    from rws_jax.pipeline.study_report import AUTOPATCH_BEGIN, AUTOPATCH_END, autopatch_summary_markdown

    shutil.copytree(ROOT / "docs" / "reproduce", tmp_path / "reproduce")
    expected = autopatch_summary_markdown(STUDIES["reproduce"], tmp_path / "reproduce")
    assert expected is not None, "docs/reproduce has no auto-patching metrics"
    page = read_block((RESULTS / "autopatching.md").read_text(), AUTOPATCH_BEGIN, AUTOPATCH_END)
    assert page == expected


def test_splice_writes_the_blocks_a_page_holds_and_refuses_a_page_with_none(tmp_path):
    """`--splice` writes each study block whose markers a page holds, and nothing else."""
    import pytest
    from rws_jax.pipeline.study_report import (HEADLINE_BEGIN, HEADLINE_END, SUMMARY_BEGIN, SUMMARY_END,
                                               splice_study_summary)

    page = tmp_path / "page.md"
    page.write_text(f"intro\n{HEADLINE_BEGIN}\nold\n{HEADLINE_END}\nend\n")
    assert splice_study_summary(page, "SUMMARY\n", "AUTO\n", "HEAD\n") == ["headline"]
    assert page.read_text() == f"intro\n{HEADLINE_BEGIN}\n\nHEAD\n\n{HEADLINE_END}\nend\n"
    other = tmp_path / "other.md"
    other.write_text(f"a page with another block only: {SUMMARY_BEGIN.replace('reproduce', 'demo')}\n{SUMMARY_END}\n")
    with pytest.raises(SystemExit, match="none of the study's"):
        splice_study_summary(other, "SUMMARY\n", None, "HEAD\n")


_PROSE = (  # results pages' prose that quotes the committed study: (page, first line, the line that ends it)
    ("reproduction.md", "How to read it:", "The study's full report, and the report of each of its runs:"),
    ("autopatching.md", "What the stream says (every figure here", "**Cost** (`python -m benchmarks.autopatch"),
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


def test_prose_figures_are_in_the_committed_reports():
    """Every decimal, pp, × and % figure that the results pages' prose quotes about the study is
    in the committed study reports (docs/reproduce and its earlier designs, docs/reproduce_*) or the study's
    measured budget (docs/benchmarks/study_budget_cpu.md, written by benchmarks.study_budget): none typed by hand."""
    pages = [*sorted((ROOT / "docs").glob("reproduce*/report.md")), ROOT / "docs" / "benchmarks" / "study_budget_cpu.md"]
    reports = "\n".join(p.read_text() for p in pages)
    reports = reports.replace("−", "-")
    for name, first, end in _PROSE:
        text = (RESULTS / name).read_text()
        start = text.index(first)
        passage = text[start:text.index(end, start)]
        figures = _quoted_figures(passage)
        assert len(figures) >= 5, (first, figures)
        missing = [f for f in figures
                   if f not in reports and not (f.endswith("%") and f[:-1] in reports)]
        assert not missing, f"docs/results/{name}: figures after {first!r} not in the committed reports: {missing}"


def test_quoted_figures_finds_units_and_decimals():
    assert _quoted_figures("up to 15.7 pp, +3.7 pp, −0.022, 40%, 0.6× and 7 convs") == [
        "15.7 pp", "+3.7 pp", "-0.022", "40%", "0.6×"]
