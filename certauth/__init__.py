"""certauth: authenticate to OAuth2 / Microsoft Entra ID with certificates instead of secrets.

The public API is re-exported here and imported lazily (PEP 562), so ``import certauth`` stays
cheap and a command that only reads certificates never imports the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from certauth._version import __version__

if TYPE_CHECKING:
    from certauth.certificates import Certificate as Certificate
    from certauth.certificates import generate_certificate as generate_certificate
    from certauth.certificates import load_certificate as load_certificate

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Certificate": "certauth.certificates",
    "generate_certificate": "certauth.certificates",
    "load_certificate": "certauth.certificates",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'certauth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
