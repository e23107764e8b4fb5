"""The suite-wide secret scan: secrets the tests create, and every text certauth produces.

Not a test module (leading underscore); ``tests/conftest.py`` wires it in. Why it exists: the
README promises that private keys, passwords, client secrets, assertions and access tokens never
appear in log lines, exception messages or reprs. Rather than trusting a handful of hand-picked
checks, every test run watches everything certauth says and fails the test during which a
registered secret showed up.

What is watched (``observe``): every log record that reaches the root logger (the ``certauth``
loggers are opened to DEBUG for the session), and the message of every
:class:`~certauth.errors.CertauthError` and emulator ``EntraError`` constructed. Reprs and CLI
output are checked by targeted tests (``tests/hardening/test_hardening_secrets.py``) because
some outputs carry a secret on purpose (``certauth token`` prints the token).

What is registered (``add``): automatically, at the choke points every secret passes through
(see :func:`instrument`): generated private keys, signed client assertions, access tokens the
emulator issues, client secrets given to the emulator, and passwords given to certauth; tests
add their own through the ``secret_registry`` fixture.

How it matches: secrets are cut into 24-character needles (non-overlapping), so any leaked run
of 47 characters or more of a long secret is found; shorter secrets (8-47 characters) are looked
for whole. Texts are compared with all whitespace removed, so a PEM body or a wrapped line still
matches. For a JWT only the signature is registered: the header and claims are not secret (and
recur across tokens), while the signature is what makes a token usable. For a private key the
private numbers are registered in every encoding certauth or a user might print (decimal, hex,
base64url as in a JWK, and the base64 run of the PKCS#8 / traditional DER where they sit), never
the public parts (which a certificate legitimately shows).
"""

from __future__ import annotations

import base64
import functools
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CHUNK = 24
#: Below this a value is too common to look for (an "s" secret, a 4-digit password).
MIN_SECRET = 8
#: Loggers of the peers: azure-identity is known to log assertions and tokens in
#: clear at DEBUG, which is theirs to fix; certauth's own loggers are what is promised.
PEER_LOGGERS = ("msal", "azure", "urllib3")


def _squash(text: str) -> str:
    return "".join(text.split())


class SecretRegistry:
    """Secrets created during the run and the texts observed; thread-safe (servers log too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._needles: dict[str, str] = {}  # needle -> label
        self._whole: dict[str, str] = {}  # short secret -> label
        self.texts: list[tuple[str, str]] = []  # (where, squashed text)

    # -- registering -------------------------------------------------------------------------

    def add(self, secret: str | bytes | None, label: str) -> None:
        """Register a secret string (or bytes, read as latin-1)."""
        if secret is None:
            return
        text = secret.decode("latin-1") if isinstance(secret, bytes) else str(secret)
        text = _squash(text)
        if len(text) < MIN_SECRET:
            return
        with self._lock:
            if len(text) < 2 * CHUNK:
                self._whole.setdefault(text, label)
                return
            for start in range(0, len(text) - CHUNK + 1, CHUNK):
                self._needles.setdefault(text[start : start + CHUNK], label)

    def add_jwt(self, token: str | bytes | None, label: str) -> None:
        """Register a compact JWS by its signature (the part that makes it usable)."""
        if token is None:
            return
        text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
        parts = text.strip().split(".")
        if len(parts) == 3 and parts[2]:
            # Some peers pad their base64url; the unpadded run is what anyone would print.
            self.add(parts[2].rstrip("="), label)

    def add_private_key(self, key: Any, label: str) -> None:
        """Register an RSA or EC private key by its private numbers, in every encoding. A key
        held by a PKCS#11 token has none to give (certauth never sees them): nothing to add."""
        if type(key).__module__.startswith("certauth.signers"):
            return
        if isinstance(key, rsa.RSAPrivateKey):
            numbers = key.private_numbers()
            values = [
                numbers.d,
                numbers.p,
                numbers.q,
                numbers.dmp1,
                numbers.dmq1,
                numbers.iqmp,
            ]
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            values = [key.private_numbers().private_value]
        else:
            return
        encodings = [
            key.private_bytes(serialization.Encoding.DER, form, serialization.NoEncryption())
            for form in (
                serialization.PrivateFormat.PKCS8,
                serialization.PrivateFormat.TraditionalOpenSSL,
            )
        ]
        for value in values:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            for text in (
                str(value),
                format(value, "x"),
                format(value, "X"),
                base64.urlsafe_b64encode(raw).decode().rstrip("="),
                base64.b64encode(raw).decode(),
            ):
                self.add(text, label)
            for der in encodings:
                # The base64 of the DER around this number, cut at 3-byte groups so it is
                # exactly the run that appears inside the PEM body.
                at = der.find(raw)
                if at < 0:
                    continue
                first, last = -(-at // 3), (at + len(raw)) // 3
                if last - first >= CHUNK // 4:
                    self.add(base64.b64encode(der[first * 3 : last * 3]).decode(), label)

    # -- observing ---------------------------------------------------------------------------

    def observe(self, where: str, text: str) -> None:
        """Record a text certauth produced (a log line, an error message...)."""
        squashed = _squash(text)
        if squashed:
            with self._lock:
                self.texts.append((where, squashed))

    def mark(self) -> int:
        """A position in the observed texts (to scan only what came after)."""
        with self._lock:
            return len(self.texts)

    def hits(self, text: str) -> list[str]:
        """Labels of the registered secrets that occur in ``text``."""
        squashed = _squash(text)
        with self._lock:
            needles = self._needles
            found = {
                needles[squashed[i : i + CHUNK]]
                for i in range(len(squashed) - CHUNK + 1)
                if squashed[i : i + CHUNK] in needles
            }
            found.update(label for secret, label in self._whole.items() if secret in squashed)
        return sorted(found)

    def leaks_since(self, mark: int) -> list[str]:
        """One line per observed text (after ``mark``) that holds a secret; never the secret."""
        with self._lock:
            texts = self.texts[mark:]
        problems = []
        for where, text in texts:
            labels = self.hits(text)
            if labels:
                problems.append(f"{where} contains {', '.join(labels)} ({len(text)} characters)")
        return problems


class RecordingHandler(logging.Handler):
    """Hands every formatted log record (with its traceback) to the registry."""

    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__(logging.DEBUG)
        self.registry = registry

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".", 1)[0] in PEER_LOGGERS:
            return
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call is not ours to report here
            text = str(record.msg)
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.registry.observe(f"log record {record.name}:{record.levelname}", text)


