"""A signer whose private key lives in a PKCS#11 token (an HSM, a TPM, a smart card, SoftHSM2).

The key is addressed by an RFC 7512 ``pkcs11:`` URI (:class:`Pkcs11Uri`) and never leaves the
token: certauth asks the token to sign and reads only public objects (the certificate and the
public key). python-pkcs11 is an optional extra (``pip install 'certauth-toolkit[pkcs11]'``),
imported only when a PKCS#11 key is used.

Where things come from, first match wins:

* the module (the vendor's ``.so``): ``module=``, else ``module-path`` (and ``module-name``) in
  the URI, else the ``CERTAUTH_PKCS11_MODULE`` environment variable;
* the user PIN: ``pin=``, else ``pin-value`` in the URI, else the first line of the file
  ``pin-source`` names (``file:/path`` or a path, read as certauth's password files are); no
  PIN at all is fine for a token that needs no login. ``pin-value`` is accepted by the library
  (RFC 7512 allows it, and a URI kept in a secret store is the caller's business) and refused
  by the CLI, where argv is visible to every user of the machine; it is removed from every
  message, log and repr;
* the certificate: ``certificate=`` (a :class:`~certauth.certificates.Certificate` or a file),
  else the token's certificate object with the key's ``CKA_ID`` (else its label).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any

from cryptography import x509

from certauth import _jose
from certauth.certificates import Certificate, load_certificate
from certauth.errors import InvalidArgumentError, SignerError
from certauth.signers._pkcs11_uri import (
    MODULE_ENV,
    Pkcs11Uri,
    is_pkcs11_uri,
    resolve_module,
    resolve_pin,
)

__all__ = [
    "MODULE_ENV",
    "Pkcs11Signer",
    "Pkcs11Uri",
    "generate_certificate_in_token",
    "is_pkcs11_uri",
]

BACKEND = "pkcs11"
INSTALL_HINT = "pip install 'certauth-toolkit[pkcs11]'"
#: The DER DigestInfo prefix of SHA-256 (RFC 8017 section 9.2, note 1): what CKM_RSA_PKCS signs
#: in front of the digest when the token has no CKM_SHA256_RSA_PKCS.
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
#: PKCS#11 errors after which the session is gone (token removed and reinserted, module
#: re-initialised): the signer opens a new session once and signs again.
_SESSION_LOST = (
    "DeviceRemoved",
    "TokenNotPresent",
    "SessionHandleInvalid",
    "SessionClosed",
    "ObjectHandleInvalid",
    "KeyHandleInvalid",
    "UserNotLoggedIn",
    "DeviceError",
)


def _module() -> Any:
    """python-pkcs11, imported on first use (an optional extra)."""
    try:
        import pkcs11
    except ImportError:
        raise SignerError(
            "a pkcs11: key needs python-pkcs11, which is not installed; "
            f"install it with {INSTALL_HINT}",
            backend=BACKEND,
        ) from None
    return pkcs11


def _name(exc: BaseException) -> str:
    return type(exc).__name__


class _Token:
    """One logged-in session on the token a URI names, reopened when it is lost; every call
    holds the lock (a PKCS#11 session runs one operation at a time)."""

    def __init__(self, uri: Pkcs11Uri, module: str, pin: str | None, *, rw: bool = False) -> None:
        self.uri = uri
        self.module = module
        self._pin = pin
        self._rw = rw
        self.lock = threading.RLock()
        self._session: Any = None
        self.mechanisms: frozenset[Any] = frozenset()

    @property
    def where(self) -> str:
        return self.uri.redacted()

    def session(self) -> Any:
        """The open session (opened on first use)."""
        if self._session is None:
            self._session = self._open()
        return self._session

    def reopen(self) -> Any:
        self.close()
        return self.session()

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            # A session already gone (token removed) needs no closing.
            with contextlib.suppress(Exception):
                session.close()

    def _open(self) -> Any:
        p11 = _module()
        lib = self._load(p11)
        token = self._find_token(p11, lib)
        try:
            self.mechanisms = frozenset(token.slot.get_mechanisms())
        except p11.PKCS11Error:
            self.mechanisms = frozenset()
        if self._pin is None:
            if p11.TokenFlag.LOGIN_REQUIRED in token.flags:
                raise SignerError(
                    f"{self.where}: token {token.label!r} needs the user PIN to use its private "
                    "keys; give it with pin=, or pin-source=FILE in the URI",
                    backend=BACKEND,
                )
            return self._call(lambda: token.open(rw=self._rw))
        try:
            return token.open(rw=self._rw, user_pin=self._pin)
        except p11.UserAlreadyLoggedIn:
            # The login state is per application and token (PKCS#11 v2.40 section 5.6):
            # another signer of this process logged in already, so this session is too. The
            # token does not check this PIN again: a wrong one surfaces only in a process that
            # is not logged in yet.
            return self._call(lambda: token.open(rw=self._rw))
        except p11.PKCS11Error as exc:
            raise self.error(exc) from None

    def _load(self, p11: Any) -> Any:
        path = self.module
        if not os.path.isfile(path):
            raise SignerError(
                f"{self.where}: PKCS#11 module {path}: no such file; give the vendor's module "
                f"(a .so file, e.g. /usr/lib/softhsm/libsofthsm2.so) with module=, module-path= "
                f"in the URI or {MODULE_ENV}",
                backend=BACKEND,
            )
        try:
            return p11.lib(path)
        except Exception as exc:  # noqa: BLE001 - dlopen and C_Initialize failures alike
            raise SignerError(
                f"{self.where}: cannot load the PKCS#11 module {path} ({_name(exc)}: "
                f"{str(exc)[:200] or 'no detail'}); check that it is the vendor's PKCS#11 "
                "module for this machine's architecture, and its configuration, or give another "
                "with module=",
                backend=BACKEND,
            ) from None

    def _find_token(self, p11: Any, lib: Any) -> Any:
        try:
            slots = list(lib.get_slots(token_present=True))
        except p11.PKCS11Error as exc:
            raise SignerError(
                f"{self.where}: the PKCS#11 module {self.module} cannot list its slots "
                f"({_name(exc)}); check the module's configuration",
                backend=BACKEND,
            ) from None
        present: list[str] = []
        matches: list[Any] = []
        for slot in slots:
            try:
                token = slot.get_token()
            except p11.PKCS11Error:
                continue
            present.append(_describe_token(token))
            if _token_matches(self.uri, lib, slot, token):
                matches.append(token)
        if not matches:
            listed = "; ".join(sorted(present)) if present else "none"
            raise SignerError(
                f"{self.where}: no token matches the URI (tokens present: {listed}); check "
                "token=, serial= and the other path attributes, or insert the token",
                backend=BACKEND,
            )
        if len(matches) > 1:
            raise SignerError(
                f"{self.where}: {len(matches)} tokens match the URI "
                f"({'; '.join(_describe_token(t) for t in matches)}); add token= or serial= "
                "to select one",
                backend=BACKEND,
            )
        return matches[0]

    def _call(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run one PKCS#11 call, turning its failure into one :class:`SignerError`."""
        p11 = _module()
        try:
            return action(*args)
        except p11.PKCS11Error as exc:
            raise self.error(exc) from None

    def error(self, exc: BaseException) -> SignerError:
        """The :class:`SignerError` for a PKCS#11 failure: what happened and the fix (the PIN
        itself is never part of it)."""
        name = _name(exc)
        where = self.where
        messages = {
            "PinIncorrect": "the token refused the PIN (CKR_PIN_INCORRECT); check the PIN given "
            "with pin= or pin-source= (the token may lock after a few wrong PINs)",
            "PinLocked": "the user PIN is locked (CKR_PIN_LOCKED) after too many wrong PINs; "
            "unlock it with the security officer PIN using the token's own tool",
            "PinExpired": "the user PIN has expired (CKR_PIN_EXPIRED); set a new one with the "
            "token's own tool",
            "PinInvalid": "the PIN holds characters the token refuses (CKR_PIN_INVALID); check "
            "the PIN given with pin= or pin-source=",
            "PinLenRange": "the PIN is too short or too long for this token "
            "(CKR_PIN_LEN_RANGE); check the PIN given with pin= or pin-source=",
            "UserPinNotInitialized": "the token's user PIN was never set "
            "(CKR_USER_PIN_NOT_INITIALIZED); initialise the token with its own tool",
            "MechanismInvalid": "the token does not support this signature mechanism "
            "(CKR_MECHANISM_INVALID); use another alg=",
            "KeyFunctionNotPermitted": "the key may not sign (CKA_SIGN is false); create a "
            "signing key",
            "KeyTypeInconsistent": "the key cannot sign with this mechanism "
            "(CKR_KEY_TYPE_INCONSISTENT); use an alg= for its type",
        }
        text = messages.get(name)
        if name in _SESSION_LOST:
            text = (
                f"the token was removed or its session lost ({name}); insert the token, "
                "then try again"
            )
        if text is None:
            text = f"the PKCS#11 call failed ({name}); check the token and its module"
        return SignerError(f"{where}: {text}", backend=BACKEND)


def _objects(session: Any, attrs: dict[Any, Any] | None = None) -> list[Any]:
    return list(session.get_objects(attrs))


def _describe_token(token: Any) -> str:
    label = token.label.strip() or "(no label: not initialised)"
    serial = _text(token.serial)
    return f"{label!r} serial {serial}" if serial else repr(label)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).rstrip(" \x00")


def _token_matches(uri: Pkcs11Uri, lib: Any, slot: Any, token: Any) -> bool:
    # RFC 7512 section 2.3: an attribute absent from the URI matches anything; the token's
    # fixed-width fields are padded with spaces (PKCS#11 CK_TOKEN_INFO), compared without them.
    checks: list[tuple[str | None, Callable[[], Any]]] = [
        (uri.token, lambda: token.label),
        (uri.manufacturer, lambda: token.manufacturer_id),
        (uri.serial, lambda: token.serial),
        (uri.model, lambda: token.model),
        (uri.slot_description, lambda: slot.slot_description),
        (uri.slot_manufacturer, lambda: slot.manufacturer_id),
        (uri.library_manufacturer, lambda: lib.manufacturer_id),
        (uri.library_description, lambda: lib.library_description),
    ]
    for wanted, actual in checks:
        if wanted is not None and _text(actual()) != wanted.rstrip(" "):
            return False
    if uri.slot_id is not None and slot.slot_id != uri.slot_id:
        return False
    if uri.library_version is not None:
        major, _, minor = uri.library_version.partition(".")
        if tuple(lib.library_version) != (int(major or 0), int(minor or 0)):
            return False
    return True


class Pkcs11Signer:
    """A :class:`certauth.signers.Signer` over a private key held by a PKCS#11 token.

    ``uri`` is an RFC 7512 URI (``pkcs11:token=certauth;object=billing-api``); ``module`` the
    PKCS#11 module, ``pin`` the user PIN and ``certificate`` the certificate (an object or a
    file) when the token holds none (see the module docstring for the defaults). The session
    is opened, the key and certificate found, at construction: a wrong PIN, a missing token or
    key raise :class:`~certauth.errors.SignerError` here, naming the fix. Signing is
    thread-safe; a session lost because the token was removed and reinserted is reopened once.

    RS256 uses ``CKM_SHA256_RSA_PKCS`` (else ``CKM_RSA_PKCS`` over the DigestInfo), PS256
    ``CKM_SHA256_RSA_PKCS_PSS`` with SHA-256, MGF1-SHA-256 and a 32-byte salt (else
    ``CKM_RSA_PKCS_PSS`` over the digest), ES256 ``CKM_ECDSA`` over the SHA-256 digest, whose
    output is already the JWS ``r || s``.
    """

    def __init__(
        self,
        uri: str,
        *,
        module: str | os.PathLike[str] | None = None,
        pin: str | None = None,
        certificate: Certificate | str | os.PathLike[str] | None = None,
    ) -> None:
        parsed = Pkcs11Uri.parse(uri)
        if parsed.type not in (None, "private"):
            raise InvalidArgumentError(
                f"{parsed.redacted()}: type={parsed.type} names no private key; certauth signs "
                "with a private key: use type=private or leave type out"
            )
        self._uri = parsed
        self._token = _Token(parsed, resolve_module(parsed, module), resolve_pin(parsed, pin))
        with self._token.lock:
            session = self._token.session()
            self._key = self._find_key(session)
            self._certificate = self._load_certificate(session, certificate)

    # -- the Signer protocol --------------------------------------------------------------------

    @property
    def certificate(self) -> Certificate:
        """The certificate the key belongs to (no private key in it)."""
        return self._certificate

    @property
    def description(self) -> str:
        """The URI, without any ``pin-value``."""
        return self._uri.redacted()

    def sign(self, data: bytes, alg: str) -> bytes:
        """The JWS signature of ``data`` with ``alg`` (RS256, PS256 or ES256), by the token."""
        self._check_alg(alg)
        p11 = _module()
        with self._token.lock:
            try:
                return token_sign(self._token, self._key, alg, data)
            except p11.PKCS11Error as exc:
                if _name(exc) not in _SESSION_LOST:
                    raise self._token.error(exc) from None
            # A removed and reinserted token (or a module that another part of the process
            # re-initialised) invalidates sessions and object handles: find the token and
            # the key again, once.
            session = self._token.reopen()
            self._key = self._find_key(session)
            try:
                return token_sign(self._token, self._key, alg, data)
            except p11.PKCS11Error as exc:
                raise self._token.error(exc) from None

    def key_matches(self) -> bool:
        """Whether the token's key belongs to :attr:`certificate`: a test message signed by the
        token and verified with the certificate's public key (nothing is exported)."""
        alg = "ES256" if self._certificate.key_type == "EC" else "RS256"
        message = b"certauth key check " + os.urandom(16)
        return _jose.verify_signature(
            self._certificate.public_key, alg, message, self.sign(message, alg)
        )

    def close(self) -> None:
        """Close the session (a later :meth:`sign` opens a new one)."""
        with self._token.lock:
            self._token.close()

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.description!r})"

    # -- internals ------------------------------------------------------------------------------

    def _check_alg(self, alg: str) -> None:
        if alg not in ("RS256", "PS256", "ES256"):
            raise InvalidArgumentError(
                f"alg={alg!r}: a PKCS#11 key signs RS256, PS256 (RSA) or ES256 (EC P-256); "
                "choose one of them"
            )
        try:
            _jose.check_key(self._certificate.public_key, alg)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"alg={alg}: {exc}; the key at {self.description} is "
                f"{self._certificate.key_description}, choose the alg= that fits it"
            ) from None

    def _find_key(self, session: Any) -> Any:
        p11 = _module()
        attrs: dict[Any, Any] = {p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY}
        if self._uri.object is not None:
            attrs[p11.Attribute.LABEL] = self._uri.object
        if self._uri.id is not None:
            attrs[p11.Attribute.ID] = self._uri.id
        keys = self._token._call(lambda: list(session.get_objects(attrs)))
        if len(keys) == 1:
            return keys[0]
        inventory = _inventory(p11, session, self._token)
        if not keys:
            login = (
                ""
                if self._token._pin is not None
                else " (private keys show only after login: give the PIN)"
            )
            raise SignerError(
                f"{self.description}: no private key matches object=/id= in the token "
                f"(it holds: {inventory or 'no objects'}){login}; fix object= or id= in the URI",
                backend=BACKEND,
            )
        raise SignerError(
            f"{self.description}: {len(keys)} private keys match (the token holds: "
            f"{inventory}); add id= or object= to the URI to select one",
            backend=BACKEND,
        )

    def _load_certificate(
        self, session: Any, given: Certificate | str | os.PathLike[str] | None
    ) -> Certificate:
        if isinstance(given, Certificate):
            certificate = Certificate(given.x509, None, given.chain, given.source)
        elif given is not None:
            certificate = load_certificate(os.fspath(given), load_key=False)
            certificate = Certificate(certificate.x509, None, certificate.chain, certificate.source)
        else:
            certificate = self._token_certificate(session)
        key_kind = "EC" if self._key.key_type == _module().KeyType.EC else "RSA"
        if certificate.key_type != key_kind:
            raise SignerError(
                f"{self.description}: the key is {key_kind} and the certificate "
                f"{certificate.source or ''} holds an {certificate.key_type} key; give the "
                "certificate of this key with certificate=",
                backend=BACKEND,
            )
        return certificate

    def _token_certificate(self, session: Any) -> Certificate:
        p11 = _module()
        ident = self._token._call(lambda: self._key[p11.Attribute.ID])
        label = self._token._call(lambda: self._key[p11.Attribute.LABEL])
        for attrs in (
            {p11.Attribute.ID: ident} if ident else None,
            {p11.Attribute.LABEL: label} if label else None,
        ):
            if attrs is None:
                continue
            attrs[p11.Attribute.CLASS] = p11.ObjectClass.CERTIFICATE
            found: list[Any] = self._token._call(_objects, session, attrs)
            if found:
                der = self._token._call(found[0].__getitem__, p11.Attribute.VALUE)
                try:
                    leaf = x509.load_der_x509_certificate(bytes(der))
                except ValueError:
                    raise SignerError(
                        f"{self.description}: the token's certificate object does not parse "
                        "as DER X.509; store a valid certificate, or give one with certificate=",
                        backend=BACKEND,
                    ) from None
                return Certificate(leaf, source=self.description)
        raise SignerError(
            f"{self.description}: the token holds no certificate with the key's id or label; "
            "store it on the token, or give the certificate file with certificate=",
            backend=BACKEND,
        )


