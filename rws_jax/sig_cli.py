"""``rws-jax sig ...``: signature files from and onto any checkpoint.

Subcommands (each also callable as a function, see ``cmd_*``)::

    rws-jax sig extract --init A --standard B --robust C [--select first_k:7 | REGEX | PATH,PATH]
                        [--bits 8] [--name fog] [--severity 5] --out fog.rws
    rws-jax sig info FILE
    rws-jax sig verify FILE [--like MODEL]
    rws-jax sig compose FILES... [--method sum|mean|ties|dare] [--alpha A ...]
                        [--density D] [--drop-rate P] [--seed S] --out FILE
    rws-jax sig patch --model M --sig FILE --alpha A [--sig FILE --alpha A ...] [--no-check-base] --out M2

Models (A, B, C, --like, --model) are either orbax directories written by
``rws_jax.save_variables`` (restored without a template: the stored leaf paths
rebuild the nested dict) or Flax msgpack files (``flax.serialization.to_bytes`` of
a variables dict, restored with ``msgpack_restore``). The format is detected from
the path (directory or file) and the file's content, not its extension; pickles,
zip archives (PyTorch checkpoints: see ``rws-jax import-torch``) and anything else
are refused. ``patch`` writes an orbax directory, or a msgpack file when ``--out``
ends with ``.msgpack``.

``--select first_k:K`` counts units (``conv_0``, ``layer1_0``...) in forward order as
the tree gives it: a msgpack file keeps the model's dict order (module creation order);
a ``save_variables`` directory stores sorted paths, so its units come in natural name
order (``stem`` first, ``conv_2`` before ``conv_10``). ``extract`` takes the order
from the first of ``--init``/``--standard``/``--robust`` that is a msgpack file.

Every refusal is one line ``rws-jax: error: ...`` on stderr with exit code 2, and
nothing is written: inputs are loaded and checked before any output, and outputs
are written under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from rws_jax.errors import RWSError

EXIT_REFUSED = 2
METHODS = ("sum", "mean", "ties", "dare")
_REGEX_META = set(".^$*+?{}[]\\|()")


class SigCliError(RWSError):
    """A user error of the signature CLI (one line, exit code 2)."""


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one ``rws-jax: error: ...`` line, exit code 2."""

    def error(self, message):  # noqa: D401
        self.exit(EXIT_REFUSED, f"rws-jax: error: {self.prog.replace('rws-jax ', '')}: {message}\n")


