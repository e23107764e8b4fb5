"""The examples of docs/tenants-and-cae.md and docs/emulator-cae.md run as written.

Each block is found by the ``<!-- section: NAME -->`` marker before it (``_docs.section``) and
run in a temporary working directory holding ``billing.crt`` / ``billing.pem``, as the pages
assume. Blocks that are fragments of a longer program (they use a ``credential`` or ``tenant``
made earlier on the page) run with that name bound to an emulator-backed one.

Not run, because they talk to Microsoft's cloud: the first example of "Tokens from other
tenants" (contoso / fabrikam tokens from login.microsoftonline.com) and the ``BearerAuth``
example (it calls graph.microsoft.com). tests/test_cae_end_to_end.py does what they show
against the emulator.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _docs import section

from certauth import CertificateCredential
from certauth.cae import claims_from_challenge
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.cae import claims_challenge_header

CLIENT = "11111111-2222-3333-4444-555555555555"


def block(name: str, language: str = "python") -> str:
    """The first ``language`` block after the marker ``name``."""
    match = re.search(rf"```{language}\n(.*?)```", section(name), re.DOTALL)
    assert match, f"no {language} block after the section marker {name!r}"
    return match.group(1)


def run(name: str, namespace: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Run the python block after ``name``; its namespace and what it printed."""
    scope = dict(namespace or {})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block(name), f"docs[{name}]", "exec"), scope)  # noqa: S102
    return scope, printed.getvalue()


@pytest.fixture
def workdir(
    rsa_cert: Certificate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_tenant_variables: None,
) -> Path:
    """The reader's directory: the certificate the pages name, and the bundle with its key."""
    (tmp_path / "billing.crt").write_bytes(rsa_cert.pem)
    (tmp_path / "billing.pem").write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tenant(workdir: Path) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, "billing.crt")
        yield emulator


@pytest.fixture
def credential(tenant: Emulator) -> Iterator[CertificateCredential]:
    with CertificateCredential(
        tenant.tenant_id, CLIENT, "billing.pem", authority=tenant.authority_host
    ) as made:
        yield made


# -- docs/tenants-and-cae.md --------------------------------------------------------------------


def test_a_tenant_that_is_not_allowed_is_refused_with_the_quoted_message(workdir: Path) -> None:
    # The credential of the page's first example; the refusal comes before anything is sent.
    credential = CertificateCredential(
        "contoso.onmicrosoft.com",
        CLIENT,
        "billing.pem",
        additionally_allowed_tenants=["fabrikam.onmicrosoft.com"],
    )
    _, printed = run("tenants-not-allowed", {"credential": credential})
    # The message the page quotes (for fabrikam) is the one raised (here for northwind.com).
    page = (Path(__file__).parents[1] / "docs" / "tenants-and-cae.md").read_text("utf-8")
    quote = re.search(r"(?:^  > .*\n)+", page, re.MULTILINE)
    assert quote
    message = " ".join(line.strip()[2:] for line in quote.group(0).splitlines())
    expected = message.replace("fabrikam.onmicrosoft.com", "northwind.com")
    assert printed == f"northwind.com {expected}\n"
    credential.close()


def test_the_claims_example_sends_its_claims(
    tenant: Emulator, credential: CertificateCredential
) -> None:
    scope, _ = run("claims-parameter", {"credential": credential})
    nbf = {"access_token": {"nbf": {"essential": True, "value": "1700000000"}}}
    assert [json.loads(c or "null") for c in tenant.claims_received] == [nbf]
    assert scope["token"].token


def test_the_enable_cae_example_gets_one_cae_token(
    tenant: Emulator, credential: CertificateCredential
) -> None:
    scope, _ = run("enable-cae", {"credential": credential})
    # Both calls ask for the CAE token: one request declaring cp1, then the cache.
    assert tenant.claims_received == ['{"access_token":{"xms_cc":{"values":["cp1"]}}}']
    assert scope["info"].token == scope["cae_token"].token


def test_the_shown_challenge_is_one_bearer_auth_answers() -> None:
    header = block("bearer-challenge", "text").splitlines()[1].split(": ", 1)[1]
    claims = claims_from_challenge([header])
    assert claims is not None
    assert json.loads(claims) == {
        "access_token": {"nbf": {"essential": True, "value": "1700000000"}}
    }


@pytest.mark.interop
def test_the_azure_core_pipeline_example_builds(workdir: Path) -> None:
    pytest.importorskip("azure.core")
    from azure.core.pipeline import Pipeline

    scope, _ = run("azure-core-pipeline")
    assert isinstance(scope["pipeline"], Pipeline)
    scope["credential"].close()


# -- docs/emulator-cae.md -----------------------------------------------------------------------


def test_the_received_claims_attributes_are_as_described(
    tenant: Emulator, credential: CertificateCredential
) -> None:
    credential.get_token("api://things/.default", enable_cae=True)
    lines = [line.split("#")[0].strip() for line in block("emulator-cae-received").splitlines()]
    values = [eval(line, {"tenant": tenant}) for line in lines if line]  # noqa: S307
    cp1 = '{"access_token":{"xms_cc":{"values":["cp1"]}}}'
    assert values == [cp1, [cp1], 1]  # reset_request_count returns the count before
    assert tenant.claims_received == []


def test_the_revocation_example_runs(tenant: Emulator) -> None:
    scope, _ = run(
        "emulator-cae-revoke",
        {"tenant": tenant, "client_id": CLIENT, "TENANT": tenant.tenant_id},
    )
    assert scope["revoked_at"] == int(tenant.clock.time())


def test_the_shown_challenge_is_the_emulators() -> None:
    shown = block("emulator-cae-challenge", "http")
    header = re.search(r"^WWW-Authenticate: (.*)$", shown, re.MULTILINE)
    assert header
    encoded = re.search(r'claims="([^"]+)"', header.group(1))
    assert encoded
    revoked_at = int(json.loads(base64.b64decode(encoded.group(1)))["access_token"]["nbf"]["value"])
    expected = claims_challenge_header("http://127.0.0.1:8400/common/oauth2/authorize", revoked_at)
    assert header.group(1) == expected


def test_the_challenge_by_hand_example_runs(workdir: Path) -> None:
    _, printed = run("emulator-cae-by-hand")
    claims = json.loads(printed)
    assert claims["access_token"]["xms_cc"] == {"values": ["cp1"]}
    assert claims["access_token"]["nbf"]["essential"] is True


def test_the_several_tenants_example_runs(workdir: Path) -> None:
    scope, _ = run("emulator-cae-tenants")
    assert scope["claims"]["tid"] == scope["OTHER"]
