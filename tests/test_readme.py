"""The README is kept true by running it: every command it shows is a test.

The rules (for everyone who adds to README.md)
----------------------------------------------
* A fenced block whose info string is ``console`` is a transcript. Each line starting with
  ``$ `` is a command; the lines after it, up to the next ``$ `` line, are its output, and
  they are compared with what the command prints (see "How output is compared" below).
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

How output is compared
----------------------
* Line by line, in order. Each shown line must be the next line the command printed on
  stdout, or else a line it printed on stderr (diagnostics such as ``certauth: warning: ...``,
  in their own order). Every line printed on stdout must be shown: a command whose stdout is
  not shown must print nothing there (redirect it, ``> /dev/null``). Lines printed on stderr
  may be left out. Trailing spaces do not count.
* Values that differ from run to run are compared by their shape (:data:`SHAPES`): thumbprints
  (40 or 64 uppercase hex characters), serial numbers, ``x5t`` / ``x5t#S256`` / base64
  thumbprints, GUIDs, dates and timestamps. Everything else, days left and key sizes
  included, is compared exactly, so write what the command really prints.
* A value the README shows more than once stands for one value: where the README shows the
  same thumbprint (date, serial...) twice, the commands must print one same value both times
  (for example ``cert thumbprint`` prints the SHA-1 that ``cert create`` printed).
* ``...`` in a shown line stands for anything (a truncated key, a value not worth showing).

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

#: README commands whose shown output is known to be wrong, by command text: why. Each one
#: still has to run and exit as shown; its output must still differ (a fixed README line makes
#: the test fail until its entry here goes), and it is reported as an expected failure.
README_ERRATA: dict[str, str] = {}

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
    #: The output the README shows under the command: (README line number, text) per line.
    output: tuple[tuple[int, str], ...] = ()

    @property
    def test_id(self) -> str:
        """A readable pytest id: README line and the start of the command."""
        text = re.sub(r"\s+", " ", self.text)
        return f"L{self.line} {text[:70]}"


def parse_console_commands(markdown: str) -> list[Command]:
    """Every command of every runnable ``console`` block, in order (see the module docstring)."""
    commands: list[Command] = []
    fence: str | None = None
    indent = ""
    runnable = False
    pending: tuple[int, str] | None = None  # a command whose line ended with a backslash
    current: tuple[int, str, list[tuple[int, str]]] | None = None  # the command output follows

    def finish() -> None:
        nonlocal current
        if current is not None:
            start, text, output = current
            commands.append(_command(start, text, tuple(output)))
            current = None

    for number, raw in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(raw)
        if fence is None:
            if match:
                fence = match["fence"]
                indent = match["indent"]
                info = match["info"].split()
                runnable = bool(info) and info[0] == "console" and "skip-test" not in info[1:]
            continue
        if match and match["fence"].startswith(fence) and not match["info"]:
            finish()
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
                current = (start, text, [])
            continue
        if line.startswith("$ "):
            finish()
            text = line[2:].strip()
            if text.endswith("\\"):
                pending = (number, text)
            else:
                current = (number, text, [])
        elif current is not None:
            shown = raw[len(indent) :] if raw.startswith(indent) else raw.lstrip()
            current[2].append((number, shown.rstrip()))
    finish()
    return commands


def _command(line: int, text: str, output: tuple[tuple[int, str], ...] = ()) -> Command:
    match = _EXPECTED_EXIT.search(text)
    return Command(line, text, int(match["code"]) if match else 0, output)


_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

#: Values that differ from run to run, compared by shape: (what, how it looks in the README,
#: what the command must print in its place). Tried in order at each position of a shown line.
SHAPES: tuple[tuple[str, str, str], ...] = (
    ("anything", r"[A-Za-z0-9+/=_-]*\.\.\.", r".*"),
    # Serial numbers are random 159-bit integers in hex, not zero-padded: 40 digits or fewer.
    ("serial", r'(?:(?<=serial: {13})|(?<="serial": "))[0-9A-F]{40}', r"[0-9A-F]{1,40}"),
    ("timestamp", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
    ("date", r"\d{4}-\d\d-\d\d", r"\d{4}-\d\d-\d\d"),
    ("GUID", _GUID, _GUID),
    ("SHA-256 hex", r"(?<![0-9A-Za-z])[0-9A-F]{64}(?![0-9A-Za-z])", r"[0-9A-F]{64}"),
    ("SHA-1 hex", r"(?<![0-9A-Za-z])[0-9A-F]{40}(?![0-9A-Za-z])", r"[0-9A-F]{40}"),
    ("x5t#S256", r"(?<![\w-])[\w-]{43}(?![\w-])", r"[A-Za-z0-9_-]{43}"),
    ("x5t", r"(?<![\w-])[\w-]{27}(?![\w-])", r"[A-Za-z0-9_-]{27}"),
    ("base64 SHA-1", r"(?<![\w+/])[A-Za-z0-9+/]{27}=", r"[A-Za-z0-9+/]{27}="),
)
_SHAPES = [(what, re.compile(shown), printed) for what, shown, printed in SHAPES]


def line_pattern(shown: str) -> tuple[re.Pattern[str], list[str]]:
    """The regex a printed line must match in full, and the README values it holds (each
    captured by a group ``v0``, ``v1``, ... in order; ``...`` captures nothing)."""
    parts: list[str] = []
    values: list[str] = []
    position = 0
    while position < len(shown):
        for what, shape, printed in _SHAPES:
            match = shape.match(shown, position)
            if match and match.end() > position:
                if what == "anything":
                    parts.append(printed)
                else:
                    parts.append(f"(?P<v{len(values)}>{printed})")
                    values.append(match.group())
                position = match.end()
                break
        else:
            parts.append(re.escape(shown[position]))
            position += 1
    return re.compile("".join(parts)), values


def compare_output(
    command: Command, stdout: str, stderr: str, seen: dict[str, tuple[int, str]]
) -> list[str]:
    """What differs between the output the README shows and what the command printed.

    ``seen`` maps each run-dependent README value already met to (README line, printed value),
    and is extended: the same README value must stand for the same printed value everywhere.
    """
    out = [line.rstrip() for line in stdout.splitlines()]
    err = [line.rstrip() for line in stderr.splitlines()]
    problems: list[str] = []
    next_out = next_err = 0
    for number, shown in command.output:
        pattern, values = line_pattern(shown)
        match = None
        if next_out < len(out):
            match = pattern.fullmatch(out[next_out])
            if match:
                next_out += 1
        if match is None:
            for index in range(next_err, len(err)):
                match = pattern.fullmatch(err[index])
                if match:
                    next_err = index + 1
                    break
        if match is None:
            printed = out[next_out] if next_out < len(out) else "(nothing more on stdout)"
            problems.append(
                f"README.md line {number} shows {shown!r}; not printed (next stdout line: "
                f"{printed!r})"
            )
            continue
        for index, value in enumerate(values):
            printed = match[f"v{index}"]
            first = seen.setdefault(value, (number, printed))
            if first[1] != printed:
                problems.append(
                    f"README.md line {number} shows {value!r} as line {first[0]} does, for the "
                    f"same value; printed {printed!r} here and {first[1]!r} there"
                )
    problems.extend(
        f"printed on stdout but not shown in the README: {line!r}" for line in out[next_out:]
    )
    return problems


COMMANDS = parse_console_commands(README.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Outcome:
    """How one README command ended."""

    code: int
    stdout: str
    stderr: str
    #: How the output differs from what the README shows (empty: it is as shown).
    mismatches: tuple[str, ...] = ()

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class ReadmeSession:
    """Runs the README's commands in order, once each, in one shared working directory."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.outcomes: dict[int, Outcome] = {}
        #: Run-dependent README values met so far (see :func:`compare_output`).
        self.seen: dict[str, tuple[int, str]] = {}

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
            return Outcome(-1, "", f"timed out after {COMMAND_TIMEOUT} s")
        mismatches = compare_output(command, proc.stdout, proc.stderr, self.seen)
        return Outcome(proc.returncode, proc.stdout, proc.stderr, tuple(mismatches))


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
    if command.text in README_ERRATA:
        assert outcome.mismatches, (
            f"README.md line {command.line} now shows what `{command.text}` prints: remove "
            "its entry from README_ERRATA"
        )
        pytest.xfail(README_ERRATA[command.text])
    if outcome.mismatches:
        pytest.fail(
            f"README.md line {command.line}: `{command.text}` does not print what the README "
            "shows:\n  " + "\n  ".join(outcome.mismatches) + f"\nstdout:\n{outcome.stdout[-3000:]}"
            f"\nstderr:\n{outcome.stderr[-3000:]}",
            pytrace=False,
        )


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
        Command(2, "echo one", 0, ((3, "one"),)),
        Command(4, "false   # exit 1", 1),
        Command(5, "echo a b", 0),
        Command(15, "echo nested", 0, ((16, "```"),)),  # a shorter fence is output
    ]


