"""Every value-taking option and argument of every command, fed hostile values by type.

The options are enumerated from the click command tree (``certauth.cli.main.cli``, its lazy
groups and their subgroups), so a new option is swept the day it is added; a new option of a
kind the sweep cannot guess fails :func:`test_every_option_has_a_kind` until it is classified in
:data:`KINDS`. Each option is tried with the values of its kind (non-finite and huge numbers,
100,000-character strings, malformed, over-long and user-info URLs and hosts, files where
directories belong and the reverse, missing files, FIFOs, empty strings, undecodable argv bytes)
on top of a command line that otherwise works (:func:`test_the_baselines_work` proves that).

What every case must show: a documented exit code, never 1 (a bug) and never a hang; no
traceback; and a refusal is one stderr line that names the option. Runs in-process (``main``
under click's ``CliRunner`` isolation), so the whole sweep takes seconds. Network traffic goes
only to a local TLS emulator or to a closed loopback port: a name lookup for anything else is
refused by a guard (and recorded), so no case reaches the internet.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from certauth.certificates import Certificate
from certauth.cli.main import cli, main
from certauth.emulator import Emulator
from certauth.emulator.service import Emulator as EmulatorService

CLIENT_ID = "5e5e5e5e-0000-4000-8000-00000000c11a"
RESOURCE = "api://sweep"
LONG = "x" * 100_000
#: A DNS label one character over the 63 that RFC 1035 section 2.3.4 allows.
LABEL = "a" * 64
#: What a non-UTF-8 byte in argv becomes in Python (PEP 383 surrogateescape).
UNDECODABLE = "\udcff"
#: The documented exit codes (README "Exit codes"); 1 is a bug and never expected.
DOCUMENTED = frozenset({0, 2, 3, 4, 5, 6, 7, 8})
#: A case that has not finished by then is a hang.
WATCHDOG_SECONDS = 20.0
#: How long a command may keep a FIFO with no writer open before it counts as blocked on it.
FIFO_PATIENCE = 0.5


# -- the command tree ------------------------------------------------------------------------------


def _commands() -> Iterator[tuple[str, click.Command]]:
    """``("cert create", command)`` for every leaf command, lazy groups included."""

    def walk(command: click.Command, path: list[str], ctx: click.Context) -> Iterator[Any]:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                yield from walk(sub, [*path, name], click.Context(sub, parent=ctx, info_name=name))
        else:
            yield " ".join(path), command

    yield from walk(cli, [], click.Context(cli, info_name="certauth"))


def _takes_a_value(param: click.Parameter) -> bool:
    if isinstance(param, click.Option):
        return not (param.is_flag or param.count or param.hidden)
    return True


def _flag(param: click.Parameter) -> str:
    """``--timeout`` for an option, the metavar (``FILE``) for an argument."""
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return (param.metavar or param.name or "").upper()


def _swept_params() -> list[tuple[str, click.Parameter]]:
    return [
        (path, param)
        for path, command in _commands()
        for param in command.params
        if _takes_a_value(param)
    ]


# -- kinds of values ---------------------------------------------------------------------------

#: How to attack an option, by (command, flag); a flag alone applies to every command.
KINDS: dict[str, str] = {
    "--client-id": "text",
    "--tenant": "tenant",
    "--token-endpoint": "url",
    "--issuer": "url",
    "--jwks-uri": "url",
    "--authority-host": "host",
    "--b2c-policy": "text",
    "--cert": "infile",
    "--key": "infile",
    "--password-file": "infile",
    "--password-env": "envvar",
    "--client-secret-env": "envvar",
    "--client-secret-file": "infile",
    "--federated-token-file": "infile",
    "--ca-file": "infile",
    "--scope": "text",
    "--cache": "cache",
    "--cache-namespace": "namespace",
    "--audience": "text",
    "--require-scope": "text",
    "--require-role": "text",
    "--subject": "text",
    "--name": "filename",
    "--out": "outdir",
    "--display-name": "text",
    "--config": "infile",
    "--tls-dir": "outdir",
    "--ready-file": "outfile",
    "--env-file": "outfile",
    "--register": "pair-file",
    "--secret": "pair-env",
    "--client-ca": "infile",
    "--register-tls-client": "pair-dn",
    "--resource": "text",
    "emulator --host": "bindhost",
    "emulator --tenant": "tenant",
    "cert show FILE": "infile",
    "cert thumbprint FILE": "infile",
    "cert check FILE": "infile",
    "cert manifest FILE": "infile",
    "cert bundle CERT": "infile",
    "cert bundle KEY": "infile",
    "cert bundle --out": "outfile",
    "--grace": "number",
    "--propagation-timeout": "number",
    "--app-object-id": "text",
    "--graph-url": "url",
    "--switch-command": "text",
    "--key-password-file": "infile",
    "--key-password-env": "envvar",
    "--pin-file": "infile",
    "--pin-env": "envvar",
    "--pkcs11-module": "infile",
    "cert create --key-store": "text",
    "cert csr --san": "text",
    "decode TOKEN|-": "token",
    "dpop-proof --htm": "text",
    "dpop-proof --htu": "url",
    "dpop-proof --nonce": "text",
    "--access-token-env": "envvar",
    "--access-token-file": "infile",
    "verify TOKEN|-": "token",
    "verify --client-cert": "infile",
    "verify --forwarded-client-cert": "text",
    "verify --dpop-proof": "text",
    "verify --htm": "text",
    "verify --htu": "url",
    "verify --dpop-nonce": "text",
    "token --dpop-key": "infile",
    "token --htm": "text",
    "token --htu": "url",
}


def _kind(path: str, param: click.Parameter) -> str | None:
    if isinstance(param.type, click.Choice):
        return "choice"
    if isinstance(param.type, click.types.IntParamType | click.types.FloatParamType):
        return "number"
    flag = _flag(param)
    return KINDS.get(f"{path} {flag}") or KINDS.get(flag)


@dataclass(frozen=True)
class Hostile:
    """One hostile value: ``{name}`` placeholders are filled from the case's files."""

    id: str
    value: str
    #: Exit codes that are right for it (a proceeding command: 0; a loopback peer: 4/5).
    codes: frozenset[int] = frozenset({2, 3})
    #: Why the case is a strict xfail: the change that will fix it (see :data:`DECIDED`).
    xfail: str | None = None
    fifo: bool = False
    #: What stdin holds (for a ``-`` argument).
    stdin: str = ""


