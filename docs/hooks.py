"""MkDocs hooks: the site's home page is README.md and its changelog is CHANGELOG.md.

Both files live at the top of the repository, where GitHub and the package index show them;
the site takes them from there instead of keeping copies. Their links to ``docs/PAGE.md`` are
written for a reader of the repository and become ``PAGE.md`` inside the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Site page -> the repository file it shows.
PAGES = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
_DOCS_LINK = re.compile(r"\]\(docs/")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the stub of a page listed in :data:`PAGES` with its repository file."""
    source = PAGES.get(page.file.src_uri)
    if source is None:
        return markdown
    text = (ROOT / source).read_text(encoding="utf-8")
    text = _DOCS_LINK.sub("](", text)
    text = text.replace("](docs/)", "](index.md)").replace("](CHANGELOG.md)", "](changelog.md)")
    return text
