"""A released model with its signatures: the paper's framework as files. One directory::

    <release>/model.msgpack         θ_std, the clean model (Flax msgpack)
    <release>/signatures/<c>.rws    RWS_c, one signature file a corruption (quantized or not)
    <release>/release.json          what it is: the network, its preprocessing and classes,
                                    the corruptions and the accuracies to expect
    <release>/SHA256SUMS            sha256 of every other file (``sha256sum -c SHA256SUMS``)
    <release>/README.md             (optional) how to use it, written from the manifest

:func:`write_release` writes it atomically; :func:`load_release` checks every file against
``SHA256SUMS`` (and each signature against its own checksum and the model) before it returns
anything, so a truncated, tampered, missing or extra file is refused with an error naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from rws_jax.errors import ReleaseFileError
from rws_jax.files.atomic_dirs import atomic_write_dir
from rws_jax.files.model_files import load_model, save_model
from rws_jax.files.signature_files import load_signature, save_signature
from rws_jax.signature import Signature

MODEL_FILE = "model.msgpack"
MANIFEST_FILE = "release.json"
SUMS_FILE = "SHA256SUMS"
SIGNATURE_DIR = "signatures"


@dataclasses.dataclass(frozen=True)
class Release:
    """A loaded release.

    Attributes:
      variables: θ_std, a nested dict of jax arrays (``{'params': ...}``).
      signatures: corruption name → :class:`~rws_jax.Signature`, each fitting ``variables``.
      manifest: the contents of ``release.json``.
      path: the release directory.
    """

    variables: dict
    signatures: dict[str, Signature]
    manifest: dict
    path: Path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def release_files(path: str | os.PathLike) -> list[str]:
    """Every file of a release directory but ``SHA256SUMS``, as sorted POSIX paths relative to it."""
    root = Path(path)
    return sorted(rel for rel in (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
                  if rel != SUMS_FILE)


def checksum_lines(path: str | os.PathLike) -> str:
    """``SHA256SUMS`` of a directory: ``<sha256>  <relative path>`` a file, sorted (the
    format ``sha256sum -c`` reads)."""
    root = Path(path)
    return "".join(f"{_sha256(root / f)}  {f}\n" for f in release_files(root))


def write_release(path: str | os.PathLike, variables: Any, signatures: Mapping[str, Signature],
                  manifest: Mapping[str, Any], *, text_files: Mapping[str, str] | None = None,
                  overwrite: bool = False) -> Path:
    """Writes a release directory (module docstring) atomically and returns its path.

    Args:
      path: the directory to write.
      variables: θ_std (any pytree of arrays :func:`rws_jax.files.save_model` writes).
      signatures: name → signature; each is written to ``signatures/<name>.rws``.
      manifest: JSON-serialisable facts about the release; ``model`` and ``signatures``
        (the files' relative paths) are added.
      text_files: more files at the top of the release, name → text (e.g. a ``README.md``);
        checksummed like the rest.
      overwrite: replace an existing ``path`` (only once the new one is complete).

    Raises :class:`~rws_jax.errors.OutputExistsError` for an existing ``path`` unless
    ``overwrite``, and :class:`~rws_jax.errors.ReleaseFileError` for a bad signature or
    text file name.
    """
    text_files = dict(text_files or {})
    for name in [*signatures, *text_files]:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ReleaseFileError(f"name {name!r} cannot be a file name")
    reserved = [n for n in text_files if n in (MODEL_FILE, MANIFEST_FILE, SUMS_FILE, SIGNATURE_DIR)]
    if reserved:
        raise ReleaseFileError(f"text file {reserved[0]!r} would replace a file of the release")
    files = {name: f"{SIGNATURE_DIR}/{name}.rws" for name in signatures}
    meta = {**dict(manifest), "model": MODEL_FILE, "signatures": files}
    text = json.dumps(meta, indent=1, sort_keys=True, allow_nan=False) + "\n"

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_model(tmp / MODEL_FILE, variables)
        for name, sig in signatures.items():
            save_signature(tmp / files[name], sig)
        (tmp / MANIFEST_FILE).write_text(text)
        for name, body in text_files.items():
            (tmp / name).write_text(body)
        (tmp / SUMS_FILE).write_text(checksum_lines(tmp))

    return atomic_write_dir(path, write, overwrite=overwrite)


def _read_sums(root: Path) -> dict[str, str]:
    sums_path = root / SUMS_FILE
    if not sums_path.is_file():
        raise ReleaseFileError(f"{root}: no {SUMS_FILE}: not a release directory (or an incomplete copy of one)")
    sums = {}
    for i, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise ReleaseFileError(f"{sums_path}:{i}: not a '<sha256>  <path>' line: {line[:80]!r}")
        if name.startswith("/") or ".." in Path(name).parts:
            raise ReleaseFileError(f"{sums_path}:{i}: path {name!r} leaves the release directory")
        sums[name] = digest
    return sums


def verify_release(path: str | os.PathLike) -> list[str]:
    """Checks every file of a release against its ``SHA256SUMS`` and returns the files checked.

    Raises :class:`~rws_jax.errors.ReleaseFileError` naming the file: a missing directory or
    ``SHA256SUMS``, a malformed line, a listed file that is missing or whose bytes differ
    (truncated, tampered), or a file present but not listed."""
    root = Path(path)
    if not root.is_dir():
        raise ReleaseFileError(f"{root}: no such release directory")
    sums = _read_sums(root)
    present = set(release_files(root))
    for name, digest in sums.items():
        if name not in present:
            raise ReleaseFileError(f"{root}: {name} is listed in {SUMS_FILE} but missing")
        if _sha256(root / name) != digest:
            raise ReleaseFileError(f"{root}: {name} does not match its sha256 in {SUMS_FILE} (truncated or changed)")
    extra = sorted(present - set(sums))
    if extra:
        raise ReleaseFileError(f"{root}: {', '.join(extra[:5])} not listed in {SUMS_FILE}: not part of the release")
    return sorted(sums)


def read_release_manifest(path: str | os.PathLike) -> dict:
    """``release.json`` of a release directory (after :func:`verify_release`)."""
    root = Path(path)
    verify_release(root)
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ReleaseFileError(f"{root / MANIFEST_FILE}: not readable JSON: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("signatures"), dict) \
            or not isinstance(manifest.get("model"), str):
        raise ReleaseFileError(f"{root / MANIFEST_FILE}: needs 'model' (a path) and 'signatures' (name → path)")
    return manifest


def load_release(path: str | os.PathLike, names: Sequence[str] | None = None) -> Release:
    """A release directory's model and signatures, every file checked first.

    Args:
      path: the release directory (:func:`write_release`).
      names: the signatures to load (default: all of them).

    Returns:
      a :class:`Release`: ``variables`` (θ_std), ``signatures`` (name → signature, each
      checked against its own checksum and against ``variables``), ``manifest``.

    Raises :class:`~rws_jax.errors.ReleaseFileError` (see :func:`verify_release`; also an
    unknown signature name), and the signature and model files' own errors.
    """
    root = Path(path)
    manifest = read_release_manifest(root)
    files = manifest["signatures"]
    names = list(files) if names is None else list(names)
    unknown = [n for n in names if n not in files]
    if unknown:
        raise ReleaseFileError(f"{root}: no signature {unknown}; it has {sorted(files)}")
    variables = load_model(root / manifest["model"])
    sigs = {n: load_signature(root / files[n], like=variables) for n in names}
    return Release(variables=variables, signatures=sigs, manifest=manifest, path=root)
