"""runtime.cpublas.axpy (the optimizer's one-pass ``w -= lr * g``) against NumPy, and the cases
where it declines (NumPy does the work then)."""
import numpy as np
import pytest

import knetc
from knetc.runtime import cpublas

pytestmark = pytest.mark.skipif(not cpublas.available(), reason="no OpenBLAS beside NumPy")
N = cpublas.MIN_SIZE + 7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_equals_numpy(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N // 7, 7)).astype(dtype)
    y = rng.standard_normal((N // 7, 7)).astype(dtype)
    want = y.astype(np.float64) - 0.37 * x.astype(np.float64)
    assert cpublas.axpy(-0.37, x, y)
    np.testing.assert_allclose(y, want, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6)


def test_axpy_declines_what_it_cannot_do():
    x = np.ones(N, np.float32)
    y = np.zeros(N, np.float32)
    small = np.zeros(10, np.float32)
    assert not cpublas.axpy(1.0, np.ones(10, np.float32), small)                 # too small
    assert not cpublas.axpy(1.0, x.astype(np.float64), y)                        # mixed dtypes
    assert not cpublas.axpy(1.0, x[::2], np.zeros(x[::2].shape, np.float32))    # strided
    assert not cpublas.axpy(1.0, x, y[:N - 1]) if N > 1 else True                # shapes
    assert not cpublas.axpy(1.0, y, y)                                           # overlap
    assert not cpublas.axpy(1.0, x.astype(np.int64), y.astype(np.int64))         # ints
    ro = np.zeros(N, np.float32)
    ro.flags.writeable = False
    assert not cpublas.axpy(1.0, x, ro)
    assert not y.any() and not small.any()


def test_sgd_on_a_large_parameter_equals_the_numpy_step():
    rng = np.random.default_rng(2)
    w = {"E": rng.standard_normal((N // 8 + 1, 8)).astype(np.float32),
         "b": rng.standard_normal(5).astype(np.float32)}
    g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in w.items()}
    want = {k: v - np.float32(0.05) * g[k] for k, v in w.items()}
    opt = knetc.optimizers(w, knetc.SGD, lr=0.05)
    knetc.update(w, g, opt)
    for k in w:
        np.testing.assert_allclose(w[k], want[k], rtol=1e-6, atol=1e-7)
