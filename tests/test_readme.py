"""README's Python blocks run, in order, as one program: README cannot drift from the API.

docs/getting_started.md includes README's first block (between the quickstart markers), so
the site's thirty-second example is tested here too.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of Markdown ``text``, in order."""
    return _PYTHON_BLOCK.findall(text)


def test_python_blocks_finds_fenced_python_only():
    text = "```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a\n"]


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """Every ```python block of README.md runs, in order, in one namespace, in a temporary
    directory (the example writes a signature file) where ``docs`` is the repository's (the
    released model's block loads ``docs/reproduce/release``)."""
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no Python block"
    (tmp_path / "docs").symlink_to(ROOT / "docs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md, Python block {i + 1}", "exec"), namespace)
    assert namespace["logits"].shape == (8, 10)  # the quickstart's last line ran


def test_getting_started_includes_the_readme_quickstart():
    """The site's getting-started page shows README's tested block, not a copy of it."""
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
    assert python_blocks(readme[readme.index(start):readme.index(end)])
    page = (ROOT / "docs" / "getting_started.md").read_text()
    assert f":start-after: {start}" in page and f":end-before: {end}" in page
