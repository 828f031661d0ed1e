"""Tests for knetc.runtime.conv: Knet's conv4 / deconv4 / pool / unpool and their gradients."""
from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

import knetc
from knetc.runtime import conv as C


def pair(v):
    return (v, v) if np.ndim(v) == 0 else tuple(v)


@pytest.fixture(params=["batch_first", "batch_last"])
def layout(request, monkeypatch):
    """Run a test through both im2col layouts, whatever the cost model would pick."""
    last = request.param == "batch_last"
    monkeypatch.setattr(C, "_batch_last", lambda *args: last)
    return request.param


# --------------------------------------------------------------------------- naive references

def ref_conv4(w, x, padding=0, stride=1, dilation=1, mode=0):
    """Direct loop over output pixels and kernel taps."""
    (ph, pw), (sh, sw), (dh, dw) = pair(padding), pair(stride), pair(dilation)
    if mode == 0:
        w = w[:, :, ::-1, ::-1]
    N, Cx, H, W = x.shape
    Co, _, kh, kw = w.shape
    xp = np.zeros((N, Cx, H + 2 * ph, W + 2 * pw), x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    Ho = (H + 2 * ph - (kh - 1) * dh - 1) // sh + 1
    Wo = (W + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((N, Co, Ho, Wo), np.result_type(w, x))
    for i, j, p, q in itertools.product(range(Ho), range(Wo), range(kh), range(kw)):
        y[:, :, i, j] += xp[:, :, i * sh + p * dh, j * sw + q * dw] @ w[:, :, p, q].T
    return y


def ref_deconv4(w, x, padding=0, stride=1, dilation=1, mode=0):
    """Transposed convolution by scattering every input pixel through the kernel."""
    (ph, pw), (sh, sw), (dh, dw) = pair(padding), pair(stride), pair(dilation)
    if mode == 0:
        w = w[:, :, ::-1, ::-1]
    N, _, H, W = x.shape
    _, Cy, kh, kw = w.shape
    Hp, Wp = sh * (H - 1) + (kh - 1) * dh + 1, sw * (W - 1) + (kw - 1) * dw + 1
    y = np.zeros((N, Cy, Hp, Wp), np.result_type(w, x))
    for i, j, p, q in itertools.product(range(H), range(W), range(kh), range(kw)):
        y[:, :, i * sh + p * dh, j * sw + q * dw] += x[:, :, i, j] @ w[:, :, p, q]
    return y[:, :, ph:Hp - ph, pw:Wp - pw]


def ref_pool(x, window=2, padding=0, stride=None, mode=0):
    """Pooling by looping over windows; padded cells are NaN and skipped (or counted, mode 1)."""
    (kh, kw), (ph, pw) = pair(window), pair(padding)
    sh, sw = pair(window if stride is None else stride)
    N, Cx, H, W = x.shape
    xp = np.full((N, Cx, H + 2 * ph, W + 2 * pw), np.nan)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    y = np.zeros((N, Cx, Ho, Wo))
    for i, j in itertools.product(range(Ho), range(Wo)):
        win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
        y[:, :, i, j] = (np.nanmax(win, axis=(2, 3)) if mode in (0, 3) else
                         np.nansum(win, axis=(2, 3)) / (kh * kw) if mode == 1 else
                         np.nanmean(win, axis=(2, 3)))
    return y


def numgrad(f, a, eps=1e-6):
    """Central finite differences of the scalar f() with respect to every element of a."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def assert_grad(analytic, numeric, rtol=1e-6):
    assert analytic.shape == numeric.shape and analytic.dtype == numeric.dtype
    scale = np.abs(numeric).max()
    assert scale > 0, "degenerate check: the numerical gradient is zero"
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=rtol * scale)


# --------------------------------------------------------------------------- convolution

PADDINGS = [0, 1, (2, 1)]
STRIDES = [1, 2, (1, 3)]
DILATIONS = [1, 2, (2, 1)]
CONV_SWEEP = list(itertools.product(PADDINGS, STRIDES, DILATIONS, [0, 1]))


@pytest.mark.parametrize("padding,stride,dilation,mode", CONV_SWEEP)
def test_conv4_matches_naive(layout, padding, stride, dilation, mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 2))  # non-square kernel
    kw = dict(padding=padding, stride=stride, dilation=dilation, mode=mode)
    y = C.conv4(w, x, **kw)
    np.testing.assert_allclose(y, ref_conv4(w, x, **kw), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(C.conv4(w, x, alpha=-2.5, **kw), -2.5 * y, rtol=1e-12)


@pytest.mark.parametrize("padding,stride,dilation,mode", CONV_SWEEP)
def test_deconv4_matches_naive(layout, padding, stride, dilation, mode):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    w = rng.standard_normal((3, 2, 3, 4))  # (Cx, Cy, kh, kw)
    kw = dict(padding=padding, stride=stride, dilation=dilation, mode=mode)
    ref = ref_deconv4(w, x, **kw)
    y = C.deconv4(w, x, **kw)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    # deconvolution undoes the shape change of the convolution with the same settings
    assert C.conv4(w, y, **kw).shape == x.shape


def test_mode0_flips_the_kernel():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    np.testing.assert_allclose(C.conv4(w, x, mode=0),
                               C.conv4(w[:, :, ::-1, ::-1].copy(), x, mode=1), rtol=1e-12)
    assert not np.allclose(C.conv4(w, x, mode=0), C.conv4(w, x, mode=1))


@pytest.mark.parametrize("layer", ["conv4", "deconv4"])
def test_conv_float32_preserved(layout, layer):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6), dtype=np.float32)
    w = rng.standard_normal((3, 2, 3, 3), dtype=np.float32) if layer == "deconv4" else \
        rng.standard_normal((2, 3, 3, 3), dtype=np.float32)
    f, fw, fx = (getattr(C, layer + s) for s in ("", "_w", "_x"))
    kw = dict(padding=1, stride=2, mode=1, alpha=np.float64(0.5))  # a float64 scalar alpha
    y = f(w, x, **kw)
    dy = np.ones_like(y)
    outs = [y, fw(w, x, dy, **kw), fx(w, x, dy, **kw)]
    assert [a.dtype for a in outs] == [np.float32] * 3
    assert outs[1].shape == w.shape and outs[2].shape == x.shape
    ref = (ref_conv4 if layer == "conv4" else ref_deconv4)(
        w.astype(np.float64), x.astype(np.float64), padding=1, stride=2, mode=1)
    np.testing.assert_allclose(y, 0.5 * ref, rtol=1e-5, atol=1e-5)


GRAD_SWEEP = list(itertools.product(PADDINGS, [1, 2], [1, 2], [0, 1]))


@pytest.mark.parametrize("padding,stride,dilation,mode", GRAD_SWEEP)
def test_conv4_gradients(layout, padding, stride, dilation, mode):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 7, 6))
    w = rng.standard_normal((3, 2, 3, 2))
    kw = dict(padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=0.7)
    R = rng.standard_normal(C.conv4(w, x, **kw).shape)

    def loss():
        return np.sum(C.conv4(w, x, **kw) * R)

    assert_grad(C.conv4_w(w, x, R, **kw), numgrad(loss, w))
    assert_grad(C.conv4_x(w, x, R, **kw), numgrad(loss, x))


@pytest.mark.parametrize("padding,stride,dilation,mode", GRAD_SWEEP)
def test_deconv4_gradients(layout, padding, stride, dilation, mode):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4, 3))
    w = rng.standard_normal((3, 2, 2, 3))
    kw = dict(padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=1.3)
    if min(C.deconv4(w, x, **kw).shape[2:]) < 1:
        pytest.skip("output would be empty")
    R = rng.standard_normal(C.deconv4(w, x, **kw).shape)

    def loss():
        return np.sum(C.deconv4(w, x, **kw) * R)

    assert_grad(C.deconv4_w(w, x, R, **kw), numgrad(loss, w))
    assert_grad(C.deconv4_x(w, x, R, **kw), numgrad(loss, x))


@pytest.mark.parametrize("padding,stride,dilation,mode",
                         [(0, 1, 1, 0), (1, 2, 2, 1), ((2, 1), 1, 2, 0)])
def test_second_order_rules(padding, stride, dilation, mode):
    """The identities behind the rules for conv4_w and conv4_x (gradients of gradients)."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 2, 3))
    kw = dict(padding=padding, stride=stride, dilation=dilation, mode=mode, alpha=0.9)
    dy = rng.standard_normal(C.conv4(w, x, **kw).shape)
    Rw, Rx = rng.standard_normal(w.shape), rng.standard_normal(x.shape)

    def loss_w():
        return np.sum(C.conv4_w(w, x, dy, **kw) * Rw)

    assert_grad(C.conv4_x(Rw, x, dy, **kw), numgrad(loss_w, x))
    assert_grad(C.conv4(Rw, x, **kw), numgrad(loss_w, dy))

    def loss_x():
        return np.sum(C.conv4_x(w, x, dy, **kw) * Rx)

    assert_grad(C.conv4_w(w, Rx, dy, **kw), numgrad(loss_x, w))
    assert_grad(C.conv4(w, Rx, **kw), numgrad(loss_x, dy))


def test_cost_model_picks_each_layout():
    """LeNet's first layer (wide images, one channel) stays batch first, its second goes last."""
    g1 = C._conv_geometry((20, 1, 5, 5), (128, 1, 28, 28), 0, 1, 1)
    g2 = C._conv_geometry((50, 20, 5, 5), (128, 20, 12, 12), 0, 1, 1)
    assert not C._batch_last(128, 1, 28, 28, 20, g1)
    assert C._batch_last(128, 20, 12, 12, 50, g2)


def test_conv_errors():
    x, w = np.zeros((1, 3, 5, 5)), np.zeros((2, 4, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        C.conv4(w, x)
    with pytest.raises(ValueError, match="mode"):
        C.conv4(np.zeros((2, 3, 3, 3)), x, mode=2)
    with pytest.raises(ValueError, match="too small"):
        C.conv4(np.zeros((2, 3, 7, 7)), x)


# --------------------------------------------------------------------------- pooling

WINDOWS = [2, 3, (2, 3)]
POOL_SWEEP = [(win, pad, st, mode)
              for win, pad, st, mode in itertools.product(WINDOWS, [0, 1], [None, 1, 2, 3, (1, 2)],
                                                          [0, 1, 2, 3])]


@pytest.mark.parametrize("window,padding,stride,mode", POOL_SWEEP)
def test_pool_matches_naive(window, padding, stride, mode):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 7, 8))
    kw = dict(window=window, padding=padding, stride=stride, mode=mode)
    y = C.pool(x, **kw)
    np.testing.assert_allclose(y, ref_pool(x, **kw), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(C.pool(x, alpha=3.0, **kw), 3.0 * y, rtol=1e-12)


@pytest.mark.parametrize("window,padding,stride,mode", POOL_SWEEP)
def test_pool_x_gradient(window, padding, stride, mode):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 7, 6))  # random floats: no ties, max pooling is smooth
    kw = dict(window=window, padding=padding, stride=stride, mode=mode, alpha=0.6)
    y = C.pool(x, **kw)
    R = rng.standard_normal(y.shape)
    assert_grad(C.pool_x(x, y, R, **kw), numgrad(lambda: np.sum(C.pool(x, **kw) * R), x))


@pytest.mark.parametrize("mode", [0, 3])
def test_max_pool_ties_go_to_the_first_maximum(mode):
    x = np.zeros((1, 1, 4, 4), np.float32)  # every window is a four-way tie
    x[0, 0, 3, 3] = -1
    y = C.pool(x, mode=mode)
    dy = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    dx = C.pool_x(x, y, dy, mode=mode)
    expected = np.zeros((4, 4), np.float32)
    expected[::2, ::2] = [[1, 2], [3, 4]]  # the top-left cell of each window
    np.testing.assert_array_equal(dx[0, 0], expected)
    # overlapping windows: each window routes to its own first maximum, and they accumulate
    dx = C.pool_x(x, C.pool(x, window=3, stride=1), np.ones((1, 1, 2, 2), np.float32), window=3,
                  stride=1, mode=mode)
    expected = np.zeros((4, 4), np.float32)
    expected[0, 0] = expected[0, 1] = expected[1, 0] = expected[1, 1] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_pool_float32_preserved(mode):
    x = np.random.default_rng(10).standard_normal((2, 3, 6, 6), dtype=np.float32)
    kw = dict(window=3, padding=1, stride=2, mode=mode, alpha=np.float64(2))
    y = C.pool(x, **kw)
    dx = C.pool_x(x, y, np.ones_like(y), **kw)
    u = C.unpool(x, **kw)
    du = C.unpool_x(x, u, np.ones_like(u), **kw)
    assert [a.dtype for a in (y, dx, u, du)] == [np.float32] * 4
    assert dx.shape == x.shape and du.shape == x.shape
    ys, saved = C.pool_with_index(x, **kw)
    dxs = C.pool_x_saved(x, ys, np.ones_like(ys), saved, **kw)
    ddy = C.pool_x_dy(x, ys, np.ones_like(x), saved, **kw)
    assert [a.dtype for a in (ys, dxs, ddy)] == [np.float32] * 3
    np.testing.assert_array_equal(ys, y)
    np.testing.assert_array_equal(dxs, dx)


UNPOOL_SWEEP = list(itertools.product(WINDOWS, [0, 1], [None, 1, (2, 1)], [0, 1, 2, 3]))


@pytest.mark.parametrize("window,padding,stride,mode", UNPOOL_SWEEP)
def test_unpool_x_gradient(window, padding, stride, mode):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 2, 4, 3))
    kw = dict(window=window, padding=padding, stride=stride, mode=mode, alpha=0.8)
    y = C.unpool(x, **kw)
    R = rng.standard_normal(y.shape)
    assert_grad(C.unpool_x(x, y, R, **kw), numgrad(lambda: np.sum(C.unpool(x, **kw) * R), x))


