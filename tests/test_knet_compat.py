"""Knet's tutorial, translated line by line: the Knet-shaped signatures of knetc's helpers.

Element types first in the initializers, ``shakespeare()`` returning ``(trn, tst, chars)``,
``rnninit`` drawing from ``knetc.init``'s seeded generator, ``minibatch`` over any number of
arrays, and ``accuracy(model, data)`` refusing a model that returns no scores.
"""
import numpy as np
import pytest

import knetc
from knetc import data, init
from knetc.metrics import accuracy
from knetc.runtime.rnn import rnninit

# ----------------------------------------------------------------- 1. element type first


@pytest.mark.parametrize("f", [init.xavier, init.xavier_uniform, init.xavier_normal,
                               init.gaussian])
def test_random_initializers_take_the_element_type_first(f):
    for t in (np.float64, np.float32, np.float16, np.dtype("float64"), "float64", float):
        w = f(t, 3, 4)
        assert w.shape == (3, 4) and w.dtype == np.dtype(t)
    assert f(np.float64, (2, 5)).shape == (2, 5)              # dims as one tuple after the type
    assert f(3, 4).dtype == np.float32                        # today's forms
    assert f(3, 4, dtype=np.float64).dtype == np.float64
    with pytest.raises(TypeError, match="twice"):
        f(np.float32, 3, dtype=np.float64)
    with pytest.raises(TypeError, match="first"):
        f(3, np.float32)
    with pytest.raises(TypeError, match="floating"):
        f(np.int32, 3)


def test_xavier_conv_with_type_keeps_the_reversed_shape_and_fans():
    w = init.xavier(np.float32, 20, 1, 5, 5)                  # Knet: xavier(Float32, 5, 5, 1, 20)
    assert w.shape == (20, 1, 5, 5) and w.dtype == np.float32
    s = np.sqrt(6 / (1 * 25 + 20 * 25))                       # fanin = in*kh*kw, fanout = out*kh*kw
    assert np.abs(w).max() <= s and np.abs(w).max() > 0.9 * s
    d = init.xavier(np.float64, 784, 100)                     # (fanin, fanout), used as x @ w
    assert d.shape == (784, 100) and np.abs(d).max() <= np.sqrt(6 / 884)


def test_same_draws_with_and_without_the_type():
    init.seed(5)
    a = init.xavier(np.float64, 4, 3)
    init.seed(5)
    b = init.xavier(4, 3, dtype=np.float64)
    np.testing.assert_array_equal(a, b)
    init.seed(5)
    g = init.gaussian(np.float32, 6, mean=1.0, std=0.5)
    init.seed(5)
    np.testing.assert_array_equal(g, init.gaussian(6, mean=1.0, std=0.5))


def test_param_and_param0_take_the_element_type_first():
    p = init.param(np.float64, 3, 4)
    assert p.shape == (3, 4) and p.dtype == np.float64 and np.abs(p).max() <= np.sqrt(6 / 7)
    assert init.param(3, 4, dtype=np.float64).dtype == np.float64
    assert init.param(3, 4).dtype == np.float32                                  # unchanged
    g = init.param(np.float64, 50, 50, init=init.gaussian)     # init(T, dims...) as in Knet
    assert g.dtype == np.float64 and g.std() < 0.05
    z = init.param0(np.float64, 2, 3)
    assert z.shape == (2, 3) and z.dtype == np.float64 and not z.any()
    assert init.param0(5).dtype == np.float32 and init.param0(5).shape == (5,)
    assert init.param0(np.float16, (2, 2)).dtype == np.float16
    # an explicit atype still decides the array type
    assert init.param(np.float64, 2, atype=lambda a: np.asarray(a, np.float32)).dtype == np.float32
    assert init.param(np.arange(3.0), dtype=np.float64).dtype == np.float64
    b = init.bilinear(np.float64, 2, 2, 2, 2)                 # bilinear: type first (required)
    assert b.dtype == np.float64 and b.shape == (2, 2, 4, 4)


# ----------------------------------------------------------------- 2. shakespeare()

@pytest.fixture(scope="module")
def shakespeare_split(data_dir):
    return data.shakespeare(path=data_dir)


