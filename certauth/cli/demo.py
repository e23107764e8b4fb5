"""``certauth demo``: the main job end to end on this machine, against an in-process emulator.

Certificate -> registration -> assertion -> token -> verification, then one rejection with its
AADSTS code and certauth's hint. Exit 0 only when every step did what it should.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

CLIENT_ID = "8c3b5f5e-0d4b-4c1e-9a34-5f1d2e3c4b5a"
RESOURCE = "api://certauth-demo"


def _step(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


@contextmanager
def _timed(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    click.echo(f"   ({label}: {(time.perf_counter() - started) * 1000:.1f} ms)")


def _show(mapping: dict[str, Any]) -> None:
    for line in json.dumps(mapping, indent=2, sort_keys=True).splitlines():
        click.echo(f"   {line}")


def _segment(jwt: str, index: int) -> dict[str, Any]:
    from certauth._jose import b64url_decode

    data: dict[str, Any] = json.loads(b64url_decode(jwt.split(".")[index]))
    return data


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise click.ClickException(f"demo step failed: {message}")


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the temporary directory with the certificate.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object summing up the steps instead of the walk-through.",
)
def demo(keep: bool, as_json: bool) -> None:
    """Run the main job end to end against a local tenant emulator (no network needed).

    \b
    Example:
      certauth demo
      certauth demo --json
    """
    from certauth.cli._common import emit_json

    summary: dict[str, Any] = {}
    # --json: the same steps, their walk-through text discarded; only the summary is printed.
    quiet = contextlib.redirect_stdout(io.StringIO()) if as_json else contextlib.nullcontext()
    with quiet:
        _run(keep, summary)
    if as_json:
        emit_json(summary)


def _run(keep: bool, summary: dict[str, Any]) -> None:
    """The demo's steps; ``summary`` receives what ``--json`` prints."""
    from certauth._files import OutputFile, write_files_atomically
    from certauth.assertion import build_client_assertion
    from certauth.certificates import generate_certificate
    from certauth.credential import CertificateCredential
    from certauth.emulator import Emulator
    from certauth.errors import TokenRequestError
    from certauth.verify import verify_access_token

    # Step 6 shows the emulator's rejection itself; its log line would only repeat it.
    logging.getLogger("certauth.emulator").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="certauth-demo-"))
    _step("1. Create a certificate for the app registration (certauth cert create)")
    with _timed("RSA-2048 key + self-signed certificate"):
        certificate = generate_certificate("CN=certauth-demo")
    crt, key = workdir / "certauth-demo.crt", workdir / "certauth-demo.key"
    write_files_atomically(
        [
            OutputFile(crt, certificate.pem),
            OutputFile(key, certificate.private_key_pem() + certificate.pem, secret=True),
        ]
    )
    click.echo(f"   upload:      {crt}")
    click.echo(f"   secret:      {key} (mode {key.stat().st_mode & 0o777:o})")
    click.echo(f"   thumbprint:  {certificate.thumbprint_sha1}  (SHA-1, as the portal shows)")
    click.echo(f"   x5t#S256:    {certificate.x5t_s256}")
    summary["certificate"] = {
        "subject": certificate.subject,
        "thumbprint_sha1": certificate.thumbprint_sha1,
        "x5t#S256": certificate.x5t_s256,
    }

    with Emulator(strict=True) as tenant:
        _step("2. Register it with a local tenant (certauth emulator, strict mode)")
        tenant.register(CLIENT_ID, crt, roles=["Demo.Read"])
        click.echo(f"   tenant:          {tenant.tenant_id}")
        click.echo(f"   token endpoint:  {tenant.token_endpoint}")
        click.echo(f"   client id:       {CLIENT_ID} (role Demo.Read)")
        summary.update(
            tenant=tenant.tenant_id, token_endpoint=tenant.token_endpoint, client_id=CLIENT_ID
        )

        _step("3. Build the client assertion (certauth assertion)")
        with _timed("sign"):
            assertion = build_client_assertion(
                certificate, client_id=CLIENT_ID, audience=tenant.token_endpoint, alg="PS256"
            )
        click.echo("   header:")
        _show(_segment(assertion, 0))
        click.echo("   claims:")
        _show(_segment(assertion, 1))
        summary["assertion"] = {"header": _segment(assertion, 0)}

        _step("4. Exchange it for an access token (certauth token)")
        credential = CertificateCredential(
            tenant.tenant_id, CLIENT_ID, str(key), authority=tenant.authority_host
        )
        with credential, _timed("first token: sign + POST"):
            token = credential.request_token(f"{RESOURCE}/.default")
        click.echo(f"   token_type: {token.token_type}, expires_in: {token.expires_in} s")
        with _timed("cached get_token"):
            again = credential.get_token(f"{RESOURCE}/.default")
        _check(again.token == token.access_token, "the cached token differs")
        summary["token"] = {
            "token_type": token.token_type,
            "expires_in": token.expires_in,
            "cached": True,
        }

        _step("5. Verify the access token as a backend would (certauth verify)")
        with _timed("discovery + JWKS + verify"):
            claims = verify_access_token(
                token.access_token,
                issuer=tenant.issuer,
                audience=RESOURCE,
                required_roles=("Demo.Read",),
            )
        shown = {k: claims[k] for k in sorted(claims) if k in _SHOWN_CLAIMS}
        _show(shown)
        summary["verified_claims"] = shown

        _step("6. A rejection: an assertion signed by a certificate nobody registered")
        stranger = generate_certificate("CN=not-registered")
        rogue = CertificateCredential(
            tenant.tenant_id, CLIENT_ID, certificate=stranger, authority=tenant.authority_host
        )
        try:
            with rogue:
                rogue.get_token(f"{RESOURCE}/.default")
        except TokenRequestError as exc:
            click.echo(f"   {exc.aadsts} ({exc.error}), trace id {exc.trace_id}")
            from certauth.cli._common import cli_wording

            click.echo(f"   hint: {cli_wording(exc.hint or '')}")
            _check(exc.aadsts == "AADSTS700027", f"expected AADSTS700027, got {exc.aadsts}")
            summary["rejection"] = {
                "aadsts": exc.aadsts,
                "error": exc.error,
                "trace_id": exc.trace_id,
            }
        else:
            _check(False, "the unregistered certificate was accepted")

    if keep:
        click.echo(f"\nFiles kept in {workdir}")
        summary["files"] = str(workdir)
    else:
        _remove(workdir)
    summary["ok"] = True
    click.secho("\nAll steps worked.", bold=True)


_SHOWN_CLAIMS = {"aud", "iss", "appid", "azpacr", "roles", "tid", "ver", "idtyp", "exp"}


def _remove(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
