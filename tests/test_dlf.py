"""The DeepLearningFrameworks benchmarks: the IMDB and CIFAR-10 loaders (offline), the three
models' gradients against finite differences at tiny sizes, ResNet-50 against PyTorch's layers,
and ``benchmarks/dlf.py --dry-run``."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import knetc
from knetc import data, tree
from knetc.runtime.rnn import RNN

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import dlf  # noqa: E402  (its torch ResNet-50 is the second implementation checked against)

from examples import cifar_vgg, imdb_gru, resnet50  # noqa: E402




def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return path


# --------------------------------------------------------------------------- imdb

_REVIEWS = {
    "aclImdb/train/pos/0_9.txt": "The movie was GREAT, great!<br /><br />It's fine.",
    "aclImdb/train/pos/1_8.txt": "great great great great zzzunknown the",
    "aclImdb/train/neg/0_1.txt": "Bad; the movie... was bad",
    "aclImdb/train/neg/1_2.txt": "bad",
    "aclImdb/test/pos/0_10.txt": "great movie",
    "aclImdb/test/neg/0_3.txt": "the bad movie",
    "aclImdb/train/unsup/0_0.txt": "ignored",          # not a labelled review
    "aclImdb/README": "readme",
}
_INDEX = {"the": 1, "movie": 2, "was": 3, "great": 4, "bad": 5, "br": 6, "it's": 7, "fine": 8}


@pytest.fixture
def tiny_imdb(offline, monkeypatch):
    """A tarball and word index in the real files' formats, made known to the loader."""
    folder = offline / "data" / "imdb"
    folder.mkdir(parents=True)
    tgz = _tar(folder / "aclImdb_labelled.tar.gz",
               {k: v.encode() for k, v in _REVIEWS.items()})
    idx = folder / "imdb_word_index.json"
    idx.write_text(json.dumps(_INDEX))
    monkeypatch.setattr(data, "_IMDB_LOCAL", ("imdb/aclImdb_labelled.tar.gz", _sha(tgz)))
    monkeypatch.setitem(data.FILES, "imdb/imdb_word_index.json", ("http://no/where", _sha(idx)))
    monkeypatch.setenv("KNETC_DATA", str(offline / "data"))
    return offline


def test_imdb_tiny_exact_ids(tiny_imdb):
    xtrn, ytrn, xtst, ytst = data.imdb(num_words=8, maxlen=6, shuffle=False)
    # neg reviews first, each folder by id; ids = rank + 3, >= num_words or unknown -> 2, 1 starts
    np.testing.assert_array_equal(ytrn, [0, 0, 1, 1])
    np.testing.assert_array_equal(ytst, [0, 1])
    assert xtrn.dtype == np.int64 and xtrn.shape == (4, 6)
    assert xtrn[0].tolist() == [1, 2, 4, 5, 6, 2]                  # "bad; the movie... was bad"
    assert xtrn[1].tolist() == [1, 2, 0, 0, 0, 0]                  # "bad", padded at the end
    # "the movie was great great br br it's fine": 10 ids with the start; the last 6 kept
    assert xtrn[2].tolist() == [7, 7, 2, 2, 2, 2]
    assert xtrn[3].tolist() == [7, 7, 7, 7, 2, 4]                  # ... great x4, unknown, the
    assert xtst.tolist() == [[1, 4, 2, 5, 0, 0], [1, 7, 5, 0, 0, 0]]


def test_imdb_tiny_options(tiny_imdb):
    x = data.imdb(num_words=None, maxlen=12, shuffle=False)[0]
    assert x[2].tolist() == [1, 4, 5, 6, 7, 7, 9, 9, 10, 11, 0, 0]   # every word, post-padded
    x = data.imdb(num_words=None, maxlen=4, padding="pre", truncating="post", shuffle=False)[0]
    assert x[1].tolist() == [0, 0, 1, 8] and x[2].tolist() == [1, 4, 5, 6]
    x = data.imdb(num_words=None, maxlen=3, start_char=None, index_from=0, shuffle=False)[0]
    assert x[1].tolist() == [5, 0, 0]
    with pytest.raises(ValueError, match="padding"):
        data.imdb(padding="middle")


