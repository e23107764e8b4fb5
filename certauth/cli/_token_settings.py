"""``certauth assertion`` and ``certauth token`` without click: how their options and the
environment resolve into settings, what a run must have, the token the file cache holds for
them, and the lines ``token`` prints.

:mod:`certauth.cli.token` (click) and :mod:`certauth.cli._fast_token` (the cache hit served
before click is imported) both call these, so a rule is written once. A refusal is a
:class:`~certauth.cli._values.UsageProblem`, which the click side reports as a usage error.
"""

from __future__ import annotations

import os
import time
from typing import Any

from certauth.cli._values import (
    ENV_AUTHORITY_HOST,
    ENV_CERT_PATH,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_FEDERATED_TOKEN_FILE,
    ENV_SEND_CHAIN,
    ENV_TENANT,
    ENV_VERBOSE,
    UsageProblem,
    env_flag,
    env_value,
    read_password,
)

#: ``token --output``: what it prints.
OUTPUTS = ("token", "json", "header", "env", "curl-config")


def refuse_unused_pkcs11(
    pkcs11_module: str | None, pin_env: str | None, pin_file: str | None
) -> None:
    """PKCS#11 options given without a ``pkcs11:`` key are a mistake worth saying."""
    given = [
        flag
        for flag, value in (
            ("--pkcs11-module", pkcs11_module),
            ("--pin-env", pin_env),
            ("--pin-file", pin_file),
        )
        if value is not None
    ]
    if given:
        raise UsageProblem(f"{given[0]} goes with a pkcs11: key; leave it out for a key file")


class TargetSettings:
    """The resolved options: which server, which client, which certificate. Flags win over
    the environment (azure-identity's variables)."""

    def __init__(self, **opts: Any) -> None:
        self.client_id: str | None = opts["client_id"] or env_value(ENV_CLIENT_ID)
        self.token_endpoint: str | None = opts["token_endpoint"]
        self.issuer: str | None = opts["issuer"]
        explicit = [n for n in ("tenant", "token_endpoint", "issuer") if opts[n]]
        if len(explicit) > 1:
            flags = " and ".join("--" + n.replace("_", "-") for n in explicit)
            raise UsageProblem(f"{flags} are exclusive: name the server one way")
        # The environment's tenant applies only when no flag names the server.
        self.tenant: str | None = opts["tenant"] or (None if explicit else env_value(ENV_TENANT))
        # Like the tenant, the environment's cloud host applies only when no flag names the
        # server by endpoint or issuer.
        self.authority_host: str | None = opts["authority_host"] or (
            None if self.token_endpoint or self.issuer else env_value(ENV_AUTHORITY_HOST)
        )
        self.b2c_policy: str | None = opts["b2c_policy"]
        self.cert_path: str | None = opts["cert_path"] or env_value(ENV_CERT_PATH)
        self.key_path: str | None = opts["key_path"]
        self.alg: str | None = opts["alg"].upper() if opts["alg"] else None
        self.send_chain: bool = (
            opts["send_chain"] if opts["send_chain"] is not None else env_flag(ENV_SEND_CHAIN)
        )
        self.password_env: str | None = opts["password_env"]
        self.password_file: str | None = opts["password_file"]
        self.pkcs11_module: str | None = opts["pkcs11_module"]
        self.pin_env: str | None = opts["pin_env"]
        self.pin_file: str | None = opts["pin_file"]
        if not self.in_token:
            refuse_unused_pkcs11(self.pkcs11_module, self.pin_env, self.pin_file)
        if not self.client_id:
            raise UsageProblem(f"missing --client-id (or {ENV_CLIENT_ID})")
        if not (self.tenant or self.token_endpoint or self.issuer):
            raise UsageProblem(f"missing --tenant (or {ENV_TENANT}), --token-endpoint or --issuer")

    @property
    def in_token(self) -> bool:
        """Whether ``--key`` names a key in a PKCS#11 token."""
        from certauth.signers import is_pkcs11_uri

        return is_pkcs11_uri(self.key_path)

    def credential_kwargs(self) -> dict[str, Any]:
        """Where to ask, as :func:`certauth.authority.resolve_authority` takes it (besides
        the tenant)."""
        return {
            "host": self.authority_host,
            "token_endpoint": self.token_endpoint,
            "issuer": self.issuer,
            "b2c_policy": self.b2c_policy,
        }


