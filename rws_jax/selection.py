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
import json
import re
from typing import Any, Mapping, Sequence, TypeAlias, Union

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
            if self.paths is None:
                raise SelectionError("a 'paths' selection needs its paths")
            missing = [p for p in self.paths if p not in flat]
            if missing:
                raise SelectionError(f"selected paths not in the tree: {missing[:5]}")
            chosen = set(self.paths)
            result = tuple(p for p in flat if p in chosen)
        elif self.mode == "pattern":
            if self.pattern is None:
                raise SelectionError("a 'pattern' selection needs its pattern")
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

    def _eligible(self, path: str, leaf: Any, collection: str | None) -> bool:
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
        return f"by_paths({len(self.paths or ())} paths)"

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


#: A layer selection, or what :func:`as_selection` turns into one (a :class:`Selection`, an
#: int k for the first k units, a regular expression, or a sequence of leaf paths).
SelectionLike: TypeAlias = Union[Selection, int, str, Sequence[str]]


def as_selection(select: SelectionLike) -> Selection:
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


_REGEX_META = set(".^$*+?{}[]\\|()")


def parse_selection(text: str, variables: Any, order_from: Any = None, *, all_units_if_fewer: bool = False) -> Selection:
    """A selection from its text form (``rws-jax sig extract --select``), checked against
    ``variables``: ``first_k:K`` or ``first_k:K:COLL,COLL`` (the first ``K`` units of those
    collections, default ``params``), comma-separated leaf paths of ``variables``, or a
    regular expression searched in each leaf path.

    ``first_k`` counts units in the tree's own order (:func:`first_k` without ``order``);
    ``order_from`` (a tree of the same model that kept its dict order, e.g. from a msgpack
    file) fixes the unit order instead, for trees that lost it (``save_variables`` stores
    sorted paths, so units then come in natural name order).

    Raises :class:`SelectionError` naming ``text``: malformed, paths the tree does not have,
    a selection that matches no leaf, or ``K`` over the number of units of ``variables``
    unless ``all_units_if_fewer`` (then every unit is kept, as by :func:`first_k`, which
    knows no tree: ``first_k(100)`` keeps every unit of a smaller model).
    """
    text = text.strip()
    if not text:
        raise SelectionError("the selection is empty")
    if text.startswith("first_k:"):
        m = re.fullmatch(r"first_k:(\d+)(?::([A-Za-z0-9_]+(?:,[A-Za-z0-9_]+)*))?", text)
        if not m or int(m.group(1)) < 1:
            raise SelectionError(f"{text!r}: want first_k:K or first_k:K:COLL,COLL with K >= 1")
        k, colls = int(m.group(1)), tuple(m.group(2).split(",")) if m.group(2) else ("params",)
        sel = first_k(k, collections=colls)
        if order_from is not None:
            sel = first_k(k, collections=colls, order=sel.units(order_from))
        units = sel.units(variables)
        if k > len(units) and not all_units_if_fewer:
            raise SelectionError(f"{text!r}: the model has only {len(units)} units ({', '.join(units)})")
    else:
        flat = tree_paths.flatten(variables)[0]
        parts = [p.strip() for p in text.split(",")]
        if all(p in flat for p in parts):
            sel = by_paths(parts)
        elif "," in text and not (set(text) - {","}) & _REGEX_META:
            missing = [p for p in parts if p not in flat]
            raise SelectionError(f"{text!r}: not leaf paths of the model: {missing[:5]} "
                                 f"(its leaves look like {list(flat)[:3]})")
        else:
            try:
                re.compile(text)
            except re.error as e:
                raise SelectionError(f"{text!r}: not a valid regular expression: {e}") from None
            sel = by_pattern(text)
    try:
        sel.resolve(variables)
    except SelectionError as e:
        raise SelectionError(f"{text!r}: {e}") from None
    return sel


def describe_json(text: Any) -> str:
    """One line for the JSON text form of a selection (:meth:`Selection.to_json`, as a
    signature's metadata stores it), e.g. ``first_k:7, collections=params, unit order
    conv_0, ...``; text that is not one (or not text) is shown as it is."""
    try:
        sel = json.loads(text)
    except (TypeError, json.JSONDecodeError):  # TypeError: not a string at all
        sel = None
    if not isinstance(sel, dict):
        return text if isinstance(text, str) else json.dumps(text)
    words = lambda v: [str(x) for x in v] if isinstance(v, list) else []  # noqa: E731
    colls = words(sel.get("collections"))
    tail = f", collections={','.join(colls)}" if colls else ""
    if sel.get("mode") == "first_k":
        order = words(sel.get("order"))
        units = f", unit order {', '.join(order[:8])}{', ...' if len(order) > 8 else ''}" if order else ""
        return f"first_k:{sel.get('k')}{tail}{units}"
    if sel.get("mode") == "pattern":
        return f"pattern {sel.get('pattern')!r}{tail}"
    if sel.get("mode") == "paths":
        return f"paths ({len(words(sel.get('paths')))})"
    return json.dumps(sel)
