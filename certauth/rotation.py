"""Zero-touch certificate rotation through Microsoft Graph ``addKey``/``removeKey``.

The safe way to roll an app's certificate is to add the next one *next to* the current one,
let every service switch, and only then remove the old one; a Graph ``PATCH`` of
``keyCredentials`` (or ``az ad app credential reset`` without ``--append``) replaces the whole
array instead and locks out every service still on the old certificate. Graph's ``addKey`` and
``removeKey`` let an application roll its own keys with no Graph permission, by proving that it
holds a key it already has (https://learn.microsoft.com/en-us/graph/api/application-addkey).

:func:`rotate_certificate` runs the six steps, each logged in one line, and records the step
reached in a state file in the output folder, so that a rerun after a crash, a kill or a
network failure at any point carries on from there and converges (one new key registered, the
old one removed, no key file lost); a lock keeps two rotations of one folder apart:

1. create the next certificate (same subject and key type, new files, never overwriting);
2. ``addKey`` it, with a Graph token and a proof signed by the current certificate;
3. wait until the token endpoint accepts it (registration changes take time to propagate);
4. switch what the services read (``cert_path``) to it, atomically, keeping the old file;
5. wait ``grace`` seconds for the services to pick it up;
6. ``removeKey`` the old key, with a Graph token and a proof from the *new* certificate.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certauth import _graph, _served
from certauth._files import ensure_private_dir
from certauth._http import resolve_verify
from certauth._keyfiles import Password
from certauth._rotation_run import LOCK_FILE, STATE_FILE, RotationRun, date, iso
from certauth.authority import check_endpoint_url, resolve_authority
from certauth.certificates import check_validity_days
from certauth.errors import InvalidArgumentError, LocalInputError

__all__ = [
    "STATE_FILE",
    "RotationError",
    "RotationResult",
    "rotate_certificate",
]

logger = logging.getLogger("certauth.rotation")


class RotationError(LocalInputError):
    """A rotation cannot go on: another one holds the folder's lock, the state file belongs to
    another certificate, the token endpoint never accepted the new certificate (CLI exit 3)."""


@dataclass
class RotationResult:
    """What :func:`rotate_certificate` did (or, with ``dry_run``, would do)."""

    #: ``done``, ``waiting`` (switched; the old key is removed by a rerun after
    #: ``remove_after``) or ``planned`` (dry run).
    status: str
    #: One line per step taken (or planned).
    steps: list[str] = field(default_factory=list)
    old_thumbprint: str | None = None
    new_thumbprint: str | None = None
    #: The new certificate's files in the output folder.
    new_files: list[str] = field(default_factory=list)
    object_id: str | None = None
    new_key_id: str | None = None
    old_key_id: str | None = None
    #: Epoch seconds after which the old key is removed.
    remove_after: float | None = None
    #: Whether the old key was removed from the app registration.
    old_key_removed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``certauth cert rotate --json``)."""
        return {
            "status": self.status,
            "steps": self.steps,
            "old_thumbprint": self.old_thumbprint,
            "new_thumbprint": self.new_thumbprint,
            "new_files": self.new_files,
            "object_id": self.object_id,
            "new_key_id": self.new_key_id,
            "old_key_id": self.old_key_id,
            "remove_after": iso(self.remove_after) if self.remove_after else None,
            "old_key_removed": self.old_key_removed,
        }


