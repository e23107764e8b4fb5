"""``certauth assertion`` and ``certauth token``: a certificate in, an assertion or a token out.

Options fall back to azure-identity's environment variables so pipelines written for
``EnvironmentCredential`` work unchanged; flags always win over the environment.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from certauth.cli._bound import Binding, binding_options, curl_config, with_cnf
from certauth.cli._cache_option import token_cache
from certauth.cli._common import (
    CA_FILE_HELP,
    MAX_TIMEOUT,
    TOTAL_TIMEOUT_HELP,
    FiniteFloatRange,
    PathText,
    SpelledChoice,
    Text,
    Url,
    VariableName,
    emit_json,
    names_options,
    password_options,
    read_password,
    show_retries,
    usage_errors,
)
from certauth.cli._token_settings import (
    OUTPUTS,
    TargetSettings,
    require_settings,
    stored_token,
    token_line,
    verbose_line,
)
from certauth.cli._values import (
    ALGS,
    ENV_AUTHORITY_HOST,
    ENV_CACHE_NAMESPACE,
    ENV_CACHE_URL,
    ENV_CERT_PATH,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_FEDERATED_TOKEN_FILE,
    ENV_SEND_CHAIN,
    ENV_TENANT,
    MIN_TIMEOUT,
)
from certauth.cli._values import env_value as _env

F = TypeVar("F", bound=Callable[..., Any])


def authority_options(func: F) -> F:
    """Options naming the client and the server (shared by ``assertion``, ``token``)."""
    options = [
        click.option(
            "--client-id", type=Text(), help=f"Application (client) ID [env: {ENV_CLIENT_ID}]."
        ),
        click.option(
            "--tenant",
            type=Text(),
            help=f"Tenant ID or domain (Entra ID, B2C) [env: {ENV_TENANT}].",
        ),
        click.option(
            "--token-endpoint", type=Url(), help="Token endpoint URL of any OAuth 2.0 server."
        ),
        click.option(
            "--issuer", type=Url(), help="OpenID Connect issuer URL (token endpoint discovered)."
        ),
        click.option(
            "--authority-host",
            type=Url(bare_host=True),
            help=f"Cloud host, e.g. login.microsoftonline.us [env: {ENV_AUTHORITY_HOST}].",
        ),
        click.option(
            "--b2c-policy",
            type=Text(),
            help="Azure AD B2C policy, e.g. B2C_1A_partner (with --tenant).",
        ),
        click.option(
            "--cert",
            "cert_path",
            type=PathText(),
            help=f"Certificate: PEM (key + cert), PFX or DER [env: {ENV_CERT_PATH}].",
        ),
        click.option(
            "--key",
            "key_path",
            type=PathText(),
            help="Separate private key file (PEM or DER), or a pkcs11: URI (RFC 7512) of a key "
            "in a token.",
        ),
        click.option(
            "--alg",
            type=SpelledChoice(ALGS),
            help="Assertion algorithm (default: PS256 for Entra ID, RS256 otherwise).",
        ),
        click.option(
            "--x5c",
            "send_chain",
            is_flag=True,
            default=None,
            help=f"Send the certificate chain (x5c) [env: {ENV_SEND_CHAIN}].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    from certauth.cli._pkcs11 import pkcs11_options

    return pkcs11_options(password_options(func))


class _Target(TargetSettings):
    """The resolved options (:class:`TargetSettings`), and the key they name."""

    def __init__(self, **opts: Any) -> None:
        with usage_errors():
            super().__init__(**opts)

    def signer(self) -> Any:
        """The token's key as a signer (``--key pkcs11:...``), with ``--cert``'s certificate
        when given (else the one stored beside the key in the token)."""
        from certauth.certificates import load_certificate
        from certauth.cli._pkcs11 import open_signer

        assert self.key_path is not None
        public = load_certificate(self.cert_path, load_key=False) if self.cert_path else None
        return open_signer(
            self.key_path,
            "--key",
            pkcs11_module=self.pkcs11_module,
            pin_env=self.pin_env,
            pin_file=self.pin_file,
            certificate=public,
        )

    def certificate(self) -> Any:
        from certauth.certificates import load_certificate

        if not self.cert_path:
            raise click.UsageError(f"missing --cert (or {ENV_CERT_PATH})")
        password = read_password(self.password_env, self.password_file)
        return load_certificate(
            self.cert_path, key=self.key_path, password=password, require_key=True
        )


@click.command("assertion")
@authority_options
@click.option(
    "--lifetime",
    type=int,
    default=300,
    show_default=True,
    help="Assertion lifetime in seconds (at most 600).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object: the assertion, its header and its claims.",
)
@names_options
def assertion(lifetime: int, as_json: bool, **opts: Any) -> None:
    """Print a signed client assertion (RFC 7523 JWT) for the token endpoint.

    For curl users and for debugging: the JWT goes in client_assertion with
    client_assertion_type urn:ietf:params:oauth:client-assertion-type:jwt-bearer.

    \b
    Example:
      certauth assertion --client-id $APP_ID --tenant contoso.onmicrosoft.com --cert app.pem
    """
    from certauth.assertion import MAX_LIFETIME, AssertionSigner
    from certauth.authority import resolve_authority

    if not 0 < lifetime <= MAX_LIFETIME:
        raise click.BadParameter(
            f"{lifetime} is outside 1-{MAX_LIFETIME} seconds", param_hint="--lifetime"
        )
    target = _Target(**opts)
    key = {"signer": target.signer()} if target.in_token else {"certificate": target.certificate()}
    authority = resolve_authority(target.tenant, **target.credential_kwargs())
    if authority is None:
        raise click.UsageError(
            "--issuer of a non-Entra server needs discovery; use `certauth token`, or give "
            "--token-endpoint for the assertion's audience"
        )
    signer = AssertionSigner(
        **key,
        client_id=target.client_id or "",
        alg=target.alg,
        lifetime=lifetime,
        include_x5c=target.send_chain,
    )
    jwt = signer.sign(authority.token_endpoint, alg=signer.check(authority))
    if as_json:
        from certauth._jose import b64url_decode

        header, claims = (json.loads(b64url_decode(part)) for part in jwt.split(".")[:2])
        emit_json({"assertion": jwt, "header": header, "claims": claims})
    else:
        click.echo(jwt)


@click.command("token")
@authority_options
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=Text(),
    help="Scope, e.g. api://billing/.default (repeatable).",
)
@click.option("--ca-file", metavar="FILE", type=PathText(), help=CA_FILE_HELP)
@click.option(
    "--client-secret-env",
    metavar="VAR",
    type=VariableName(),
    help="Use a client secret, read from the environment variable named VAR (its name, not "
    f"the secret), not a certificate; without it, {ENV_CLIENT_SECRET} is read when no "
    "certificate is given.",
)
@click.option(
    "--client-secret-file",
    metavar="FILE",
    type=PathText(),
    help="Use a client secret from the first line of FILE.",
)
@click.option(
    "--federated-token-file",
    metavar="FILE",
    type=PathText(),
    help=f"Use a federated assertion from FILE [env: {ENV_FEDERATED_TOKEN_FILE}].",
)
@click.option(
    "--timeout",
    type=FiniteFloatRange(min=MIN_TIMEOUT, max=MAX_TIMEOUT),
    default=30.0,
    show_default=True,
    help="Seconds per HTTP attempt: connect, TLS handshake, status line, headers and body.",
)
@click.option(
    "--total-timeout",
    type=FiniteFloatRange(min=MIN_TIMEOUT, max=MAX_TIMEOUT),
    metavar="SECONDS",
    help=TOTAL_TIMEOUT_HELP,
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(OUTPUTS),
    default="token",
    show_default=True,
    help="token (bare), json (response + expires_on, and the token's cnf), header, env "
    "(ACCESS_TOKEN=...), or curl-config (a config for curl --config -: the headers, "
    "certificate and DPoP proof for the --htu request).",
)
@click.option("--json", "as_json", is_flag=True, help="The same as --output json.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Always ask the server; do not read or write the shared token cache.",
)
@click.option(
    "--cache",
    "cache_url",
    metavar="URL",
    type=Text(),
    help="Share tokens through Redis (redis://, rediss:// or unix:// URL) or a Redis Cluster "
    "(redis+cluster://HOST:PORT, rediss+cluster://...) instead of the local file cache "
    f"[env: {ENV_CACHE_URL}].",
)
@click.option(
    "--cache-namespace",
    metavar="NS",
    type=Text(example="billing-api"),
    envvar=ENV_CACHE_NAMESPACE,
    help="Key prefix in the Redis cache (default: certauth); give a service's "
    "RedisTokenCache(namespace=NS) to share its tokens. Needs --cache "
    f"[env: {ENV_CACHE_NAMESPACE}].",
)
@binding_options
@names_options
def token(
    scopes: tuple[str, ...],
    ca_file: str | None,
    client_secret_env: str | None,
    client_secret_file: str | None,
    federated_token_file: str | None,
    timeout: float,
    total_timeout: float | None,
    output: str,
    as_json: bool,
    no_cache: bool,
    cache_url: str | None,
    cache_namespace: str | None,
    **opts: Any,
) -> None:
    """Get an access token with a certificate (client credentials grant).

    Transient failures (connect, timeout, 429, 5xx) are retried, up to 4 attempts, each
    retry announced on stderr; --timeout bounds each attempt, --total-timeout the whole call.

    \b
    Example:
      export AZURE_CLIENT_CERTIFICATE_PATH=/mnt/cert.pem
      curl -H "$(certauth token --tenant $TENANT --client-id $APP_ID \\
                 --scope api://billing/.default --output header)" https://billing.example/api
    """
    output = _output_format(output, as_json)
    binding = Binding(output, opts)
    with usage_errors():
        require_settings(
            scopes,
            opts,
            secret_sources=(client_secret_env, client_secret_file, _env(ENV_CLIENT_SECRET)),
            federated_sources=(federated_token_file, _env(ENV_FEDERATED_TOKEN_FILE)),
        )
    target = _Target(**opts)
    cache = token_cache(no_cache, cache_url, cache_namespace)
    result = stored_token(
        target,
        scopes,
        cache,
        bound=binding.mtls or binding.dpop,
        secret_env=client_secret_env,
        secret_file=client_secret_file,
    )
    if result is None:
        credential = _make_credential(
            target,
            ca_file=ca_file,
            timeout=timeout,
            total_timeout=total_timeout,
            secret_env=client_secret_env,
            secret_file=client_secret_file,
            federated_file=federated_token_file,
            cache=cache,
            binding=binding,
        )
        with credential, show_retries():
            result = credential.request_token(*scopes)
    if output == "json":
        emit_json(with_cnf(result.as_response(now=time.time())))
    elif output == "curl-config":
        click.echo(
            curl_config(
                binding,
                token_type=result.token_type,
                access_token=result.access_token,
                cert_path=target.cert_path,
                key_path=target.key_path,
                password=read_password(target.password_env, target.password_file)
                if binding.mtls
                else None,
                ca_file=ca_file,
            ),
            nl=False,
        )
    else:
        click.echo(token_line(output, result.token_type, result.access_token))
    verbose = verbose_line(result.expires_on)
    if verbose is not None:
        click.echo(verbose, err=True)


def _output_format(output: str, as_json: bool) -> str:
    """``--json`` is ``--output json`` (the flag every other command takes); with another
    ``--output`` it is a contradiction."""
    if not as_json:
        return output
    source = click.get_current_context().get_parameter_source("output")
    if output != "json" and source is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError(f"--json and --output {output} are exclusive: choose one")
    return "json"


def _make_credential(
    target: _Target,
    *,
    ca_file: str | None,
    timeout: float,
    total_timeout: float | None,
    secret_env: str | None,
    secret_file: str | None,
    federated_file: str | None,
    cache: Any,
    binding: Binding,
) -> Any:
    from certauth.credential import (
        CertificateCredential,
        ClientSecretCredential,
        WorkloadIdentityCredential,
    )
    from certauth.protocol import RetryPolicy

    if binding.mtls:
        # Before anything is read or written (a secret's variable, a new --dpop-key file):
        # the options' conflict is the error to report.
        if target.in_token or not target.cert_path or secret_env or secret_file or federated_file:
            raise click.UsageError(
                "--mtls authenticates with the certificate file in --cert (or "
                f"{ENV_CERT_PATH}); it cannot go with a client secret, a federated token or a "
                "pkcs11: key"
            )
        if not (target.token_endpoint or target.issuer):
            raise click.UsageError(
                "--mtls needs a server that takes mutual-TLS client authentication, named by "
                "--issuer (its discovery document's mtls_endpoint_aliases are used) or "
                "--token-endpoint; Entra ID's token endpoint authenticates clients by assertion"
            )
    where = target.credential_kwargs()
    common: dict[str, Any] = dict(
        where,
        authority=where.pop("host"),
        verify=ca_file,
        timeout=timeout,
        retry=RetryPolicy(total_timeout=total_timeout),
        cache=cache,
    )
    tenant, client_id = target.tenant, target.client_id or ""
    secret = _read_secret(secret_env, secret_file)
    common.update(binding.credential_kwargs())
    if target.in_token and not (secret_env or secret_file):
        return CertificateCredential(
            tenant,
            client_id,
            signer=target.signer(),
            alg=target.alg,
            send_certificate_chain=target.send_chain,
            **common,
        )
    if target.cert_path and not (secret_env or secret_file):
        return CertificateCredential(
            tenant,
            client_id,
            target.cert_path,
            key_path=target.key_path,
            password=read_password(target.password_env, target.password_file),
            alg=target.alg,
            send_certificate_chain=target.send_chain,
            mtls=binding.mtls,
            **common,
        )
    if secret is None and not federated_file:
        secret = _env(ENV_CLIENT_SECRET)
    if secret is not None:
        return ClientSecretCredential(tenant, client_id, secret, **common)
    federated = federated_file or _env(ENV_FEDERATED_TOKEN_FILE)
    if federated:
        return WorkloadIdentityCredential(tenant, client_id, federated, **common)
    raise click.UsageError(
        f"missing --cert (or {ENV_CERT_PATH}); or a client secret (--client-secret-env) or a "
        f"federated token file ({ENV_FEDERATED_TOKEN_FILE})"
    )


def _read_secret(secret_env: str | None, secret_file: str | None) -> str | None:
    """A client secret from a named variable or file; a named source must exist and be set."""
    from certauth._files import read_first_line
    from certauth.errors import LocalInputError

    if secret_env and secret_file:
        raise click.UsageError("give either --client-secret-env or --client-secret-file")
    if secret_env:
        value = os.environ.get(secret_env)
        if not value:
            raise LocalInputError(
                f"--client-secret-env {secret_env}: the variable is not set or empty; export it"
            )
        return value
    if secret_file:
        return read_first_line(secret_file, what="client secret")
    return None