def _h(id: str, value: str, *codes: int, **more: Any) -> Hostile:
    return Hostile(id, value, frozenset(codes or (2, 3)), **more)


PROCEED = (0, 2, 3)
NUMBERS = [
    _h("nan", "nan", 2),
    _h("inf", "inf", 2),
    _h("-inf", "-inf", 2),
    _h("1e308", "1e308", 2),
    _h("10**30", str(10**30), 2),
    _h("-1", "-1", 2),
    _h("0", "0", 0, 2),
    _h("empty", "", 2),
    _h("100k-digits", "9" * 100_000, 2),
    _h("word", "ten", 2),
]
CHOICES = [
    _h("empty", "", 2),
    _h("long", LONG, 2),
    _h("unknown", "nope", 2),
    _h("undecodable", UNDECODABLE, 2),
]
TEXT = [
    _h("empty", "", 2),
    # A reachable local peer may answer (4) or refuse the size (5); the rest may proceed.
    _h("long", LONG, 0, 2, 3, 4, 5),
    _h("undecodable", UNDECODABLE, 0, 2, 3, 4),
    _h("newline", "a\r\nX-Injected: 1", 0, 2, 3, 4),
    _h("unicode", "\u00e9\u4e2d", 0, 2, 3, 4),
]
TENANT = [
    _h("empty", "", 2),
    _h("long", LONG, 2),
    _h("undecodable", UNDECODABLE, 2),
    _h("slash", "a/../b", 2),
    _h("label", f"{LABEL}.onmicrosoft.com", 2, 4),
]
_CLOSED = "http://127.0.0.1:{closed}"
URLS = [
    _h("empty", "", 2),
    _h("long", LONG, 2, 3),
    _h("long-path", f"{_CLOSED}/{'a' * 100_000}", 2, 3),
    _h("no-host", "https://", 2, 3),
    _h("not-a-url", "not a url", 2, 3),
    _h("ftp", "ftp://127.0.0.1/x", 2, 3),
    _h("bracket", "https://[bad/x", 2, 3),
    _h("bad-port", "https://127.0.0.1:99999/x", 2, 3),
    _h("user-info", "https://user:pw@127.0.0.1:{closed}/x", 2, 3),
    _h("label", f"https://{LABEL}.example/x", 2, 3),
    _h("undecodable", f"https://127.0.0.1:{{closed}}/{UNDECODABLE}", 2, 3, 5),
    _h("closed-port", f"{_CLOSED}/x", 5),
]
HOSTS = [
    _h("empty", "", 2),
    _h("long", LONG, 2, 3),
    _h("label", f"{LABEL}.example", 2, 3),
    _h("user-info", "user:pw@127.0.0.1:{closed}", 2, 3),
    _h("bracket", "[bad", 2, 3),
    _h("bad-port", "127.0.0.1:99999", 2, 3),
    _h("path", "127.0.0.1/tenant/x", 2, 3),
    _h("ftp", "ftp://127.0.0.1", 2, 3),
    _h("undecodable", UNDECODABLE, 2, 3),
    _h("closed-port", _CLOSED, 5),
]
BIND_HOSTS = [
    _h("empty", "", 2),
    _h("long", LONG, 2),
    _h("label", f"{LABEL}.example", 2),
    _h("user-info", "user:pw@127.0.0.1", 2),
    _h("bracket", "[bad", 2),
    _h("port", "127.0.0.1:99999", 2),
    _h("url", "http://127.0.0.1", 2),
    _h("undecodable", UNDECODABLE, 2),
]
CACHE_URLS = [
    _h("empty", "", 2),
    _h("long", LONG, 2),
    _h("bad-ipv6", "redis://:pw@[bad/0", 2),
    _h("scheme", "http://127.0.0.1/0", 2),
    _h("no-scheme", "127.0.0.1:6379", 2),
    _h("bad-port", "redis://127.0.0.1:99999/0", 2),
    _h("bad-db", "redis://127.0.0.1:{closed}/zero", 2),
    _h("undecodable", f"redis://127.0.0.1:{{closed}}/{UNDECODABLE}", 2),
    # An unreachable cache is not fatal: the token is fetched anyway, with a warning.
    _h("closed-port", "redis://127.0.0.1:{closed}/0", 0),
]
#: Swept with an unreachable Redis --cache (see ADJUST): a namespace Redis can hold proceeds
#: (the outage is only warned about); one it cannot (braces: a Cluster hash tag) is exit 2.
NAMESPACES = [
    _h("empty", "", 2),
    _h("braces", "a{b}", 2),
    _h("long", LONG, 0, 2),
    _h("undecodable", UNDECODABLE, 2),
    _h("newline", "a\r\nb", 0, 2),
    _h("unicode", "\u00e9\u4e2d", 0),
]
IN_FILES = [
    _h("empty", "", 2),
    _h("missing", "{tmp}/missing.pem", 3),
    _h("directory", "{dir}", 3),
    _h("fifo", "{fifo}", 3, fifo=True),
    _h("empty-file", "{empty}", 3),
    _h("binary", "{binary}", 3),
    _h("long", LONG, 3),
    _h("under-a-file", "{file}/x.pem", 3),
    _h("undecodable", f"{{tmp}}/{UNDECODABLE}", 3),
    _h("dev-zero", "/dev/zero", 3),
]
OUT_DIRS = [
    _h("empty", "", 2),
    _h("file", "{file}", 3),
    _h("fifo", "{fifo}", 3),
    _h("under-a-file", "{file}/sub", 3),
    _h("long", LONG, 3),
    _h("undecodable", f"{{tmp}}/{UNDECODABLE}", 0, 3),
]
OUT_FILES = [
    _h("empty", "", 2),
    _h("directory", "{dir}", 3),
    _h("missing-dir", "{tmp}/missing/ready.json", 3),
    _h("under-a-file", "{file}/ready.json", 3),
    _h("long", LONG, 3),
    _h("fifo", "{fifo}", 0, 3),
    _h("undecodable", f"{{tmp}}/{UNDECODABLE}", 0, 3),
]
FILE_NAMES = [
    _h("empty", "", 2),
    _h("long", LONG, 2, 3),
    _h("slash", "a/b", 2),
    _h("dotdot", "..", 2),
    _h("undecodable", UNDECODABLE, 0, 3),
]
ENV_VARS = [
    _h("empty", "", 2),
    _h("unset", "CERTAUTH_SWEEP_UNSET", 3),
    _h("equals", "A=B", 2, 3),
    _h("long", LONG, 2, 3),
    _h("undecodable", UNDECODABLE, 2, 3),
]
PAIRS = [
    _h("empty", "", 2),
    _h("no-equals", "app", 2),
    _h("no-client", "={file}", 2),
    _h("no-right", "app=", 2),
    _h("long", LONG, 2),
]
PAIR_FILES = [
    *PAIRS,
    _h("missing", "app={tmp}/missing.crt", 3),
    _h("directory", "app={dir}", 3),
    _h("fifo", "app={fifo}", 3, fifo=True),
    _h("long-path", f"app={LONG}", 3),
]
PAIR_ENVS = [
    *PAIRS,
    _h("unset", "app=CERTAUTH_SWEEP_UNSET", 3),
    _h("long-var", f"app={LONG}", 2, 3),
]
PAIR_DNS = [
    *PAIRS,
    _h("bad-dn", "app=not a dn", 2),
    _h("newline-dn", "app=CN=a\r\nO=b", 2),
    _h("long-dn", f"app=CN={LONG}", 0, 2),
]
TOKENS = [
    _h("empty", "", 3),
    _h("stdin-empty", "-", 3),
    _h("stdin-huge", "-", 3, 6, stdin="x" * 200_000),
    _h("long", LONG, 3, 6),
    _h("undecodable", UNDECODABLE, 3, 6),
    _h("dots", "a.b.c", 3, 6),
]
VALUES: dict[str, list[Hostile]] = {
    "number": NUMBERS,
    "choice": CHOICES,
    "text": TEXT,
    "tenant": TENANT,
    "url": URLS,
    "host": HOSTS,
    "bindhost": BIND_HOSTS,
    "cache": CACHE_URLS,
    "namespace": NAMESPACES,
    "infile": IN_FILES,
    "outdir": OUT_DIRS,
    "outfile": OUT_FILES,
    "filename": FILE_NAMES,
    "envvar": ENV_VARS,
    "pair-file": PAIR_FILES,
    "pair-env": PAIR_ENVS,
    "pair-dn": PAIR_DNS,
    "token": TOKENS,
}

