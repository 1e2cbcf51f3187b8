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
    theta = rws.load_model("theta.msgpack")       # any checkpoint format: rws_jax.model_files
"""

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
from rws_jax.alpha_search import AlphaSearchResult, search_alphas
from rws_jax.autopatch import AutoPatcher
from rws_jax.detector import CorruptionDetector, image_features, load_detector, save_detector, train_detector
from rws_jax.merging import dare, ties_merge
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
from rws_jax.errors import (
    FileWriteError,
    IncompatibleSignatureError,
    ModelFileError,
    NonFiniteError,
    OutputExistsError,
    PatchStackError,
    RWSError,
    SignatureFileError,
)
from rws_jax.extraction import extract, project_out, projection_diagnostics, relative_change
from rws_jax.quantization import (
    QuantizedTensor,
    dequantize,
    dequantize_tensor,
    quantize,
    quantize_reference,
    quantize_tensor,
)
from rws_jax.files import load_model, model_format, save_model
from rws_jax.selection import Selection, SelectionError, by_paths, by_pattern, first_k
from rws_jax.patch_plan import PatchPlan, patch_plan
from rws_jax.patch_stack import AppliedPatch, PatchStack
from rws_jax.signature import Signature, SignatureMeta, signature_fingerprint
from rws_jax.files import (
    bytes_on_disk,
    load_signature,
    load_variables,
    read_signature_info,
    save_signature,
    save_variables,
    storage_ratio,
)
from rws_jax.tree_paths import fingerprint

__version__ = "0.1.0"

__all__ = [
    "AlphaSearchResult",
    "search_alphas",
    "AutoPatcher",
    "CorruptionDetector",
    "image_features",
    "load_detector",
    "save_detector",
    "train_detector",
    "dare",
    "ties_merge",
    "BN_MODES",
    "REFERENCE_BN_PATTERN",
    "average_leaves",
    "batch_norm_paths",
    "batch_statistics",
    "make_batch_stats_step",
    "patch_batch_norm",
    "precompute_reference_bn",
    "apply_reference_bn",
    "ReferenceBatchNorm",
    "recalibrate_batch_stats",
    "reference_mix",
    "AppliedPatch",
    "FileWriteError",
    "IncompatibleSignatureError",
    "ModelFileError",
    "OutputExistsError",
    "NonFiniteError",
    "PatchPlan",
    "PatchStack",
    "PatchStackError",
    "QuantizedTensor",
    "RWSError",
    "Selection",
    "SelectionError",
    "Signature",
    "SignatureFileError",
    "SignatureMeta",
    "Undo",
    "add",
    "by_paths",
    "by_pattern",
    "bytes_on_disk",
    "check_compatible",
    "check_finite",
    "coefficients",
    "compose",
    "dequantize",
    "dequantize_tensor",
    "extract",
    "fingerprint",
    "first_k",
    "load_model",
    "load_signature",
    "load_variables",
    "negate",
    "patch",
    "patch_plan",
    "project_out",
    "quantize",
    "quantize_reference",
    "quantize_tensor",
    "read_signature_info",
    "relative_change",
    "projection_diagnostics",
    "model_format",
    "save_model",
    "save_signature",
    "save_variables",
    "scale",
    "signature_fingerprint",
    "storage_ratio",
    "subtract",
    "unpatch",
]
