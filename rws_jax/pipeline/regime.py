"""When does patching work? The regime map: one pipeline run per cell of a grid of θ_init
kinds x fine-tuning recipes (plus a weight-decay cell and a width axis), one row each.

Each cell is a :class:`~rws_jax.pipeline.run.Run` in ``<out>/<cell>/`` running every stage
(the config turns off what the row does not read: :data:`regime_presets.BASE`); cells with
the same θ_init share it (``init_from``). After a cell's stages, :func:`cell_row` reads its
metrics and writes ``<cell>/metrics/regime_row.json``; :func:`collect_rows` gathers every
row into ``<out>/metrics/regime.json``. The report (:mod:`rws_jax.pipeline.regime_report`)
reads only that file.

**The plan** (:func:`plan_regime`) is a rule fixed before the map ran: with the per-image
costs measured by ``benchmarks.study_epoch`` (a committed file), estimate every cell's
seconds; the longest recipe gets the most epochs (at most the reference's 50) that keep the
whole map within its budget, and must get more than the current recipe's. When it cannot,
the map first drops the last corruption, then cells from the end of
:data:`CUT_ORDER`, in that order, until it can; every cut is recorded in the plan.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rws_jax import tree_paths
from rws_jax.data import fractals, restrict_classes, split_disjoint
from rws_jax.linear_probe import linear_probe
from rws_jax.pipeline import regime_presets as P
from rws_jax.pipeline.config import PipelineConfig
from rws_jax.pipeline.metrics_files import read_metrics, write_metrics
from rws_jax.pipeline.model_store import train_config
from rws_jax.pipeline.run import Run
from rws_jax.pipeline.run_data import RunData
from rws_jax.pipeline.stages import run_stages
from rws_jax.pipeline.study_design import LABEL_FREE_KINDS, design_from_map, probes_from_rows
from rws_jax.training import TrainConfig, weight_decay_shrink
from rws_jax.training.augment import normalize_images

# Cells the plan may cut, last first (the width axis, then the weight-decay cell).
CUT_ORDER = ("width_0.5", "width_0.25", "rotation/wd_shrink")


@dataclasses.dataclass(frozen=True)
class RegimeCell:
    """One cell: ``name`` (its directory), the θ_init kind and recipe labels, the width, and
    the :class:`PipelineConfig` fields of its run."""

    name: str
    init: str
    recipe: str
    width: float
    fields: dict

    def config(self) -> PipelineConfig:
        return PipelineConfig(**self.fields)


@dataclasses.dataclass(frozen=True)
class RegimePlan:
    """The cells to run, the corruptions, the longest recipe's epochs, what was cut, and the
    cost model's estimate of the whole map in seconds."""

    cells: tuple
    corruptions: tuple
    long_epochs: int
    cut: tuple
    estimate_s: float
    budget_s: float

    def to_dict(self) -> dict:
        return {"cells": [dataclasses.asdict(c) for c in self.cells], "corruptions": list(self.corruptions),
                "long_epochs": self.long_epochs, "cut": list(self.cut), "estimate_s": self.estimate_s,
                "budget_s": self.budget_s}


def _recipe(epochs: int, **changes) -> dict:
    return dict(P.CURRENT_RECIPE, epochs=epochs, milestones=[0.4 * epochs, 0.8 * epochs], **changes)


def wd_for_shrink(recipe: dict, examples: int, target: float = P.REFERENCE_SHRINK) -> float:
    """The weight decay at which ``recipe`` on ``examples`` images shrinks every weight by
    ``target`` (:func:`rws_jax.training.weight_decay_shrink`), by bisection on log(wd)."""
    def shrink(wd: float) -> float:
        return weight_decay_shrink(TrainConfig(**dict(recipe, weight_decay=wd)), num_examples=examples)

    lo, hi = 1e-6, 1.0
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if shrink(mid) > target else (lo, mid)
    return float(math.sqrt(lo * hi))