def _wrap(module: Any, name: str, make: Callable[[Any], Any]) -> None:
    """Replace ``module.name`` with ``make(original)``, also where it was already imported."""
    original = getattr(module, name, None)
    if original is None or getattr(original, "__secret_scan__", False):
        return
    wrapper = make(original)
    wrapper.__secret_scan__ = True
    setattr(module, name, wrapper)
    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__dict__", {}).get(name) is original:
            setattr(loaded, name, wrapper)


def instrument(registry: SecretRegistry) -> None:
    """Register secrets where they are born and observe every certauth error message.

    Called once, from ``tests/conftest.py``, before the test modules import certauth's modules
    (``from x import f`` copies the reference at import time; :func:`_wrap` also patches the
    modules already loaded). The wrappers only watch: arguments and results pass through.
    """
    from certauth import assertion, certificates, errors
    from certauth.emulator import checks, service, tokens

    def keys_of(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            made = original(*args, **kwargs)
            registry.add_private_key(made.private_key, "a generated private key")
            return made

        return generate

    def assertions_of(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def build(*args: Any, **kwargs: Any) -> Any:
            made = original(*args, **kwargs)
            registry.add_jwt(made, "a client assertion")
            return made

        return build

    def tokens_of(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def sign(*args: Any, **kwargs: Any) -> Any:
            made = original(*args, **kwargs)
            registry.add_jwt(made, "an access token")
            return made

        return sign

    def passwords_of(original: Callable[..., Any], position: int) -> Callable[..., Any]:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            password = kwargs.get("password", args[position] if len(args) > position else None)
            registry.add(password, "a password")
            return original(*args, **kwargs)

        return call

    def secrets_of(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def register_secret(self: Any, client_id: str, secret: str, *a: Any, **kw: Any) -> Any:
            registry.add(secret, "a client secret")
            return original(self, client_id, secret, *a, **kw)

        return register_secret

    _wrap(certificates, "generate_certificate", keys_of)
    _wrap(assertion.AssertionSigner, "sign", assertions_of)  # build_client_assertion signs here too
    _wrap(
        assertion.AssertionSigner, "assemble", assertions_of
    )  # a signer's, in a credential's flow
    _wrap(tokens, "sign_access_token", tokens_of)
    _wrap(certificates, "load_certificate", lambda f: passwords_of(f, 99))
    _wrap(certificates.Certificate, "private_key_pem", lambda f: passwords_of(f, 1))
    _wrap(certificates.Certificate, "to_pfx", lambda f: passwords_of(f, 1))
    _wrap(service.Emulator, "register_secret", secrets_of)

    def observe_init(cls: type, attribute: str) -> None:
        original = cls.__init__  # type: ignore[misc]
        if getattr(original, "__secret_scan__", False):
            return

        @functools.wraps(original)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            registry.observe(f"{type(self).__name__} message", str(getattr(self, attribute, "")))

        init.__secret_scan__ = True  # type: ignore[attr-defined]
        cls.__init__ = init  # type: ignore[misc]

    observe_init(errors.CertauthError, "message")
    observe_init(checks.EntraError, "text")


def scan_texts(registry: SecretRegistry, texts: Iterable[tuple[str, str]]) -> list[str]:
    """Like :meth:`SecretRegistry.leaks_since` for texts a test collected itself."""
    return [
        f"{where} contains {', '.join(labels)}"
        for where, text in texts
        if (labels := registry.hits(text))
    ]
