"""Exceptions raised by rws_jax. Each message names the offending leaf, file or value."""


class RWSError(ValueError):
    """Base class of rws_jax errors about user input."""


class IncompatibleSignatureError(RWSError):
    """A signature does not fit a model: other structure, shapes, dtypes or base model."""


class NonFiniteError(RWSError):
    """An array that must be finite holds NaN or inf."""


class SignatureFileError(RWSError):
    """A signature file is missing, truncated, tampered with, or of an unknown format."""


class PatchStackError(RWSError):
    """An invalid operation on a :class:`~rws_jax.PatchStack` (double apply, unknown patch)."""
