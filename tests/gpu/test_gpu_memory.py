"""knetc.runtime.memory on the GPU (the CuPy pool), host/device argument errors, and knetc.gpu /
knetc.cpu round trips of nested structures.

Exact byte counts rely on CuPy's default pool rounding each allocation up to 512 bytes: every
array here is a multiple of that, so the pool's ``used_bytes`` moves by exactly the arrays' sizes.
The NumPy halves (the MLP step on the CPU, the structures' round trip through ``cpu``) run in
tests/test_gpu_cases_cpu.py.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime import memory as M
from knetc.runtime.backend import cpu, gpu

MiB = 1 << 20
KEYS = {"device", "used_bytes", "total_bytes", "pool_free_bytes", "device_free_bytes",
        "device_total_bytes", "peak_bytes"}


def _mib(cp, n):
    """A float32 device array of exactly ``n`` MiB."""
    return cp.empty(n * MiB // 4, cp.float32)


def test_memory_reports_the_cupy_pool(cp):
    gc.collect()
    pool = cp.get_default_memory_pool()
    m0 = M.memory()
    assert set(m0) == KEYS
    assert m0["device"] == f"cuda:{cp.cuda.Device().id}"
    a = _mib(cp, 4)
    m1 = M.memory()
    assert m1["used_bytes"] - m0["used_bytes"] == 4 * MiB
    assert m1["used_bytes"] == pool.used_bytes() and m1["total_bytes"] == pool.total_bytes()
    assert m1["pool_free_bytes"] == pool.free_bytes()
    assert 0 < m1["device_free_bytes"] <= m1["device_total_bytes"]
    assert m1["total_bytes"] >= m1["used_bytes"]
    del a
    assert M.memory()["used_bytes"] == m0["used_bytes"]


def test_track_peak_measures_a_known_pattern_exactly(cp):
    """3 arrays of 4 MiB (12), free one (8), then one of 8 MiB (16): the peak is 16 MiB above
    the use at entry, and ``memory()['peak_bytes']`` reports it after the block."""
    gc.collect()
    with M.track_peak() as p:
        a, b, c = _mib(cp, 4), _mib(cp, 4), _mib(cp, 4)
        del b
        d = _mib(cp, 8)
    assert p.device == f"cuda:{cp.cuda.Device().id}"
    assert p.delta_bytes == 16 * MiB, p
    assert M.memory()["peak_bytes"] == p.bytes == p.start_bytes + 16 * MiB
    del a, c, d


def test_track_peak_nests(cp):
    """An inner block sees its own peak; the outer block's covers the inner one's."""
    gc.collect()
    with M.track_peak() as outer:
        a = _mib(cp, 4)
        with M.track_peak() as inner:
            b = _mib(cp, 8)
            del b
        assert inner.delta_bytes == 8 * MiB
        assert inner.start_bytes == outer.start_bytes + 4 * MiB
        c = _mib(cp, 2)
    assert outer.delta_bytes == 12 * MiB
    assert outer.bytes == inner.bytes
    assert M.memory()["peak_bytes"] == outer.bytes       # the last block to finish
    with M.track_peak() as later:                        # a peak from an earlier block is not kept
        e = _mib(cp, 1)
    assert later.delta_bytes == 1 * MiB
    del a, c, e


# ---------------------------------------------------------------------------------------------
# A cached gradient step: bounded peak, no growth across steps

def mlp_loss(w, x, labels):
    h = knetc.relu(x @ w[0] + w[1])
    return knetc.nll(h @ w[2] + w[3], labels)


def mlp_args(batch: int = 100, sizes=(784, 256, 10)):
    """Weights, inputs and labels of a float32 MLP (NumPy)."""
    rng = np.random.default_rng(7)
    w = [(rng.normal(size=(sizes[0], sizes[1])) * 0.05).astype(np.float32), np.zeros(sizes[1], np.float32),
         (rng.normal(size=(sizes[1], sizes[2])) * 0.05).astype(np.float32), np.zeros(sizes[2], np.float32)]
    return w, rng.random((batch, sizes[0]), np.float32), rng.integers(0, sizes[2], batch)


def step_bound(w, x, sizes=(784, 256, 10)) -> int:
    """4 x (parameter bytes + activation bytes): the parameters' gradients take one copy, the
    input and each layer's activations and their gradients a few; cuBLAS and the pool's 512-byte
    rounding of the small arrays stay far below the factor."""
    params = sum(a.nbytes for a in w)
    acts = x.nbytes + x.shape[0] * sum(sizes[1:]) * 4
    return 4 * (params + acts)


def test_cached_step_peak_is_bounded(cp):
    w, x, y = mlp_args()
    gw, gx, gy = gpu(w), cp.asarray(x), cp.asarray(y)
    g = knetc.grad(mlp_loss)
    for _ in range(3):                       # compile, and whatever a first run sets up
        dw = g(gw, gx, gy)
    del dw
    gc.collect()
    with M.track_peak() as p:
        dw = g(gw, gx, gy)
    bound = step_bound(w, x)
    assert 0 < p.delta_bytes < bound, f"peak {p.delta_bytes} bytes above the start, bound {bound}"
    # the gradient itself is live at the end: at least its bytes were added
    assert p.delta_bytes >= sum(int(a.nbytes) for a in dw)


def test_repeated_cached_steps_do_not_grow_used_bytes(cp):
    w, x, y = mlp_args()
    gw, gx, gy = gpu(w), cp.asarray(x), cp.asarray(y)
    g = knetc.grad(mlp_loss)
    for _ in range(3):
        dw = g(gw, gx, gy)
    del dw
    gc.collect()
    pool = cp.get_default_memory_pool()
    base = pool.used_bytes()
    after = []
    for _ in range(20):
        dw = g(gw, gx, gy)
        del dw
        after.append(pool.used_bytes())
    assert after == [base] * 20, f"used_bytes at entry {base}, after each step {after}"


# ---------------------------------------------------------------------------------------------
# Host and device arguments

def test_a_numpy_parameter_with_a_cupy_batch_is_an_error_naming_both(cp):
    w, x, y = mlp_args(batch=4)
    with pytest.raises(knetc.KnetcError, match="mix CPU") as e:
        knetc.grad(mlp_loss)(w, cp.asarray(x), cp.asarray(y))
    msg = str(e.value)
    assert "w: numpy" in msg and "x: cupy" in msg, msg
    with pytest.raises(knetc.KnetcError, match="mix CPU") as e:   # and the other way round
        knetc.grad(mlp_loss)(gpu(w), x, y)
    msg = str(e.value)
    assert "w: cupy" in msg and "x: numpy" in msg, msg


def test_a_structure_mixing_devices_is_an_error(cp):
    w, x, y = mlp_args(batch=4)
    mixed = [w[0], cp.asarray(w[1]), w[2], w[3]]
    with pytest.raises(knetc.KnetcError, match="mix CPU") as e:
        knetc.grad(mlp_loss)(mixed, cp.asarray(x), cp.asarray(y))
    assert "cupy+numpy" in str(e.value)


# ---------------------------------------------------------------------------------------------
# knetc.gpu / knetc.cpu round trips

class Pair(NamedTuple):
    a: np.ndarray
    b: object


@dataclass
class Layer:
    w: np.ndarray
    b: np.ndarray


def nested_structure():
    """Arrays of several dtypes inside lists, tuples, dicts, a NamedTuple and a dataclass, with
    Python values beside them (kept as they are)."""
    rng = np.random.default_rng(3)
    return {"layers": [Layer(rng.normal(size=(3, 2)).astype(np.float32), np.zeros(2, np.float32)),
                       Layer(rng.normal(size=(2, 2)), np.ones(2))],
            "pair": Pair(np.arange(5, dtype=np.int64), (np.array(2.5), 7, "name", None)),
            "mask": np.array([True, False, True]),
            "scalar": 0.5, "f16": np.ones((2, 2), np.float16), "empty": np.zeros((0, 3), np.float32)}


def assert_same_structure(a, b, *, exact_types: bool = True) -> None:
    """Equal structures (node types), equal leaves (values, dtypes, shapes)."""
    assert tree.structure(a) == tree.structure(b)
    for x, y in zip(tree.leaves(a), tree.leaves(b)):
        if isinstance(y, np.ndarray):
            assert isinstance(x, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y or (x is None and y is None)
            if exact_types:
                assert type(x) is type(y)


def test_gpu_cpu_round_trip_of_nested_structures(cp):
    w = nested_structure()
    g = gpu(w)
    assert isinstance(g["layers"][0], Layer) and isinstance(g["pair"], Pair)
    assert type(g["pair"].b) is tuple and g["pair"].b[1:] == (7, "name", None)
    for x, y in zip(tree.leaves(g), tree.leaves(w)):
        if isinstance(y, np.ndarray):
            assert isinstance(x, cp.ndarray) and x.dtype == y.dtype and x.shape == y.shape
    back = cpu(g)
    assert_same_structure(back, w)
    g["layers"][0].w[...] = 0                      # a copy: the original is untouched
    assert np.any(w["layers"][0].w != 0)
    assert_same_structure(cpu(gpu(back)), w)      # and again