def test_output_lines_keep_their_indentation_inside_an_indented_block() -> None:
    markdown = "\n".join(
        ["- a list item:", "  ```console", "  $ cat x.json", "  {", '    "a": 1', "  }", "  ```"]
    )
    assert parse_console_commands(markdown) == [
        Command(3, "cat x.json", 0, ((4, "{"), (5, '  "a": 1'), (6, "}")))
    ]


def _shown(*lines: str) -> Command:
    return Command(1, "cmd", 0, tuple(enumerate(lines, start=2)))


def test_output_is_compared_line_by_line_with_run_dependent_values_by_shape() -> None:
    command = _shown(
        "thumbprint (SHA-1): 78B600C1A3EBC35688DA2EC1EF37BFB19E3A5A6C",
        "serial:             622C4CCA0497B83ADABFEBE5B7FB762B9F735C99",
        "x5t#S256:           aqCA8t6B8UwqKcHmg1k5MS2ah3URaOmjWKetQe4LjRA",
        "days left:          364",
        '  "key": "MIIDDjCCAfagAw...",',
    )
    printed = (
        "thumbprint (SHA-1): 0123456789ABCDEF0123456789ABCDEF01234567\n"
        "serial:             23456789ABCDEF0123456789ABCDEF0123456\n"
        "x5t#S256:           NhUmoJD_vpYXm66PubMOpCO-5eB03FweX1bY5fjm-D8\n"
        "days left:          364\n"
        '  "key": "MIIEBBB",\n'
    )
    assert compare_output(command, printed, "", {}) == []
    # A number is not a run-dependent value: it is compared as written.
    assert compare_output(command, printed.replace("364", "365"), "", {})
    # A thumbprint of the wrong shape (lowercase, one digit short) does not pass.
    assert compare_output(
        command, printed.replace("0123456789ABCDEF0123", "0123456789abcdef0123"), "", {}
    )
    assert compare_output(command, printed.replace("01234567\n", "0123456\n"), "", {})
    # Nothing printed, or a line too many, is a difference.
    assert compare_output(command, "", "", {})
    assert compare_output(command, printed + "extra\n", "", {})


