"""Files that cannot be half-written or mixed: atomic writes, one writer per folder.

* :func:`atomic_path` / :func:`write_text` / :func:`write_json` / :func:`write_bytes`:
  temporary file + rename, so a crash or a full disk leaves the previous file whole;
* :func:`write_hdf5`: an HDF5 file built in memory, then written like any bytes (HDF5's own
  writer can crash the process on a full disk);
* :func:`locked_dir`: one writer per run folder (an OS file lock, released when the
  process dies), stale temporary files of dead writers removed;
* :func:`user_cache_dir`, :func:`sha256_file`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import UserError

TMP_SUFFIX = ".tmp"

CACHE_ENV = "IFT6266_CACHE"


def user_cache_dir() -> Path:
    """Where the package keeps compile caches: ``$IFT6266_CACHE``, else the platform's
    per-user cache folder (``~/.cache/ift6266_vae`` on Linux)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ift6266_vae"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A crash or exception while writing leaves any existing file at ``path`` untouched
    and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp) if os.path.isdir(tmp) else os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_hdf5(path: str | os.PathLike, fill) -> Path:
    """Build an HDF5 file in memory with ``fill(h5py.File)``, then write it atomically: a
    full disk or a crash leaves any previous file at ``path`` whole and no temporary file."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        fill(f)
    return write_bytes(path, buf.getvalue())


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def remove_stale_temp(folder: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder`` (only
    safe while no one else writes there: call it holding :func:`locked_dir`)."""
    removed = []
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
    return removed


def check_writable(folder: Path, what: str) -> Path:
    """Create ``folder`` if needed and make sure files can be written in it, before any
    work whose result would have nowhere to go; a one-line UserError otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=TMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write to {what} {folder} ({e.strerror or e}); choose a writable folder") from None
    return folder


@contextlib.contextmanager
def file_lock(path, what: str, wait: bool = False):
    """Hold an OS lock (``flock``) on the file ``path``, which records the holder's pid. The
    lock goes with its holder, however it exits. ``wait``: block until it is free, else a
    one-line UserError naming the holder."""
    path = Path(path)
    try:
        f = open(path, "a+")
    except OSError as e:
        raise UserError(f"cannot write to {what} {path.parent} ({e.strerror or e}); choose a writable folder") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UserError(f"{what} {path.parent} is in use by another process (pid {holder}); wait for it to "
                        "finish or choose another folder") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield path
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


@contextlib.contextmanager
def locked_dir(folder, what: str = "--workdir", clean: tuple = ("", "figures")):
    """Hold ``folder/.lock`` for the duration: one writer per folder.

    A second process asking for the same folder gets a one-line UserError naming the
    holder's pid (:func:`file_lock`). Holding it, the stale temporary files of dead writers
    are removed from the folder and from its subfolders named in ``clean``.
    """
    folder = check_writable(folder, what)
    with file_lock(folder / ".lock", what):
        for sub in clean:
            remove_stale_temp(folder / sub)
        yield folder
