"""``rws-jax release ...``: a released model with its signatures (:mod:`rws_jax.files.release`).

Subcommands::

    rws-jax release export --run RUN_DIR --out DIR [--bits 8] [--splice README.md]
                                                                 # from a finished pipeline run
    rws-jax release verify DIR                                   # every file against SHA256SUMS
    rws-jax release evaluate DIR [--sig NAME ...] [--alpha 1]    # patch it and measure, beside
                                                                 # the accuracies the run measured

A refusal (a missing, truncated, tampered or extra file; an unknown signature name; a run
that has not finished) is one line ``rws-jax: error: ...`` with exit code 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rws_jax.errors import RWSError, one_line
from rws_jax.files.release import load_release, release_files
from rws_jax.pipeline.config import run_config_from_file
from rws_jax.pipeline.release_export import RELEASE_BITS, evaluate_release, export_release
from rws_jax.pipeline.markdown_blocks import write_block
from rws_jax.pipeline.release_report import RELEASE_BEGIN, RELEASE_END, release_readme, release_summary_markdown
from rws_jax.pipeline.run import Run

EXIT_REFUSED = 2


def cmd_export(args) -> int:
    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise RWSError(f"{run_dir}: not a run directory (no config.yaml)")
    run = Run(run_config_from_file(run_dir / "config.yaml"), run_dir, progress=False)
    command = f"rws-jax release export --run {args.run} --out {args.out} --bits {args.bits}"
    out = export_release(run, args.out, bits=args.bits, command=command,
                         readme=lambda manifest: release_readme(manifest, path=str(args.out)))
    print(f"wrote {out}")
    manifest = load_release(out).manifest
    for doc in args.splice:  # the release's path as each document's links reach it
        rel = os.path.relpath(Path(out).resolve(), Path(doc).resolve().parent)
        write_block(Path(doc), RELEASE_BEGIN, RELEASE_END, "\n" + release_summary_markdown(manifest, rel) + "\n")
        print(f"spliced {doc}")
    return 0


def cmd_verify(args) -> int:
    load_release(args.dir)  # SHA256SUMS, then every signature against its own checksum and the model
    print(f"ok: {len(release_files(args.dir))} files match SHA256SUMS; the model and every signature load")
    return 0


def cmd_evaluate(args) -> int:
    release = load_release(args.dir, args.sig or None)
    expected = release.manifest.get("expected_accuracy", {})
    got = evaluate_release(release, alpha=args.alpha)
    print(f"{'model':24s} {'test set':18s} {'accuracy':>9s} {'the run measured':>17s}")
    for variant, sets in got.items():
        for t, acc in sets.items():
            exp = expected.get(variant, {}).get(t)
            exp_s = "–" if exp is None or args.alpha != 1.0 else f"{100 * exp:.2f}%"
            print(f"{variant:24s} {t:18s} {100 * acc:8.2f}% {exp_s:>17s}")
    return 0


def add_parser(sub) -> None:
    """Registers ``release`` and its subcommands on the ``rws-jax`` subparsers ``sub``."""
    p = sub.add_parser("release", help="a released model with its signatures: export, verify, evaluate",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(fn=run)
    ss = p.add_subparsers(dest="release_command", required=True)
    e = ss.add_parser("export", help="write a release from a finished run directory")
    e.add_argument("--run", required=True, help="the run directory (results/reproduce/vgg16_seed0)")
    e.add_argument("--out", required=True, help="the release directory to write (replaced once complete)")
    e.add_argument("--bits", type=int, default=RELEASE_BITS, help="the signatures' bits (the run's quantized copies)")
    e.add_argument("--splice", metavar="MARKDOWN", action="append", default=[],
                   help="write the release's accuracies between the release-summary markers of this file (repeatable)")
    e.set_defaults(release_fn=cmd_export)
    v = ss.add_parser("verify", help="check every file against SHA256SUMS and load the model and signatures")
    v.add_argument("dir")
    v.set_defaults(release_fn=cmd_verify)
    m = ss.add_parser("evaluate", help="patch the released model with its signatures and measure it")
    m.add_argument("dir")
    m.add_argument("--sig", action="append", default=[], help="a signature name (repeatable; default all)")
    m.add_argument("--alpha", type=float, default=1.0)
    m.set_defaults(release_fn=cmd_evaluate)


def run(args) -> int:
    """Runs the chosen subcommand; a library refusal is one line on stderr, exit code 2."""
    try:
        return int(args.release_fn(args) or 0)
    except RWSError as e:
        print(f"rws-jax: error: {one_line(e)}", file=sys.stderr)
        return EXIT_REFUSED
