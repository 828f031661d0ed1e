"""Minibatching and the datasets of Knet's tutorials (housing, MNIST, Shakespeare, Gutenberg).

Conventions: the batch is the FIRST axis (Knet's last axis, reversed); images are
``(N, C, H, W)``; labels are 0-based ints; inputs are float32.

Where the loaders find files, in order:

1. ``path=`` (a folder laid out like the data folder below, or the dataset's own subfolder);
2. ``$KNETC_DATA``, a folder laid out as ``housing/housing.data``, ``mnist/*-idx?-ubyte.gz``,
   ``text/shakespeare.txt``, ``text/tinyshakespeare.txt``, ``text/hiawatha.txt``;
3. the cache ``$KNETC_CACHE`` (default ``~/.cache/knetc``), same layout;
4. a download into the cache (urllib).

Every file with a known sha256 is verified wherever it came from; a mismatch raises
``ChecksumError``.  A file that cannot be found or downloaded raises ``DataNotFoundError`` (a
``FileNotFoundError``) naming the file, the URL and the folders searched.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from knetc import init as _init

__all__ = ["MiniBatch", "minibatch", "housing", "mnist", "shakespeare", "tinyshakespeare",
           "gutenberg", "imdb", "cifar10", "DataNotFoundError", "ChecksumError", "cache_dir"]


# --------------------------------------------------------------------------------------------
# minibatch
# --------------------------------------------------------------------------------------------

class MiniBatch:
    """Re-iterable minibatches over the first axis (Knet's ``Data``); see ``minibatch``."""

    def __init__(self, arrays: Sequence[Any], batchsize: int, shuffle: bool = False,
                 partial: bool = False, xtype: Callable | None = None,
                 ytype: Callable | None = None, xsize: Sequence[int] | None = None,
                 ysize: Sequence[int] | None = None,
                 rng: np.random.Generator | None = None) -> None:
        arrays = tuple(arrays)
        if not arrays:
            raise TypeError("minibatch needs at least one array")
        if isinstance(batchsize, (bool, np.bool_)) or not isinstance(batchsize, (int, np.integer)):
            raise TypeError(f"batchsize must be an int, got {batchsize!r}")
        if batchsize < 1:
            raise ValueError(f"batchsize must be positive, got {batchsize}")
        n = len(arrays[0])
        for k, a in enumerate(arrays[1:], 1):
            if len(a) != n:
                what = "y" if k == 1 and len(arrays) == 2 else f"array {k} (0-based)"
                raise ValueError(f"x has {n} items (first axis) but {what} has {len(a)}")
        self.arrays, self.n, self.batchsize = arrays, n, int(batchsize)
        self.x = arrays[0]
        self.y = arrays[1] if len(arrays) > 1 else None
        self.shuffle, self.partial = shuffle, partial
        self.xtype, self.ytype, self.xsize, self.ysize, self.rng = xtype, ytype, xsize, ysize, rng

    def __len__(self) -> int:
        q, r = divmod(self.n, self.batchsize)
        return q + (1 if self.partial and r else 0)

    def _convert(self, a, size, typ):
        if size is not None:
            a = a.reshape(tuple(size))
        return typ(a) if typ is not None else a

    def __iter__(self) -> Iterator[Any]:
        perm = None
        if self.shuffle:
            perm = (self.rng or _init.default_rng()).permutation(self.n)
        bs = self.batchsize
        for b in range(len(self)):
            i, j = b * bs, min((b + 1) * bs, self.n)
            idx = slice(i, j) if perm is None else perm[i:j]
            xb = self._convert(self.arrays[0][idx], self.xsize, self.xtype)
            if len(self.arrays) == 1:
                yield xb
            else:
                yield (xb,) + tuple(self._convert(a[idx], self.ysize, self.ytype)
                                    for a in self.arrays[1:])

    def __repr__(self) -> str:
        return (f"MiniBatch(arrays={len(self.arrays)}, n={self.n}, batchsize={self.batchsize}, "
                f"batches={len(self)}, shuffle={self.shuffle}, partial={self.partial})")


def _is_batchsize(a: Any) -> bool:
    return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))


