"""httpx, imported without its optional command-line client.

``import httpx`` also tries ``httpx._main`` (the ``httpx`` CLI) and, because click is installed
here, imports click and pygments before giving up for lack of rich: ~25 ms of every process
that gets a token, for code certauth never runs (every CI step that runs certauth pays it).
Marking ``httpx._main`` as absent while httpx loads makes httpx take its documented fallback
(``httpx.main`` becomes a stub that asks for ``httpx[cli]``); the marker is removed at once, so
``import httpx._main`` still works for anyone who wants the CLI in this process. When httpx is
already imported, this changes nothing.
"""

from __future__ import annotations

import sys

if "httpx" in sys.modules or "httpx._main" in sys.modules:
    import httpx
else:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        del sys.modules["httpx._main"]

__all__ = ["httpx"]
