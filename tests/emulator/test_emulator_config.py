"""The configuration file (TOML or JSON) and the directory model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from _emulator_helpers import CLIENT_ID, assertion_form, claims_of, make_assertion, secret_form

from certauth.certificates import Certificate
from certauth.emulator import Clock, Emulator, load_config
from certauth.emulator.registry import normalize_resource
from certauth.errors import ConfigurationError, InvalidArgumentError

OTHER_TENANT = "22222222-0000-4000-8000-000000000002"


def _config(tmp_path: Path, cert: Certificate) -> dict[str, object]:
    (tmp_path / "app.crt").write_bytes(cert.pem)
    (tmp_path / "secret.txt").write_text("file-secret\n")
    return {
        "token_lifetime": 1200,
        "strict": True,
        "domains": ["contoso.onmicrosoft.com"],
        "resources": [{"uri": "api://things", "roles": ["Everyone"]}, "api://plain"],
        "apps": [
            {
                "client_id": CLIENT_ID,
                "certificates": ["app.crt"],
                "roles": {"api://things": ["Things.Write"]},
                "secrets": [
                    {"env": "EMULATOR_TEST_SECRET", "expires": "2099-01-01T00:00:00Z"},
                    {"file": "secret.txt"},
                ],
            }
        ],
        "tenants": [{"id": OTHER_TENANT, "apps": [{"client_id": "other-app"}]}],
    }


def test_json_config(
    tmp_path: Path, rsa_cert: Certificate, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMULATOR_TEST_SECRET", "env-secret")
    path = tmp_path / "tenant.json"
    path.write_text(json.dumps(_config(tmp_path, rsa_cert)))
    with Emulator(config=path) as tenant:
        assert tenant.policy.strict
        assert tenant.token_lifetime == 1200
        token = make_assertion(rsa_cert, tenant.token_endpoint)
        body = http.post(tenant.token_endpoint, data=assertion_form(token)).json()
        assert body["expires_in"] == 1200
        assert claims_of(body["access_token"])["roles"] == ["Everyone", "Things.Write"]
        for secret in ("env-secret", "file-secret"):
            response = http.post(tenant.token_endpoint, data=secret_form(secret))
            assert response.status_code == 200, response.text
        assert tenant.registry.tenant("contoso.onmicrosoft.com") is not None
        other = tenant.registry.tenant(OTHER_TENANT)
        assert other is not None
        assert other.app("other-app") is not None


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_toml_config_and_arguments_win(tmp_path: Path, rsa_cert: Certificate) -> None:
    (tmp_path / "app.crt").write_bytes(rsa_cert.pem)
    path = tmp_path / "tenant.toml"
    path.write_text(
        'token_lifetime = 900\nstrict = true\n\n[[apps]]\nclient_id = "toml-app"\n'
        'certificates = ["app.crt"]\nroles = ["A"]\n'
        '\n[[tenants]]\nid = "contoso.example"\n'
    )
    config = load_config(path)
    assert config.token_lifetime == 900
    with Emulator(config=config, strict=False, token_lifetime=60) as tenant:
        assert not tenant.policy.strict
        assert tenant.token_lifetime == 60
        app = tenant.registry.tenant(tenant.tenant_id).app("TOML-APP")  # type: ignore[union-attr]
        assert app is not None
        assert app.roles == {"A"}
        # A tenant named by domain gets a stable GUID.
        assert tenant.registry.tenant("contoso.example").tenant_id != "contoso.example"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"apps": [{"client_id": "x", "secret": "oops"}]}, "unknown key(s) secret"),
        ({"apps": [{"client_id": "x", "secrets": [{"value": "s"}]}]}, "unknown key(s) value"),
        ({"apps": [{"client_id": "x", "secrets": [{"env": "NOT_SET_ANYWHERE_42"}]}]}, "not set"),
        ({"apps": [{"certificates": []}]}, "'client_id' is required"),
        ({"token_lifetime": "1h"}, "whole number"),
        ({"tenants": [{"apps": []}, {"apps": []}]}, "'id' is required"),
        ([], "top level must be an object"),
    ],
)
def test_bad_config_says_where(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigurationError, match=r"bad\.json") as info:
        Emulator(config=path)
    assert message in str(info.value)


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        load_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON at line 1"):
        load_config(broken)


def test_directory_rules() -> None:
    tenant = Emulator()
    with pytest.raises(InvalidArgumentError, match="reserved"):
        tenant.add_tenant("common")
    with pytest.raises(InvalidArgumentError, match="secret cannot be empty"):
        tenant.register_secret(CLIENT_ID, "")
    with pytest.raises(InvalidArgumentError, match="roles must be a list"):
        tenant.register(CLIENT_ID, roles="Things.Read")
    assert normalize_resource("https://Management.Azure.com/") == "https://management.azure.com"


def test_clock() -> None:
    clock = Clock(lambda: 1_000.0)
    assert clock.time() == 1_000.0
    clock.advance(60)
    assert clock.time() == 1_060.0
    assert clock.now().timestamp() == 1_060.0
    clock.reset()
    assert clock.time() == 1_000.0


def test_toml_on_python_310_says_to_use_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tenant.toml"
    path.write_text("strict = true\n")
    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    with pytest.raises(ConfigurationError, match=r"needs Python 3\.11 or later; write the same"):
        load_config(path)