def regime_cells(corruptions: Sequence[str], long_epochs: int, finetune_examples: int,
                 wd: float | None = None) -> list[RegimeCell]:
    """Every cell of the map, in run order (a θ_init's owner before the cells sharing it).
    ``wd``: the weight-decay cell's (default :func:`wd_for_shrink` on ``finetune_examples``)."""
    recipes = (("current", P.CURRENT_RECIPE), ("lr_div10", dict(P.CURRENT_RECIPE, lr=P.CURRENT_RECIPE["lr"] / 10)),
               ("long", _recipe(long_epochs)))
    cells = []
    for init, init_dict, pretrain, classes in P.INIT_KINDS:
        owner = None
        for recipe, ft in recipes:
            name = f"{init}/{recipe}"
            fields = dict(P.BASE, name=f"regime/{name}", description=f"regime map: θ_init {init}, recipe {recipe}",
                          corruptions=list(corruptions), init=init_dict, pretrain=pretrain, finetune=ft,
                          classes=classes, init_from=None if owner is None else owner.split("/")[1])
            cells.append(RegimeCell(name, init, recipe, P.STUDY_WIDTH, fields))
            owner = owner or name
    study = next(k for k in P.INIT_KINDS if k[0] == P.STUDY_INIT)
    wd = wd_for_shrink(P.CURRENT_RECIPE, finetune_examples) if wd is None else wd
    cells.append(RegimeCell(f"{P.STUDY_INIT}/wd_shrink", P.STUDY_INIT, "wd_shrink", P.STUDY_WIDTH, dict(
        P.BASE, name=f"regime/{P.STUDY_INIT}/wd_shrink", corruptions=list(corruptions),
        description=f"regime map: the study's recipe with weight decay {wd:.4g} (shrink {P.REFERENCE_SHRINK})",
        init=study[1], pretrain=study[2], finetune=dict(P.CURRENT_RECIPE, weight_decay=wd),
        init_from="current")))
    for w in P.WIDTHS:
        cells.append(RegimeCell(f"width_{w}", P.STUDY_INIT, "current", w, dict(
            P.BASE, name=f"regime/width_{w}", description=f"regime map: the study's θ_init and recipe at width {w}",
            corruptions=list(corruptions), model_kwargs={**P.BASE["model_kwargs"], "width": w},
            init=study[1], pretrain=study[2], finetune=P.CURRENT_RECIPE)))
    return cells


# ----------------------------------------------------------------------------- cost model
def _network_key(width: float) -> str:
    return "vgg16" if width == P.STUDY_WIDTH else f"vgg16_w{width}"


def cell_seconds(cell: RegimeCell, costs: dict, sizes: dict) -> float:
    """Estimated seconds of one cell: pre-training (its own θ_init only), fine-tuning θ_std and
    each θ_rob,c, the linear probe, the premise's paths and the accuracy table, plus
    :data:`regime_presets.CELL_OVERHEAD_S`. ``costs[network]``: ``train`` and ``eval`` seconds
    per image; ``sizes``: images of the splits (``finetune``, ``pretrain``, ``test``, and
    ``*_classes`` for a five-class task)."""
    c = cell.config()
    net = costs[_network_key(cell.width)]
    five = c.classes is not None
    fine = sizes["finetune_classes" if five else "finetune"]
    test = sizes["test_classes" if five else "test"]
    k = len(c.corruptions)
    s = P.CELL_OVERHEAD_S
    if c.init_from is None:
        kind = c.init_kind
        pre = {"rotation": 4 * sizes["pretrain"], "supervised": sizes["pretrain"],
               "classes": sizes["pretrain_classes"], "fractal": sizes["fractal"]}[kind]
        s += int(c.pretrain["epochs"]) * pre * net["train"]
    s += (1 + k) * int(c.finetune["epochs"]) * fine * net["train"]
    s += 2 * (fine + test) * net["eval"]  # the probe: θ_init's and a random network's features
    s += 2 * k * int(c.premise_points) * test * net["eval"]  # TA and RA_c along θ_std ↔ θ_rob,c
    s += (1 + 7 * k) * test * net["eval"]  # θ_std, θ_rob,c and the patched rows, clean and corrupted
    return float(s)


