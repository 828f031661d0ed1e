"""cuDNN layers on the GPU: each forward and backward on CuPy arrays equals knetc's NumPy
implementation on the same inputs (and torch.nn.functional on the device when torch has CUDA);
``knetc.grad`` of a small LeNet-like loss on CuPy equals NumPy's. Every test is small: the whole
file runs in seconds."""
from __future__ import annotations

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime import conv as C
from knetc.runtime import cudnn
from knetc.runtime import layers as LY
from knetc.runtime.backend import cpu, gpu
from knetc.runtime.cudnn import layers as K

TOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float16: dict(rtol=2e-2, atol=2e-2),
       np.float64: dict(rtol=1e-10, atol=1e-10)}


@pytest.fixture(scope="module")
def cd(cp):
    if not cudnn.available():
        pytest.fail(f"cuDNN does not load on this GPU machine: {cudnn.selftest()}")
    return cp


@pytest.fixture(scope="module")
def torch_cuda():
    try:
        import torch
        if not torch.cuda.is_available():
            raise ImportError
    except Exception:  # noqa: BLE001 - any failure means: no torch comparison
        return None
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def _t(torch, a):
    return torch.as_tensor(a, device="cuda")


def _check(got, want, dtype, scale=1.0):
    assert got is not NotImplemented
    got = got.get() if hasattr(got, "get") else np.asarray(got)
    tol = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64),
                               rtol=tol["rtol"], atol=tol["atol"] * max(scale, 1.0))