def test_imdb_tiny_shuffle_and_cache(tiny_imdb, monkeypatch):
    plain = data.imdb(num_words=8, maxlen=6, shuffle=False)
    xs, ys, _, _ = data.imdb(num_words=8, maxlen=6)          # Keras's seeded shuffle
    perm = np.arange(4)
    np.random.RandomState(113).shuffle(perm)
    np.testing.assert_array_equal(xs, plain[0][perm])
    np.testing.assert_array_equal(ys, plain[1][perm])
    assert list((tiny_imdb / "cache" / "imdb").glob("tokens-*.npz"))   # written on the 1st load

    def boom(*a, **k):
        raise AssertionError("tokenized again instead of reading the cache")
    monkeypatch.setattr(data, "_imdb_tokenize", boom)
    again = data.imdb(num_words=8, maxlen=6, shuffle=False)
    for a, b in zip(again, plain):
        np.testing.assert_array_equal(a, b)


def test_imdb_checksum_and_missing(offline, monkeypatch):
    folder = offline / "data" / "imdb"
    folder.mkdir(parents=True)
    _tar(folder / "aclImdb_labelled.tar.gz", {"aclImdb/train/pos/0_1.txt": b"x"})
    monkeypatch.setenv("KNETC_DATA", str(offline / "data"))
    with pytest.raises(data.ChecksumError):
        data.imdb()
    (folder / "aclImdb_labelled.tar.gz").unlink()
    with pytest.raises(data.DataNotFoundError, match="aclImdb_v1.tar.gz"):
        data.imdb()


def test_imdb_shared_subset(offline, monkeypatch, data_dir):
    if not (data_dir / "imdb" / "aclImdb_labelled.tar.gz").is_file():
        pytest.skip("no imdb in the shared data folder")
    monkeypatch.setenv("KNETC_DATA", str(data_dir))
    xtrn, ytrn, xtst, ytst = data.imdb(limit=25)
    assert xtrn.shape == (50, 150) and xtst.shape == (50, 150)
    assert ytrn.sum() == 25 and ytst.sum() == 25
    assert 0 <= xtrn.min() and xtrn.max() < 30000
    assert not list((offline / "cache").glob("imdb/tokens-*"))    # limit: no cache written
    # every review starts with 1 unless it was truncated; common words are found
    lens = (xtrn > 0).sum(1)
    assert np.all((xtrn[:, 0] == 1) | (lens == 150))
    assert (xtrn == 4).sum() > 50            # "the" (rank 1) is everywhere
    assert (xtrn == 2).mean() < 0.1          # few out-of-vocabulary words


# --------------------------------------------------------------------------- cifar10

def _cifar_tar(path: Path, n=4) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    batches = {}
    members = {}
    for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"batch_label": f"{b} of 6", "labels": [int(v) for v in rng.integers(0, 10, n)],
             "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             "filenames": [f"img{i}.png" for i in range(n)]}
        batches[b] = d
        members[f"cifar-10-batches-py/{b}"] = pickle.dumps(d, protocol=2)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({"label_names": ["a"] * 10}, 2)
    return _tar(path, members), batches


def test_cifar10_tiny(offline, monkeypatch):
    folder = offline / "data" / "cifar10"
    folder.mkdir(parents=True)
    tgz, batches = _cifar_tar(folder / "cifar-10-python.tar.gz")
    monkeypatch.setitem(data.FILES, "cifar10/cifar-10-python.tar.gz", ("http://no/where", _sha(tgz)))
    xtrn, ytrn, xtst, ytst = data.cifar10(path=offline / "data")
    assert xtrn.shape == (20, 3, 32, 32) and xtst.shape == (4, 3, 32, 32)
    assert xtrn.dtype == np.float32 and ytrn.dtype == np.int64
    raw = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    np.testing.assert_allclose(xtrn.reshape(20, -1) * 255, raw, atol=1e-3)
    np.testing.assert_array_equal(ytst, batches["test_batch"]["labels"])
    # pixel (c, h, w) of an image is data[c*1024 + h*32 + w]
    assert xtrn[1, 2, 3, 4] == np.float32(raw[1, 2 * 1024 + 3 * 32 + 4]) * np.float32(1 / 255)


def test_cifar10_checksum_and_refuses_code(offline, monkeypatch):
    folder = offline / "data" / "cifar10"
    folder.mkdir(parents=True)
    tgz, _ = _cifar_tar(folder / "cifar-10-python.tar.gz")
    monkeypatch.setenv("KNETC_DATA", str(offline / "data"))
    with pytest.raises(data.ChecksumError):                   # the real file's sha256
        data.cifar10()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    bad = _tar(folder / "evil.tar.gz", {f"cifar-10-batches-py/{b}": pickle.dumps(Evil(), 2)
                                        for b in ["data_batch_1"]})
    bad.replace(tgz)
    monkeypatch.setitem(data.FILES, "cifar10/cifar-10-python.tar.gz", ("http://no/where", _sha(tgz)))
    with pytest.raises(pickle.UnpicklingError, match="unexpected object"):
        data.cifar10()


