"""The files a service reads its certificate from, and how a rotation switches them.

A rotation must never leave a service unable to read its certificate, and never lose a key:

* the new bytes reach the served path in one rename (or, for a symbolic link, by replacing
  the link), so a reader sees the old file or the new one, never a mix; a certificate and key
  pair takes two renames, key first: in between, the pair does not match and certauth's reload
  keeps the old certificate;
* the replacement keeps the served file's mode, owner and group (a service running as another
  user must still read it), and a link's new target gets its old target's;
* the old files are kept under a new name (a hard link: the same bytes), chosen so it never
  collides with an earlier rotation's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from certauth._files import OutputFile, write_files_atomically
from certauth._keyfiles import Password
from certauth.certificates import Certificate
from certauth.certificates import load_certificate as _load
from certauth.errors import LocalInputError

__all__ = ["Served", "load_files"]


@dataclass(frozen=True)
class Served:
    """What the services read: one file (PEM bundle or PFX) or a certificate and key pair,
    as absolute paths."""

    cert: Path
    key: Path | None

    @classmethod
    def of(cls, cert: str | os.PathLike[str], key: str | os.PathLike[str] | None) -> Served:
        """The served files, made absolute (a rerun from another folder finds them)."""
        return cls(Path(cert).absolute(), Path(key).absolute() if key else None)

    @property
    def paths(self) -> list[Path]:
        """Certificate first, then the key: the order every file list of a rotation keeps."""
        return [self.cert, self.key] if self.key else [self.cert]

    @property
    def kind(self) -> str:
        """``pair``, ``pfx`` or ``bundle``."""
        if self.key:
            return "pair"
        return "pfx" if self.cert.suffix.lower() in (".pfx", ".p12") else "bundle"

    @property
    def suffixes(self) -> list[str]:
        """The new files' name endings, in :attr:`paths` order."""
        return {"pair": [".crt", ".key"], "pfx": [".pfx"], "bundle": [".pem"]}[self.kind]

    def load(self, password: Password) -> Certificate:
        """The certificate the services read now, with its key."""
        return load_files([str(path) for path in self.paths], password)

    def check_writable(self, out: Path) -> None:
        """Refuse, before anything happens, folders this process cannot write (the served
        files' and ``out``'s), and served files whose owner it could not keep."""
        folders = {path.parent for path in self.paths}
        folders |= {Path(os.path.realpath(path)).parent for path in self.paths}
        level = out
        while not level.exists() and level.parent != level:
            level = level.parent
        folders.add(level)
        for folder in sorted(folders):
            if not os.access(folder, os.W_OK | os.X_OK):
                raise LocalInputError(
                    f"{folder}: this user cannot write here, and the rotation must (new files, "
                    "the switch); run it as the files' owner, or choose another out_dir="
                )
        for path in self.paths:
            _check_owner_kept(Path(os.path.realpath(path)))


def load_files(files: list[str], password: Password) -> Certificate:
    """A certificate and its key from files in :attr:`Served.paths` order."""
    loaded = _load(files[0], key=files[1] if len(files) > 1 else None, password=password)
    loaded.require_private_key()
    return loaded


def _check_owner_kept(path: Path) -> None:
    info = path.stat()
    if os.geteuid() == 0:
        return
    if info.st_uid != os.geteuid() or info.st_gid not in (os.getegid(), *os.getgroups()):
        raise LocalInputError(
            f"{path}: belongs to uid {info.st_uid} gid {info.st_gid}, and this user could not "
            "give the new file the same owner, so the service might not read it; run the "
            "rotation as that user (or as root)"
        )


def free_names(folder: Path, stem: str, suffixes: list[str]) -> list[Path]:
    """``folder/STEM.SUFFIX`` for each suffix, or ``STEM-2``, ``STEM-3``...: the first set of
    names none of which exists."""
    for attempt in range(1, 100):
        name = stem if attempt == 1 else f"{stem}-{attempt}"
        paths = [folder / f"{name}{suffix}" for suffix in suffixes]
        if not any(os.path.lexists(path) for path in paths):
            return paths
    raise LocalInputError(f"{folder}: 99 files named {stem}* already; clean it up")


def retire(path: Path, keep: Path) -> None:
    """Keep ``path``'s current bytes (a link's target's) as ``keep``: a hard link, or else an
    atomic copy; nothing to do when ``keep`` exists (an earlier, cut-off run made it)."""
    if os.path.lexists(keep):
        return
    source = Path(os.path.realpath(path))
    try:
        os.link(source, keep)
    except OSError:
        temp = keep.with_name(f".{keep.name}.certauth-copy")
        try:
            shutil.copy2(source, temp)
            os.replace(temp, keep)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise LocalInputError(
                f"{keep}: cannot keep the old file here ({exc.strerror or exc})"
            ) from None


def replace(served: Path, new_file: Path) -> None:
    """Make ``served`` hold ``new_file`` (a link: point at it) in one rename, with the mode,
    owner and group ``served`` has now."""
    try:
        if served.is_symlink():
            _relink(served, new_file)
        else:
            like = served.stat()
            temp = served.with_name(f".{served.name}.certauth-switch")
            data = new_file.read_bytes()
            write_files_atomically([OutputFile(temp, data, secret=True)], force=True)
            _same_owner(temp, like)
            os.replace(temp, served)
    except OSError as exc:
        raise LocalInputError(
            f"{served}: cannot switch it to {new_file} ({exc.strerror or exc}); the old file "
            "is untouched: fix the folder's permissions and rerun"
        ) from None


def _relink(served: Path, new_file: Path) -> None:
    old_target = Path(os.path.realpath(served))
    _same_owner(new_file, old_target.stat())
    target = os.readlink(served)
    if os.path.isabs(target):
        link = str(new_file.resolve())
    else:
        # Relative to where the link really is (its folder may itself be reached by a link).
        link = os.path.relpath(new_file.resolve(), os.path.realpath(served.parent))
    temp = served.with_name(f".{served.name}.certauth-switch")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    os.symlink(link, temp)
    if os.path.realpath(temp) != str(new_file.resolve()):
        os.unlink(temp)
        raise LocalInputError(f"{served}: a link to {link} would not reach {new_file}")
    os.replace(temp, served)


def _same_owner(path: Path, like: os.stat_result) -> None:
    os.chmod(path, stat.S_IMODE(like.st_mode))
    info = path.stat()
    if (info.st_uid, info.st_gid) != (like.st_uid, like.st_gid):
        os.chown(path, like.st_uid, like.st_gid)