def _data(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_selftest(cd):
    out = cudnn.selftest()
    print(out)
    assert out["version"] // 10000 == 9
    assert {k: out[k] for k in ("conv", "pool", "batchnorm", "softmax")} == dict.fromkeys(
        ("conv", "pool", "batchnorm", "softmax"), "ok")


CONV_CASES = [dict(padding=0, stride=1, dilation=1, mode=0),
              dict(padding=1, stride=2, dilation=1, mode=1),
              dict(padding=(2, 1), stride=(1, 2), dilation=2, mode=0),
              dict(padding=1, stride=1, dilation=1, mode=1, alpha=0.5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("kw", CONV_CASES)
def test_conv(cd, torch_cuda, dtype, kw):
    w, x = _data((4, 3, 3, 3), dtype, 0), _data((2, 3, 9, 8), dtype, 1)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    y = C.conv4(w64, x64, **kw)
    dy = _data(y.shape, dtype, 2)
    gw, gx, gdy = cd.asarray(w), cd.asarray(x), cd.asarray(dy)
    if dtype != np.float64:  # double convolutions may be declined: then CuPy's code runs
        assert K.conv4(gw, gx, **kw) is not NotImplemented  # the cuDNN path is taken
    gy = C.conv4(gw, gx, **kw)
    assert isinstance(gy, cd.ndarray) and gy.dtype == dtype
    _check(gy, y, dtype, np.abs(y).max())
    dw = C.conv4_w(w64, x64, dy.astype(np.float64), **kw)
    dx = C.conv4_x(w64, x64, dy.astype(np.float64), **kw)
    _check(C.conv4_w(gw, gx, gdy, **kw), dw, dtype, np.abs(dw).max())
    _check(C.conv4_x(gw, gx, gdy, **kw), dx, dtype, np.abs(dx).max())
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3))  # deconv4: (Cx=3, Cy=4, ...) on y
    z = C.deconv4(wt.astype(np.float64), x64, **kw)
    _check(C.deconv4(cd.asarray(wt), gx, **kw), z, dtype, np.abs(z).max())
    if torch_cuda is not None and kw["mode"] == 1 and dtype != np.float16:
        F = torch_cuda.nn.functional
        ty = F.conv2d(_t(torch_cuda, x), _t(torch_cuda, w), padding=kw["padding"],
                      stride=kw["stride"], dilation=kw["dilation"]) * kw.get("alpha", 1)
        _check(gy, ty.cpu().numpy(), dtype, np.abs(y).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_conv_groups(cd, torch_cuda, dtype):
    w, x = _data((6, 2, 3, 3), dtype, 3), _data((2, 4, 7, 7), dtype, 4)
    kw = dict(padding=1, stride=1, dilation=1, mode=1, groups=2)
    gw, gx = cd.asarray(w), cd.asarray(x)
    y = K.conv_forward(gw, gx, **kw)
    parts = [C.conv4(w[3 * g:3 * g + 3].astype(np.float64), x[:, 2 * g:2 * g + 2].astype(np.float64),
                     padding=1, mode=1) for g in range(2)]
    want = np.concatenate(parts, axis=1)
    _check(y, want, dtype, np.abs(want).max())
    dy = _data(want.shape, dtype, 5)
    dx = K.conv_backward_data(gw, cd.asarray(dy), x.shape, **kw)
    dw = K.conv_backward_filter(w.shape, gx, cd.asarray(dy), **kw)
    dx_want = np.concatenate([C.conv4_x(w[3 * g:3 * g + 3].astype(np.float64),
                                        x[:, 2 * g:2 * g + 2].astype(np.float64),
                                        dy[:, 3 * g:3 * g + 3].astype(np.float64), padding=1,
                                        mode=1) for g in range(2)], axis=1)
    dw_want = np.concatenate([C.conv4_w(w[3 * g:3 * g + 3].astype(np.float64),
                                        x[:, 2 * g:2 * g + 2].astype(np.float64),
                                        dy[:, 3 * g:3 * g + 3].astype(np.float64), padding=1,
                                        mode=1) for g in range(2)], axis=0)
    _check(dx, dx_want, dtype, np.abs(dx_want).max())
    _check(dw, dw_want, dtype, np.abs(dw_want).max())
    if torch_cuda is not None and dtype == np.float32:
        ty = torch_cuda.nn.functional.conv2d(_t(torch_cuda, x), _t(torch_cuda, w), padding=1,
                                             groups=2)
        _check(y, ty.cpu().numpy(), dtype)


POOL_CASES = [dict(window=2), dict(window=3, padding=1, stride=2), dict(window=(3, 2), stride=1),
              dict(window=2, alpha=2.0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("kw", POOL_CASES)
def test_pool(cd, torch_cuda, dtype, mode, kw):
    x = _data((2, 3, 8, 7), dtype, 6)
    y = C.pool(x, mode=mode, **kw)
    dy = _data(y.shape, dtype, 7)
    gx = cd.asarray(x)
    assert K.pool(gx, mode=mode, **kw) is not NotImplemented
    gy = C.pool(gx, mode=mode, **kw)
    _check(gy, y, dtype)
    _check(C.pool_x(gx, gy, cd.asarray(dy), mode=mode, **kw), C.pool_x(x, y, dy, mode=mode, **kw),
           dtype)
    if torch_cuda is not None and dtype == np.float32 and kw.get("alpha", 1) == 1:
        F = torch_cuda.nn.functional
        args = dict(kernel_size=kw["window"], stride=kw.get("stride") or kw["window"],
                    padding=kw.get("padding", 0))
        tx = _t(torch_cuda, x)
        ty = F.max_pool2d(tx, **args) if mode in (0, 3) else \
            F.avg_pool2d(tx, count_include_pad=(mode == 1), **args)
        _check(gy, ty.cpu().numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("kw", [dict(window=2), dict(window=3, padding=1, stride=2),
                                dict(window=2, alpha=0.5)])
def test_unpool(cd, dtype, mode, kw):
    x = _data((2, 3, 4, 5), dtype, 8)
    y = C.unpool(x, mode=mode, **kw)
    dy = _data(y.shape, dtype, 9)
    assert K.unpool(cd.asarray(x), mode=mode, **kw) is not NotImplemented
    _check(C.unpool(cd.asarray(x), mode=mode, **kw), y, dtype)
    _check(C.unpool_x(cd.asarray(x), None, cd.asarray(dy), mode=mode, **kw),
           C.unpool_x(x, None, dy, mode=mode, **kw), dtype, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 6), (4, 3, 5, 5), (2, 3, 2, 3, 4)])
def test_batchnorm(cd, torch_cuda, dtype, shape):
    x, dy = _data(shape, dtype, 10), _data(shape, dtype, 11)
    C_ = shape[1]
    p = _data((2 * C_,), dtype, 12)
    m_cpu, m_gpu = LY.bnmoments(momentum=0.2), LY.bnmoments(momentum=0.2)
    y, saved = LY.batchnorm_forward(x, m_cpu, p, training=True)
    gx, gp, gdy = cd.asarray(x), cd.asarray(p), cd.asarray(dy)
    gy, gsaved = LY.batchnorm_forward(gx, m_gpu, gp, training=True)
    assert getattr(gsaved, "cudnn", False)  # the cuDNN path was taken
    _check(gy, y, dtype)
    _check(m_gpu.mean, m_cpu.mean, dtype)
    _check(m_gpu.var, m_cpu.var, dtype)
    assert m_gpu.mean.dtype == dtype and isinstance(m_gpu.var, cd.ndarray)
    _check(LY.batchnorm_dx(gx, gp, gsaved, gdy), LY.batchnorm_dx(x, p, saved, dy), dtype, 4)
    _check(LY.batchnorm_dparams(gx, gp, gsaved, gdy), LY.batchnorm_dparams(x, p, saved, dy),
           dtype, np.sqrt(x.size))
    # test time: the running moments
    _check(LY.batchnorm(gx, m_gpu, gp, training=False), LY.batchnorm(x, m_cpu, p, training=False),
           dtype)
    # no moments, no params
    _check(LY.batchnorm(gx), LY.batchnorm(x), dtype)
    if torch_cuda is not None and dtype == np.float32 and len(shape) == 4:
        rm, rv = torch_cuda.zeros(C_, device="cuda"), torch_cuda.ones(C_, device="cuda")
        ty = torch_cuda.nn.functional.batch_norm(
            _t(torch_cuda, x), rm, rv, _t(torch_cuda, p[:C_]), _t(torch_cuda, p[C_:]),
            training=True, momentum=0.2, eps=1e-5)
        _check(gy, ty.cpu().numpy(), dtype)
        _check(m_gpu.var, rv.cpu().numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax(cd, torch_cuda, dtype, axis):
    x, dy = _data((3, 4, 5), dtype, 13), _data((3, 4, 5), dtype, 14)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    gx, gdy = cd.asarray(x), cd.asarray(dy)
    y, ly = K.softmax(x64, axis), K.logsoftmax(x64, axis)
    gy, gly = K.softmax(gx, axis), K.logsoftmax(gx, axis)
    assert gy.dtype == dtype
    _check(gy, y, dtype)
    _check(gly, ly, dtype)
    _check(K.softmax_backward(gy, gdy, axis), K.softmax_backward(y, dy64, axis), dtype)
    _check(K.logsoftmax_backward(gly, gdy, axis), K.logsoftmax_backward(ly, dy64, axis), dtype, 4)
    if torch_cuda is not None and dtype == np.float32:
        _check(gy, torch_cuda.softmax(_t(torch_cuda, x), axis).cpu().numpy(), dtype)


def test_disabled_by_env(cd, monkeypatch):
    monkeypatch.setenv("KNETC_CUDNN", "0")
    x = cd.asarray(_data((2, 3, 4, 4), np.float32, 15))
    assert not cudnn.enabled(x)
    _check(C.pool(x), C.pool(x.get()), np.float32)


def _lenet_bn_loss(w, x, y):
    h = C.pool(knetc.relu(LY.batchnorm(C.conv4(w[0], x, padding=1) + w[1], None, w[2])))
    h = C.pool(knetc.relu(C.conv4(w[3], h, mode=1)), mode=2, window=2)
    scores = knetc.mat(h) @ w[4] + w[5]
    return knetc.nll(scores, y)


def test_grad_small_lenet(cd):
    r = np.random.default_rng(16)
    f = np.float32
    w = [r.standard_normal((6, 1, 3, 3)).astype(f) * 0.3, np.zeros((1, 6, 1, 1), f),
         LY.bnparams(6), r.standard_normal((8, 6, 3, 3)).astype(f) * 0.2,
         r.standard_normal((8 * 2 * 2, 10)).astype(f) * 0.1, np.zeros(10, f)]
    x, y = r.random((8, 1, 12, 12), f), r.integers(0, 10, 8)
    g, loss = knetc.gradloss(_lenet_bn_loss)(w, x, y)
    gg, gloss = knetc.gradloss(_lenet_bn_loss)(gpu(w), gpu(x), gpu(y))
    np.testing.assert_allclose(float(gloss), float(loss), rtol=1e-4)
    for a, b in zip(tree.leaves(g), tree.leaves(cpu(gg))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4)
