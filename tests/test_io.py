"""ift6266_vae.io: atomic writes that a failure cannot half-do, one writer per folder."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import h5py
import pytest

from ift6266_vae import io
from ift6266_vae.errors import UserError


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = io.write_text(tmp_path / "a.txt", "good\n")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_write_hdf5_builds_in_memory_then_writes(tmp_path):
    path = io.write_hdf5(tmp_path / "x.h5", lambda f: f.create_dataset("a", data=[1, 2, 3]))
    with h5py.File(path) as f:
        assert f["a"][()].tolist() == [1, 2, 3]

    def broken(f):
        f.create_dataset("a", data=[9])
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        io.write_hdf5(path, broken)
    with h5py.File(path) as f:  # the old file, whole
        assert f["a"][()].tolist() == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]


def test_a_second_holder_of_a_folder_is_refused_with_the_first_ones_pid(tmp_path):
    with io.locked_dir(tmp_path / "run"):
        with pytest.raises(UserError, match=f"in use by another process \\(pid {os.getpid()}\\)") as err:
            with io.locked_dir(tmp_path / "run"):
                pass
        assert "\n" not in str(err.value)
    with io.locked_dir(tmp_path / "run"):  # released: free again
        pass


def test_the_lock_goes_with_a_killed_holder(tmp_path):
    """The OS releases the lock of a process that dies without cleaning up."""
    code = textwrap.dedent(f"""
        import os
        from ift6266_vae import io
        with io.locked_dir({str(tmp_path / 'run')!r}):
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    with io.locked_dir(tmp_path / "run"):
        pass


def test_stale_temp_files_of_dead_writers_are_removed_when_the_folder_is_locked(tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    stale = [run / ".checkpoint.h5.x1y2.tmp", run / "figures" / ".samples.png.abc.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    (run / ".npm-pack.q.tmp").mkdir()
    (run / "keep.txt").write_text("a result")
    (run / "sub").mkdir()
    (run / "sub" / ".other-run.h5.z.tmp").write_text("another run's file")  # not this folder's
    with io.locked_dir(run):
        assert not any(p.exists() for p in stale) and not (run / ".npm-pack.q.tmp").exists()
    assert (run / "keep.txt").exists() and (run / "sub" / ".other-run.h5.z.tmp").exists()


def test_unwritable_or_file_folders_are_one_line_errors(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        io.check_writable(tmp_path / "f", "--workdir")
    with pytest.raises(UserError, match="cannot write to --workdir /proc"):  # read-only, even for root
        io.check_writable("/proc", "--workdir")
