"""``certauth token`` served from the file cache before click is imported (issue 19).

:mod:`certauth.cli._fast_token` reads a strict subset of the command line and serves the
token the file cache holds; for anything else it declines and the click command runs. It must
never change what the command does: each command line and environment below runs twice from
the same cache, once through ``main`` as shipped and once with the fast path off (the click
command alone), and stdout, stderr, the exit code and the requests the token endpoint saw must
be the same. Each case also says whether the fast path is expected to serve it, so a path that
silently declines everything (or serves what it should not) fails here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest

import certauth.cli._fast_token as fast
import certauth.cli._token_settings as token_settings
import certauth.cli.main as cli_main
import certauth.cli.token as token_module
from certauth.certificates import Certificate, generate_certificate
from certauth.cli._common import FiniteFloatRange, PathText, SpelledChoice, Text, Url
from certauth.cli._values import ALGS, MAX_TIMEOUT, MIN_TIMEOUT
from certauth.cli.token import token as token_command
from certauth.emulator import Emulator

CLIENT = "11111111-2222-3333-4444-5555555555fa"
SCOPE = "api://fast/.default"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


class Files:
    """The files the command lines name."""

    def __init__(self, folder: Path, rsa_cert: Certificate) -> None:
        self.pem = folder / "app.pem"
        self.pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
        self.crt = folder / "app.crt"
        self.crt.write_bytes(rsa_cert.pem)
        self.key = folder / "app.key"
        self.key.write_bytes(rsa_cert.private_key_pem())
        self.encrypted_key = folder / "app-enc.key"
        self.encrypted_key.write_bytes(rsa_cert.private_key_pem("fast-pw"))
        stranger = generate_certificate("CN=stranger", key_type="ec-p256")
        self.wrong_key = folder / "wrong.pem"
        self.wrong_key.write_bytes(stranger.private_key_pem() + rsa_cert.pem)
        self.password = folder / "password.txt"
        self.password.write_text("fast-pw\n")


@pytest.fixture
def files(tmp_path: Path, rsa_cert: Certificate) -> Files:
    return Files(tmp_path, rsa_cert)


def _base(tenant: Emulator, files: Files) -> list[str]:
    return [
        "token",
        "--tenant",
        tenant.tenant_id,
        "--authority-host",
        tenant.authority_host,
        "--client-id",
        CLIENT,
        "--cert",
        str(files.pem),
        "--scope",
        SCOPE,
    ]


class Run:
    """One run of ``main``: what it printed and returned, and what the fast path did."""

    def __init__(self, code: int, out: str, err: str, requests: int, served: bool) -> None:
        self.code, self.out, self.err, self.requests, self.served = code, out, err, requests, served

    def shown(self) -> tuple[int, str, str, int]:
        return (self.code, self.out, self.err, self.requests)


@pytest.fixture
def run(
    tenant: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[list[str], bool], Run]:
    """Run ``main(argv)`` with (or without) the fast path; the clock the verbose line and
    ``--output json`` read is fixed, so that two runs a second apart print the same."""
    clock = types.SimpleNamespace(time=lambda: 1_700_000_000.0)
    monkeypatch.setattr(token_settings, "time", clock)
    monkeypatch.setattr(token_module, "time", clock)
    served: list[int | None] = []
    serve = fast.serve_cached_token

    def spy(words: list[str]) -> int | None:
        served.append(serve(words))
        return served[-1]

    monkeypatch.setattr(fast, "serve_cached_token", spy)

    def call(argv: list[str], fast_path: bool) -> Run:
        served.clear()
        monkeypatch.setattr(cli_main, "_try_fast_path", fast_path)
        before = tenant.request_count
        capsys.readouterr()
        try:
            code = cli_main.main(argv)
        except SystemExit as exc:  # click's shell completion exits
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Run(code, out, err, tenant.request_count - before, served == [0])

    return call


#: A token the emulator issued (two runs that each asked for one get different ones).
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


def _compare(
    run: Callable[[list[str], bool], Run],
    argv: list[str],
    cache: Path,
    *,
    served: bool,
) -> Run:
    """Run ``argv`` with the fast path and with the click path alone, from the same cache;
    assert they printed, returned and requested the same."""
    snapshot = cache.with_name("snapshot")
    if cache.exists():
        shutil.copytree(cache, snapshot)
    with_fast = run(argv, True)
    shutil.rmtree(cache, ignore_errors=True)
    if snapshot.exists():
        shutil.copytree(snapshot, cache)
        shutil.rmtree(snapshot)
    alone = run(argv, False)
    assert not alone.served
    assert with_fast.served is served, (with_fast.code, with_fast.err)
    if with_fast.requests:  # each run got a token of its own: compare all but the token
        assert _JWT.sub("<token>", with_fast.out) == _JWT.sub("<token>", alone.out)
        assert (with_fast.code, with_fast.err, with_fast.requests) == (
            alone.code,
            alone.err,
            alone.requests,
        )
    else:
        assert with_fast.shown() == alone.shown()
    if served:
        assert with_fast.requests == 0
    return with_fast


@pytest.fixture
def cache(
    tenant: Emulator,
    files: Files,
    cli_env: None,
    tmp_path: Path,
    run: Callable[[list[str], bool], Run],
) -> Path:
    """The file cache, holding the token for the base command line (fetched by the click
    path)."""
    filled = run(_base(tenant, files), False)
    assert (filled.code, filled.requests) == (0, 1), filled.err
    return tmp_path / "cache"


def _cases(tenant: Emulator, files: Files) -> dict[str, tuple[list[str], dict[str, str], bool]]:
    """name -> (argv, environment, whether the fast path serves it)."""
    base = _base(tenant, files)
    host, tid = tenant.authority_host, tenant.tenant_id
    env_only = {
        "AZURE_TENANT_ID": tid,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_CLIENT_CERTIFICATE_PATH": str(files.pem),
        "AZURE_AUTHORITY_HOST": host,
    }
    equals = [
        "token",
        f"--tenant={tid}",
        f"--authority-host={host}",
        f"--client-id={CLIENT}",
        f"--cert={files.pem}",
        f"--scope={SCOPE}",
    ]
    by_endpoint = ["token", "--token-endpoint", tenant.token_endpoint, "--client-id", CLIENT]
    by_endpoint += ["--cert", str(files.pem), "--scope", SCOPE]
    split_key = [*base[:-4], "--cert", str(files.crt), "--key", str(files.key), *base[-2:]]
    encrypted = [*split_key[:-3], str(files.encrypted_key), *split_key[-2:]]
    cases: dict[str, tuple[list[str], dict[str, str], bool]] = {
        # Served: the subset, in its forms.
        "base": (base, {}, True),
        "equals forms": (equals, {}, True),
        "output header": ([*base, "--output", "header"], {}, True),
        "output env": ([*base, "-o", "env"], {}, True),
        "output=token": ([*base, "--output=token"], {}, True),
        "environment only": (["token", "--scope", SCOPE], env_only, True),
        "flags win over the environment": (
            base,
            {**env_only, "AZURE_TENANT_ID": "other.onmicrosoft.com", "AZURE_CLIENT_ID": "x"},
            True,
        ),
        "timeouts and ca file": (
            [*base, "--timeout", "5", "--total-timeout=12.5", "--ca-file", str(files.crt)],
            {},
            True,
        ),
        "alg in any case": ([*base, "--alg", "rs256"], {}, True),
        "scope twice": ([*base, "--scope", SCOPE], {}, True),
        "token endpoint": (by_endpoint, {}, True),
        "separate key file": (split_key, {}, True),
        "encrypted key, password from the environment": (
            encrypted,
            {"AZURE_CLIENT_CERTIFICATE_PASSWORD": "fast-pw"},
            True,
        ),
        "verbose": (base, {"CERTAUTH_VERBOSE": "1"}, True),
        "send chain from the environment": (
            base,
            {"AZURE_CLIENT_SEND_CERTIFICATE_CHAIN": "true"},
            True,
        ),
        "empty variables count as unset": (base, {"AZURE_CLIENT_SECRET": ""}, False),
        # Declined: the click command serves, refuses or fetches.
        "help": ([*base, "--help"], {}, False),
        "short help": (["token", "-h"], {}, False),
        "double dash": ([*base, "--"], {}, False),
        "argument": ([*base, "extra"], {}, False),
        "unknown option": ([*base, "--bogus", "1"], {}, False),
        "x5c": ([*base, "--x5c"], {}, False),
        "json": ([*base, "--json"], {}, False),
        "output json": ([*base, "-o", "json"], {}, False),
        "output curl-config": ([*base, "--output", "curl-config"], {}, False),
        "output in capitals": ([*base, "--output", "HEADER"], {}, False),
        "short option with equals": ([*base, "-o=header"], {}, False),
        "short option attached": ([*base, "-oheader"], {}, False),
        "repeated tenant": ([*base, "--tenant", tid], {}, False),
        "repeated output": ([*base, "-o", "env", "--output", "env"], {}, False),
        "missing value": ([*base, "--alg"], {}, False),
        "value like an option": ([*base[:2], "--client-id", *base[3:]], {}, False),
        "no cache": ([*base, "--no-cache"], {}, False),
        "redis cache": ([*base, "--cache", "ftp://nowhere"], {}, False),
        "redis cache variable": (base, {"CERTAUTH_CACHE_URL": "ftp://nowhere"}, False),
        "namespace variable": (base, {"CERTAUTH_CACHE_NAMESPACE": "ns"}, False),
        "password env option": ([*base, "--password-env", "NO_SUCH_VAR_FAST"], {}, False),
        "password file option": (
            [*encrypted, "--password-file", str(files.password)],
            {},
            False,
        ),
        "client secret option": ([*base, "--client-secret-env", "NO_SUCH_VAR_FAST"], {}, False),
        "client secret variable": (base, {"AZURE_CLIENT_SECRET": "s3cret"}, False),
        "federated variable": (base, {"AZURE_FEDERATED_TOKEN_FILE": str(files.password)}, False),
        "mtls": ([*base, "--mtls"], {}, False),
        "dpop": ([*base, "--dpop"], {}, False),
        "pkcs11 module": ([*base, "--pkcs11-module", "/nowhere.so"], {}, False),
        "pkcs11 key": ([*base, "--key", "pkcs11:token=t;object=o"], {}, False),
        "completion": (
            base,
            {"_CERTAUTH_COMPLETE": "bash_complete", "COMP_WORDS": "certauth t", "COMP_CWORD": "1"},
            False,
        ),
        # Declined: invalid values, refused by click with its message.
        "empty tenant": (["token", "--tenant", "", *base[3:]], {}, False),
        "blank tenant": (["token", "--tenant", "  ", *base[3:]], {}, False),
        "empty tenant with equals": (["token", "--tenant=", *base[3:]], {}, False),
        "control character": (["token", "--tenant", "a\tb", *base[3:]], {}, False),
        "undecodable scope": ([*base[:-1], "api://\udcff/.default"], {}, False),
        "empty cert": ([*base[:-4], "--cert", "", *base[-2:]], {}, False),
        "empty scope": ([*base[:-1], ""], {}, False),
        "bad url": (
            ["token", "--tenant", tid, "--authority-host", "https://[bad", *base[5:]],
            {},
            False,
        ),
        "bad port": (
            ["token", "--tenant", tid, "--authority-host", "h:99999", *base[5:]],
            {},
            False,
        ),
        "unknown alg": ([*base, "--alg", "HS256"], {}, False),
        "alg the key refuses": ([*base, "--alg", "ES256"], {}, False),
        "timeout not a number": ([*base, "--timeout", "soon"], {}, False),
        "timeout too short": ([*base, "--timeout", "0"], {}, False),
        "timeout nan": ([*base, "--timeout", "nan"], {}, False),
        "timeout inf": ([*base, "--total-timeout", "inf"], {}, False),
        "timeout too long": ([*base, "--timeout", str(MAX_TIMEOUT + 1)], {}, False),
        "tenant and token endpoint": (
            [*base, "--token-endpoint", tenant.token_endpoint],
            {},
            False,
        ),
        "no scope": (base[:-2], {}, False),
        "no client": (["token", *base[1:5], *base[7:]], {}, False),
        "bad send-chain variable": (base, {"AZURE_CLIENT_SEND_CERTIFICATE_CHAIN": "maybe"}, False),
        "b2c policy": ([*base, "--b2c-policy", "B2C_1_signin"], {}, False),
        "no such certificate": ([*base[:-4], "--cert", "/no/such/app.pem", *base[-2:]], {}, False),
        "wrong key": ([*base[:-4], "--cert", str(files.wrong_key), *base[-2:]], {}, False),
        "issuer": (["token", "--issuer", tenant.issuer, *base[5:]], {}, False),
        "another scope (missing entry)": ([*base[:-1], "api://other/.default"], {}, False),
    }
    return cases


def _case_names() -> list[str]:
    """The names of :func:`_cases`, for ``parametrize`` (the cases themselves need the running
    emulator's URLs and the test's files)."""

    class _Stub:
        authority_host = "https://h"
        tenant_id = "t"
        token_endpoint = "https://h/t/oauth2/v2.0/token"
        issuer = "https://h/t/v2.0"

    folder = Path("/nonexistent")

    class _StubFiles:
        pem = crt = key = encrypted_key = wrong_key = password = folder

    return list(_cases(_Stub(), _StubFiles()))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", _case_names())
def test_the_fast_path_prints_what_the_click_command_prints(
    name: str,
    tenant: Emulator,
    files: Files,
    cache: Path,
    run: Callable[[list[str], bool], Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, environment, served = _cases(tenant, files)[name]
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    _compare(run, argv, cache, served=served)


@pytest.mark.usefixtures("cli_env")
def test_a_missing_entry_goes_to_the_server(
    tenant: Emulator, files: Files, tmp_path: Path, run: Callable[[list[str], bool], Run]
) -> None:
    result = _compare(run, _base(tenant, files), tmp_path / "cache", served=False)
    assert (result.code, result.requests) == (0, 1)


def test_a_stale_entry_goes_to_the_credential(
    tenant: Emulator,
    files: Files,
    cache: Path,
    run: Callable[[list[str], bool], Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry due for renewal (by the lookup's clock) is not served: the credential decides
    (here, by its own clock, it still serves it)."""
    import certauth._cache_lookup as lookup

    monkeypatch.setattr(lookup, "time", types.SimpleNamespace(time=lambda: 4_000_000_000.0))
    _compare(run, _base(tenant, files), cache, served=False)