def minibatch(*arrays: Any, batchsize: int | None = None, shuffle: bool = False,
              partial: bool = False, xtype: Callable | None = None,
              ytype: Callable | None = None, xsize: Sequence[int] | None = None,
              ysize: Sequence[int] | None = None, rng: np.random.Generator | None = None,
              x: Any = None, y: Any = None) -> MiniBatch:
    """Split arrays along their FIRST axis into minibatches, like Knet's ``minibatch`` (and
    PyTorch's ``DataLoader(TensorDataset(...))``).

    ``minibatch(x, y, 100)``, ``minibatch(x, 100)``, ``minibatch(x, y, mask, batchsize=32)``,
    ``minibatch(x, batchsize=32)``.  The rules:

    * every positional argument is an array (anything with ``len()`` and indexing along the first
      axis), except that a LAST positional argument that is an ``int`` is the batch size (as in
      Knet's ``minibatch(x, y, 100)``); an ``int`` anywhere else, or a batch size given both
      positionally and as ``batchsize=``, is a ``TypeError``.  The default batch size is 100;
    * a positional ``None`` is skipped, so ``minibatch(x, None, 100)`` is ``minibatch(x, 100)``;
      ``x=`` and ``y=`` are accepted as keywords too (then ``x`` is the first array, ``y`` follows
      the positional ones);
    * all arrays must have the same first-axis length;
    * a single array yields the batches themselves (arrays, not 1-tuples); two or more yield
      tuples, one item per array, in the order given: ``for x, y, mask in minibatch(x, y, mask)``.

    Returns an object with ``len()`` that can be iterated many times.  ``shuffle=True`` draws a
    new permutation every pass, applied to all the arrays alike (from ``rng``, default knetc's
    generator, see ``knetc.init.seed``).  ``partial=True`` keeps the last, shorter batch (dropped
    by default).  ``xsize`` reshapes the batches of the first array and ``ysize`` those of every
    other array (e.g. ``(-1, 784)``; -1 stands for the batch size); ``xtype`` is then applied to
    the first array's batches and ``ytype`` to every other array's (e.g. ``cupy.asarray`` or
    ``lambda a: a.astype(np.float32)``).  Without shuffling and without ``xtype``/``ytype`` the
    batches are views into the arrays.
    """
    args = list(arrays)
    if args and _is_batchsize(args[-1]):
        if batchsize is not None:
            raise TypeError(f"minibatch: batch size given twice, positionally ({args[-1]}) and as "
                            f"batchsize={batchsize}")
        batchsize = args.pop()
    for k, a in enumerate(args):
        if _is_batchsize(a):
            raise TypeError(f"minibatch: the int {a} (positional argument {k}) is not an array; "
                            "a positional batch size must be the last argument")
    args = [a for a in args if a is not None]
    if x is not None:
        if args:
            raise TypeError("minibatch: x given both positionally and as x=")
        args = [x]
    if y is not None:
        args.append(y)
    if not args:
        raise TypeError("minibatch needs at least one array: minibatch(x, [y, ...], batchsize)")
    return MiniBatch(args, 100 if batchsize is None else batchsize, shuffle, partial, xtype,
                     ytype, xsize, ysize, rng)


# --------------------------------------------------------------------------------------------
# file lookup, download, checksums
# --------------------------------------------------------------------------------------------

class DataNotFoundError(FileNotFoundError):
    """A dataset file is neither in a local folder nor downloadable."""


