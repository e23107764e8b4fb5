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
import datetime as dt
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certauth import _graph
from certauth._files import OutputFile, ensure_private_dir, write_files_atomically
from certauth._http import new_sync_client, resolve_verify, run_sync
from certauth._keyfiles import Password
from certauth.authority import check_endpoint_url, resolve_authority
from certauth.certificates import Certificate, check_validity_days, generate_certificate
from certauth.certificates import load_certificate as _load
from certauth.errors import (
    CertauthError,
    ConfigurationError,
    GraphError,
    InvalidArgumentError,
    LocalInputError,
    TokenRequestError,
    TransportError,
)
from certauth.protocol import RetryPolicy

__all__ = [
    "STATE_FILE",
    "RotationError",
    "RotationResult",
    "rotate_certificate",
]

logger = logging.getLogger("certauth.rotation")

#: The state file and the lock, in the output folder.
STATE_FILE = ".certauth-rotation.json"
LOCK_FILE = ".certauth-rotation.lock"
#: The steps, in order; the state file records the last one finished.
STEPS = ("created", "added", "accepted", "switched", "removed")
#: AADSTS700027: the assertion's certificate is not (yet) registered; what the token endpoint
#: answers for a new key until its registration has propagated.
_NOT_YET = "AADSTS700027"


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
            "remove_after": _iso(self.remove_after) if self.remove_after else None,
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
    certificate. ``keep_old=False`` deletes the old files at the end instead of keeping them
    renamed. ``dry_run`` changes nothing and sends nothing: the result lists the plan. ``log``
    receives one line per step (default: the ``certauth.rotation`` logger).
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
    run = _Rotation(
        served=_Served(Path(cert_path), Path(key_path) if key_path else None),
        out=Path(out_dir),
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
        log=log or logger.info,
        clock=clock,
        sleep=sleep,
    )
    if dry_run:
        return run.plan()
    ensure_private_dir(run.out)
    with _locked(run.out):
        return run.execute()


# -- the files the services read -----------------------------------------------------------------


@dataclass(frozen=True)
class _Served:
    """What the services read: one file (bundle or PFX) or a certificate and key pair."""

    cert: Path
    key: Path | None

    @property
    def paths(self) -> list[Path]:
        # The key first: between the two renames the pair does not match, and a credential
        # then keeps its old certificate (certauth's reload refuses a mismatching pair).
        return [self.key, self.cert] if self.key else [self.cert]

    @property
    def kind(self) -> str:
        if self.key:
            return "pair"
        return "pfx" if self.cert.suffix.lower() in (".pfx", ".p12") else "bundle"


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


