"""One run of :func:`certauth.rotation.rotate_certificate`: the six steps, each recorded in the
state file before and after its work, so a rerun after a cut at any point carries on.

The order of a step's writes is what makes it resumable: what a step is about to do is saved
first (``creating``, ``adding``, ``switching``, with the names it will use), then it is done,
then its end is saved (``created``, ``added``, ``switched``...). A rerun finds either the
intention (and checks what was really done: files whole, key registered, served file switched)
or the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certauth import _graph, _served
from certauth._files import OutputFile, write_files_atomically
from certauth._http import new_sync_client, run_sync
from certauth._keyfiles import Password
from certauth.certificates import Certificate, generate_certificate
from certauth.errors import (
    CertauthError,
    ConfigurationError,
    GraphError,
    TokenRequestError,
    TransportError,
)
from certauth.protocol import RetryPolicy

#: The state file and the lock, in the output folder.
STATE_FILE = ".certauth-rotation.json"
LOCK_FILE = ".certauth-rotation.lock"
#: What the state file records, in order: each step's intention, then its end.
STEPS = (
    "creating",
    "created",
    "adding",
    "added",
    "accepted",
    "switching",
    "switched",
    "removed",
)
#: AADSTS700027: the assertion's certificate is not (yet) registered; what the token endpoint
#: answers for a new key until its registration has propagated.
NOT_YET = "AADSTS700027"
#: Successful token requests in a row, a second apart, before the new certificate counts as
#: accepted: Entra's changes reach its front ends gradually, so one success is not enough.
CONFIRMATIONS = 2


def date(now: float) -> str:
    """``YYYYMMDD`` (UTC) for file names."""
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y%m%d")


def iso(epoch: float) -> str:
    """ISO 8601 UTC for messages."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_type(certificate: Certificate) -> str:
    """``cert create``'s name for the certificate's key type."""
    return "ec-p256" if certificate.key_type == "EC" else f"rsa{certificate.key_size}"


