"""``rws-jax sig ...``: signature files from and onto any checkpoint.

Subcommands (each also callable as a function, see ``cmd_*``)::

    rws-jax sig extract --init A --standard B --robust C [--select first_k:7 | REGEX | PATH,PATH]
                        [--bits 8] [--name fog] [--severity 5] --out fog.rws
    rws-jax sig info FILE
    rws-jax sig verify FILE [--like MODEL]
    rws-jax sig compose FILES... [--method sum|mean|ties|dare|dare_ties] [--alpha A ...]
                        [--density D] [--drop-rate P] [--seed S] --out FILE
    rws-jax sig patch --model M --sig FILE --alpha A [--sig FILE --alpha A ...] [--no-check-base] --out M2

Models (A, B, C, --like, --model) are read by :func:`rws_jax.load_model` in any format of
:mod:`rws_jax.model_files`: orbax directories written by ``rws_jax.save_variables``,
generic orbax pytree checkpoints and Flax msgpack files, detected from the path and the
file's content, not its extension; pickles, zip archives (PyTorch checkpoints: see
``rws-jax import-torch``) and anything else are refused, saying what they are. ``patch``
writes an orbax directory, or a msgpack file when ``--out`` ends with ``.msgpack``
(:func:`rws_jax.save_model`, parent folders created).

``--select`` is parsed by :func:`rws_jax.selection.parse_selection`. ``first_k:K`` counts
units (``conv_0``, ``layer1_0``...) in forward order as the tree gives it: a msgpack file
keeps the model's dict order (module creation order); a ``save_variables`` directory stores
sorted paths, so its units come in natural name order (``stem`` first, ``conv_2`` before
``conv_10``). ``extract`` takes the order from the first of ``--init``/``--standard``/
``--robust`` that is a msgpack file, and refuses a ``K`` over the model's number of units.

Every refusal is one line ``rws-jax: error: ...`` on stderr with exit code 2, and
nothing is written: inputs are loaded and checked before any output, and outputs
are written under a temporary name and renamed into place. Refusals are the library's
own errors (:class:`rws_jax.RWSError` and its subclasses); any other exception is a bug:
its traceback, exit code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path

import jax
import numpy as np

import rws_jax as rws
from rws_jax import tree_paths
from rws_jax.errors import RWSError, one_line
from rws_jax.files import model_files
from rws_jax.quantization import BITS
from rws_jax.selection import describe_json, parse_selection
from rws_jax.merging import METHODS, RANDOM_METHODS, TRIM_METHODS

EXIT_REFUSED = 2
EXIT_BUG = 1
DEFAULT_SELECT = "first_k:7"  # the paper's VGG-16 setting
_FLOAT32_MAX = 3.4028234663852886e38


class SigCliError(RWSError):
    """A user error of the signature CLI (one line, exit code 2)."""


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one ``rws-jax: error: ...`` line, exit code 2."""

    def error(self, message):  # noqa: D401
        self.exit(EXIT_REFUSED, f"rws-jax: error: {self.prog.replace('rws-jax ', '')}: {message}\n")


# --------------------------------------------------------------------- arguments


def _check_bits(bits: int | None) -> None:
    if bits is None:
        return

    if bits not in BITS:
        raise SigCliError(f"--bits {bits} is not supported (choose from {', '.join(map(str, sorted(BITS)))})")


def _check_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise SigCliError(f"{out} exists; pass --overwrite to replace it")
    return out


def _alphas(alphas: list[float] | None, n: int):
    a = list(alphas) if alphas else [1.0]
    if len(a) not in (1, n):
        raise SigCliError(f"got {len(a)} --alpha values for {n} signatures: give one, or one per signature")
    if not all(math.isfinite(x) for x in a):
        raise SigCliError(f"--alpha values must be finite, got {a}")
    for x in a:  # finite as a Python float, inf as the float32 the patch computes in
        if abs(x) > _FLOAT32_MAX:
            raise SigCliError(f"--alpha {x:g} overflows float32")
    return a[0] if len(a) == 1 else a


