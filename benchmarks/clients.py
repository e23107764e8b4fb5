"""The three libraries under test, each driven the way its documentation says to use it.

Every adapter gets the same :class:`Target` (one emulator over TLS, one app, one PEM file with
key and certificate) and exposes the same handful of operations, so a measurement is written
once and run for all three. What each peer needs to talk to the emulator (see
docs/emulator.md and tests/emulator/test_emulator_interop.py):

* MSAL: an https authority and ``verify=ca_file`` (honoured only while ``REQUESTS_CA_BUNDLE``
  and ``CURL_CA_BUNDLE`` are unset: ``benchmarks.__main__`` removes them); its instance
  discovery is pointed at the emulator's own endpoint, so it makes the same three requests it
  makes against login.microsoftonline.com by default.
* azure-identity: ``connection_verify=ca_file``, the authority as ``host:port`` and
  ``disable_instance_discovery=True`` (otherwise it asks login.microsoftonline.com, which a
  benchmark must not depend on): two requests before its first token instead of its default
  three.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    """Where and as whom every client authenticates."""

    tenant_id: str
    client_id: str
    #: ``https://127.0.0.1:PORT``
    authority_host: str
    token_endpoint: str
    ca_file: str
    #: PEM with the private key and the certificate (what all three libraries read).
    pem_path: str
    #: SHA-1 thumbprint, hex: what MSAL users paste from the portal.
    thumbprint_sha1: str
    scope: str

    @classmethod
    def of_endpoint(
        cls,
        info: dict[str, str],
        *,
        client_id: str,
        pem_path: str,
        thumbprint_sha1: str,
        scope: str,
    ) -> Target:
        """The target of a started endpoint (its ``info``: the emulator's ready file)."""
        return cls(
            tenant_id=info["tenant"],
            client_id=client_id,
            authority_host=info["authority_host"],
            token_endpoint=info["token_endpoint"],
            ca_file=info["ca_file"],
            pem_path=pem_path,
            thumbprint_sha1=thumbprint_sha1,
            scope=scope,
        )


class Library:
    """One library under test."""

    name = ""
    #: Module imported by the process-level row (``import NAME``), for the notes.
    module = ""

    def version(self) -> str:
        raise NotImplementedError

    def new_credential(self, target: Target) -> Any:
        """A new credential/application object that reads the key from ``pem_path``."""
        raise NotImplementedError

    def get_token(self, credential: Any, target: Target) -> str:
        """An access token for ``target.scope`` (cached when the library caches)."""
        raise NotImplementedError

    def cached_call(self, credential: Any, target: Target) -> Callable[[], object]:
        """The library's own token call for ``target.scope``, bound, without adapter code
        around it (the cached row times this)."""
        raise NotImplementedError

    def close(self, credential: Any) -> None:
        """Release the credential's connections."""

    def assertion_builder(self, target: Target) -> Callable[[], str]:
        """A function that builds and signs one client assertion the way the library does
        when it requests a token, with the key already loaded by the library."""
        raise NotImplementedError

    def process_code(self) -> str:
        """``python -c`` source that imports the library and gets one token; ``sys.argv[1:]``
        is tenant, client, pem path, authority host, CA file, scope, SHA-1 thumbprint."""
        raise NotImplementedError


class Certauth(Library):
    name = "certauth"
    module = "certauth"

    def version(self) -> str:
        import certauth

        return certauth.__version__

    def new_credential(self, target: Target) -> Any:
        from certauth import CertificateCredential

        return CertificateCredential(
            target.tenant_id,
            target.client_id,
            target.pem_path,
            authority=target.authority_host,
            verify=target.ca_file,
        )

    def get_token(self, credential: Any, target: Target) -> str:
        token: str = credential.get_token(target.scope).token
        return token

    def cached_call(self, credential: Any, target: Target) -> Callable[[], object]:
        return functools.partial(credential.get_token, target.scope)

    def close(self, credential: Any) -> None:
        credential.close()

    def assertion_builder(self, target: Target) -> Callable[[], str]:
        from certauth import build_client_assertion, load_certificate

        certificate = load_certificate(target.pem_path, require_key=True)
        client_id, audience = target.client_id, target.token_endpoint

        def build() -> str:
            # PS256 + x5t#S256: what the credential sends to an Entra authority.
            return build_client_assertion(
                certificate, client_id=client_id, audience=audience, alg="PS256"
            )

        return build

    def process_code(self) -> str:
        return (
            "import sys\n"
            "from certauth import CertificateCredential\n"
            "t, c, p, host, ca, scope, _ = sys.argv[1:]\n"
            "credential = CertificateCredential(t, c, p, authority=host, verify=ca)\n"
            "assert credential.get_token(scope).token\n"
        )


class Msal(Library):
    name = "msal"
    module = "msal"

    def version(self) -> str:
        import msal

        return str(msal.__version__)

    def new_credential(self, target: Target) -> Any:
        import msal

        with open(target.pem_path, encoding="ascii") as file:
            pem = file.read()
        return msal.ConfidentialClientApplication(
            target.client_id,
            authority=f"{target.authority_host}/{target.tenant_id}",
            client_credential={"private_key": pem, "thumbprint": target.thumbprint_sha1},
            verify=target.ca_file,
            instance_discovery=f"{target.authority_host}/common/discovery/instance",
        )

    def get_token(self, credential: Any, target: Target) -> str:
        result = credential.acquire_token_for_client([target.scope])
        if "access_token" not in result:
            raise RuntimeError(f"msal: no token: {result.get('error_description', result)}")
        token: str = result["access_token"]
        return token

    def cached_call(self, credential: Any, target: Target) -> Callable[[], object]:
        return functools.partial(credential.acquire_token_for_client, [target.scope])

    def close(self, credential: Any) -> None:
        client = getattr(credential, "http_client", None)
        close = getattr(client, "close", None)
        if close is not None:
            close()

    def assertion_builder(self, target: Target) -> Callable[[], str]:
        # What ConfidentialClientApplication does for {"private_key": PEM, "thumbprint": HEX}:
        # it hands the PEM string to JwtAssertionCreator, whose PyJWT call parses (and
        # validates) the key again for every assertion.
        from msal.oauth2cli.assertion import JwtAssertionCreator

        with open(target.pem_path, encoding="ascii") as file:
            pem = file.read()
        creator = JwtAssertionCreator(pem, "RS256", sha1_thumbprint=target.thumbprint_sha1)
        client_id, audience = target.client_id, target.token_endpoint

        def build() -> str:
            return creator.create_normal_assertion(audience=audience, issuer=client_id).decode()

        return build

    def process_code(self) -> str:
        return (
            "import sys\n"
            "import msal\n"
            "t, c, p, host, ca, scope, thumb = sys.argv[1:]\n"
            "app = msal.ConfidentialClientApplication(\n"
            "    c, authority=f'{host}/{t}',\n"
            "    client_credential={'private_key': open(p).read(), 'thumbprint': thumb},\n"
            "    verify=ca, instance_discovery=f'{host}/common/discovery/instance')\n"
            "result = app.acquire_token_for_client([scope])\n"
            "assert 'access_token' in result, result\n"
        )


class AzureIdentity(Library):
    name = "azure-identity"
    module = "azure.identity"

    def version(self) -> str:
        from azure.identity import _version

        return str(_version.VERSION)

    def new_credential(self, target: Target) -> Any:
        from azure.identity import CertificateCredential

        return CertificateCredential(
            target.tenant_id,
            target.client_id,
            certificate_path=target.pem_path,
            authority=target.authority_host,  # with https://: Python 3.10 needs the scheme
            connection_verify=target.ca_file,
            disable_instance_discovery=True,
        )

    def get_token(self, credential: Any, target: Target) -> str:
        token: str = credential.get_token(target.scope).token
        return token

    def cached_call(self, credential: Any, target: Target) -> Callable[[], object]:
        return functools.partial(credential.get_token, target.scope)

    def close(self, credential: Any) -> None:
        credential.close()

    def assertion_builder(self, target: Target) -> Callable[[], str]:
        # The sync CertificateCredential turns the file into MSAL's client_credential dict
        # (the PEM as a string + the SHA-1 thumbprint) and MSAL signs with it: the same path.
        from azure.identity._credentials.certificate import get_client_credential
        from msal.oauth2cli.assertion import JwtAssertionCreator

        credential = get_client_credential(certificate_path=target.pem_path)
        creator = JwtAssertionCreator(
            credential["private_key"], "RS256", sha1_thumbprint=credential["thumbprint"]
        )
        client_id, audience = target.client_id, target.token_endpoint

        def build() -> str:
            return creator.create_normal_assertion(audience=audience, issuer=client_id).decode()

        return build

    def process_code(self) -> str:
        return (
            "import sys\n"
            "from azure.identity import CertificateCredential\n"
            "t, c, p, host, ca, scope, _ = sys.argv[1:]\n"
            "credential = CertificateCredential(\n"
            "    t, c, certificate_path=p, authority=host,\n"
            "    connection_verify=ca, disable_instance_discovery=True)\n"
            "assert credential.get_token(scope).token\n"
        )


LIBRARIES: dict[str, type[Library]] = {
    "certauth": Certauth,
    "msal": Msal,
    "azure-identity": AzureIdentity,
}


def process_argv(library: Library, target: Target) -> list[str]:
    """The command of the process-level row for ``library``."""
    return [
        sys.executable,
        "-c",
        library.process_code(),
        target.tenant_id,
        target.client_id,
        target.pem_path,
        target.authority_host,
        target.ca_file,
        target.scope,
        target.thumbprint_sha1,
    ]
