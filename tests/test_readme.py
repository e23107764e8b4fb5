"""The README and the pages of ``docs/`` are kept true by running them: every command they show
is a test.

The rules (for everyone who adds to README.md or docs/)
-------------------------------------------------------
* A fenced block whose info string is ``console`` is a transcript. Each line starting with
  ``$ `` is a command; the lines after it, up to the next ``$ `` line, are its output, and
  they are compared with what the command prints (see "How output is compared" below).
* A command line ending with ``\\`` continues on the next line.
* Every command must exit 0, unless the line ends with a comment ``# exit N`` (for example
  ``$ certauth cert check old.crt   # exit 8``).
* All commands of all console blocks run in reading order: the README first, then the pages of
  ``docs/`` in the order of ``mkdocs.yml``'s ``nav`` (see ``tests/_docs.py``). They run in ONE
  bash (with ``pipefail``), one after another, in ONE temporary working directory, as a reader
  typing them into one terminal would: a later command can use the files an earlier one made
  and the variables it set or sourced (``. ./emulator.env``), and a command ending with ``&``
  keeps running in the background (redirect its output to a file); whatever is still running
  is stopped at the end. Each command's stdin is ``/dev/null``.
* A fenced block whose info string holds ``title="NAME"`` (which the documentation site shows
  as the block's file name), for example ```` ```python title="service.py" ````, is written to
  the file NAME in the working directory before the next command runs: that is how a page
  says "save this as service.py" and then runs it.
* A block opened with ```` ```console skip-test ```` is not run. Use it only for what truly
  cannot run here (a real tenant, Kubernetes). Blocks marked ``sh``, ``bash``, ``yaml`` etc. are
  never run either: that is where ``az ...`` lines go.
* Environment: the test process's environment without any ``AZURE_*``, ``CERTAUTH_*`` or
  ``SSL_CERT_*`` variable, then ``PATH`` with this virtualenv's ``bin`` first (so ``certauth``
  and ``python3`` are the code under test), ``HOME``, ``XDG_CACHE_HOME`` and
  ``CERTAUTH_CACHE_DIR`` inside the temporary directory, then everything in
  :data:`README_ENV`. Nothing plays a tenant but what the pages start themselves: the services
  quick start starts ``certauth emulator`` and sources its ``emulator.env``, as it tells the
  reader to.

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
* Each command is its own test, named after its document, line and text, e.g.
  ``test_readme_command[README.md:120 certauth cert show certs/billing-api.crt]``. Running one
  command alone (``-k``) first runs the commands before it, since they may create its inputs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _docs import documents, relative

#: Extra environment for every command (see "Extending it" above).
README_ENV: dict[str, str] = {}

#: Commands whose shown output is known to be wrong, by command text: why. Each one still has
#: to run and exit as shown; its output must still differ (a fixed line makes the test fail
#: until its entry here goes), and it is reported as an expected failure.
README_ERRATA: dict[str, str] = {}

#: Seconds one command may take.
COMMAND_TIMEOUT = 120

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_EXPECTED_EXIT = re.compile(r"#\s*exit\s+(?P<code>\d+)\s*$")
_TITLE = re.compile(r"""\btitle=(?:"(?P<quoted>[^"]+)"|(?P<bare>\S+))""")


@dataclass(frozen=True)
class Command:
    """One ``$ `` line of a console block."""

    #: 1-based line number in its document (of the ``$`` line).
    line: int
    #: The command as bash runs it (continuation lines joined).
    text: str
    #: The exit status the document promises (0 unless ``# exit N``).
    expected_exit: int
    #: The output the document shows under the command: (line number, text) per line.
    output: tuple[tuple[int, str], ...] = ()
    #: The document, as ``README.md`` or ``docs/cli.md``.
    doc: str = "README.md"
    #: Titled blocks met since the previous command: (file name, content), written first.
    files: tuple[tuple[str, str], ...] = ()

    @property
    def test_id(self) -> str:
        """A readable pytest id: document, line and the start of the command."""
        text = re.sub(r"\s+", " ", self.text)
        return f"{self.doc}:{self.line} {text[:70]}"


def parse_console_commands(markdown: str, doc: str = "README.md") -> list[Command]:
    """Every command of every runnable ``console`` block, in order (see the module docstring)."""
    commands: list[Command] = []
    fence: str | None = None
    indent = ""
    runnable = False
    titled: tuple[str, list[str]] | None = None  # a block to write to a file, being read
    files: list[tuple[str, str]] = []  # titled blocks waiting for the next command
    pending: tuple[int, str] | None = None  # a command whose line ended with a backslash
    current: tuple[int, str, list[tuple[int, str]]] | None = None  # the command output follows

    def finish() -> None:
        nonlocal current
        if current is not None:
            start, text, output = current
            commands.append(_command(start, text, tuple(output), doc, tuple(files)))
            files.clear()
            current = None

    for number, raw in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(raw)
        if fence is None:
            if match:
                fence = match["fence"]
                indent = match["indent"]
                info = match["info"].split()
                runnable = bool(info) and info[0] == "console" and "skip-test" not in info[1:]
                title = _TITLE.search(match["info"])
                titled = (title["quoted"] or title["bare"], []) if title else None
            continue
        if match and match["fence"].startswith(fence) and not match["info"]:
            finish()
            if titled is not None:
                files.append((titled[0], "".join(line + "\n" for line in titled[1])))
                titled = None
            fence = None
            pending = None
            continue
        if titled is not None:
            titled[1].append(raw[len(indent) :] if raw.startswith(indent) else raw.lstrip())
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
    assert not files, f"{doc}: titled block {files[0][0]!r} has no command after it to use it"
    return commands


