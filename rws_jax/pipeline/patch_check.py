"""Patching one of a run's models with signatures and measuring it before and after: what
``rws-jax evaluate-patch`` does (the CLI prints the rows and saves the patched variables)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import rws_jax as rws
from rws_jax.pipeline.run import Run

BASES = ("standard", "transfer", "updated")  # which model of the run is patched


@dataclasses.dataclass(frozen=True)
class PatchCheck:
    """The patched model and its accuracies.

    Attributes:
      patched: the patched variables.
      rows: ``(model, test set, accuracy)`` for ``model`` in ('before', 'patched'), test sets
        'clean' and each signature's corruption the run has test data for.
      notes: what the user should know about how the patch was made.
    """

    patched: dict[str, Any]
    rows: tuple[tuple[str, str, float], ...]
    notes: tuple[str, ...] = ()


def patch_and_evaluate(run: Run, *, corruptions: Sequence[str] = (), signature_files: Sequence[str | Path] = (),
                       alphas: Sequence[float] = (1.0,), bits: int | None = None,
                       base: str = "standard") -> PatchCheck:
    """Patches the run's ``base`` model (θ_std, the transfer dataset's θ_std or the updated
    backbone's) with the signature files and the run's RWS_c of ``corruptions`` (quantized
    to ``bits`` when set), one α or one per signature, and evaluates it before and after.

    A BatchNorm model whose config asks for the reference scheme is patched with it when every
    signature is one of the run's (the robust models to average BN over exist); signature
    files are applied as a pure weight patch.
    """
    if base not in BASES:
        raise ValueError(f"unknown model {base!r}; choose one of {', '.join(BASES)}")
    sigs = [rws.load_signature(f) for f in signature_files] + [
        run.signatures.quantized(c, bits) if bits else run.signatures.signature(c) for c in corruptions]
    if not sigs:
        raise ValueError("name at least one --signature CORRUPTION or --signature-file PATH")
    m = run.models
    variables = {"standard": m.standard, "transfer": lambda: m.transfer(None), "updated": m.standard_updated}[base]()
    alpha = list(alphas) if len(alphas) > 1 else alphas[0]
    transfer = base == "transfer"
    names = [s.name for s in sigs]
    notes = []
    if run.patcher.bn_mode == "reference" and all(n in run.cfg.corruptions for n in names):
        # BatchNorm model: the reference's scheme (BN <- robust models' mean, statistics re-estimated)
        patched = run.patcher.patched(variables, names, sigs, alpha, transfer=transfer)
    else:
        if run.patcher.bn_mode == "reference":
            notes.append("signatures from files are applied as a pure weight patch (no robust models to average "
                         "BatchNorm over)")
        patched = rws.patch(variables, sigs, alpha, check_base=not transfer)
    tests = ["clean", *{s.name for s in sigs if s.name in run.cfg.corruptions}]
    rows = tuple((label, t, run.evaluator.test_accuracy(v, t, transfer=transfer))
                 for label, v in (("before", variables), ("patched", patched)) for t in tests)
    return PatchCheck(patched=patched, rows=rows, notes=tuple(notes))
