"""Reading input files with clear errors, and writing output files atomically.

Private: the rules here (size cap, the first-line rule for secrets kept in files, no overwrite
without force, 0600 for secrets, temp file + rename) are used by every module that touches the
file system.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING

from certauth._record import Record
from certauth.errors import CertificateError, InputFileError, LocalInputError, OutputExistsError

if TYPE_CHECKING:
    from pathlib import Path

#: Certificates, keys and token files are small; anything larger is not one of them.
MAX_INPUT_BYTES = 1024 * 1024

#: The error a refused input file raises: :class:`CertificateError` for certificate and key
#: files, :class:`InputFileError` for every other file (passwords, secrets, tokens, config).
FileError = type[CertificateError] | type[InputFileError]


def read_input_file(path: str | os.PathLike[str], *, what: str, error: FileError) -> bytes:
    """Read a small input file, turning every OS failure into one clear ``error``.

    ``what`` names the expected content in messages ("certificate", "password", ...). A missing,
    unreadable or oversized file, or one holding only whitespace, is refused.
    """
    name = os.fspath(path)
    try:
        data = _read_regular_file(name, MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{name}: no such file; check the {what} path", path=name) from None
    except IsADirectoryError:
        raise error(
            f"{name}: is a directory, not a {what} file; name the file inside it", path=name
        ) from None
    except NotRegularFileError as exc:
        raise error(
            f"{name}: is {exc.kind}, not a regular file; put the {what} in a regular file "
            "(a pipe or device is never read: it could block or never end)",
            path=name,
        ) from None
    except PermissionError:
        raise error(
            f"{name}: permission denied reading the {what}; check the file's owner and mode",
            path=name,
        ) from None
    except OSError as exc:
        raise error(f"{name}: cannot read the {what} ({exc.strerror or exc})", path=name) from None
    if len(data) > MAX_INPUT_BYTES:
        raise error(
            f"{name}: larger than {MAX_INPUT_BYTES // 1024} KiB, too large for a {what}; "
            "check the path",
            path=name,
        )
    if not data.strip():
        raise error(f"{name}: the file is empty; expected a {what}", path=name)
    return data


#: POSIX flags (absent on Windows, which has no FIFOs to block on).
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class NotRegularFileError(OSError):
    """The path names a FIFO, a device or a socket: reading it could block for ever or never
    end (``/dev/zero``), so it is refused before any read."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"is {kind}, not a regular file")
        self.kind = kind


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def open_regular_file(name: str | os.PathLike[str], flags: int = 0) -> int:
    """Open ``name`` for reading and return the descriptor, once it is known to be a regular
    file: opened with ``O_NONBLOCK`` (opening a FIFO waits for a writer otherwise), then
    checked with ``fstat`` (the file opened, not whatever the path names a moment later).
    Raises :class:`NotRegularFileError` (the descriptor closed) for anything else,
    ``IsADirectoryError`` for a directory, and the ``OSError`` of the open otherwise.
    ``flags`` adds to ``O_RDONLY | O_NONBLOCK | O_CLOEXEC`` (e.g. ``O_NOFOLLOW``).
    """
    try:
        fd = os.open(name, os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC | flags)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        # ENXIO: a Unix socket (which cannot be opened), or a device with no driver behind it.
        try:
            kind = _kind(os.stat(name).st_mode)
        except OSError:
            kind = "a special file"
        raise NotRegularFileError(kind) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", os.fspath(name))
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(_kind(mode))
        if _O_NONBLOCK:
            # Regular files never block; clear the flag so reads behave as usual.
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_regular_file(name: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of the regular file ``name`` (see :func:`open_regular_file`)."""
    with os.fdopen(open_regular_file(name), "rb") as handle:
        return handle.read(limit)


def read_first_line(path: str | os.PathLike[str], *, what: str) -> str:
    """The secret a file holds on its first line: ``--password-file``, ``--client-secret-file``
    and the emulator configuration's secret files all read it this way.

    The rule: the file is read by :func:`read_input_file`; it must be UTF-8 text (a leading
    byte order mark, which some Windows editors write, is dropped); the first line ends at the
    first ``\n``, ``\r\n`` or ``\r``, and only that line ending is removed: spaces and tabs
    are part of the value. Later lines are ignored. A first line that is blank (empty or only
    whitespace) or holds a NUL byte is refused. Every refusal is an :class:`InputFileError`.
    """
    name = os.fspath(path)
    data = read_input_file(name, what=what, error=InputFileError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(
            f"{name}: not a text file (not UTF-8); put the {what} as text on the first line",
            path=name,
        ) from None
    first = text.partition("\n")[0].partition("\r")[0]
    if "\x00" in first:
        raise InputFileError(
            f"{name}: holds binary data (a NUL byte); put the {what} as text on the first line",
            path=name,
        )
    if not first.strip():
        raise InputFileError(
            f"{name}: the first line is empty; put the {what} on the first line", path=name
        )
    return first


class OutputFile(Record):
    """One file to write: its path, its bytes, and whether it holds a secret (mode 0600)."""

    __slots__ = ("data", "path", "secret")

    def __init__(self, path: Path, data: bytes, secret: bool = False) -> None:
        self.path = path
        self.data = data
        self.secret = secret

    def __repr__(self) -> str:
        return f"OutputFile(path={str(self.path)!r}, {len(self.data)} bytes, secret={self.secret})"


def ensure_private_dir(directory: Path) -> Path | None:
    """Create ``directory`` (mode 0700, each missing level) if missing.

    An existing directory is left as it is. Returns the topmost directory this call created
    (``None`` if it existed), so a caller whose later write fails can remove what it made.
    """
    if directory.is_dir():
        return None
    if directory.exists() or directory.is_symlink():
        raise LocalInputError(f"{directory}: exists and is not a directory; choose another --out")
    missing: list[Path] = []
    level = directory
    while not level.is_dir():
        if level.exists() or level.is_symlink():
            raise LocalInputError(
                f"{directory}: cannot create the output directory because {level} is not a "
                "directory; choose another --out"
            )
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    created: list[Path] = []
    try:
        for level in reversed(missing):
            level.mkdir(mode=0o700)
            created.append(level)
            # mkdir's mode is filtered by the umask; chmod so a umask such as 0277 cannot
            # leave a directory we cannot write into (or one wider than 0700).
            os.chmod(level, 0o700)
    except OSError as exc:
        remove_created_dirs(created[0] if created else None)
        raise LocalInputError(
            f"{directory}: cannot create the output directory ({exc.strerror or exc}); "
            "choose a writable --out"
        ) from None
    return created[0] if created else None


def remove_created_dirs(top: Path | None) -> None:
    """Remove ``top`` and the empty directories under it (what :func:`ensure_private_dir` made).

    Best effort, and only empty directories: used after a failed write so that a failure
    leaves the file system as it found it.
    """
    if top is None:
        return
    for root, _dirs, _files in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)


def write_files_atomically(files: Sequence[OutputFile], *, force: bool = False) -> None:
    """Write every file or none.

    All targets are checked before anything is written: an existing file (or a symlink, which
    could point anywhere) is refused unless ``force``. Each file is written to a temporary file
    in its own directory, flushed and then renamed over the target, so a reader never sees a
    half-written key. If anything fails, the files already put in place are removed (or, with
    ``force``, the previous files restored) and no temporary file is left behind. Secret files
    are created 0600 and the others 0644, whatever the umask.
    """
    if not force:
        for item in files:
            refuse_existing(item.path)
    staged: list[tuple[str, OutputFile]] = []
    # (target, backup of the file it replaced or None) for every file already in place
    placed: list[tuple[Path, str | None]] = []
    from pathlib import Path

    current = files[0].path if files else Path()
    try:
        for item in files:
            current = item.path
            staged.append((_write_temp(item), item))
        for temp, item in staged:
            current = item.path
            placed.append((item.path, _install(temp, item.path, force=force)))
    except BaseException as exc:
        _roll_back(placed, [temp for temp, _ in staged])
        if not isinstance(exc, OSError):
            raise  # OutputExistsError (a file appeared meanwhile), KeyboardInterrupt, ...
        raise LocalInputError(
            f"{current}: cannot write ({exc.strerror or exc}); nothing was written, "
            "choose a writable directory with --out"
        ) from None
    for _, backup in placed:
        if backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(backup)


def refuse_existing(path: Path) -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists (or is a symlink, even dangling)."""
    if os.path.islink(path):
        raise OutputExistsError(
            f"{path}: is a symbolic link; nothing was written (remove it, or pass --force to "
            "replace the link itself with a regular file)",
            path=str(path),
        )
    if os.path.lexists(path):
        raise OutputExistsError(
            f"{path}: already exists; nothing was written "
            "(pass --force to replace it, or choose another --name/--out)",
            path=str(path),
        )


def _install(temp: str, target: Path, *, force: bool) -> str | None:
    """Move ``temp`` to ``target``; return a backup of the file it replaced (``force`` only)."""
    if not force:
        # link() fails if the target exists, so a file created since the check above is
        # never overwritten. Some file systems have no hard links: fall back to rename.
        try:
            os.link(temp, target)
        except FileExistsError:
            refuse_existing(target)
            raise
        except OSError:
            if os.path.lexists(target):
                refuse_existing(target)
            os.replace(temp, target)
            return None
        os.unlink(temp)
        return None
    backup: str | None = None
    if os.path.lexists(target) and not os.path.isdir(target):
        # A hard link to the old file (or symlink) lets a later failure put it back.
        backup = f"{temp}.old"
        try:
            os.link(target, backup, follow_symlinks=False)
        except OSError:
            backup = None
    try:
        os.replace(temp, target)
    except BaseException:
        if backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(backup)
        raise
    return backup


def _roll_back(placed: Sequence[tuple[Path, str | None]], temps: Sequence[str]) -> None:
    for target, backup in reversed(placed):
        with contextlib.suppress(OSError):
            if backup is not None:
                os.replace(backup, target)
            else:
                os.unlink(target)
    for temp in temps:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _write_temp(item: OutputFile) -> str:
    directory = item.path.parent
    import tempfile  # here: only writing a file needs it (reading one is the hot path)

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
