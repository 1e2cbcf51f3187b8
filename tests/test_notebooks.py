"""The Colab notebooks in colabs/: valid nbformat v4, stored without outputs, and they run.

The execution tests run each notebook with nbclient in a ``python3`` kernel, with
``RWS_JAX_NOTEBOOK_TINY=1`` (the smoke-test configuration) and the repository root as
working directory. The pipeline notebook's run directory is shared with the patching
notebook (``RWS_JAX_RUN_DIR``) so the models are trained once; the patching notebook is
also run standalone, where it trains its own tiny run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
COLABS = REPO / "colabs"
NOTEBOOKS = sorted(COLABS.glob("*.ipynb"))
PIPELINE = COLABS / "rws_cifar10_pipeline.ipynb"
PATCHING = COLABS / "patch_with_signatures.ipynb"
CELL_TIMEOUT_S = 600  # per cell; generous for a loaded 2-core machine


def test_the_notebooks_exist():
    assert PIPELINE in NOTEBOOKS and PATCHING in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_has_no_outputs(path):
    text = path.read_text(encoding="utf-8")
    json.loads(text)  # plain JSON first, for a clear error
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.kernelspec.language == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and any(c.cell_type == "markdown" for c in nb.cells)
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not cleared"


# ----------------------------------------------------------------------------- execution


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """'python3', installing an ipykernel spec into a temporary prefix if none is found."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    mp = pytest.MonkeyPatch()
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        prefix = tmp_path_factory.mktemp("jupyter")
        install(prefix=str(prefix), kernel_name="python3")
        mp.setenv("JUPYTER_PATH", os.pathsep.join(
            [str(prefix / "share" / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])]))
        KernelSpecManager().get_kernel_spec("python3")
    yield "python3"
    mp.undo()


def execute(path: Path, kernel: str, tmp: Path, **env: str):
    """Runs the notebook (TINY mode, cwd = repo root); returns it with its outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    kernel_env = {k: v for k, v in os.environ.items() if k != "RWS_JAX_RUN_DIR"}
    kernel_env.update(RWS_JAX_NOTEBOOK_TINY="1", TMPDIR=str(tmp), MPLBACKEND="Agg", **env)
    kernel_env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share an accelerator with pytest
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel,
                            resources={"metadata": {"path": str(REPO)}})
    client.execute(env=kernel_env)  # raises CellExecutionError naming the failing cell
    return nb


def text_of(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{out.ename}: {out.evalue}"
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def pipeline_run(kernel_name, tmp_path_factory):
    """The pipeline notebook executed once; (notebook with outputs, its run directory)."""
    run_dir = tmp_path_factory.mktemp("nb_pipeline_run")
    nb = execute(PIPELINE, kernel_name, tmp_path_factory.mktemp("nb_tmp"), RWS_JAX_RUN_DIR=str(run_dir))
    return nb, run_dir


@pytest.mark.slow
def test_pipeline_notebook_runs_every_stage_and_writes_the_report(pipeline_run):
    nb, run_dir = pipeline_run
    out = text_of(nb)
    assert "using: tiny" in out and "devices:" in out
    for stage in ("run-facts", "pretrain-init", "finetune-standard", "premise-standard", "finetune-robust",
                  "premise-robust", "finetune-transfer",
                  "extract-signatures", "quantize-signatures", "weight-statistics", "evaluate-accuracy",
                  "measure-storage"):
        assert f"({stage}:" in out, stage
    assert (run_dir / "report.md").is_file()
    assert {p.name for p in (run_dir / "figures").glob("*.png")} >= {"layer_change.png", "alpha.png", "storage.png"}
    for c in ("gaussian_noise", "contrast"):
        assert (run_dir / "signatures" / f"{c}.rws").is_dir()
        assert (run_dir / "signatures" / f"{c}.q8.rws").is_dir()
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the figures were not displayed"


def check_patching_outputs(out: str) -> None:
    assert "max |rws.patch - by hand|" in out
    assert "unpatch: identical to θ_std, bit for bit" in out
    assert "quantized=asymmetric/per_tensor/4" in out
    assert "composed model" in out and "(4 bit): TA" in out


@pytest.mark.slow
def test_patching_notebook_on_the_pipeline_run(pipeline_run, kernel_name, tmp_path):
    _, run_dir = pipeline_run
    nb = execute(PATCHING, kernel_name, tmp_path, RWS_JAX_RUN_DIR=str(run_dir))
    out = text_of(nb)
    assert f"using the run directory {run_dir}" in out
    check_patching_outputs(out)


@pytest.mark.slow
def test_patching_notebook_standalone(kernel_name, tmp_path):
    nb = execute(PATCHING, kernel_name, tmp_path)
    out = text_of(nb)
    assert "no RWS_JAX_RUN_DIR: training a tiny run" in out
    check_patching_outputs(out)
