"""Runtime helpers that generated code calls directly."""
import numpy as np
import pytest

from knetc.runtime import prims


@pytest.mark.parametrize("idx_shape,row", [((7,), (3,)), ((4, 5), (2, 3)), ((6,), ())])
def test_add_rows_matches_add_at(idx_shape, row):
    rng = np.random.default_rng(0)
    idx = rng.integers(-5, 5, idx_shape)          # repeats and negative indices
    v = rng.standard_normal(idx_shape + row)
    want = np.ones((5,) + row)
    np.add.at(want, idx, v)
    got = prims.add_rows(np.ones((5,) + row), idx, v)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_add_rows_broadcast_value_falls_back():
    out = np.zeros((3, 2))
    prims.add_rows(out, np.array([0, 0, 2]), 1.0)
    np.testing.assert_array_equal(out, [[2, 2], [0, 0], [1, 1]])


def test_tracing_mode_sets_and_restores():
    assert prims.tracing() is False
    with prims.tracing_mode():
        assert prims.tracing() is True
        with prims.tracing_mode(False):
            assert prims.tracing() is False
        assert prims.tracing() is True
    assert prims.tracing() is False
    with pytest.raises(RuntimeError):
        with prims.tracing_mode(True):
            raise RuntimeError
    assert prims.tracing() is False


def test_tracing_skips_batchnorm_running_moments():
    from knetc.runtime.layers import batchnorm, bnmoments
    x = np.random.default_rng(0).standard_normal((8, 3))
    m = bnmoments(mean=np.zeros(3), var=np.ones(3))
    with prims.training_mode(True), prims.tracing_mode(True):
        batchnorm(x, m)
    np.testing.assert_array_equal(m.mean, 0)   # specializing: the generated code updates them
    with prims.training_mode(True):
        batchnorm(x, m)
    np.testing.assert_allclose(m.mean, 0.1 * x.mean(axis=0))