def load_costs(path: str | Path | None = None) -> dict:
    """Per network, tuned seconds per training image (mean of clean and fog) and per
    evaluated image, from ``benchmarks.study_epoch``'s file."""
    path = Path(path or P.COSTS_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the regime plan reads its per-image costs; write it with "
                                "`python -m benchmarks.study_epoch --out results/bench-study-epoch --docs "
                                "docs/benchmarks/study_epoch_cpu.md`")
    data = json.loads(path.read_text())
    return {net: {"train": v["seconds_per_image_tuned"], "eval": v["tuned"]["eval_seconds_per_image"]}
            for net, v in data["networks"].items()}


def plan_regime(costs: dict, sizes: dict, budget_s: float = P.REGIME_BUDGET_S) -> RegimePlan:
    """The map's plan by the rule of the module docstring."""
    cut: list[str] = []
    corruptions = list(P.REGIME_CORRUPTIONS)
    dropped: set[str] = set()
    wd = wd_for_shrink(P.CURRENT_RECIPE, sizes["finetune"])
    while True:
        def cells_for(e: int) -> list[RegimeCell]:
            return [c for c in regime_cells(corruptions, e, sizes["finetune"], wd) if c.name not in dropped]

        def total(e: int) -> float:
            return sum(cell_seconds(c, costs, sizes) for c in cells_for(e))

        best = None
        for e in range(P.MIN_LONG_EPOCHS, P.REFERENCE_EPOCHS + 1):
            if total(e) <= budget_s:
                best = e
        if best is not None:
            return RegimePlan(tuple(cells_for(best)), tuple(corruptions), best, tuple(cut), total(best), budget_s)
        if len(corruptions) == len(P.REGIME_CORRUPTIONS):
            cut.append(f"corruption {corruptions[-1]} (a map with {len(corruptions)} corruptions and a longest "
                       f"recipe of {P.MIN_LONG_EPOCHS} epochs is estimated at {total(P.MIN_LONG_EPOCHS) / 60:.0f} min)")
            corruptions = corruptions[:-1]
            continue
        left = [n for n in CUT_ORDER if n not in dropped]
        if not left:
            raise ValueError(f"the regime map does not fit {budget_s / 60:.0f} min even after every cut: "
                             f"{total(P.MIN_LONG_EPOCHS) / 60:.0f} min")
        cut.append(f"cell {left[0]} (estimated {total(P.MIN_LONG_EPOCHS) / 60:.0f} min with it)")
        dropped.add(left[0])


def tiny_plan() -> RegimePlan:
    """The smoke-test map (:data:`regime_presets.TINY_CELLS` on a few hundred images): the
    code path of the real map in about a minute; its numbers mean nothing."""
    cells = []
    for cell in regime_cells(P.TINY_FIELDS["corruptions"], P.MIN_LONG_EPOCHS, P.TINY_FIELDS["finetune_examples"]):
        if cell.name in P.TINY_CELLS:
            f = dict(cell.fields, **P.TINY_FIELDS, name=cell.fields["name"].replace("regime/", "regime_tiny/"))
            f["pretrain"] = dict(f["pretrain"], epochs=P.TINY_EPOCHS)
            f["finetune"] = dict(f["finetune"], epochs=P.TINY_EPOCHS, milestones=[])
            cells.append(dataclasses.replace(cell, fields=f, width=f["model_kwargs"]["width"]))
    return RegimePlan(tuple(cells), tuple(P.TINY_FIELDS["corruptions"]), P.TINY_EPOCHS,
                      ("the smoke-test map: two cells on a few hundred images, not a result",), 0.0, 0.0)


# ----------------------------------------------------------------------------- the rows
def kept_geometry(init: Any, standard: Any, robust: Any, units: Sequence[str],
                  collections: Sequence[str] | None = ("params",)) -> dict:
    """Over the leaves of ``units`` jointly: ‖a‖/‖θ_init‖ and ‖Δ‖/‖θ_init‖ with a = θ_std −
    θ_init, Δ = θ_rob − θ_init, and cos(Δ, a)."""
    fi, _ = tree_paths.flatten(init)
    fs, _ = tree_paths.flatten(standard)
    fr, _ = tree_paths.flatten(robust)
    colls = tree_paths.collection_of(init)
    keep = set(units)
    aa = dd = da = xx = 0.0
    for p, x in fi.items():
        if tree_paths.unit_of(p, colls[p]) not in keep or not np.issubdtype(np.asarray(x).dtype, np.floating):
            continue
        if collections is not None and colls[p] is not None and colls[p] not in collections:
            continue
        x0 = np.asarray(x, np.float64)
        a = np.asarray(fs[p], np.float64) - x0
        d = np.asarray(fr[p], np.float64) - x0
        aa, dd, da, xx = aa + float((a * a).sum()), dd + float((d * d).sum()), da + float((a * d).sum()), \
            xx + float((x0 * x0).sum())
    return {"clean_change": math.sqrt(aa / xx) if xx else float("nan"),
            "robust_change": math.sqrt(dd / xx) if xx else float("nan"),
            "cos": da / math.sqrt(aa * dd) if aa > 0 and dd > 0 else float("nan")}