def test_diagnostics_may_come_on_stderr_and_stdout_must_be_shown_in_full() -> None:
    command = _shown("certauth: warning: EC key", '  "key_matches": true,')
    assert (
        compare_output(command, '  "key_matches": true,\n', "certauth: warning: EC key\n", {}) == []
    )
    assert compare_output(command, '  "key_matches": true,\n', "other\nwarning\n", {})
    assert compare_output(_shown(), "", "certauth: hint: may be left out\n", {}) == []
    assert compare_output(_shown(), "anything\n", "", {})


def test_one_readme_value_stands_for_one_printed_value() -> None:
    seen: dict[str, tuple[int, str]] = {}
    create = _shown("thumbprint (SHA-1): 78B600C1A3EBC35688DA2EC1EF37BFB19E3A5A6C")
    thumbprint = _shown("78B600C1A3EBC35688DA2EC1EF37BFB19E3A5A6C")
    value = "0123456789ABCDEF0123456789ABCDEF01234567"
    assert compare_output(create, f"thumbprint (SHA-1): {value}\n", "", seen) == []
    assert compare_output(thumbprint, f"{value}\n", "", seen) == []
    (problem,) = compare_output(thumbprint, "F" * 40 + "\n", "", seen)
    assert "78B600C1A3EBC35688DA2EC1EF37BFB19E3A5A6C" in problem