def require_settings(
    scopes: tuple[str, ...],
    opts: dict[str, Any],
    *,
    secret_sources: tuple[str | None, ...],
    federated_sources: tuple[str | None, ...],
) -> None:
    """Refuse a ``token`` run that lacks required settings, naming every missing one at once
    (a user fixing them one run at a time would need four runs)."""
    missing = []
    if not scopes:
        missing.append("--scope (e.g. --scope https://graph.microsoft.com/.default)")
    if not (opts["client_id"] or env_value(ENV_CLIENT_ID)):
        missing.append(f"--client-id (or {ENV_CLIENT_ID})")
    if not (opts["tenant"] or opts["token_endpoint"] or opts["issuer"] or env_value(ENV_TENANT)):
        missing.append(f"--tenant (or {ENV_TENANT}), --token-endpoint or --issuer")
    from certauth.signers import is_pkcs11_uri

    in_token = is_pkcs11_uri(opts["key_path"])  # the certificate may be in the token too
    has_key = opts["cert_path"] or env_value(ENV_CERT_PATH) or in_token
    if not (has_key or any(secret_sources + federated_sources)):
        missing.append(
            f"--cert (or {ENV_CERT_PATH}), a client secret (--client-secret-env, "
            f"--client-secret-file or {ENV_CLIENT_SECRET}) or a federated token file "
            f"(--federated-token-file or {ENV_FEDERATED_TOKEN_FILE})"
        )
    if len(missing) == 1:
        raise UsageProblem(f"missing {missing[0]}")
    if missing:
        raise UsageProblem(f"missing {len(missing)} settings: {'; '.join(missing)}")


def stored_token(
    target: TargetSettings,
    scopes: tuple[str, ...],
    cache: Any,
    *,
    bound: bool,
    secret_env: str | None,
    secret_file: str | None,
) -> Any:
    """The token the file cache holds for a certificate file, looked up before the credential
    is built (:func:`certauth._cache_lookup.stored_token`: no certificate parsed, no
    credential machinery loaded); ``None`` for every other case (``bound``: ``--mtls`` or
    ``--dpop``), which the credential then handles."""
    from certauth.cache import FileTokenCache
    from certauth.errors import CertauthError

    if not isinstance(cache, FileTokenCache) or bound:
        return None
    if target.in_token or not target.cert_path or secret_env or secret_file:
        return None  # not what the command makes a key-file CertificateCredential of
    try:
        password = read_password(target.password_env, target.password_file)
    except CertauthError:
        return None  # the credential's construction reads it first, and raises the same
    from certauth._cache_lookup import stored_token as lookup

    return lookup(
        cache,
        tenant=target.tenant,
        client_id=target.client_id or "",
        cert_path=target.cert_path,
        key_path=target.key_path,
        password=password,
        alg=target.alg,
        scopes=scopes,
        **target.credential_kwargs(),
    )


def token_line(output: str, token_type: str, access_token: str) -> str:
    """What ``--output`` ``token``, ``header`` or ``env`` prints (without the newline)."""
    if output == "header":
        return f"Authorization: {token_type} {access_token}"
    if output == "env":
        return f"ACCESS_TOKEN={access_token}"
    return access_token


def verbose_line(expires_on: int) -> str | None:
    """The stderr line ``CERTAUTH_VERBOSE`` asks for (``None``: not asked)."""
    if not os.environ.get(ENV_VERBOSE):
        return None
    return f"certauth: token valid for {expires_on - int(time.time())} s"
