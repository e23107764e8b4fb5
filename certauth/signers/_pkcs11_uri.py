"""The ``pkcs11:`` URI of RFC 7512: which module, token and object a key is, and where its PIN is.

Private, and no PKCS#11 call (python-pkcs11 need not be installed): :mod:`certauth.signers.pkcs11`
parses with it, and the CLI checks a URI with it before loading anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from certauth.errors import InvalidArgumentError, SignerError
from certauth.signers import is_pkcs11_uri

__all__ = ["MODULE_ENV", "Pkcs11Uri", "is_pkcs11_uri", "resolve_module", "resolve_pin"]

#: RFC 7512 section 2.3: the path attributes (they select the module, slot, token and object).
PATH_ATTRIBUTES = (
    "token",
    "manufacturer",
    "serial",
    "model",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-description",
    "slot-manufacturer",
    "slot-id",
    "object",
    "type",
    "id",
)
#: RFC 7512 section 2.3: the query attributes (how to reach the module and the PIN).
QUERY_ATTRIBUTES = ("pin-source", "pin-value", "module-name", "module-path")
#: RFC 7512 section 2.3: the values of ``type``.
OBJECT_TYPES = ("public", "private", "cert", "secret-key", "data")
#: The environment variable naming the PKCS#11 module when neither ``module=`` nor the URI does.
MODULE_ENV = "CERTAUTH_PKCS11_MODULE"
#: Where ``module-name`` alone is looked for (RFC 7512 section 2.3 leaves the search to the
#: consumer): p11-kit's and the distributions' module directories.
MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/lib/softhsm",
    "/usr/local/lib/pkcs11",
    "/usr/local/lib/softhsm",
)
_BACKEND = "pkcs11"
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI. Text values are percent-decoded UTF-8; ``id`` is bytes (the
    object's ``CKA_ID``). ``pin_value`` is kept out of the repr and of :meth:`redacted`."""

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    library_manufacturer: str | None = None
    library_description: str | None = None
    library_version: str | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None
    slot_id: int | None = None
    object: str | None = None
    type: str | None = None
    id: bytes | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)
    module_name: str | None = None
    module_path: str | None = None
    #: The URI as given, with any ``pin-value`` removed: safe for messages and logs.
    text: str = field(default="pkcs11:", compare=False)

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        """Parse ``pkcs11:path-attr;...?query-attr&...`` (RFC 7512 section 2.3).

        Refused, with :class:`~certauth.errors.InvalidArgumentError`: another scheme, an
        attribute without ``=``, one given twice (which value would win is not defined), a
        malformed percent escape or text that is not UTF-8, an unknown ``type`` or ``slot-id``,
        an unknown attribute (a misspelling would otherwise match any object), and a
        vendor-specific ``x-`` attribute in the path (certauth cannot honour a filter it does not
        know). Vendor-specific query attributes are ignored.
        """
        if not is_pkcs11_uri(uri):
            raise InvalidArgumentError(
                "a PKCS#11 key is a URI starting with pkcs11: (RFC 7512), such as "
                "pkcs11:token=certauth;object=billing-api"
            )
        path, _, query = uri[7:].partition("?")
        values: dict[str, str | bytes] = {}
        kept: list[str] = []
        for part, separator, known in (
            (path, ";", PATH_ATTRIBUTES),
            (query, "&", QUERY_ATTRIBUTES),
        ):
            kept_here: list[str] = []
            for item in part.split(separator):
                if not item:
                    continue  # "pkcs11:" alone, or a trailing separator
                name, equals, raw = item.partition("=")
                name = name.lower()  # attribute names are case-insensitive in practice
                if not equals:
                    raise _bad(uri, f"{name!r} has no value; write it as {name}=VALUE")
                if name.startswith("x-"):
                    if separator == ";":
                        raise _bad(
                            uri,
                            f"the vendor attribute {name} is not supported in the path; "
                            "remove it and select the token and key with token=, serial=, "
                            "object= or id=",
                        )
                    kept_here.append(item)
                    continue
                if name not in known:
                    other = QUERY_ATTRIBUTES if separator == ";" else PATH_ATTRIBUTES
                    where = (
                        f"belongs in the {'query (after ?)' if separator == ';' else 'path'}"
                        if name in other
                        else "is not an RFC 7512 attribute"
                    )
                    raise _bad(
                        uri,
                        f"{name} {where}; path attributes: {', '.join(PATH_ATTRIBUTES)}; "
                        f"query attributes: {', '.join(QUERY_ATTRIBUTES)}",
                    )
                if name in values:
                    raise _bad(uri, f"{name} is given twice; give it once")
                values[name] = _decode(uri, name, raw)
                if name != "pin-value":
                    kept_here.append(item)
            kept.append(separator.join(kept_here))
        text = "pkcs11:" + kept[0] + (f"?{kept[1]}" if kept[1] else "")
        return cls._from_values(uri, values, text)

    @classmethod
    def _from_values(cls, uri: str, values: dict[str, str | bytes], text: str) -> Pkcs11Uri:
        def text_of(name: str) -> str | None:
            value = values.get(name)
            return value if isinstance(value, str) else None

        kind = text_of("type")
        if kind is not None and kind not in OBJECT_TYPES:
            raise _bad(uri, f"type={kind} is not one of {', '.join(OBJECT_TYPES)}")
        slot = text_of("slot-id")
        if slot is not None and not slot.isdigit():
            raise _bad(uri, f"slot-id={slot} is not a decimal number")
        ident = values.get("id")
        return cls(
            token=text_of("token"),
            manufacturer=text_of("manufacturer"),
            serial=text_of("serial"),
            model=text_of("model"),
            library_manufacturer=text_of("library-manufacturer"),
            library_description=text_of("library-description"),
            library_version=text_of("library-version"),
            slot_description=text_of("slot-description"),
            slot_manufacturer=text_of("slot-manufacturer"),
            slot_id=int(slot) if slot is not None else None,
            object=text_of("object"),
            type=kind,
            id=ident if isinstance(ident, bytes) else None,
            pin_source=text_of("pin-source"),
            pin_value=text_of("pin-value"),
            module_name=text_of("module-name"),
            module_path=text_of("module-path"),
            text=text,
        )

    def redacted(self) -> str:
        """The URI as given, without ``pin-value``: what messages and logs show."""
        return self.text

    def with_id(self, ident: bytes) -> str:
        """:meth:`redacted` with ``id=`` set to ``ident`` (percent-encoded, RFC 7512 section
        2.3): the URI of a key certauth created."""
        path, question, query = self.text[7:].partition("?")
        parts = [p for p in path.split(";") if p and not p.lower().startswith("id=")]
        parts.append("id=" + "".join(f"%{byte:02X}" for byte in ident))
        return "pkcs11:" + ";".join(parts) + question + query


