"""The documentation site builds offline with ``mkdocs build --strict`` and holds every page and
every public name (the README's "Documentation" section and ``mkdocs.yml``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _docs import DOCS, ROOT, nav_pages

import certauth

pytest.importorskip("mkdocs", reason="the dev extras hold MkDocs")
pytest.importorskip("material", reason="the dev extras hold the Material theme")
pytest.importorskip("mkdocstrings_handlers.python", reason="the dev extras hold mkdocstrings")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as the README says (``mkdocs build --strict``) into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.slow
def test_every_page_is_built_and_the_home_page_is_the_readme(site: Path) -> None:
    for page in nav_pages():
        built = site / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        assert built.is_file(), f"{page} was not built"
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Quick start: CI pipelines" in home
    # The README's links to docs/PAGE.md lead to the pages inside the site.
    assert 'href="cli/"' in home
    assert 'href="changelog/"' in home
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "Unreleased" in changelog


@pytest.mark.slow
def test_the_api_page_documents_every_public_name_from_its_docstring(site: Path) -> None:
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in certauth.__all__:
        if name != "__version__":
            assert f'id="certauth.{name}"' in api, f"{name} is missing from docs/api.md"
    assert 'id="certauth.CertificateCredential.get_token"' in api
    # The docstring's first line is on the page, not only the name.
    first_line = (certauth.CertificateCredential.__doc__ or "").strip().splitlines()[0]
    assert first_line.split("``")[0][:40] in api


def test_every_page_in_docs_is_in_the_nav() -> None:
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert pages == set(nav_pages())
