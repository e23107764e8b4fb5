"""The README is kept true by running it: every command it shows is a test.

The rules (for everyone who adds to README.md)
----------------------------------------------
* A fenced block whose info string is ``console`` is a transcript. Each line starting with
  ``$ `` is a command; the lines after it, up to the next ``$ `` line, are its expected output.
  The output is for readers and is *not* compared (it holds thumbprints and dates), so keep it
  realistic but do not worry about exact values.
* A command line ending with ``\\`` continues on the next line.
* Every command must exit 0, unless the line ends with a comment ``# exit N`` (for example
  ``$ certauth cert check old.crt   # exit 8``).
* All commands of all console blocks run in README order, each in its own
  ``bash -o pipefail -c``, and all in ONE temporary working directory: a later command can use
  the files an earlier one made, and shell variables do *not* carry over from line to line
  (write ``VAR=value command`` on one line, or use a file).
* A block opened with ```` ```console skip-test ```` is not run. Use it only for what truly
  cannot run here (a real tenant, Kubernetes). Blocks marked ``sh``, ``bash``, ``yaml`` etc. are
  never run either: that is where ``az ...`` lines go.
* Environment: the test process's environment without any ``AZURE_*`` or ``CERTAUTH_*``
  variable, then ``PATH`` with this virtualenv's ``bin`` first (so ``certauth`` is the code under
  test), ``HOME``, ``XDG_CACHE_HOME`` and ``CERTAUTH_CACHE_DIR`` inside the temporary directory,
  the azure-identity variables of a CI job (``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``,
  ``AZURE_AUTHORITY_HOST``, ``AZURE_CLIENT_CERTIFICATE_PATH``) pointing at an emulator and a
  certificate the fixture made, then everything in :data:`README_ENV`.

Extending it
------------
* Static variables a README command needs: add them to :data:`README_ENV`.
* Anything that must run around the README (for example an emulator started in the
  background whose URL the commands read from ``$CERTAUTH_EMULATOR``): extend
  :func:`readme_env`. It is the single hook: make it a generator that starts the service,
  puts the variables into the dict, yields it, and stops the service after the ``yield``.
* Each command is its own test, named after its README line and text, e.g.
  ``test_readme_command[L120 certauth cert show certs/billing-api.crt]``. Running one command
  alone (``-k``) first runs the commands before it, since they may create its inputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: Extra environment for every README command (see "Extending it" above).
README_ENV: dict[str, str] = {}

#: Seconds one README command may take.
COMMAND_TIMEOUT = 120

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_EXPECTED_EXIT = re.compile(r"#\s*exit\s+(?P<code>\d+)\s*$")


@dataclass(frozen=True)
class Command:
    """One ``$ `` line of a console block."""

    #: 1-based line number in README.md (of the ``$`` line).
    line: int
    #: The command as bash runs it (continuation lines joined).
    text: str
    #: The exit status the README promises (0 unless ``# exit N``).
    expected_exit: int

    @property
    def test_id(self) -> str:
        """A readable pytest id: README line and the start of the command."""
        text = re.sub(r"\s+", " ", self.text)
        return f"L{self.line} {text[:70]}"


def parse_console_commands(markdown: str) -> list[Command]:
    """Every command of every runnable ``console`` block, in order (see the module docstring)."""
    commands: list[Command] = []
    fence: str | None = None
    runnable = False
    pending: tuple[int, str] | None = None  # a command whose line ended with a backslash
    for number, raw in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(raw)
        if fence is None:
            if match:
                fence = match["fence"]
                info = match["info"].split()
                runnable = bool(info) and info[0] == "console" and "skip-test" not in info[1:]
            continue
        if match and match["fence"].startswith(fence) and not match["info"]:
            fence = None
            pending = None
            continue
        if not runnable:
            continue
        line = raw.strip()
        if pending is not None:
            start, text = pending
            text = text[:-1].rstrip() + " " + line
            pending = (start, text) if text.endswith("\\") else None
            if pending is None:
                commands.append(_command(start, text))
            continue
        if line.startswith("$ "):
            text = line[2:].strip()
            if text.endswith("\\"):
                pending = (number, text)
            else:
                commands.append(_command(number, text))
    return commands


def _command(line: int, text: str) -> Command:
    match = _EXPECTED_EXIT.search(text)
    return Command(line, text, int(match["code"]) if match else 0)


COMMANDS = parse_console_commands(README.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Outcome:
    """How one README command ended."""

    code: int
    output: str


class ReadmeSession:
    """Runs the README's commands in order, once each, in one shared working directory."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.outcomes: dict[int, Outcome] = {}

    def run_through(self, index: int) -> Outcome:
        """Run every command up to ``index`` not run yet; return the outcome of ``index``."""
        for position in range(index + 1):
            if position not in self.outcomes:
                self.outcomes[position] = self._run(COMMANDS[position])
        return self.outcomes[index]

    def _run(self, command: Command) -> Outcome:
        try:
            proc = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command.text],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome(-1, f"timed out after {COMMAND_TIMEOUT} s")
        return Outcome(proc.returncode, proc.stdout + proc.stderr)