# --------------------------------------------------------------------------- models: gradients

def _f64(w):
    return tree.map(lambda a: a.astype(np.float64) if isinstance(a, np.ndarray)
                    and a.dtype == np.float32 else a, w)


def test_imdb_gru_gradient():
    w = imdb_gru.initmodel(vocab=11, embed=4, hidden=3, seed=0)
    r64 = RNN("gru", 4, 3, dtype=np.float64)
    w = [r64] + _f64(w[1:])
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 11, (3, 5)), rng.integers(0, 2, 3)
    assert imdb_gru.predict(w, x).shape == (3, 2)
    knetc.gradcheck(imdb_gru.loss, w, x, y, rtol=1e-4, atol=1e-7)


def test_cifar_vgg_gradient():
    knetc.init.seed(0)
    w = _f64(cifar_vgg.initweights(channels=(2, 3), hidden=4, nclasses=3, size=8))
    rng = np.random.default_rng(2)
    x, y = rng.random((2, 3, 8, 8)), rng.integers(0, 3, 2)
    assert cifar_vgg.predict(w, x).shape == (2, 3)
    knetc.gradcheck(cifar_vgg.loss, w, x, y, (0.0, 0.0), rtol=1e-4, atol=1e-7, samples=4)


@pytest.mark.parametrize("training", [False, True])
def test_resnet50_gradient(training):
    w = _f64(resnet50.initmodel(width=2, layers=(1, 1, 1, 1), nclasses=3, seed=3))
    rng = np.random.default_rng(3)
    for p in resnet50.layers_of(w):        # running statistics other than 0 / 1
        C = p["w"].shape[0]
        p["m"].mean, p["m"].var = rng.standard_normal(C) * 0.1, rng.random(C) + 0.5
    x, y = rng.random((2, 3, 16, 16)), rng.integers(0, 3, 2)
    assert resnet50.predict(w, x).shape == (2, 3)
    knetc.gradcheck(resnet50.loss, w, x, y, training, rtol=1e-4, atol=1e-7, samples=2)


# --------------------------------------------------------------------------- resnet50 vs torch

def test_resnet50_matches_torch():
    torch = pytest.importorskip("torch")
    w = resnet50.initmodel(width=8, nclasses=10, seed=4)      # ResNet-50's depth, narrower
    rng = np.random.default_rng(4)
    for p in resnet50.layers_of(w):
        C = p["w"].shape[0]
        p["bn"][:] = np.concatenate([rng.random(C) + 0.5, rng.standard_normal(C) * 0.1])
        p["m"].mean = (rng.standard_normal(C) * 0.1).astype(np.float32)
        p["m"].var = (rng.random(C) + 0.5).astype(np.float32)
    assert len(resnet50.layers_of(w)) == 53                    # 1 + 16 * 3 + 4 shortcuts
    x = rng.random((2, 3, 64, 64), np.float32)
    ours = resnet50.predict(w, x)
    with torch.no_grad():
        ref = dlf.torch_resnet(torch, w)(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape == (2, 10)
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    # eval mode: an image's scores do not depend on the rest of its batch
    np.testing.assert_allclose(resnet50.predict(w, x[:1]), ours[:1], rtol=1e-4, atol=1e-4)


def test_resnet50_full_size_shapes():
    w = resnet50.initmodel(seed=5)
    n = sum(a.size for a in tree.leaves(w) if isinstance(a, np.ndarray))
    assert n == 25557032                                       # torchvision's resnet50
    h = resnet50.features(w, np.zeros((1, 3, 64, 64), np.float32))
    assert h.shape == (1, 2048)


# --------------------------------------------------------------------------- the benchmark

def test_dlf_dry_run(tmp_path):
    out = tmp_path / "dlf.json"
    md = tmp_path / "dlf.md"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dlf.py"), "--dry-run",
                        "--json", str(out), "--md", str(md)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert res["dry_run"] is True
    assert {r["model"] for r in res["results"]} == {"imdb_gru", "cifar_vgg", "resnet50"}
    assert all(r.get("error") is None for r in res["results"]), res
    assert "imdb_gru" in md.read_text()