def _command(
    line: int,
    text: str,
    output: tuple[tuple[int, str], ...] = (),
    doc: str = "README.md",
    files: tuple[tuple[str, str], ...] = (),
) -> Command:
    match = _EXPECTED_EXIT.search(text)
    return Command(line, text, int(match["code"]) if match else 0, output, doc, files)


_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

#: Values that differ from run to run, compared by shape: (what, how it looks in a document,
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
    """The regex a printed line must match in full, and the shown values it holds (each
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
    command: Command, stdout: str, stderr: str, seen: dict[str, tuple[str, str]]
) -> list[str]:
    """What differs between the output a document shows and what the command printed.

    ``seen`` maps each run-dependent value already met to (where it was shown, printed value),
    and is extended: the same shown value must stand for the same printed value everywhere,
    across documents too.
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
                f"{command.doc} line {number} shows {shown!r}; not printed (next stdout line: "
                f"{printed!r})"
            )
            continue
        for index, value in enumerate(values):
            printed = match[f"v{index}"]
            first = seen.setdefault(value, (f"{command.doc} line {number}", printed))
            if first[1] != printed:
                problems.append(
                    f"{command.doc} line {number} shows {value!r} as {first[0]} does, for the "
                    f"same value; printed {printed!r} here and {first[1]!r} there"
                )
    problems.extend(
        f"printed on stdout but not shown in {command.doc}: {line!r}" for line in out[next_out:]
    )
    return problems


COMMANDS = [
    command
    for path in documents()
    for command in parse_console_commands(path.read_text(encoding="utf-8"), relative(path))
]


