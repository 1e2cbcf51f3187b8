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

Two more aliases live beside the types they are made of (so that this module imports no
other module of the package): :data:`rws_jax.signature.SignatureLike` (one
:class:`~rws_jax.Signature` or a sequence of them) and :data:`rws_jax.selection.SelectionLike`
(a :class:`~rws_jax.Selection`, an int k, a regular expression or a sequence of leaf
paths). All five are re-exported as ``rws_jax.<name>``.

``PyTree`` and ``Variables`` are ``Any`` to a type checker: pytrees have no common
static type (Flax's own trees are typed ``Any``); the names document what is expected.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeAlias, Union

from jax.typing import ArrayLike

#: Any JAX pytree.
PyTree: TypeAlias = Any

#: A model's variable tree (Linen variable dict, NNX ``State`` or any pytree of arrays).
Variables: TypeAlias = PyTree

#: The patch coefficients, one number for all signatures or one per signature.
Alphas: TypeAlias = Union[float, Sequence[float], ArrayLike]

__all__ = ["Alphas", "PyTree", "Variables"]
