"""``x @ W + b`` written as one expression of NumPy arrays is recorded as one operation,
``prims.affine`` (knetc.compiler.specialize ``_matmul_add``): the product is a temporary nothing
else reads, so the sum is written into it. Every form is checked against central finite
differences (float64) at tier 0 and compiled, and the forms that do not fit (another result
shape or type, a named product) keep NumPy's meaning."""
import numpy as np
import pytest

import knetc
from knetc.compiler import tape
from gradtest import check, check2

@pytest.fixture(autouse=True)
def _every_size(monkeypatch):
    """Products of any size are one operation here (by default, from 64 KiB up)."""
    monkeypatch.setattr(tape, "AFFINE_MIN", 0)


RNG = np.random.default_rng(11)
X, W, B = RNG.standard_normal((5, 3)), RNG.standard_normal((3, 4)), RNG.standard_normal(4)


def rows(x, W, b):
    return np.sum(np.tanh(x @ W + b) ** 2)


def bias_first(x, W, b):
    return np.sum(np.sin(b + x @ W))


def vector(x, W, b):
    return np.sum(np.tanh(x[0] @ W + b) * np.arange(4.0))


def matrix_c(x, W, b):
    return np.sum(np.cos(x @ W + np.outer(np.ones(5), b)))


def scalar_c(x, W, b):
    return np.sum((x @ W + 1.5) ** 2) + np.sum(b)


def bigger_c(x, W, b):          # c widens the result: not the product's shape
    return np.sum(np.tanh(x[:1] @ W + np.outer(np.arange(1.0, 4.0), b)))


def named_product(x, W, b):     # the product is named and read again: not a temporary
    m = x @ W
    return np.sum((m + b) * m)


def nested(x, W, b):
    return np.sum((x @ W + b) @ W.T + x)


@pytest.mark.parametrize("f", [rows, bias_first, vector, matrix_c, scalar_c, bigger_c,
                               named_product, nested])
def test_matmul_add_gradients(f):
    check(f, X.copy(), W.copy(), B.copy(), argnums=(0, 1, 2))


def test_second_order():
    check2(rows, X.copy(), W.copy(), B.copy())


@pytest.mark.parametrize("f, fused", [(rows, True), (bias_first, True), (vector, True),
                                      (scalar_c, True), (bigger_c, False),
                                      (named_product, False)])
def test_which_forms_are_one_operation(f, fused):
    src = knetc.grad(f).source(X.copy(), W.copy(), B.copy())
    code = "\n".join(line.split("#")[0] for line in src.splitlines())
    assert ("affine(" in code) == fused, src


def test_small_products_keep_the_add(monkeypatch):
    monkeypatch.setattr(tape, "AFFINE_MIN", 1 << 16)

    def layer(x, W, b):     # a cache of its own
        return rows(x, W, b)
    assert "affine(" not in knetc.grad(layer).source(X.copy(), W.copy(), B.copy())
    x, w = np.ones((64, 300)), np.ones((300, 128))     # 64 KiB of float64
    assert "affine(" in knetc.grad(layer).source(x, w, np.zeros(128))


def test_types_that_do_not_fit_keep_numpys_result():
    """float32 products with a float64 or int64 c, and int products: NumPy's result types."""
    x32, w32 = X.astype(np.float32), W.astype(np.float32)
    for b in (B, np.arange(4)):
        gl = knetc.gradloss(lambda x, W, b: np.sum(x @ W + b))
        g, loss = gl(x32, w32, b)
        assert g.dtype == np.float32
        np.testing.assert_allclose(loss, np.sum(x32 @ w32 + b), rtol=1e-6)
    xi = np.arange(15).reshape(5, 3)
    gl = knetc.gradloss(lambda W, x, b: np.sum((x @ W.astype(int) + b) * W[0, 0]))
    _, loss = gl(W.copy(), xi, B.copy())
    np.testing.assert_allclose(loss, np.sum((xi @ W.astype(int) + B) * W[0, 0]))