#: The app the README's CI examples authenticate as (registered with the README's emulator).
README_CLIENT_ID = "00000000-0000-0000-0000-0000000000b1"


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment every README command runs with. The hook for later additions.

    A CI pipeline has the azure-identity variables set and a certificate mounted; so does the
    README's: an in-process emulator plays the tenant, a certificate made here plays the
    mounted file, and ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_AUTHORITY_HOST`` and
    ``AZURE_CLIENT_CERTIFICATE_PATH`` point at them, so ``certauth token --scope ...`` lines
    run exactly as written.
    """
    from certauth.certificates import generate_certificate
    from certauth.emulator import Emulator

    home = tmp_path_factory.mktemp("readme-home")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AZURE_", "CERTAUTH_"))
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", os.defpath)])
    env["HOME"] = str(home)
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    env["CERTAUTH_CACHE_DIR"] = str(home / ".cache" / "certauth")
    mounted = generate_certificate("CN=readme-ci")
    cert_file = home / "mounted-app.pem"
    cert_file.write_bytes(mounted.private_key_pem() + mounted.pem)
    with Emulator() as tenant:
        tenant.register(README_CLIENT_ID, mounted, roles=["Invoices.Read"])
        env.update(
            AZURE_TENANT_ID=tenant.tenant_id,
            AZURE_CLIENT_ID=README_CLIENT_ID,
            AZURE_AUTHORITY_HOST=tenant.authority_host,
            AZURE_CLIENT_CERTIFICATE_PATH=str(cert_file),
        )
        env.update(README_ENV)
        yield env


@pytest.fixture(scope="module")
def readme_session(
    readme_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> ReadmeSession:
    """One working directory shared by all README commands."""
    return ReadmeSession(tmp_path_factory.mktemp("readme-work"), readme_env)


@pytest.mark.parametrize(
    "index", [pytest.param(i, id=command.test_id) for i, command in enumerate(COMMANDS)]
)
def test_readme_command(readme_session: ReadmeSession, index: int) -> None:
    command = COMMANDS[index]
    outcome = readme_session.run_through(index)
    assert outcome.code == command.expected_exit, (
        f"README.md line {command.line}: `{command.text}` exited {outcome.code}, "
        f"expected {command.expected_exit}; output:\n{outcome.output[-3000:]}"
    )
    assert "Traceback" not in outcome.output, outcome.output[-3000:]


def test_readme_has_runnable_commands() -> None:
    assert any(command.text.startswith("certauth cert create") for command in COMMANDS)


def test_parser_follows_the_rules() -> None:
    markdown = "\n".join(
        [
            "```console",
            "$ echo one",
            "one",
            "$ false   # exit 1",
            "$ echo a \\",
            "    b",
            "```",
            "```console skip-test",
            "$ kubectl apply -f x.yaml",
            "```",
            "```sh",
            "$ az login",
            "```",
            "````console",
            "$ echo nested",
            "```",
            "````",
        ]
    )
    assert parse_console_commands(markdown) == [
        Command(2, "echo one", 0),
        Command(4, "false   # exit 1", 1),
        Command(5, "echo a b", 0),
        Command(15, "echo nested", 0),
    ]
