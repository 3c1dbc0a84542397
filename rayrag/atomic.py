"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every artefact rayrag writes (corpus imports, FAISS indexes, graphs, bundles' files) goes
through here: write to a temp name in the same directory, fsync, `os.replace`, fsync the
directory. A crash leaves at most a hidden `.NAME.*.tmp` file behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write (by any library); it replaces `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_text(path: str | Path) -> Iterator[IO[str]]:
    """Yield a UTF-8 text handle; the file replaces `path` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        yield handle


def swap_dir_into_place(tmp: Path, out: Path) -> None:
    """Replace directory `out` with the finished directory `tmp` (same parent).

    Two renames: `out` steps aside, `tmp` takes its name, the old copy is deleted; if the
    second rename fails the old directory is put back. Used for bundles, checkpoints and
    adapters, which are directories of files that must change together.
    """
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # put the previous directory back
        raise
    shutil.rmtree(old, ignore_errors=True)


def fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not all platforms allow it.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """An exclusive `flock` on `path` for the block (the file is created 0600 if missing):
    what writers of a shared file and the purge or erasure that rewrites it agree on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (another user's counts): a writer that died
    leaves a temp folder or an unfinished record that the next one may reclaim."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