def test_a_damaged_entry_is_not_served(
    tenant: Emulator, files: Files, cache: Path, run: Callable[[list[str], bool], Run]
) -> None:
    (entry,) = cache.glob("*.token")
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 1
    entry.write_bytes(bytes(blob))
    result = _compare(run, _base(tenant, files), cache, served=False)
    assert (result.code, result.requests) == (0, 1)


# -- the fast path's table is the click command's ------------------------------------------------

_KINDS: dict[str, Callable[[click.Parameter], bool]] = {
    "text": lambda p: type(p.type) is Text and not p.multiple,
    "texts": lambda p: type(p.type) is Text and p.multiple,
    "path": lambda p: type(p.type) is PathText,
    "url": lambda p: type(p.type) is Url and not p.type.bare_host,
    "host": lambda p: type(p.type) is Url and p.type.bare_host,
    "alg": lambda p: type(p.type) is SpelledChoice and tuple(p.type.choices) == ALGS,
    "seconds": lambda p: (
        type(p.type) is FiniteFloatRange and (p.type.min, p.type.max) == (MIN_TIMEOUT, MAX_TIMEOUT)
    ),
    "output": lambda p: (
        type(p.type) is click.Choice
        and p.type.case_sensitive
        and set(fast.SERVED_OUTPUTS) <= set(p.type.choices)
    ),
}


