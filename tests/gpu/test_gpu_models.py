"""The five tutorial models' gradients on the GPU equal the NumPy path's on the same inputs."""
from __future__ import annotations

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime.backend import cpu, gpu


def _compare(loss, w, *args, rtol=2e-4, atol=2e-5):
    gw, lw = knetc.gradloss(loss)(w, *args)
    dw, dl = knetc.gradloss(loss)(gpu(w), *gpu(list(args)))
    np.testing.assert_allclose(float(dl), float(lw), rtol=rtol)
    for a, b in zip(tree.leaves(gw), tree.leaves(cpu(dw)), strict=True):
        if a is None:        # no gradient (the RNN spec of CharLM): none on the GPU either
            assert b is None
            continue
        assert type(a) is type(b) or np.ndim(a) == 0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=rtol, atol=atol)
    return dw


def test_housing(cp):
    from examples import housing
    rng = np.random.default_rng(0)
    w = [rng.standard_normal((13, 1)).astype(np.float32), np.float32(0.0)]
    x, y = rng.standard_normal((100, 13), np.float32), rng.standard_normal((100, 1), np.float32)
    dw = _compare(housing.loss, w, x, y)
    assert isinstance(dw[0], cp.ndarray)


def test_softmax(cp):
    from examples import mnist_softmax
    rng = np.random.default_rng(1)
    w = mnist_softmax.initweights()
    x, y = rng.random((100, 1, 28, 28), np.float32), rng.integers(0, 10, 100)
    _compare(mnist_softmax.loss, w, x, y)


@pytest.mark.parametrize("hidden", [(64,), (128, 64)])
def test_mlp(cp, hidden):
    from examples import mnist_mlp
    rng = np.random.default_rng(2)
    w = mnist_mlp.initweights(hidden=hidden)
    x, y = rng.random((100, 1, 28, 28), np.float32), rng.integers(0, 10, 100)
    _compare(mnist_mlp.loss, w, x, y)


def test_lenet(cp):
    from examples import lenet
    rng = np.random.default_rng(3)
    w = lenet.initweights()
    x, y = rng.random((32, 1, 28, 28), np.float32), rng.integers(0, 10, 32)
    _compare(lenet.loss, w, x, y, rtol=1e-3, atol=1e-4)


def test_charlm(cp):
    from examples import charlm
    rng = np.random.default_rng(4)
    model = charlm.initmodel(40, embed=16, hidden=24, seed=0)
    x, y = rng.integers(0, 40, (10, 8)), rng.integers(0, 40, 80)
    h = [np.zeros((1, 8, 24), np.float32), np.zeros((1, 8, 24), np.float32)]

    def f(model, x, y, h0, c0):
        return charlm.loss(model, x, y, [h0, c0])
    _compare(f, model, x, y, h[0], h[1], rtol=1e-3, atol=1e-4)


def test_training_step_moves_nothing_to_the_host(cp):
    """A cached GPU step (grad + Adam update) keeps every parameter a cupy array."""
    from examples import mnist_mlp
    from knetc.optim import Adam, optimizers, update
    rng = np.random.default_rng(5)
    w = gpu(mnist_mlp.initweights())
    opts = optimizers(w, Adam)
    x, y = cp.asarray(rng.random((64, 784), np.float32)), cp.asarray(rng.integers(0, 10, 64))
    g = knetc.grad(mnist_mlp.loss)
    before = float(mnist_mlp.loss(w, x, y))
    for _ in range(20):
        update(w, g(w, x, y), opts)
    assert all(isinstance(a, cp.ndarray) for a in w)
    assert float(mnist_mlp.loss(w, x, y)) < before


def test_mixed_host_and_device_arguments_are_an_error(cp):
    from examples import mnist_mlp
    w = mnist_mlp.initweights()
    x = cp.zeros((4, 784), cp.float32)
    with pytest.raises(knetc.KnetcError, match="mix CPU"):
        knetc.grad(mnist_mlp.loss)(w, x, np.zeros(4, np.int64))
