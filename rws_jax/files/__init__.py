"""Files of rws_jax: signatures, full-model variables, model checkpoints of any format.

One job per module: :mod:`~rws_jax.files.atomic_dirs` (atomic directory writes),
:mod:`~rws_jax.files.array_reading` (orbax arrays read with tensorstore, clean errors),
:mod:`~rws_jax.files.checked_dirs` (arrays + checksummed JSON metadata),
:mod:`~rws_jax.files.signature_format` (what a signature file's metadata holds and may
hold), :mod:`~rws_jax.files.signature_files`, :mod:`~rws_jax.files.variables_files`,
:mod:`~rws_jax.files.sizes`, :mod:`~rws_jax.files.model_files` (checkpoints of any format) and
:mod:`~rws_jax.files.release` (a released model with its signatures, checksummed).
"""

from rws_jax.files.array_reading import read_arrays
from rws_jax.files.atomic_dirs import atomic_write_dir
from rws_jax.files.checked_dirs import checksum, read_checked_dir, write_checked_dir
from rws_jax.files.model_files import FORMATS, describe, file_kind, load_model, model_format, save_model
from rws_jax.files.release import Release, load_release, read_release_manifest, verify_release, write_release
from rws_jax.files.signature_files import load_signature, read_signature_info, save_signature
from rws_jax.files.signature_format import FORMAT, FORMAT_VERSION
from rws_jax.files.sizes import bytes_on_disk, storage_ratio
from rws_jax.files.variables_files import VARIABLES_FORMAT, load_variables, save_variables

__all__ = [
    "read_arrays", "atomic_write_dir", "checksum", "read_checked_dir", "write_checked_dir",
    "FORMATS", "describe", "file_kind", "load_model", "model_format", "save_model",
    "load_signature", "read_signature_info", "save_signature", "FORMAT", "FORMAT_VERSION",
    "Release", "load_release", "read_release_manifest", "verify_release", "write_release",
    "bytes_on_disk", "storage_ratio", "VARIABLES_FORMAT", "load_variables", "save_variables",
]
