"""The Transformer language model and the MNIST ResNet examples: a few training steps at tiny sizes
on the real data (the loss falls), and their gradients against finite differences on tiny
float64 instances.

The data folder is conftest.py's ``data_dir`` (``$KNETC_DATA``, else ``../shared/data``); without
it the training tests are skipped. The gradient checks need no data.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import knetc
from knetc import tree

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples package lives at the repository root
    sys.path.insert(0, str(ROOT))

from examples import resnet_mnist, transformer_lm  # noqa: E402


def _f64(w):
    """The parameters with every float array in float64 (other leaves kept)."""
    return tree.map(lambda a: a.astype(np.float64) if isinstance(a, np.ndarray) else a, w)


def _assert_close(analytic, numeric, paths, rtol=1e-6, atol=1e-8):
    for path in paths:
        a, n = tree.get(analytic, path), tree.get(numeric, path)
        assert a is not None, f"no gradient for {path}"
        np.testing.assert_allclose(a, n, rtol=rtol, atol=atol, err_msg=str(path))


# --------------------------------------------------------------------------- transformer

def _tiny_transformer(seed=3):
    knetc.init.seed(seed)
    w = _f64(transformer_lm.initmodel(7, dim=8, layers=2, context=5, std=0.3))
    rng = np.random.default_rng(seed)
    return w, rng.integers(0, 7, (2, 5)), rng.integers(0, 7, (2, 5))


@pytest.mark.parametrize("gelu", ["tanh", "none"])
def test_transformer_gradient_matches_numeric(gelu):
    w, x, y = _tiny_transformer()
    g = knetc.grad(transformer_lm.loss)(w, x, y, 2, 0.0, gelu)
    assert tree.structure(g) == tree.structure(w)
    n = knetc.numeric_grad(transformer_lm.loss, w, x, y, 2, 0.0, gelu)
    _assert_close(g, n, [("layers", 0, "wqkv"), ("layers", 1, "w1"), ("layers", 0, "ln1_g"),
                         ("tok",), ("pos",), ("lnf_b",), ("out",)])


def test_transformer_is_causal():
    """The scores at position t do not depend on the characters after t."""
    w, x, _ = _tiny_transformer()
    s = transformer_lm.predict(w, x, 2).reshape(2, 5, -1)
    x2 = x.copy()
    x2[:, 3:] = (x2[:, 3:] + 1) % 7
    s2 = transformer_lm.predict(w, x2, 2).reshape(2, 5, -1)
    np.testing.assert_allclose(s[:, :3], s2[:, :3], rtol=1e-12)
    assert not np.allclose(s[:, 3:], s2[:, 3:])


def test_transformer_dropout_only_while_training():
    w, x, y = _tiny_transformer()
    base = float(transformer_lm.loss(w, x, y, 2, 0.5))          # outside grad: no dropout
    assert base == pytest.approx(float(transformer_lm.loss(w, x, y, 2, 0.0)))
    np.random.seed(0)
    l1 = float(knetc.gradloss(transformer_lm.loss)(w, x, y, 2, 0.5)[1])
    assert l1 != pytest.approx(base)


def test_transformer_trains(need):
    need("text/shakespeare.txt")
    r = transformer_lm.main(["--small", "--steps", "40", "--quiet", "--sample", "20",
                             "--testbatches", "2"])
    assert r["steps"] == 40 and r["vocab"] == 83 and len(r["losses"]) == 40
    assert r["loss_first"] > 3.5 > r["loss_last"]           # from ~log(83) = 4.4
    assert r["tst_loss"] < r["tst_loss0"] - 0.8
    assert 2.5 < r["unigram"] < 3.5
    assert len(r["sample"]) == 20
    assert all(np.isfinite(r["grad_norms"]))


# --------------------------------------------------------------------------- resnet

def _tiny_resnet(seed=0):
    knetc.init.seed(seed)
    w = _f64(resnet_mnist.initweights((2, 3, 4)))
    rng = np.random.default_rng(seed)
    return w, rng.standard_normal((3, 1, 12, 12)), np.array([0, 3, 7])


PATHS = [("stem", "w"), ("stem", "bn"), ("blocks", 0, "c2", "w"), ("blocks", 1, "down", "w"),
         ("blocks", 2, "c1", "bn"), ("fc",), ("fc_b",)]


def test_resnet_gradient_matches_numeric_training_mode():
    """Batch statistics, as while training (numeric_grad evaluates the loss in training mode
    too; the running moments it updates do not enter the loss)."""
    w, x, y = _tiny_resnet()
    with knetc.training_mode(True):
        g = knetc.grad(resnet_mnist.loss)(w, x, y)
        n = knetc.numeric_grad(resnet_mnist.loss, w, x, y)
    assert g["stem"]["m"] is None                      # the moments are not parameters
    _assert_close(g, n, PATHS, rtol=1e-5, atol=1e-7)


def test_resnet_gradient_matches_numeric_eval_mode():
    """Running moments (eval mode): another specialization, checked the same way."""
    w, x, y = _tiny_resnet()
    with knetc.training_mode(True):                    # give the moments non-trivial values
        for _ in range(3):
            knetc.grad(resnet_mnist.loss)(w, x * 2 + 1, y)
    assert w["stem"]["m"].mean is not None and np.any(w["stem"]["m"].mean != 0)
    with knetc.training_mode(False):
        g = knetc.grad(resnet_mnist.loss)(w, x, y)
        n = knetc.numeric_grad(resnet_mnist.loss, w, x, y)
    _assert_close(g, n, PATHS, rtol=1e-5, atol=1e-7)


def test_resnet_grad_updates_running_moments_once_per_call():
    w, x, y = _tiny_resnet()
    m = w["stem"]["m"]
    g = knetc.grad(resnet_mnist.loss)
    g(w, x, y)                                         # the first call specializes, then runs
    mean1 = m.mean.copy()
    conv = knetc.conv4(w["stem"]["w"], x, padding=1)
    batch_mean = conv.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(mean1, 0.1 * batch_mean, rtol=1e-10, atol=1e-12)
    g(w, x, y)
    np.testing.assert_allclose(m.mean, 0.9 * mean1 + 0.1 * batch_mean, rtol=1e-10, atol=1e-12)


def test_resnet_eval_mode_is_per_image():
    """In eval mode (running moments) an image's scores do not depend on its minibatch."""
    w, x, y = _tiny_resnet()
    knetc.grad(resnet_mnist.loss)(w, x, y)
    with knetc.training_mode(False):
        np.testing.assert_allclose(resnet_mnist.predict(w, x)[:1], resnet_mnist.predict(w, x[:1]),
                                   rtol=1e-10)
    with knetc.training_mode(True):                    # batch statistics: it does
        assert not np.allclose(resnet_mnist.predict(w, x)[:2], resnet_mnist.predict(w, x[:2]))