def _date(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y%m%d")


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_type(certificate: Certificate) -> str:
    if certificate.key_type == "EC":
        return "ec-p256"
    return f"rsa{certificate.key_size}"


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


class _Rotation:
    """One run of :func:`rotate_certificate` (its settings, and the state it carries on)."""

    def __init__(self, *, served: _Served, out: Path, **settings: Any) -> None:
        self.served = served
        self.out = out
        self.tenant_id: str = settings["tenant_id"]
        self.client_id: str = settings["client_id"]
        self.password: Password = settings["password"]
        self.days: int = settings["days"]
        self.grace: float = settings["grace"]
        self.wait: bool = settings["wait"]
        self.given_object_id: str | None = settings["object_id"]
        self.authority: str | None = settings["authority"]
        self.graph_url: str = settings["graph_url"]
        self.verify: Any = settings["verify"]
        self.propagation_timeout: float = settings["propagation_timeout"]
        self.keep_old: bool = settings["keep_old"]
        self.log: Callable[[str], None] = settings["log"]
        self.clock: Callable[[], float] = settings["clock"]
        self.sleep: Callable[[float], None] = settings["sleep"]
        self.state: dict[str, Any] = {}
        self.result = RotationResult(status="done")
        self._certs: dict[str, Certificate] = {}

    # -- state ---------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def _load_state(self) -> dict[str, Any] | None:
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigurationError(
                f"{self.state_path}: cannot read the rotation state ({exc.strerror or exc})"
            ) from None
        try:
            state = json.loads(text)
        except ValueError:
            state = None
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ConfigurationError(
                f"{self.state_path}: not a rotation state certauth wrote; move it away to start "
                "a new rotation"
            )
        served = [str(path.absolute()) for path in self.served.paths]
        if state.get("served") != served:
            raise RotationError(
                f"{self.state_path}: a rotation of {', '.join(state.get('served') or [])} is "
                f"under way in this folder; finish it (rerun it with the same files) or use "
                "another output folder"
            )
        return state

    def _save(self, step: str | None = None) -> None:
        if step is not None:
            self.state["step"] = step
        data = (json.dumps(self.state, indent=2, sort_keys=True) + "\n").encode("utf-8")
        write_files_atomically([OutputFile(self.state_path, data, secret=True)], force=True)

    def _done(self, step: str) -> bool:
        reached = self.state.get("step")
        return reached in STEPS and STEPS.index(reached) >= STEPS.index(step)

    def _say(self, number: int, text: str) -> None:
        line = f"{number}/6 {text}"
        self.result.steps.append(line)
        self.log(line)

    # -- certificates --------------------------------------------------------------------------

    def _certificate(self, role: str) -> Certificate:
        """The ``old`` or ``new`` certificate with its key, loaded once."""
        if role not in self._certs:
            files = self.state[role]["files"]
            if role == "new" and self.served.kind == "pair":
                loaded = _load(files[0], key=files[1], password=self.password)
            else:
                loaded = _load(files[0], password=self.password)
            loaded.require_private_key()
            self._certs[role] = loaded
        return self._certs[role]

    def _read_served(self) -> Certificate:
        served = self.served
        loaded = _load(served.cert, key=served.key, password=self.password)
        loaded.require_private_key()
        return loaded

    def _next_names(self, base: str, now: float) -> list[Path]:
        suffixes = {"pair": [".crt", ".key"], "pfx": [".pfx"], "bundle": [".pem"]}[self.served.kind]
        stem = f"{base}-{_date(now)}"
        for attempt in range(1, 100):
            name = stem if attempt == 1 else f"{stem}-{attempt}"
            paths = [self.out / f"{name}{suffix}" for suffix in suffixes]
            if not any(os.path.lexists(path) for path in paths):
                return paths
        raise RotationError(f"{self.out}: 99 certificates named {stem}* already; clean it up")

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> RotationResult:
        state = self._load_state()
        if state is None:
            current = self._read_served()
            self.state = {
                "version": 1,
                "served": [str(path.absolute()) for path in self.served.paths],
                "started_at": self.clock(),
                "step": "started",
                "old": {"thumbprint": current.thumbprint(), "files": None},
            }
            self._certs["old"] = current
        else:
            self.state = state
            self.log(
                f"resuming the rotation recorded in {self.state_path} after step "
                f"'{state.get('step')}'"
            )
        self.result.old_thumbprint = self.state["old"]["thumbprint"]
        self._create()
        self._add()
        self._await_acceptance()
        self._switch()
        if not self._pause_for_grace():
            return self.result
        self._remove()
        return self.result

    def _create(self) -> None:
        if self._done("created"):
            self.result.new_thumbprint = self.state["new"]["thumbprint"]
            self.result.new_files = self.state["new"]["files"]
            return
        old = self._certs.get("old") or self._read_served()
        planned = self.state.get("new", {}).get("files")
        if planned:
            # Killed while writing: the writer is all-or-nothing per file, so keep what is
            # whole and consistent, and set aside anything else (never delete a key).
            adopted = self._adopt(planned)
            if adopted is None:
                for name in planned:
                    if os.path.lexists(name):
                        os.replace(name, f"{name}.partial-{int(self.clock())}")
                planned = None
        if not planned:
            base = self.served.cert.stem.split(".retired-")[0]
            paths = self._next_names(base, self.clock())
            self.state["new"] = {"files": [str(path) for path in paths], "thumbprint": None}
            self._save("creating")
            new = generate_certificate(old.subject, key_type=_key_type(old), days=self.days)
            write_files_atomically(self._files_for(new, paths))
            adopted = new
        assert adopted is not None
        self._certs["new"] = adopted
        self.state["new"]["thumbprint"] = adopted.thumbprint()
        self._save("created")
        self.result.new_thumbprint = adopted.thumbprint()
        self.result.new_files = self.state["new"]["files"]
        self._say(
            1,
            f"created {', '.join(self.state['new']['files'])} ({adopted.subject}, "
            f"{adopted.key_description}, until {_iso(adopted.not_after.timestamp())}, "
            f"thumbprint {adopted.thumbprint()})",
        )

    def _adopt(self, planned: list[str]) -> Certificate | None:
        if not all(os.path.isfile(name) for name in planned):
            return None
        try:
            if self.served.kind == "pair":
                found = _load(planned[0], key=planned[1], password=self.password)
            else:
                found = _load(planned[0], password=self.password)
            found.require_private_key()
        except CertauthError:
            return None
        return found

    def _files_for(self, new: Certificate, paths: list[Path]) -> list[OutputFile]:
        kind = self.served.kind
        if kind == "pair":
            return [
                OutputFile(paths[0], new.pem),
                OutputFile(paths[1], new.private_key_pem(self.password), secret=True),
            ]
        if kind == "pfx":
            return [OutputFile(paths[0], new.to_pfx(self.password), secret=True)]
        return [OutputFile(paths[0], new.private_key_pem(self.password) + new.pem, secret=True)]

    # -- Graph ---------------------------------------------------------------------------------

    def _graph_as(self, signer: Certificate) -> _graph.GraphRequest:
        from certauth.credential import CertificateCredential

        credential = CertificateCredential(
            self.tenant_id,
            self.client_id,
            certificate=signer,
            authority=self.authority,
            verify=self.verify,
        )
        scope = f"{_graph.graph_for(self.authority)}/.default"
        return _graph.GraphRequest(
            self.graph_url, lambda: credential.get_token(scope).token, RetryPolicy()
        )

    def _send(self, flow: Any) -> Any:
        with new_sync_client(self.verify) as client:
            return run_sync(flow, client)

    def _application(self, graph: _graph.GraphRequest) -> dict[str, Any] | None:
        """The application as Graph shows it, or ``None`` when reading it is not allowed
        (but its object id is known)."""
        object_id = self.state.get("object_id") or self.given_object_id
        try:
            found = self._send(
                graph.application(app_id=None if object_id else self.client_id, object_id=object_id)
            )
        except GraphError as exc:
            if exc.status_code == 403 and object_id:
                return None
            if exc.status_code == 403:
                raise GraphError(
                    f"{exc.message}: give the application's object id with app_object_id= "
                    "(portal: App registrations > the app > Overview > Object ID), or grant "
                    "the app Application.ReadWrite.OwnedBy",
                    url=exc.url,
                    status_code=exc.status_code,
                    code=exc.code,
                    graph_message=exc.graph_message,
                    request_id=exc.request_id,
                    date=exc.date,
                ) from None
            raise
        if not isinstance(found, dict) or not isinstance(found.get("id"), str):
            raise TransportError(f"{self.graph_url}: Graph's application has no id", url=None)
        return found

    def _key_id(self, application: dict[str, Any] | None, thumbprint: str) -> str | None:
        for credential in (application or {}).get("keyCredentials") or []:
            if isinstance(credential, dict) and _graph.thumbprint_of(credential) == thumbprint:
                key_id = credential.get("keyId")
                return key_id if isinstance(key_id, str) else None
        return None

    def _add(self) -> None:
        if self._done("added"):
            self.result.object_id = self.state.get("object_id")
            self.result.new_key_id = self.state.get("new_key_id")
            self.result.old_key_id = self.state.get("old_key_id")
            return
        old, new = self._certificate_or_served("old"), self._certificate("new")
        problem = old.validity_problem(dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc))
        if problem:
            # Graph: "Applications that don't have any existing valid certificates ... won't be
            # able to use this service action" (application-addkey): no proof can be made. Once
            # the new certificate is uploaded by hand, the rotation goes on with it.
            self._adopt_uploaded(new, problem)
            return
        graph = self._graph_as(old)
        application = self._application(graph)
        object_id = application["id"] if application else self.given_object_id
        assert object_id
        self.state["object_id"] = object_id
        self.state["old_key_id"] = self._key_id(application, old.thumbprint())
        registered = self._key_id(application, new.thumbprint())
        if registered is None:
            display = f"{new.common_name or new.subject} {_date(self.clock())} (certauth rotate)"
            answer = self._send(
                graph.add_key(
                    object_id,
                    _graph.key_credential(new, display),
                    _graph.build_proof(old, object_id, now=self.clock()),
                )
            )
            registered = answer.get("keyId") if isinstance(answer, dict) else None
        self.state["new_key_id"] = registered
        self._save("added")
        self.result.object_id = object_id
        self.result.new_key_id = registered
        self.result.old_key_id = self.state["old_key_id"]
        self._say(
            2,
            f"added the new certificate to app {self.client_id} (object id {object_id}) with "
            f"addKey, keyId {registered}; proof signed by {old.thumbprint()}",
        )

    def _adopt_uploaded(self, new: Certificate, problem: str) -> None:
        """The current certificate cannot sign a proof: carry on only if the new one was
        uploaded by hand (Graph, read with a token the new certificate gets, lists it)."""
        application = None
        with contextlib.suppress(CertauthError):
            application = self._application(self._graph_as(new))
        registered = self._key_id(application, new.thumbprint())
        if registered is None or application is None:
            raise RotationError(
                f"{self.served.cert}: the current certificate is {problem.split(';')[0]}, so "
                "Graph's addKey cannot be used (it needs a proof from a valid certificate): "
                f"upload the certificate in {self.state['new']['files'][0]} to the app "
                "registration by hand once (portal, or az ad app credential reset --cert @FILE "
                "--append), then rerun"
            )
        self.state["object_id"] = application["id"]
        self.state["old_key_id"] = self._key_id(application, self.state["old"]["thumbprint"])
        self.state["new_key_id"] = registered
        self._save("added")
        self.result.object_id, self.result.new_key_id = application["id"], registered
        self.result.old_key_id = self.state["old_key_id"]
        self._say(2, f"the new certificate was uploaded by hand (keyId {registered}); going on")

    def _certificate_or_served(self, role: str) -> Certificate:
        """The old certificate: from its retired copy once switched, else the served files."""
        if role in self._certs:
            return self._certs[role]
        files = self.state[role].get("files")
        if files:
            return self._certificate(role)
        current = self._read_served()
        if current.thumbprint() != self.state[role]["thumbprint"]:
            raise RotationError(
                f"{self.served.cert}: now holds certificate {current.thumbprint()}, not "
                f"{self.state[role]['thumbprint']} the rotation started from; restore it, or "
                f"move {self.state_path} away to start over"
            )
        self._certs[role] = current
        return current

    def _await_acceptance(self) -> None:
        if self._done("accepted"):
            return
        from certauth.credential import CertificateCredential

        new = self._certificate("new")
        started = self.clock()
        delay = 1.0
        scope = f"{_graph.graph_for(self.authority)}/.default"
        tries = 0
        while True:
            tries += 1
            credential = CertificateCredential(
                self.tenant_id,
                self.client_id,
                certificate=new,
                authority=self.authority,
                verify=self.verify,
            )
            try:
                with credential:
                    credential.request_token(scope, force=True)
                break
            except TokenRequestError as exc:
                if exc.aadsts != _NOT_YET:
                    raise
            waited = self.clock() - started
            if waited + delay > self.propagation_timeout:
                raise RotationError(
                    f"the token endpoint still refuses the new certificate {new.thumbprint()} "
                    f"({_NOT_YET}) after {waited:.0f} s; rerun later to carry on (the rotation "
                    "is recorded), or give a longer propagation_timeout="
                )
            if tries == 1:
                self.log("3/6 waiting for the token endpoint to accept the new certificate")
            self.sleep(delay)
            delay = min(delay * 2, 30.0)
        self._save("accepted")
        self._say(
            3,
            f"the token endpoint accepts the new certificate (after {self.clock() - started:.0f} s,"
            f" {tries} tries)",
        )

    # -- switching the served files -----------------------------------------------------------

    def _switch(self) -> None:
        if self._done("switched"):
            self.result.remove_after = self.state["switched_at"] + self.grace
            return
        new = self._certificate("new")
        old = self._certificate_or_served("old")
        stamp = _date(self.state["started_at"])
        retired: list[str] = self.state["old"].get("files") or []
        if not retired:
            # First keep the old files under a new name (a hard link: the same bytes, nothing
            # to lose), then record them, then replace what the services read.
            for path in self.served.paths:
                keep = path.with_name(f"{path.stem}.retired-{stamp}{path.suffix}")
                source = path.resolve() if path.is_symlink() else path
                if not os.path.lexists(keep):
                    try:
                        os.link(source, keep)
                    except OSError:
                        shutil.copy2(source, keep)
                retired.append(str(keep))
            self.state["old"]["files"] = retired
            self._certs.setdefault("old", old)
            self._save("switching")
        for served, new_file in zip(self.served.paths, self._new_files_for_served(), strict=True):
            self._replace(served, Path(new_file))
        check = self._read_served()
        if check.thumbprint() != new.thumbprint():
            raise RotationError(
                f"{self.served.cert}: still holds {check.thumbprint()} after the switch; "
                "check the folder's permissions and rerun"
            )
        self.state["switched_at"] = self.clock()
        self._save("switched")
        self.result.remove_after = self.state["switched_at"] + self.grace
        self._say(
            4,
            f"switched {', '.join(str(p) for p in self.served.paths)} to the new certificate; "
            f"the old one is kept as {', '.join(retired)}",
        )

    def _new_files_for_served(self) -> list[str]:
        files: list[str] = self.state["new"]["files"]
        # The pair's new files are (crt, key); the served paths are (key, cert).
        return [files[1], files[0]] if self.served.kind == "pair" else files

    def _replace(self, served: Path, new_file: Path) -> None:
        """Make ``served`` hold ``new_file``'s bytes (or, for a link, point at it) in one
        rename, so a reader sees the old file or the new one, never a mix."""
        temp = served.with_name(f".{served.name}.certauth-switch")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if served.is_symlink():
            target = os.readlink(served)
            link = (
                str(new_file.absolute())
                if os.path.isabs(target)
                else os.path.relpath(new_file.absolute(), served.absolute().parent)
            )
            os.symlink(link, temp)
        else:
            secret = served != self.served.cert or self.served.kind != "pair"
            write_files_atomically(
                [OutputFile(temp, new_file.read_bytes(), secret=secret)], force=True
            )
        os.replace(temp, served)

    # -- grace and removal ---------------------------------------------------------------------

    def _pause_for_grace(self) -> bool:
        if self._done("removed"):
            return True
        due = self.state["switched_at"] + self.grace
        left = due - self.clock()
        if left <= 0:
            return True
        if not self.wait:
            self.result.status = "waiting"
            self._say(
                5,
                f"the old key stays registered until {_iso(due)} (grace); rerun then to remove it",
            )
            return False
        self._say(5, f"waiting {left:.0f} s (grace) before removing the old key")
        while (left := due - self.clock()) > 0:
            self.sleep(min(left, 60.0))
        return True

    def _remove(self) -> None:
        if not self._done("removed"):
            new = self._certificate("new")
            object_id = self.state["object_id"]
            graph = self._graph_as(new)
            key_id = self.state.get("old_key_id")
            if key_id is None:
                application = self._application(graph)
                key_id = self._key_id(application, self.state["old"]["thumbprint"])
            removed = False
            if key_id is None:
                self.log(
                    f"6/6 warning: the old certificate {self.state['old']['thumbprint']} could "
                    "not be found among the app's keys (Graph does not let this app read them, "
                    "or it is gone already): remove it in the portal if it is still there"
                )
            else:
                try:
                    self._send(
                        graph.remove_key(
                            object_id, key_id, _graph.build_proof(new, object_id, now=self.clock())
                        )
                    )
                    removed = True
                except GraphError as exc:
                    if exc.status_code != 404:
                        raise
                    removed = True  # removed by an earlier run that was cut off after it
            self.state["old_key_removed"] = removed
            self._save("removed")
            if removed:
                self._say(
                    6,
                    f"removed the old certificate {self.state['old']['thumbprint']} (keyId "
                    f"{key_id}) with removeKey; proof signed by {new.thumbprint()}",
                )
        self.result.old_key_removed = bool(self.state.get("old_key_removed"))
        self.result.old_key_id = self.state.get("old_key_id")
        retired = self.state["old"].get("files") or []
        if not self.keep_old:
            for name in retired:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
        # The rotation is over: its record is kept beside the files, out of the next one's way.
        finished = self.out / f".certauth-rotation-{_date(self.clock())}-{int(self.clock())}.json"
        os.replace(self.state_path, finished)

    # -- dry run ---------------------------------------------------------------------------------

    def plan(self) -> RotationResult:
        result = RotationResult(status="planned")
        state = self._load_state() if self.state_path.exists() else None
        self.state = state or {}
        current = None
        if state is None:
            current = self._read_served()
            result.old_thumbprint = current.thumbprint()
        else:
            result.old_thumbprint = state["old"]["thumbprint"]
            result.steps.append(
                f"resume the rotation recorded in {self.state_path} after step "
                f"'{state.get('step')}'"
            )
        now = self.clock()
        if not self._done("created"):
            reference = current or self._read_served()
            paths = (
                self._next_names(self.served.cert.stem, now)
                if self.out.is_dir()
                else [
                    self.out / f"{self.served.cert.stem}-{_date(now)}{s}"
                    for s in {"pair": [".crt", ".key"], "pfx": [".pfx"], "bundle": [".pem"]}[
                        self.served.kind
                    ]
                ]
            )
            result.new_files = [str(path) for path in paths]
            result.steps.append(
                f"1/6 create {', '.join(result.new_files)} ({reference.subject}, "
                f"{reference.key_description}, {self.days} days)"
            )
        if not self._done("added"):
            object_id = self.given_object_id or "looked up by appId"
            result.steps.append(
                f"2/6 addKey the new certificate to app {self.client_id} (object id: "
                f"{object_id}) at {self.graph_url}, proof signed by {result.old_thumbprint}"
            )
        if not self._done("accepted"):
            result.steps.append(
                f"3/6 wait until the token endpoint accepts it (at most "
                f"{self.propagation_timeout:.0f} s)"
            )
        if not self._done("switched"):
            result.steps.append(
                f"4/6 switch {', '.join(str(p) for p in self.served.paths)} to it, keeping the "
                "old files renamed .retired-DATE"
            )
        if not self._done("removed"):
            result.steps.append(
                f"5/6 wait {self.grace:.0f} s (grace), then 6/6 removeKey the old certificate "
                f"{result.old_thumbprint}, proof signed by the new one"
                + ("" if self.keep_old else ", and delete its old files")
            )
        for line in result.steps:
            self.log(f"dry run: {line}")
        return result