def _check_is_signature(path: str) -> None:
    """Refuses an existing file or directory that is not a signature, saying what it is."""

    kind = model_files.file_kind(path)
    if kind not in ("signature", "rws_jax-dir", "directory", "missing"):  # those: storage says what is wrong
        raise SigCliError(f"{path}: is {model_files.describe(kind)}, not a signature")


def _load_sig(path: str, **kwargs):

    _check_is_signature(path)
    try:
        return rws.load_signature(path, **kwargs)
    except rws.IncompatibleSignatureError as e:  # name the file: the signature's own name may be empty
        raise rws.IncompatibleSignatureError(f"{path}: {e}") from None


# --------------------------------------------------------------------- commands


def cmd_extract(args) -> int:

    out = _check_out(args.out, args.overwrite)
    _check_bits(args.bits)
    inputs = {"--init": args.init, "--standard": args.standard, "--robust": args.robust}
    trees = {flag: rws.load_model(p) for flag, p in inputs.items()}
    fps = {flag: tree_paths.fingerprint(v) for flag, v in trees.items()}
    if len(set(fps.values())) > 1:
        raise SigCliError("--init, --standard and --robust are not the same architecture (fingerprints "
                          + ", ".join(f"{k} {v}" for k, v in fps.items()) + ")")
    # unit order for first_k: the first input that kept its dict order (msgpack), else init's own
    order_from = next((trees[f] for f, p in inputs.items() if rws.model_format(p) == "msgpack"), None)
    init, std, rob = trees.values()
    try:
        sel = parse_selection(args.select or DEFAULT_SELECT, init, order_from=order_from,
                              all_units_if_fewer=args.select is None)
    except rws.SelectionError as e:
        raise SigCliError(f"bad --select: {e}") from None
    sig = rws.extract(init, std, rob, sel, project=not args.no_project, name=args.name, severity=args.severity)
    rws.check_finite(sig)
    if args.bits:
        sig = rws.quantize(sig, args.bits, **({} if args.scheme is None else {"scheme": args.scheme}))
    written = rws.save_signature(out, sig, overwrite=args.overwrite)
    print(f"wrote {written}: {sig!r}")
    return 0


def signature_info(path: str) -> tuple[dict, str, str | None]:
    """``(info, checksum, problem)``: the metadata of a signature file (as stored, unchecked,
    if a field is malformed), ``'ok'``/``'BAD'``/``'not verified'`` for its checksum, and
    the first problem a full load finds (or ``None``)."""

    _check_is_signature(path)
    try:
        info = rws.read_signature_info(path)
    except rws.SignatureFileError as e:  # show what is there, then refuse
        return rws.read_signature_info(path, checked=False), "not verified", one_line(e)
    try:
        rws.load_signature(path)
        return info, "ok", None
    except rws.SignatureFileError as e:
        if "checksum mismatch" in str(e):
            return info, "BAD", f"checksum BAD: {one_line(e)}"
        return info, "not verified", one_line(e)
    except rws.RWSError as e:  # NaN/inf values under a good checksum
        return info, "ok", one_line(e)


def _show(value, empty: str = "-") -> str:
    """A metadata value as text; one of another type than expected shows as JSON."""
    if value is None or value == "":
        return empty
    return value if isinstance(value, str) else json.dumps(value)