#: Where the right answer is another documented code: (command, flag, value id) -> codes.
EXPECTED: dict[tuple[str, str, str], frozenset[int]] = {
    # A window longer than any certificate: the certificate "expires within" it (exit 7).
    ("cert check", "--warn-days", "10**30"): frozenset({7}),
    # `assertion` signs offline: a closed port is never contacted.
    ("assertion", "--token-endpoint", "closed-port"): frozenset({0}),
    ("assertion", "--authority-host", "closed-port"): frozenset({0}),
    # ...and a non-Entra issuer needs the discovery only `token` does (a usage error).
    ("assertion", "--issuer", "closed-port"): frozenset({2}),
    # The emulator gives any tenant name a stable GUID: a long or odd one is only a name.
    ("emulator", "--tenant", "long"): frozenset({0}),
    ("emulator", "--tenant", "label"): frozenset({0}),
    ("emulator", "--tenant", "slash"): frozenset({0, 2}),
    # An offline assertion for a tenant the cloud would not know is still well formed.
    ("assertion", "--tenant", "label"): frozenset({0, 2}),
    # redis-py ignores a database path that is not a number (database 0); refusing it is
    # _redis.py's to decide. The unreachable cache is then only warned about.
    ("token", "--cache", "bad-db"): frozenset({0, 2}),
    # `cert rotate --dry-run` sends nothing: a closed port is never contacted, and a tenant
    # the cloud would not know is still well formed.
    ("cert rotate", "--authority-host", "closed-port"): frozenset({0}),
    ("cert rotate", "--graph-url", "closed-port"): frozenset({0}),
    ("cert rotate", "--tenant", "label"): frozenset({0, 2}),
    # `dpop-proof` signs offline: a closed port is never contacted...
    ("dpop-proof", "--htu", "closed-port"): frozenset({0}),
    # ...and a --key that names no file yet is where the new key goes.
    ("dpop-proof", "--key", "missing"): frozenset({0}),
    ("dpop-proof", "--key", "undecodable"): frozenset({0}),
    # `verify` compares --htu with a DPoP proof's and never contacts it.
    ("verify", "--htu", "closed-port"): frozenset({0}),
    # `token --output curl-config` writes --htu into the config; curl contacts it, not certauth.
    ("token", "--htu", "closed-port"): frozenset({0}),
    # A --dpop-key that names no file yet is where the new key goes (as dpop-proof --key).
    ("token", "--dpop-key", "missing"): frozenset({0}),
    ("token", "--dpop-key", "undecodable"): frozenset({0}),
}
#: Options checked against a token: a value the token does not satisfy fails verification.
for _checked in ("--audience", "--require-scope", "--require-role"):
    for _value in ("long", "unicode"):
        EXPECTED[("verify", _checked, _value)] = frozenset({2, 6})

