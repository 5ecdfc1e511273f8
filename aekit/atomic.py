"""Writes that a crash cannot leave half done: a file, or a whole folder, appears complete or not at all.

A write that the file system refuses (a full disk, a file-size limit, a read-only folder, a file where a folder
should be, ...) raises :class:`StorageError`, one line naming the path, the system's reason and the fix; whatever
was half written is removed first. :func:`check_output` is the one check every command makes of its output before
any work: nothing that exists is replaced unless the user says so (``--overwrite``), and a command's own input never.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from aekit.errors import AekitError, DataError

# What the user can do about each refusal; others get the generic advice.
_FIXES = {
    errno.ENOSPC: "free space on that disk or choose another --out",
    errno.EDQUOT: "free space within your quota or choose another --out",
    # Python ignores SIGXFSZ, so a write past `ulimit -f` fails with EFBIG instead of killing the process.
    errno.EFBIG: "raise the file-size limit (ulimit -f) or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "make it writable or choose another --out",
    errno.EPERM: "make it writable or choose another --out",
    errno.ENOTDIR: "part of the path is a file, not a folder; choose another --out",
    errno.EEXIST: "a file is in the way of a folder; remove it or choose another --out",
    errno.EISDIR: "a folder is in the way of a file; remove it or choose another --out",
    errno.ENOENT: "its folder does not exist; create it or choose another --out",
}
# The refusals of a folder that can be read but not written.
READ_ONLY = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class StorageError(AekitError):
    """The file system refused a write."""


def storage_error(error: OSError, path: str | Path) -> StorageError:
    """The user error for ``error``, met while writing ``path``."""
    fix = _FIXES.get(error.errno, "check the path, its permissions and the free space, or choose another --out")
    reason = error.strerror or str(error) or type(error).__name__
    return StorageError(f"cannot write {path} ({reason}); {fix}")


@contextlib.contextmanager
def writing(path: str | Path):
    """Turn an OSError raised inside the block into a :class:`StorageError` naming ``path``."""
    try:
        yield
    except OSError as error:
        raise storage_error(error, path) from None


def make_folder(path: str | Path) -> bool:
    """Create the folder ``path`` and its parents where missing; returns whether this call created ``path``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                path.mkdir()
                return True
            except FileExistsError:
                # One look, so that a folder removed and made again by other processes meanwhile cannot read as
                # a file in the way.
                try:
                    is_folder = stat.S_ISDIR(os.stat(path).st_mode)
                except FileNotFoundError:
                    continue  # removed since (a run that failed cleans up its folder): make it again
                if is_folder:
                    return False
                raise


def check_folder(path: str | Path) -> None:
    """Refuse, before any work, a folder that cannot be made or written: ``path``, or else its nearest existing
    ancestor, must be a folder this process may write in. (A full disk shows only when writing.)"""
    path = Path(path)
    # exists() is False below a file, so the walk stops at the file in the way.
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        code = errno.EEXIST if existing == path else errno.ENOTDIR
    elif not os.access(existing, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_mount(existing) else errno.EACCES
    else:
        return
    raise storage_error(OSError(code, os.strerror(code)), path)


def check_output(path: str | Path, overwrite: bool, *, folder: bool = False, inputs=(), may_hold=()) -> None:
    """Refuse, before any work, an output ``path`` (a file, or a ``folder``) whose writing would destroy what the
    user has not given up: one that exists, unless ``overwrite`` (and then only a file by a file, a folder by a
    folder), and always one :func:`check_not_input` refuses."""
    check_not_input(path, inputs, may_hold)
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise DataError(
            f"{path} already exists; add --overwrite (overwrite=True in Python) to replace it, or choose another --out"
        )
    if path.is_dir() != folder:
        kind, other = ("folder", "file") if path.is_dir() else ("file", "folder")
        raise DataError(f"{path} is a {kind} and the output is a {other}; remove it first or choose another --out")


def check_not_input(path: str | Path, inputs=(), may_hold=()) -> None:
    """Refuse, whatever the options, an output ``path`` that is one of ``inputs`` or ``may_hold`` (the same file by
    any path, link or hard link), holds one of them, or lies in one of ``inputs`` (read whole: a file, or a folder
    of examples; ``may_hold``, e.g. a run folder, may hold the output)."""
    target = Path(path).resolve()
    for given, inside_refused in [(p, True) for p in inputs] + [(p, False) for p in may_hold]:
        source = Path(given).resolve()
        if target == source or _same_file(target, source) or target in source.parents:
            raise DataError(
                f"{path} is, or holds, {given}, which this command reads; writing there would destroy it whatever "
                "the options, choose another --out"
            )
        if inside_refused and source in target.parents:
            raise DataError(f"{path} lies in {given}, which this command reads; choose an --out outside it")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing paths are one file (a hard link as well as a symbolic one)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_only_mount(folder: Path) -> bool:
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new, nothing in between; a refused
    write raises :class:`StorageError` and leaves the old content."""
    with atomic_file(path) as file:
        file.write(data)


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield a temporary file beside ``path``, open for writing bytes, to fill (as large as need be, a piece at a
    time); when the block finishes it is synced to disk and renamed to ``path``, replacing the old content at once,
    and removed if the block fails. A write refused in the block, or of the file itself, raises
    :class:`StorageError` naming ``path``."""
    path = Path(path)
    with writing(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes it private; give it an ordinary file's permissions
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def atomic_folder(path: Path, replace: bool = False):
    """Yield a temporary folder beside ``path`` to fill; it is renamed to ``path`` when the block finishes, and
    removed if the block fails. ``path`` must not exist, unless ``replace``: then what is there is first renamed
    aside (beside it, hidden) and removed once the new folder holds the name, so that a failure leaves the old one
    (a crash between the two renames leaves it under the hidden name). A write refused in the block, or of the
    folder itself, raises :class:`StorageError` naming ``path``."""
    path = Path(path)
    with writing(path):
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            tmp.chmod(0o777 & ~umask())
            yield tmp
            aside = tmp.with_name(tmp.name + ".old") if replace and os.path.lexists(path) else None
            if aside is not None:
                os.rename(path, aside)
            try:
                os.rename(tmp, path)
            except BaseException:
                if aside is not None:
                    os.rename(aside, path)
                raise
            if aside is not None:
                _remove(aside)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _remove(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a whole folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def umask() -> int:
    """The process's file-creation mask, read without changing it (what new files' permissions follow)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
