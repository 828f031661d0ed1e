"""The uniform-fill folds of knetc/compiler/optimize.py: a mean's or sum's gradient
``np.full(shape, c)`` multiplied in as the scalar ``c`` (and a following negation folded into
it) where that changes no number and no dtype."""
import numpy as np
import pytest

import knetc
from knetc.compiler import optimize, pipeline
from knetc.gradcheck import gradcheck


def mse(w, x, y):
    return np.mean((y - x @ w) ** 2)


def total(w, x):
    return np.sum(np.tanh(x @ w) * x[:, :3])


def broadcast_fill(w, x):
    return np.mean(w * x)          # w (3, 1) * x (3, 4): the fill meets a broadcast product


def weighted(w, x, s):
    return np.sum(x @ w) * s       # s: a float64 NumPy scalar argument, not a Python float


def _unfolded(monkeypatch):
    monkeypatch.setattr(pipeline, "fold_uniform_fills", lambda stmts, shapes, dtypes: stmts)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_gradient_folded_and_bit_identical(monkeypatch, dtype):
    rng = np.random.default_rng(0)
    w, x, y = (rng.standard_normal(s).astype(dtype) for s in [(5, 1), (40, 5), (40, 1)])
    src = knetc.show(mse, w, x, y)
    assert "np.full" not in src and "= -" not in src, src
    got = knetc.grad(mse)(w, x, y)
    _unfolded(monkeypatch)
    knetc.api._CACHES.pop(mse, None)
    want = knetc.grad(mse)(w, x, y)
    assert "np.full" in knetc.show(mse, w, x, y)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)


def test_sum_gradient_folded():
    rng = np.random.default_rng(1)
    w, x = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    assert "np.full" not in knetc.show(total, w, x)
    assert gradcheck(total, w.astype(np.float64), x.astype(np.float64))


def test_broadcast_product_is_not_folded():
    """The fill has the product's shape, its other factor a smaller one: folding would change
    the gradient's shape, so the fill stays."""
    rng = np.random.default_rng(2)
    w, x = rng.standard_normal((3, 1)), rng.standard_normal((3, 4))
    assert "np.full" in knetc.show(broadcast_fill, w, x)
    assert gradcheck(broadcast_fill, w, x)


def test_a_numpy_scalar_is_not_folded_into_float32():
    """np.float64 is not a weak scalar: ``float32_array * np.float64(c)`` would be float64."""
    rng = np.random.default_rng(3)
    w, x = rng.standard_normal((4, 2)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    with pytest.warns(knetc.PrecisionWarning):      # knetc says so, and keeps float32
        g = knetc.grad(weighted)(w, x, np.float64(0.5))
    assert g.dtype == np.float32


def test_fold_helpers_on_ir():
    from knetc.compiler import ir
    full = ir.Assign("d", ir.call(ir.np_fn("full"), ir.Tuple([ir.Const(3)]), ir.Const(0.5),
                                  ir.np_fn("float32")))
    prod = ir.Assign("e", ir.BinOp("*", ir.Name("d"), ir.BinOp("*", ir.Const(2), ir.Name("a"))))
    neg = ir.Assign("f", ir.UnaryOp("-", ir.Name("e")))
    ret = ir.Return(ir.Name("f"))
    shapes, dtypes = {"a": (3,)}, {"a": np.dtype(np.float32)}
    out = optimize.fold_uniform_fills([full, prod, neg, ret], shapes, dtypes)
    assert [s.render() for s in out] == ["f = 2 * a * -0.5", "return f"]
    dtypes["a"] = np.dtype(np.float64)        # the fill is float32, the product float64: kept
    out = optimize.fold_uniform_fills([full, prod, neg, ret], shapes, dtypes)
    assert out[0].render().startswith("d = np.full")


def _two_sums(x):
    return np.sum(np.exp(x)) + np.sum(x * x)


def test_grad_does_not_compute_the_loss_it_does_not_return():
    """grad hands back the gradient alone: the operations that only compute the loss from the
    forward's values are dead code (gradloss keeps them); both gradients are the same."""
    x = np.linspace(-1.0, 1.0, 5)
    only = knetc.grad(_two_sums).source(x)
    both = knetc.gradloss(_two_sums).source(x)
    assert ".sum()" not in only and ".sum()" in both
    assert only.rstrip().endswith("return dx, None")
    g = knetc.grad(_two_sums)(x)
    g2, loss = knetc.gradloss(_two_sums)(x)
    np.testing.assert_allclose(g, np.exp(x) + 2 * x, rtol=1e-14)
    np.testing.assert_array_equal(g, g2)
    assert loss == _two_sums(x)