def _gap_closed(acc: dict, c: str, alpha: str) -> float | None:
    p = acc.get(f"patched/{c}/alpha={alpha}")
    std, rob = acc.get("standard"), acc.get(f"robust/{c}")
    if not (p and std and rob) or rob[c] - std[c] == 0:
        return None
    return (p[c] - std[c]) / (rob[c] - std[c])


def common_task_probe(run: Run) -> float:
    """θ_init's linear probe on the task every label-free θ_init kind can be compared on: the
    other-classes kind's task (classes :data:`regime_presets.COMMON_PROBE_CLASSES` of the
    fine-tuning half, scored on the same classes of the test set), whatever the cell's own task.
    Inputs normalised as the cell's fine-tune sees them."""
    tc = train_config(run.cfg, "finetune")
    full = run.data.full
    fine = restrict_classes(split_disjoint(full.train, 2, seed=run.cfg.seed)[1], P.COMMON_PROBE_CLASSES)
    test = restrict_classes(full.test, P.COMMON_PROBE_CLASSES)
    res = linear_probe(run.models.model, run.models.theta_init, (fine.images, fine.labels), (test.images, test.labels),
                       preprocess=lambda x: normalize_images(x, tc.mean, tc.std))
    return float(res.test_accuracy)


def cell_row(run: Run, cell: RegimeCell) -> dict:
    """The cell's row (one entry per corruption), from its metrics and models; written to
    ``<cell>/metrics/regime_row.json``."""
    acc = read_metrics(run.dir, "accuracy") or {}
    premise = read_metrics(run.dir, "premise") or {}
    probe = read_metrics(run.dir, "probe") or {}
    facts = read_metrics(run.dir, "run_facts") or {}
    units = facts.get("units_kept") or run.signatures.kept_units()
    row: dict[str, Any] = {"cell": cell.name, "init": cell.init, "recipe": cell.recipe, "width": cell.width,
                           "epochs": int(run.cfg.finetune["epochs"]), "lr": float(run.cfg.finetune["lr"]),
                           "weight_decay": float(run.cfg.finetune["weight_decay"]),
                           "probe": probe.get("theta_init", {}).get("test_accuracy"),
                           "probe_random": probe.get("random_init", {}).get("test_accuracy"),
                           "probe_common": common_task_probe(run),
                           "shrink": facts.get("shrink", {}).get("finetune"),
                           "classes": None if run.cfg.classes is None else list(run.cfg.classes), "corruptions": {}}
    std = acc.get("standard", {})
    for c in run.cfg.corruptions:
        rob = acc.get(f"robust/{c}", {})
        p1 = acc.get(f"patched/{c}/alpha=1", {})
        paths = premise.get("robust", {}).get(c, {})
        geo = kept_geometry(run.models.theta_init, run.models.standard(), run.models.robust(c), units,
                            collections=run.cfg.collections)
        row["corruptions"][c] = {
            "barrier_ta": paths.get("clean", {}).get("barrier"), "barrier_ra": paths.get(c, {}).get("barrier"),
            "ta_standard": std.get("clean"), "ta_robust": rob.get("clean"), "ta_patched": p1.get("clean"),
            "ra_standard": std.get(c), "ra_robust": rob.get(c), "ra_patched": p1.get(c),
            "gap_closed_0.5": _gap_closed(acc, c, "0.5"), "gap_closed_1": _gap_closed(acc, c, "1"),
            "ta_cost_vs_standard": None if p1.get("clean") is None else p1["clean"] - std["clean"],
            "ta_cost_vs_robust": None if p1.get("clean") is None else p1["clean"] - rob["clean"],
            **geo}
    write_metrics(run.dir, "regime_row", row)
    return row


