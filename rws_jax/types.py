"""The type aliases of rws_jax's public API.

They name the argument types that many functions share, so that a signature reads
``patch(variables: Variables, signatures: SignatureLike, alphas: Alphas = 1.0)``:

- :data:`PyTree`: any JAX pytree (nested dicts, lists, tuples, dataclass nodes...).
- :data:`Variables`: a model's variable tree: a Flax Linen variable dict
  (``{'params': ..., 'batch_stats': ...}``, plain or ``FrozenDict``), a Flax NNX
  ``State``, or any pytree of arrays (see :mod:`rws_jax.tree_paths`).
- :data:`Alphas`: the patch coefficients: one number (the same α for every signature)
  or one per signature (a sequence, a numpy or a JAX array); see
  :func:`rws_jax.coefficients`.
- :data:`SignatureLike`: one :class:`~rws_jax.Signature` or a sequence of them (the
  one-or-many argument of ``patch``, ``compose``, ``patch_plan``...).
- :data:`SelectionLike`: a layer selection as :func:`rws_jax.selection.as_selection`
  accepts it: a :class:`~rws_jax.selection.Selection`, an int k (the first k units),
  a regular expression, or a sequence of leaf paths.

``PyTree`` and ``Variables`` are ``Any`` to a type checker: pytrees have no common
static type (Flax's own trees are typed ``Any``); the names document what is expected.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeAlias, Union

from jax.typing import ArrayLike

from rws_jax.selection import Selection
from rws_jax.signature import Signature

#: Any JAX pytree.
PyTree: TypeAlias = Any

#: A model's variable tree (Linen variable dict, NNX ``State`` or any pytree of arrays).
Variables: TypeAlias = PyTree

#: Patch coefficients: one number for all signatures, or one per signature.
Alphas: TypeAlias = Union[float, Sequence[float], ArrayLike]

#: One signature or a sequence of them.
SignatureLike: TypeAlias = Union[Signature, Sequence[Signature]]

#: A layer selection, or what :func:`rws_jax.selection.as_selection` turns into one.
SelectionLike: TypeAlias = Union[Selection, int, str, Sequence[str]]

__all__ = ["Alphas", "PyTree", "SelectionLike", "SignatureLike", "Variables"]
