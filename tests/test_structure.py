"""The package's shape, checked from the source: one job per module (no module over 500
lines, no class over 20 methods), reports that only read, imports at the top unless they
say what they avoid, and a curated public API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import rws_jax

PKG = Path(rws_jax.__file__).parent
MODULES = sorted(PKG.rglob("*.py"))

# Reporting modules: they read metrics files (through RunMetrics / metrics_files) and nothing else.
REPORTS = ("report", "study_report", "autopatch_report", "regime_report", "tables", "claims", "claims_before",
           "run_metrics",
           "autopatch_targets",
           "metrics_files", "markdown_blocks")
# What a report may not import: the computing side of the pipeline and the training code.
COMPUTING = ("rws_jax.pipeline.stages", "rws_jax.pipeline.run", "rws_jax.pipeline.run_data",
             "rws_jax.pipeline.model_store", "rws_jax.pipeline.signature_store", "rws_jax.pipeline.run_patching",
             "rws_jax.pipeline.evaluation", "rws_jax.pipeline.study", "rws_jax.pipeline.autopatch_eval",
             "rws_jax.pipeline.patch_check", "rws_jax.pipeline.run_and_report", "rws_jax.training", "rws_jax.models",
             "rws_jax.data")
# Imports that may stay inside a function, for the cost they avoid (the comment beside them says it).
LAZY_OK = ("torch", "matplotlib", "matplotlib.pyplot", "tensorflow_datasets", "sklearn.datasets",
           "sklearn.model_selection", "flax")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_is_one_job(path):
    assert len(path.read_text().splitlines()) <= 500, f"{path} is over 500 lines: split it by job"
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ClassDef):
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            assert len(methods) <= 20, f"{path}: class {node.name} has {len(methods)} methods"


@pytest.mark.parametrize("name", REPORTS)
def test_reports_import_nothing_that_computes(name):
    path = PKG / "pipeline" / f"{name}.py"
    for node in ast.walk(_tree(path)):
        for mod in _imported(node):
            assert not any(mod == c or mod.startswith(c + ".") for c in COMPUTING), f"{path} imports {mod}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_inside_functions_say_what_they_avoid(path):
    lines = path.read_text().splitlines()
    for fn in ast.walk(_tree(path)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            for mod in _imported(node):
                assert mod.split(".")[0] in {m.split(".")[0] for m in LAZY_OK}, \
                    f"{path}:{node.lineno} imports {mod} inside {fn.name}: move it to the top"
                assert "#" in lines[node.lineno - 1] or "#" in lines[node.lineno - 2], \
                    f"{path}:{node.lineno}: say in a comment what the in-function import of {mod} avoids"


def test_no_module_imports_another_modules_underscore_name():
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rws_jax"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path} imports {private} from {node.module}"


def test_public_api_is_curated_and_typed():
    names = list(rws_jax.__all__)
    assert len(names) == len(set(names)), "a name is listed twice in rws_jax.__all__"
    missing = [n for n in names if not hasattr(rws_jax, n)]
    assert not missing, missing
    objects = {n: getattr(rws_jax, n) for n in names}
    undocumented = [n for n, o in objects.items()
                    if (inspect.isfunction(o) or inspect.isclass(o)) and not inspect.getdoc(o)]
    assert not undocumented, undocumented
    assert (PKG / "py.typed").is_file()
    for alias in ("Alphas", "Variables", "PyTree", "SignatureLike", "SelectionLike"):
        assert alias in names
    assert rws_jax.patch.__annotations__.get("return") is not None
