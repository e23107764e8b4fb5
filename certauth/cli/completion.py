"""``certauth completion bash|zsh|fish``: print the shell completion script.

The scripts are click's (``click.shell_completion``): they call ``certauth`` back with
``_CERTAUTH_COMPLETE`` set, and click answers with the commands, options and choices that fit.
"""

from __future__ import annotations

import click

from certauth.cli._values import COMPLETE_VAR

SHELLS = ("bash", "zsh", "fish")


@click.command("completion", short_help="Print the shell completion script (bash, zsh, fish).")
@click.argument("shell", metavar="SHELL", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish) on stdout.

    \b
    Install it once (then open a new shell):
      bash: certauth completion bash > ~/.local/share/bash-completion/completions/certauth
      zsh:  certauth completion zsh > "${fpath[1]}/_certauth"
      fish: certauth completion fish > ~/.config/fish/completions/certauth.fish
    or load it from the shell's start-up file: eval "$(certauth completion bash)"

    \b
    Example:
      certauth completion bash > ~/.local/share/bash-completion/completions/certauth
    """
    from click.shell_completion import get_completion_class

    from certauth.cli._group import cli

    completion_class = get_completion_class(shell)
    if completion_class is None:  # pragma: no cover - the choice above lists only click's shells
        raise click.UsageError(f"no completion for {shell}")
    script = completion_class(cli, {}, "certauth", COMPLETE_VAR).source()
    click.echo(script.rstrip("\n"))