class RotationRun:
    """The state a run carries on, and its steps."""

    def __init__(self, *, served: _served.Served, out: Path, **settings: Any) -> None:
        from certauth.rotation import RotationError, RotationResult

        self.error = RotationError
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
        self.on_switch: Callable[[], None] | None = settings["on_switch"]
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

    def load_state(self) -> dict[str, Any] | None:
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
        if not isinstance(state, dict) or state.get("version") != 2:
            raise ConfigurationError(
                f"{self.state_path}: not a rotation state this certauth wrote; move it away to "
                "start a new rotation"
            )
        served = [str(path) for path in self.served.paths]
        if state.get("served") != served:
            raise self.error(
                f"{self.state_path}: a rotation of {', '.join(state.get('served') or [])} is "
                f"under way in this folder; finish it (rerun it with the same files) or use "
                "another output folder"
            )
        return state

    def save(self, step: str | None = None) -> None:
        if step is not None:
            self.state["step"] = step
        data = (json.dumps(self.state, indent=2, sort_keys=True) + "\n").encode("utf-8")
        write_files_atomically([OutputFile(self.state_path, data, secret=True)], force=True)

    def done(self, step: str) -> bool:
        reached = self.state.get("step")
        return reached in STEPS and STEPS.index(reached) >= STEPS.index(step)

    def say(self, number: int, text: str) -> None:
        line = f"{number}/6 {text}"
        self.result.steps.append(line)
        self.log(line)

    def certificate(self, role: str) -> Certificate:
        """The ``old`` (from its kept copy once switched, else the served files) or ``new``
        certificate with its key, loaded once."""
        if role not in self._certs:
            files = self.state[role].get("files")
            if files:
                self._certs[role] = _served.load_files(files, self.password)
            else:
                current = self.served.load(self.password)
                if current.thumbprint() != self.state[role]["thumbprint"]:
                    raise self.error(
                        f"{self.served.cert}: now holds certificate {current.thumbprint()}, not "
                        f"{self.state[role]['thumbprint']} the rotation started from; restore "
                        f"it, or move {self.state_path} away to start over"
                    )
                self._certs[role] = current
        return self._certs[role]

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> Any:
        state = self.load_state()
        if state is None:
            current = self.served.load(self.password)
            self.check_current(current)
            self.state = {
                "version": 2,
                "served": [str(path) for path in self.served.paths],
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
        self.create()
        self.add()
        self.await_acceptance()
        self.switch()
        if self.pause_for_grace():
            self.remove()
        return self.result

    def check_current(self, current: Certificate) -> None:
        """Refuse, before step 1, a certificate Entra ID would not take as the next one's
        model: the new one gets the same key type, and Entra takes only RSA >= 2048."""
        problems = current.entra_problems()
        if problems:
            raise self.error(
                f"{self.served.cert}: {problems[0]}; a rotation would make another such key: "
                "create an RSA certificate by hand once"
            )

    # -- 1. create -----------------------------------------------------------------------------

    def create(self) -> None:
        if self.done("created"):
            self.result.new_thumbprint = self.state["new"]["thumbprint"]
            self.result.new_files = self.state["new"]["files"]
            return
        planned = self.state.get("new", {}).get("files")
        adopted = self._adopt(planned) if planned else None
        if planned and adopted is None:
            # Cut off while writing: each file is written whole or not at all, so set aside
            # what is there (never delete a key) and make the set again.
            for name in [*planned, self.state["new"].get("public")]:
                if name and os.path.lexists(name):
                    os.replace(name, f"{name}.partial-{int(self.clock())}")
        if adopted is None:
            old = self.certificate("old")
            base = self.served.cert.stem.split(".retired-")[0]
            stem = f"{base}-{date(self.clock())}"
            suffixes = self.served.suffixes
            if self.served.kind != "pair":
                suffixes = [*suffixes, ".crt"]  # the public part, to upload by hand if need be
            paths = _served.free_names(self.out, stem, suffixes)
            files = paths[: len(self.served.suffixes)]
            public = paths[0] if self.served.kind == "pair" else paths[-1]
            self.state["new"] = {
                "files": [str(path) for path in files],
                "public": str(public),
                "thumbprint": None,
            }
            self.save("creating")
            new = generate_certificate(old.subject, key_type=key_type(old), days=self.days)
            write_files_atomically(self._files_for(new, paths))
            adopted = new
        self._certs["new"] = adopted
        self.state["new"]["thumbprint"] = adopted.thumbprint()
        self.save("created")
        self.result.new_thumbprint = adopted.thumbprint()
        self.result.new_files = self.state["new"]["files"]
        self.say(
            1,
            f"created {', '.join(self.state['new']['files'])} ({adopted.subject}, "
            f"{adopted.key_description}, until {iso(adopted.not_after.timestamp())}, "
            f"thumbprint {adopted.thumbprint()})",
        )

    def _adopt(self, planned: list[str]) -> Certificate | None:
        names = [*planned, self.state["new"].get("public") or planned[0]]
        if not all(os.path.isfile(name) for name in names):
            return None
        try:
            return _served.load_files(planned, self.password)
        except CertauthError:
            return None

    def _files_for(self, new: Certificate, paths: list[Path]) -> list[OutputFile]:
        kind = self.served.kind
        if kind == "pair":
            return [
                OutputFile(paths[0], new.pem),
                OutputFile(paths[1], new.private_key_pem(self.password), secret=True),
            ]
        key_file = (
            new.to_pfx(self.password)
            if kind == "pfx"
            else new.private_key_pem(self.password) + new.pem
        )
        return [OutputFile(paths[0], key_file, secret=True), OutputFile(paths[1], new.pem)]

    # -- 2. addKey -----------------------------------------------------------------------------

    @property
    def graph_scope(self) -> str:
        """What Graph tokens are asked for (and what acceptance is tested with)."""
        return f"{_graph.graph_resource(self.graph_url, self.authority)}/.default"

    def _credential(self, certificate: Certificate) -> Any:
        """The app's credential with ``certificate``, as the services would build it."""
        from certauth.credential import CertificateCredential

        return CertificateCredential(
            self.tenant_id,
            self.client_id,
            certificate=certificate,
            authority=self.authority,
            verify=self.verify,
        )

    def _graph_as(self, signer: Certificate) -> _graph.GraphRequest:
        credential = self._credential(signer)
        scope = self.graph_scope
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
                exc.message = (
                    f"{exc.message}: give the application's object id with app_object_id= "
                    "(portal: App registrations > the app > Overview > Object ID), or grant "
                    "the app Application.ReadWrite.OwnedBy"
                )
                exc.args = (exc.message,)
            raise
        if not isinstance(found, dict) or not isinstance(found.get("id"), str):
            raise TransportError(f"{self.graph_url}: Graph's application has no id", url=None)
        return found

    def add(self) -> None:
        if self.done("added"):
            self.result.object_id = self.state.get("object_id")
            self.result.new_key_id = self.state.get("new_key_id")
            self.result.old_key_id = self.state.get("old_key_id")
            return
        old, new = self.certificate("old"), self.certificate("new")
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
        resumed = self.state.get("step") == "adding"
        self.state["object_id"] = object_id
        self.state["old_key_id"] = _graph.key_id(application, old.thumbprint())
        registered = _graph.key_id(application, new.thumbprint())
        if registered is None:
            self.save("adding")
            display = f"{new.common_name or new.subject} {date(self.clock())} (certauth rotate)"
            try:
                answer = self._send(
                    graph.add_key(
                        object_id,
                        _graph.key_credential(new, display),
                        _graph.build_proof(old, object_id, now=self.clock()),
                    )
                )
                registered = answer.get("keyId") if isinstance(answer, dict) else None
            except GraphError as exc:
                # Cut off after addKey but before recording it, with no permission to read the
                # app's keys: Graph refuses the same key twice. The token endpoint (step 3)
                # then says whether it really is registered.
                if not (resumed and application is None and exc.status_code == 400):
                    raise
                self.log(f"2/6 addKey refused ({exc.code}); the cut-off run had added it")
        self.state["new_key_id"] = registered
        self.save("added")
        self.result.object_id = object_id
        self.result.new_key_id = registered
        self.result.old_key_id = self.state["old_key_id"]
        self.say(
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
        registered = _graph.key_id(application, new.thumbprint())
        if registered is None or application is None:
            raise self.error(
                f"{self.served.cert}: the current certificate is {problem.split(';')[0]}, so "
                "Graph's addKey cannot be used (it needs a proof from a valid certificate): "
                f"upload {self.state['new']['public']} (the public certificate) to the app "
                "registration by hand once (portal, or az ad app credential reset --cert @FILE "
                "--append), then rerun"
            )
        self.state["object_id"] = application["id"]
        self.state["old_key_id"] = _graph.key_id(application, self.state["old"]["thumbprint"])
        self.state["new_key_id"] = registered
        self.save("added")
        self.result.object_id, self.result.new_key_id = application["id"], registered
        self.result.old_key_id = self.state["old_key_id"]
        self.say(2, f"the new certificate was uploaded by hand (keyId {registered}); going on")

    # -- 3. accepted ---------------------------------------------------------------------------

    def await_acceptance(self) -> None:
        if self.done("accepted"):
            return
        new = self.certificate("new")
        started = self.clock()
        delay = 1.0
        tries = successes = 0
        while successes < CONFIRMATIONS:
            tries += 1
            try:
                with self._credential(new) as credential:
                    credential.request_token(self.graph_scope, force=True)
                successes += 1
                if successes < CONFIRMATIONS:
                    self.sleep(1.0)
                continue
            except TokenRequestError as exc:
                if exc.aadsts != NOT_YET:
                    raise
                successes = 0
            waited = self.clock() - started
            if waited + delay > self.propagation_timeout:
                raise self.error(
                    f"the token endpoint still refuses the new certificate {new.thumbprint()} "
                    f"({NOT_YET}) after {waited:.0f} s; rerun later to carry on (the rotation "
                    "is recorded), or give a longer propagation_timeout="
                )
            if tries == 1:
                self.log("3/6 waiting for the token endpoint to accept the new certificate")
            self.sleep(delay)
            delay = min(delay * 2, 30.0)
        self.save("accepted")
        self.say(
            3,
            f"the token endpoint accepts the new certificate (after {self.clock() - started:.0f} s,"
            f" {tries} tries)",
        )

    # -- 4. switch -----------------------------------------------------------------------------

    def switch(self) -> None:
        if self.done("switched"):
            self.result.remove_after = self.state["switched_at"] + self.grace
            return
        new = self.certificate("new")
        old = self.certificate("old")
        if not self.done("switching"):
            # Name the kept copies (never an earlier rotation's names) and record them before
            # anything is linked or replaced.
            stamp = date(self.state["started_at"])
            kept = []
            for path in self.served.paths:
                (name,) = _served.free_names(
                    path.parent, f"{path.stem}.retired-{stamp}", [path.suffix]
                )
                kept.append(str(name))
            self.state["old"]["files"] = kept
            self.state["old"]["targets"] = [
                os.path.realpath(path) if path.is_symlink() else None for path in self.served.paths
            ]
            self._certs["old"] = old
            self.save("switching")
        kept = self.state["old"]["files"]
        for path, keep in zip(self.served.paths, kept, strict=True):
            if not os.path.lexists(keep):
                # Only ever keep the old bytes: every copy is made before any replacement.
                if self.served.load(self.password).thumbprint() != self.state["old"]["thumbprint"]:
                    raise self.error(
                        f"{keep}: the kept copy of the old file is missing and {path} no longer "
                        "holds the old certificate; restore the old files by hand"
                    )
                _served.retire(path, Path(keep))
        # Key first: between the two renames a pair does not match, and certauth's reload
        # keeps the old certificate until both are in place.
        pairs = list(zip(self.served.paths, self.state["new"]["files"], strict=True))
        for path, new_file in reversed(pairs):
            _served.replace(path, Path(new_file))
        check = self.served.load(self.password)
        if check.thumbprint() != new.thumbprint():
            raise self.error(
                f"{self.served.cert}: still holds {check.thumbprint()} after the switch; "
                "check the folder's permissions and rerun"
            )
        if self.on_switch is not None:
            self.on_switch()
        self.state["switched_at"] = self.clock()
        self.save("switched")
        self.result.remove_after = self.state["switched_at"] + self.grace
        self.say(
            4,
            f"switched {', '.join(str(p) for p in self.served.paths)} to the new certificate; "
            f"the old one is kept as {', '.join(kept)}",
        )

    # -- 5. grace, 6. removeKey ----------------------------------------------------------------

    def pause_for_grace(self) -> bool:
        if self.done("removed"):
            return True
        due = self.state["switched_at"] + self.grace
        left = due - self.clock()
        if left <= 0:
            return True
        if not self.wait:
            self.result.status = "waiting"
            self.say(
                5,
                f"the old key stays registered until {iso(due)} (grace); rerun then to remove it",
            )
            return False
        self.say(5, f"waiting {left:.0f} s (grace) before removing the old key")
        while (left := due - self.clock()) > 0:
            self.sleep(min(left, 60.0))
        return True

    def remove(self) -> None:
        if not self.done("removed"):
            self.state["old_key_removed"] = self._remove_old_key()
            self.save("removed")
        self.result.old_key_removed = bool(self.state.get("old_key_removed"))
        self.result.old_key_id = self.state.get("old_key_id")
        if not self.keep_old:
            self._delete_old_files()
        # The rotation is over: its record is kept beside the files, out of the next one's way.
        finished = self.out / f".certauth-rotation-{date(self.clock())}-{int(self.clock())}.json"
        os.replace(self.state_path, finished)

    def _remove_old_key(self) -> bool:
        new = self.certificate("new")
        old_thumbprint = self.state["old"]["thumbprint"]
        object_id = self.state["object_id"]
        graph = self._graph_as(new)
        key_id = self.state.get("old_key_id")
        if key_id is None:
            key_id = _graph.key_id(self._readable_application(graph), old_thumbprint)
        if key_id is None:
            self.log(
                f"6/6 warning: the old certificate {old_thumbprint} could not be found among "
                "the app's keys (Graph does not let this app read them, or it is gone "
                "already): remove it in the portal if it is still there"
            )
            return False
        try:
            self._send(
                graph.remove_key(
                    object_id, key_id, _graph.build_proof(new, object_id, now=self.clock())
                )
            )
        except GraphError as exc:
            # Removed by an earlier run that was cut off after it? Graph's list says; without
            # leave to read it, only a 404 for that key id does.
            application = self._readable_application(graph)
            if application is None:
                if exc.status_code != 404:
                    raise
            elif _graph.key_id(application, old_thumbprint) is not None:
                raise
        self.say(
            6,
            f"removed the old certificate {old_thumbprint} (keyId {key_id}) with removeKey; "
            f"proof signed by {new.thumbprint()}",
        )
        return True

    def _readable_application(self, graph: _graph.GraphRequest) -> dict[str, Any] | None:
        try:
            return self._application(graph)
        except GraphError:
            return None

    def _delete_old_files(self) -> None:
        """``keep_old=False``: the old key's files go: the kept copies, a link's old target, and
        an earlier rotation's files in ``out`` that hold the old certificate."""
        old = self.state["old"]
        doomed = [*(old.get("files") or []), *(t for t in old.get("targets") or [] if t)]
        keep = {*self.state["new"]["files"], self.state["new"].get("public")}
        for candidate in sorted(self.out.iterdir()):
            stale = candidate.suffix in (".pem", ".pfx", ".crt") and str(candidate) not in keep
            if stale and _holds(candidate, old["thumbprint"], self.password):
                doomed.append(str(candidate))
                if candidate.suffix == ".crt":
                    doomed.append(str(candidate.with_suffix(".key")))
        for name in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def _holds(path: Path, thumbprint: str, password: Password) -> bool:
    """Whether ``path`` is a certificate file with that thumbprint (unreadable: no)."""
    from certauth.certificates import load_certificate

    try:
        found = load_certificate(path, load_key=False, password=password)
    except CertauthError:
        return False
    return found.thumbprint() == thumbprint
