"""Command line: ``rws-jax <command>`` or ``python -m rws_jax <command>``.

Every pipeline command takes ``--preset NAME`` or ``--config FILE`` (YAML or Python),
``--set key=value`` overrides and ``--out DIR`` (the run directory; default
``results/<preset>``). Stages cache their outputs in the run directory, so rerunning
a command skips what is done; ``demo``/``run`` runs every stage and writes the report.

``import-torch FILE --model NAME --out DIR`` converts a PyTorch checkpoint of the
reference code to Flax variables (needs the ``torch`` extra).

``sig extract|info|verify|compose|patch`` work on signature files and any model
checkpoint (orbax or Flax msgpack), see :mod:`rws_jax.sig_cli`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="named preset (see `rws-jax presets`); default: offline")
    p.add_argument("--config", default=None, help="YAML or Python config file (may name a preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set finetune.epochs=3 (repeatable)")
    p.add_argument("--out", default=None, help="run directory (default results/<preset name>)")
    p.add_argument("--force-config", action="store_true",
                   help="reuse a run directory made with another config")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _make_run(args, record: bool = True):
    from rws_jax.pipeline import Run, load_config

    preset = args.preset or (None if args.config else "offline")
    cfg = load_config(args.config, preset_name=preset, overrides=args.overrides)
    out = Path(args.out or f"results/{cfg.name}")
    run = Run(cfg, out, progress=not args.quiet, force_config=args.force_config)
    if record:  # the command the report names as having produced the run
        (out / "command.txt").write_text("rws-jax " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n")
    return run


def _cmd_presets(args) -> int:
    from rws_jax.pipeline import PRESETS, STUDIES

    for name, d in PRESETS.items():
        print(f"{name:20s} {d.get('description', '')}")
    for name, st in STUDIES.items():
        print(f"{name:20s} (study of {len(st.runs)} runs) {st.description}")
    return 0


def _study_of(args):
    """The study named by ``--preset`` (None for a plain preset or a config file)."""
    from rws_jax.pipeline import STUDIES

    if args.preset in STUDIES:
        if args.config or args.overrides or args.force_config:
            raise ValueError(f"{args.preset} is a study of several runs: --config, --set and --force-config do "
                             "not apply (edit rws_jax/pipeline/presets.py or run its runs one by one)")
        return STUDIES[args.preset]
    return None


def _cmd_run(args) -> int:
    from rws_jax.pipeline import run_all

    study = _study_of(args)
    if study is not None:
        return _run_study(study, args)
    run_all(_make_run(args))
    return 0


def _run_study(study, args) -> int:
    from rws_jax.pipeline import run_study

    out = Path(args.out or f"results/{study.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("rws-jax " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "\n")
    print(run_study(study, out, progress=not args.quiet, only=getattr(args, "only", None)))
    return 0


def _cmd_reproduce(args) -> int:
    from rws_jax.pipeline import STUDIES

    return _run_study(STUDIES["reproduce"], args)


def _stage(name):
    def cmd(args) -> int:
        from rws_jax.pipeline import STAGES

        run = _make_run(args)
        if name == "finetune-robust" and args.corruption:
            STAGES[name](run, args.corruption)
        elif name == "quantize" and args.bits:
            STAGES[name](run, args.bits)
        else:
            STAGES[name](run)
        return 0

    return cmd


def _cmd_report(args) -> int:
    from rws_jax.pipeline import summary_markdown, write_report

    study = _study_of(args)
    if study is not None:
        return _report_study(study, args)
    run = _make_run(args, record=False)
    if args.summary:
        text = summary_markdown(run)
        if args.splice:
            from rws_jax.pipeline.report import splice_summary

            splice_summary(Path(args.splice), text)
            print(f"wrote the summary tables into {args.splice}")
        else:
            print(text, end="")
        return 0
    print(write_report(run))
    return 0


def _cmd_autopatch(args) -> int:
    from rws_jax.pipeline.autopatch_eval import load_autopatch, stage_autopatch
    from rws_jax.pipeline.autopatch_report import autopatch_markdown

    study = _study_of(args)
    if study is not None:
        if not study.autopatch_runs:
            raise ValueError(f"study {study.name} names no auto-patching run")
        from rws_jax.pipeline.study import open_run

        out = Path(args.out or f"results/{study.name}")
        runs = [open_run(study, out, n, progress=not args.quiet) for n in study.autopatch_runs]
    else:
        runs = [_make_run(args, record=False)]
    for run in runs:
        m = None if args.redo else load_autopatch(run.dir)
        if m is not None:
            print(f"# {run.dir / 'metrics' / 'autopatch.json'} exists (--redo re-evaluates)")
        else:
            m = stage_autopatch(run, batch_sizes=tuple(args.batch_size or (1, 8, 64)), examples=args.examples,
                                heldout=tuple(args.heldout) if args.heldout else ("zoom_blur", "brightness", "shot_noise"),
                                threshold=args.threshold, step=args.step)
        print("\n".join(autopatch_markdown(m)))
    return 0


def _report_study(study, args) -> int:
    from rws_jax.pipeline import study_report

    out = Path(args.out or f"results/{study.name}")
    if args.summary:
        text = study_report.study_summary_markdown(study, out, previous=args.previous)
        auto = study_report.autopatch_summary_markdown(study, out)
        if args.splice:
            study_report.splice_study_summary(Path(args.splice), text, auto)
            print(f"wrote the {study.name} summary tables into {args.splice}")
        else:
            print(text + ("" if auto is None else "\n" + auto), end="")
        return 0
    if args.export:
        print(study_report.export_study(study, out, args.export))
        return 0
    from rws_jax.pipeline.run import write_study_reports

    print(write_study_reports(study, out))
    return 0


def _cmd_patch(args) -> int:
    import rws_jax as rws
    from rws_jax.training import evaluate

    run = _make_run(args, record=False)
    sigs = [rws.load_signature(f) for f in args.signature_file] + [
        run.quantized(c, args.bits) if args.bits else run.signature(c) for c in args.signature
    ]
    if not sigs:
        print("name at least one --signature CORRUPTION or --signature-file PATH", file=sys.stderr)
        return 2
    base = {"standard": run.standard, "transfer": lambda: run.transfer(None),
            "updated": run.standard_updated}[args.model]()
    alphas = args.alpha if args.alpha else [1.0]
    alpha = alphas if len(alphas) > 1 else alphas[0]
    transfer = args.model == "transfer"
    names = [s.name for s in sigs]
    if run.bn_mode == "reference" and all(n in run.cfg.corruptions for n in names):
        # BatchNorm model: the reference's scheme (BN <- robust models' mean, statistics re-estimated)
        patched = run.patched(base, names, sigs, alpha, transfer=transfer)
    else:
        if run.bn_mode == "reference":
            print("note: signatures from files are applied as a pure weight patch (no robust models to average "
                  "BatchNorm over)")
        patched = rws.patch(base, sigs, alpha, check_base=not transfer)
    for name, variables in (("before", base), ("patched", patched)):
        for t in ["clean", *{s.name for s in sigs if s.name in run.cfg.corruptions}]:
            acc = evaluate(variables, run.model.apply, run.test_set(t, transfer=transfer), run.cfg.eval_batch_size,
                           eval_step=run.eval_step)["accuracy"]
            print(f"{name:8s} {t:20s} accuracy {100 * acc:.2f}%")
    if args.save:
        print("saved", rws.save_variables(args.save, patched, overwrite=args.overwrite))
    return 0


def _cmd_grid(args) -> int:
    from rws_jax.corruptions import grid

    argv = ["--out", args.out or "results/corruption_grid.png", "--preset", args.corruption_preset,
            "--dataset", args.dataset]
    return grid.main(argv) or 0


TORCH_MISSING = "import-torch needs PyTorch, which is not installed: pip install -e '.[torch]'"


def _cmd_import_torch(args) -> int:
    """Converts a PyTorch checkpoint of the reference code to an orbax variables directory.

    Every refusal (an existing ``--out``, an unknown model, PyTorch missing, a missing,
    unreadable or unfitting checkpoint: a library error, :class:`rws_jax.RWSError`) is one
    line ``rws-jax: error: ...`` on stderr with exit code 2, and nothing is written."""
    from rws_jax.errors import RWSError, one_line

    try:
        return _import_torch(args)
    except RWSError as e:
        print(f"rws-jax: error: {one_line(e)}", file=sys.stderr)
        return 2


def _import_torch(args) -> int:
    from rws_jax.errors import OutputExistsError
    from rws_jax.models.torch_import import TorchImportError, model_family, torch_load

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    model_family(args.model.lower())  # an unknown name fails before anything is loaded
    try:
        import torch  # noqa: F401 - is it there? (torch_load imports it)
    except ImportError:
        raise TorchImportError(TORCH_MISSING) from None
    import numpy as np

    import rws_jax as rws
    from rws_jax.models import from_torch_state_dict

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rws-jax", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the named configs").set_defaults(fn=_cmd_presets)
    for name in ("demo", "run"):
        p = sub.add_parser(name, help="every stage, cached, then the report")
        _add_run_args(p)
        p.set_defaults(fn=_cmd_run)
    helps = {
        "pretrain": "train θ_init on the pre-training half",
        "finetune-standard": "fine-tune θ_std from θ_init on clean data",
        "finetune-robust": "fine-tune θ_rob,c from θ_init on corrupted data (and the mixture model)",
        "transfer": "models of the transfer dataset and of an updated backbone",
        "extract": "extract the signatures (RWS_c) into signatures/",
        "quantize": "quantized copies of the signatures",
        "analyse": "layer-wise weight change and signature similarity",
        "evaluate": "TA/RA of standard, robust, patched, quantized, composed, mixture and transfer models",
        "merge": "TIES/DARE merges of all signatures and α chosen on the validation split",
        "storage": "bytes on disk of signatures vs. the full model",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        _add_run_args(p)
        if name == "finetune-robust":
            p.add_argument("--corruption", action="append", help="only these corruptions (repeatable)")
        if name == "quantize":
            p.add_argument("--bits", type=int, action="append", choices=(1, 2, 4, 8), help="bit widths (repeatable)")
        p.set_defaults(fn=_stage(name))
    p = sub.add_parser("report", help="write report.md and figures/ from the stored metrics")
    _add_run_args(p)
    p.add_argument("--summary", action="store_true",
                   help="print README's Markdown tables (accuracies, chosen α) instead of writing the report")
    p.add_argument("--splice", metavar="MARKDOWN", default=None,
                   help="with --summary: write the tables between the demo-summary markers of this file")
    p.add_argument("--previous", metavar="DIR", default=None,
                   help="a study's --summary: judge an earlier copy of the study (e.g. docs/reproduce_previous) by the "
                        "same rules, in a column beside the verdicts")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="study presets: copy reports, figures, metrics and configs (no checkpoints) to DIR")
    p.set_defaults(fn=_cmd_report)
    p = sub.add_parser("reproduce", help="the `reproduce` study: every claim with seeds, severities 1-5, "
                       "ResNet-20, two transfer pairs and auto-patching (sized for <= 2 h on 2 CPU cores; resumable)")
    p.add_argument("--out", default=None, help="study directory (default results/reproduce)")
    p.add_argument("--only", action="append", default=None, metavar="RUN",
                   help="only this run of the study (repeatable), e.g. vgg16_seed0")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=_cmd_reproduce)
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
    p = sub.add_parser("patch", help="patch a model of the run with signatures, evaluate, optionally save it")
    _add_run_args(p)
    p.add_argument("--signature", action="append", default=[], help="corruption name of a run signature (repeatable)")
    p.add_argument("--signature-file", action="append", default=[], help="path of a signature file (repeatable)")
    p.add_argument("--alpha", type=float, action="append", help="coefficient (one, or one per signature)")
    p.add_argument("--bits", type=int, choices=(1, 2, 4, 8), help="use the quantized run signatures")
    p.add_argument("--model", choices=("standard", "transfer", "updated"), default="standard")
    p.add_argument("--save", help="save the patched variables to this directory")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=_cmd_patch)
    p = sub.add_parser("corruption-grid", help="PNG grid of every corruption at every severity")
    p.add_argument("--out", default=None)
    p.add_argument("--corruption-preset", default="cifar10", choices=("cifar10", "imagenet"))
    p.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "synthetic"))
    p.set_defaults(fn=_cmd_grid)
    p = sub.add_parser("import-torch", help="convert a PyTorch checkpoint of the reference code to Flax variables")
    p.add_argument("checkpoint", help="a .pth file: a state dict or {'state_dict': ...}")
    p.add_argument("--model", required=True, help="model name, e.g. vgg16, resnet20, resnet50")
    p.add_argument("--out", required=True, help="directory to write (rws_jax.save_variables)")
    p.add_argument("--num-classes", type=int, default=None, help="default: read off the classifier")
    p.add_argument("--width", type=float, default=None, help="channel multiplier of a narrowed model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(fn=_cmd_import_torch)
    from rws_jax.sig_cli import add_parser as add_sig_parser

    add_sig_parser(sub)  # `rws-jax sig extract|info|verify|compose|patch`: signatures on any checkpoint
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
        from rws_jax.data import DatasetNotFoundError
        from rws_jax.errors import RWSError
        from rws_jax.pipeline import ConfigMismatchError

        if isinstance(e, (RWSError, DatasetNotFoundError, ConfigMismatchError, FileNotFoundError, ValueError)):
            print(f"rws-jax: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
