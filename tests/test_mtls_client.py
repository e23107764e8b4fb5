"""Mutual TLS on the client side (RFC 8705 section 2), below the credentials: the TLS context
that presents the certificate, the token request without a credential field, the discovery
alias, and the arguments the credentials refuse. End-to-end runs against the emulator's and
node oidc-provider's mTLS endpoints are in tests/test_mtls_end_to_end.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from certauth import CertificateCredential, _http, generate_certificate
from certauth.authority import Authority
from certauth.certificates import Certificate
from certauth.emulator.tls import TlsFiles, generate_tls_files, server_context
from certauth.errors import ConfigurationError, InvalidArgumentError
from certauth.protocol import build_token_request
from certauth.signers import KeyFileSigner


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return generate_tls_files(tmp_path_factory.mktemp("tls"), now=dt.datetime.now(dt.timezone.utc))


class _PeerRecorder:
    """A TLS server on loopback that requires a client certificate among ``trusted`` and
    records the DER of each one presented (one connection at a time)."""

    def __init__(self, files: TlsFiles, trusted: list[Certificate]) -> None:
        self.context = server_context(files)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cadata="".join(c.pem.decode() for c in trusted))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes | None] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    self.seen.append(conn.getpeercert(binary_form=True))
                    conn.recv(1)
                    conn.sendall(b"k")
            except (OSError, ssl.SSLError):
                self.seen.append(None)

    def connect(self, context: ssl.SSLContext) -> None:
        with (
            socket.create_connection(("127.0.0.1", self.port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            conn.sendall(b"x")
            if not conn.recv(1):
                raise ConnectionError("the server closed the connection")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def recorder(
    tls_files: TlsFiles, rsa_cert: Certificate, other_rsa_cert: Certificate
) -> Iterator[_PeerRecorder]:
    server = _PeerRecorder(tls_files, [rsa_cert, other_rsa_cert])
    yield server
    server.close()


def test_the_context_presents_the_certificate_and_verifies_the_server(
    recorder: _PeerRecorder, tls_files: TlsFiles, rsa_cert: Certificate
) -> None:
    context = _http.client_certificate_context(str(tls_files.ca_file), rsa_cert)
    recorder.connect(context)
    assert recorder.seen == [rsa_cert.der]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    # Trust is exactly the CA file: the system store would not know the emulator's CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        recorder.connect(_http.client_certificate_context(None, rsa_cert))


def test_a_rotated_certificate_is_presented_by_new_connections(
    recorder: _PeerRecorder, tls_files: TlsFiles, rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    context = _http.client_certificate_context(str(tls_files.ca_file), rsa_cert)
    recorder.connect(context)
    _http.load_client_certificate(context, other_rsa_cert)
    recorder.connect(context)
    assert recorder.seen == [rsa_cert.der, other_rsa_cert.der]


def test_an_untrusted_certificate_fails_the_handshake(
    recorder: _PeerRecorder, tls_files: TlsFiles
) -> None:
    stranger = generate_certificate("CN=stranger", key_type="ec-p256")
    context = _http.client_certificate_context(str(tls_files.ca_file), stranger)
    # TLS 1.3: the server's refusal arrives on the client's first read.
    with pytest.raises((ssl.SSLError, OSError)):
        recorder.connect(context)


def test_the_key_never_lands_in_a_file(rsa_cert: Certificate, tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    _http.client_certificate_context(None, rsa_cert)
    # The in-memory file is closed once the key is loaded: no descriptor is left behind.
    assert set(os.listdir("/proc/self/fd")) <= before | {"3"}


def test_the_context_refuses_a_callers_ssl_context_and_verify_false(
    rsa_cert: Certificate,
) -> None:
    with pytest.raises(ConfigurationError, match=r"not an ssl\.SSLContext"):
        _http.client_certificate_context(ssl.create_default_context(), rsa_cert)
    with pytest.raises(ConfigurationError, match="verify=False"):
        _http.client_certificate_context(False, rsa_cert)


def test_the_token_request_carries_the_client_id_and_no_credential() -> None:
    request = build_token_request(
        "https://as.example/token", "app-1", ["api://x/.default"], tls_client_auth=True
    )
    assert request.form == {
        "grant_type": "client_credentials",
        "scope": "api://x/.default",
        "client_id": "app-1",
    }
    with pytest.raises(InvalidArgumentError, match="exactly one client credential"):
        build_token_request(
            "https://as.example/token", "app-1", ["s"], assertion="a.b.c", tls_client_auth=True
        )


def _document(**extra: object) -> dict[str, object]:
    return {
        "issuer": "https://as.example",
        "token_endpoint": "https://as.example/token",
        **extra,
    }


def test_discovery_reads_the_mtls_alias_of_the_token_endpoint() -> None:
    authority = Authority.from_discovery(
        "https://as.example",
        _document(mtls_endpoint_aliases={"token_endpoint": "https://mtls.as.example/token"}),
    )
    assert authority.token_endpoint == "https://as.example/token"
    assert authority.for_mtls().token_endpoint == "https://mtls.as.example/token"
    plain = Authority.from_discovery("https://as.example", _document())
    assert plain.for_mtls() is plain
    with pytest.raises(ConfigurationError, match=r"mtls_endpoint_aliases\.token_endpoint"):
        Authority.from_discovery(
            "https://as.example", _document(mtls_endpoint_aliases={"token_endpoint": 42})
        )
    with pytest.raises(ConfigurationError, match="plain http"):
        Authority.from_discovery(
            "https://as.example",
            _document(mtls_endpoint_aliases={"token_endpoint": "http://as.example/token"}),
        )


def test_a_server_that_lists_no_tls_method_is_refused_before_sending(
    rsa_cert: Certificate,
) -> None:
    authority = Authority.from_discovery(
        "https://as.example",
        _document(token_endpoint_auth_methods_supported=["private_key_jwt"]),
    )
    from certauth.credential.mtls import MtlsAuth

    auth = MtlsAuth(rsa_cert, verify=None)
    with pytest.raises(ConfigurationError, match="does not accept mutual-TLS"):
        auth.bind("app", authority)
    listed = Authority.from_discovery(
        "https://as.example",
        _document(token_endpoint_auth_methods_supported=["tls_client_auth"]),
    )
    auth.bind("app", listed)
    assert auth.fingerprint == f"mtls:x5t#S256:{rsa_cert.x5t_s256}"
    with pytest.raises(ConfigurationError, match="needs an https token endpoint"):
        auth.bind("app", Authority.from_token_endpoint("http://127.0.0.1:1/token"))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "needs a server that takes mutual-TLS client authentication"),
        ({"token_endpoint": "https://as.example/token", "client": httpx.Client()}, "client="),
        (
            {"token_endpoint": "https://as.example/token", "verify": ssl.create_default_context()},
            "not an ssl.SSLContext",
        ),
        ({"token_endpoint": "https://as.example/token", "key_path": "pkcs11:token=x"}, "file"),
    ],
)
def test_credential_arguments_mtls_cannot_work_with(
    rsa_cert: Certificate, kwargs: dict[str, object], fragment: str
) -> None:
    if "key_path" not in kwargs:
        kwargs = {"certificate": rsa_cert, **kwargs}
    with pytest.raises((InvalidArgumentError, ConfigurationError), match=fragment):
        CertificateCredential("t", "app", mtls=True, **kwargs)  # type: ignore[arg-type]


def test_a_signer_cannot_sign_the_handshake(rsa_cert: Certificate) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot be signed by a signer="):
        CertificateCredential(
            None,
            "app",
            signer=KeyFileSigner(rsa_cert),
            token_endpoint="https://as.example/token",
            mtls=True,
        )
    with pytest.raises(InvalidArgumentError, match="mtls= must be True or False"):
        CertificateCredential(
            None,
            "app",
            certificate=rsa_cert,
            token_endpoint="https://as.example/t",
            mtls=1,  # type: ignore[arg-type]
        )


def test_a_rotation_to_another_key_type_keeps_the_current_certificate(
    tmp_path: Path, rsa_cert: Certificate, ec_cert: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    cert_file = tmp_path / "app.pem"
    cert_file.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    credential = CertificateCredential(
        None, "app", cert_file, token_endpoint="https://as.example/token", mtls=True
    )
    auth = credential._core.auth
    cert_file.write_bytes(ec_cert.private_key_pem() + ec_cert.pem)
    os.utime(cert_file, ns=(1, 1))
    auth.maybe_reload(rsa_cert.validity_epochs[0] + 60)
    assert auth.fingerprint == f"mtls:x5t#S256:{rsa_cert.x5t_s256}"
    assert "cannot switch key types" in caplog.text
    credential.close()


def _open_files() -> list[str]:
    """What this process's descriptors point to (other threads' sockets come and go)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return targets