def test_shakespeare_returns_knets_trn_tst_chars(shakespeare_split, data_dir):
    trn, tst, chars = shakespeare_split
    assert trn.dtype == np.uint8 and tst.dtype == np.uint8 and trn.ndim == tst.ndim == 1
    assert isinstance(chars, list) and all(isinstance(c, str) and len(c) == 1 for c in chars)
    assert len(set(chars)) == len(chars) == 83           # Knet: 84, its file had \r\n line ends
    assert int(max(trn.max(), tst.max())) == len(chars) - 1 and min(trn.min(), tst.min()) == 0
    # the 218 pieces between the World Library notices, 200 for training and 18 for testing
    raw = data.shakespeare(raw=True, path=data_dir)
    pieces = data._shakespeare_texts(raw)
    assert len(pieces) == 218
    assert len(trn) + len(tst) == sum(map(len, pieces))
    assert 4_000_000 < len(trn) and 200_000 < len(tst) < 1_000_000
    text_trn = "".join(chars[i] for i in trn)
    text_tst = "".join(chars[i] for i in tst)
    assert "<<THIS" not in text_trn + text_tst and "SHIP.>>" not in text_trn + text_tst
    order = np.random.RandomState(42).permutation(218)
    assert text_trn == "".join(pieces[k] for k in order[:200])
    assert text_tst == "".join(pieces[k] for k in order[200:])
    # most frequent character first (Knet's order): the space
    counts = np.bincount(np.concatenate([trn, tst]), minlength=len(chars))
    assert chars[0] == " " and np.all(np.diff(counts) <= 0)


def test_shakespeare_raw_and_copies(shakespeare_split, data_dir):
    raw = data.shakespeare(raw=True, path=data_dir)
    assert isinstance(raw, str) and len(raw) == 5458199 and "To be, or not to be" in raw
    trn, tst, chars = shakespeare_split
    trn2, tst2, chars2 = data.shakespeare(path=data_dir)
    np.testing.assert_array_equal(trn, trn2)
    np.testing.assert_array_equal(tst, tst2)
    assert chars == chars2
    trn2[:10] = 0                                       # each call returns its own arrays
    np.testing.assert_array_equal(data.shakespeare(path=data_dir)[0][:10], trn[:10])


def test_shakespeare_through_knetc_data(monkeypatch, data_dir):
    monkeypatch.setenv("KNETC_DATA", str(data_dir))
    trn, tst, chars = data.shakespeare()
    # Knet: println(string(chars[trn[1020:1210]]...)), 0-based here
    sample = "".join(chars[i] for i in trn[1019:1210])
    assert len(sample) == 191


# ----------------------------------------------------------------- 3. rnninit and init.seed

def test_rnninit_draws_from_knetc_init_seeded_generator():
    init.seed(11)
    _, w1 = rnninit(5, 7, rnnType="lstm")
    init.seed(11)
    _, w2 = rnninit(5, 7, rnnType="lstm")
    np.testing.assert_array_equal(w1, w2)
    _, w3 = rnninit(5, 7, rnnType="lstm")                 # the generator moves on
    assert not np.array_equal(w1, w3)
    init.seed(11)
    _, w4 = knetc.rnninit(5, 7, rnnType="lstm")            # the exported name too
    np.testing.assert_array_equal(w1, w4)
    # interleaved with the other initializers, one stream
    init.seed(3)
    a = init.xavier(2, 2), rnninit(3, 4, rnnType="gru")[1]
    init.seed(3)
    b = init.xavier(2, 2), rnninit(3, 4, rnnType="gru")[1]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # seed= keeps its own generator, independent of knetc.init
    init.seed(1)
    _, s1 = rnninit(5, 7, seed=0)
    init.seed(2)
    _, s2 = rnninit(5, 7, seed=0)
    np.testing.assert_array_equal(s1, s2)


# ----------------------------------------------------------------- 4. minibatch(x, y, mask, ...)

def test_minibatch_any_number_of_arrays():
    x = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    m = np.arange(10) % 2 == 0
    d = data.minibatch(x, y, m, batchsize=4)
    assert len(d) == 2
    batches = list(d)
    assert all(isinstance(b, tuple) and len(b) == 3 for b in batches)
    xb, yb, mb = batches[1]
    np.testing.assert_array_equal(xb, x[4:8])
    np.testing.assert_array_equal(yb, y[4:8])
    np.testing.assert_array_equal(mb, m[4:8])
    assert len(list(data.minibatch(x, y, m, 4, partial=True))) == 3    # positional batch size
    last = list(data.minibatch(x, y, m, 4, partial=True))[-1]
    assert [len(a) for a in last] == [2, 2, 2]


def test_minibatch_todays_forms():
    x, y = np.arange(10.0), np.arange(10) * 10
    pairs = list(data.minibatch(x, y, 5))                   # Knet's minibatch(x, y, 100)
    assert len(pairs) == 2 and all(len(p) == 2 for p in pairs)
    single = list(data.minibatch(x, batchsize=5))           # one array: arrays, not 1-tuples
    assert all(isinstance(b, np.ndarray) for b in single)
    np.testing.assert_array_equal(single[1], x[5:])
    single2 = list(data.minibatch(x, 5))                    # Knet's minibatch(x, 100)
    np.testing.assert_array_equal(single2[0], x[:5])
    assert len(data.minibatch(x, None, 5)) == 2             # y=None positionally
    assert len(data.minibatch(x, y=y, batchsize=5)) == 2    # keywords
    assert len(data.minibatch(x=x, y=y, batchsize=5)) == 2
    assert data.minibatch(x).batchsize == 100               # the default
    assert data.minibatch(x, np.int64(3)).batchsize == 3    # NumPy ints count as ints


