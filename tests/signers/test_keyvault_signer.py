"""KeyVaultSigner against the emulated vault: signatures, the end-to-end token, every refusal."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from certauth import AsyncCertificateCredential, _jose
from certauth.errors import InvalidArgumentError, SignerError
from certauth.signers import AsyncSigner, Signer
from certauth.signers.keyvault import KeyVaultError, KeyVaultSigner

if TYPE_CHECKING:
    from conftest import VaultSetup


def _signer(kv: VaultSetup, name: str = "billing", **kwargs: object) -> KeyVaultSigner:
    return KeyVaultSigner(
        kv.vault.url, name, credential=kv.credential, verify=kv.tenant.ca_file, **kwargs
    )


@pytest.mark.parametrize(("name", "alg"), [("billing", "RS256"), ("billing", "PS256"),
                                           ("billing-ec", "ES256")])  # fmt: skip
def test_sync_signatures_verify_with_the_vault_certificate(
    kv: VaultSetup, name: str, alg: str
) -> None:
    with _signer(kv, name) as signer:
        assert isinstance(signer, Signer)
        assert isinstance(signer, AsyncSigner)
        expected = kv.billing if name == "billing" else kv.billing_ec
        assert signer.certificate.der == expected.der
        assert signer.certificate.private_key is None
        assert signer.description == kv.vault.key_id(name)
        signature = signer.sign(b"header.claims", alg)
        assert _jose.verify_signature(expected.public_key, alg, b"header.claims", signature)


@pytest.mark.parametrize(("name", "alg"), [("billing", "RS256"), ("billing", "PS256"),
                                           ("billing-ec", "ES256")])  # fmt: skip
def test_async_signatures_with_an_async_credential(kv: VaultSetup, name: str, alg: str) -> None:
    async def main() -> bytes:
        async with AsyncCertificateCredential(
            kv.tenant.tenant_id, "signer-app", **kv.credential_kwargs()
        ) as credential:
            signer = await KeyVaultSigner.open_async(
                kv.vault.url, name, credential=credential, verify=kv.tenant.ca_file
            )
            async with signer:
                with pytest.raises(SignerError, match="sign_async"):
                    signer.sign(b"data", alg)
                return await signer.sign_async(b"data", alg)

    expected = kv.billing if name == "billing" else kv.billing_ec
    assert _jose.verify_signature(expected.public_key, alg, b"data", asyncio.run(main()))


def test_sign_async_with_a_sync_credential(kv: VaultSetup) -> None:
    signer = _signer(kv)

    async def main() -> bytes:
        try:
            return await signer.sign_async(b"data", "PS256")
        finally:
            await signer.aclose()

    assert _jose.verify_signature(kv.billing.public_key, "PS256", b"data", asyncio.run(main()))


def test_a_service_with_only_a_vault_credential_gets_a_token_for_the_vault_app(
    kv: VaultSetup,
) -> None:
    """The service holds signer-app's certificate file and nothing of billing-app's: the
    vault signs billing-app's client assertion, and the token endpoint issues its token."""
    signer = _signer(kv)
    now = int(time.time())
    header = {"alg": "PS256", "typ": "JWT", "x5t#S256": signer.certificate.x5t_s256}
    claims = {
        "aud": kv.tenant.token_endpoint, "iss": "billing-app", "sub": "billing-app",
        "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 300,
    }  # fmt: skip
    signing_input = f"{_jose.json_segment(header)}.{_jose.json_segment(claims)}"
    signature = signer.sign(signing_input.encode("ascii"), "PS256")
    assertion = f"{signing_input}.{_jose.b64url_encode(signature)}"
    answer = httpx.post(
        kv.tenant.token_endpoint,
        data={
            "grant_type": "client_credentials",
            "client_id": "billing-app",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "scope": "api://billing/.default",
        },
        verify=_context(kv),
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    issued = json.loads(_jose.b64url_decode_lenient(token.split(".")[1]))
    assert issued["appid"] == "billing-app"
    assert kv.tenant.last_thumbprint == kv.billing.x5t_s256


def _context(kv: VaultSetup) -> object:
    import ssl

    assert kv.tenant.ca_file is not None
    return ssl.create_default_context(cafile=kv.tenant.ca_file)


def test_without_sign_permission(kv: VaultSetup) -> None:
    signer = _signer(kv)
    kv.vault.grant("signer-app", ["get"])
    with pytest.raises(KeyVaultError) as caught:
        signer.sign(b"x", "RS256")
    error = caught.value
    assert (error.status, error.code, error.transient, error.backend) == (
        403, "Forbidden", False, "keyvault")  # fmt: skip
    assert "Key Vault Crypto User" in str(error)


def test_without_get_permission_the_signer_cannot_open(kv: VaultSetup) -> None:
    kv.vault.grant("signer-app", ["sign"])
    with pytest.raises(KeyVaultError, match="Key Vault Certificate User") as caught:
        _signer(kv)
    assert caught.value.status == 403


def test_an_unknown_certificate(kv: VaultSetup) -> None:
    with pytest.raises(KeyVaultError, match="certificate_name=") as caught:
        _signer(kv, "missing")
    assert (caught.value.code, caught.value.transient) == ("CertificateNotFound", False)


def test_an_unknown_version(kv: VaultSetup) -> None:
    with pytest.raises(KeyVaultError) as caught:
        _signer(kv, version="0" * 32)
    assert caught.value.status == 404


def test_throttled_is_transient_with_retry_after(kv: VaultSetup) -> None:
    signer = _signer(kv)
    kv.vault.inject_faults(429, retry_after=3)
    with pytest.raises(KeyVaultError) as caught:
        signer.sign(b"x", "RS256")
    error = caught.value
    assert (error.status, error.transient, error.retry_after) == (429, True, 3.0)
    assert "Retry-After 3 s" in str(error)
    assert _jose.verify_signature(kv.billing.public_key, "RS256", b"x", signer.sign(b"x", "RS256"))


def test_a_failing_vault_is_transient(kv: VaultSetup) -> None:
    signer = _signer(kv)
    kv.vault.inject_faults(503)
    with pytest.raises(KeyVaultError) as caught:
        signer.sign(b"x", "PS256")
    assert (caught.value.status, caught.value.transient, caught.value.retry_after) == (
        503, True, None)  # fmt: skip


def test_an_unreachable_vault_is_transient(kv: VaultSetup) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(KeyVaultError) as caught:
        KeyVaultSigner(f"https://127.0.0.1:{port}", "billing", credential=kv.credential)
    assert caught.value.transient
    assert caught.value.status is None
    assert "unreachable" in str(caught.value)


def test_an_untrusted_vault_certificate_is_not_transient(kv: VaultSetup) -> None:
    with pytest.raises(KeyVaultError, match="verify=") as caught:
        KeyVaultSigner(kv.vault.url, "billing", credential=kv.credential)
    assert not caught.value.transient


def test_a_signature_that_does_not_fit_the_certificate_is_refused(
    kv: VaultSetup, other_rsa_cert: object
) -> None:
    signer = _signer(kv)
    signer._certificate = other_rsa_cert  # type: ignore[assignment]  # a renewed certificate
    with pytest.raises(KeyVaultError, match="does not verify"):
        signer.sign(b"x", "RS256")


def test_an_algorithm_the_key_cannot_use(kv: VaultSetup) -> None:
    signer = _signer(kv)
    before = kv.vault.request_count
    with pytest.raises(SignerError, match=r"ES256 needs an EC key.*use RS256 or PS256"):
        signer.sign(b"x", "ES256")
    assert kv.vault.request_count == before  # refused before any request


def test_construction_refusals(kv: VaultSetup) -> None:
    with pytest.raises(InvalidArgumentError, match="vault_url="):
        KeyVaultSigner("http://127.0.0.1:1", "billing", credential=kv.credential)
    with pytest.raises(InvalidArgumentError, match="vault_url="):
        KeyVaultSigner(f"{kv.vault.url}/keys", "billing", credential=kv.credential)
    with pytest.raises(InvalidArgumentError, match="certificate_name="):
        KeyVaultSigner(kv.vault.url, "bad/name", credential=kv.credential)
    with pytest.raises(InvalidArgumentError, match="credential="):
        KeyVaultSigner(kv.vault.url, "billing", credential=object())

    class AsyncOnly:
        async def get_token(self, *scopes: str) -> object: ...

    with pytest.raises(InvalidArgumentError, match="open_async"):
        KeyVaultSigner(kv.vault.url, "billing", credential=AsyncOnly())


def test_a_credential_failure_names_the_credential(kv: VaultSetup) -> None:
    class Broken:
        def get_token(self, *scopes: str) -> object:
            raise RuntimeError("no identity endpoint")

    with pytest.raises(KeyVaultError, match="credential=") as caught:
        KeyVaultSigner(kv.vault.url, "billing", credential=Broken())
    assert not caught.value.transient


def test_the_vault_token_never_shows(kv: VaultSetup) -> None:
    signer = _signer(kv)
    token = kv.credential.get_token("https://vault.azure.net/.default").token
    kv.vault.grant("signer-app", [])
    with pytest.raises(KeyVaultError) as caught:
        signer.sign(b"x", "RS256")
    for text in (repr(signer), str(caught.value), signer.description):
        assert token not in text
        assert "Bearer" not in text


def test_the_docs_page_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "keyvault.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
    example = next(b for b in blocks if "Emulator(tls=True)" in b)
    exec(compile(example, str(page), "exec"), {})  # noqa: S102 - the page's own example
    assert capsys.readouterr().out.strip() == "billing-app"
