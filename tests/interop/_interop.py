"""Helpers for the interop suite: certificates made by ``certauth cert create``, the algorithms
the emulator logged, and a way to see the assertion a peer library sent.

Not a test module (leading underscore); the tests import it by name (pytest puts this folder on
``sys.path``). How the peers are pointed at ``Emulator(tls=True)`` (see
tests/emulator/test_emulator_interop.py and the README's emulator section): MSAL obeys
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` over its ``verify=``, so those are removed;
azure-identity takes ``connection_verify=`` and ``disable_instance_discovery=True``, with
``authority`` as the emulator's ``https://HOST:PORT`` (the scheme kept: Python 3.10 would read
``127.0.0.1:PORT`` as a URL whose scheme is ``127.0.0.1``).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from certauth.certificates import Certificate, load_certificate
from certauth.cli.main import main

CLIENT_ID = "99999999-aaaa-bbbb-cccc-dddddddddddd"
SCOPE = "api://interop/.default"
PASSWORD = "interop-pfx-password-3b7e"


@dataclass(frozen=True)
class Generated:
    """One ``certauth cert create --pfx --bundle`` run: its files and what it printed."""

    directory: Path
    name: str
    report: dict[str, Any]
    password: str | None

    def path(self, suffix: str) -> Path:
        return self.directory / f"{self.name}{suffix}"

    @property
    def certificate(self) -> Certificate:
        """The files read back by certauth (key included)."""
        return load_certificate(self.path(".crt"), key=self.path(".key"), password=self.password)


def create(
    directory: Path, name: str, *, key: str = "rsa2048", password: str | None = None
) -> Generated:
    """Run ``certauth cert create --pfx --bundle --json`` (in-process) and return what it wrote."""
    args = ["cert", "create", "--subject", f"CN={name}", "--out", str(directory), "--name", name,
            "--key", key, "--pfx", "--bundle", "--json"]  # fmt: skip
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        if password is not None:
            patch.setenv("INTEROP_PASSWORD", password)
            args += ["--password-env", "INTEROP_PASSWORD"]
        assert main(args) == 0
    return Generated(directory, name, json.loads(printed.getvalue()), password)


class IssuedTokens:
    """What the emulator logged for each token it issued (its ``alg`` in particular)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def algs(self) -> list[str]:
        return [
            r.getMessage().split("alg=", 1)[1].split()[0]
            for r in self._caplog.records
            if r.getMessage().startswith("token issued")
        ]


def recording_session(ca_file: str) -> Any:
    """A ``requests.Session`` for MSAL's ``http_client=`` that keeps every form it POSTs.

    Real HTTP: it only remembers what went out, so a test can read the peer's assertion.
    """
    import requests

    class Recording(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self.verify = ca_file
            self.forms: list[dict[str, str]] = []

        def post(self, url: Any, data: Any = None, **kwargs: Any) -> Any:
            form = data if isinstance(data, dict) else parse_qs(data or "")
            self.forms.append({str(k): _text(v) for k, v in form.items()})
            return super().post(url, data=data, **kwargs)

    return Recording()


def _text(value: Any) -> str:
    # MSAL posts a dict with bytes (the assertion) and ints (client_info) among the strings.
    if isinstance(value, list):
        value = value[0]
    return value.decode() if isinstance(value, bytes) else str(value)