#: Where a case waits for another engineer's change: (command, flag, value id) -> reason.
PENDING: dict[tuple[str, str, str], str] = {}
#: Options whose command refuses every hostile value before the pending check would see it:
#: ``assertion`` takes only an Entra issuer (any other needs discovery: a usage error).
DECIDED = {("assertion", "--issuer")}
#: Refusals that are not about the swept value, so they need not name it: B2C takes no
#: certificates whatever the policy is called.
NOT_ABOUT_THE_VALUE = {("token", "--b2c-policy", "long"), ("assertion", "--b2c-policy", "long")}


# -- the cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One command, one option, one hostile value."""

    command: str
    flag: str
    kind: str
    hostile: Hostile
    is_argument: bool

    @property
    def codes(self) -> frozenset[int]:
        return EXPECTED.get((self.command, self.flag, self.hostile.id), self.hostile.codes)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.flag}:{self.hostile.id}"


def _cases() -> list[Any]:
    cases = []
    for path, param in _swept_params():
        kind = _kind(path, param)
        if kind is None:
            continue  # test_every_option_has_a_kind fails for it
        flag = _flag(param)
        for hostile in VALUES[kind]:
            case = Case(path, flag, kind, hostile, isinstance(param, click.Argument))
            marks: list[Any] = []
            reason = PENDING.get((path, flag, hostile.id))
            if reason is None and (path, flag) not in DECIDED:
                reason = hostile.xfail
            if hostile.fifo:
                marks.append(pytest.mark.slow)
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            cases.append(pytest.param(case, id=case.id, marks=marks))
    return cases


# -- the world each case runs in ---------------------------------------------------------------


@dataclass
class World:
    """Files, a TLS emulator and a closed port, shared by every case."""

    root: Path
    emulator: Emulator
    closed_port: int
    certificate: Certificate
    token: str
    files: dict[str, str] = field(default_factory=dict)

    def fill(self, text: str, scratch: Path) -> str:
        """Replace the ``{name}`` placeholders in ``text``."""
        values = {**self.files, "tmp": str(scratch), "closed": str(self.closed_port)}

        def value(match: re.Match[str]) -> str:
            name = match[1]
            if name in _SCRATCH_FILES:
                return str(_scratch_file(scratch, name))
            return values.get(name, match[0])

        return re.sub(r"\{(\w+)\}", value, text)