def test_resnet_trains(need):
    need("mnist/train-images-idx3-ubyte.gz")
    r = resnet_mnist.main(["--small", "--epochs", "1", "--ntrain", "640",
                           "--ntest", "500", "--neval", "500", "--batchsize", "64", "--quiet"])
    assert r["ntrain"] == 640 and r["epochs"] == 1 and r["channels"] == [8, 16, 32]
    # 10 Adam steps from ~2.3; measured in eval mode, with running moments that have moved only
    # part of the way (1 - 0.9**10) from their start to the batch statistics
    assert r["loss"] < r["loss0"] - 0.2
    assert r["tst_acc"] > 0.15                         # chance is 0.1


# --------------------------------------------------------------------------- the tutorial

def test_tutorial_runs_the_new_models_only_with_more():
    from examples import tutorial
    assert tutorial.parse_args([]).only == list(tutorial.SECTIONS)
    assert tutorial.parse_args(["--more"]).only == list(tutorial.SECTIONS + tutorial.MORE)


def test_tutorial_quick_new_sections(need, capsys):
    need("text/shakespeare.txt")
    need("mnist/train-images-idx3-ubyte.gz")
    from examples import tutorial
    r = tutorial.main(["--quick", "--only", "transformer_lm", "resnet_mnist", "--sample", "20"])
    assert set(r) == {"transformer_lm", "resnet_mnist", "total_time"}
    assert r["transformer_lm"]["loss_last"] < r["transformer_lm"]["loss_first"] - 0.5
    assert r["resnet_mnist"]["loss"] < r["resnet_mnist"]["loss0"]
    assert r["resnet_mnist"]["tst_acc"] > 0.3                  # 3 epochs on 1000 images
    out = capsys.readouterr().out
    assert "transformer_lm" in out and "unigram" in out and "=== summary" in out
