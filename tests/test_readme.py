"""README.md's Python examples run as written, and its local links (and those of docs/) point at files.

Each ```python block of README.md is one test: executed in a fresh namespace, in a temporary working folder,
with ``PCMETA_DATA_DIR`` from the environment, else ``../shared/data/omniglot`` beside the repository.
Tracebacks show the block's lines and the README line where it starts.
"""
from __future__ import annotations

import linecache
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "omniglot"

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block of ``text``."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))
#: docs/ pages' Python snippets run too (they hold figures that must come out as printed)
DOC_BLOCKS = [(p.relative_to(REPO).as_posix(), ln, code) for p in sorted((REPO / "docs").glob("*.md"))
              for ln, code in python_blocks(p.read_text(encoding="utf-8"))]


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3, f"expected the README's Python examples, found {len(BLOCKS)} ```python blocks"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}_line{ln}" for i, (ln, _) in enumerate(BLOCKS)])
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    line, code = BLOCKS[index]
    monkeypatch.setenv("PCMETA_DATA_DIR", os.environ.get("PCMETA_DATA_DIR", str(DEFAULT_DATA)))
    monkeypatch.chdir(tmp_path)
    # a pseudo-file named after the block, so that tracebacks show the block's own lines
    name = f"README.md block {index} (its line 1 = README line {line})"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    exec(compile(code, name, "exec"), {"__name__": f"readme_block_{index}"})


@pytest.mark.parametrize("doc, line, code", DOC_BLOCKS, ids=[f"{d}:{ln}" for d, ln, _ in DOC_BLOCKS])
def test_docs_python_block_runs(doc, line, code, tmp_path, monkeypatch):
    monkeypatch.setenv("PCMETA_DATA_DIR", os.environ.get("PCMETA_DATA_DIR", str(DEFAULT_DATA)))
    monkeypatch.chdir(tmp_path)
    name = f"{doc} block at line {line}"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    exec(compile(code, name, "exec"), {"__name__": "docs_block"})


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))])
def test_local_links_point_at_files(doc):
    path = REPO / doc
    missing = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same file
        if not (path.parent / target.split("#", 1)[0]).exists():
            missing.append(target)
    assert not missing, f"{doc} links to missing files: {missing}"
