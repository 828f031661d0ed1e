"""Tests for knetc.data (minibatch, dataset loaders on ../shared/data) and knetc.progress."""
import gzip
import io
import sys

import numpy as np
import pytest

from knetc import data, progress




@pytest.fixture
def shared(offline, monkeypatch, data_dir):
    """KNETC_DATA pointing at the shared data folder (``data_dir``, see conftest.py)."""
    monkeypatch.setenv("KNETC_DATA", str(data_dir))
    return data_dir


@pytest.fixture(scope="module")
def mnist_data(data_dir):
    return data.mnist(path=data_dir)


# ----- minibatch -----

def test_minibatch_basic():
    x = np.arange(10 * 3).reshape(10, 3)
    y = np.arange(10)
    d = data.minibatch(x, y, 4)
    assert len(d) == 2
    batches = list(d)
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3)]
    np.testing.assert_array_equal(batches[1][1], [4, 5, 6, 7])
    np.testing.assert_array_equal(batches[0][0], x[:4])
    assert len(list(d)) == 2  # iterable many times
    p = data.minibatch(x, y, 4, partial=True)
    assert len(p) == 3 and [len(b[1]) for b in p] == [4, 4, 2]
    assert len(data.minibatch(x, y, 5, partial=True)) == 2  # exact split: no extra batch
    assert len(data.minibatch(x, None, 20)) == 0
    only_x = list(data.minibatch(x, batchsize=5))
    assert len(only_x) == 2 and isinstance(only_x[0], np.ndarray)


def test_minibatch_shuffle_covers_all():
    x = np.arange(100)
    y = -np.arange(100)
    d = data.minibatch(x, y, 10, shuffle=True, rng=np.random.default_rng(0))
    orders = []
    for _ in range(3):
        seen = np.concatenate([xb for xb, yb in d])
        assert all(np.array_equal(yb, -xb) for xb, yb in d)  # x and y stay paired
        assert sorted(seen) == list(range(100))
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1])  # a new shuffle every epoch
    assert not np.array_equal(orders[0], np.arange(100))
    # shuffle with partial=False drops a different remainder each epoch but never repeats items
    d2 = data.minibatch(np.arange(25), batchsize=10, shuffle=True)
    got = np.concatenate(list(d2))
    assert len(got) == 20 and len(set(got.tolist())) == 20


def test_minibatch_xtype_xsize():
    x = np.arange(8 * 4, dtype=np.float64).reshape(8, 2, 2)
    y = np.arange(8)
    d = data.minibatch(x, y, 4, xtype=lambda a: a.astype(np.float32), xsize=(-1, 4),
                       ytype=lambda a: a + 1)
    xb, yb = next(iter(d))
    assert xb.dtype == np.float32 and xb.shape == (4, 4)
    np.testing.assert_array_equal(yb, [1, 2, 3, 4])
    with pytest.raises(ValueError):
        data.minibatch(x, np.arange(7), 4)
    with pytest.raises(ValueError):
        data.minibatch(x, y, 0)


# ----- loaders -----

def test_housing(shared):
    x, y = data.housing()
    assert x.shape == (506, 13) and y.shape == (506, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0, ddof=1), 1, rtol=1e-5)
    assert 5 <= y.min() and y.max() <= 50
    np.testing.assert_allclose(y[0, 0], 24.0)
    xtrn, ytrn, xtst, ytst = data.housing(0.2, seed=1)
    assert xtrn.shape == (405, 13) and xtst.shape == (101, 13)
    assert ytrn.shape == (405, 1) and ytst.shape == (101, 1)
    np.testing.assert_allclose(np.sort(np.concatenate([ytrn, ytst]).ravel()), np.sort(y.ravel()))
    again = data.housing(0.2, seed=1)
    np.testing.assert_array_equal(again[0], xtrn)


