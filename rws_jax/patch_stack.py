"""A record of the signatures applied to a model, any of which can be removed exactly.

``PatchStack`` is immutable: every operation returns a new stack together with the
new variables::

    stack = rws.PatchStack.create(variables)
    stack, variables = stack.apply(variables, fog, 0.8)          # name 'fog'
    stack, variables = stack.apply(variables, snow_q8, 1.0, name="snow")
    stack.applied        # (('fog', 0.8, '3f1c…'), ('snow', 1.0, '9ab0…'))
    stack, variables = stack.remove(variables, "fog")            # any order
    stack, variables = stack.remove(variables, "snow")           # == original, bit for bit

Guarantees:

- Before the first patch of a leaf, the stack keeps a private copy of it (once).
- Patches are applied one at a time, in order (``θ ← θ + α·RWS`` per patch).
- ``remove`` recomputes the leaves the removed patch touched from those copies plus
  the remaining patches in their original order, with the same compiled kernel that
  applied them: removing one patch gives bit for bit what applying the others from
  scratch gives, and removing every patch restores the original leaves bit for bit.
- A signature (same content fingerprint, see :func:`rws_jax.signature_fingerprint`)
  is refused a second time unless ``allow_duplicate=True``; names are unique.
- Every check (structure, shapes, dtypes, base model, finite values) runs before
  anything is computed: on error the variables and the stack are unchanged, also
  with ``donate=True``.
- Sharded leaves stay sharded as they were (the copies too).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from rws_jax import tree_paths
from rws_jax.algebra import check_compatible, check_finite, coefficients
from rws_jax.errors import PatchStackError
from rws_jax.kernels import combine, combine_donated
from rws_jax.signature import Signature, signature_fingerprint
from rws_jax.types import Variables


@dataclasses.dataclass(frozen=True)
class AppliedPatch:
    """One applied signature: its unique ``name``, coefficient ``alpha``, content
    ``fingerprint`` and the ``signature`` itself (kept to recompute on removal)."""

    name: str
    alpha: float
    fingerprint: str
    signature: Signature = dataclasses.field(repr=False)

    def as_tuple(self) -> tuple[str, float, str]:
        return (self.name, self.alpha, self.fingerprint)


def _copy(x: jax.Array) -> jax.Array:
    """An independent copy of a leaf, on the same devices with the same sharding."""
    y = jnp.array(x, copy=True)
    s = tree_paths.device_sharding(x)
    if s is not None and not y.sharding.is_equivalent_to(s, y.ndim):
        y = jax.device_put(y, s)
    return y


@dataclasses.dataclass(frozen=True, eq=False)
class PatchStack:
    """Immutable record of applied patches (see the module doc).

    Attributes:
      model_fingerprint: fingerprint (paths, shapes, dtypes) of the variables it tracks.
      originals: ``{path: array}`` copies of the original leaves that patches touch.
      entries: the applied patches, in order.
      check_base: require signatures to match the model's base fingerprint (turn off
        for transfer to a model that shares only the patched layers).
    """

    model_fingerprint: str
    originals: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    entries: tuple[AppliedPatch, ...] = ()
    check_base: bool = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, variables: Variables, *, check_base: bool = True) -> "PatchStack":
        """An empty stack for ``variables`` (nothing is copied until a patch touches it)."""
        return cls(model_fingerprint=tree_paths.fingerprint(variables), check_base=check_base)

    # ------------------------------------------------------------------ queries
    @property
    def applied(self) -> tuple[tuple[str, float, str], ...]:
        """``((name, alpha, signature fingerprint), ...)`` in the order applied."""
        return tuple(e.as_tuple() for e in self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def touched_paths(self) -> tuple[str, ...]:
        return tuple(sorted(self.originals))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __repr__(self) -> str:
        return f"PatchStack({', '.join(f'{n}×{a:g}' for n, a, _ in self.applied) or 'empty'})"

    # ------------------------------------------------------------------ operations
    def _check_model(self, variables: Variables) -> tuple[dict, Any]:
        flat, rebuild = tree_paths.flatten(variables)
        fp = tree_paths.fingerprint(variables)
        if fp != self.model_fingerprint:
            raise PatchStackError(
                f"these variables (fingerprint {fp}) are not the model this stack tracks "
                f"(fingerprint {self.model_fingerprint}): other structure, shapes or dtypes"
            )
        return flat, rebuild

    def apply(
        self,
        variables: Variables,
        signature: Signature,
        alpha: float = 1.0,
        *,
        name: str | None = None,
        allow_duplicate: bool = False,
        donate: bool = False,
    ) -> tuple["PatchStack", Variables]:
        """Patches ``variables`` with ``alpha · signature`` and records it.

        Args:
          variables: the variables this stack returned last (or the original ones).
          signature: float or quantized signature.
          alpha: its coefficient (a finite scalar).
          name: unique name to remove it by (default: ``signature.name``, or
            ``sig-<fingerprint>`` if that is empty).
          allow_duplicate: allow a signature already in the stack (same content
            fingerprint); without an explicit ``name`` it gets a ``#2``-style suffix.
          donate: reuse the patched leaves' buffers (the stack's copies are made first).

        Returns:
          ``(new_stack, patched_variables)``.

        Raises:
          PatchStackError: duplicate signature or name, or variables of another model.
          IncompatibleSignatureError / NonFiniteError: the signature does not fit or
            holds NaN/inf. Nothing is changed when an error is raised.
        """
        if not isinstance(signature, Signature):
            raise PatchStackError(f"expected a Signature, got {type(signature).__name__}")
        flat, rebuild = self._check_model(variables)
        alpha_arr = coefficients(alpha, 1)
        fp = signature_fingerprint(signature)
        dup = [e.name for e in self.entries if e.fingerprint == fp]
        if dup and not allow_duplicate:
            raise PatchStackError(
                f"signature {signature.name!r} (fingerprint {fp[:16]}) is already applied as {dup}; "
                "pass allow_duplicate=True to apply it again"
            )
        if name is None:
            base = signature.name or f"sig-{fp[:8]}"
            name, i = base, 2
            while name in self.names and allow_duplicate:
                name, i = f"{base}#{i}", i + 1
        if name in self.names:
            raise PatchStackError(f"a patch named {name!r} is already applied (applied: {list(self.names)}); pick another name")
        check_compatible(signature, variables, check_base=self.check_base, flat=flat)
        check_finite(signature)

        originals = dict(self.originals)
        for p in signature.deltas:
            if p not in originals:
                originals[p] = _copy(flat[p])
        leaves = {p: flat[p] for p in sorted(signature.deltas)}
        fn = combine_donated if donate else combine
        new = fn(leaves, (signature.deltas,), alpha_arr)
        entry = AppliedPatch(name=name, alpha=float(alpha_arr[0]), fingerprint=fp, signature=signature)
        stack = dataclasses.replace(self, originals=originals, entries=self.entries + (entry,))
        return stack, rebuild(new)

    def remove(self, variables: Variables, name: str) -> tuple["PatchStack", Variables]:
        """Removes the patch called ``name`` (any position), bit-exactly.

        The leaves it touched are recomputed from the stored originals plus the other
        patches in their original order; other leaves are left as they are.

        Raises:
          PatchStackError: no patch of that name, or variables of another model.
        """
        idx = next((i for i, e in enumerate(self.entries) if e.name == name), None)
        if idx is None:
            raise PatchStackError(f"no patch named {name!r} is applied; applied: {list(self.names) or 'none'}")
        flat, rebuild = self._check_model(variables)
        removed = self.entries[idx]
        remaining = self.entries[:idx] + self.entries[idx + 1 :]
        affected = set(removed.signature.deltas)
        current = {p: self.originals[p] for p in affected}
        still = set()
        for e in remaining:
            paths = sorted(e.signature.deltas)
            if affected.isdisjoint(paths):
                continue
            # Same kernel and operands' shapes as when it was applied: bit-identical.
            leaves = {p: current.get(p, flat[p]) for p in paths}
            out = combine(leaves, (e.signature.deltas,), coefficients(e.alpha, 1))
            current.update({p: out[p] for p in paths if p in affected})
            still.update(paths)
        touched_by_rest = {p for e in remaining for p in e.signature.deltas}
        new = {p: (current[p] if p in still else _copy(self.originals[p])) for p in affected}
        originals = {p: x for p, x in self.originals.items() if p in touched_by_rest}
        return dataclasses.replace(self, originals=originals, entries=remaining), rebuild(new)

    def clear(self, variables: Variables) -> tuple["PatchStack", Variables]:
        """Removes every patch: the original leaves, bit for bit, and an empty stack."""
        flat, rebuild = self._check_model(variables)
        restored = rebuild({p: _copy(x) for p, x in self.originals.items()})
        return dataclasses.replace(self, originals={}, entries=()), restored