@pytest.mark.parametrize("window,padding,stride,mode", UNPOOL_SWEEP)
def test_unpool_is_the_adjoint_of_average_pooling(window, padding, stride, mode):
    """Knet: unpool = average-pool backward (mode 0, 2, 3 -> pool mode 1; 1 -> 2) times the
    window size, divided by alpha."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 4, 3))
    y = C.unpool(x, window=window, padding=padding, stride=stride, mode=mode, alpha=0.5)
    z = rng.standard_normal(y.shape)
    pool_mode = 2 if mode == 1 else 1
    kh, kw = pair(window)
    lhs = np.sum(y * z)
    rhs = kh * kw / 0.5 * np.sum(x * ref_pool(z, window, padding, stride, pool_mode))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_unpool_default_is_nearest_neighbour_upsampling():
    x = np.random.default_rng(13).standard_normal((2, 3, 4, 5))
    y = C.unpool(x)
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))
    np.testing.assert_array_equal(C.pool(y), x)  # Knet: x == pool(unpool(x))
    dy = np.random.default_rng(14).standard_normal(y.shape)
    block_sums = dy.reshape(2, 3, 4, 2, 5, 2).sum(axis=(3, 5))
    np.testing.assert_allclose(C.unpool_x(x, y, dy), block_sums, rtol=1e-12)


def test_pool_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        C.pool(x, mode=4)
    with pytest.raises(ValueError, match="padding"):
        C.pool(x, window=2, padding=2)


# --------------------------------------------------------------------------- saved max-pool indices
# pool_with_index / pool_x_saved: the forward and backward the generated gradient code runs.

MAX_SWEEP = [(win, pad, st, mode) for win, pad, st, mode in POOL_SWEEP if mode in (0, 3)]


@pytest.mark.parametrize("window,padding,stride,mode", MAX_SWEEP)
def test_pool_x_saved_gradient(window, padding, stride, mode):
    """The saved path against finite differences, and against pool_x: the same cells get the
    gradient (integer-valued dy, so that even overlapping windows sum exactly)."""
    rng = np.random.default_rng(18)
    x = rng.standard_normal((1, 2, 7, 6))
    kw = dict(window=window, padding=padding, stride=stride, mode=mode, alpha=0.6)
    y, saved = C.pool_with_index(x, **kw)
    np.testing.assert_array_equal(y, C.pool(x, **kw))
    R = rng.standard_normal(y.shape)
    assert_grad(C.pool_x_saved(x, y, R, saved, **kw),
                numgrad(lambda: np.sum(C.pool(x, **kw) * R), x))
    dy = rng.integers(-9, 10, y.shape).astype(np.float64)
    kw["alpha"] = 0.5  # exact products
    np.testing.assert_array_equal(C.pool_x_saved(x, y, dy, saved, **kw),
                                  C.pool_x(x, y, dy, **kw))


@pytest.mark.parametrize("window,padding,stride,mode", MAX_SWEEP)
def test_pool_x_saved_same_routing_with_ties_nan_and_inf(window, padding, stride, mode):
    """Ties go to the first maximum (row-major), a NaN window routes nothing and an all -inf
    window whose first cell is padding routes nothing, exactly as pool_x; also through several
    index blocks and through the per-tap path used for other array modules."""
    rng = np.random.default_rng(19)
    x = rng.integers(-2, 3, (2, 3, 7, 8)).astype(np.float32)  # many ties
    x[0, 1, 0, 0] = np.nan  # in the first window whatever the settings
    x[1, 2, :3, :3] = -np.inf
    kw = dict(window=window, padding=padding, stride=stride, mode=mode, alpha=0.5)
    y, saved = C.pool_with_index(x, **kw)
    np.testing.assert_array_equal(y, C.pool(x, **kw))
    dy = rng.integers(-9, 10, y.shape).astype(np.float32)
    expected = C.pool_x(x, y, dy, **kw)
    assert np.isnan(y).any() and not np.isnan(expected).any()
    np.testing.assert_array_equal(C.pool_x_saved(x, y, dy, saved, **kw), expected)
    g = C._pool_geometry(x, window, padding, stride)
    np.testing.assert_array_equal(C._route_taps(np, saved, C._scaled(dy, 0.5), g, x.shape),
                                  expected)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(C, "_BLOCK", 5)  # one image per block
        np.testing.assert_array_equal(C.pool_x_saved(x, y, dy, saved, **kw), expected)


def test_pool_with_index_saves_small_offsets():
    x = np.random.default_rng(20).standard_normal((2, 3, 8, 8), dtype=np.float32)
    y, saved = C.pool_with_index(x)
    assert saved.dtype == np.uint8 and saved.shape == y.shape
    blocks = x.reshape(2, 3, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 4, 4, 4)
    p, q = np.divmod(blocks.argmax(axis=-1), 2)
    np.testing.assert_array_equal(saved, p * 8 + q)  # offset from the window's first cell
    # wide images need wider offsets; average pooling saves nothing
    wide = np.random.default_rng(21).standard_normal((1, 1, 4, 300))
    y, saved = C.pool_with_index(wide, window=3, padding=1)
    assert saved.dtype == np.uint16
    dy = np.random.default_rng(22).standard_normal(y.shape)
    np.testing.assert_array_equal(C.pool_x_saved(wide, y, dy, saved, window=3, padding=1),
                                  C.pool_x(wide, y, dy, window=3, padding=1))
    y, saved = C.pool_with_index(x, mode=1)
    assert saved is None
    np.testing.assert_array_equal(y, C.pool(x, mode=1))
    dy = np.ones_like(y)
    np.testing.assert_array_equal(C.pool_x_saved(x, y, dy, None, mode=1),
                                  C.pool_x(x, y, dy, mode=1))


def test_pool_x_saved_checks_saved():
    x = np.zeros((1, 1, 4, 4))
    y, saved = C.pool_with_index(x)
    with pytest.raises(ValueError, match="saved"):
        C.pool_x_saved(x, y, y, saved[..., :1])  # wrong shape
    with pytest.raises(ValueError, match="saved"):
        C.pool_x_saved(x, y, y, saved.astype(np.int64))
    with pytest.raises(ValueError, match="saved"):
        C.pool_x_saved(x, y, y, saved, window=3, stride=1, padding=1)  # other settings


@pytest.mark.parametrize("window,padding,stride,mode",
                         [(2, 0, None, 0), (3, 1, 2, 3), ((2, 3), 1, 1, 0), (3, 0, (1, 2), 1),
                          (2, 1, 1, 2)])
def test_pool_x_dy_is_the_adjoint_of_the_backward(window, padding, stride, mode):
    """pool_x is linear in dy: <pool_x(dy), ddx> = <dy, pool_x_dy(ddx)> (gradients of gradients)."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((2, 2, 7, 6))
    kw = dict(window=window, padding=padding, stride=stride, mode=mode, alpha=0.7)
    y, saved = C.pool_with_index(x, **kw)
    dy, ddx = rng.standard_normal(y.shape), rng.standard_normal(x.shape)
    lhs = np.sum(C.pool_x_saved(x, y, dy, saved, **kw) * ddx)
    for s in (saved, None):
        assert np.sum(dy * C.pool_x_dy(x, y, ddx, s, **kw)) == pytest.approx(lhs, rel=1e-12)


