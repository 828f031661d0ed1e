"""runtime.cublas on the GPU: knetc's own cuBLAS calls against cupy.matmul and NumPy, and a
CUDA-graph capture of products (which CuPy's own cuBLAS calls refuse)."""
from __future__ import annotations

import numpy as np
import pytest

import knetc
from knetc import errors
from knetc.runtime import capturable, cublas


def _cases(xp, dtype):
    rng = np.random.default_rng(7)

    def r(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    big = r(7, 9)
    stack = r(3, 5, 4)
    return {
        "2d@2d": (r(64, 33), r(33, 17)),
        "1d@2d": (r(3), r(3, 5)),
        "2d@1d": (r(4, 3), r(3)),
        "1d@1d": (r(6), r(6)),
        "aT@b": (r(3, 4).T, r(3, 5)),
        "a@bT": (r(4, 3), r(5, 3).T),
        "aT@bT": (r(3, 4).T, r(5, 3).T),
        "col-slice": (big[:, :3], r(3, 2)),
        "row-slice-T": (big[:4, :].T, r(4, 2)),
        "strided-1d": (big[0, ::2], r(5, 2)),
        "strided-1d-right": (r(2, 4), big[::2, 1]),
        "every-other": (big[::2, ::3], r(3, 2)),
        "batched": (stack, r(3, 4, 2)),
        "batched@2d": (stack, r(4, 6)),
        "2d@batched": (r(2, 5), stack),
        "batched@bT": (stack, xp.swapaxes(r(3, 2, 4), -1, -2)),
        "aT-batched": (xp.swapaxes(r(3, 4, 5), -1, -2), r(3, 4, 2)),
        "batch-1-vs-3": (r(1, 5, 4), r(3, 4, 2)),
        "4d-batch": (r(2, 3, 5, 4), r(2, 3, 4, 2)),
        "4d@2d": (r(2, 3, 5, 4), r(4, 2)),
        "1d@batched": (r(5), stack),
        "batched@1d": (stack, r(4)),
        "batch-slice": (r(6, 5, 4)[::2], r(3, 4, 2)),
        "empty-m": (r(0, 3), r(3, 2)),
        "empty-k": (r(4, 0), r(0, 2)),
        "big": (r(300, 257), r(257, 129)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_cupy_and_numpy(cp, dtype):
    cases = _cases(cp, dtype)
    tol = dict(rtol=2e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for name, (a, b) in cases.items():
        got = cublas.matmul(a, b)
        assert isinstance(got, cp.ndarray) and got.dtype == dtype, name
        expected = cp.matmul(a, b)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(expected), err_msg=name, **tol)
        # NumPy's BLAS sums in another order: float32 entries that cancel (0.01 out of terms of
        # ~30, in the "big" case) differ by ~1e-5 absolutely, so the scale sets the tolerance
        want = np.matmul(cp.asnumpy(a), cp.asnumpy(b))
        scale = float(np.abs(want).max()) if want.size else 1.0
        np.testing.assert_allclose(cp.asnumpy(got), want, err_msg=name, rtol=tol["rtol"],
                                   atol=tol["atol"] * max(scale, 1.0))


def test_transposed_views_are_not_copied(cp, monkeypatch):
    copies = []
    real = cp.ascontiguousarray
    monkeypatch.setattr(cp, "ascontiguousarray", lambda x, *a, **k: copies.append(x.shape) or
                        real(x, *a, **k))
    x = cp.asarray(np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32))
    d = cp.asarray(np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32))
    got = cublas.matmul(x.T, d)                  # x.T @ d, as a matmul's adjoint writes it
    np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(x).T @ cp.asnumpy(d), rtol=1e-5)
    assert copies == []
    cublas.matmul(x[::2, ::2], d[:3, :3])        # a strided view is copied
    assert copies


def test_out_dot_and_mixed_dtypes(cp):
    rng = np.random.default_rng(2)
    a = cp.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((3, 2)))
    got = cublas.matmul(a, b)                    # float32 @ float64 -> float64, as NumPy
    assert got.dtype == np.float64
    np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(a).astype(np.float64) @ cp.asnumpy(b),
                               rtol=1e-12)
    out = cp.empty((4, 2))
    assert cublas.matmul(a, b, out=out) is out
    np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(got))
    v = cp.asarray(rng.standard_normal(3).astype(np.float32))
    np.testing.assert_allclose(cp.asnumpy(cublas.dot(a, v)), cp.asnumpy(cp.dot(a, v)), rtol=1e-5)
    assert float(cublas.dot(v, v)) == pytest.approx(float(cp.dot(v, v)), rel=1e-5)
    ai = cp.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(cp.asnumpy(cublas.matmul(ai, ai.T)),
                                  cp.asnumpy(ai) @ cp.asnumpy(ai).T)   # ints: CuPy's matmul