def cmd_info(args) -> int:


    info, status, problem = signature_info(args.file)
    try:  # unchecked metadata (a malformed field) may hold anything here
        specs = [(str(p), [int(d) for d in s], np.dtype(d)) for p, s, d in info.get("leaf_specs") or []]
    except (TypeError, ValueError):
        specs = []
    values = sum(int(np.prod(s)) for _, s, _ in specs)
    full = sum(int(np.prod(s)) * d.itemsize for _, s, d in specs)
    rows = [
        ("file", str(args.file)),
        ("name", _show(info.get("name"))),
        ("severity", _show(info.get("severity"))),
        ("kind", _show(info.get("kind"))),
        ("selection", describe_json(info.get("selection")) if info.get("selection") else "-"),
        ("tensors", str(info["num_tensors"])),
        ("values", f"{values:,}"),
        ("on disk", f"{rws.bytes_on_disk(args.file):,} bytes (the values at model precision: {full:,} bytes)"),
        ("quantization", _show(info.get("quantization"), "none (float)")),
        ("format", f"{info.get('format')} version {info.get('format_version')}"),
        ("base model", str(info.get("base_fingerprint"))),
        ("checksum", status),
    ]
    for k, v in rows:
        print(f"{k + ':':14s}{v}")
    for p, s, d in specs:
        print(f"  {p}  {d}{s}")
    if problem:
        raise SigCliError(f"{args.file}: {problem}" if not problem.startswith(str(Path(args.file).absolute()))
                          else problem)
    return 0


def cmd_verify(args) -> int:

    like = rws.load_model(args.like) if args.like else None
    _load_sig(args.file, like=like, check_base=not args.no_check_base)
    print("ok")
    return 0


def cmd_compose(args) -> int:


    out = _check_out(args.out, args.overwrite)
    _check_bits(args.bits)
    if args.method not in METHODS:
        raise SigCliError(f"unknown --method {args.method!r} (choose from {', '.join(METHODS)})")
    if args.density is not None and args.method not in TRIM_METHODS:
        raise SigCliError(f"--density applies to TIES merging only, not --method {args.method}")
    if args.drop_rate is not None and args.method not in RANDOM_METHODS:
        raise SigCliError(f"--drop-rate applies to DARE merging only, not --method {args.method}")
    sigs = [_load_sig(f) for f in args.files]
    alphas = _alphas(args.alpha, len(sigs))
    rates = {k: v for k, v in (("density", args.density), ("drop_rate", args.drop_rate)) if v is not None}
    sig = rws.compose(sigs, alphas, method=args.method, key=jax.random.key(args.seed), name=args.name, **rates)
    rws.check_finite(sig)
    if args.bits:
        sig = rws.quantize(sig, args.bits)
    written = rws.save_signature(out, sig, overwrite=args.overwrite)
    print(f"wrote {written}: {sig!r} ({args.method} of {len(sigs)})")
    return 0


def cmd_patch(args) -> int:


    out = _check_out(args.out, args.overwrite)
    if not args.sig:
        raise SigCliError("name at least one --sig FILE")
    variables = rws.load_model(args.model)
    sigs = [_load_sig(f, like=variables, check_base=not args.no_check_base) for f in args.sig]
    alphas = _alphas(args.alpha, len(sigs))
    patched = rws.patch(variables, sigs, alphas, check_base=not args.no_check_base)
    flat = tree_paths.flatten(patched)[0]
    touched = {p for s in sigs for p in s.deltas}
    bad = [p for p in touched if not np.all(np.isfinite(np.asarray(flat[p])))]
    if bad:
        raise SigCliError(f"the patched model holds NaN/inf in {sorted(bad)[:5]}")
    written = rws.save_model(out, patched, overwrite=args.overwrite)
    print(f"wrote {written}: patched {len(touched)} tensors with "
          + ", ".join(f"{s.name or '?'}" for s in sigs) + f" (alpha {alphas})")
    return 0


