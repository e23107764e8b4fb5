"""The sans-network parts of ``cert rotate``: the Graph proof, cloud hosts, Graph's error shape,
durations, the lock, the state file and the dry run."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jwt
import pytest

from certauth import _graph
from certauth._flow import Reply
from certauth.certificates import Certificate, generate_certificate
from certauth.cli.main import main
from certauth.errors import GraphError, InvalidArgumentError
from certauth.rotation import STATE_FILE, RotationError, _locked, rotate_certificate

OBJECT_ID = "5a3f0c2e-1111-4222-8333-944455556666"


def test_the_proof_is_built_as_microsoft_documents_it(rsa_cert: Certificate) -> None:
    proof = _graph.build_proof(rsa_cert, OBJECT_ID, now=1_800_000_000)
    header = jwt.get_unverified_header(proof)
    assert header == {
        "alg": "RS256",
        "typ": "JWT",
        "x5t": rsa_cert.x5t,
        "kid": rsa_cert.thumbprint(),
    }
    claims = jwt.decode(
        proof,
        rsa_cert.public_key,  # type: ignore[arg-type]
        algorithms=["RS256"],
        audience="00000002-0000-0000-c000-000000000000",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert claims == {
        "aud": "00000002-0000-0000-c000-000000000000",
        "iss": OBJECT_ID,  # the object id, not the client id
        "nbf": 1_800_000_000,
        "iat": 1_800_000_000,
        "exp": 1_800_000_600,  # nbf + 10 minutes
    }


def test_graph_per_cloud() -> None:
    assert _graph.graph_for(None) == "https://graph.microsoft.com"
    assert _graph.graph_for("login.microsoftonline.us") == "https://graph.microsoft.us"
    assert _graph.graph_for("https://login.chinacloudapi.cn") == (
        "https://microsoftgraph.chinacloudapi.cn"
    )
    assert _graph.graph_for("http://127.0.0.1:8400") == "https://graph.microsoft.com"


def test_key_credential_and_thumbprint(rsa_cert: Certificate) -> None:
    credential = _graph.key_credential(rsa_cert, "x" * 200)
    assert credential["key"] == base64.b64encode(rsa_cert.der).decode()
    assert (credential["type"], credential["usage"]) == ("AsymmetricX509Cert", "Verify")
    assert len(credential["displayName"]) == 90  # Graph's limit
    custom = base64.b64encode(bytes.fromhex(rsa_cert.thumbprint())).decode()
    assert _graph.thumbprint_of({"customKeyIdentifier": custom}) == rsa_cert.thumbprint()
    # As the portal stores it: the hex text (shown as is, or base64 of that text).
    hex_text = rsa_cert.thumbprint().lower()
    assert _graph.thumbprint_of({"customKeyIdentifier": hex_text}) == rsa_cert.thumbprint()
    as_base64 = base64.b64encode(rsa_cert.thumbprint().encode()).decode()
    assert _graph.thumbprint_of({"customKeyIdentifier": as_base64}) == rsa_cert.thumbprint()
    for bad in (None, "", "not base64!", base64.b64encode(b"short").decode()):
        assert _graph.thumbprint_of({"customKeyIdentifier": bad}) is None


def test_graph_errors_keep_code_message_and_request_id() -> None:
    body = {
        "error": {
            "code": "Authorization_RequestDenied",
            "message": "Insufficient privileges to complete the operation.",
            "innerError": {"date": "2026-12-03T10:00:00", "request-id": "req-1"},
        }
    }
    error = _graph.graph_error(
        Reply(403, {"request-id": "req-1"}, json.dumps(body).encode()), "https://g/x", "GET"
    )
    assert isinstance(error, GraphError)
    assert error.exit_code == 4
    assert (error.status_code, error.code, error.request_id, error.date) == (
        403,
        "Authorization_RequestDenied",
        "req-1",
        "2026-12-03T10:00:00",
    )
    assert error.message == (
        "GET https://g/x: Microsoft Graph answered HTTP 403 (Authorization_RequestDenied: "
        "Insufficient privileges to complete the operation.); request-id req-1"
    )
    plain = _graph.graph_error(Reply(502, {}, b"<html>"), "https://g/x", "POST")
    assert plain.message == "POST https://g/x: Microsoft Graph answered HTTP 502"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0), ("2d", 172800.0), ("0", 0.0)],
)
def test_durations(written: str, seconds: float) -> None:
    from certauth.cli._common import Duration

    assert Duration(maximum=30 * 86400).convert(written, None, None) == seconds


@pytest.mark.parametrize("written", ["", "h", "1x", "-1m", "nan", "inf", "31d"])
def test_bad_durations_are_usage_errors(written: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "cert",
            "rotate",
            "--tenant",
            "t",
            "--client-id",
            "c",
            "--cert",
            "x.pem",
            "--grace",
            written,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--grace" in err
    assert "Traceback" not in err


def _bundle(tmp_path: Path, cert: Certificate, name: str = "app.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(cert.private_key_pem() + cert.pem)
    return path


def test_dry_run_changes_nothing_and_lists_the_plan(
    rsa_cert: Certificate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = _bundle(tmp_path, rsa_cert)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(
        [
            "cert",
            "rotate",
            "--tenant",
            "contoso.com",
            "--client-id",
            "app",
            "--cert",
            str(served),
            "--dry-run",
            "--grace",
            "30m",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert out[0] == "dry run: nothing was changed or sent; the plan:"
    assert re.fullmatch(
        rf"  1/6 create {re.escape(str(tmp_path))}/app-\d{{8}}\.pem \(CN=certauth-test, RSA 2048, "
        r"365 days\)",
        out[1],
    ), out[1]
    assert out[2] == (
        "  2/6 addKey the new certificate to app app (object id: looked up by appId) at "
        f"https://graph.microsoft.com, proof signed by {rsa_cert.thumbprint()}"
    )
    assert out[3] == "  3/6 wait until the token endpoint accepts it (at most 600 s)"
    assert out[4] == f"  4/6 switch {served} to it, keeping the old files renamed .retired-DATE"
    assert out[5] == (
        f"  5/6 wait 1800 s (grace), then 6/6 removeKey the old certificate "
        f"{rsa_cert.thumbprint()}, proof signed by the new one"
    )


def test_a_second_rotation_of_the_folder_is_refused_while_one_runs(
    rsa_cert: Certificate, tmp_path: Path
) -> None:
    served = _bundle(tmp_path, rsa_cert)
    with _locked(tmp_path), pytest.raises(RotationError, match="another rotation is running"):
        rotate_certificate(served, tenant_id="contoso.com", client_id="app", out_dir=tmp_path)


def test_a_state_file_of_another_certificate_is_refused(
    rsa_cert: Certificate, tmp_path: Path
) -> None:
    served = _bundle(tmp_path, rsa_cert)
    (tmp_path / STATE_FILE).write_text(
        json.dumps({"version": 2, "served": ["/elsewhere/other.pem"], "step": "created"})
    )
    with pytest.raises(RotationError, match=r"a rotation of /elsewhere/other\.pem is under way"):
        rotate_certificate(served, tenant_id="contoso.com", client_id="app", out_dir=tmp_path)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(Exception, match="not a rotation state this certauth wrote"):
        rotate_certificate(served, tenant_id="contoso.com", client_id="app", out_dir=tmp_path)


def test_bad_settings_are_refused_before_anything_happens(
    rsa_cert: Certificate, tmp_path: Path
) -> None:
    served = _bundle(tmp_path, rsa_cert)
    for kwargs, match in (
        ({"days": 0}, "days=0"),
        ({"grace": -1}, "grace=-1"),
        ({"propagation_timeout": 0}, "propagation_timeout=0"),
    ):
        with pytest.raises(InvalidArgumentError, match=match):
            rotate_certificate(served, tenant_id="t", client_id="c", out_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / STATE_FILE).exists()


def test_missing_settings_are_named_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_CERTIFICATE_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert main(["cert", "rotate"]) == 2
    err = capsys.readouterr().err
    wanted = "; ".join(
        [
            "missing --tenant (or AZURE_TENANT_ID)",
            "--client-id (or AZURE_CLIENT_ID)",
            "--cert (or AZURE_CLIENT_CERTIFICATE_PATH)",
        ]
    )
    assert wanted in err


def test_ec_certificates_rotate_to_ec(tmp_path: Path) -> None:
    from certauth._rotation_run import key_type as _key_type

    assert _key_type(generate_certificate("CN=x", key_type="ec-p256")) == "ec-p256"
    assert _key_type(generate_certificate("CN=x", key_type="rsa3072")) == "rsa3072"
