"""Command line: ``rws-jax <command>`` or ``python -m rws_jax <command>``.

The top level is the user's tasks::

    rws-jax run        --preset NAME | --config FILE [--set key=value ...] [--out DIR]
    rws-jax demo       (an alias of `run`; the offline preset is the default of both)
    rws-jax reproduce  (an alias of `run --preset reproduce`, with --only RUN)
    rws-jax report     [--summary [--splice FILE ...]] [--export DIR]
    rws-jax regime     the regime map (--plan, --only CELL, --export DIR, --tiny)
    rws-jax autopatch  evaluate auto-patching on a run
    rws-jax evaluate-patch --signature fog ...  patch a run's model and evaluate it
    rws-jax stage NAME  one stage of the pipeline (`rws-jax stage --help` lists them)
    rws-jax sig extract|info|verify|compose|patch   signature files on any checkpoint
    rws-jax release export|verify|evaluate       a released model with its signatures
    rws-jax import-torch FILE --model NAME --out DIR
    rws-jax presets | corruption-grid

As a program (``rws-jax``, ``python -m rws_jax``) it first sets the XLA:CPU flags of
:mod:`rws_jax.cpu_tuning` (faster training on CPUs); ``--xla-defaults`` anywhere on the line
keeps XLA's defaults.

Every pipeline command takes ``--preset NAME`` or ``--config FILE`` (YAML or Python),
``--set key=value`` overrides and ``--out DIR`` (the run directory; default
``results/<preset>``). Stages cache their outputs in the run directory, so rerunning a
command skips what is done. The commands parse arguments and print; the work is the
library's (:mod:`rws_jax.pipeline`, :mod:`rws_jax.cli.signature_commands` for signature files).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

import numpy as np

import rws_jax as rws
from rws_jax.cpu_tuning import apply_cpu_tuning
from rws_jax.data import DatasetNotFoundError
from rws_jax.errors import OutputExistsError, RWSError, one_line
from rws_jax.corruptions import grid
from rws_jax.models import TorchImportError, from_torch_state_dict, model_family, torch_load
from rws_jax.pipeline import STUDIES, PRESETS, ConfigMismatchError, Run, RunMetrics, load_config, run_all, run_study
from rws_jax.pipeline import autopatch_eval, autopatch_report, regime, regime_report, report, stages, study_report
from rws_jax.pipeline.markdown_blocks import write_block
from rws_jax.pipeline.metrics_files import read_metrics
from rws_jax.pipeline.patch_check import patch_and_evaluate
from rws_jax.pipeline.stages import STAGES
from rws_jax.pipeline.study import open_study_run
from rws_jax.cli.release_commands import add_parser as add_release_parser
from rws_jax.cli.signature_commands import add_parser as add_sig_parser


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="named preset (see `rws-jax presets`); default: offline")
    p.add_argument("--config", default=None, help="YAML or Python config file (may name a preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set finetune.epochs=3 (repeatable)")
    p.add_argument("--out", default=None, help="run directory (default results/<preset name>)")
    p.add_argument("--force-config", action="store_true",
                   help="reuse a run directory made with another config")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _command_line() -> str:
    return "rws-jax " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n"


def _make_run(args, record: bool = True):

    preset = args.preset or (None if args.config else "offline")
    cfg = load_config(args.config, preset_name=preset, overrides=args.overrides)
    out = Path(args.out or f"results/{cfg.name}")
    run = Run(cfg, out, progress=not args.quiet, force_config=args.force_config)
    if record:  # the command the report names as having produced the run
        (out / "command.txt").write_text(_command_line())
    return run


def _study_of(args):
    """The study named by ``--preset`` (None for a plain preset or a config file)."""

    if args.preset in STUDIES:
        if args.config or args.overrides or args.force_config:
            raise ValueError(f"{args.preset} is a study of several runs: --config, --set and --force-config do "
                             "not apply (edit rws_jax/pipeline/presets.py or run its runs one by one)")
        return STUDIES[args.preset]
    return None


def _study_dir(study, args) -> Path:
    return Path(args.out or f"results/{study.name}")


def _cmd_presets(args) -> int:

    for name, d in PRESETS.items():
        print(f"{name:20s} {d.get('description', '')}")
    for name, st in STUDIES.items():
        print(f"{name:20s} (study of {len(st.runs)} runs) {st.description}")
    return 0


def _cmd_run(args) -> int:

    study = _study_of(args)
    if study is None:
        run_all(_make_run(args))
        return 0
    out = _study_dir(study, args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(_command_line())
    print(run_study(study, out, progress=not args.quiet, only=getattr(args, "only", None)))
    return 0


def _cmd_reproduce(args) -> int:
    args.preset, args.config, args.overrides, args.force_config = "reproduce", None, [], False
    return _cmd_run(args)


def _cmd_regime(args) -> int:
    out = Path(args.out or ("results/regime_tiny" if args.tiny else "results/regime"))
    plan = regime.stored_plan(out)  # a started map keeps its plan
    if plan is None:
        plan = regime.tiny_plan() if args.tiny else regime.plan_regime(regime.load_costs(args.costs),
                                                                         regime.regime_sizes())
    if args.plan:
        for cell in plan.cells:
            ft = cell.fields["finetune"]
            print(f"{cell.name:24s} width {cell.width:<6g} epochs {ft['epochs']:<3} lr {ft['lr']:<7g} "
                  f"wd {ft['weight_decay']:.4g}  init_from {cell.fields.get('init_from')}")
        print(f"corruptions {', '.join(plan.corruptions)}; estimated {plan.estimate_s / 60:.0f} min of "
              f"{plan.budget_s / 60:.0f}; cut: {'; '.join(plan.cut) or 'nothing'}")
        return 0
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        (out / "command.txt").write_text(_command_line())
        regime.run_regime(plan, out, progress=not args.quiet, only=args.only)
    else:
        regime.collect_rows(plan, out)
    print(regime_report.write_regime_report(out, command=_command_line().strip()))
    if args.export:
        print(regime_report.export_regime(out, args.export))
    for doc in args.splice or []:  # links relative to each file
        data = read_metrics(out, "regime")
        rel = os.path.relpath(Path(args.export or out), Path(doc).parent)
        write_block(Path(doc), regime_report.REGIME_BEGIN, regime_report.REGIME_END,
                    "\n" + regime_report.regime_summary_markdown(data, docs=rel))
        print(f"wrote the regime map's summary into {doc}")
    return 0


def _cmd_stage(args) -> int:

    run = _make_run(args)
    if args.stage == "finetune-robust" and args.corruption:
        stages.finetune_robust(run.models, args.corruption, replicates=run.cfg.robust_replicates, log=run.log)
    elif args.stage == "quantize-signatures" and args.bits:
        stages.quantize_signatures(run.signatures, list(run.cfg.corruptions), args.bits, log=run.log)
    else:
        stages.run_stage(run, args.stage)
    return 0


def _cmd_report(args) -> int:

    study = _study_of(args)
    if study is None:
        run_dir = _make_run(args, record=False).dir
        if not args.summary:
            print(report.write_report(run_dir))
            return 0
        text = report.summary_markdown(RunMetrics.from_dir(run_dir))
        if args.splice:
            for doc in args.splice:
                report.splice_summary(Path(doc), text)
                print(f"wrote the summary tables into {doc}")
        else:
            print(text, end="")
        return 0
    out = _study_dir(study, args)
    if args.summary:
        text = study_report.study_summary_markdown(study, out, previous=args.previous)
        auto = study_report.autopatch_summary_markdown(study, out)
        if args.splice:
            headline = study_report.study_headline_markdown(study, out)
            for doc in args.splice:
                written = study_report.splice_study_summary(Path(doc), text, auto, headline)
                print(f"wrote the {study.name} {', '.join(written)} tables into {doc}")
        else:
            print(text + ("" if auto is None else "\n" + auto), end="")
    elif args.export:
        print(study_report.export_study(study, out, args.export))
    else:
        print(study_report.write_study_reports(study, out))
    return 0


def _cmd_autopatch(args) -> int:

    study = _study_of(args)
    if study is not None:
        if not study.autopatch_runs:
            raise ValueError(f"study {study.name} names no auto-patching run")
        runs = [open_study_run(study, _study_dir(study, args), n, progress=not args.quiet) for n in study.autopatch_runs]
    else:
        runs = [_make_run(args, record=False)]
    for run in runs:
        m = None if args.redo else read_metrics(run.dir, "autopatch")
        if m is not None:
            print(f"# {run.dir / 'metrics' / 'autopatch.json'} exists (--redo re-evaluates)")
        else:
            m = autopatch_eval.evaluate_autopatching(
                run, batch_sizes=tuple(args.batch_size or autopatch_eval.DEFAULT_BATCH_SIZES), examples=args.examples,
                heldout=tuple(args.heldout) if args.heldout else autopatch_eval.DEFAULT_HELDOUT,
                threshold=args.threshold, step=args.step)
        print("\n".join(autopatch_report.autopatch_markdown(m)))
    return 0


def _cmd_evaluate_patch(args) -> int:

    run = _make_run(args, record=False)
    try:
        check = patch_and_evaluate(run, corruptions=args.signature, signature_files=args.signature_file,
                                   alphas=args.alpha or [1.0], bits=args.bits, base=args.model)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    for note in check.notes:
        print("note:", note)
    for label, t, acc in check.rows:
        print(f"{label:8s} {t:20s} accuracy {100 * acc:.2f}%")
    if args.save:
        print("saved", rws.save_variables(args.save, check.patched, overwrite=args.overwrite))
    return 0


def _cmd_grid(args) -> int:

    argv = ["--out", args.out or "results/corruption_grid.png", "--preset", args.corruption_preset,
            "--dataset", args.dataset]
    return grid.main(argv) or 0


TORCH_MISSING = "import-torch needs PyTorch, which is not installed: pip install -e '.[torch]'"


def _cmd_import_torch(args) -> int:
    """Converts a PyTorch checkpoint of the reference code to an orbax variables directory.

    Every refusal (an existing ``--out``, an unknown model, PyTorch missing, a missing,
    unreadable or unfitting checkpoint: a library error, :class:`rws_jax.RWSError`) is one
    line ``rws-jax: error: ...`` on stderr with exit code 2, and nothing is written."""
    try:
        return _import_torch(args)
    except RWSError as e:
        print(f"rws-jax: error: {one_line(e)}", file=sys.stderr)
        return 2


def _import_torch(args) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    model_family(args.model.lower())  # an unknown name fails before anything is loaded
    try:
        import torch  # noqa: F401, PLC0415 - is the optional extra there? (torch_load imports it)
    except ImportError:
        raise TorchImportError(TORCH_MISSING) from None
    path = Path(args.checkpoint)
    if not path.is_file():
        raise TorchImportError(f"{path}: no such checkpoint file")
    checkpoint = torch_load(path)
    kwargs = {} if args.width is None else {"width": args.width}
    imported = from_torch_state_dict(args.model, checkpoint, num_classes=args.num_classes, **kwargs)
    written = rws.save_variables(out, imported.variables, overwrite=args.overwrite)
    opts = "".join(f", {k}={v!r}" for k, v in sorted(imported.model_kwargs.items()))
    print(f"wrote {written}: {args.model.lower()}(num_classes={imported.model.num_classes}{opts}), "
          f"{imported.num_params:,} parameters")
    norm = imported.normalization
    if norm is None:
        print("normalization: none in the checkpoint")
    else:
        fmt = lambda a: "[" + ", ".join(f"{v:.4f}" for v in np.asarray(a)) + "]"  # noqa: E731
        print(f"normalization: mean={fmt(norm.mean)} std={fmt(norm.std)} "
              "(not stored with the variables: feed the model (x - mean) / std)")
    return 0


def _add_stage_parser(sub) -> None:

    p = sub.add_parser("stage", help="run one stage of the pipeline (each caches its output in the run directory)",
                       description="One stage of the pipeline; `rws-jax run` runs them all in this order.")
    stage_sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, stage in STAGES.items():
        sp = stage_sub.add_parser(name, help=stage.help)
        _add_run_args(sp)
        if name == "finetune-robust":
            sp.add_argument("--corruption", action="append", help="only these corruptions (repeatable; no mixture)")
        if name == "quantize-signatures":
            sp.add_argument("--bits", type=int, action="append", choices=(1, 2, 4, 8), help="bit widths (repeatable)")
        sp.set_defaults(fn=_cmd_stage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rws-jax", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="every stage of a run (or every run of a study), cached, then the report")
    _add_run_args(p)
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("demo", help="alias of `run` (whose default preset, offline, is the demo)")
    _add_run_args(p)
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("reproduce", help="alias of `run --preset reproduce`: every claim with seeds, severities 1-5, "
                       "ResNet-20, two transfer pairs and auto-patching (sized for <= 2 h on 2 CPU cores; resumable)")
    p.add_argument("--out", default=None, help="study directory (default results/reproduce)")
    p.add_argument("--only", action="append", default=None, metavar="RUN",
                   help="only this run of the study (repeatable), e.g. vgg16_seed0")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=_cmd_reproduce)
    p = sub.add_parser("regime", help="the regime map: θ_init kinds x fine-tuning recipes (+ weight decay, widths), "
                       "one row per cell (resumable; <= 2 h on 2 CPU cores), then its report")
    p.add_argument("--out", default=None, help="directory (default results/regime, or results/regime_tiny)")
    p.add_argument("--only", action="append", default=None, metavar="CELL",
                   help="only this cell (repeatable), e.g. rotation/current")
    p.add_argument("--plan", action="store_true", help="print the plan (cells, epochs, cuts) and stop")
    p.add_argument("--report-only", action="store_true", help="collect the rows written so far and write the report")
    p.add_argument("--export", metavar="DIR", default=None, help="copy report, figure and regime.json to DIR")
    p.add_argument("--splice", metavar="MARKDOWN", action="append", default=None,
                   help="write the map's summary paragraph between the regime-summary markers of this file "
                        "(repeatable; links relative to the file)")
    p.add_argument("--tiny", action="store_true", help="the smoke-test map (two cells, a few hundred images)")
    p.add_argument("--costs", default=None, help="per-image costs file (default docs/benchmarks/study_epoch_cpu.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=_cmd_regime)
    p = sub.add_parser("report", help="write report.md and figures/ from the stored metrics")
    _add_run_args(p)
    p.add_argument("--summary", action="store_true",
                   help="print the results pages' Markdown tables (accuracies, chosen α, claims) instead of writing "
                        "the report")
    p.add_argument("--splice", metavar="MARKDOWN", action="append", default=None,
                   help="with --summary: write the tables between the markers this file holds (a run: demo-summary; "
                        "a study: reproduce-headline, reproduce-summary, autopatch-summary); may be repeated")
    p.add_argument("--previous", metavar="DIR", action="append", default=None,
                   help="a study's --summary: judge an earlier copy of the study (e.g. docs/reproduce_previous) by the "
                        "same rules, in a column beside the verdicts (repeatable; default: every <out>_* directory "
                        "beside --out that holds the study's runs)")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="study presets: copy reports, figures, metrics and configs (no checkpoints) to DIR")
    p.set_defaults(fn=_cmd_report)
    p = sub.add_parser("autopatch", help="train the corruption detector (once) and evaluate auto-patching on a "
                       "mixed test stream -> metrics/autopatch.json")
    _add_run_args(p)
    p.add_argument("--batch-size", type=int, action="append", help="stream batch sizes (repeatable; default 1, 8, 64)")
    p.add_argument("--examples", type=int, default=2000, help="test images per source (default 2000)")
    p.add_argument("--heldout", action="append", help="corruptions without a signature to stream too (repeatable; "
                   "default zoom_blur, brightness, shot_noise)")
    p.add_argument("--threshold", type=float, default=0.25, help="mean detector probability below which a "
                   "signature is not applied")
    p.add_argument("--step", type=float, default=0.25, help="coefficients are rounded to multiples of this")
    p.add_argument("--redo", action="store_true", help="re-evaluate even when metrics/autopatch.json exists")
    p.set_defaults(fn=_cmd_autopatch)
    p = sub.add_parser("evaluate-patch", help="patch a model of a run with signatures and evaluate it before and "
                       "after (optionally save it); `sig patch` patches any checkpoint file")
    _add_run_args(p)
    p.add_argument("--signature", action="append", default=[], help="corruption name of a run signature (repeatable)")
    p.add_argument("--signature-file", action="append", default=[], help="path of a signature file (repeatable)")
    p.add_argument("--alpha", type=float, action="append", help="coefficient (one, or one per signature)")
    p.add_argument("--bits", type=int, choices=(1, 2, 4, 8), help="use the quantized run signatures")
    p.add_argument("--model", choices=("standard", "transfer", "updated"), default="standard")
    p.add_argument("--save", help="save the patched variables to this directory")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=_cmd_evaluate_patch)
    _add_stage_parser(sub)
    add_sig_parser(sub)  # `rws-jax sig extract|info|verify|compose|patch`: signatures on any checkpoint
    add_release_parser(sub)  # `rws-jax release export|verify|evaluate`: a model with its signatures
    p = sub.add_parser("import-torch", help="convert a PyTorch checkpoint of the reference code to Flax variables")
    p.add_argument("checkpoint", help="a .pth file: a state dict or {'state_dict': ...}")
    p.add_argument("--model", required=True, help="model name, e.g. vgg16, resnet20, resnet50")
    p.add_argument("--out", required=True, help="directory to write (rws_jax.save_variables)")
    p.add_argument("--num-classes", type=int, default=None, help="default: read off the classifier")
    p.add_argument("--width", type=float, default=None, help="channel multiplier of a narrowed model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(fn=_cmd_import_torch)
    sub.add_parser("presets", help="list the named configs and studies").set_defaults(fn=_cmd_presets)
    p = sub.add_parser("corruption-grid", help="PNG grid of every corruption at every severity")
    p.add_argument("--out", default=None)
    p.add_argument("--corruption-preset", default="cifar10", choices=("cifar10", "imagenet"))
    p.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "synthetic"))
    p.set_defaults(fn=_cmd_grid)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["sig"]:  # the signature CLI: every refusal is one line, exit code 2
        args, extra = parser.parse_known_args(argv)
        if extra:
            print(f"rws-jax: error: sig: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
            return 2
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except Exception as e:  # a clear one-line error for user mistakes, traceback for bugs

        if isinstance(e, (RWSError, DatasetNotFoundError, ConfigMismatchError, FileNotFoundError, ValueError)):
            print(f"rws-jax: error: {e}", file=sys.stderr)
            return 1
        raise


XLA_DEFAULTS_OPTION = "--xla-defaults"


def entry(argv: list[str] | None = None) -> int:
    """The program entry point (``rws-jax``, ``python -m rws_jax``): applies
    :func:`rws_jax.cpu_tuning.apply_cpu_tuning` to this process's ``XLA_FLAGS`` before any JAX
    work, unless ``--xla-defaults`` is given (anywhere on the line; it is then removed), then
    runs :func:`main`. :func:`main` itself never touches the environment.

    A SIGTERM (a stopped session, ``kill``) exits through ``SystemExit`` like Ctrl-C, so the
    ``finally`` blocks run: a study adds the interrupted run's wall time to its
    ``metrics/timing.json`` and temporary output directories are removed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if XLA_DEFAULTS_OPTION in argv:
        argv = [a for a in argv if a != XLA_DEFAULTS_OPTION]
    else:
        apply_cpu_tuning()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return main(argv)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(entry())
