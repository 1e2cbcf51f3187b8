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


class ModelFileError(RWSError):
    """A model checkpoint file is missing, truncated, damaged, or of an unsupported format."""


class ReleaseFileError(RWSError):
    """A release directory (a model with its signatures) is incomplete, tampered with or malformed."""


class FileWriteError(RWSError):
    """An output file or directory cannot be written (the OS refused: permissions, disk...)."""


class OutputExistsError(FileWriteError, FileExistsError):
    """An output path exists and replacing it was not asked for (also a ``FileExistsError``)."""


def one_line(e: BaseException | str, limit: int | None = None) -> str:
    """The message of ``e`` (an exception, or a message already made; its type's name if
    empty) on one line, cut to ``limit`` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
