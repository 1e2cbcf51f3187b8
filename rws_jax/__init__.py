"""rws_jax: Robust Weight Signatures (Cai, Zhang, Wang, ICML 2023) in JAX/Flax.

A robust weight signature (RWS) is the part of a robust fine-tuning direction that
is orthogonal to the clean fine-tuning direction, kept for the shallow layers only.
Patching adds ``α · RWS`` to a model's weights::

    import rws_jax as rws
    sig = rws.extract(theta_init, theta_std, theta_fog, rws.first_k(7), name="fog")
    patched, undo = rws.patch(theta_std, sig, 1.0, return_undo=True)
    restored = rws.unpatch(patched, undo)          # bit-exact
    plan = rws.patch_plan(theta_std, sig)          # validate once (P leaves, f32[...] each)
    theta = plan(theta_std, 1.0, donate=True)      # then one jitted call per patch
    rws.save_signature("fog.rws", rws.quantize(sig, 8))
    theta = rws.load_model("theta.msgpack")       # any checkpoint format: rws_jax.files.model_files

The names below are grouped by concept; each group's module holds the details. The pipeline
that trains models and reproduces the paper is :mod:`rws_jax.pipeline`; the command line,
:mod:`rws_jax.cli`.
"""

# Type aliases of the public argument types.
from rws_jax.types import Alphas, PyTree, Variables
from rws_jax.selection import SelectionLike
from rws_jax.signature import SignatureLike

# Signatures: the pytree of kept deltas and its static description.
from rws_jax.signature import Signature, SignatureMeta, signature_fingerprint
from rws_jax.tree_paths import fingerprint

# Which tensors a signature keeps.
from rws_jax.selection import Selection, SelectionError, by_paths, by_pattern, first_k

# Extracting signatures from θ_init, θ_std and θ_rob,c.
from rws_jax.extraction import extract, project_out, projection_diagnostics, relative_change

# Signature arithmetic and patching.
from rws_jax.algebra import (
    Undo,
    add,
    check_compatible,
    check_finite,
    coefficients,
    compose,
    negate,
    patch,
    scale,
    subtract,
    unpatch,
)

# Merging several signatures beyond the sum.
from rws_jax.merging import dare, ties_merge

# Patching fast: a validated plan, and a stack of removable patches.
from rws_jax.patch_plan import PatchPlan, patch_plan
from rws_jax.patch_stack import AppliedPatch, PatchStack

# Quantized signatures.
from rws_jax.quantization import (
    QuantizedTensor,
    dequantize,
    dequantize_tensor,
    quantize,
    quantize_reference,
    quantize_tensor,
)

# BatchNorm models: the pure patch, the reference's scheme, statistics.
from rws_jax.batch_norm import (
    BN_MODES,
    REFERENCE_BN_PATTERN,
    ReferenceBatchNorm,
    apply_reference_bn,
    average_leaves,
    batch_norm_paths,
    batch_statistics,
    make_batch_stats_step,
    patch_batch_norm,
    precompute_reference_bn,
    recalibrate_batch_stats,
    reference_mix,
)

# Choosing α on validation data.
from rws_jax.alpha_search import AlphaSearchResult, search_alphas

# The premise: linear mode connectivity between two models.
from rws_jax.linear_path import PathResult, barrier, evaluate_path, interpolate

# How good a θ_init is: a linear probe of its frozen penultimate features.
from rws_jax.linear_probe import ProbeResult, fit_probe, linear_probe, penultimate_features

# Training speed on CPUs: XLA:CPU flags, applied before the first JAX computation.
from rws_jax.cpu_tuning import apply_cpu_tuning, tuned_xla_flags

# Files: signatures, variables and model checkpoints on disk; a released model with its signatures.
from rws_jax.files import (
    Release,
    bytes_on_disk,
    load_release,
    load_model,
    load_signature,
    load_variables,
    model_format,
    read_signature_info,
    save_model,
    save_signature,
    save_variables,
    storage_ratio,
    verify_release,
    write_release,
)

# Test-time auto-patching of an unknown corruption.
from rws_jax.autopatching import (
    AutoPatcher,
    CorruptionDetector,
    image_features,
    load_detector,
    save_detector,
    train_detector,
)

# Errors: every refusal of the library is an RWSError.
from rws_jax.errors import (
    FileWriteError,
    IncompatibleSignatureError,
    ModelFileError,
    NonFiniteError,
    OutputExistsError,
    PatchStackError,
    ReleaseFileError,
    RWSError,
    SignatureFileError,
)

__version__ = "0.1.0"

__all__ = (
    # Type aliases
    "Alphas",
    "PyTree",
    "SelectionLike",
    "SignatureLike",
    "Variables",
    # Signatures
    "Signature",
    "SignatureMeta",
    "fingerprint",
    "signature_fingerprint",
    # Selecting tensors
    "Selection",
    "SelectionError",
    "by_paths",
    "by_pattern",
    "first_k",
    # Extracting
    "extract",
    "project_out",
    "projection_diagnostics",
    "relative_change",
    # Arithmetic and patching
    "Undo",
    "add",
    "check_compatible",
    "check_finite",
    "coefficients",
    "compose",
    "negate",
    "patch",
    "scale",
    "subtract",
    "unpatch",
    # Merging
    "dare",
    "ties_merge",
    # Patching fast
    "AppliedPatch",
    "PatchPlan",
    "PatchStack",
    "patch_plan",
    # Quantization
    "QuantizedTensor",
    "dequantize",
    "dequantize_tensor",
    "quantize",
    "quantize_reference",
    "quantize_tensor",
    # BatchNorm models
    "BN_MODES",
    "REFERENCE_BN_PATTERN",
    "ReferenceBatchNorm",
    "apply_reference_bn",
    "average_leaves",
    "batch_norm_paths",
    "batch_statistics",
    "make_batch_stats_step",
    "patch_batch_norm",
    "precompute_reference_bn",
    "recalibrate_batch_stats",
    "reference_mix",
    # Choosing α
    "AlphaSearchResult",
    "search_alphas",
    # The premise: linear paths
    "PathResult",
    "barrier",
    "evaluate_path",
    "interpolate",
    # θ_init's quality
    "ProbeResult",
    "fit_probe",
    "linear_probe",
    "penultimate_features",
    # Training speed on CPUs (XLA flags; set before the first JAX computation)
    "apply_cpu_tuning",
    "tuned_xla_flags",
    # Files
    "Release",
    "bytes_on_disk",
    "load_model",
    "load_release",
    "load_signature",
    "load_variables",
    "model_format",
    "read_signature_info",
    "save_model",
    "save_signature",
    "save_variables",
    "storage_ratio",
    "verify_release",
    "write_release",
    # Auto-patching
    "AutoPatcher",
    "CorruptionDetector",
    "image_features",
    "load_detector",
    "save_detector",
    "train_detector",
    # Errors
    "FileWriteError",
    "IncompatibleSignatureError",
    "ModelFileError",
    "NonFiniteError",
    "OutputExistsError",
    "PatchStackError",
    "ReleaseFileError",
    "RWSError",
    "SignatureFileError",
)
