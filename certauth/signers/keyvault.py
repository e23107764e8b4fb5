"""Azure Key Vault as a :class:`~certauth.signers.Signer`: the app's key signs inside the vault.

The key and its certificate live in Key Vault (a certificate object, whose key is a
non-exportable vault key of the same name and version). :class:`KeyVaultSigner` reads the
certificate object once ("Get Certificate", ``cer`` and ``kid``) and signs each client
assertion with Key Vault's ``sign`` operation over the SHA-256 digest ("Sign",
https://learn.microsoft.com/rest/api/keyvault/keys/sign/sign): RS256 and PS256 for an RSA key,
ES256 for an EC P-256 key. The private key never leaves the vault; the service holds only a
credential for the vault (a managed identity, or a certauth or azure-identity credential), with
the ``keys/sign`` and ``certificates/get`` permissions (Azure RBAC: "Key Vault Crypto User" plus
"Key Vault Certificate User", or an access policy with ``sign`` and ``get``).

Why the documented REST API over certauth's httpx core rather than azure-keyvault-keys'
``CryptographyClient``:

- start-up: a sign is one POST; the SDK costs ~0.3 s of imports (azure-core, the generated
  client) in every ``certauth token`` process, and its first call is an extra round trip to
  elicit the 401 challenge;
- sync and async over one core: the SDK's async clients need aiohttp, which certauth does not
  depend on; here both go through :func:`certauth._http.run_sync` / ``run_async``;
- retries and errors: the SDK retries 429 and 5xx itself (its own policy, up to ~1.5 min),
  under the credential's own retry loop; here a failure is one
  :class:`~certauth.errors.SignerError` at once, ``transient`` when a retry may help, and the
  credential retries it with the same :class:`~certauth.protocol.RetryPolicy` as the token
  endpoint. Refusals are reworded with the fix (which permission, which name).

The vault token is asked for directly with ``scope`` (``https://vault.azure.net/.default``; the
sovereign clouds have their own: ``https://vault.usgovcloudapi.net/.default``,
``https://vault.azure.cn/.default``), in the credential's own tenant: no challenge round trip.
It is never logged, put in an error or a repr.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from certauth import _jose
from certauth._flow import Failure, Flow, Reply, Send
from certauth.certificates import Certificate, load_certificate
from certauth.errors import CertauthError, CertificateError, InvalidArgumentError, SignerError

if TYPE_CHECKING:
    from certauth._httpx import httpx
    from certauth._transport import StdlibClient

__all__ = ["API_VERSION", "DEFAULT_SCOPE", "KeyVaultError", "KeyVaultSigner"]

T = TypeVar("T")

#: The Key Vault REST API version certauth speaks (sign and get certificate are unchanged in
#: later versions).
API_VERSION = "7.4"
#: The public cloud's Key Vault scope.
DEFAULT_SCOPE = "https://vault.azure.net/.default"
BACKEND = "keyvault"

_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION = re.compile(r"^[0-9A-Za-z]{1,64}$")


class KeyVaultError(SignerError):
    """Key Vault refused or failed a request: ``status`` (``None`` without an HTTP answer),
    Key Vault's error ``code`` (``KeyNotFound``, ``Forbidden``, ``Throttled``...) and, for a
    throttled request, ``retry_after`` (seconds, from the ``Retry-After`` header)."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, backend=BACKEND, transient=transient)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class KeyVaultSigner:
    """Signs with the key of a Key Vault certificate; implements :class:`~certauth.signers.
    Signer` and :class:`~certauth.signers.AsyncSigner`.

    ``KeyVaultSigner("https://myvault.vault.azure.net", "billing", credential=...)`` reads the
    certificate object (its current version, or ``version=``) at once, so a wrong name or a
    missing permission shows at start-up. ``credential`` is any azure-core ``TokenCredential``
    (certauth's or azure-identity's, a managed identity). With an ``AsyncTokenCredential`` use
    ``await KeyVaultSigner.open_async(...)`` and :meth:`sign_async`. ``verify``: a CA file or
    ``ssl.SSLContext`` for the vault's TLS; ``timeout``: seconds per request. Close it with
    :meth:`close` / :meth:`aclose` (or ``with``).
    """

    def __init__(
        self,
        vault_url: str,
        certificate_name: str,
        *,
        credential: Any,
        version: str | None = None,
        scope: str = DEFAULT_SCOPE,
        verify: Any = None,
        timeout: float = 10.0,
    ) -> None:
        self._setup(vault_url, certificate_name, credential, version, scope, verify, timeout)
        if self._async_credential:
            raise InvalidArgumentError(
                "credential= is an async credential; use "
                "'await KeyVaultSigner.open_async(...)' and sign_async"
            )
        self._load(self._run_sync(self._get_certificate))

    @classmethod
    async def open_async(
        cls,
        vault_url: str,
        certificate_name: str,
        *,
        credential: Any,
        version: str | None = None,
        scope: str = DEFAULT_SCOPE,
        verify: Any = None,
        timeout: float = 10.0,
    ) -> KeyVaultSigner:
        """:class:`KeyVaultSigner`, reading the certificate object without blocking; takes an
        ``AsyncTokenCredential`` (or a sync one, whose token calls then run in a thread)."""
        signer = cls.__new__(cls)
        signer._setup(vault_url, certificate_name, credential, version, scope, verify, timeout)
        signer._load(await signer._run_async(signer._get_certificate))
        return signer

    def _setup(
        self,
        vault_url: str,
        name: str,
        credential: Any,
        version: str | None,
        scope: str,
        verify: Any,
        timeout: float,
    ) -> None:
        parts = urllib.parse.urlsplit(vault_url.strip())
        if parts.scheme != "https" or not parts.hostname or parts.path.strip("/"):
            raise InvalidArgumentError(
                f"vault_url={vault_url!r} is not a vault URL; give "
                "https://NAME.vault.azure.net (https, no path)"
            )
        if not _NAME.match(name):
            raise InvalidArgumentError(
                f"certificate_name={name!r} is not a Key Vault name (1-127 of 0-9 a-z A-Z -)"
            )
        if version is not None and not _VERSION.match(version):
            raise InvalidArgumentError(f"version={version!r} is not a Key Vault object version")
        if not callable(getattr(credential, "get_token", None)):
            raise InvalidArgumentError(
                "credential= must be an azure-core TokenCredential (get_token), such as "
                "certauth.CertificateCredential or azure.identity.ManagedIdentityCredential"
            )
        self._vault = f"https://{parts.netloc}"
        self._name = name
        self._version = version
        self._credential = credential
        self._async_credential = inspect.iscoroutinefunction(credential.get_token)
        self._scope = scope
        self._verify = verify
        self._timeout = timeout
        self._client: StdlibClient | None = None
        self._async_client: httpx.AsyncClient | None = None

    def _load(self, bundle: dict[str, Any]) -> None:
        cer, kid = bundle.get("cer"), bundle.get("kid")
        try:
            der = base64.b64decode(cer, validate=True) if isinstance(cer, str) else b""
            self._certificate = load_certificate(der, load_key=False)
        except (binascii.Error, ValueError, CertificateError):
            raise KeyVaultError(
                f"{self._where()}: the certificate object has no readable 'cer'; is "
                f"{self._name!r} a certificate (not a key or a secret)?"
            ) from None
        if not isinstance(kid, str) or not kid.lower().startswith(self._vault.lower() + "/keys/"):
            raise KeyVaultError(f"{self._where()}: the certificate object has no key id in this "
                                "vault ('kid')")  # fmt: skip
        self._key_id = kid.split("?", 1)[0]

    # -- the Signer protocol ----------------------------------------------------------------------

    @property
    def certificate(self) -> Certificate:
        """The certificate from Key Vault's certificate object (public only)."""
        return self._certificate

    @property
    def description(self) -> str:
        """The vault key's id, ``https://VAULT/keys/NAME/VERSION``."""
        return self._key_id

    def sign(self, data: bytes, alg: str) -> bytes:
        """Sign ``data`` with the vault key: its digest goes to Key Vault, the JWS signature
        comes back (checked against the certificate before it is returned)."""
        if self._async_credential:
            raise SignerError(
                f"{self._key_id}: this signer holds an async credential; call sign_async",
                backend=BACKEND,
            )
        digest = self._digest(data, alg)
        signature = self._run_sync(self._sign(alg, digest))
        return self._checked(data, alg, signature)

    async def sign_async(self, data: bytes, alg: str) -> bytes:
        """:meth:`sign` without blocking the event loop."""
        digest = self._digest(data, alg)
        signature = await self._run_async(self._sign(alg, digest))
        return self._checked(data, alg, signature)

    def close(self) -> None:
        """Close the HTTP client (the async one needs :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close both HTTP clients."""
        self.close()
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    def __enter__(self) -> KeyVaultSigner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> KeyVaultSigner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = getattr(self, "_key_id", None) or self._where()
        return f"KeyVaultSigner({where!r})"

    # -- the requests (sans-I/O flows) --------------------------------------------------------

    def _get_certificate(self, token: str) -> Flow[dict[str, Any]]:
        path = f"/certificates/{self._name}" + (f"/{self._version}" if self._version else "")
        url = f"{self._vault}{path}?api-version={API_VERSION}"
        answer = yield Send("GET", url, _headers(token))
        return _read(answer, url, f"{self._where()}: cannot read the certificate object",
                     needs="certificates/get (RBAC: Key Vault Certificate User)")  # fmt: skip

    def _sign(self, alg: str, digest: bytes) -> Callable[[str], Flow[bytes]]:
        return lambda token: self._sign_flow(alg, digest, token)

    def _sign_flow(self, alg: str, digest: bytes, token: str) -> Flow[bytes]:
        url = f"{self._key_id}/sign?api-version={API_VERSION}"
        body = json.dumps({"alg": alg, "value": _jose.b64url_encode(digest)}).encode()
        answer = yield Send("POST", url, _headers(token, json_body=True), body)
        result = _read(answer, url, f"{self._key_id}: Key Vault did not sign",
                       needs="keys/sign (RBAC: Key Vault Crypto User)")  # fmt: skip
        value = result.get("value")
        try:
            return _jose.b64url_decode_lenient(value) if isinstance(value, str) else b""
        except ValueError:
            return b""  # refused by _checked with the reason

    # -- shells ---------------------------------------------------------------------------------

    # The flows take the vault token: the shell gets it (the credential may be a coroutine),
    # then drives the flow's one request.

    def _run_sync(self, flow: Callable[[str], Flow[T]]) -> T:
        from certauth._http import new_sync_client, run_sync

        token = self._sync_token()
        if self._client is None:
            self._client = new_sync_client(self._verify, self._timeout)
        return run_sync(flow(token), self._client)

    async def _run_async(self, flow: Callable[[str], Flow[T]]) -> T:
        from certauth._http import new_async_client, run_async

        token = await self._async_token()
        if self._async_client is None:
            self._async_client = new_async_client(self._verify, self._timeout)
        return await run_async(flow(token), self._async_client)

    def _sync_token(self) -> str:
        try:
            return str(self._credential.get_token(self._scope).token)
        except Exception as exc:  # noqa: BLE001 - any credential's failure, reworded
            raise self._token_error(exc) from None

    async def _async_token(self) -> str:
        if not self._async_credential:
            import asyncio

            return await asyncio.to_thread(self._sync_token)
        try:
            return str((await self._credential.get_token(self._scope)).token)
        except Exception as exc:  # noqa: BLE001 - any credential's failure, reworded
            raise self._token_error(exc) from None

    def _token_error(self, exc: Exception) -> KeyVaultError:
        # certauth's transport failures (exit 5) may pass; anything else is the credential's.
        transient = isinstance(exc, CertauthError) and exc.exit_code == 5
        first = (str(exc).splitlines() or [""])[0][:300]
        return KeyVaultError(
            f"{self._where()}: cannot get a token for Key Vault ({self._scope}): "
            f"{type(exc).__name__}: {first}; check the credential= given to the signer",
            transient=transient,
        )

    # -- checks ---------------------------------------------------------------------------------

    def _digest(self, data: bytes, alg: str) -> bytes:
        try:
            _jose.check_key(self._certificate.public_key, alg)
        except (TypeError, ValueError) as exc:
            raise SignerError(
                f"{self._key_id}: cannot sign {alg}: {exc}; use RS256 or PS256 for an RSA key, "
                "ES256 for an EC P-256 key",
                backend=BACKEND,
            ) from None
        from cryptography.hazmat.primitives import hashes

        hasher = hashes.Hash(_jose.ALGORITHMS[alg].hash)
        hasher.update(data)
        return hasher.finalize()

    def _checked(self, data: bytes, alg: str, signature: bytes) -> bytes:
        if not _jose.verify_signature(self._certificate.public_key, alg, data, signature):
            raise KeyVaultError(
                f"{self._key_id}: the signature Key Vault returned does not verify with the "
                "certificate's public key (the certificate object and its key differ, or the "
                "answer is malformed); open the signer again to read the current certificate"
            )
        return signature

    def _where(self) -> str:
        version = f"/{self._version}" if self._version else ""
        return f"{self._vault}/certificates/{self._name}{version}"


