"""``certauth._record.Record``, the base of the internal value classes on the token path: value
equality, hashing and a repr from the slots, and the classes whose repr must not show a secret
(a password, a signed form, a key file's bytes) keep their own."""

from __future__ import annotations

from pathlib import Path

from certauth._files import OutputFile
from certauth._flow import Failure, Reply, Send, Sleep
from certauth._record import Record
from certauth.credential.client_auth import CertificateFiles
from certauth.credential.planner import PLAIN, Call
from certauth.protocol import TokenRequest


class _Wait(Record):
    """Another record with the slots and values of a Sleep."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


def test_records_are_equal_by_type_and_values() -> None:
    assert Sleep(1.0) == Sleep(1.0)
    assert Sleep(1.0) != Sleep(2.0)
    assert Failure("timeout", "x") == Failure("timeout", "x", 0.0)
    assert Failure("timeout", "x") != Failure("timeout", "x", 1.0)
    # Another record type with the same values is not equal, nor is a tuple of them.
    assert Call() == PLAIN
    assert Call() != Sleep(0.0)
    assert Sleep(1.0) != _Wait(1.0)
    assert Sleep(1.0) != (1.0,)


def test_records_hash_by_value() -> None:
    assert hash(Call("t", True)) == hash(Call("t", True))
    assert {Call("t"), Call("t"), PLAIN} == {Call("t"), Call()}


def test_the_repr_names_the_slots() -> None:
    assert repr(Failure("tls", "bad", 0.5)) == "Failure(detail='bad', elapsed=0.5, kind='tls')"
    assert repr(Reply(200, {}, b"{}")) == "Reply(body=b'{}', elapsed=0.0, headers={}, status=200)"


def test_no_secret_in_a_repr() -> None:
    files = CertificateFiles("/run/app.pfx", None, "pfx-Password-1")
    assert "pfx-Password-1" not in repr(files)
    assert repr(files) == "CertificateFiles(cert_path='/run/app.pfx', key_path=None)"
    form = {"client_assertion": "eyJ.secret.sig", "client_id": "app"}
    request = TokenRequest("https://login.example/token", form)
    assert repr(request) == (
        "TokenRequest(url='https://login.example/token', fields=['client_assertion', 'client_id'])"
    )
    send = Send("POST", "https://login.example/token", {}, b"client_assertion=eyJ.secret.sig")
    assert "secret" not in repr(send)
    key = OutputFile(Path("app.key"), b"-----BEGIN PRIVATE KEY-----", secret=True)
    assert repr(key) == "OutputFile(path='app.key', 27 bytes, secret=True)"
