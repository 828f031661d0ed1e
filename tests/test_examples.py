"""The examples (Knet's tutorial models) at small sizes on the real data sets.

The data folder is conftest.py's ``data_dir``: ``$KNETC_DATA`` when set, else ``../shared/data`` beside
the repository; without either the tests are skipped (nothing is downloaded).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import knetc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples package lives at the repository root
    sys.path.insert(0, str(ROOT))


def test_housing_ten_steps(data, capsys, need):
    need("housing/housing.data")
    from examples import housing
    r = housing.main([])
    assert r["steps"] == 10 and len(r["losses"]) == 11
    assert r["loss"] < r["loss0"] / 5
    assert all(b < a for a, b in zip(r["losses"], r["losses"][1:]))   # falls at every step
    out = capsys.readouterr().out
    assert "step  10" in out


def test_housing_bias_is_a_float_that_learns(data, need):
    need("housing/housing.data")
    from examples import housing
    from knetc.optim import SGD, optimizers, update
    x, y = knetc.data.housing()
    w = housing.initweights()
    opts = optimizers(w, SGD, lr=0.1)
    update(w, knetc.grad(housing.loss)(w, x, y), opts)
    assert isinstance(w[1], float) and w[1] > 1.0      # pulled towards mean(y) ~ 22.5


def test_mnist_softmax_small(need):
    need("mnist/train-images-idx3-ubyte.gz")
    from examples import mnist_softmax
    r = mnist_softmax.main(["--small", "--quiet"])
    assert r["ntrain"] == 1000 and r["epochs"] == 1
    assert r["loss"] < r["loss0"] / 2
    assert r["tst_acc"] > 0.5          # chance is 0.1


def test_mnist_mlp_small(need):
    need("mnist/train-images-idx3-ubyte.gz")
    from examples import mnist_mlp
    r = mnist_mlp.main(["--small", "--epochs", "3", "--quiet"])
    assert r["hidden"] == [64]
    assert r["loss"] < r["loss0"] - 0.5
    assert r["tst_acc"] > 0.4


def test_mnist_mlp_two_hidden_layers(need):
    need("mnist/train-images-idx3-ubyte.gz")
    from examples import mnist_mlp
    w = mnist_mlp.initweights([32, 16])
    assert [a.shape for a in w] == [(784, 32), (32,), (32, 16), (16,), (16, 10), (10,)]
    r = mnist_mlp.main(["--small", "--hidden", "32", "16", "--ntrain", "300", "--ntest", "300",
                        "--quiet"])
    assert r["hidden"] == [32, 16] and r["ntrain"] == 300
    assert r["loss"] < r["loss0"]


def test_lenet_small(need):
    need("mnist/train-images-idx3-ubyte.gz")
    from examples import lenet
    r = lenet.main(["--small", "--quiet"])
    assert r["ntrain"] == 1000
    assert r["loss"] < r["loss0"] - 0.3
    assert r["tst_acc"] > 0.3


def test_lenet_shapes():
    from examples import lenet
    w = lenet.initweights()
    x = np.zeros((3, 1, 28, 28), np.float32)
    assert lenet.predict(w, x).shape == (3, 10)
    assert [a.shape for a in w[:4]] == [(20, 1, 5, 5), (1, 20, 1, 1), (50, 20, 5, 5), (1, 50, 1, 1)]
    assert w[4].shape == (800, 500)


def test_charlm_small(need):
    need("text/shakespeare.txt")
    from examples import charlm
    r = charlm.main(["--small", "--quiet", "--sample", "80"])
    assert r["batches"] == 40 and r["vocab"] > 60
    assert r["loss_last"] < r["loss_first"] - 0.5
    assert r["tst_loss"] < r["tst_loss0"] - 0.5
    assert len(r["sample"]) == 80


def test_charlm_carries_the_state_across_minibatches():
    """loss stores getval(hy), getval(cy) into h; the next call starts from them."""
    from examples import charlm
    text = "to be or not to be, that is the question. " * 20
    chars, ids = charlm.vocabulary(text)
    assert chars == "".join(sorted(set(text)))
    data = charlm.streams(ids, 4)
    assert data.shape == (len(ids) // 4, 4)
    batches = list(charlm.sequences(data, 8, 3))
    assert len(batches) == 3 and batches[0][0].shape == (8, 4) and batches[0][1].shape == (32,)
    np.testing.assert_array_equal(batches[0][1].reshape(8, 4)[:-1], batches[0][0][1:])
    np.testing.assert_array_equal(batches[1][0][0], batches[0][1].reshape(8, 4)[-1])
    model = charlm.initmodel(len(chars), 6, 5, seed=0)
    g = knetc.gradloss(charlm.loss)
    h, href = [None, None], [None, None]
    for x, y in batches:
        _, lossval = g(model, x, y, h)
        want = charlm.loss(model, x, y, href)           # plain NumPy, same state
        assert float(lossval) == pytest.approx(float(want), rel=1e-5)
        assert h[0].shape == h[1].shape == (1, 4, 5)
        np.testing.assert_allclose(h[0], href[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h[1], href[1], rtol=1e-5, atol=1e-6)
    # the whole stream in one minibatch ends in the same state as three carried ones
    xall = np.concatenate([x for x, _ in batches])
    _, hy, cy = charlm.predict(model, xall)
    np.testing.assert_allclose(h[0], hy, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h[1], cy, rtol=1e-4, atol=1e-5)


def test_charlm_gradient_matches_finite_differences():
    from examples import charlm
    from knetc.gradcheck import gradcheck
    from knetc.runtime.rnn import rnninit
    rng = np.random.default_rng(0)
    r, wr = rnninit(4, 5, rnnType="lstm", dtype=np.float64, seed=0)
    model = [r, wr, rng.standard_normal((7, 4)), rng.standard_normal((5, 7)),
             rng.standard_normal(7)]
    x, y = rng.integers(0, 7, (6, 3)), rng.integers(0, 7, 18)
    h0, c0 = rng.standard_normal((1, 3, 5)), rng.standard_normal((1, 3, 5))

    def f(model, x, y, h0, c0):
        return charlm.loss(model, x, y, [h0, c0])

    assert gradcheck(f, model, x, y, h0, c0, samples=20)
    assert gradcheck(f, model, x, y, None, None, samples=20)


def test_tutorial_quick(need, capsys):
    need("text/shakespeare.txt")
    from examples import tutorial
    r = tutorial.main(["--quick", "--sample", "40"])
    assert set(r) >= {"housing", "mnist_softmax", "mnist_mlp", "lenet", "charlm", "total_time"}
    assert r["housing"]["loss"] < r["housing"]["loss0"] / 5
    for name in ("mnist_softmax", "mnist_mlp", "lenet"):
        assert r[name]["tst_acc"] > 0.3, name
    out = capsys.readouterr().out
    assert "=== summary" in out and "total" in out