def _decode(uri: str, name: str, raw: str) -> str | bytes:
    # RFC 7512 section 2.3: values are percent-encoded; "id" is a byte string (CKA_ID), the
    # others UTF-8 text (section 2.3 and PKCS#11's CK_UTF8CHAR).
    if _PERCENT.search(raw):
        raise _bad(uri, f"{name}: a '%' must start a percent escape such as %20 or %2F")
    data = unquote_to_bytes(raw)
    if name == "id":
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(uri, f"{name}: the value is not UTF-8 text once percent-decoded") from None


def _bad(uri: str, why: str) -> InvalidArgumentError:
    # The URI is shown only without pin-value, and never when it could not be split safely.
    shown = _without_pin_value(uri)
    if len(shown) > 200:
        shown = f"{shown[:100]}..."
    return InvalidArgumentError(f"{shown}: not a usable PKCS#11 URI (RFC 7512): {why}")


def _without_pin_value(uri: str) -> str:
    head, question, query = uri.partition("?")
    if not question:
        return head if "pin-value" not in head.lower() else "pkcs11:..."
    kept = [q for q in query.split("&") if not q.lower().startswith("pin-value")]
    return head + ("?" + "&".join(kept) if kept else "")


def resolve_module(uri: Pkcs11Uri, module: str | os.PathLike[str] | None) -> str:
    """The module path: ``module``, else the URI's ``module-path``/``module-name``, else
    :data:`MODULE_ENV`; a :class:`SignerError` saying how to give one when none does."""
    if module is not None:
        return os.fspath(module)
    if uri.module_path:
        if uri.module_name and os.path.isdir(uri.module_path):
            return _search_module(uri.module_name, [uri.module_path]) or uri.module_path
        return uri.module_path
    if uri.module_name:
        found = _search_module(uri.module_name, MODULE_DIRS)
        if found:
            return found
        raise SignerError(
            f"{uri.redacted()}: module-name={uri.module_name} is not in "
            f"{', '.join(MODULE_DIRS)}; give the module's path with module-path= or module=",
            backend=_BACKEND,
        )
    from_env = os.environ.get(MODULE_ENV)
    if from_env:
        return from_env
    raise SignerError(
        f"{uri.redacted()}: no PKCS#11 module given; name the vendor's module (e.g. "
        f"/usr/lib/softhsm/libsofthsm2.so) with module=, module-path= in the URI or {MODULE_ENV}",
        backend=_BACKEND,
    )


def _search_module(name: str, directories: Iterable[str]) -> str | None:
    # RFC 7512 section 2.3: module-name is the name without the platform's prefix and suffix.
    for directory in directories:
        for candidate in (f"{name}.so", f"lib{name}.so", name):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                return path
    return None


def resolve_pin(uri: Pkcs11Uri, pin: str | None) -> str | None:
    """The user PIN: ``pin``, else ``pin-value``, else the first line of ``pin-source``."""
    if pin is not None:
        if not pin:
            raise InvalidArgumentError("pin= is empty; give the token's user PIN, or leave it out")
        return pin
    if uri.pin_value is not None:
        return uri.pin_value
    if uri.pin_source is None:
        return None
    source = uri.pin_source
    # RFC 7512 section 2.3 leaves pin-source's form to the consumer; certauth takes a file: URI
    # (RFC 8089) or a plain path, and nothing that would run a program.
    if source.lower().startswith("file://"):
        source = source[7:]
        if not source.startswith("/"):
            raise SignerError(
                f"{uri.redacted()}: pin-source={uri.pin_source}: a file URI on this machine is "
                "file:///path or file:/path; fix pin-source=",
                backend=_BACKEND,
            )
    elif source.lower().startswith("file:"):
        source = source[5:]
    elif ":" in source.split("/", 1)[0] or source.startswith("|"):
        raise SignerError(
            f"{uri.redacted()}: pin-source={uri.pin_source} is not a file; certauth reads the "
            "PIN from a file (pin-source=file:/path/to/pin), from pin= or the CLI's options",
            backend=_BACKEND,
        )
    from certauth._files import read_first_line

    return read_first_line(source, what="PIN")
