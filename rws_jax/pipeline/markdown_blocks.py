"""Generated blocks inside hand-written Markdown: the text between two marker comments.

README (the study's headline), the results pages of docs/results/ and docs/guides/corruptions.md
hold tables that commands write (``rws-jax report --summary --splice``, ``python -m
benchmarks.report``, ``python -m benchmarks.corruption_fidelity --docs``); tests read the
blocks back to compare them with the committed results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


def read_block(text: str, begin: str, end: str) -> Optional[str]:
    """The text between ``begin`` and ``end`` with surrounding blank lines stripped and one
    final newline; ``None`` when a marker is missing."""
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def write_block(doc: Path, begin: str, end: str, inner: str) -> None:
    """Replace everything between the markers of ``doc`` by ``inner`` (verbatim); exits
    with a message naming the file when a marker is missing, and writes nothing then."""
    text = Path(doc).read_text()
    if read_block(text, begin, end) is None:
        raise SystemExit(f"{doc}: no {begin} ... {end} markers to replace")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    Path(doc).write_text(head + begin + inner + end + tail)