def plan_from_dict(d: dict) -> RegimePlan:
    """The :class:`RegimePlan` of :meth:`RegimePlan.to_dict`."""
    cells = tuple(RegimeCell(c["name"], c["init"], c["recipe"], float(c["width"]), dict(c["fields"]))
                  for c in d["cells"])
    return RegimePlan(cells, tuple(d["corruptions"]), int(d["long_epochs"]), tuple(d["cut"]),
                      float(d["estimate_s"]), float(d["budget_s"]))


def stored_plan(out: str | Path) -> RegimePlan | None:
    """The plan a map directory was started with (``metrics/regime_plan.json``), if any."""
    d = read_metrics(out, "regime_plan")
    return None if d is None else plan_from_dict(d)


def run_regime(plan: RegimePlan, out: str | Path, *, progress: bool = True, log: Callable[[str], None] = print,
               only: Sequence[str] | None = None) -> Path:
    """Runs every cell of ``plan`` (or ``only`` these) in order, each resuming what its
    directory holds, writes each row, then ``<out>/metrics/regime.json``.

    A directory keeps the plan it was started with: when ``metrics/regime_plan.json`` exists
    its plan is run (and a different ``plan`` is only reported), so a map resumed after the
    cost file changed does not mix two plans."""
    out = Path(out)
    old = stored_plan(out)
    if old is not None and old.to_dict() != plan.to_dict():
        log(f"regime map: {out} was started with another plan (metrics/regime_plan.json); resuming that one "
            "(start a new directory for the new plan)")
        plan = old
    elif old is None:
        write_metrics(out, "regime_plan", plan.to_dict())
    for cell in plan.cells:
        if only and cell.name not in only:
            continue
        run = Run(cell.config(), out / cell.name, progress=progress, log=log)
        log(f"=== regime map: {cell.name} ({run.cfg.description})")
        if read_metrics(run.dir, "regime_row") is None:
            run_stages(run)
            cell_row(run, cell)
    collect_rows(plan, out)
    return out


def collect_rows(plan: RegimePlan, out: str | Path) -> dict:
    """Every written row in plan order (cells not run yet listed as missing) into
    ``<out>/metrics/regime.json``."""
    out = Path(out)
    rows, missing = [], []
    for cell in plan.cells:
        r = read_metrics(out / cell.name, "regime_row")
        (rows.append(r) if r is not None else missing.append(cell.name))
    data = {"plan": plan.to_dict(), "rows": rows, "missing": missing, "threshold": 0.02,
            "design": map_design(rows)}
    write_metrics(out, "regime", data)
    return data


def map_design(rows: list[dict], costs_file: str | Path = P.COSTS_FILE) -> dict | None:
    """The study's design by :func:`rws_jax.pipeline.study_design.design_from_map` once every
    label-free θ_init kind's row is in (else None), with the cost file it read."""
    if any(k not in probes_from_rows(rows) for k in LABEL_FREE_KINDS):
        return None
    costs = json.loads(Path(costs_file).read_text())
    return {**design_from_map(rows, costs).to_dict(), "costs_file": str(costs_file)}


def regime_sizes() -> dict:
    """Images of the splits the cost model needs, from the map's data (the study's): the
    fine-tuning and pre-training halves and the test set, for all ten classes and for the
    five-class task of the other-classes θ_init, and the fractal θ_init's images."""
    base = PipelineConfig(**dict(P.BASE, name="regime/sizes"))
    five = next(k for k in P.INIT_KINDS if k[3] is not None)
    sizes = RunData(base, log=lambda *_: None).sizes()
    sub = RunData(base.replace(classes=five[3]), log=lambda *_: None).sizes()
    return {"finetune": sizes["finetune"], "pretrain": sizes["pretrain"], "test": sizes["test"],
            "finetune_classes": sub["finetune"], "test_classes": sub["test"],
            "pretrain_classes": sub["pretrain"],
            "fractal": fractals.DEFAULT_CLASSES * fractals.DEFAULT_IMAGES_PER_CLASS}
