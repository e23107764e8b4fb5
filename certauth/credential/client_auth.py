"""How a client proves who it is at the token endpoint: a certificate (an assertion its signer
signs: a key file's key, or a key in an HSM or a vault), a federated assertion it reads from a
file, or a client secret.

Each kind says which authentication method it uses (RFC 8414 section 2 names), refuses before
anything is sent what an authority is known to reject, gives the request's credential fields,
and names the key that encrypts its entries in a shared token cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING, Protocol

from certauth._files import read_input_file
from certauth._flow import Budget, Flow, call, signature
from certauth._log import Logger
from certauth._record import Record
from certauth._renewal import certificate_fingerprint
from certauth.assertion import METHOD as ASSERTION_METHOD
from certauth.assertion import PROOF_MESSAGE, AssertionSigner, resolve_signer
from certauth.certificates import Certificate, load_certificate
from certauth.errors import CertauthError, InputFileError, InvalidArgumentError, SignerError
from certauth.protocol import RetryPolicy, SecretMethod
from certauth.signers import KeyFileSigner, Signer

if TYPE_CHECKING:
    from certauth.authority import Authority
    from certauth.cache import EntryCipher

log = Logger("certauth")


class ClientAuth(Protocol):
    """How the client proves who it is: an assertion it signs or reads, or a secret."""

    #: Distinguishes credentials in cache keys (a certificate's thumbprint, a secret's hash).
    fingerprint: str
    #: The OAuth client authentication method (for discovery checks).
    method: str
    #: Whether :meth:`maybe_reload` and :meth:`credential_fields` read files (the shells then
    #: run them as blocking I/O, off the event loop).
    reads_files: bool
    #: Whether the client authenticates with its TLS client certificate (RFC 8705 section 2:
    #: the request carries no credential field; see :mod:`certauth.credential.mtls`).
    mtls: bool

    def bind(self, client_id: str, authority: Authority) -> None:
        """Refuse, before sending, what this authority is known to reject; remember what the
        requests need (the client id, the algorithm chosen for this authority)."""
        ...

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        """``assertion=`` or ``client_secret=`` (+ ``secret_method=``) for the request
        (blocking: a signer signs here)."""
        ...

    def credential_flow(
        self, audience: str, now: float, *, retry: RetryPolicy, budget: Budget
    ) -> Flow[dict[str, str]]:
        """:meth:`credential_fields` as a step of the token request's flow: what blocks (a
        file, a signer's signature) is an action the shell performs, and a signer's transient
        failure is retried with ``retry`` within ``budget``."""
        ...

    def cipher(self) -> EntryCipher | None:
        """The key that encrypts this client's entries in a shared cache (``None``: no
        secret to derive one from, so nothing is stored)."""
        ...

    def maybe_reload(self, now: float) -> None:
        """Pick up a credential that changed on disk (certificate rotation) if it is usable
        at ``now``."""
        ...


class CertificateFiles(Record):
    """Where a certificate was loaded from, to notice and load a rotated one."""

    __slots__ = ("cert_path", "key_path", "password")

    def __init__(self, cert_path: str, key_path: str | None, password: str | bytes | None) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.password = password

    def __repr__(self) -> str:
        return f"CertificateFiles(cert_path={self.cert_path!r}, key_path={self.key_path!r})"

    def signature(self) -> tuple[object, ...]:
        """What changes when the files change: path, inode, size and mtime of each."""
        parts: list[object] = []
        for path in (self.cert_path, self.key_path):
            if path is None:
                continue
            try:
                info = os.stat(path)  # follows symlinks: a swapped link target shows up here
                parts.append((os.path.realpath(path), info.st_ino, info.st_size, info.st_mtime_ns))
            except OSError as exc:
                parts.append((path, exc.errno))
        return tuple(parts)

    def load(self) -> Certificate:
        """The certificate and its key, as the files hold them now."""
        return load_certificate(
            self.cert_path, key=self.key_path, password=self.password, require_key=True
        )


def _fields(auth: ClientAuth, audience: str, now: float) -> Flow[dict[str, str]]:
    """:meth:`ClientAuth.credential_fields` as a flow: a :class:`~certauth._flow.Call` when it
    reads files, else called in place (no action, nothing to wait for)."""
    if auth.reads_files:
        return (yield from call(auth.credential_fields, audience, now))
    return auth.credential_fields(audience, now)


class _Signing(Record):
    """Everything a request signs with, published in one assignment so that a rotation never
    shows a half-switched state to a request in another thread: ``key`` is what signs (a key
    file's key, :class:`KeyFileSigner`, or a key in an HSM or a vault); ``signer`` is ``None``
    until an authority is bound (an issuer still to discover)."""

    __slots__ = ("alg", "key", "signer")

    def __init__(
        self, key: Signer, signer: AssertionSigner | None = None, alg: str | None = None
    ) -> None:
        self.key = key
        self.signer = signer
        self.alg = alg

    @property
    def certificate(self) -> Certificate:
        return self.key.certificate


class CertificateAuth:
    """A certificate: every request carries a freshly signed assertion (RFC 7523 section 2.2),
    signed by the certificate's private key or by a :class:`~certauth.signers.Signer`."""

    mtls = False
    method = ASSERTION_METHOD

    def __init__(
        self,
        certificate: Certificate | None = None,
        *,
        signer: Signer | None = None,
        alg: str | None,
        lifetime: int,
        send_chain: bool,
        reload_from: CertificateFiles | None = None,
    ) -> None:
        key = resolve_signer(certificate, signer)
        self._alg = alg
        self._lifetime = lifetime
        self._send_chain = send_chain
        self._files = reload_from
        self.reads_files = reload_from is not None
        self._seen = reload_from.signature() if reload_from else None
        self._reload_lock = threading.Lock()
        #: The files' signature while they hold a certificate not valid yet (logged once).
        self._waiting: tuple[object, ...] | None = None
        self._client_id = ""
        self._authority: Authority | None = None
        self._cipher: tuple[str, EntryCipher] | None = None
        self._publish(_Signing(key))

    @property
    def certificate(self) -> Certificate:
        """The certificate requests are signed with now."""
        return self._signing.certificate

    def _publish(self, signing: _Signing) -> None:
        self._signing = signing
        # After the state: a reader that sees the new fingerprint also sees the new signer.
        self.fingerprint = certificate_fingerprint(signing.certificate.x5t_s256)

    def _checked(self, key: Signer, authority: Authority) -> _Signing:
        signer = AssertionSigner(
            signer=key,
            client_id=self._client_id,
            alg=self._alg,
            lifetime=self._lifetime,
            include_x5c=self._send_chain,
        )
        return _Signing(key, signer, signer.check(authority))

    def bind(self, client_id: str, authority: Authority) -> None:
        self._client_id = client_id
        self._authority = authority
        self._publish(self._checked(self._signing.key, authority))

    def prove(self) -> None:
        """Have a signer prove now, blocking, that its key belongs to its certificate (its
        test signature; see :meth:`AssertionSigner.prove`): the sync credentials call it once
        they are set up, so a wrong key fails there. Until it has passed (an async credential,
        an issuer still to discover, a transient failure now), the first token request's flow
        proves it, before anything is sent. A key file has nothing to prove."""
        signing = self._signing
        if signing.signer is None or signing.alg is None:
            return
        try:
            signing.signer.prove(signing.alg)
        except SignerError as exc:
            if not exc.transient:
                raise
            log.info(
                "certauth: %s cannot sign now (%s); its test signature is retried before the "
                "first token request",
                signing.key.description,
                exc,
            )

    def cipher(self) -> EntryCipher | None:
        if not isinstance(self._signing.key, KeyFileSigner):
            # A key that never leaves its HSM or vault gives no secret to derive the shared
            # cache's key from: tokens stay in this process's memory (as for a federated
            # assertion), each process fetching its own.
            return None
        certificate = self.certificate
        cached = self._cipher
        if cached is None or cached[0] != certificate.x5t_s256:
            from certauth.cache import EntryCipher

            cipher = EntryCipher.from_private_key(certificate.require_private_key())
            cached = self._cipher = (certificate.x5t_s256, cipher)
        return cached[1]

    def maybe_reload(self, now: float) -> None:
        """Reload the certificate when its file changed (new content, or a Kubernetes
        secret's symlink swap). A new state that would be refused (half-written file, a key
        that does not match, a key or certificate the authority rejects, an expired
        certificate) keeps the current certificate working and is logged once per change; a
        certificate that is not valid yet is adopted once it is."""
        files = self._files
        if files is None:
            return
        with self._reload_lock:  # one thread reloads; the others see the result
            signature = files.signature()
            if signature == self._seen:
                return
            try:
                fresh = files.load()
                authority = self._authority
                key = KeyFileSigner(fresh)
                checked = self._checked(key, authority) if authority else _Signing(key)
                not_before = fresh.validity_epochs[0]
                if now < not_before:
                    if self._waiting != signature:
                        self._waiting = signature
                        log.warning(
                            "certauth: the new certificate %s is not valid before %s; the "
                            "current one stays in use until then",
                            fresh.thumbprint_sha1,
                            fresh.not_before.isoformat(),
                        )
                    return  # _seen not updated: looked at again on the next request
                if checked.signer is not None:
                    checked.signer.check_validity(now)
            except CertauthError as exc:
                self._seen = signature
                log.warning(
                    "certauth: kept the current certificate: the changed file is unusable: %s",
                    exc,
                )
                return
            self._seen = signature
            current = self.certificate
            if fresh.x5t_s256 != current.x5t_s256:
                log.info(
                    "certauth: certificate rotated: %s -> %s",
                    current.thumbprint_sha1,
                    fresh.thumbprint_sha1,
                )
                self._publish(checked)

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        # Every request gets a freshly signed assertion (new jti), retries included. The state
        # is read once: a rotation in another thread cannot mix two certificates here.
        signing = self._signing
        if signing.signer is None:
            raise RuntimeError("CertificateAuth.bind() must run before signing")
        return {"assertion": signing.signer.sign(audience, alg=signing.alg, now=now)}

    def credential_flow(
        self, audience: str, now: float, *, retry: RetryPolicy, budget: Budget
    ) -> Flow[dict[str, str]]:
        signing = self._signing
        assertions = signing.signer
        if assertions is None or signing.alg is None:
            raise RuntimeError("CertificateAuth.bind() must run before signing")
        if assertions.in_process:
            # A key file's key signs in place, exactly as it always has: no action, no checks
            # added per token (in a worker thread when the files are watched for rotation).
            return (yield from _fields(self, audience, now))
        alg = signing.alg
        if not assertions.proven(alg):
            # Once per signer and algorithm, before anything is sent (see prove()).
            proof = yield from signature(
                signing.key, PROOF_MESSAGE, alg, retry=retry, budget=budget
            )
            assertions.accept_proof(alg, proof)
        data = assertions.signing_input(audience, alg=alg, now=now)
        signed = yield from signature(signing.key, data, alg, retry=retry, budget=budget)
        return {"assertion": assertions.assemble(data, alg, signed)}


class FileAssertionAuth:
    """A pre-made assertion (workload identity federation), re-read on every request because
    the platform rotates the file."""

    mtls = False
    method = ASSERTION_METHOD
    reads_files = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.fingerprint = f"federated:{os.path.abspath(path)}"

    def bind(self, client_id: str, authority: Authority) -> None:
        authority.check_auth_method(self.method)

    def cipher(self) -> EntryCipher | None:
        return None  # the assertion file is public to the pod: no secret to encrypt with

    def maybe_reload(self, now: float) -> None:
        return None  # re-read on every request anyway

    def credential_flow(
        self, audience: str, now: float, *, retry: RetryPolicy, budget: Budget
    ) -> Flow[dict[str, str]]:
        return (yield from _fields(self, audience, now))

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        data = read_input_file(self.path, what="federated token", error=InputFileError)
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            text = ""
        if text.count(".") != 2:
            raise InputFileError(
                f"{self.path}: not a JWT (expected header.claims.signature); check "
                "AZURE_FEDERATED_TOKEN_FILE",
                path=self.path,
            )
        return {"assertion": text}


class SecretAuth:
    """A client secret (RFC 6749 section 2.3.1), for servers such as B2C that take only those."""

    mtls = False
    method: str
    reads_files = False

    def __init__(self, secret: str, method: SecretMethod) -> None:
        if not secret:
            raise InvalidArgumentError("the client secret is empty")
        if method not in ("client_secret_post", "client_secret_basic"):
            raise InvalidArgumentError(
                f"secret method {method!r}: use client_secret_post or client_secret_basic"
            )
        self.secret = secret
        self.method = method
        self.fingerprint = "secret:" + hashlib.sha256(secret.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SecretAuth(method={self.method!r})"

    def bind(self, client_id: str, authority: Authority) -> None:
        authority.check_auth_method(self.method)

    def cipher(self) -> EntryCipher | None:
        from certauth.cache import EntryCipher

        return EntryCipher.from_secret(self.secret)

    def maybe_reload(self, now: float) -> None:
        return None

    def credential_flow(
        self, audience: str, now: float, *, retry: RetryPolicy, budget: Budget
    ) -> Flow[dict[str, str]]:
        return (yield from _fields(self, audience, now))

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        return {"client_secret": self.secret, "secret_method": self.method}