def _headers(token: str, *, json_body: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if json_body:
        headers["Content-Type"] = "application/json"
    return headers


def _read(answer: Reply | Failure, url: str, what: str, *, needs: str) -> dict[str, Any]:
    """The JSON body of a 200; :class:`KeyVaultError` with the fix otherwise."""
    if isinstance(answer, Failure):
        target = urllib.parse.urlsplit(url)
        where = f"{target.scheme}://{target.netloc}"
        if answer.kind == "tls":
            raise KeyVaultError(f"{what}: {answer.detail} ({where}); trust the vault's CA with "
                                "verify=")  # fmt: skip
        raise KeyVaultError(
            f"{what}: the vault is unreachable ({answer.detail}; {where}); check the vault URL "
            "and the network (retried as a transient failure)",
            transient=True,
        )
    code, message = _error(answer.body)
    said = f" ({code}: {message})" if code else ""
    if answer.status == 200:
        try:
            body = json.loads(answer.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            body = None
        if isinstance(body, dict):
            return body
        raise KeyVaultError(f"{what}: the answer is not JSON", status=200)
    if answer.status == 429 or answer.status >= 500:
        from certauth.protocol import parse_retry_after

        header = answer.headers.get("retry-after")
        retry_after = parse_retry_after(header, now=time.time()) if header else None
        waited = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        kind = "throttled the request" if answer.status == 429 else "failed"
        raise KeyVaultError(
            f"{what}: the vault {kind} (HTTP {answer.status}{waited}){said}; retried as a "
            "transient failure",
            transient=True, status=answer.status, code=code, retry_after=retry_after,
        )  # fmt: skip
    fixes = {
        401: "the credential's token is not for this vault's cloud (scope=) or tenant",
        403: f"grant the signer's identity {needs} on the vault",
        404: "check certificate_name= and version= (the certificate object and its key must "
        "exist in this vault)",
    }
    fix = fixes.get(answer.status, "see the vault's message")
    raise KeyVaultError(f"{what}: HTTP {answer.status}{said}; {fix}", status=answer.status,
                        code=code)  # fmt: skip


def _error(body: bytes) -> tuple[str | None, str]:
    """Key Vault's ``error.code`` and the first line of ``error.message`` (printable, cut)."""
    try:
        error = json.loads(body).get("error")
    except (UnicodeDecodeError, ValueError, RecursionError, AttributeError):
        return None, ""
    if not isinstance(error, dict):
        return None, ""
    code, message = error.get("code"), error.get("message")
    text = (message.splitlines() or [""])[0] if isinstance(message, str) else ""
    printable = "".join(c if c.isprintable() else "?" for c in text[:300])
    return (str(code)[:60] if code else None), printable
