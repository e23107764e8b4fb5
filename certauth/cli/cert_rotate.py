"""``certauth cert rotate``: roll an app registration's certificate through Microsoft Graph, with
no service noticing (the steps and their rules: :mod:`certauth.rotation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from certauth.cli._common import (
    CA_FILE_HELP,
    Duration,
    PathText,
    Text,
    Url,
    emit_json,
    names_options,
    password_options,
    read_password,
    show_retries,
)

# The azure-identity variables, read as `certauth token` reads them (empty counts as unset).
from certauth.cli._common import env_value as _env
from certauth.cli._values import (
    ENV_AUTHORITY_HOST,
    ENV_CERT_PATH,
    ENV_CLIENT_ID,
    ENV_TENANT,
)


@click.command("rotate", short_help="Roll the app's certificate via Graph addKey/removeKey.")
@click.option("--tenant", type=Text(), help=f"Tenant ID or domain [env: {ENV_TENANT}].")
@click.option("--client-id", type=Text(), help=f"Application (client) ID [env: {ENV_CLIENT_ID}].")
@click.option(
    "--cert",
    "cert_path",
    type=PathText(),
    help=f"The certificate the services read now: PEM bundle, PFX, or with --key the "
    f"certificate of a pair; a symlink is switched as a link [env: {ENV_CERT_PATH}].",
)
@click.option("--key", "key_path", type=PathText(), help="The pair's private key file.")
@click.option(
    "--out",
    "out_dir",
    metavar="DIR",
    type=PathText(),
    help="Folder for the new certificate's files and the rotation state (default: the "
    "--cert file's folder).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="Validity of the new certificate.",
)
@click.option(
    "--grace",
    type=Duration(maximum=30 * 86400),
    default="1h",
    show_default=True,
    help="Time between the switch and removing the old key, for services to pick up the new "
    "file (90s, 10m, 1h, 2d).",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Do not sleep through --grace: stop after the switch; a rerun after the grace "
    "removes the old key.",
)
@click.option(
    "--propagation-timeout",
    type=Duration(maximum=86400, minimum=1),
    default="10m",
    show_default=True,
    help="How long to wait for the token endpoint to accept the new certificate.",
)
@click.option(
    "--app-object-id",
    type=Text(),
    help="The application's object id (default: looked up through Graph, which needs "
    "Application.Read.All or Application.ReadWrite.OwnedBy).",
)
@click.option(
    "--authority-host",
    type=Url(bare_host=True),
    help=f"Cloud host, e.g. login.microsoftonline.us [env: {ENV_AUTHORITY_HOST}].",
)
@click.option(
    "--graph-url",
    type=Url(),
    help="Where Graph requests go (default: the cloud's Microsoft Graph).",
)
@click.option("--ca-file", metavar="FILE", type=PathText(), help=CA_FILE_HELP)
@password_options
@click.option(
    "--delete-old",
    is_flag=True,
    help="Delete the old certificate's files at the end (default: keep them, renamed).",
)
@click.option(
    "--switch-command",
    metavar="COMMAND",
    type=Text(),
    help="A shell command run right after the switch, before it is recorded (e.g. kubectl "
    "apply of the new secret); if it fails, the rotation stops before removing anything.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change and send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object summing it up.")
@names_options
def rotate(**opts: Any) -> None:
    """Roll the app registration's certificate with no service noticing.

    \b
    1. create the next certificate (same subject and key type; new files in --out);
    2. add it to the app with Microsoft Graph addKey (a Graph token and a proof of
       possession signed by the current certificate; no Graph permission needed);
    3. wait until the token endpoint accepts it;
    4. switch --cert (and --key) to it atomically, keeping the old files renamed;
    5. wait --grace for the services to pick it up;
    6. remove the old key with Graph removeKey (proof signed by the new certificate).

    Each step is one line on stderr. The step reached is recorded in --out, so a rerun after
    a crash or a network failure carries on; a lock keeps two rotations apart.

    \b
    Example:
      certauth cert rotate --tenant contoso.onmicrosoft.com --client-id APP_ID \\
          --cert /etc/billing/billing-api.pem --grace 1h
    """
    from certauth.rotation import rotate_certificate

    tenant = opts["tenant"] or _env(ENV_TENANT)
    client_id = opts["client_id"] or _env(ENV_CLIENT_ID)
    cert_path = opts["cert_path"] or _env(ENV_CERT_PATH)
    missing = [
        name
        for name, value in (
            (f"--tenant (or {ENV_TENANT})", tenant),
            (f"--client-id (or {ENV_CLIENT_ID})", client_id),
            (f"--cert (or {ENV_CERT_PATH})", cert_path),
        )
        if not value
    ]
    if missing:
        raise click.UsageError(
            f"missing {missing[0]}" if len(missing) == 1 else f"missing {'; '.join(missing)}"
        )
    assert tenant
    assert client_id
    assert cert_path
    out_dir = opts["out_dir"] or str(Path(cert_path).parent)

    def log(line: str) -> None:
        click.echo(f"certauth: rotate: {line}", err=True)

    switch_command = opts["switch_command"]

    def on_switch() -> None:
        import subprocess

        from certauth.rotation import RotationError

        # The operator's own command line, as cron or a CronJob would run it.
        done = subprocess.run(switch_command, shell=True, check=False)  # noqa: S602
        if done.returncode != 0:
            raise RotationError(
                f"--switch-command exited {done.returncode}; the served files are switched but "
                "the old key stays registered: fix the command and rerun"
            )

    with show_retries():
        result = rotate_certificate(
            cert_path,
            tenant_id=tenant,
            client_id=client_id,
            out_dir=out_dir,
            key_path=opts["key_path"],
            password=read_password(opts["password_env"], opts["password_file"]),
            days=opts["days"],
            grace=opts["grace"],
            wait=not opts["no_wait"],
            app_object_id=opts["app_object_id"],
            authority=opts["authority_host"] or _env(ENV_AUTHORITY_HOST),
            graph_url=opts["graph_url"],
            verify=opts["ca_file"],
            propagation_timeout=opts["propagation_timeout"],
            keep_old=not opts["delete_old"],
            on_switch=on_switch if switch_command else None,
            dry_run=opts["dry_run"],
            log=log,
        )
    if opts["as_json"]:
        emit_json(result.to_dict())
        return
    if result.status == "planned":
        click.echo("dry run: nothing was changed or sent; the plan:")
        for line in result.steps:
            click.echo(f"  {line}")
        return
    click.echo(f"{'status:':<20}{result.status}")
    click.echo(f"{'old thumbprint:':<20}{result.old_thumbprint}")
    click.echo(f"{'new thumbprint:':<20}{result.new_thumbprint}")
    click.echo(f"{'new files:':<20}{', '.join(result.new_files)}")
    if result.status == "waiting" and result.remove_after:
        from certauth._rotation_run import iso

        click.echo(f"{'old key removed:':<20}no: rerun after {iso(result.remove_after)}")
    else:
        click.echo(f"{'old key removed:':<20}{'yes' if result.old_key_removed else 'no'}")