def token_sign(token: _Token, key: Any, alg: str, data: bytes) -> bytes:
    """The JWS signature of ``data`` by the token's ``key``; PKCS#11 failures propagate as
    python-pkcs11 raises them (the caller maps them, knowing whether to reopen)."""
    p11 = _module()
    mechanism, param, payload = _mechanism(p11, token.mechanisms, alg, data)
    signature: bytes = key.sign(payload, mechanism=mechanism, mechanism_param=param)
    if alg == "ES256" and len(signature) != 64:
        raise SignerError(
            f"{token.where}: the token returned a {len(signature)}-byte ECDSA signature, not "
            "the 64-byte r || s of P-256; check that the key is on P-256",
            backend=BACKEND,
        )
    return signature


def _inventory(p11: Any, session: Any, token: _Token) -> str:
    """What the token shows: each object's class, label and id (public facts only)."""
    names = {
        p11.ObjectClass.PRIVATE_KEY: "private key",
        p11.ObjectClass.PUBLIC_KEY: "public key",
        p11.ObjectClass.CERTIFICATE: "certificate",
        p11.ObjectClass.SECRET_KEY: "secret key",
        p11.ObjectClass.DATA: "data",
    }
    rows: list[str] = []
    for obj in token._call(lambda: list(session.get_objects())):
        try:
            kind = names.get(obj[p11.Attribute.CLASS], "object")
            label = _text(obj[p11.Attribute.LABEL])
            ident = bytes(obj[p11.Attribute.ID]) if kind != "data" else b""
        except p11.PKCS11Error:
            continue
        id_text = "".join(f"%{b:02X}" for b in ident)
        rows.append(f"{kind} object={label}" + (f";id={id_text}" if id_text else ""))
    rows.sort()
    return ", ".join(rows[:20] + (["..."] if len(rows) > 20 else []))


