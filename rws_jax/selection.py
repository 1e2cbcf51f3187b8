"""Which weight tensors a signature keeps.

The paper keeps the *shallow* layers: the first ``k`` units in forward order (a unit
is a conv layer of VGG, the stem or one residual block of a ResNet). A unit is the
first path component below the collection (``'params/conv_3/kernel'`` -> ``conv_3``).

Forward order, in order of preference: the ``order`` argument (our models give it
as ``model.unit_names``); else the key order of the tree's dicts, which is module
creation order for Linen and NNX (forward order for ``@nn.compact`` code), unless
those keys are already sorted — a tree that has been through ``jax.tree_util`` or a
checkpoint comes back sorted and carries no order — in which case unit names are
sorted naturally (``stem`` first, ``conv_2`` before ``conv_10``). Pass ``order``
whenever the names do not sort into forward order.

Examples::

    sel = first_k(7)                                   # VGG-16 reference default
    sel = first_k(4, order=model.unit_names, collections=("params", "batch_stats"))
    sel = by_pattern(r"conv_[0-3]/kernel")
    sel = by_paths(["params/conv_0/kernel", "params/conv_0/bias"])
    paths = sel.resolve(variables)                     # tuple of leaf paths
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from rws_jax import tree_paths
from rws_jax.errors import RWSError

DEFAULT_HEAD_PATTERN = r"(?i)^(head|classifier|fc|logits|linear|output|out|dense_?\d*)$"
_STEM_NAMES = ("stem", "conv_init", "conv1", "bn_init", "bn1")


class SelectionError(RWSError):
    """A selection that matches nothing, or names paths the tree does not have (an
    :class:`~rws_jax.RWSError`, hence also a ``ValueError``)."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """A rule that picks leaf paths out of a variable tree.

    Attributes:
      mode: ``'first_k'``, ``'pattern'`` or ``'paths'``.
      k: number of units kept (``first_k``).
      order: unit names in forward order (``first_k``); ``None`` = natural sort.
      pattern: regular expression searched in each leaf path (``pattern``).
      paths: explicit leaf paths (``paths``).
      collections: which collections are eligible (``None`` = every leaf of a tree
        without collections, else e.g. ``('params',)`` or ``('params', 'batch_stats')``).
      exclude_head: drop units whose name matches ``head_pattern`` (the classifier).
      head_pattern: regular expression for head unit names.
      floating_only: keep only floating-point leaves (integer counters are never patched).
    """

    mode: str
    k: int | None = None
    order: tuple[str, ...] | None = None
    pattern: str | None = None
    paths: tuple[str, ...] | None = None
    collections: tuple[str, ...] | None = ("params",)
    exclude_head: bool = True
    head_pattern: str = DEFAULT_HEAD_PATTERN
    floating_only: bool = True

    def resolve(self, variables: Any) -> tuple[str, ...]:
        """Returns the selected leaf paths of ``variables``, in tree order."""
        flat, colls = _flat_with_collections(variables)
        eligible = [p for p in flat if self._eligible(p, flat[p], colls[p])]
        if self.mode == "paths":
            missing = [p for p in self.paths if p not in flat]
            if missing:
                raise SelectionError(f"selected paths not in the tree: {missing[:5]}")
            chosen = set(self.paths)
            result = tuple(p for p in flat if p in chosen)
        elif self.mode == "pattern":
            rx = re.compile(self.pattern)
            result = tuple(p for p in eligible if rx.search(p))
        elif self.mode == "first_k":
            units = self._ordered_units(variables, flat, colls)
            keep = set(units[: self.k])
            result = tuple(p for p in eligible if tree_paths.unit_of(p, colls[p]) in keep)
        else:
            raise SelectionError(f"unknown selection mode {self.mode!r}")
        if not result:
            raise SelectionError(f"selection {self.describe()} matches no leaf of the tree")
        return result

    def units(self, variables: Any) -> list[str]:
        """Unit names of ``variables`` in forward order (head excluded if asked)."""
        return self._ordered_units(variables, *_flat_with_collections(variables))

    def _ordered_units(self, variables: Any, flat: dict, colls: dict) -> list[str]:
        present = []
        for p, leaf in flat.items():
            if not self._eligible(p, leaf, colls[p]):
                continue
            u = tree_paths.unit_of(p, colls[p])
            if u not in present:
                present.append(u)
        if self.order is not None:
            unknown = [u for u in present if u not in self.order]
            if unknown and not all(self._is_head(u) for u in unknown):
                raise SelectionError(f"units {unknown[:5]} are missing from the given forward order")
            return [u for u in self.order if u in present]
        inserted = [u for u in _insertion_order(variables) if u in present]
        if len(inserted) == len(present) and inserted != sorted(inserted):
            return inserted
        return sorted(present, key=lambda u: (u not in _STEM_NAMES, tree_paths.natural_key(u)))

    def _is_head(self, unit: str) -> bool:
        return bool(re.search(self.head_pattern, unit))

    def _eligible(self, path: str, leaf, collection: str | None) -> bool:
        if self.collections is not None and collection is not None and collection not in self.collections:
            return False
        if self.floating_only and not jnp.issubdtype(leaf.dtype, jnp.floating):
            return False
        if self.exclude_head and self._is_head(tree_paths.unit_of(path, collection)):
            return False
        return True

    def describe(self) -> str:
        if self.mode == "first_k":
            return f"first_k({self.k})"
        if self.mode == "pattern":
            return f"by_pattern({self.pattern!r})"
        return f"by_paths({len(self.paths)} paths)"

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict) -> "Selection":
        d = dict(d)
        for key in ("order", "paths", "collections"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def _flat_with_collections(variables: Any) -> tuple[dict, dict]:
    """``({path: leaf}, {path: collection})`` of a variable tree."""
    return tree_paths.flatten(variables)[0], tree_paths.collection_of(variables)


def _insertion_order(variables: Any) -> list[str]:
    """Unit names in the key order of the tree's mappings (module creation order)."""
    if not isinstance(variables, Mapping):
        return []
    order: list[str] = []
    colls = [variables[c] for c in ("params", "batch_stats") if isinstance(variables.get(c), Mapping)]
    for mapping in colls or [variables]:
        order += [str(k) for k in mapping.keys() if str(k) not in order]
    return order