#: The files a case may damage (an --out or --ready-file can replace them): made for each case
#: that names one, in its own directory.
_SCRATCH_FILES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "file": ("plain.txt", lambda path: path.write_text("just text\n")),
    "empty": ("empty.txt", lambda path: path.write_bytes(b"")),
    "binary": ("binary.bin", lambda path: path.write_bytes(bytes(range(256)) * 4)),
    "dir": ("folder", lambda path: path.mkdir()),
    "fifo": ("pipe", lambda path: os.mkfifo(path)),
}


def _scratch_file(scratch: Path, name: str) -> Path:
    file_name, make = _SCRATCH_FILES[name]
    path = scratch / file_name
    if not os.path.lexists(path):
        make(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, rsa_cert: Certificate) -> Iterator[World]:
    root = tmp_path_factory.mktemp("sweep")
    files = {"bundle": root / "app.pem", "cert": root / "app.crt", "keyfile": root / "app.key"}
    files["bundle"].write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    files["cert"].write_bytes(rsa_cert.pem)
    files["keyfile"].write_bytes(rsa_cert.private_key_pem())
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with Emulator(tls=True, tls_dir=root / "tls") as emulator:
        emulator.register(CLIENT_ID, rsa_cert)
        from certauth.credential import CertificateCredential

        credential = CertificateCredential(
            emulator.tenant_id,
            CLIENT_ID,
            certificate=rsa_cert,
            token_endpoint=emulator.token_endpoint,
            verify=emulator.ca_file,
        )
        with credential:
            token = credential.request_token(f"{RESOURCE}/.default").access_token
        world = World(root, emulator, closed_port, rsa_cert, token)
        world.files = {name: str(path) for name, path in files.items()}
        world.files["ca"] = str(emulator.ca_file)
        yield world


def _baseline(command: str, world: World) -> list[tuple[str, str | None]]:
    """A command line that works, as (flag, value) pairs; ``None`` marks a flag."""
    emulator = world.emulator
    f = world.files
    server = [
        ("--client-id", CLIENT_ID),
        ("--token-endpoint", emulator.token_endpoint),
        ("--cert", f["bundle"]),
    ]
    lines: dict[str, list[tuple[str, str | None]]] = {
        "assertion": server,
        "token": [
            *server,
            ("--scope", f"{RESOURCE}/.default"),
            ("--ca-file", f["ca"]),
            ("--no-cache", None),
        ],
        "cert create": [("--subject", "CN=sweep"), ("--key", "ec-p256"), ("--out", "{tmp}/out")],
        "cert show": [("FILE", f["cert"])],
        "cert thumbprint": [("FILE", f["cert"])],
        "cert check": [("FILE", f["cert"])],
        "cert manifest": [("FILE", f["cert"])],
        "cert bundle": [("CERT", f["cert"]), ("KEY", f["keyfile"]), ("--out", "{tmp}/out.pem")],
        "cert csr": [
            ("--subject", "CN=sweep"),
            ("--san", "DNS:sweep.example"),
            ("--key", "ec-p256"),
            ("--out", "{tmp}/csr"),
        ],
        # A dry run checks every setting and sends nothing (the rotation itself is tested
        # end to end in tests/rotation/).
        "cert rotate": [
            ("--tenant", emulator.tenant_id),
            ("--client-id", CLIENT_ID),
            ("--cert", f["bundle"]),
            ("--out", "{tmp}/rotation"),
            ("--dry-run", None),
        ],
        "decode": [("TOKEN|-", world.token)],
        "verify": [
            ("TOKEN|-", world.token),
            ("--issuer", emulator.issuer),
            ("--audience", RESOURCE),
            ("--ca-file", f["ca"]),
        ],
        "emulator": [("--port", "0")],
        "demo": [],
        "completion": [("SHELL", "bash")],
        # The key file is created on the first call (a new one in each case's scratch).
        "dpop-proof": [
            ("--key", "{tmp}/dpop.key"),
            ("--htm", "GET"),
            ("--htu", "https://api.example/items"),
        ],
    }
    return list(lines[command])


