"""The reproduction study's budget, checked against what a committed study measured.

    python -m benchmarks.study_budget --out results/bench-study-budget --docs docs/benchmarks/study_budget_cpu.md

The design rule (:mod:`rws_jax.pipeline.study_design`) counts the fine-tuning epochs that fit
the study's 2.5 h budget from the cost file ``benchmarks.study_epoch`` writes
(``--costs``, default ``docs/benchmarks/study_epoch_cpu.json``): per-image costs timed on a
slice, plus an estimate of the part of the study that does not scale with the epochs. This
benchmark runs nothing: it reads a committed study (``--study``, default ``docs/reproduce``)
and splits the wall time that study *measured* the same way, so a fresh clone gets the same
numbers.

1. **Measured wall time** per run: the study's ``metrics/timing.json`` (summed over the
   sessions that ran it).
2. **Measured fine-tuning** per run: the ``epoch_seconds`` of every model in the run's
   ``metrics/training_time.json`` that was trained with the run's fine-tuning recipe (θ_std,
   the premise's second θ_std, θ_rob,c, the mixture model, the updated backbone's θ_std; the
   transfer models where the run's transfer recipe is its fine-tuning recipe), i.e. the time
   that scales with the fine-tuning epochs. Their validation after each epoch is not in
   ``epoch_seconds``; it is estimated as those models x the run's ``val_size`` x the
   network's tuned evaluation time per image in the cost file, and moved from the rest to
   the epoch in the second count of item 4.
3. **The rest** = measured wall time - measured fine-tuning (pre-training, evaluation, the
   premise's linear paths, signatures, reports, a resumed session's start-up).
4. **Epochs that fit** = floor((budget - rest) / (measured fine-tuning per epoch)), at the
   width and machine the study ran on, set against the rule's floor
   (:data:`rws_jax.pipeline.presets.FINETUNE_EPOCHS`); and the same with the estimated
   validation counted in the epoch instead of the rest.
5. **What the cost file predicted** for that study: its ``rest_s_estimate`` + the study's
   epochs x its ``finetune_epoch_s_tuned``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from rws_jax.pipeline.model_store import MIXTURE, STANDARD, STANDARD_UPDATED, robust_name, transfer_name
from rws_jax.pipeline.study_design import STUDY_BUDGET_S


def finetune_models(cfg, names) -> list[str]:
    """The models of a run (``training_time.json``'s keys, named as
    :mod:`rws_jax.pipeline.model_store` names its checkpoints) trained with its fine-tuning recipe."""
    transfer = transfer_name(None).removesuffix(STANDARD)  # the transfer models' prefix
    transfer_is_finetune = dict(cfg.transfer_finetune) == dict(cfg.finetune)
    out = []
    for name in names:
        if name.startswith(transfer) and not transfer_is_finetune:
            continue
        base = name.removeprefix(transfer)
        if (base in (STANDARD, STANDARD_UPDATED, MIXTURE) or base.startswith(STANDARD + "_seed")
                or base.startswith(robust_name(""))):
            out.append(name)
    return out


def run_budget(run_dir: Path, wall_s: float, sessions: int, costs: dict) -> dict:
    """One run's measured wall time split into fine-tuning and the rest, with the estimated
    validation of its fine-tuned models per epoch."""
    from rws_jax.pipeline.config import run_config_from_file

    cfg = run_config_from_file(run_dir / "config.yaml")
    times = json.loads((run_dir / "metrics" / "training_time.json").read_text())
    models = finetune_models(cfg, times)
    epochs = int(cfg.finetune["epochs"])
    wrong = [m for m in models if int(times[m]["epochs"]) != epochs]
    if wrong:
        raise ValueError(f"{run_dir.name}: models {wrong} were not trained for the run's {epochs} fine-tuning epochs")
    finetune_s = sum(sum(times[m]["epoch_seconds"]) for m in models)
    if cfg.model not in costs["networks"]:
        raise ValueError(f"{run_dir.name}: the cost file has no network {cfg.model!r}")
    eval_spi = float(costs["networks"][cfg.model]["tuned"]["eval_seconds_per_image"])
    val_epoch_s = len(models) * int(cfg.val_size or 0) * eval_spi
    return {"wall_s": wall_s, "sessions": sessions, "epochs": epochs, "finetune_models": len(models),
            "finetune_s": finetune_s, "rest_s": wall_s - finetune_s, "val_size": cfg.val_size,
            "val_epoch_s_estimate": val_epoch_s}


def study_budget(study_dir: str | Path, costs: dict, budget_s: float = STUDY_BUDGET_S) -> dict:
    """The measured split of a committed study, the epochs that fit ``budget_s`` by it, and what
    the cost file ``costs`` predicted for the study (see the module docstring)."""
    from rws_jax.pipeline.presets import FINETUNE_EPOCHS

    study_dir = Path(study_dir)
    timing = json.loads((study_dir / "metrics" / "timing.json").read_text())
    runs = {name: run_budget(study_dir / name, float(v["seconds"]), int(v.get("sessions", 1)), costs)
            for name, v in timing.items() if (study_dir / name / "config.yaml").exists()}
    epochs = {r["epochs"] for r in runs.values()}
    if len(epochs) != 1:
        raise ValueError(f"the study's runs fine-tune for different epochs: {sorted(epochs)}")
    (n_epochs,) = epochs
    wall = sum(float(v["seconds"]) for v in timing.values())  # auto-patching stages have no run directory
    finetune = sum(r["finetune_s"] for r in runs.values())
    rest = wall - finetune
    per_epoch = finetune / n_epochs
    fit = max(0, math.floor((budget_s - rest) / per_epoch))
    val = sum(r["val_epoch_s_estimate"] for r in runs.values())
    fit_val = max(0, math.floor((budget_s - (rest - n_epochs * val)) / (per_epoch + val)))
    predicted = float(costs["rest_s_estimate"]) + n_epochs * float(costs["finetune_epoch_s_tuned"])
    return {"study": str(study_dir), "budget_s": budget_s, "epochs": n_epochs, "runs": runs,
            "stages_without_run": {k: float(v["seconds"]) for k, v in timing.items() if k not in runs},
            "wall_s": wall, "finetune_s": finetune, "rest_s": rest, "finetune_epoch_s": per_epoch,
            "epochs_fit": fit, "val_epoch_s_estimate": val, "epochs_fit_with_val": fit_val,
            "floor_epochs": FINETUNE_EPOCHS, "floor_fits": max(fit, fit_val) >= FINETUNE_EPOCHS,
            "floor_wall_s": rest + FINETUNE_EPOCHS * per_epoch,
            "floor_wall_s_with_val": rest - n_epochs * val + FINETUNE_EPOCHS * (per_epoch + val),
            "costs_rest_s_estimate": float(costs["rest_s_estimate"]),
            "costs_finetune_epoch_s": float(costs["finetune_epoch_s_tuned"]),
            "costs_predicted_wall_s": predicted}


def to_markdown(r: dict, command: str) -> str:
    m = lambda s: f"{s / 60:.1f}"  # noqa: E731  (minutes)
    lines = ["# The study's budget, measured", "",
             f"Written by `{command}` from committed files only (no timing is run; the method is the docstring of "
             f"`benchmarks/study_budget.py`). Study: `{r['study']}`, {r['epochs']} fine-tuning epochs, "
             f"budget {m(r['budget_s'])} min.", "",
             "| run | sessions | wall min | fine-tuning models | fine-tuning min | rest min |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, v in r["runs"].items():
        lines.append(f"| {name} | {v['sessions']} | {m(v['wall_s'])} | {v['finetune_models']} | "
                     f"{m(v['finetune_s'])} | {m(v['rest_s'])} |")
    for name, s in r["stages_without_run"].items():
        lines.append(f"| {name} | | {m(s)} | 0 | 0.0 | {m(s)} |")
    lines.append(f"| **study** | | **{m(r['wall_s'])}** | | **{m(r['finetune_s'])}** | **{m(r['rest_s'])}** |")
    verdict = ("so the rule's floor fits" if r["floor_fits"] else
               f"so the rule's floor of {r['floor_epochs']} epochs does not fit: at {r['floor_epochs']} epochs "
               f"the study would take {m(r['floor_wall_s'])} min ({m(r['floor_wall_s_with_val'])} min with the "
               "validation counted in the epoch)")
    lines += ["",
              f"One fine-tuning epoch of the whole study, measured: **{m(r['finetune_epoch_s'])} min**; the part "
              f"that does not scale with the epochs: **{m(r['rest_s'])} min**. Epochs that fit the "
              f"{m(r['budget_s'])} min budget by these measurements: **{r['epochs_fit']}** "
              f"(the study ran {r['epochs']}; the design rule's floor is {r['floor_epochs']}); with the fine-tuned "
              f"models' validation after each epoch (estimated at {m(r['val_epoch_s_estimate'])} min an epoch) counted "
              f"in the epoch instead of the rest: **{r['epochs_fit_with_val']}**; {verdict}.", "",
              f"The cost file the design was chosen by predicted **{m(r['costs_predicted_wall_s'])} min** for this "
              f"study ({m(r['costs_rest_s_estimate'])} min of rest + {r['epochs']} x "
              f"{m(r['costs_finetune_epoch_s'])} min); it took **{m(r['wall_s'])} min**.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for study_budget.json/.md")
    p.add_argument("--docs", default=None, help="also write the Markdown (and .json beside it) here")
    p.add_argument("--study", default="docs/reproduce", help="a committed study directory")
    p.add_argument("--costs", default="docs/benchmarks/study_epoch_cpu.json",
                   help="the cost file the study's design was chosen by")
    args = p.parse_args(argv)
    from benchmarks.common import write_outputs

    command = "python -m benchmarks.study_budget " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    res = study_budget(args.study, json.loads(Path(args.costs).read_text()))
    res["costs_file"] = args.costs
    md = to_markdown(res, command)
    write_outputs(args.out, "study_budget", res, md, args.docs)
    print(md)
    print(f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