def run(args) -> int:
    """Runs a ``sig`` subcommand: the library's own errors (:class:`rws_jax.RWSError`, every
    refusal) become one stderr line and exit code 2; anything else is a bug: its traceback
    on stderr, exit code 1."""
    try:
        return int(args.sig_fn(args) or 0)
    except RWSError as e:
        print(f"rws-jax: error: {one_line(e)}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception:  # noqa: BLE001 - a bug: show where, do not dress it up as a refusal
        traceback.print_exc()
        return EXIT_BUG


# ----------------------------------------------------------------------- parser


def add_parser(sub) -> None:
    """Registers ``sig`` and its subcommands on the ``rws-jax`` subparsers ``sub``."""
    p = sub.add_parser("sig", help="signature files from/onto any checkpoint: extract, info, verify, compose, patch",
                       description=__doc__.split("\n\n")[0])
    p.__class__ = _OneLineParser  # its own argument errors (unknown subcommand) as one line too
    p.set_defaults(fn=run)
    ss = p.add_subparsers(dest="sig_command", required=True, parser_class=_OneLineParser)

    e = ss.add_parser("extract", help="extract a signature from three checkpoints")
    e.add_argument("--init", required=True, help="θ_init: orbax variables directory or msgpack file")
    e.add_argument("--standard", required=True, help="θ_std (fine-tuned on clean data)")
    e.add_argument("--robust", required=True, help="θ_rob (fine-tuned on the corruption)")
    e.add_argument("--select", default=None, help="first_k:K[:COLL,COLL] (tree order), a regex, or comma-separated "
                   f"leaf paths (default {DEFAULT_SELECT}, or every unit of a smaller model)")
    e.add_argument("--bits", type=int, default=None, help="quantize (8, 4, 2; 1 where supported)")
    e.add_argument("--scheme", default=None,
                   help="quantization scheme (with --bits; default: asymmetric, sign at 1 bit)")
    e.add_argument("--name", default="", help="label, e.g. the corruption")
    e.add_argument("--severity", type=int, default=None)
    e.add_argument("--no-project", action="store_true", help="plain difference θ_rob − θ_init (task vector)")
    e.add_argument("--out", required=True)
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(sig_fn=cmd_extract)

    i = ss.add_parser("info", help="labels, selection, sizes, quantization, checksum of a signature file")
    i.add_argument("file")
    i.set_defaults(sig_fn=cmd_info)

    v = ss.add_parser("verify", help="full load with every check; with --like, check it fits that model")
    v.add_argument("file")
    v.add_argument("--like", default=None, help="a model the signature must fit")
    v.add_argument("--no-check-base", action="store_true", help="with --like: only the patched leaves must match")
    v.set_defaults(sig_fn=cmd_verify)

    c = ss.add_parser("compose", help="merge signatures into one")
    c.add_argument("files", nargs="+")
    c.add_argument("--method", default="sum", help=" | ".join(METHODS) + " (rws_jax.merging)")
    c.add_argument("--alpha", type=float, action="extend", nargs="+", default=None,
                   help="one coefficient for all, or one per signature")
    c.add_argument("--density", type=float, default=None, help="ties, dare_ties: fraction of entries kept")
    c.add_argument("--drop-rate", type=float, default=None, help="dare, dare_ties: fraction of entries dropped")
    c.add_argument("--seed", type=int, default=0, help="dare, dare_ties: random seed")
    c.add_argument("--name", default=None, help="label of the result (default: a+b+...)")
    c.add_argument("--bits", type=int, default=None, help="quantize the result (8, 4 or 2)")
    c.add_argument("--out", required=True)
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(sig_fn=cmd_compose)

    q = ss.add_parser("patch", help="θ + Σ α_k RWS_k on a model checkpoint")
    q.add_argument("--model", required=True, help="orbax variables directory or msgpack file")
    q.add_argument("--sig", action="append", default=[], help="signature file (repeatable)")
    q.add_argument("--alpha", type=float, action="extend", nargs="+", default=None,
                   help="one coefficient for all, or one per --sig (default 1)")
    q.add_argument("--no-check-base", action="store_true",
                   help="patch a model that shares only the patched layers (transfer)")
    q.add_argument("--out", required=True, help="orbax directory, or a msgpack file if it ends with .msgpack")
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(sig_fn=cmd_patch)