@dataclass(frozen=True)
class Outcome:
    """How one command ended."""

    code: int
    stdout: str
    stderr: str
    #: How the output differs from what the document shows (empty: it is as shown).
    mismatches: tuple[str, ...] = ()

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Shell:
    """One bash that runs commands one after another, as a reader's terminal would.

    Each command is written to a file and run with ``eval`` in the shell itself (so ``export``,
    ``.`` and ``cd`` last), its stdout and stderr going to files: a background job started by a
    command never holds a pipe the test waits on. The shell and everything it started share a
    process group of their own, which :meth:`close` stops.
    """

    def __init__(self, workdir: Path, control: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.control = control
        self.env = env
        self.count = 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert proc.stdin is not None
        proc.stdin.write("set -o pipefail\n")
        proc.stdin.flush()
        return proc

    def run(self, text: str, timeout: float) -> tuple[int, str, str]:
        """Run ``text``; its exit status, stdout and stderr (status -1: it timed out, and the
        shell was restarted, losing its variables)."""
        self.count += 1
        base = self.control / str(self.count)
        script, out, err, status = (base.with_suffix(s) for s in (".sh", ".out", ".err", ".rc"))
        script.write_text(text + "\n", encoding="utf-8")
        q = shlex.quote
        line = (
            f'{{ eval "$(< {q(str(script))})"; }} </dev/null >{q(str(out))} 2>{q(str(err))}; '
            f"echo $? > {q(str(status))}.tmp && mv {q(str(status))}.tmp {q(str(status))}\n"
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while not status.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = "ended the shell" if self.proc.poll() is not None else "timed out"
                self.close()
                self.proc = self._start()
                return -1, _read(out), _read(err) + f"\n({why}; a new shell was started)"
            time.sleep(0.02)
        return int(status.read_text()), _read(out), _read(err)

    def close(self) -> None:
        """Stop the shell and everything it started in the background."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # Background jobs (an emulator) get the same signal; give them a moment to clean up.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


class ReadmeSession:
    """Runs the documents' commands in order, once each, in one shell and working directory."""

    def __init__(self, workdir: Path, shell: Shell) -> None:
        self.workdir = workdir
        self.shell = shell
        self.outcomes: dict[int, Outcome] = {}
        #: Run-dependent shown values met so far (see :func:`compare_output`).
        self.seen: dict[str, tuple[str, str]] = {}

    def run_through(self, index: int) -> Outcome:
        """Run every command up to ``index`` not run yet; return the outcome of ``index``."""
        for position in range(index + 1):
            if position not in self.outcomes:
                self.outcomes[position] = self._run(COMMANDS[position])
        return self.outcomes[index]

    def _run(self, command: Command) -> Outcome:
        for name, content in command.files:
            (self.workdir / name).write_text(content, encoding="utf-8")
        code, stdout, stderr = self.shell.run(command.text, COMMAND_TIMEOUT)
        mismatches = compare_output(command, stdout, stderr, self.seen)
        return Outcome(code, stdout, stderr, tuple(mismatches))


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the documents' shell starts with. The hook for later additions.

    No tenant is set up here: the services quick start starts ``certauth emulator`` itself and
    sources the variables it writes, exactly as it tells a reader to.
    """
    home = tmp_path_factory.mktemp("readme-home")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AZURE_", "CERTAUTH_", "SSL_CERT_"))
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", os.defpath)])
    env["HOME"] = str(home)
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    env["CERTAUTH_CACHE_DIR"] = str(home / ".cache" / "certauth")
    env.update(README_ENV)
    return env


@pytest.fixture(scope="module")
def readme_session(
    readme_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReadmeSession]:
    """One shell and one working directory shared by all the documents' commands."""
    workdir = tmp_path_factory.mktemp("readme-work")
    shell = Shell(workdir, tmp_path_factory.mktemp("readme-shell"), readme_env)
    try:
        yield ReadmeSession(workdir, shell)
    finally:
        shell.close()


@pytest.mark.parametrize(
    "index", [pytest.param(i, id=command.test_id) for i, command in enumerate(COMMANDS)]
)
def test_readme_command(readme_session: ReadmeSession, index: int) -> None:
    command = COMMANDS[index]
    where = f"{command.doc} line {command.line}"
    outcome = readme_session.run_through(index)
    assert outcome.code == command.expected_exit, (
        f"{where}: `{command.text}` exited {outcome.code}, "
        f"expected {command.expected_exit}; output:\n{outcome.output[-3000:]}"
    )
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
    if command.text in README_ERRATA:
        assert outcome.mismatches, (
            f"{where} now shows what `{command.text}` prints: remove its entry from README_ERRATA"
        )
        pytest.xfail(README_ERRATA[command.text])
    if outcome.mismatches:
        pytest.fail(
            f"{where}: `{command.text}` does not print what the page shows:\n  "
            + "\n  ".join(outcome.mismatches)
            + f"\nstdout:\n{outcome.stdout[-3000:]}\nstderr:\n{outcome.stderr[-3000:]}",
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
    seen: dict[str, tuple[str, str]] = {}
    create = _shown("thumbprint (SHA-1): 78B600C1A3EBC35688DA2EC1EF37BFB19E3A5A6C")
    thumbprint = _shown("78B600C1A3EBC35688DA2EC1EF37BFB19E3A5A6C")
    value = "0123456789ABCDEF0123456789ABCDEF01234567"
    assert compare_output(create, f"thumbprint (SHA-1): {value}\n", "", seen) == []
    assert compare_output(thumbprint, f"{value}\n", "", seen) == []
    (problem,) = compare_output(thumbprint, "F" * 40 + "\n", "", seen)
    assert "78B600C1A3EBC35688DA2EC1EF37BFB19E3A5A6C" in problem


def test_a_titled_block_is_written_before_the_next_command() -> None:
    markdown = "\n".join(
        [
            '```python title="service.py"',
            "print('hi')",
            "```",
            "```console",
            "$ python3 service.py",
            "hi",
            "```",
            "```python title=other.py",
            "x = 1",
            "```",
        ]
    )
    with pytest.raises(AssertionError, match=r"'other\.py' has no command after it"):
        parse_console_commands(markdown, "docs/x.md")
    (command,) = parse_console_commands(markdown.rsplit("\n```python", 1)[0], "docs/x.md")
    assert command == Command(
        5, "python3 service.py", 0, ((6, "hi"),), "docs/x.md", (("service.py", "print('hi')\n"),)
    )


def test_the_shell_keeps_variables_and_does_not_wait_for_background_jobs(tmp_path: Path) -> None:
    workdir, control = tmp_path / "work", tmp_path / "control"
    workdir.mkdir()
    control.mkdir()
    shell = Shell(workdir, control, {"PATH": os.environ["PATH"]})
    try:
        assert shell.run("export GREETING=hello; cd /", 10) == (0, "", "")
        assert shell.run('echo "$GREETING from $PWD"; echo oops >&2', 10) == (
            0,
            "hello from /\n",
            "oops\n",
        )
        assert shell.run("false | true", 10)[0] == 1  # pipefail
        assert shell.run("sleep 300 > /dev/null 2>&1 & echo $! > job.pid", 10)[0] == 0
        code, _, err = shell.run("sleep 5", 0.5)
        assert code == -1
        assert "timed out" in err
        # A new shell after a timeout: variables are gone, commands run again.
        assert shell.run('echo "[$GREETING]"', 10) == (0, "[]\n", "")
    finally:
        shell.close()