def test_mnist(mnist_data):
    xtrn, ytrn, xtst, ytst = mnist_data
    assert xtrn.shape == (60000, 1, 28, 28) and xtst.shape == (10000, 1, 28, 28)
    assert xtrn.dtype == np.float32 and ytrn.dtype == np.int64
    assert ytrn.shape == (60000,) and ytst.shape == (10000,)
    assert xtrn.min() == 0.0 and xtrn.max() == 1.0
    assert set(np.unique(ytrn)) == set(range(10)) == set(np.unique(ytst))
    np.testing.assert_array_equal(np.bincount(ytst),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert np.bincount(ytrn).sum() == 60000 and np.bincount(ytrn)[1] == 6742
    assert ytrn[0] == 5 and ytst[0] == 7  # the well-known first labels
    # rows then columns: the digit's ink is centred, the border is background
    assert xtrn[:, 0, :, 0].mean() < 1e-3 and xtrn[:, 0, 0, :].mean() < 1e-3
    assert xtrn[:, 0, 14, :].mean() > 0.1 and xtrn[:, 0, :, 14].mean() > 0.1
    ones = xtrn[ytrn == 1, 0]  # a "1" is a vertical stroke: long down a column, short along a row
    assert ones[:, 4:24, 14].mean() > 2 * ones[:, 14, 4:24].mean()


def test_mnist_env(shared):
    # the labels only, through KNETC_DATA (images are covered above)
    y = data._idx(data._fetch("mnist/t10k-labels-idx1-ubyte.gz"), 0x801)
    assert y.shape == (10000,)


def test_text(shared):
    s = data.shakespeare(raw=True)
    assert isinstance(s, str) and len(s) == 5458199 and "To be, or not to be" in s
    t = data.tinyshakespeare()
    assert len(t) == 1115394 and t.startswith("First Citizen:")
    h = data.gutenberg(19)
    assert h == data.gutenberg("hiawatha") == data.gutenberg("19")
    assert not h.startswith("\ufeff") and "Hiawatha" in h and len(h) == 206848 - 1
    with pytest.raises(ValueError, match="hiawatha"):
        data.gutenberg("no such book")


def test_path_argument(offline, data_dir):
    x, y = data.housing(path=data_dir)
    assert x.shape == (506, 13)
    x2, _ = data.housing(path=data_dir / "housing")  # the dataset's own folder works too
    np.testing.assert_array_equal(x, x2)


def test_missing_data_error(offline, monkeypatch):
    empty = offline / "empty"
    empty.mkdir()
    monkeypatch.setenv("KNETC_DATA", str(empty))
    with pytest.raises(data.DataNotFoundError) as e:
        data.housing()
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert "housing/housing.data" in msg and "archive.ics.uci.edu" in msg
    assert str(empty) in msg and str(offline / "cache") in msg and "KNETC_DATA" in msg
    assert "network disabled" in msg
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        data.mnist()
    assert not any((offline / "cache").rglob("*.part"))  # no partial downloads left behind


def test_checksum_mismatch(offline, monkeypatch):
    bad = offline / "bad"
    (bad / "text").mkdir(parents=True)
    (bad / "text" / "tinyshakespeare.txt").write_text("not shakespeare\n")
    monkeypatch.setenv("KNETC_DATA", str(bad))
    with pytest.raises(data.ChecksumError, match="sha256") as e:
        data.tinyshakespeare()
    assert "tinyshakespeare.txt" in str(e.value)


def test_download_goes_to_cache(offline, monkeypatch):
    """A (fake) download lands in the cache and is reused offline; a bad one is not kept."""
    calls = []

    def fake(url, dest):
        calls.append(url)
        dest.write_bytes("\ufeffTHE BOOK\n".encode("utf-8"))

    monkeypatch.setattr(data, "_download", fake)
    assert data.gutenberg(12345) == "THE BOOK\n"
    assert calls == ["https://www.gutenberg.org/cache/epub/12345/pg12345.txt"]
    assert (offline / "cache" / "text" / "pg12345.txt").is_file()
    assert data.gutenberg("12345") == "THE BOOK\n" and len(calls) == 1

    def corrupt(url, dest):
        dest.write_bytes(b"garbage")

    monkeypatch.setattr(data, "_download", corrupt)
    with pytest.raises(data.ChecksumError, match="archive.ics.uci.edu"):
        data.housing()
    assert not (offline / "cache" / "housing" / "housing.data").exists()
    assert not any((offline / "cache").rglob("*.part"))


def test_download_verified_real_file(offline, monkeypatch, data_dir):
    def fake(url, dest):
        assert "karpathy/char-rnn" in url
        dest.write_bytes((data_dir / "text" / "tinyshakespeare.txt").read_bytes())

    monkeypatch.setattr(data, "_download", fake)
    assert len(data.tinyshakespeare()) == 1115394
    assert (offline / "cache" / "text" / "tinyshakespeare.txt").is_file()


def test_idx_magic(tmp_path):
    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as f:
        f.write(np.array([0x801, 3], dtype=">u4").tobytes() + bytes([1, 2, 3]))
    np.testing.assert_array_equal(data._idx(p, 0x801), [1, 2, 3])
    with pytest.raises(ValueError, match="magic"):
        data._idx(p, 0x803)


# ----- progress -----

def test_progress_iterates_quietly(monkeypatch, capsys):
    monkeypatch.delenv("KNETC_PROGRESS", raising=False)
    p = progress.progress(range(50), desc="train")
    seen = []
    for i in p:
        seen.append(i)
        p.set_postfix(loss=1.0 / (i + 1))
    assert seen == list(range(50))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # pytest's captured streams are not TTYs
    assert not progress.enabled()


def test_progress_env(monkeypatch):
    monkeypatch.setenv("KNETC_PROGRESS", "0")
    assert not progress.enabled()
    monkeypatch.setenv("KNETC_PROGRESS", "1")
    assert progress.enabled()
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    assert list(progress.progress(iter([1, 2, 3]), total=3, desc="x")) == [1, 2, 3]
    assert "x" in buf.getvalue() and "3/3" in buf.getvalue()