def _refused(*args: object) -> int:
    # What a seccomp profile that forbids memfd_create (or an old kernel: ENOSYS) answers.
    import errno

    raise PermissionError(errno.EPERM, "Operation not permitted")


@pytest.mark.parametrize("memfd", ["refused", "absent"])
def test_without_memfd_create_the_key_goes_through_a_private_file_removed_at_once(
    recorder: _PeerRecorder,
    tls_files: TlsFiles,
    rsa_cert: Certificate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    memfd: str,
) -> None:
    import tempfile

    if memfd == "refused":
        monkeypatch.setattr(os, "memfd_create", _refused, raising=False)
    else:
        monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    context = _http.client_certificate_context(str(tls_files.ca_file), rsa_cert)
    assert os.listdir(tmp_path) == []  # the folder and the encrypted key are gone
    assert not [target for target in _open_files() if str(tmp_path) in target]
    recorder.connect(context)
    assert recorder.seen == [rsa_cert.der]


def test_a_key_that_cannot_be_handed_to_the_tls_layer_is_a_configuration_error(
    rsa_cert: Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(os, "memfd_create", _refused, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="mutual TLS") as caught:
        _http.client_certificate_context(None, rsa_cert)
    assert "BEGIN" not in str(caught.value)


class _OneOriginServer:
    """An OAuth server on one https origin (discovery and token endpoint, as Keycloak serves
    its mTLS aliases) that asks for a client certificate and records, per token request, the
    one its connection presented. Keep-alive, as servers are."""

    def __init__(self, files: TlsFiles, trusted: list[Certificate]) -> None:
        import http.server
        import json
        import socketserver

        server = self
        self.presented: list[bytes | None] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _json(self, document: dict[str, object]) -> None:
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._json(
                    {
                        "issuer": server.issuer,
                        "token_endpoint": f"{server.issuer}/token",
                        "token_endpoint_auth_methods_supported": ["self_signed_tls_client_auth"],
                    }
                )

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                server.presented.append(self.connection.getpeercert(binary_form=True))
                self._json({"access_token": "t0ken", "token_type": "Bearer", "expires_in": 3600})

            def log_message(self, *args: object) -> None:
                pass

        context = server_context(files)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata="".join(c.pem.decode() for c in trusted))

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                raw, address = self.socket.accept()
                return context.wrap_socket(raw, server_side=True), address

        self._server = Server(("127.0.0.1", 0), Handler)
        self.issuer = f"https://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_certificate_rotated_before_the_first_request_binds_the_first_token(
    tls_files: TlsFiles,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    tmp_path: Path,
    flavour: str,
) -> None:
    # The discovery document comes over a connection that presents the certificate of the
    # credential's start; the token request that follows, once the rotated file is loaded,
    # must present the new one, not reuse that connection.
    import asyncio

    from certauth import AsyncCertificateCredential

    server = _OneOriginServer(tls_files, [rsa_cert, other_rsa_cert])
    cert_file = tmp_path / "app.pem"
    cert_file.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    kwargs = {"issuer": server.issuer, "verify": str(tls_files.ca_file), "mtls": True}
    try:
        if flavour == "sync":
            credential = CertificateCredential(None, "app", cert_file, **kwargs)
            cert_file.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
            os.utime(cert_file, ns=(1, 1))
            with credential:
                credential.get_token("api://x/.default")
        else:

            async def scenario() -> None:
                credential = AsyncCertificateCredential(None, "app", cert_file, **kwargs)
                cert_file.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
                os.utime(cert_file, ns=(1, 1))
                async with credential:
                    await credential.get_token("api://x/.default")

            asyncio.run(scenario())
    finally:
        server.close()
    names = {rsa_cert.der: "the old certificate", other_rsa_cert.der: "the rotated one"}
    assert [names.get(der or b"", "none") for der in server.presented] == ["the rotated one"]


