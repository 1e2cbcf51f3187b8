"""The documentation's sources: links that resolve, and an API reference that lists the public API.

Fast, text only (no Sphinx): `make docs` builds the site itself, with warnings as errors.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_PAGE = DOCS / "api" / "index.md"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
# [text](target) and ![alt](target); the target may sit in <...> and carry a "title"
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def markdown_files() -> list[Path]:
    """README.md and every Markdown page under docs/ (not the build output)."""
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]


def relative_targets(text: str) -> list[str]:
    """The relative link and image targets of Markdown ``text`` (outside code), anchors cut off."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", _COMMENT.sub("", text)))
    targets = []
    for match in _LINK.finditer(prose):
        target = match.group(1) or match.group(2)
        if _SCHEME.match(target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0].split("?", 1)[0])
    return targets


def test_relative_targets_finds_links_and_images_outside_code():
    text = ("see [a](guides/a.md#x), ![fig](figures/f.png), [web](https://x.org), [here](#top),\n"
            "[t](<b c.md> \"title\"), `[no](code.md)`\n```\n[no](fenced.md)\n```\n<!-- [no](comment.md) -->\n")
    assert relative_targets(text) == ["guides/a.md", "figures/f.png", "b c.md"]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    """Every relative link and image of README.md and docs/**/*.md names a file (or folder) that exists."""
    missing = [t for t in relative_targets(page.read_text()) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files: {missing}"


def public_groups() -> list[tuple[str, list[str]]]:
    """``rws_jax.__all__`` as ``rws_jax/__init__.py`` groups it: (comment, names) in order."""
    source = (ROOT / "rws_jax" / "__init__.py").read_text()
    start = source.index("__all__ = (")
    body = source[start:source.index("\n)", start)]
    groups: list[tuple[str, list[str]]] = []
    for line in body.splitlines()[1:]:
        line = line.strip()
        if line.startswith("#"):
            groups.append((line.lstrip("# ").strip(), []))
        elif line:
            groups[-1][1].append(ast.literal_eval(line.rstrip(",")))
    return groups


def api_page_groups() -> list[tuple[str, list[str]]]:
    """The API page's sections (``## title``) and the names of the autosummary table in each
    (``.. autosummary::`` inside an ``{eval-rst}`` block, where autosummary finds it)."""
    groups: list[tuple[str, list[str]]] = []
    in_table = False
    for line in API_PAGE.read_text().splitlines():
        if line.startswith("## "):
            groups.append((line[3:].strip(), []))
        elif line.startswith(".. autosummary::"):
            in_table = True
        elif line.startswith("```"):
            in_table = False
        elif in_table and line.strip() and not line.lstrip().startswith(":"):
            groups[-1][1].append(line.strip())
    return groups


def test_public_groups_are_all_of_the_public_api():
    import rws_jax

    names = [n for _, group in public_groups() for n in group]
    assert names == list(rws_jax.__all__)


def _public_name(entry: str) -> str:
    """The public name an autosummary entry documents: ``patch``, or ``~types.PyTree`` (an alias
    documented where it is defined, in ``rws_jax.types``) for ``PyTree``, which must be the
    same object."""
    import importlib

    import rws_jax

    path = entry.lstrip("~")
    if "." not in path:
        return path
    module, name = path.rsplit(".", 1)
    assert getattr(importlib.import_module(f"rws_jax.{module}"), name) is getattr(rws_jax, name), entry
    return name


def test_api_reference_lists_every_public_name_grouped_as_init_groups_them():
    """docs/api/index.md has one section per group of ``rws_jax.__all__`` (the comments of
    rws_jax/__init__.py), in that order, whose autosummary lists exactly that group's names:
    a new public name without an API page fails here."""
    expected = public_groups()
    assert [g for g, _ in api_page_groups()] == [g for g, _ in expected]
    for (group, names), (_, listed) in zip(expected, api_page_groups()):
        assert [_public_name(e) for e in listed] == names, f"API reference, section {group!r}"