#: What sweeping a flag changes in the baseline: flags to drop, pairs to add.
ADJUST: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str | None], ...]]] = {
    "token --tenant": (("--token-endpoint",), (("--authority-host", "{authority}"),)),
    "assertion --tenant": (("--token-endpoint",), (("--authority-host", "{authority}"),)),
    "token --issuer": (("--token-endpoint",), ()),
    "assertion --issuer": (("--token-endpoint",), ()),
    "token --authority-host": (("--token-endpoint",), (("--tenant", "{tenant}"),)),
    "assertion --authority-host": (("--token-endpoint",), (("--tenant", "{tenant}"),)),
    "token --b2c-policy": (
        ("--token-endpoint",),
        (("--tenant", "{tenant}"), ("--authority-host", "{authority}")),
    ),
    "assertion --b2c-policy": (
        ("--token-endpoint",),
        (("--tenant", "{tenant}"), ("--authority-host", "{authority}")),
    ),
    "token --key": (("--cert",), (("--cert", "{cert}"),)),
    "assertion --key": (("--cert",), (("--cert", "{cert}"),)),
    "token --federated-token-file": (("--cert",), ()),
    "token --cache": (("--no-cache",), ()),
    "token --cache-namespace": (("--no-cache",), (("--cache", "redis://127.0.0.1:{closed}/0"),)),
    "verify --jwks-uri": (("--issuer",), ()),
    # The DPoP options describe one request together (alone, each is a usage error).
    "verify --dpop-proof": ((), (("--htm", "GET"), ("--htu", "https://api.example/items"))),
    "verify --htm": ((), (("--dpop-proof", "a.b.c"), ("--htu", "https://api.example/items"))),
    "verify --htu": ((), (("--dpop-proof", "a.b.c"), ("--htm", "GET"))),
    "verify --dpop-nonce": (
        (),
        (("--dpop-proof", "a.b.c"), ("--htm", "GET"), ("--htu", "https://api.example/items")),
    ),
    "emulator --tls-dir": ((), (("--tls", None),)),
    # The sender-constrained options of `token` act together (alone, each is a usage error).
    "token --dpop-key": ((), (("--dpop", None),)),
    "token --htm": (
        (),
        (("--output", "curl-config"), ("--htu", "https://api.example/items")),
    ),
    "token --htu": ((), (("--output", "curl-config"),)),
    "emulator --client-ca": ((), (("--tls", None),)),
    # The PKCS#11 options act only with a pkcs11: key (no token is needed to refuse them).
    **{
        f"cert {command} {flag}": ((), ((option, "pkcs11:token=sweep;object=sweep"),))
        for command, option in (("create", "--key-store"), ("show", "--key"))
        for flag in ("--pkcs11-module", "--pin-file", "--pin-env")
    },
    **{
        f"{command} {flag}": ((), (("--key", "pkcs11:token=sweep;object=sweep"),))
        for command in ("token", "assertion")
        for flag in ("--pkcs11-module", "--pin-file", "--pin-env")
    },
}


def _argv(case: Case, world: World, scratch: Path) -> list[str]:
    """The baseline with the swept option set to the hostile value."""
    drop, add = ADJUST.get(f"{case.command} {case.flag}", ((), ()))
    pairs = [(flag, value) for flag, value in _baseline(case.command, world) if flag not in drop]
    pairs = [*pairs, *add]
    hostile = world.fill(case.hostile.value, scratch)
    replaced = False
    for index, (flag, _) in enumerate(pairs):
        if flag == case.flag:
            pairs[index] = (flag, hostile)
            replaced = True
    if not replaced:
        pairs.append((case.flag, hostile))
    return [*case.command.split(), *_flatten(pairs, world, scratch, raw=case.flag)]


def _flatten(
    pairs: list[tuple[str, str | None]], world: World, scratch: Path, raw: str | None = None
) -> list[str]:
    """argv from (flag, value) pairs; placeholders filled except in ``raw``'s (done already)."""
    extra = {
        "authority": world.emulator.authority_host,
        "tenant": world.emulator.tenant_id,
    }
    argv: list[str] = []
    positional: list[str] = []
    for flag, value in pairs:
        if value is not None and flag != raw:
            value = world.fill(value, scratch)
            value = re.sub(r"\{(\w+)\}", lambda m: extra.get(m[1], m[0]), value)
        if flag.startswith("--"):
            argv += [flag] if value is None else [flag, value]
        else:
            positional.append(value or "")
    # "--" first: a positional value such as "-x" must not read as an option.
    return argv + (["--", *positional] if positional else [])


# -- running one command in-process --------------------------------------------------------------


class _Hung(BaseException):
    """Raised in the main thread by the watchdog: the command did not finish in time."""


@dataclass
class Outcome:
    """What one run printed and returned."""

    code: int
    out: str
    err: str
    hung: bool
    lookups: list[str]
    #: stdout as written (undecodable bytes of an argument are written back as they came).
    raw_out: bytes = b""

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def _clean_env(world: World, scratch: Path) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith(("AZURE_", "CERTAUTH_"))
    }
    env["CERTAUTH_CACHE_DIR"] = str(scratch / "cache")
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env[name] = None
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env[name] = None
    return env