def rotate_certificate(
    cert_path: str | os.PathLike[str],
    *,
    tenant_id: str,
    client_id: str,
    out_dir: str | os.PathLike[str],
    key_path: str | os.PathLike[str] | None = None,
    password: Password = None,
    days: int = 365,
    grace: float = 3600.0,
    wait: bool = True,
    app_object_id: str | None = None,
    authority: str | None = None,
    graph_url: str | None = None,
    verify: Any = None,
    propagation_timeout: float = 600.0,
    keep_old: bool = True,
    on_switch: Callable[[], None] | None = None,
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> RotationResult:
    """Rotate the certificate of app ``client_id`` in ``tenant_id``: see the module docstring.

    ``cert_path`` is the file the services read (a PEM bundle, a PFX, or with ``key_path`` a
    certificate and key pair; a symbolic link to one is switched by replacing the link);
    ``out_dir`` receives the new certificate's files and the state file. ``grace`` (seconds)
    passes between the switch and the removal of the old key: with ``wait`` the call sleeps
    through it, otherwise it returns ``status="waiting"`` and a rerun after ``remove_after``
    finishes. ``app_object_id`` is the application's object id (looked up through Graph when
    not given: that read needs Application.Read.All or Application.ReadWrite.OwnedBy).
    ``authority`` is the cloud's login host; ``graph_url`` where Graph requests go (default:
    that cloud's Graph); ``verify`` the TLS trust for both, as for the credentials.
    ``propagation_timeout`` bounds the wait for the token endpoint to accept the new
    certificate (two successful token requests in a row, a second apart). ``keep_old=False``
    deletes the old key's files at the end instead of keeping them renamed. ``on_switch`` runs
    right after the served files are switched and before that step is recorded (for example,
    copy the file into a Kubernetes secret): if it raises, the rotation stops before anything
    is removed, and a rerun switches again and calls it again. ``dry_run`` changes nothing and
    sends nothing: the result lists the plan. ``log`` receives one line per step (default: the
    ``certauth.rotation`` logger). The served files keep their mode, owner and group.
    """
    days = check_validity_days(days)
    if not (0 <= grace < 10 * 365 * 86400):
        raise InvalidArgumentError(f"grace={grace!r}: give a number of seconds, 0 or more")
    if not (0 < propagation_timeout <= 86400):
        raise InvalidArgumentError(
            f"propagation_timeout={propagation_timeout!r}: give seconds from 1 to 86400"
        )
    if not client_id:
        raise InvalidArgumentError("client id is empty; give client_id=")
    # Every setting is checked before anything is written or sent, a dry run's included: the
    # one resolution of tenant and cloud the credentials use, Graph's URL, the output folder.
    resolve_authority(tenant_id, host=authority)
    graph_url = check_endpoint_url(graph_url or _graph.graph_for(authority), what="graph_url")
    _check_out_dir(Path(out_dir))
    if verify is not None:
        verify = resolve_verify(verify)  # a CA file that cannot be used fails here, not later
    served = _served.Served.of(cert_path, key_path)
    out = Path(out_dir).absolute()
    run = RotationRun(
        served=served,
        out=out,
        tenant_id=tenant_id,
        client_id=client_id,
        password=password,
        days=days,
        grace=grace,
        wait=wait,
        object_id=app_object_id,
        authority=authority,
        graph_url=graph_url.rstrip("/"),
        verify=verify,
        propagation_timeout=propagation_timeout,
        keep_old=keep_old,
        on_switch=on_switch,
        log=log or logger.info,
        clock=clock,
        sleep=sleep,
    )
    if dry_run:
        return _plan(run)
    served.check_writable(out)
    if not (out / STATE_FILE).exists():
        run.check_current(served.load(password))  # before step 1 writes anything
    ensure_private_dir(out)
    with _locked(out):
        result: RotationResult = run.execute()
        return result


def _check_out_dir(folder: Path) -> None:
    """Refuse an output folder that is a file, or lies under one (the first existing level
    must be a directory); a missing folder is created when the rotation starts."""
    level = folder
    try:
        while not level.exists() and level.parent != level:
            level = level.parent
        usable = level.is_dir()
    except OSError as exc:  # a name too long, a loop of links
        raise LocalInputError(
            f"{folder}: cannot use as the output folder ({exc.strerror or exc})"
        ) from None
    if not usable:
        raise LocalInputError(
            f"{folder}: cannot be the output folder: {level} is not a directory; choose another "
            "out_dir="
        )


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the folder's rotation lock (flock: released by the kernel if the process dies)."""
    import fcntl

    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RotationError(
                    f"{folder}: another rotation is running on this folder (it holds "
                    f"{LOCK_FILE}); wait for it to finish"
                ) from None
            raise
        yield
    finally:
        os.close(fd)


def _plan(run: RotationRun) -> RotationResult:
    """What a run would do from where the state file says it stands (``dry_run``)."""
    result = RotationResult(status="planned")
    state = run.load_state() if run.state_path.exists() else None
    run.state = state or {}
    if state is None:
        current = run.served.load(run.password)
        run.check_current(current)
        result.old_thumbprint = current.thumbprint()
    else:
        result.old_thumbprint = state["old"]["thumbprint"]
        result.steps.append(
            f"resume the rotation recorded in {run.state_path} after step '{state.get('step')}'"
        )
    if not run.done("created"):
        reference = run.served.load(run.password)
        stem = f"{run.served.cert.stem}-{date(run.clock())}"
        names = (
            _served.free_names(run.out, stem, run.served.suffixes)
            if run.out.is_dir()
            else [run.out / f"{stem}{suffix}" for suffix in run.served.suffixes]
        )
        result.new_files = [str(path) for path in names]
        result.steps.append(
            f"1/6 create {', '.join(result.new_files)} ({reference.subject}, "
            f"{reference.key_description}, {run.days} days)"
        )
    if not run.done("added"):
        object_id = run.given_object_id or "looked up by appId"
        result.steps.append(
            f"2/6 addKey the new certificate to app {run.client_id} (object id: {object_id}) "
            f"at {run.graph_url}, proof signed by {result.old_thumbprint}"
        )
    if not run.done("accepted"):
        result.steps.append(
            f"3/6 wait until the token endpoint accepts it (at most "
            f"{run.propagation_timeout:.0f} s)"
        )
    if not run.done("switched"):
        result.steps.append(
            f"4/6 switch {', '.join(str(p) for p in run.served.paths)} to it, keeping the old "
            "files renamed .retired-DATE"
        )
    if not run.done("removed"):
        result.steps.append(
            f"5/6 wait {run.grace:.0f} s (grace), then 6/6 removeKey the old certificate "
            f"{result.old_thumbprint}, proof signed by the new one"
            + ("" if run.keep_old else ", and delete its old files")
        )
    for line in result.steps:
        run.log(f"dry run: {line}")
    return result