class ChecksumError(ValueError):
    """A dataset file does not have the expected sha256."""


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# relative path -> (download URL, sha256 or None)
FILES: dict[str, tuple[str, str | None]] = {
    "housing/housing.data": (
        "https://archive.ics.uci.edu/ml/machine-learning-databases/housing/housing.data",
        "baadf72995725d76efe787b664e1f083388c79ba21ef9a7990d87f774184735a"),
    "mnist/train-images-idx3-ubyte.gz": (
        _MNIST_URL + "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "mnist/train-labels-idx1-ubyte.gz": (
        _MNIST_URL + "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "mnist/t10k-images-idx3-ubyte.gz": (
        _MNIST_URL + "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "mnist/t10k-labels-idx1-ubyte.gz": (
        _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    "text/shakespeare.txt": (  # t8.shakespeare.txt, Gutenberg etext #100 of 1994
        "https://ocw.mit.edu/ans7870/6/6.006/s08/lecturenotes/files/t8.shakespeare.txt",
        "c5601d266987ac885ca96522b1b4e439feb7eca39f0fe1111f7342b63b6468f3"),
    "text/tinyshakespeare.txt": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    "text/hiawatha.txt": (  # Gutenberg #19, the 2021 edition
        "https://www.gutenberg.org/cache/epub/19/pg19.txt",
        "11bee0d53b79b8267736eaecd50f0d76c338279715a5bed413bd45415828cac3"),
    # Stanford's Large Movie Review Dataset; imdb() also accepts imdb/aclImdb_labelled.tar.gz, the
    # same folders without the unlabelled reviews (see _IMDB_LOCAL), when it is in a local folder
    "imdb/aclImdb_v1.tar.gz": (
        "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"),
    "imdb/imdb_word_index.json": (  # the file Keras's imdb.get_word_index() downloads
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb_word_index.json",
        "027313fe9a320280f3bf0fac5baf58c4a683cf39a7ed9c3d3d3912bde4284cf6"),
    "cifar10/cifar-10-python.tar.gz": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
}

_GUTENBERG_NAMES = {"hiawatha": 19}
_GUTENBERG_FILES = {19: "text/hiawatha.txt"}


def cache_dir() -> Path:
    """The download cache: ``$KNETC_CACHE`` or ``~/.cache/knetc``."""
    return Path(os.environ.get("KNETC_CACHE") or Path.home() / ".cache" / "knetc")


def _download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (replaced by tests to forbid network access)."""
    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, sha: str | None, url: str) -> None:
    if sha is None:
        return
    got = _sha256(path)
    if got != sha:
        raise ChecksumError(
            f"{path} is corrupt or a different version: sha256 {got}, expected {sha}. "
            f"Delete it and let knetc download {url} again, or point KNETC_DATA at a good copy.")


def _fetch(rel: str, path: str | os.PathLike | None = None, url: str | None = None,
           sha: str | None = None) -> Path:
    """Find dataset file ``rel`` locally or download it to the cache; verify it; return its path."""
    if rel in FILES:
        url, sha = FILES[rel]
    looked: list[Path] = []
    roots = [Path(p) for p in (path, os.environ.get("KNETC_DATA")) if p]
    for root in roots:
        for cand in (root / rel, root / Path(rel).name):
            looked.append(cand)
            if cand.is_file():
                _verify(cand, sha, url)
                return cand
    dest = cache_dir() / rel
    looked.append(dest)
    if dest.is_file():
        _verify(dest, sha, url)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        os.close(fd)
    except OSError as e:
        raise DataNotFoundError(_missing(rel, url, looked, f"cannot write the cache: {e}")) from e
    try:
        _download(url, Path(tmp))
        _verify(Path(tmp), sha, url)
        os.replace(tmp, dest)
    except ChecksumError:
        os.unlink(tmp)
        raise
    except Exception as e:  # no network, HTTP error, ...
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise DataNotFoundError(_missing(rel, url, looked, f"{type(e).__name__}: {e}")) from e
    return dest


def _missing(rel: str, url: str, looked: list[Path], why: str) -> str:
    where = "\n  ".join(str(p) for p in looked)
    return (f"dataset file {rel!r} not found and could not be downloaded from {url} ({why}).\n"
            f"Looked in:\n  {where}\n"
            f"Set KNETC_DATA to a folder holding {rel} (or pass path=), "
            f"or download the file into {cache_dir()}.")


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------

def housing(test: float = 0.0, *, path: str | os.PathLike | None = None,
            seed: int | None = None) -> tuple[np.ndarray, ...]:
    """The UCI Boston Housing data (506 rows), as in Knet's tutorial ``housing.jl``.

    Returns ``(x, y)``: ``x`` float32 (506, 13), each feature standardised over the whole data
    set (mean 0, sample std 1, ddof=1 like Julia's ``std``), and ``y`` float32 (506, 1), the median
    value MEDV in $1000s.  With ``0 < test < 1`` the rows are shuffled (``seed``, default knetc's
    generator) and split: returns ``(xtrn, ytrn, xtst, ytst)`` with round((1-test)*506) train rows.
    """
    data = np.loadtxt(_fetch("housing/housing.data", path), dtype=np.float64)
    x, y = data[:, :13], data[:, 13:14]
    x = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)
    x, y = x.astype(np.float32), y.astype(np.float32)
    if not test:
        return x, y
    if not 0 < test < 1:
        raise ValueError(f"test must be a fraction in (0, 1), got {test}")
    rng = np.random.default_rng(seed) if seed is not None else _init.default_rng()
    r = rng.permutation(len(x))
    n = int(round((1 - test) * len(x)))
    return x[r[:n]], y[r[:n]], x[r[n:]], y[r[n:]]


def _idx(path: Path, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = magic & 0xFF
    got = int.from_bytes(raw[:4], "big")
    if got != magic or len(raw) < 4 * (1 + ndim):
        raise ValueError(f"{path}: not an idx file with magic number {magic:#x} (got {got:#x})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim)).reshape(dims)


def mnist(*, path: str | os.PathLike | None = None) -> tuple[np.ndarray, ...]:
    """The MNIST digits: ``(xtrn, ytrn, xtst, ytst)``.

    ``x`` is float32 in [0, 1] shaped ``(N, 1, 28, 28)`` (N=60000 train, 10000 test; image rows
    then columns, as in the idx files); ``y`` is int64 in 0..9 (Knet used 10 for the digit 0;
    knetc labels are 0-based).  Flatten with ``x.reshape(len(x), -1)`` for dense models.
    """
    def images(name):
        a = _idx(_fetch(f"mnist/{name}", path), 0x803)
        x = a.reshape(a.shape[0], 1, 28, 28).astype(np.float32)
        x *= np.float32(1 / 255)
        return x

    def labels(name):
        return _idx(_fetch(f"mnist/{name}", path), 0x801).astype(np.int64)

    return (images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
            images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))


def _text(rel: str, path, url=None, sha=None) -> str:
    return _fetch(rel, path, url, sha).read_text(encoding="utf-8-sig")


_NOTICE_START, _NOTICE_END = "<<THIS", "SHIP.>>"
_SHAKESPEARE_SPLIT_SEED = 42
_shakespeare_cache: dict[Path, tuple[np.ndarray, np.ndarray, list[str]]] = {}


def _shakespeare_texts(s: str) -> list[str]:
    """The 218 texts of the 1994 etext: the pieces between its World Library notices
    (``<<THIS ELECTRONIC VERSION ... SHIP.>>``), less the two before the first work and the last
    (the Gutenberg footer), as Knet's ``shakespeare()`` cuts them."""
    pieces, pos = [], 0
    while True:
        i = s.find(_NOTICE_START, pos)
        if i < 0:
            pieces.append(s[pos:])
            break
        pieces.append(s[pos:i])
        j = s.find(_NOTICE_END, i)
        if j < 0:
            raise ValueError("shakespeare: an unterminated World Library notice; not the 1994 "
                             "etext #100 (t8.shakespeare.txt)")
        pos = j + len(_NOTICE_END)
    return pieces[2:-1]


def shakespeare(raw: bool = False, *, path: str | os.PathLike | None = None) -> Any:
    """The complete works of Shakespeare (Gutenberg etext #100 of 1994, ``t8.shakespeare.txt``),
    split as Knet's ``shakespeare()`` (``data/gutenberg.jl``, the charlm tutorial) does.

    Returns ``(trn, tst, chars)``: ``trn`` and ``tst`` are uint8 arrays of 0-based character
    indices (Knet's are 1-based) and ``chars`` is the list of characters they index, so
    ``"".join(chars[i] for i in trn[1019:1210])`` is Knet's ``string(chars[trn[1020:1210]]...)``.

    The split follows Knet's code, not a fraction of the text (so the test text is NOT simply the
    end of the file): the file is cut at its 221 World Library copyright notices (they stand
    between works and between acts), keeping the 218 pieces between the header and the footer
    and leaving the notices out; the pieces are shuffled with a fixed seed (42); the first 200
    make the training text and the other 18 the test text (about 7% of the characters), each the
    concatenation of its pieces in shuffled order.  ``chars`` holds every character of ``trn``
    and ``tst``, most frequent first (Knet's order; ties by code point).

    What differs from Knet: Knet shuffles with Julia's ``MersenneTwister(42)``, which NumPy cannot
    reproduce, so the 18 test pieces are those of NumPy's legacy ``RandomState(42)`` shuffle (a
    stream NumPy keeps fixed across versions); the split is the same in kind (whole pieces,
    200/18) and the same on every machine, but not the same 18 pieces.  And this copy has ``\n``
    line ends where Knet's download had ``\r\n``: 83 characters and about 5.34M indices (Knet:
    84 characters with ``\r``, 4.93M + 0.53M).

    ``shakespeare(raw=True)`` returns the whole file as one string instead (header, notices and
    all).  The split is computed once per file and each call returns fresh copies.
    """
    file = _fetch("text/shakespeare.txt", path)
    text = file.read_text(encoding="utf-8-sig")
    if raw:
        return text
    key = file.resolve()
    if key not in _shakespeare_cache:
        texts = _shakespeare_texts(text)
        order = np.random.RandomState(_SHAKESPEARE_SPLIT_SEED).permutation(len(texts))
        texts = [texts[k] for k in order]
        ntrn = min(200, len(texts))
        codes = [np.frombuffer("".join(t).encode("utf-32-le"), dtype=np.uint32)
                 for t in (texts[:ntrn], texts[ntrn:])]
        uniq, counts = np.unique(np.concatenate(codes), return_counts=True)
        if len(uniq) > 256:
            raise ValueError(f"shakespeare: {len(uniq)} distinct characters do not fit in uint8")
        by_freq = np.lexsort((uniq, -counts))       # most frequent first, ties by code point
        rank = np.empty(len(uniq), dtype=np.uint8)
        rank[by_freq] = np.arange(len(uniq))
        trn, tst = (rank[np.searchsorted(uniq, c)] for c in codes)
        _shakespeare_cache[key] = (trn, tst, [chr(int(uniq[k])) for k in by_freq])
    trn, tst, chars = _shakespeare_cache[key]
    return trn.copy(), tst.copy(), list(chars)


def tinyshakespeare(*, path: str | os.PathLike | None = None) -> str:
    """Karpathy's char-rnn ``tinyshakespeare`` (1,115,394 characters)."""
    return _text("text/tinyshakespeare.txt", path)


def gutenberg(name_or_id: str | int, *, path: str | os.PathLike | None = None) -> str:
    """The text of a Project Gutenberg book, by number or by a known name (``"hiawatha"`` = 19).

    Book 19 (hiawatha) is checksum-verified against the 2021 edition; other books are fetched
    from ``https://www.gutenberg.org/cache/epub/<id>/pg<id>.txt`` into ``text/pg<id>.txt``
    without a checksum.  A leading byte-order mark is removed.
    """
    if isinstance(name_or_id, str) and not name_or_id.isdigit():
        try:
            book = _GUTENBERG_NAMES[name_or_id.lower()]
        except KeyError:
            raise ValueError(f"unknown Gutenberg book {name_or_id!r}; give its number, or one "
                             f"of {sorted(_GUTENBERG_NAMES)}") from None
    else:
        book = int(name_or_id)
    rel = _GUTENBERG_FILES.get(book, f"text/pg{book}.txt")
    return _text(rel, path, f"https://www.gutenberg.org/cache/epub/{book}/pg{book}.txt", None)


# --------------------------------------------------------------------------------------------
# IMDB (the DeepLearningFrameworks GRU benchmark) and CIFAR-10 (its VGG-style CNN)
# --------------------------------------------------------------------------------------------

# the labelled folders of aclImdb_v1.tar.gz repacked (no unlabelled reviews): the shared data
# folder's copy. Looked for in the local folders only; aclImdb_v1.tar.gz is what is downloaded.
_IMDB_LOCAL = ("imdb/aclImdb_labelled.tar.gz",
               "9a89419293baab00c6147ac72d4881c42c4a0b1c7bdb8cf7d41d54c335b5e9e9")
# Keras's Tokenizer/text_to_word_sequence default filters: these become spaces; the apostrophe
# and every other character stay inside words (the Keras word index has "it's", "br", ...)
_KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_IMDB_TOKENS_VERSION = 1
_IMDB_SHUFFLE_SEED = 113        # keras.datasets.imdb.load_data's seed


def _find_local(rel: str, sha: str | None, path: str | os.PathLike | None) -> Path | None:
    """``rel`` in ``path``, ``$KNETC_DATA`` or the cache (verified), without downloading; or None."""
    roots = [Path(p) for p in (path, os.environ.get("KNETC_DATA")) if p]
    for cand in [c for r in roots for c in (r / rel, r / Path(rel).name)] + [cache_dir() / rel]:
        if cand.is_file():
            _verify(cand, sha, "(a local copy; no download URL)")
            return cand
    return None


def _imdb_member(name: str) -> tuple[int, int, int] | None:
    """``(split 0 train / 1 test, label 0 neg / 1 pos, review id)`` of a review's tar member name."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "aclImdb" or parts[1] not in ("train", "test") \
            or parts[2] not in ("neg", "pos") or not parts[3].endswith(".txt"):
        return None
    rid = parts[3][:-4].split("_")[0]
    if not rid.isdigit():
        return None
    return (0 if parts[1] == "train" else 1), (0 if parts[2] == "neg" else 1), int(rid)


def _imdb_tokenize(archive: Path, index: dict[str, int], limit: int) -> dict[str, np.ndarray]:
    """Word ranks of every labelled review in ``archive`` (0 for a word not in ``index``).

    Returns, for split ``s`` in ``trn``/``tst``: ``s_ranks`` (all the reviews' ranks, int32,
    concatenated), ``s_lens`` (words per review) and ``s_y`` (0 negative, 1 positive), the reviews
    ordered negative then positive, each by review id.  ``limit > 0`` keeps the first ``limit``
    reviews (by id) of each of the four folders.
    """
    import tarfile
    table = str.maketrans({c: " " for c in _KERAS_FILTERS})
    found: dict[tuple[int, int, int], np.ndarray] = {}
    with tarfile.open(archive, "r:gz") as tf:
        for m in tf:
            key = _imdb_member(m.name) if m.isfile() else None
            if key is None or (limit and key[2] >= limit):
                continue
            text = tf.extractfile(m).read().decode("utf-8").lower().translate(table)
            found[key] = np.fromiter((index.get(w, 0) for w in text.split()), dtype=np.int32)
    out: dict[str, np.ndarray] = {}
    for split, name in ((0, "trn"), (1, "tst")):
        keys = sorted(k for k in found if k[0] == split)
        if not keys:
            raise ValueError(f"imdb: {archive} holds no aclImdb/{('train', 'test')[split]}/"
                             "{pos,neg}/*.txt reviews; not the Large Movie Review Dataset")
        out[f"{name}_ranks"] = np.concatenate([found[k] for k in keys])
        out[f"{name}_lens"] = np.array([len(found[k]) for k in keys], dtype=np.int64)
        out[f"{name}_y"] = np.array([k[1] for k in keys], dtype=np.int64)
    return out


def _imdb_tokens(path, limit: int) -> dict[str, np.ndarray]:
    """The tokenized reviews, from the cache of a previous full load when there is one."""
    import json
    local = _find_local(*_IMDB_LOCAL, path)
    archive = local if local is not None else _fetch("imdb/aclImdb_v1.tar.gz", path)
    sha = _IMDB_LOCAL[1] if local is not None else FILES["imdb/aclImdb_v1.tar.gz"][1]
    index_file = _fetch("imdb/imdb_word_index.json", path)
    cached = cache_dir() / "imdb" / f"tokens-v{_IMDB_TOKENS_VERSION}-{sha[:16]}.npz"
    if not limit and cached.is_file():
        try:
            with np.load(cached) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):      # a truncated or foreign file: tokenize again
            pass
    index = json.loads(index_file.read_text(encoding="utf-8"))
    tokens = _imdb_tokenize(archive, index, limit)
    if not limit:
        try:  # atomically, so that a concurrent or interrupted load never sees half a file
            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=cached.name + ".", suffix=".npz")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **tokens)
            os.replace(tmp, cached)
        except OSError:
            pass                            # a read-only cache only costs the next load time
    return tokens


def _imdb_pad(ranks, lens, num_words, maxlen, start_char, oov_char, index_from, padding,
              truncating) -> np.ndarray:
    ids = ranks.astype(np.int64) + index_from
    ids[ranks == 0] = oov_char                           # a word the index does not know
    if num_words:
        ids[ids >= num_words] = oov_char
    x = np.zeros((len(lens), maxlen), dtype=np.int64)
    ends = np.cumsum(lens)
    for i, (e, n) in enumerate(zip(ends, lens)):
        seq = ids[e - n:e]
        if start_char is not None:
            seq = np.concatenate(([start_char], seq))
        seq = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        if padding == "post":
            x[i, :len(seq)] = seq
        else:
            x[i, maxlen - len(seq):] = seq
    return x


def imdb(num_words: int | None = 30000, maxlen: int = 150, *, start_char: int | None = 1,
         oov_char: int = 2, index_from: int = 3, padding: str = "post", truncating: str = "pre",
         shuffle: bool = True, limit: int = 0,
         path: str | os.PathLike | None = None) -> tuple[np.ndarray, ...]:
    """The IMDB movie-review sentiment data in Keras's setting, built from the raw Large Movie
    Review Dataset (Maas et al. 2011), as the DeepLearningFrameworks GRU benchmark uses it.

    Returns ``(xtrn, ytrn, xtst, ytst)``: ``x`` int64 ``(25000, maxlen)`` word ids, ``y`` int64
    (0 negative, 1 positive).  Each review is lower-cased and split into words as Keras's
    ``text_to_word_sequence`` does (its punctuation filters become spaces; ``<br />`` gives the
    word ``br``, as in Keras's data); a word's id is its frequency rank in the Keras IMDB word
    index plus ``index_from`` (3); ids ``>= num_words``, and words the index lacks, become
    ``oov_char`` (2); ``start_char`` (1) begins every review; 0 pads.  As in the notebooks'
    ``imdb_for_library``, a review longer than ``maxlen`` keeps its LAST ``maxlen`` ids
    (``truncating="pre"``) and a shorter one is padded at the END (``padding="post"``); Keras's
    ``pad_sequences`` pads at the front (``padding="pre"``).  Each split is shuffled with
    Keras's seed 113 (``shuffle=False``: negative reviews first, each group by review id).

    What differs from Keras's ``imdb.npz``: Keras tokenized the reviews with its own (unpublished)
    script, so a few reviews may split a word differently; about 1% of the words (rare names)
    are missing from the word index and become ``oov_char``.

    Files: ``imdb/aclImdb_labelled.tar.gz`` (the labelled reviews, e.g. the shared data folder)
    or else ``imdb/aclImdb_v1.tar.gz`` (Stanford's archive, downloaded), and
    ``imdb/imdb_word_index.json``, found as the other loaders find theirs (module docstring).
    The tokenized reviews are cached in ``cache_dir()/imdb/`` so that later loads take well
    under a second.  ``limit=n`` (for tests) reads only the first ``n`` reviews, by id, of each of
    the four folders (so ``2n`` per split) and neither reads nor writes that cache.
    """
    if padding not in ("pre", "post") or truncating not in ("pre", "post"):
        raise ValueError(f"imdb: padding and truncating must be 'pre' or 'post', got "
                         f"{padding!r}, {truncating!r}")
    if maxlen < 1:
        raise ValueError(f"imdb: maxlen must be positive, got {maxlen}")
    tokens = _imdb_tokens(path, int(limit))
    rng = np.random.RandomState(_IMDB_SHUFFLE_SEED)     # one stream for both splits, as Keras
    out = []
    for name in ("trn", "tst"):
        x = _imdb_pad(tokens[f"{name}_ranks"], tokens[f"{name}_lens"], num_words, maxlen,
                      start_char, oov_char, index_from, padding, truncating)
        y = tokens[f"{name}_y"].copy()
        if shuffle:
            perm = np.arange(len(y))
            rng.shuffle(perm)
            x, y = x[perm], y[perm]
        out += [x, y]
    return tuple(out)


class _CifarUnpickler:
    """Loads CIFAR's python-pickle batches allowing only the globals they use (NumPy arrays);
    anything else in the file is refused instead of executed."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    @classmethod
    def load(cls, f) -> Any:
        import pickle

        class U(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in cls._ALLOWED:
                    raise pickle.UnpicklingError(f"cifar10: unexpected object {module}.{name} in "
                                                 "a batch file; not CIFAR-10's python batches")
                return super().find_class(module, name)

        return U(f, encoding="latin1").load()


def _cifar_batch(f, name: str) -> tuple[np.ndarray, np.ndarray]:
    d = _CifarUnpickler.load(f)
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"cifar10: batch {name} has no {e} entry; not CIFAR-10's python "
                         "batches") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"cifar10: batch {name} holds data {data.shape} and {len(labels)} labels; "
                         "expected (N, 3072) and N")
    return data, labels


def cifar10(*, path: str | os.PathLike | None = None) -> tuple[np.ndarray, ...]:
    """CIFAR-10 (Krizhevsky 2009) from its python-pickle batches: ``(xtrn, ytrn, xtst, ytst)``.

    ``x`` is float32 in [0, 1] shaped ``(N, 3, 32, 32)`` (N = 50000 train from ``data_batch_1``
    .. ``data_batch_5`` in order, 10000 test from ``test_batch``), ``y`` int64 in 0..9, as the
    DeepLearningFrameworks notebooks' ``cifar_for_library`` prepares them (pixels / 255, channel
    first).  The file is ``cifar10/cifar-10-python.tar.gz``, found or downloaded and checksummed
    as the other loaders' files are; the batches are read straight from the archive.
    """
    import tarfile
    archive = _fetch("cifar10/cifar-10-python.tar.gz", path)
    want = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    got: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tarfile.open(archive, "r:gz") as tf:
        for m in tf:
            base = m.name.rsplit("/", 1)[-1]
            if m.isfile() and base in want and m.name.startswith("cifar-10-batches-py/"):
                got[base] = _cifar_batch(tf.extractfile(m), base)
    missing = [b for b in want if b not in got]
    if missing:
        raise ValueError(f"cifar10: {archive} lacks cifar-10-batches-py/{missing[0]}")

    def images(batches):
        data = np.concatenate([got[b][0] for b in batches])
        x = data.reshape(len(data), 3, 32, 32).astype(np.float32)
        x *= np.float32(1 / 255)
        return x, np.concatenate([got[b][1] for b in batches])

    return images(want[:5]) + images(want[5:])
