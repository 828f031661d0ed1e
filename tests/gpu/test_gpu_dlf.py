"""The DeepLearningFrameworks models (IMDB GRU, CIFAR VGG, ResNet-50) on the GPU: forward
results and gradients on CuPy equal the NumPy path's on the same inputs, at small sizes."""
from __future__ import annotations

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime.backend import cpu, gpu


def _compare(loss, w, wg, *args, rtol=2e-3, atol=2e-4):
    """Loss and every gradient of ``loss`` at w (NumPy) and wg (its CuPy copy) agree."""
    gw, lw = knetc.gradloss(loss)(w, *args)
    dw, dl = knetc.gradloss(loss)(wg, *gpu(list(args)))
    np.testing.assert_allclose(float(dl), float(lw), rtol=rtol)
    a_leaves = [a for a in tree.leaves(gw) if hasattr(a, "shape")]
    b_leaves = [b for b in tree.leaves(cpu(dw)) if hasattr(b, "shape")]
    assert len(a_leaves) == len(b_leaves) > 0
    for a, b in zip(a_leaves, b_leaves):
        scale = float(np.max(np.abs(a))) or 1.0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=rtol, atol=atol * scale)
    return dw


def test_imdb_gru(cp):
    from examples import imdb_gru
    w = imdb_gru.initmodel(vocab=200, embed=16, hidden=12, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 200, (8, 20)), rng.integers(0, 2, 8)
    p = np.asarray(imdb_gru.predict(w, x))
    pg = imdb_gru.predict(gpu(w), cp.asarray(x))
    assert isinstance(pg, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(pg), p, rtol=1e-3, atol=1e-4)
    dw = _compare(imdb_gru.loss, w, gpu(w), x, y)
    assert isinstance(dw[1], cp.ndarray) and isinstance(dw[2], cp.ndarray)


def test_cifar_vgg(cp):
    from examples import cifar_vgg
    knetc.init.seed(0)
    w = cifar_vgg.initweights(channels=(8, 16), hidden=32, size=16)
    rng = np.random.default_rng(1)
    x, y = rng.random((4, 3, 16, 16), np.float32), rng.integers(0, 10, 4)
    p = np.asarray(cifar_vgg.predict(w, x))
    pg = cifar_vgg.predict(gpu(w), cp.asarray(x))
    np.testing.assert_allclose(cp.asnumpy(pg), p, rtol=1e-3, atol=1e-4)
    _compare(cifar_vgg.loss, w, gpu(w), x, y, (0.0, 0.0))      # dropout off: same function


def _cast(t, dtype):
    """The nested dicts/lists of float arrays ``t`` in ``dtype`` (moments objects left alone)."""
    if isinstance(t, dict):
        return {k: _cast(v, dtype) for k, v in t.items()}
    if isinstance(t, list):
        return [_cast(v, dtype) for v in t]
    if isinstance(t, np.ndarray) and t.dtype.kind == "f":
        return t.astype(dtype)
    return t


def _resnet(cp, width, seed, dtype=np.float32):
    from examples import resnet50
    w = _cast(resnet50.initmodel(width=width, nclasses=10, seed=seed), dtype)
    rng = np.random.default_rng(seed)
    for p in resnet50.layers_of(w):
        C = p["w"].shape[0]
        p["m"].mean = (rng.standard_normal(C) * 0.1).astype(dtype)
        p["m"].var = (rng.random(C) + 0.5).astype(dtype)
    wg = gpu(w)
    for pc, pg in zip(resnet50.layers_of(w), resnet50.layers_of(wg)):
        # moments are plain objects: give the GPU copy its own, on the device
        pg["m"] = knetc.bnmoments(mean=cp.asarray(pc["m"].mean), var=cp.asarray(pc["m"].var))
    return resnet50, w, wg


def test_resnet50_forward(cp):
    resnet50, w, wg = _resnet(cp, 8, 2)
    x = np.random.default_rng(2).random((2, 3, 64, 64), np.float32)
    p = resnet50.predict(w, x)
    pg = resnet50.predict(wg, cp.asarray(x))
    assert isinstance(pg, cp.ndarray) and pg.shape == (2, 10)
    np.testing.assert_allclose(cp.asnumpy(pg), p, rtol=2e-3, atol=2e-3 * np.abs(p).max())


@pytest.mark.parametrize("training", [False, True])
def test_resnet50_gradient(cp, training):
    """float64: the GPU path (cuDNN batchnorm, convolutions) is the CPU's to 1e-9. float32:
    training-mode batchnorm over 4 samples at 1x1 spatial size in the last stage is badly
    conditioned (gradients of ~1e3 from inputs of ~1), so cuDNN's and NumPy's float32 roundings
    differ by up to a few percent on some entries; the check there is looser."""
    resnet50, w, wg = _resnet(cp, 4, 3, np.float64)
    rng = np.random.default_rng(3)
    x, y = rng.random((4, 3, 32, 32)), rng.integers(0, 10, 4)
    _compare(resnet50.loss, w, wg, x, y, training, rtol=1e-9, atol=1e-11)
    resnet50, w, wg = _resnet(cp, 4, 3)
    x = x.astype(np.float32)
    _compare(resnet50.loss, w, wg, x, y, training, rtol=5e-2 if training else 5e-3, atol=1e-2)


def test_resnet50_matches_torch_cuda(cp):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import dlf
    resnet50, w, wg = _resnet(cp, 16, 4)
    tm = dlf.torch_resnet(torch, w).cuda()             # with w's batchnorm moments
    x = np.random.default_rng(4).random((2, 3, 64, 64), np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x).cuda()).cpu().numpy()
    got = cp.asnumpy(resnet50.predict(wg, cp.asarray(x)))
    # TF32 may be on for torch's cuDNN convolutions: a looser tolerance than on the CPU
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())
