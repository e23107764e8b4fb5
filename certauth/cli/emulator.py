"""``certauth emulator``: run a local Entra ID tenant until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from certauth.cli._common import ParamType, PathText, Text, names_options
from certauth.errors import ConfigurationError

HELP_EPILOG = """\b
Examples:
  certauth emulator --port 8400 --register 11111111-2222-3333-4444-555555555555=billing.crt
  certauth emulator --tls --port 0 --ready-file /tmp/emulator.json --config tenant.toml &
  BILLING_SECRET=s3cret certauth emulator --secret billing-app=BILLING_SECRET
  certauth emulator --tls --client-ca ca.pem --register-tls-client "billing=CN=billing,O=Contoso"

\b
At start it prints one "name: value" line each for tenant, issuer, token_endpoint, jwks_uri,
authority_host, graph_url (and ca_file and mtls_token_endpoint with --tls); --ready-file gets
the same as JSON once it accepts connections. --print-env prints instead, and --env-file FILE
writes, the shell export lines a client needs (AZURE_TENANT_ID, AZURE_AUTHORITY_HOST,
AZURE_CLIENT_ID and AZURE_CLIENT_CERTIFICATE_PATH for one --register, SSL_CERT_FILE with --tls):
  certauth emulator --port 0 --register APP=certs/app.pem --env-file emulator.env &
  until [ -s emulator.env ]; do sleep 0.2; done; . ./emulator.env; certauth token --scope api://x
Wrong requests get the AADSTS code Entra ID would send, and a log line on stderr.
"""


#: Longest access token lifetime: Entra ID's configurable token lifetimes allow at most one day
#: for access tokens (Microsoft Learn, "Configurable token lifetimes in the Microsoft identity
#: platform", AccessTokenLifetime: 10 minutes to 1 day).
MAX_TOKEN_LIFETIME = 86400

#: A DNS host name: dot-separated labels of letters, digits and hyphens, 1-63 characters each,
#: not starting or ending with a hyphen (RFC 1123 section 2.1, RFC 1035 section 2.3.4).
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class BindAddress(ParamType):
    """``--host``: an IP address or a host name to listen on, checked before anything binds.

    Checked here because a malformed name would otherwise go to the system resolver (a DNS
    query) before ``bind`` reports it, and an empty one would listen on every interface.
    """

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The address unchanged, or a usage error naming the option."""
        if not isinstance(value, str):
            return value
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        name = value[:-1] if value.endswith(".") else value
        if 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split(".")):
            return value
        shown = value if len(value) <= 80 else f"{value[:60]}... ({len(value)} characters)"
        self.fail(
            f"{shown!r} is not an IP address or host name; give e.g. 127.0.0.1, ::1, 0.0.0.0 "
            "or localhost",
            param,
            ctx,
        )


def _pairs(values: tuple[str, ...], option: str, right: str) -> list[tuple[str, str]]:
    result = []
    for value in values:
        left, sep, rest = value.partition("=")
        if not sep or not left.strip() or not rest.strip():
            raise click.BadParameter(f"{value!r} is not CLIENT_ID={right}", param_hint=option)
        result.append((left.strip(), rest.strip()))
    return result