def test_each_option_read_is_the_click_commands() -> None:
    """Renaming an option of ``certauth token``, or changing its type, fails here until the
    fast path's table follows."""
    params = {p.name: p for p in token_command.params}
    by_flag = {flag: p for p in token_command.params for flag in p.opts}
    for flag, (name, kind) in fast.OPTIONS.items():
        param = by_flag.get(flag)
        assert param is not None, f"{flag}: not an option of certauth token"
        assert param.name == name, flag
        assert _KINDS[kind](param), f"{flag}: its click type is not a {kind} option"
        assert not getattr(param, "envvar", None), f"{flag} reads a variable the table ignores"
    for name in fast.UNSET:
        assert name in params
    # Every variable an option reads is one the fast path declines.
    variables = {p.envvar for p in token_command.params if getattr(p, "envvar", None)}
    assert variables <= set(fast.DECLINED_ENVIRONMENT)
    # The options the table reads plus those it leaves unset are the settings it passes on;
    # every other option of the command makes it decline (it is not in the table).
    read = {name for name, _ in fast.OPTIONS.values()}
    assert not read & set(fast.UNSET)


# -- it engages: no click, no httpx, no ssl -----------------------------------------------------


def _subprocess_run(argv: list[str], cache: Path) -> dict[str, Any]:
    code = (
        "import json, sys\n"
        "from certauth.cli.main import main\n"
        f"rc = main({argv!r})\n"
        "print(json.dumps({'rc': rc, 'imported': "
        "[m for m in ('click', 'httpx', 'ssl', 'certauth.cli._group') if m in sys.modules]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
    env["CERTAUTH_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    token, report = done.stdout.splitlines()
    return {"token": token, **json.loads(report)}


def test_a_cache_hit_imports_neither_click_nor_httpx_nor_ssl(
    tenant: Emulator, files: Files, tmp_path: Path
) -> None:
    cache = tmp_path / "subprocess-cache"
    miss = _subprocess_run(_base(tenant, files), cache)
    assert miss["rc"] == 0
    assert "click" in miss["imported"]
    hit = _subprocess_run(_base(tenant, files), cache)
    assert hit == {"rc": 0, "token": miss["token"], "imported": []}


def test_importing_main_imports_no_click() -> None:
    code = "import sys, certauth.cli.main; print('click' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_group_names_are_still_offered_by_main() -> None:
    from certauth.cli import _group

    for name in ("cli", "COMMANDS", "EXIT_CODES_HELP", "LazyGroup"):
        assert getattr(cli_main, name) is getattr(_group, name)
    with pytest.raises(AttributeError):
        _ = cli_main.no_such_name


# -- the shared rules refuse on both paths --------------------------------------------------------

#: name -> (what replaces the base command's options, fragments of the one-line error). The
#: differential above cannot see a rule both paths share go wrong; these pin what it says.
_REFUSED: dict[str, tuple[list[str], dict[str, str], tuple[str, ...]]] = {
    "blank tenant": (["--tenant", "  "], {}, ("--tenant", "the value is empty")),
    "empty tenant": (["--tenant="], {}, ("--tenant", "the value is empty")),
    "control character": (["--tenant", "a\x1bb"], {}, ("--tenant", "control character")),
    "undecodable": (["--tenant", "a\udcffb"], {}, ("--tenant", "not UTF-8")),
    "empty certificate path": (["--cert", ""], {}, ("--cert", "the path is empty")),
    "bad port": (["--authority-host", "host:99999"], {}, ("--authority-host", "not a valid URL")),
    "bad url": (["--token-endpoint", "https://[x"], {}, ("--token-endpoint", "not a valid URL")),
    "unknown alg": (["--alg", "HS256"], {}, ("--alg", "'HS256' is not one of RS256, PS256")),
    "timeout nan": (["--timeout", "nan"], {}, ("--timeout", "'nan' is not a finite number")),
    "timeout zero": (["--timeout", "0"], {}, ("--timeout", "not in the range")),
    "timeout text": (["--total-timeout", "1m"], {}, ("--total-timeout", "not a valid float")),
    "exclusive": (["--issuer", "https://h/t/v2.0"], {}, ("--tenant and --issuer are exclusive",)),
    "send chain": ([], {"AZURE_CLIENT_SEND_CERTIFICATE_CHAIN": "maybe"}, ("use true or false",)),
}


@pytest.mark.parametrize("name", list(_REFUSED))
def test_a_refused_value_is_a_usage_error_on_both_paths(
    name: str,
    tenant: Emulator,
    files: Files,
    cache: Path,
    run: Callable[[list[str], bool], Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replaced, environment, fragments = _REFUSED[name]
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    argv = _base(tenant, files)
    for option in replaced[::2] if replaced[:1] != ["--tenant="] else ["--tenant"]:
        if option in argv:
            index = argv.index(option)
            del argv[index : index + 2]
    argv += replaced
    result = _compare(run, argv, cache, served=False)
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("certauth: error: ")
    assert result.err.count("\n") == 1
    for fragment in fragments:
        assert fragment in result.err


@pytest.mark.usefixtures("cache")
def test_flags_win_over_the_environment_on_both_paths(
    tenant: Emulator,
    files: Files,
    run: Callable[[list[str], bool], Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flag naming the server or the client wins over the variable (the variable alone would
    name another entry, which is missing: the run would go to the server)."""
    monkeypatch.setenv("AZURE_TENANT_ID", "contoso.onmicrosoft.com")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000000b")
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(files.wrong_key))
    for fast_path in (True, False):
        result = run(_base(tenant, files), fast_path)
        assert (result.code, result.requests, result.served) == (0, 0, fast_path), result.err


@pytest.mark.parametrize(
    ("output", "line"),
    [
        ("token", "{token}"),
        ("header", "Authorization: Bearer {token}"),
        ("env", "ACCESS_TOKEN={token}"),
    ],
)
def test_what_a_hit_prints(
    output: str,
    line: str,
    tenant: Emulator,
    files: Files,
    cache: Path,
    run: Callable[[list[str], bool], Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = json.loads(run([*_base(tenant, files), "-o", "json"], False).out)
    monkeypatch.setenv("CERTAUTH_VERBOSE", "1")
    result = _compare(run, [*_base(tenant, files), "-o", output], cache, served=True)
    assert result.out == line.format(token=stored["access_token"]) + "\n"
    assert result.err == f"certauth: token valid for {stored['expires_on'] - 1_700_000_000} s\n"


def test_a_ctrl_c_during_the_lookup_is_reported_as_the_command_reports_it(
    tenant: Emulator,
    files: Files,
    cache: Path,
    run: Callable[[list[str], bool], Run],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interrupted while it looks in the cache, the fast path neither falls back to the click
    command nor prints a traceback: it says what the click command says when interrupted."""

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(fast, "stored_token", interrupted)
    monkeypatch.setattr(token_module, "stored_token", interrupted)
    with_fast, alone = run(_base(tenant, files), True), run(_base(tenant, files), False)
    assert with_fast.shown() == alone.shown() == (130, "", "\ncertauth: aborted\n", 0)
