"""Reading input files with clear errors, and writing output files atomically.

Private: the rules here (size cap, no overwrite without force, 0600 for secrets, temp file +
rename) are used by every module that touches the file system.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from certauth.errors import CertificateError, LocalInputError, OutputExistsError

#: Certificates, keys and token files are small; anything larger is not one of them.
MAX_INPUT_BYTES = 1024 * 1024


def read_input_file(path: str | os.PathLike[str], *, what: str) -> bytes:
    """Read a small input file, turning every OS failure into one clear :class:`CertificateError`.

    ``what`` names the expected content in messages ("certificate", "private key", ...).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise CertificateError(f"{name}: no such file; check the {what} path", path=name) from None
    except IsADirectoryError:
        raise CertificateError(
            f"{name}: is a directory, not a {what} file; name the file inside it", path=name
        ) from None
    except PermissionError:
        raise CertificateError(
            f"{name}: permission denied reading the {what}; check the file's owner and mode",
            path=name,
        ) from None
    except OSError as exc:
        raise CertificateError(
            f"{name}: cannot read the {what} ({exc.strerror or exc})", path=name
        ) from None
    if len(data) > MAX_INPUT_BYTES:
        raise CertificateError(
            f"{name}: larger than {MAX_INPUT_BYTES // 1024} KiB, too large for a {what}; "
            "check the path",
            path=name,
        )
    if not data.strip():
        raise CertificateError(f"{name}: the file is empty; expected a {what}", path=name)
    return data


@dataclass(frozen=True)
class OutputFile:
    """One file to write: its path, its bytes, and whether it holds a secret (mode 0600)."""

    path: Path
    data: bytes
    secret: bool = False


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if missing; an existing one is left as it is."""
    if directory.is_dir():
        return
    if directory.exists() or directory.is_symlink():
        raise LocalInputError(f"{directory}: exists and is not a directory; choose another --out")
    try:
        directory.mkdir(mode=0o700, parents=True)
    except OSError as exc:
        raise LocalInputError(
            f"{directory}: cannot create the output directory ({exc.strerror or exc}); "
            "choose a writable --out"
        ) from None


def write_files_atomically(files: Sequence[OutputFile], *, force: bool = False) -> None:
    """Write every file or none.

    All targets are checked before anything is written: an existing file (or a symlink, which
    could point anywhere) is refused unless ``force``. Each file is written to a temporary file
    in its own directory, flushed and then renamed over the target, so a reader never sees a
    half-written key and a failure leaves no partial file behind. Secret files are created 0600
    whatever the umask.
    """
    if not force:
        for item in files:
            if os.path.lexists(item.path):
                raise OutputExistsError(
                    f"{item.path}: already exists; nothing was written "
                    "(pass --force to replace it, or choose another --name/--out)",
                    path=str(item.path),
                )
    staged: list[tuple[str, Path]] = []
    try:
        for item in files:
            staged.append((_write_temp(item), item.path))
        for temp, target in staged:
            os.replace(temp, target)
    except OSError as exc:
        for temp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        where = exc.filename or (files[0].path.parent if files else "")
        raise LocalInputError(
            f"{where}: cannot write ({exc.strerror or exc}); nothing was written, "
            "choose a writable directory"
        ) from None


def _write_temp(item: OutputFile) -> str:
    directory = item.path.parent
    fd, temp = tempfile.mkstemp(prefix=f".{item.path.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates 0600; widen public files explicitly so the umask cannot narrow
        # or widen what we promise.
        os.fchmod(fd, 0o600 if item.secret else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(item.data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically (re)write one secret file, mode 0600 (caches and the like)."""
    write_files_atomically([OutputFile(path, data, secret=True)], force=True)