# ------------------------------------------------------------------------- models


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def _restore_orbax_variables(path: Path) -> dict:
    """Variables written by ``rws_jax.save_variables``, without a template tree."""
    import numpy as np  # noqa: PLC0415
    import orbax.checkpoint as ocp  # noqa: PLC0415

    from rws_jax import storage, tree_paths  # noqa: PLC0415

    try:
        meta = json.loads((path / "meta" / "metadata").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SigCliError(f"{path}: unreadable model metadata (truncated or corrupt): {_one_line(e)}") from None
    paths = meta.get("paths") if isinstance(meta, dict) else None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise SigCliError(f"{path}: model metadata lists no valid leaf paths")
    ckptr = storage._checkpointer()
    try:
        arrays = ckptr.restore(path, ocp.args.Composite(arrays=ocp.args.StandardRestore()))["arrays"]
    except Exception as e:  # noqa: BLE001 - orbax raises many types for broken files
        raise SigCliError(f"{path}: cannot read the model arrays (truncated or corrupt): {_one_line(e)}") from None
    finally:
        ckptr.close()
    keys = [f"t{i:05d}" for i in range(len(paths))]
    if set(arrays) != set(keys):
        raise SigCliError(f"{path}: metadata lists {len(paths)} leaves, the file holds {len(arrays)} arrays")
    tree: dict = {}
    for p, k in zip(paths, keys):
        node = tree
        *parents, leaf = p.split("/")
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise SigCliError(f"{path}: leaf paths clash at {p!r}")
        if leaf in node:
            raise SigCliError(f"{path}: leaf paths clash at {p!r}")
        node[leaf] = np.asarray(arrays[k])
    variables = _to_jax(tree)
    fp = meta.get("fingerprint")
    if fp is not None and fp != tree_paths.fingerprint(variables):
        raise SigCliError(f"{path}: the restored arrays do not match the stored fingerprint (corrupt file)")
    return variables


def _restore_orbax_pytree(path: Path) -> dict:
    """A generic orbax pytree checkpoint (e.g. ``StandardCheckpointer().save``), restored raw."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    import warnings  # noqa: PLC0415

    try:
        ckptr = ocp.PyTreeCheckpointer()
        with warnings.catch_warnings():  # "Sharding info not provided": expected without a template
            warnings.filterwarnings("ignore", message="Sharding info not provided")
            tree = ckptr.restore(path)
    except Exception as e:  # noqa: BLE001
        raise SigCliError(f"{path}: cannot restore this orbax checkpoint without a template: {_one_line(e)}") from None
    return _to_jax(_check_tree(path, tree))


def _check_tree(path: Path, tree: Any) -> dict:
    import numpy as np  # noqa: PLC0415

    if not isinstance(tree, dict) or not tree:
        raise SigCliError(f"{path}: does not hold a variables dict (got {type(tree).__name__})")

    def walk(node, prefix):
        for k, v in node.items():
            p = f"{prefix}/{k}" if prefix else str(k)
            if isinstance(v, dict):
                if not v:
                    continue
                walk(v, p)
            elif not (isinstance(v, np.ndarray) or hasattr(v, "dtype") and hasattr(v, "shape")) or not (
                np.issubdtype(np.dtype(v.dtype), np.number) or np.dtype(v.dtype) == np.bool_
            ):
                raise SigCliError(f"{path}: leaf {p!r} is not a numeric array ({type(v).__name__})")

    walk(tree, "")
    return tree


def _to_jax(tree: Any) -> Any:
    """jax arrays, keeping each dict's key order (``first_k`` reads forward order from it;
    ``jax.tree_util.tree_map`` would sort the keys)."""
    import jax.numpy as jnp  # noqa: PLC0415

    if isinstance(tree, dict):
        return {k: _to_jax(v) for k, v in tree.items()}
    return jnp.asarray(tree)


def model_format(path: str | os.PathLike) -> str:
    """``'orbax'``, ``'orbax-pytree'`` or ``'msgpack'``; raises :class:`SigCliError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise SigCliError(f"{path}: no such model file or directory")
    if path.is_dir():
        meta_file = path / "meta" / "metadata"
        if meta_file.is_file():
            try:
                fmt = json.loads(meta_file.read_text()).get("format")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                fmt = None
            if fmt == "rws_jax.variables":
                return "orbax"
            if fmt == "rws_jax.signature":
                raise SigCliError(f"{path}: is a signature file, not a model")
            raise SigCliError(f"{path}: not a model directory written by rws_jax.save_variables")
        if any((path / n).exists() for n in ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA")):
            return "orbax-pytree"
        raise SigCliError(f"{path}: not a model directory (neither rws_jax.save_variables nor an orbax checkpoint)")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise SigCliError(f"{path}: empty file")
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        raise SigCliError(f"{path}: is a Python pickle; refusing to unpickle it (save variables with "
                          "flax.serialization.to_bytes or rws_jax.save_variables)")
    if head.startswith(b"PK\x03\x04"):
        raise SigCliError(f"{path}: is a zip archive (a PyTorch checkpoint? convert it with `rws-jax import-torch`)")
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):  # msgpack map
        return "msgpack"
    raise SigCliError(f"{path}: unknown model format (expected an rws_jax.save_variables directory or a Flax "
                      "msgpack file)")


def load_model(path: str | os.PathLike) -> dict:
    """Variables of a model checkpoint in any supported format (see the module doc)."""
    path = Path(path).absolute()
    fmt = model_format(path)
    if fmt == "orbax":
        return _restore_orbax_variables(path)
    if fmt == "orbax-pytree":
        return _restore_orbax_pytree(path)
    from flax import serialization  # noqa: PLC0415

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - msgpack raises many types for broken input
        raise SigCliError(f"{path}: not a valid Flax msgpack file (truncated or corrupt): {_one_line(e)}") from None
    return _to_jax(_check_tree(path, tree))


def save_model(path: str | os.PathLike, variables: Any, *, overwrite: bool = False) -> Path:
    """Writes an orbax directory (``save_variables``), or a msgpack file if ``path`` ends with ``.msgpack``."""
    import rws_jax as rws  # noqa: PLC0415

    path = Path(path).absolute()
    if path.suffix != ".msgpack":
        return rws.save_variables(path, variables, overwrite=overwrite)
    from flax import serialization  # noqa: PLC0415

    if path.exists() and (not overwrite or path.is_dir()):
        raise SigCliError(f"{path} exists" + ("" if overwrite else "; pass --overwrite to replace it"))
    data = serialization.to_bytes(variables)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------- arguments


def parse_selection(text: str, variables: Any, order_from: Any = None):
    """``first_k:K[:COLL,COLL]``, comma-separated leaf paths of ``variables``, or a regex.

    ``first_k`` counts units in the tree's own order (``rws.first_k`` without ``order``);
    ``order_from`` (a tree of the same model that kept its dict order, e.g. from a msgpack
    file) fixes the unit order instead, for trees that lost it (``save_variables`` stores
    sorted paths, so units then come in natural name order)."""
    import rws_jax as rws  # noqa: PLC0415
    from rws_jax import tree_paths  # noqa: PLC0415

    text = text.strip()
    if not text:
        raise SigCliError("--select is empty")
    if text.startswith("first_k:"):
        m = re.fullmatch(r"first_k:(\d+)(?::([A-Za-z0-9_]+(?:,[A-Za-z0-9_]+)*))?", text)
        if not m or int(m.group(1)) < 1:
            raise SigCliError(f"bad --select {text!r}: want first_k:K or first_k:K:COLL,COLL with K >= 1")
        colls = tuple(m.group(2).split(",")) if m.group(2) else ("params",)
        sel = rws.first_k(int(m.group(1)), collections=colls)
        if order_from is not None:
            sel = rws.first_k(int(m.group(1)), collections=colls, order=sel.units(order_from))
    else:
        flat = tree_paths.flatten(variables)[0]
        parts = [p.strip() for p in text.split(",")]
        if all(p in flat for p in parts):
            sel = rws.by_paths(parts)
        elif "," in text and not (set(text) - {","}) & _REGEX_META:
            missing = [p for p in parts if p not in flat]
            raise SigCliError(f"bad --select: not leaf paths of the model: {missing[:5]} "
                              f"(its leaves look like {list(flat)[:3]})")
        else:
            try:
                re.compile(text)
            except re.error as e:
                raise SigCliError(f"bad --select {text!r}: not a valid regular expression: {e}") from None
            sel = rws.by_pattern(text)
    try:
        sel.resolve(variables)
    except ValueError as e:
        raise SigCliError(f"bad --select {text!r}: {_one_line(e)}") from None
    return sel


def _check_bits(bits: int | None) -> None:
    if bits is None:
        return
    from rws_jax.quantization import BITS  # noqa: PLC0415

    if bits not in BITS:
        raise SigCliError(f"--bits {bits} is not supported (choose from {', '.join(map(str, sorted(BITS)))})")


def _check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise SigCliError(f"{out} exists; pass --overwrite to replace it")
    return out


def _alphas(alphas: list[float] | None, n: int):
    import math  # noqa: PLC0415

    a = list(alphas) if alphas else [1.0]
    if len(a) not in (1, n):
        raise SigCliError(f"got {len(a)} --alpha values for {n} signatures: give one, or one per signature")
    if not all(math.isfinite(x) for x in a):
        raise SigCliError(f"--alpha values must be finite, got {a}")
    return a[0] if len(a) == 1 else a


def _load_sig(path: str, **kwargs):
    import rws_jax as rws  # noqa: PLC0415

    try:
        return rws.load_signature(path, **kwargs)
    except rws.IncompatibleSignatureError as e:  # name the file: the signature's own name may be empty
        raise rws.IncompatibleSignatureError(f"{path}: {e}") from None


# --------------------------------------------------------------------- commands


def cmd_extract(args) -> int:
    import rws_jax as rws  # noqa: PLC0415

    out = _check_out(args.out, args.overwrite)
    _check_bits(args.bits)
    init, std, rob = (load_model(p) for p in (args.init, args.standard, args.robust))
    from rws_jax import tree_paths  # noqa: PLC0415

    fps = {n: tree_paths.fingerprint(v) for n, v in (("--init", init), ("--standard", std), ("--robust", rob))}
    if len(set(fps.values())) > 1:
        raise SigCliError("--init, --standard and --robust are not the same architecture (fingerprints "
                          + ", ".join(f"{k} {v}" for k, v in fps.items()) + ")")
    # unit order for first_k: the first input that kept its dict order (msgpack), else init's own
    formats = [model_format(p) for p in (args.init, args.standard, args.robust)]
    order_from = next((t for f, t in zip(formats, (init, std, rob)) if f == "msgpack"), None)
    sel = parse_selection(args.select, init, order_from=order_from)
    sig = rws.extract(init, std, rob, sel, project=not args.no_project, name=args.name, severity=args.severity)
    rws.check_finite(sig)
    if args.bits:
        sig = rws.quantize(sig, args.bits, **({} if args.scheme is None else {"scheme": args.scheme}))
    written = rws.save_signature(out, sig, overwrite=args.overwrite)
    print(f"wrote {written}: {sig!r}")
    return 0


def signature_info(path: str) -> tuple[dict, str, str | None]:
    """``(info, checksum, problem)``: the metadata of a signature file, ``'ok'``/``'BAD'``/
    ``'not verified'`` for its checksum, and the first problem a full load finds (or ``None``)."""
    import rws_jax as rws  # noqa: PLC0415

    info = rws.read_signature_info(path)
    try:
        rws.load_signature(path)
        return info, "ok", None
    except rws.SignatureFileError as e:
        if "checksum" in str(e):
            return info, "BAD", f"checksum BAD: {_one_line(e)}"
        return info, "not verified", _one_line(e)
    except rws.RWSError as e:  # NaN/inf values under a good checksum
        return info, "ok", _one_line(e)


def cmd_info(args) -> int:
    import numpy as np  # noqa: PLC0415

    import rws_jax as rws  # noqa: PLC0415

    info, status, problem = signature_info(args.file)
    specs = info.get("leaf_specs", [])
    values = int(sum(int(np.prod(s)) for _, s, _ in specs))
    full = int(sum(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d in specs))
    disk = rws.bytes_on_disk(args.file)
    try:
        sel = json.loads(info.get("selection") or "null")
        sel_text = _describe_selection(sel) if isinstance(sel, dict) else (info.get("selection") or "-")
    except json.JSONDecodeError:
        sel_text = info.get("selection") or "-"
    rows = [
        ("file", str(args.file)),
        ("name", info.get("name") or "-"),
        ("severity", "-" if info.get("severity") is None else str(info["severity"])),
        ("kind", info.get("kind") or "-"),
        ("selection", sel_text),
        ("tensors", str(info["num_tensors"])),
        ("values", f"{values:,}"),
        ("on disk", f"{disk:,} bytes (the values at model precision: {full:,} bytes)"),
        ("quantization", info.get("quantization") or "none (float)"),
        ("format", f"{info.get('format')} version {info.get('format_version')}"),
        ("base model", str(info.get("base_fingerprint"))),
        ("checksum", status),
    ]
    for k, v in rows:
        print(f"{k + ':':14s}{v}")
    for p, s, d in specs:
        print(f"  {p}  {d}{list(s)}")
    if problem:
        raise SigCliError(f"{args.file}: {problem}" if not problem.startswith(str(Path(args.file).absolute()))
                          else problem)
    return 0


def _describe_selection(sel: dict) -> str:
    mode = sel.get("mode")
    colls = sel.get("collections")
    tail = f", collections={','.join(colls)}" if colls else ""
    if mode == "first_k":
        order = sel.get("order")
        units = f", unit order {', '.join(order[:8])}{', ...' if len(order) > 8 else ''}" if order else ""
        return f"first_k:{sel.get('k')}{tail}{units}"
    if mode == "pattern":
        return f"pattern {sel.get('pattern')!r}{tail}"
    if mode == "paths":
        return f"paths ({len(sel.get('paths') or [])})"
    return json.dumps(sel)


def cmd_verify(args) -> int:
    like = load_model(args.like) if args.like else None
    _load_sig(args.file, like=like, check_base=not args.no_check_base)
    print("ok")
    return 0


def compose_supports_method() -> bool:
    import rws_jax as rws  # noqa: PLC0415

    return "method" in inspect.signature(rws.compose).parameters


def compose_methods() -> tuple[str, ...]:
    """Merge methods this rws_jax offers: ``rws.compose(method=...)``'s, else sum and mean."""
    if compose_supports_method():
        try:
            from rws_jax.merging import METHODS as methods  # noqa: PLC0415
        except ImportError:
            methods = METHODS
        return tuple(methods)
    return ("sum", "mean")


def compose_signatures(sigs, alphas, method: str = "sum", *, density=None, drop_rate=None, seed: int = 0,
                       name: str | None = None):
    """``rws.compose`` with a merge ``method`` (``sum``/``mean`` always; ``ties``/``dare``... where
    ``rws.compose`` has a ``method=`` argument)."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import rws_jax as rws  # noqa: PLC0415

    known = compose_methods()
    if method not in known and method not in METHODS:
        raise SigCliError(f"unknown --method {method!r} (choose from {', '.join(known)})")
    if density is not None and "ties" not in method:
        raise SigCliError(f"--density applies to TIES merging only, not --method {method}")
    if drop_rate is not None and "dare" not in method:
        raise SigCliError(f"--drop-rate applies to DARE merging only, not --method {method}")
    if compose_supports_method():
        kwargs: dict[str, Any] = {"method": method, "key": jax.random.key(seed)}
        if density is not None:
            kwargs["density"] = density
        if drop_rate is not None:
            kwargs["drop_rate"] = drop_rate
        return rws.compose(sigs, alphas, name=name, **kwargs)
    if method == "sum":
        return rws.compose(sigs, alphas, name=name)
    if method == "mean":  # every signature counted for every leaf (K, not the K_p holding it)
        return rws.compose(sigs, np.broadcast_to(np.asarray(alphas, np.float32), (len(sigs),)) / len(sigs), name=name)
    raise SigCliError(f"--method {method} needs an rws_jax whose compose() has a method= argument; "
                      "this one supports sum and mean only")


def cmd_compose(args) -> int:
    import rws_jax as rws  # noqa: PLC0415

    out = _check_out(args.out, args.overwrite)
    _check_bits(args.bits)
    sigs = [_load_sig(f) for f in args.files]
    alphas = _alphas(args.alpha, len(sigs))
    sig = compose_signatures(sigs, alphas, args.method, density=args.density, drop_rate=args.drop_rate,
                             seed=args.seed, name=args.name)
    rws.check_finite(sig)
    if args.bits:
        sig = rws.quantize(sig, args.bits)
    written = rws.save_signature(out, sig, overwrite=args.overwrite)
    print(f"wrote {written}: {sig!r} ({args.method} of {len(sigs)})")
    return 0


def cmd_patch(args) -> int:
    import rws_jax as rws  # noqa: PLC0415

    out = _check_out(args.out, args.overwrite)
    if not args.sig:
        raise SigCliError("name at least one --sig FILE")
    variables = load_model(args.model)
    sigs = [_load_sig(f, like=variables, check_base=not args.no_check_base) for f in args.sig]
    alphas = _alphas(args.alpha, len(sigs))
    patched = rws.patch(variables, sigs, alphas, check_base=not args.no_check_base)
    from rws_jax import tree_paths  # noqa: PLC0415

    flat = tree_paths.flatten(patched)[0]
    import numpy as np  # noqa: PLC0415

    bad = [p for p in {q for s in sigs for q in s.deltas} if not np.all(np.isfinite(np.asarray(flat[p])))]
    if bad:
        raise SigCliError(f"the patched model holds NaN/inf in {sorted(bad)[:5]}")
    written = save_model(out, patched, overwrite=args.overwrite)
    print(f"wrote {written}: patched {len({p for s in sigs for p in s.deltas})} tensors with "
          + ", ".join(f"{s.name or '?'}" for s in sigs) + f" (alpha {alphas})")
    return 0


def run(args) -> int:
    """Runs a ``sig`` subcommand; user errors become one stderr line and exit code 2."""
    from rws_jax.selection import SelectionError  # noqa: PLC0415

    try:
        return int(args.sig_fn(args) or 0)
    except (RWSError, SelectionError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            PermissionError, ValueError) as e:
        print(f"rws-jax: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_REFUSED


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
    e.add_argument("--select", default="first_k:7",
                   help="first_k:K[:COLL,COLL] (tree order), a regex, or comma-separated leaf paths")
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
    c.add_argument("--method", default="sum", help="sum | mean | ties | dare (| dare_ties where supported)")
    c.add_argument("--alpha", type=float, action="extend", nargs="+", default=None,
                   help="one coefficient for all, or one per signature")
    c.add_argument("--density", type=float, default=None, help="ties: fraction of entries kept")
    c.add_argument("--drop-rate", type=float, default=None, help="dare: fraction of entries dropped")
    c.add_argument("--seed", type=int, default=0, help="dare: random seed")
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
