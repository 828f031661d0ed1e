"""x ** y at the edges the outside suites probe: a zero base and a zero exponent (as JAX)."""
import warnings

import numpy as np

import knetc


def zero_base(y):
    return np.sum(np.power(0.0, y))


def zero_exponent(x):
    return np.sum(x ** 0.0)


def zero_exponent_array(x, y):
    return np.sum(x ** y)


def test_zero_base_has_zero_gradient_wrt_a_positive_exponent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(knetc.grad(zero_base)(np.array([1.5, 2.0])), [0.0, 0.0])


def test_zero_exponent_has_zero_gradient_even_at_a_zero_base():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(knetc.grad(zero_exponent)(np.array([0.0, 2.0])), [0.0, 0.0])
    g = knetc.grad(zero_exponent_array)(np.array([0.0, 2.0]), np.array([0.0, 0.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_float32_bases_keep_float32_gradients():
    g = knetc.grad(zero_exponent_array)(np.array([0.5, 2.0], np.float32), np.array([0.0, 1.5]))
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [0.0, 1.5 * 2.0 ** 0.5], rtol=1e-6)