def first_k(
    k: int,
    *,
    order: Sequence[str] | None = None,
    collections: Sequence[str] | None = ("params",),
    exclude_head: bool = True,
) -> Selection:
    """The first ``k`` units in forward order (``order``, else natural name order)."""
    if int(k) < 1:
        raise SelectionError(f"k must be >= 1, got {k}")
    return Selection(
        mode="first_k",
        k=int(k),
        order=None if order is None else tuple(order),
        collections=None if collections is None else tuple(collections),
        exclude_head=exclude_head,
    )


def by_pattern(
    pattern: str, *, collections: Sequence[str] | None = ("params",), exclude_head: bool = True
) -> Selection:
    """Every eligible leaf whose path matches the regular expression ``pattern``."""
    re.compile(pattern)
    return Selection(
        mode="pattern",
        pattern=pattern,
        collections=None if collections is None else tuple(collections),
        exclude_head=exclude_head,
    )


def by_paths(paths: Sequence[str]) -> Selection:
    """Exactly these leaf paths (head or not: an explicit list is taken as given)."""
    if not paths:
        raise SelectionError("by_paths needs at least one path")
    return Selection(mode="paths", paths=tuple(paths), collections=None, exclude_head=False, floating_only=False)


def as_selection(select: Any) -> Selection:
    """Accepts a ``Selection``, an int (first k), a regex string, or a list of paths."""
    if isinstance(select, Selection):
        return select
    if isinstance(select, (int, np.integer)) and not isinstance(select, bool):
        return first_k(int(select))
    if isinstance(select, str):
        return by_pattern(select)
    if isinstance(select, (list, tuple)):
        return by_paths(list(select))
    raise SelectionError(f"cannot interpret {select!r} as a layer selection")