@click.command(
    "emulator",
    epilog=HELP_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--host",
    type=BindAddress(),
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8400,
    show_default=True,
    help="Port to listen on (0: a free one; read it from the output or --ready-file).",
)
@click.option(
    "--register",
    "registrations",
    multiple=True,
    metavar="CLIENT_ID=CERT_FILE",
    help="Register an app with a certificate (PEM/DER/PFX; the public part is used). Repeatable.",
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="CLIENT_ID=ENVVAR",
    help="Give an app the client secret held in environment variable ENVVAR. Repeatable.",
)
@click.option(
    "--resource",
    "resources",
    multiple=True,
    metavar="URI[=ROLE,...]",
    type=Text(),
    help=(
        "Declare a resource and the roles every app gets on it. Repeatable. Once any is "
        "declared, other resources get AADSTS500011."
    ),
)
@click.option(
    "--tenant",
    "tenant_id",
    metavar="ID",
    type=Text(),
    help="Tenant GUID (or a domain name, which gets a stable GUID). Default: "
    "c3a7c0de-0000-4000-8000-000000000001.",
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    type=PathText(),
    help="TOML (Python 3.11+) or JSON file: tenants, apps, certificates, secrets, roles.",
)
@click.option(
    "--strict",
    is_flag=True,
    default=None,
    help="RFC 7523 on top of Entra's rules: single-use jti, lifetime cap, alg/thumbprint pairing.",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve https with a generated CA (printed as ca_file), and a second https listener "
    "that asks for client certificates (RFC 8705 mutual TLS; printed as mtls_token_endpoint).",
)
@click.option(
    "--tls-dir",
    metavar="DIR",
    type=PathText(),
    help="Write the CA and server certificate here (default: a temporary directory).",
)
@click.option(
    "--client-ca",
    "client_cas",
    multiple=True,
    metavar="FILE",
    type=PathText(),
    help="With --tls: trust client certificates this CA (PEM) issued on the mutual-TLS "
    "listener, for apps given with --register-tls-client. Repeatable.",
)
@click.option(
    "--register-tls-client",
    "tls_clients",
    multiple=True,
    metavar="CLIENT_ID=SUBJECT_DN",
    type=Text(),
    help="Let an app authenticate on the mutual-TLS listener with a certificate a --client-ca "
    "issued with this subject (RFC 4514, e.g. 'CN=billing,O=Contoso'; tls_client_auth). "
    "Repeatable.",
)
@click.option(
    "--dpop-nonce",
    is_flag=True,
    help="Require the server's nonce in DPoP proofs (RFC 9449 section 8): a proof without it "
    "gets use_dpop_nonce, and every token response carries a DPoP-Nonce header.",
)
@click.option(
    "--token-lifetime",
    type=click.IntRange(min=1, max=MAX_TOKEN_LIFETIME),
    metavar="SECONDS",
    help="Access token lifetime (default 3599, as Entra ID; at most 86400).",
)
@click.option(
    "--propagation-delay",
    type=click.FloatRange(min=0, max=86400),
    metavar="SECONDS",
    help="Seconds before a key added or removed through the emulator's Graph (addKey, "
    "removeKey) is accepted, or refused, by the token endpoint (default 0).",
)
@click.option(
    "--ready-file",
    metavar="FILE",
    type=PathText(),
    help="Write the start-up values as JSON to FILE once connections are accepted.",
)
@click.option(
    "--env-file",
    metavar="FILE",
    type=PathText(),
    help="Write the client's environment as shell export lines to FILE once connections are "
    "accepted (removed at stop).",
)
@click.option(
    "--print-env",
    is_flag=True,
    help="Print the client's environment as shell export lines instead of name: value lines.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the start-up values as JSON.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning"]),
    default="info",
    show_default=True,
    help="Log detail on stderr (debug adds an access log).",
)
@names_options
def emulator(
    host: str,
    port: int,
    registrations: tuple[str, ...],
    secrets: tuple[str, ...],
    resources: tuple[str, ...],
    tenant_id: str | None,
    config_file: str | None,
    strict: bool | None,
    tls: bool,
    tls_dir: str | None,
    client_cas: tuple[str, ...],
    tls_clients: tuple[str, ...],
    dpop_nonce: bool,
    token_lifetime: int | None,
    propagation_delay: float | None,
    ready_file: str | None,
    env_file: str | None,
    print_env: bool,
    as_json: bool,
    log_level: str,
) -> int:
    """Run a local Entra ID tenant that checks client assertions the way Entra ID does.

    It serves OIDC discovery, JWKS, instance discovery and the v2, v1 and B2C token endpoints,
    issues RS256 access tokens (bound to the key of a DPoP proof sent with the request), and
    serves Graph's application keyCredentials, addKey and removeKey under graph_url. Stops
    cleanly on Ctrl-C or SIGTERM (exit 0).
    """
    from certauth.emulator import DEFAULT_TENANT_ID, Emulator

    if print_env and as_json:
        raise click.UsageError("give either --print-env or --json, not both")
    registered = _pairs(registrations, "--register", "CERT_FILE")
    if client_cas and not tls:
        raise click.UsageError("--client-ca is for the mutual-TLS listener: add --tls")
    tls_subjects = _subjects(tls_clients)
    secret_pairs = _pairs(secrets, "--secret", "ENVVAR")
    secret_values = []
    for client_id, variable in secret_pairs:
        value = os.environ.get(variable)
        if not value:
            raise ConfigurationError(
                f"--secret {client_id}={variable}: environment variable {variable} is not set "
                "or empty; export it first (secrets never come from the command line)"
            )
        secret_values.append((client_id, value))
    resource_roles = []
    for spec in resources:
        uri, _, roles = spec.partition("=")
        if not uri.strip():
            raise click.BadParameter(f"{spec!r} is not URI[=ROLE,...]", param_hint="--resource")
        resource_roles.append((uri.strip(), [r.strip() for r in roles.split(",") if r.strip()]))

    tenant = Emulator(
        host=host,
        port=port,
        tenant_id=tenant_id or DEFAULT_TENANT_ID,
        strict=strict,
        tls=tls,
        tls_dir=tls_dir,
        token_lifetime=token_lifetime,
        config=config_file,
        propagation_delay=propagation_delay,
        dpop_nonce=dpop_nonce,
        client_ca=client_cas,
    )
    for client_id, path in registered:
        tenant.register(client_id, path)
    for client_id, subject in tls_subjects:
        tenant.register(client_id, tls_client_auth_subject_dn=subject)
    for client_id, value in secret_values:
        tenant.register_secret(client_id, value)
    for uri, names in resource_roles:
        tenant.add_resource(uri, roles=names)

    ready = Path(ready_file) if ready_file else None
    if ready is not None:
        _clear_ready_file(ready)
    env_path = Path(env_file) if env_file else None
    if env_path is not None:
        _clear_ready_file(env_path, option="--env-file")
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    restore_logging = _configure_logging(log_level)
    try:
        tenant.start()
        info = tenant.info()
        exports = client_environment(info, registered) if print_env or env_path else ""
        if as_json:
            sys.stdout.write(json.dumps(info, indent=2) + "\n")
        elif print_env:
            sys.stdout.write(exports)
        else:
            for name, value in info.items():
                sys.stdout.write(f"{name}: {value}\n")
        sys.stdout.flush()
        if env_path is not None:
            _write_ready_file(env_path, exports, option="--env-file")
        if ready is not None:
            _write_ready_file(ready, json.dumps(info, indent=2) + "\n")
        while not stop.wait(0.5):
            pass
        logging.getLogger("certauth.emulator").info("stopping")
    finally:
        tenant.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # Stale files would point a waiting script at a server that is gone.
        for written in (ready, env_path):
            if written is not None:
                with contextlib.suppress(OSError):
                    written.unlink()
        restore_logging()
    return 0