def _pool_x_loss(dy, x, S, kw):
    return np.sum(np.sin(C.pool_x(x, C.pool(x, **kw), dy, **kw)) * S)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_pool_x_rule(mode):
    """pool_x called by the user is differentiable in dy (its rule uses pool_x_dy)."""
    rng = np.random.default_rng(27)
    x = rng.standard_normal((2, 2, 7, 6))
    kw = dict(window=3, padding=1, stride=2, mode=mode, alpha=0.8)
    dy = rng.standard_normal(C.pool(x, **kw).shape)
    assert knetc.gradcheck(_pool_x_loss, dy, x, rng.standard_normal(x.shape), kw, rtol=1e-5,
                           atol=1e-8)


def _conv_pool_loss(w, x, settings):
    h = x
    for i, kw in enumerate(settings):
        h = C.pool(knetc.relu(C.conv4(w[2 * i], h, padding=1) + w[2 * i + 1]), **kw)
    return np.sum(np.tanh(h.reshape(h.shape[0], -1)) * w[-1])


def _grad_norm(w, x, settings):
    g = knetc.grad(_conv_pool_loss)(w, x, settings)
    return sum(np.sum(gi * gi) for gi in g)


CONV_POOL_MODELS = [
    [dict(), dict(window=3, stride=1, padding=1, mode=3)],
    [dict(window=3, stride=2, padding=1), dict(window=(2, 3), stride=(1, 2), mode=1)],
    [dict(window=2, stride=1), dict(window=2, padding=1, mode=2)],
]