def test_library_is_cupys_copy(cp):
    cublas.matmul(cp.ones((2, 2), np.float32), cp.ones((2, 2), np.float32))
    loaded = cublas._loaded_paths()
    print("cuBLAS library:", cublas._api.lib._name, "mapped:", loaded)
    assert len({p.rsplit("/", 1)[-1] for p in loaded}) == 1, loaded    # one cuBLAS in the process


def test_capture_and_replay_of_products(cp):
    """Products captured into a graph through the capturable namespace; the replays read the
    inputs' new values."""
    ns = capturable.namespace(cp)
    rng = np.random.default_rng(3)
    a = cp.asarray(rng.standard_normal((16, 8)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((8, 4)).astype(np.float32))
    st = cp.asarray(rng.standard_normal((3, 16, 8)).astype(np.float32))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        ns.matmul(a, b)                              # the handle is made outside the capture
        s.begin_capture()
        try:
            c = ns.matmul(a, b)
            d = ns.matmul(a.T, c)                    # a transposed view
            e = ns.matmul(st, b)                     # batched @ 2-D
            f = ns.dot(c[:, 0], c[:, 1])             # strided vectors
        finally:
            graph = s.end_capture()
    for _ in range(2):
        a[...] = cp.asarray(rng.standard_normal(a.shape).astype(np.float32))
        st *= 2
        cp.cuda.Device().synchronize()      # the writes (default stream) before the replay
        graph.launch(s)
        s.synchronize()
        an, bn, sn = cp.asnumpy(a), cp.asnumpy(b), cp.asnumpy(st)
        np.testing.assert_allclose(cp.asnumpy(c), an @ bn, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cp.asnumpy(d), an.T @ (an @ bn), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(cp.asnumpy(e), sn @ bn, rtol=1e-5, atol=1e-5)
        cn = an @ bn
        assert float(f) == pytest.approx(float(cn[:, 0] @ cn[:, 1]), rel=1e-4, abs=1e-4)


def test_unsupported_products_inside_a_capture_are_knetc_errors(cp):
    ns = capturable.namespace(cp)
    a = cp.ones((2, 1, 3, 4), np.float32)
    b = cp.ones((1, 5, 4, 2), np.float32)        # batch dimensions that broadcast both ways
    np.testing.assert_allclose(cp.asnumpy(ns.matmul(a, b)), np.full((2, 5, 3, 2), 4.0))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        try:
            with pytest.raises(errors.KnetcError, match="cannot be captured"):
                ns.matmul(a, b)
        finally:
            s.end_capture()


def test_graph_step_refuses_tensordot_clearly(cp):
    def loss(w, x):
        return np.sum(np.tensordot(x, w[0], 1) ** 2)

    rng = np.random.default_rng(4)
    w = [cp.asarray(rng.standard_normal((3, 2)).astype(np.float32))]
    x = cp.asarray(rng.standard_normal((5, 3)).astype(np.float32))
    with pytest.raises(errors.KnetcError, match="uses cuBLAS|cannot be captured"):
        knetc.graph_step(loss, w, knetc.optimizers(w, knetc.SGD), x)


def test_graph_step_source_uses_knetcs_products(cp):
    def loss(w, x):
        return np.sum((x @ w[0] + w[1]) ** 2)

    rng = np.random.default_rng(5)
    w = [cp.asarray(rng.standard_normal((3, 2)).astype(np.float32)), cp.zeros(2, np.float32)]
    x = cp.asarray(rng.standard_normal((5, 3)).astype(np.float32))
    step = knetc.graph_step(loss, w, knetc.optimizers(w, knetc.Adam), x)
    assert "np.matmul(" in _code(step.source) and " @ " not in _code(step.source)
    float(step(x))
    # ordinary gradients (capture off) still use CuPy's own products
    assert " @ " in _code(knetc.grad(loss).source(w, x))


def _code(source):
    return "\n".join(line.split("#")[0] for line in source.splitlines())