@contextlib.contextmanager
def _loopback_only(lookups: list[str]) -> Iterator[None]:
    """Refuse (and record) every name lookup that is not for this machine."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.strip("[]") not in {"127.0.0.1", "::1", "localhost"}:
            lookups.append(name[:80])
            raise socket.gaierror(socket.EAI_NONAME, "name lookups are off in the sweep")
        return real(host, *args, **kwargs)

    socket.getaddrinfo = guarded  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real  # type: ignore[assignment]


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[dict[str, bool]]:
    """Interrupt the main thread (a real signal, so a blocked ``open`` returns) after
    ``seconds``; repeat every second until the case ends. Yields ``{"fired": ...}``."""
    state = {"fired": False, "armed": True}
    main_thread = threading.main_thread().ident
    assert main_thread == threading.get_ident(), "the sweep must run in the main thread"
    done = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if state["armed"]:
            raise _Hung()

    def bark() -> None:
        if done.wait(seconds):
            return
        while not done.is_set():
            state["fired"] = True
            signal.pthread_kill(main_thread, signal.SIGUSR1)
            done.wait(1.0)

    previous = signal.signal(signal.SIGUSR1, handler)
    dog = threading.Thread(target=bark, daemon=True)
    dog.start()
    try:
        yield state
    finally:
        done.set()
        dog.join()
        state["armed"] = False
        signal.signal(signal.SIGUSR1, previous)


@contextlib.contextmanager
def _fifo_writer(path: str, patience: float) -> Iterator[dict[str, bool]]:
    """After ``patience`` seconds, open ``path`` for writing and close it: a reader blocked in
    ``open`` (waiting for a writer) is released with an empty read. Records if one was."""
    state = {"released": False}
    done = threading.Event()

    def release() -> None:
        if done.wait(patience):
            return
        while not done.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader (yet)
                    return
                done.wait(0.05)
                continue
            os.close(fd)
            state["released"] = True
            return

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        done.set()
        thread.join()


_REAL_START = EmulatorService.start


def _stop_at_once(self: EmulatorService) -> EmulatorService:
    """``Emulator.start`` for the in-process ``certauth emulator``: start, then ask the command
    to stop (SIGTERM goes to the handler it installed before calling ``start``)."""
    result = _REAL_START(self)
    signal.raise_signal(signal.SIGTERM)
    return result


def run(
    argv: list[str],
    world: World,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    stdin: str = "",
    fifo_patience: float | None = None,
) -> Outcome:
    """``certauth ARGV`` in this process, isolated, guarded against hangs and the internet."""
    monkeypatch.chdir(scratch)
    monkeypatch.setattr(EmulatorService, "start", _stop_at_once)
    runner = CliRunner()
    lookups: list[str] = []
    code, hung = -1, False
    with contextlib.ExitStack() as stack:
        released = (
            stack.enter_context(_fifo_writer(str(_scratch_file(scratch, "fifo")), fifo_patience))
            if fifo_patience is not None
            else {"released": False}
        )
        dog = stack.enter_context(_watchdog(WATCHDOG_SECONDS))
        stack.enter_context(_loopback_only(lookups))
        out_stream, err_stream, _ = stack.enter_context(
            runner.isolation(input=stdin, env=_clean_env(world, scratch))
        )
        try:
            code = main(argv)
        except _Hung:
            hung = True
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        raw_out = out_stream.getvalue()
        out = raw_out.decode("utf-8", "backslashreplace")
        err = err_stream.getvalue().decode("utf-8", "backslashreplace")
    hung = hung or dog["fired"] or released["released"]
    return Outcome(code, out, err, hung, lookups, raw_out)


# -- the checks --------------------------------------------------------------------------------


def _names_the_option(line: str, case: Case, value: str) -> bool:
    """The line names the option: ``--token-endpoint``, or its words as whole words ("token
    endpoint 'x' is not a valid URL"); an argument by its name (FILE, TOKEN) or its value."""
    flag = case.flag.lower().split("|")[0]
    words = r"[ _-]".join(re.escape(word) for word in flag.lstrip("-").split("-"))
    if re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", line.lower()):
        return True
    if re.search(rf"\b{words}\b", line.lower()):
        return True
    return case.is_argument and bool(value) and value[:60] in line


_RETRY_LINE = re.compile(r"^certauth: .* failed \(.*\); attempt \d+ of \d+ in [\d.]+ s$")


def check(outcome: Outcome, case: Case, value: str) -> None:
    """The rules every case follows."""
    where = f"{case.id}: exit {outcome.code}, stderr {outcome.err[:600]!r}"
    assert not outcome.hung, f"{case.id}: did not finish (blocked?) {where}"
    assert "Traceback" not in outcome.out + outcome.err, where
    assert outcome.code != 1, f"a bug: {where}"
    assert outcome.code in DOCUMENTED, where
    assert outcome.code in case.codes, f"expected exit {sorted(case.codes)}; {where}"
    if outcome.code in (0, 7, 8):
        return
    # Retry announcements ("...; attempt 2 of 4 in 0.8 s") come before the one error line.
    lines = [line for line in outcome.err_lines if not _RETRY_LINE.match(line)]
    if outcome.code == 4:
        # A refusal: the error line, then one field per line (AADSTS code, trace id, hint).
        assert all(line.startswith("  ") for line in lines[1:]), where
        lines = lines[:1]
    assert len(lines) == 1, f"want one stderr line; {where}"
    assert lines[0].startswith("certauth: error: "), where
    assert len(lines[0]) < 2000, f"an error line of {len(lines[0])} characters; {where}"
    if (
        outcome.code in (2, 3)
        and (case.command, case.flag, case.hostile.id) not in NOT_ABOUT_THE_VALUE
    ):
        assert _names_the_option(lines[0], case, value), f"the line names no option; {where}"


_CASES = itertools.count()


@pytest.fixture
def scratch(world: World) -> Path:
    """A fresh directory for one case (cheaper than ``tmp_path`` for 600 cases)."""
    folder = world.root / "cases" / str(next(_CASES))
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("case", _cases())
def test_hostile_value(
    case: Case, world: World, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _argv(case, world, scratch)
    value = world.fill(case.hostile.value, scratch)
    outcome = run(
        argv,
        world,
        scratch,
        monkeypatch,
        stdin=case.hostile.stdin,
        fifo_patience=FIFO_PATIENCE if case.hostile.fifo else None,
    )
    check(outcome, case, value)


# -- the sweep checks itself -------------------------------------------------------------------


def test_every_option_has_a_kind() -> None:
    unknown = [f"{path} {_flag(p)}" for path, p in _swept_params() if _kind(path, p) is None]
    assert not unknown, f"classify these options in KINDS so the sweep attacks them: {unknown}"


def test_the_sweep_covers_every_command() -> None:
    swept = {path for path, _ in _swept_params()}
    commands = {path for path, _ in _commands()}
    # demo takes no values; every other command has options the sweep attacks.
    assert commands - swept == {"demo"}, commands - swept
    assert len(_cases()) > 500


@pytest.mark.parametrize(
    "command",
    sorted({path for path, _ in _commands()} - {"demo"}),
)
def test_the_baselines_work(
    command: str, world: World, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each case changes one option of these: the rest must be right, or a refusal would only
    # be about the rest.
    argv = [*command.split(), *_flatten(_baseline(command, world), world, scratch)]
    outcome = run(argv, world, scratch, monkeypatch)
    assert outcome.code == 0, (argv[:8], outcome.err[:600])
    assert not outcome.lookups


def test_the_watchdog_stops_a_blocked_read(world: World, scratch: Path) -> None:
    # The sweep's own guard: a read of a FIFO with no writer is cut short, not a hang.
    started = time.perf_counter()
    fifo = _scratch_file(scratch, "fifo")
    with _watchdog(0.3) as dog, pytest.raises(_Hung), open(fifo, "rb") as handle:  # no writer
        handle.read()
    assert dog["fired"]
    assert time.perf_counter() - started < 5


# -- the cases the hardening issue reported, with their exact answers ------------------------------


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["token", "--timeout", "nan"], 2, ["--timeout", "not a finite number"]),
        (["token", "--timeout", "inf"], 2, ["--timeout", "0.1<=x<=3600"]),
        (["token", "--timeout", "1e308"], 2, ["--timeout", "0.1<=x<=3600"]),
        (["verify", "--timeout", "nan"], 2, ["--timeout", "not a finite number"]),
        (["token", "--cache", "redis://:pw@[bad/0"], 2, ["--cache", "not a valid Redis URL"]),
        (["emulator", "--tls", "--tls-dir", "{file}"], 3, ["--tls-dir", "cannot write the TLS"]),
        (["emulator", "--ready-file", "{dir}"], 3, ["--ready-file", "is a directory"]),
        (["emulator", "--host", f"{LABEL}.example"], 2, ["--host", "not an IP address"]),
        (["emulator", "--token-lifetime", str(10**30)], 2, ["--token-lifetime", "86400"]),
        (["verify", "--leeway", str(10**30)], 2, ["--leeway", "86400"]),
        (["token", "--client-id", ""], 2, ["--client-id", "empty"]),
        (["token", "--client-id", UNDECODABLE], 2, ["--client-id", "not UTF-8"]),
        (["cert", "create", "--out", LONG], 3, ["--out", "characters]", "choose another --out"]),
        (["cert", "show", LONG], 3, ["characters]"]),
    ],
    ids=lambda value: value if isinstance(value, int) else None,
)
def test_the_reported_cases(
    args: list[str],
    code: int,
    fragments: list[str],
    world: World,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = {
        "token": ["--client-id", CLIENT_ID, "--token-endpoint", world.emulator.token_endpoint],
        "verify": [world.token, "--audience", RESOURCE, "--issuer", world.emulator.issuer],
        "emulator": ["--port", "0"],
        "cert": ["--subject", "CN=x"] if args[:2] == ["cert", "create"] else [],
    }
    argv = [world.fill(arg, scratch) for arg in args]
    argv += [a for a in defaults[args[0]] if a not in args]
    if args[0] == "token":
        argv += ["--cert", world.files["bundle"], "--scope", f"{RESOURCE}/.default"]
        argv += [] if "--cache" in args else ["--no-cache"]
    outcome = run(argv, world, scratch, monkeypatch)
    assert outcome.code == code, outcome.err
    [line] = outcome.err_lines
    assert line.startswith("certauth: error: "), line
    assert len(line) < 1000, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert "pw" not in line.replace("pw@", "")  # the cache URL's password is never echoed
    assert ":pw@" not in line


def test_an_undecodable_file_name_is_printed_back_as_its_bytes(
    world: World, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `certauth cert create --out $'caf\xe9'` on a UTF-8 system: Python sees "caf\udce9".
    out = f"{scratch}/caf\udce9"
    outcome = run(
        ["cert", "create", "--subject", "CN=x", "--key", "ec-p256", "--out", out],
        world,
        scratch,
        monkeypatch,
    )
    assert outcome.code == 0, outcome.err
    assert os.fsencode(out) + b"/x.crt" in outcome.raw_out
    assert (scratch / "caf\udce9" / "x.key").exists()