@pytest.mark.parametrize("settings", CONV_POOL_MODELS)
def test_conv_pool_model_gradcheck(settings):
    """knetc.grad through conv4 + relu + pool: the generated code runs pool_with_index forward
    and pool_x_saved backward, checked by knetc.gradcheck, also for gradients of gradients."""
    rng = np.random.default_rng(24)
    x = rng.standard_normal((2, 2, 8, 8))
    w = [rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((1, 3, 1, 1)),
         rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((1, 4, 1, 1))]
    h = x
    for i, kw in enumerate(settings):
        h = C.pool(np.maximum(C.conv4(w[2 * i], h, padding=1) + w[2 * i + 1], 0), **kw)
    w.append(rng.standard_normal(h[0].size))
    src = knetc.grad(_conv_pool_loss).source(w, x, settings)
    assert "pool_with_index(" in src and "pool_x_saved(" in src and "pool_x(" not in src
    assert knetc.gradcheck(_conv_pool_loss, w, x, settings, rtol=1e-5, atol=1e-8)
    assert knetc.gradcheck(_grad_norm, w, x, settings, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- against PyTorch

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


TORCH_CASES = [((4, 3, 11, 10), (5, 3, 3, 3), 0, 1, 1), ((2, 4, 9, 12), (6, 4, 3, 2), 1, 2, 1),
               ((3, 2, 10, 9), (4, 2, 2, 3), (2, 1), (1, 2), (2, 1)),
               ((8, 16, 12, 12), (32, 16, 5, 5), 2, 1, 1)]


@pytest.mark.parametrize("xs,ws,padding,stride,dilation", TORCH_CASES)
@pytest.mark.parametrize("mode", [0, 1])
def test_conv4_and_deconv4_match_torch(torch, layout, xs, ws, padding, stride, dilation, mode):
    F = torch.nn.functional
    rng = np.random.default_rng(15)
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    kw = dict(padding=padding, stride=stride, dilation=dilation)
    wt = torch.from_numpy(w if mode == 1 else np.ascontiguousarray(w[:, :, ::-1, ::-1]))
    ref = F.conv2d(torch.from_numpy(x), wt, **kw).numpy()
    y = C.conv4(w, x, mode=mode, **kw)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    # deconv4 with the same w maps y's shape back to x's: torch's conv_transpose2d
    out_pad = tuple(a - b for a, b in zip(xs[2:], C.deconv4(w, y, mode=mode, **kw).shape[2:]))
    ref_t = F.conv_transpose2d(torch.from_numpy(y), wt, **kw).numpy()
    yt = C.deconv4(w, y, mode=mode, **kw)
    assert yt.dtype == np.float32 and yt.shape == ref_t.shape
    assert yt.shape[:2] == xs[:2] and all(p >= 0 for p in out_pad)
    np.testing.assert_allclose(yt, ref_t, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("window,padding,stride",
                         [(2, 0, None), (3, 1, 2), ((3, 2), (1, 1), (2, 1)), (2, 1, 1)])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_pool_matches_torch(torch, window, padding, stride, mode):
    F = torch.nn.functional
    x = np.random.default_rng(16).standard_normal((4, 3, 9, 10), dtype=np.float32)
    tx = torch.from_numpy(x)
    st = window if stride is None else stride
    if mode == 0:
        ref = F.max_pool2d(tx, window, st, padding)
    else:
        ref = F.avg_pool2d(tx, window, st, padding, count_include_pad=(mode == 1))
    y = C.pool(x, window=window, padding=padding, stride=stride, mode=mode)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-5, atol=1e-6)
    # and the backward pass against autograd
    txg = tx.clone().requires_grad_()
    dy = np.random.default_rng(17).standard_normal(y.shape, dtype=np.float32)
    f = F.max_pool2d if mode == 0 else F.avg_pool2d
    extra = {} if mode == 0 else dict(count_include_pad=(mode == 1))
    f(txg, window, st, padding, **extra).backward(torch.from_numpy(dy))
    dx = C.pool_x(x, y, dy, window=window, padding=padding, stride=stride, mode=mode)
    np.testing.assert_allclose(dx, txg.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,padding,stride",
                         sorted({(w, p, s) for w, p, s, _ in MAX_SWEEP}, key=repr))
def test_pool_with_index_matches_torch(torch, window, padding, stride):
    """The saved path against torch's max_pool2d with indices and its autograd backward; the
    saved offsets name the same cells as torch's indices."""
    F = torch.nn.functional
    x = np.random.default_rng(25).standard_normal((4, 3, 9, 10), dtype=np.float32)
    st = pair(window if stride is None else stride)
    (kh, kw), (ph, pw) = pair(window), pair(padding)
    txg = torch.from_numpy(x).clone().requires_grad_()
    ref, idx = F.max_pool2d(txg, (kh, kw), st, (ph, pw), return_indices=True)
    y, saved = C.pool_with_index(x, window=window, padding=padding, stride=stride)
    assert y.dtype == np.float32 and saved.dtype == np.uint8
    np.testing.assert_array_equal(y, ref.detach().numpy())
    Ho, Wo = y.shape[2:]
    p, q = np.divmod(saved.astype(np.int64), x.shape[3] + 2 * pw)
    rows = np.arange(Ho)[:, None] * st[0] - ph + p
    cols = np.arange(Wo) * st[1] - pw + q
    np.testing.assert_array_equal(rows * x.shape[3] + cols, idx.numpy())
    dy = np.random.default_rng(26).standard_normal(y.shape, dtype=np.float32)
    ref.backward(torch.from_numpy(dy))
    dx = C.pool_x_saved(x, y, dy, saved, window=window, padding=padding, stride=stride)
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, txg.grad.numpy(), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- rules

def test_rules_repeat_the_primitive_signatures():
    from knetc.rules import conv as _  # noqa: F401  (registers the rules)
    from knetc.rules.registry import lookup

    assert lookup(C.pool).forward is C.pool_with_index and lookup(C.pool_with_index).outputs == 2
    for fn in (C.conv4, C.conv4_w, C.conv4_x, C.deconv4, C.pool, C.unpool, C.pool_with_index,
               C.pool_x_saved, C.pool_x, C.pool_x_dy):
        rule = lookup(fn)
        assert rule is not None and rule.template is not None, fn.__name__
        sig = inspect.signature(fn).parameters
        assert rule.params == list(sig), fn.__name__
        defaults = {k: p.default for k, p in sig.items() if p.default is not p.empty}
        assert rule.defaults == defaults, fn.__name__
        assert callable(rule.emitter)  # the template compiles