def _mechanism(
    p11: Any, available: frozenset[Any], alg: str, data: bytes
) -> tuple[Any, Any, bytes]:
    """The mechanism, its parameter and the bytes to hand the token for ``alg``: the combined
    hash-and-sign mechanism when the token has it, else the raw one over the digest."""
    mech = p11.Mechanism

    # An empty set means the module did not say (C_GetMechanismList failed): try the usual.
    def has(m: Any) -> bool:
        return not available or m in available

    if alg == "ES256":
        # RFC 7518 section 3.4 and PKCS#11 v2.40 section 2.3.6: CKM_ECDSA signs a digest and
        # returns r || s, each the curve's size: the JWS form as it is.
        if has(mech.ECDSA):
            return mech.ECDSA, None, hashlib.sha256(data).digest()
        if has(mech.ECDSA_SHA256):
            return mech.ECDSA_SHA256, None, data
        missing = "CKM_ECDSA"
    elif alg == "PS256":
        # RFC 7518 section 3.5: SHA-256, MGF1 with SHA-256, a salt as long as the hash.
        param = (mech.SHA256, p11.MGF.SHA256, 32)
        if has(mech.SHA256_RSA_PKCS_PSS):
            return mech.SHA256_RSA_PKCS_PSS, param, data
        if has(mech.RSA_PKCS_PSS):
            return mech.RSA_PKCS_PSS, param, hashlib.sha256(data).digest()
        missing = "CKM_SHA256_RSA_PKCS_PSS or CKM_RSA_PKCS_PSS"
    else:
        # RFC 7518 section 3.3: RSASSA-PKCS1-v1_5 with SHA-256.
        if has(mech.SHA256_RSA_PKCS):
            return mech.SHA256_RSA_PKCS, None, data
        if has(mech.RSA_PKCS):
            return mech.RSA_PKCS, None, _SHA256_DIGEST_INFO + hashlib.sha256(data).digest()
        missing = "CKM_SHA256_RSA_PKCS or CKM_RSA_PKCS"
    other = {"PS256": " (use alg=RS256)", "RS256": " (use alg=PS256)"}.get(alg, "")
    raise SignerError(
        f"the token supports neither of the mechanisms {alg} needs ({missing}){other}; "
        "choose another alg= or a token that supports it",
        backend=BACKEND,
    )


# At the end: the key generation module builds on the names above.
from certauth.signers._pkcs11_keygen import generate_certificate_in_token  # noqa: E402