@pytest.mark.parametrize("mtls", [False, True])
def test_verify_takes_a_path_object_and_names_a_wrong_type(
    recorder: _PeerRecorder, tls_files: TlsFiles, rsa_cert: Certificate, mtls: bool
) -> None:
    if mtls:
        context = _http.client_certificate_context(Path(tls_files.ca_file), rsa_cert)
        recorder.connect(context)
        assert recorder.seen == [rsa_cert.der]
    else:
        assert _http.resolve_verify(Path(tls_files.ca_file)) is _http.resolve_verify(
            str(tls_files.ca_file)
        )
    for wrong in (42, b"/etc/ssl/ca.pem"):
        check = (
            (lambda v: _http.client_certificate_context(v, rsa_cert))
            if mtls
            else _http.resolve_verify
        )
        with pytest.raises(ConfigurationError) as caught:
            check(wrong)
        assert "verify=" in str(caught.value)
        assert type(wrong).__name__ in str(caught.value)
        assert "verify=False" not in str(caught.value)


def test_certauths_own_pools_never_use_the_context_a_rotation_changes(
    recorder: _PeerRecorder,
    tls_files: TlsFiles,
    tmp_path: Path,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
) -> None:
    # OpenSSL forbids changing a context while other threads create connections from it: the
    # public ssl_context is changed in place by a rotation, so the credential's own pools take
    # a context of their own per certificate, which nothing changes afterwards.
    from certauth.credential.mtls import MtlsAuth

    cert_file = tmp_path / "app.pem"
    cert_file.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    credential = CertificateCredential(
        None,
        "app",
        cert_file,
        token_endpoint="https://as.example/token",
        verify=str(tls_files.ca_file),
        mtls=True,
    )
    auth = credential._core.auth
    assert isinstance(auth, MtlsAuth)
    before = auth.pool_context()
    assert before is auth.pool_context()  # one per certificate
    assert before is not credential.ssl_context
    cert_file.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
    os.utime(cert_file, ns=(1, 1))
    auth.maybe_reload(other_rsa_cert.validity_epochs[0] + 60)
    after = auth.pool_context()
    assert after is not before
    for context in (before, after, credential.ssl_context):
        recorder.connect(context)
    # The old pool's context still presents the old certificate (it was not changed); the new
    # one and the public context present the new one.
    assert recorder.seen == [rsa_cert.der, other_rsa_cert.der, other_rsa_cert.der]
    credential.close()