def _subjects(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """``--register-tls-client`` pairs, each subject DN checked now (a usage error naming the
    option, before anything starts)."""
    from certauth.emulator.registry import normalize_subject_dn
    from certauth.errors import InvalidArgumentError

    pairs = _pairs(values, "--register-tls-client", "SUBJECT_DN")
    for _, subject in pairs:
        try:
            normalize_subject_dn(subject)
        except InvalidArgumentError as exc:
            raise click.BadParameter(str(exc), param_hint="--register-tls-client") from None
    return pairs


def _configure_logging(level: str) -> Callable[[], None]:
    """Log the emulator's lines to stderr; returns how to undo it (the CLI may run in-process)."""
    logger = logging.getLogger("certauth.emulator")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("certauth emulator: %(asctime)s %(levelname)s %(message)s")
    )
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    return restore


def client_environment(info: dict[str, str], registered: list[tuple[str, str]]) -> str:
    """The shell ``export`` lines a client of this emulator needs (the azure-identity names
    ``certauth token`` and :class:`certauth.CertificateCredential` read), values quoted for
    POSIX shells. The client id and certificate path are known only when one app was
    registered with ``--register``; a certificate file without its key gets a comment instead
    (the client signs with the key)."""
    lines = [
        f"export AZURE_TENANT_ID={shlex.quote(info['tenant'])}",
        f"export AZURE_AUTHORITY_HOST={shlex.quote(info['authority_host'])}",
    ]
    if len(registered) == 1:
        client_id, cert_file = registered[0]
        lines.append(f"export AZURE_CLIENT_ID={shlex.quote(client_id)}")
        path = os.path.abspath(cert_file)
        if _holds_private_key(path):
            lines.append(f"export AZURE_CLIENT_CERTIFICATE_PATH={shlex.quote(path)}")
        else:
            lines.append(
                f"# {cert_file} holds no private key: point AZURE_CLIENT_CERTIFICATE_PATH at "
                "the key + certificate file (certauth cert bundle CERT KEY --out FILE)"
            )
    elif registered:
        names = ", ".join(client_id for client_id, _ in registered)
        lines.append(f"# several apps registered: set AZURE_CLIENT_ID to one of {names}")
    if "ca_file" in info:
        # The client trusts the emulator's CA through the system store's variable (as Python's
        # ssl, OpenSSL and curl read it): it then trusts only that CA in this shell.
        lines.append(f"export SSL_CERT_FILE={shlex.quote(info['ca_file'])}")
    return "".join(f"{line}\n" for line in lines)


def _holds_private_key(path: str) -> bool:
    """Whether the registered file also holds a private key (encrypted counts)."""
    from certauth.certificates import load_certificate
    from certauth.errors import CertauthError, PasswordError

    try:
        return load_certificate(path).has_private_key
    except PasswordError:
        return True
    except CertauthError:
        return False


def _clear_ready_file(path: Path, option: str = "--ready-file") -> None:
    """Check ``--ready-file`` (or ``--env-file``) before the server starts, and remove a stale
    one (it would tell a waiting script we are up already): a refusal now is one error line,
    not one after the start-up log."""
    try:
        if path.is_dir():
            raise ConfigurationError(
                f"{option} {path}: is a directory; name a file, e.g. "
                f"{path}/{'emulator.env' if option == '--env-file' else 'emulator.json'}"
            )
        if not path.parent.is_dir():
            raise ConfigurationError(
                f"{option} {path}: {path.parent} is not a directory; create it or name a "
                "file in another one"
            )
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"{option} {path}: cannot use it ({exc.strerror or exc}); name another file"
        ) from None


def _write_ready_file(path: Path, text: str, option: str = "--ready-file") -> None:
    # Write then rename, so a script polling for the file never reads half of it. The temporary
    # file gets a random name (mkstemp, O_EXCL): the ready file often lives in a shared /tmp,
    # where a predictable name could be a planted symlink to a file of the user's.
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise ConfigurationError(
            f"{option} {path}: cannot write it ({exc.strerror or exc}); check the directory"
        ) from None