def test_minibatch_rules_are_unambiguous():
    x = np.arange(10)
    with pytest.raises(TypeError, match="twice"):
        data.minibatch(x, 4, batchsize=4)
    with pytest.raises(TypeError, match="last"):
        data.minibatch(x, 4, x)
    with pytest.raises(TypeError, match="at least one array"):
        data.minibatch(batchsize=4)
    with pytest.raises(TypeError):
        data.minibatch(x, x, True)                          # a bool is not a batch size
    with pytest.raises(ValueError, match="array 2"):
        data.minibatch(x, x, x[:9], 3)
    with pytest.raises(ValueError, match="but y has"):
        data.minibatch(x, x[:9], 3)


def test_minibatch_shuffle_partial_types_apply_to_all_arrays():
    n = 23
    x = np.arange(n * 4, dtype=np.float64).reshape(n, 4)
    y = np.arange(n)
    m = np.arange(n) * 10
    d = data.minibatch(x, y, m, batchsize=5, shuffle=True, partial=True,
                       rng=np.random.default_rng(0), xtype=lambda a: a.astype(np.float32),
                       ytype=lambda a: a + 1000)
    seen = []
    for xb, yb, mb in d:
        assert xb.dtype == np.float32
        np.testing.assert_array_equal(yb - 1000, xb[:, 0] / 4)     # same rows in every array
        np.testing.assert_array_equal(mb - 1000, (yb - 1000) * 10)
        seen += list(yb - 1000)
    assert sorted(seen) == list(range(n)) and seen != list(range(n))
    init.seed(4)
    a = [b[1].copy() for b in data.minibatch(x, y, m, batchsize=5, shuffle=True)]
    init.seed(4)
    b = [b[1].copy() for b in data.minibatch(x, y, m, batchsize=5, shuffle=True)]
    assert len(a) == 4 and all(np.array_equal(p, q) for p, q in zip(a, b))
    sized = list(data.minibatch(x, y, m, batchsize=5, xsize=(-1, 2, 2), ysize=(-1, 1)))
    assert sized[0][0].shape == (5, 2, 2) and sized[0][1].shape == sized[0][2].shape == (5, 1)


# ----------------------------------------------------------------- 5. accuracy(fn, data)

def _data():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((23, 5)), rng.integers(0, 3, 23)
    return x, y, [(x[i:i + 10], y[i:i + 10]) for i in range(0, 23, 10)]


def test_accuracy_model_data():
    x, y, batches = _data()
    w = np.random.default_rng(1).standard_normal((5, 3))
    expected = np.mean(np.argmax(x @ w, axis=1) == y)
    assert accuracy(lambda a: a @ w, batches) == pytest.approx(expected)
    assert accuracy(lambda a: a @ w, data=batches) == pytest.approx(expected)   # Knet's keyword
    assert accuracy(lambda a: a @ w, data.minibatch(x, y, 10, partial=True)) == \
        pytest.approx(expected)
    c, n = accuracy(lambda a: a @ w, batches, average=False)
    assert n == 23 and c == int(np.sum(np.argmax(x @ w, axis=1) == y))
    assert accuracy(w, batches, lambda w, a: a @ w) == pytest.approx(expected)  # (w, data, f)


@pytest.mark.parametrize("returned, err, words", [
    (None, TypeError, "None"),
    (0.5, ValueError, "scalar 0.5"),
    (np.float32(0.5), ValueError, "scalar"),
    (np.array(2.0), ValueError, "scalar"),
    ("scores", TypeError, "str"),
])
def test_accuracy_model_without_scores_is_an_error(returned, err, words):
    _, _, batches = _data()

    def model(x):
        return returned

    with pytest.raises(err, match=words) as e:
        accuracy(model, batches)
    assert "model" in str(e.value)
    with pytest.raises(err, match=words) as e:
        accuracy(None, batches, lambda w, x: returned)
    assert "predict" in str(e.value)


def test_accuracy_other_misuse():
    x, y, batches = _data()
    with pytest.raises(TypeError, match="tuple of 2 items"):
        accuracy(lambda a: (a, a), batches)
    with pytest.raises(TypeError, match=r"pair \(x, y\)"):
        accuracy(lambda a: a, data.minibatch(x, y, y, 10))
    with pytest.raises(TypeError, match="None"):
        accuracy(None, y)
    with pytest.raises(TypeError):
        accuracy(lambda a: a, batches, data=batches)
    assert accuracy([[0.0, 1.0], [1.0, 0.0]], [1, 0]) == 1.0        # scores as lists still work
