"""Where the documentation lives, for the tests that run it.

The README and the pages of ``docs/`` (in the order of ``mkdocs.yml``'s ``nav``) are one text
for the tests: :func:`documents` lists them in reading order, and :func:`section` finds the
part of any of them from a ``<!-- section: NAME -->`` marker to the document's end.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
#: Site pages whose text is a repository file (docs/hooks.py puts it there): not read twice.
GENERATED = {"index.md", "changelog.md"}

_NAV_PAGE = re.compile(r"^\s+- (?:\"[^\"]*\"|[^:\"]+): (?P<page>[\w./-]+\.md)\s*$")


def nav_pages() -> list[str]:
    """The pages of ``mkdocs.yml``'s ``nav``, in order (paths inside ``docs/``)."""
    pages: list[str] = []
    in_nav = False
    for line in MKDOCS_YML.read_text(encoding="utf-8").splitlines():
        if not line.startswith((" ", "\t")):
            in_nav = line.startswith("nav:")
            continue
        match = _NAV_PAGE.match(line) if in_nav else None
        if match:
            pages.append(match["page"])
    return pages


def documents() -> list[Path]:
    """README.md, then every page of the site that is written in ``docs/``, in nav order."""
    return [README] + [DOCS / page for page in nav_pages() if page not in GENERATED]


def relative(path: Path) -> str:
    """``README.md`` or ``docs/PAGE.md``: how messages name a document."""
    return path.relative_to(ROOT).as_posix()


def section(name: str) -> str:
    """The text after ``<!-- section: NAME -->`` to the end of whichever document holds the
    marker (exactly one must)."""
    marker = f"<!-- section: {name} -->"
    found = [
        text.split(marker, 1)[1]
        for text in (path.read_text(encoding="utf-8") for path in documents())
        if marker in text
    ]
    assert len(found) == 1, f"section {name!r} is in {len(found)} documents, expected 1"
    return found[0]
