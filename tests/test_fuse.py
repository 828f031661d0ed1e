"""Tests for knetc.compiler.fusion (elementwise kernel fusion) and knetc.runtime.memory, on the CPU.

The fusion pass is run on the real statement lists knetc generates (captured from
pipeline.compile_trace by monkeypatching; pipeline.py is not changed). Fused programs run on the CPU
with KernelOnCPU (the group's original statements) and KernelSourceOnCPU (the generated CUDA
operation, interpreted with NumPy in C's types), both from tests/fusion_cpu.py, and are compared
with the unfused function.
Tests that need a GPU are marked ``gpu`` and skip without CuPy and a device.
"""
from __future__ import annotations

import inspect
import copy
import tracemalloc

import numpy as np
import pytest

import knetc
from knetc.compiler import fusion as F
from knetc.compiler import pipeline
from knetc.compiler.codegen import compile_function, render
from knetc.runtime import memory as M

from fusion_cpu import (KernelOnCPU, KernelSourceOnCPU, count_kernels, count_launches, parse_stmt,
                        probe_shapes)

RNG = np.random.default_rng(0)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------ the models
def mlp_tanh(w, x, y):
    h = np.tanh(w[0] @ x + w[1])
    p = w[2] @ h + w[3]
    return np.mean((p - y) ** 2)


def lstm_cell(w, x, h, c):
    g = x @ w[0] + h @ w[1] + w[2]
    H = h.shape[1]
    i = 1 / (1 + np.exp(-g[:, 0:H]))
    f = 1 / (1 + np.exp(-g[:, H:2 * H]))
    o = 1 / (1 + np.exp(-g[:, 2 * H:3 * H]))
    z = np.tanh(g[:, 3 * H:])
    c2 = f * c + i * z
    h2 = o * np.tanh(c2)
    return np.sum(h2 * h2) + np.sum(c2)


def lstm_split(w, x, h, c):
    g = x @ w[0] + h @ w[1] + w[2]
    i, f, o, z = np.split(g, 4, axis=1)
    i = 1 / (1 + np.exp(-i))
    f = 1 / (1 + np.exp(-f))
    o = 1 / (1 + np.exp(-o))
    c2 = f * c + i * np.tanh(z)
    h2 = o * np.tanh(c2)
    return np.sum(h2 * h2) + np.sum(c2)


def relu_softmax(w, x, labels):
    h = np.maximum(w[0] @ x + w[1], 0)
    s = w[2] @ h + w[3]
    s = s - s.max(axis=0, keepdims=True)
    lp = s - np.log(np.sum(np.exp(s), axis=0, keepdims=True))
    return -np.sum(lp * labels) / labels.shape[1]


def _mlp_args(batch=32):
    w = [_f32(16, 8), np.zeros((16, 1), np.float32), _f32(4, 16), np.zeros((4, 1), np.float32)]
    return w, _f32(8, batch), _f32(4, batch)


def _lstm_args():
    H = 8
    w = [_f32(5, 4 * H), _f32(H, 4 * H), _f32(1, 4 * H)]
    return w, _f32(3, 5), _f32(3, H), _f32(3, H)


def _relu_args():
    w, x, _ = _mlp_args()
    labels = np.eye(4, dtype=np.float32)[:, RNG.integers(0, 4, 32)]
    return w, x, labels


MODELS = {"mlp_tanh": (mlp_tanh, _mlp_args), "lstm_cell": (lstm_cell, _lstm_args),
          "lstm_split": (lstm_split, _lstm_args), "relu_softmax": (relu_softmax, _relu_args)}


# ------------------------------------------------------------------------------ helpers
def capture(monkeypatch, fn, args):
    """Build fn's adjoint and keep the statement list insert_frees received (after dead-code
    removal and the lowering of accumulation, before `del`s), the Adjoint (its tape), and the
    compiled unfused entry. On the GPU, compile_trace's own fusion (fusion.fuse_program) is
    turned off here: the tests fuse the captured program themselves."""
    got = {}

    class Spy(pipeline.Adjoint):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            got["adj"] = self

    real = pipeline.insert_frees

    def spy(stmts, keep, nbytes=None):
        got.update(stmts=list(stmts), keep=set(keep), nbytes=nbytes)
        return real(stmts, keep, nbytes)

    with monkeypatch.context() as m:
        m.setattr(pipeline, "Adjoint", Spy)
        m.setattr(pipeline, "insert_frees", spy)
        m.setattr(F, "fuse_program", lambda stmts, tape, adj, **kw: (stmts, {}))
        # the program the GPU pipeline would fuse: without the CPU-only uniform-fill folds
        m.setattr(pipeline, "fold_uniform_fills", lambda stmts, shapes, dtypes: stmts)
        m.setattr(pipeline, "records_affine", lambda xp: False)     # (CPU only, as the folds)
        got["entry"] = knetc.gradloss(fn).specialize(args)   # (the loss too: fused alike)
    got["params"] = list(inspect.signature(fn).parameters)
    got["namespace"] = got["entry"].fn.__globals__
    return got


def compile_fused(got, stmts, kernels, frees=True):
    """The fused program, with `del`s inserted as build does, compiled like build does."""
    if frees:
        stmts = pipeline.insert_frees(stmts, got["keep"], got["nbytes"])
    src = render("fused_grad", got["params"], stmts, ["fused"])
    ns = dict(got["namespace"])
    ns.update(kernels)
    return compile_function(src, "fused_grad", ns), src


def fused_model(monkeypatch, name, executor=KernelOnCPU, shapes_from="tape"):
    fn, make = MODELS[name]
    args = make()
    got = capture(monkeypatch, fn, args)
    if shapes_from == "tape":
        shapes, dtypes = F.shapes_from_tape(got["adj"].tape, got["adj"])
    else:
        shapes, dtypes = probe_shapes(got["stmts"], got["params"], args, got["namespace"])
    stmts, kernels = F.fuse(got["stmts"], shapes, dtypes, executor=executor)
    fn2, src = compile_fused(got, stmts, kernels)
    return got, args, stmts, kernels, fn2, src


def run(fn, args):
    return fn(*copy.deepcopy(args))     # the adjoint may update fresh buffers; inputs never


def assert_same(r1, r2, exact=True):
    g1, l1 = r1
    g2, l2 = r2
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        assert a.dtype == b.dtype and a.shape == b.shape
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert np.asarray(l1).dtype == np.asarray(l2).dtype
    np.testing.assert_allclose(l1, l2, rtol=0 if exact else 1e-6)


LAUNCHES = {}   # model -> (before, after): printed by test_launch_counts_report


# ------------------------------------------------------------------------------ real programs
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("executor", [KernelOnCPU, KernelSourceOnCPU])
@pytest.mark.parametrize("shapes_from", ["tape", "probe"])
def test_fused_program_equals_unfused(monkeypatch, name, executor, shapes_from):
    got, args, stmts, kernels, fn2, src = fused_model(monkeypatch, name, executor, shapes_from)
    assert kernels, "nothing was fused"
    assert all(f"= {k}(" in src for k in kernels)
    exact = executor is KernelOnCPU
    assert_same(run(got["entry"].fn, args), run(fn2, args), exact=exact)
    before, after = count_launches(got["stmts"]), count_launches(stmts)
    assert after < before
    assert count_kernels(stmts) < count_kernels(got["stmts"])
    LAUNCHES[name] = (before, after, count_kernels(got["stmts"]), count_kernels(stmts))


def test_launch_counts(monkeypatch, capsys):
    rows = []
    for name in MODELS:
        got, args, stmts, kernels, fn2, src = fused_model(monkeypatch, name)
        b, a = count_launches(got["stmts"]), count_launches(stmts)
        kb, ka = count_kernels(got["stmts"]), count_kernels(stmts)
        rows.append((name, b, a, kb, ka, len(kernels)))
        assert a < b and ka < kb
    with capsys.disabled():
        print("\nlaunching statements / estimated kernels, before -> after fusion:")
        for name, b, a, kb, ka, nk in rows:
            print(f"  {name:13s} statements {b:3d} -> {a:3d}   kernels {kb:3d} -> {ka:3d}"
                  f"   ({nk} fused kernels)")
    counts = {r[0]: r for r in rows}
    # The LSTM cell's gate math and its adjoint collapse to a few kernels.
    assert counts["lstm_split"][2] * 3 < counts["lstm_split"][1]
    assert counts["lstm_cell"][2] * 2 < counts["lstm_cell"][1]


def test_the_pipeline_hook_end_to_end(monkeypatch):
    """pipeline.compile_trace's own GPU hook (fusion.fuse_program after the lowering of
    accumulation and before insert_frees, its kernels added to the namespace), switched on for
    NumPy arrays by monkeypatching ``pipeline._fuses``, with KernelSourceOnCPU standing in for
    the GPU kernels: grad gives the same answers."""
    fn, make = MODELS["lstm_cell"]
    args = make()
    want = knetc.grad(fn)(*copy.deepcopy(args))
    state = {}
    real_fuse, real_compile = F.fuse_program, pipeline.compile_function

    def fuse_program(stmts, tape, adj, **kw):
        stmts, state["kernels"] = real_fuse(stmts, tape, adj, executor=KernelSourceOnCPU, **kw)
        return stmts, state["kernels"]

    def compile_(source, name, namespace):
        state["source"], state["namespace"] = source, namespace
        return real_compile(source, name, namespace)

    monkeypatch.setattr(pipeline, "_fuses", lambda xp: True)
    monkeypatch.setattr(F, "fuse_program", fuse_program)
    monkeypatch.setattr(pipeline, "compile_function", compile_)
    knetc.api._CACHES.pop(fn, None)   # grads of one function share a cache: compile anew
    try:
        have = knetc.grad(fn)(*copy.deepcopy(args))
    finally:
        knetc.api._CACHES.pop(fn, None)     # no CPU stand-in kernels left in the cache
    assert state["kernels"] and all(f"= {k}(" in state["source"] for k in state["kernels"])
    assert all(state["namespace"][k] is v for k, v in state["kernels"].items())
    for a, b in zip(want, have):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fusion_after_insert_frees_is_still_correct(monkeypatch):
    fn, make = MODELS["lstm_cell"]
    args = make()
    got = capture(monkeypatch, fn, args)
    with_dels = pipeline.insert_frees(got["stmts"], got["keep"], got["nbytes"])
    shapes, dtypes = F.shapes_from_tape(got["adj"].tape, got["adj"])
    stmts, kernels = F.fuse(with_dels, shapes, dtypes, executor=KernelSourceOnCPU)
    assert kernels
    fn2, _ = compile_fused(got, stmts, kernels, frees=False)
    assert_same(run(got["entry"].fn, args), run(fn2, args), exact=False)


# ------------------------------------------------------------------------------ CUDA text
def test_golden_tanh_backward(monkeypatch):
    got, args, stmts, kernels, fn2, src = fused_model(monkeypatch, "mlp_tanh")
    (k,) = [k for k in kernels.values()
            if [s.code for s in k.group.stmts] == ["dadd = dh * (1 - h * h)"]]
    assert F.kernel_source(k.group) == F.KernelSource(
        "float32 x0, float32 x1", "float32 z0", "z0 = x0 * (1.0f - x1 * x1);",
        "knetc_fused_a50a0b0b04ca")
    assert k.group.inputs == ["dh", "h"] and k.group.outputs == ["dadd"]
    assert "    dadd = _k" in src


def test_golden_relu_keeps_nan_like_numpy_and_cupy(monkeypatch):
    got, args, stmts, kernels, fn2, src = fused_model(monkeypatch, "relu_softmax",
                                                      executor=KernelSourceOnCPU)
    (k,) = [k for k in kernels.values() if "h" in k.group_outputs]
    assert k.source.operation == ("float t0 = x0 + x1;\nz0 = t0;\n"
                                  "z1 = (isnan(t0) ? t0 : fmaxf(t0, 0.0f));")
    mm = np.array([[np.nan, -1.0, 2.0]], np.float32)
    add, h = k(mm, np.zeros((1, 1), np.float32))
    np.testing.assert_array_equal(h, np.maximum(mm, 0))      # [nan, 0, 2]


def test_golden_loss_tail_and_its_adjoint(monkeypatch):
    got, args, stmts, kernels, fn2, src = fused_model(monkeypatch, "mlp_tanh")
    (g,) = [k.group for k in kernels.values() if "pow" in k.group.outputs]
    assert [s.code for s in g.stmts] == ["p = mm_1 + w_3", "sub = p - y", "pow = sub ** 2",
                                         "dsub = dpow * (2 * sub)"]
    assert g.inputs == ["mm_1", "w_3", "y", "dpow"] and g.outputs == ["pow", "dsub"]
    assert g.source.operation == ("float t0 = x0 + x1;\nfloat t1 = t0 - x2;\nz0 = t1 * t1;\n"
                                  "z1 = x3 * (2.0f * t1);")
    assert g.source.out_params == "float32 z0, float32 z1"
    # `mean = pow.sum() / 128` read pow before dsub was computed: it was deferred past the kernel
    codes = [s.code for s in stmts]
    assert codes.index("mean = pow.sum() / 128") == codes.index("pow, dsub = _k1(mm_1, w_3, y, dpow)") + 1


def _group(codes, env, ret=(), **kw):
    """Fuse hand-written statements (then ``return ret``); env maps a name to (shape, dtype or
    float/int/bool)."""
    stmts = [_stmt(c) for c in codes]
    if ret:
        stmts.append(_stmt("return " + ", ".join(ret)))
    shapes = {k: v[0] for k, v in env.items()}
    dtypes = {k: v[1] for k, v in env.items()}
    return stmts, F.fuse(stmts, shapes, dtypes, executor=kw.pop("executor", KernelOnCPU), **kw)


def _stmt(code, effect=False):
    """A hand-written line as the IR statement the compiler would hold for it (``effect``: a
    random draw or another call that must run; guards and returns are effects anyway)."""
    return parse_stmt(code, effect)


F32, F64, I32, B = (np.dtype(t) for t in (np.float32, np.float64, np.int32, np.bool_))


def test_golden_mixed_dtypes_where_mask_inout_and_host_scalar():
    env = {"x": ((4, 3), F32), "y": ((1, 3), F32), "s": ((), float), "acc": ((4, 3), F32),
           "k": ((4, 1), I32)}
    codes = ["acc = np.zeros((4, 3), np.float32)",
             "t = x * y",
             "r = np.where(t > 0, t, 0.01 * t)",
             "acc += r * s",
             "q = k / 2 + (x >= y).astype(np.float64)",
             "return acc, q"]
    stmts = [_stmt(c) for c in codes]
    shapes = {k: v[0] for k, v in env.items() if k != "acc"}
    dtypes = {k: v[1] for k, v in env.items() if k != "acc"}
    out, kernels = F.fuse(stmts, shapes, dtypes, executor=KernelSourceOnCPU)
    (k,) = kernels.values()
    src = k.source
    assert src.in_params == "float32 x0, float32 x1, float64 x2, int32 x3"
    assert src.out_params == "float32 z0, float64 z1"
    assert src.operation == (
        "float t0 = x0 * x1;\n"
        "float t1 = (t0 > 0.0f ? t0 : 0.009999999776482582f * t0);\n"
        "z0 = z0 + t1 * (float)x2;\n"
        "z1 = (double)x3 / 2.0 + (double)(x0 >= x1);")
    assert [s.code for s in out] == ["acc = np.zeros((4, 3), np.float32)",
                                     "acc, q = _k0(x, y, s, k, acc)", "return acc, q"]
    # the CUDA text, interpreted, gives NumPy's answer (and updates acc in place)
    x, y, kk = _f32(4, 3), _f32(1, 3), RNG.integers(-3, 3, (4, 1)).astype(np.int32)
    acc = np.zeros((4, 3), np.float32)
    a2, q2 = k(x, y, 0.5, kk, acc)
    assert a2 is acc
    t = x * y
    np.testing.assert_allclose(acc, np.where(t > 0, t, 0.01 * t) * 0.5, rtol=1e-6)
    ref_q = kk / 2 + (x >= y).astype(np.float64)
    assert q2.dtype == ref_q.dtype
    np.testing.assert_array_equal(q2, ref_q)


def test_kernel_cache_reuses_identical_sources(monkeypatch):
    sources = []
    for batch in (32, 64):
        fn = MODELS["mlp_tanh"][0]
        args = _mlp_args(batch)
        got = capture(monkeypatch, fn, args)
        shapes, dtypes = F.shapes_from_tape(got["adj"].tape, got["adj"])
        _, kernels = F.fuse(got["stmts"], shapes, dtypes, executor=KernelOnCPU)
        sources.append([k.group.source for k in kernels.values()])
    assert sources[0] == sources[1]      # the batch size is not in the kernel text
    compiled = []
    cache = F.KernelCache(compile=lambda src: compiled.append(src) or object())
    first = [cache.get(s) for s in sources[0]]
    second = [cache.get(s) for s in sources[1]]
    assert all(a is b for a, b in zip(first, second))
    assert compiled == sources[0] and cache.misses == len(sources[0]) == len(cache)
    assert cache.hits == len(sources[1])
    assert isinstance(F.CACHE, F.KernelCache)


# ------------------------------------------------------------------------------ what may move
def test_effects_and_guards_are_barriers():
    env = {"x": ((8,), F32), "y": ((8,), F32), "n": ((), int)}
    codes = ["a = x * y",
             "b = a * 2",
             "if n != 3: raise _GuardFailed()",
             "c = b + y",
             "d = c * c",
             "return a, d"]
    stmts = [_stmt(c) for c in codes]
    shapes = {k: v[0] for k, v in env.items()}
    dtypes = {k: v[1] for k, v in env.items()}
    out, kernels = F.fuse(stmts, shapes, dtypes, executor=KernelOnCPU)
    assert [s.code for s in out] == ["a, b = _k0(x, y)", "if n != 3: raise _GuardFailed()",
                                     "d = _k1(b, y)", "return a, d"]
    assert out[1] is stmts[2] and out[3] is stmts[5]


def test_impure_calls_are_barriers():
    stmts = [_stmt("a = x * 2"), _stmt("r = draw(x)", effect=True), _stmt("b = a + 1"),
             _stmt("c = b * r")]
    stmts.append(_stmt("return c"))
    out, kernels = F.fuse(stmts, {"x": (8,), "r": (8,)}, {"x": F32, "r": F32})
    assert [s.code for s in out] == ["a = x * 2", "r = draw(x)", "c = _k0(a, r)", "return c"]


def test_non_elementwise_statements_keep_their_order_and_are_never_fused():
    env = {"x": ((8, 8), F32), "w": ((8, 8), F32), "v": ((8, 8), F32), "s": ((), F32)}
    codes = ["a = x * 2",
             "m = w @ v",          # independent: stays before the kernel
             "s = a.sum()",        # reads a: deferred past the kernel
             "b = a + 1",
             "c = b * x",
             "d = s * c",          # reads s, defined by a deferred statement: a new group
             "e = d - 1",
             "return c, e, m"]
    stmts, (out, kernels) = _group(codes[:-1], env, ret=("c", "e", "m"))
    codes_out = [s.code for s in out]
    assert codes_out == ["m = w @ v", "a, c = _k0(x)", "s = a.sum()", "e = _k1(s, c)",
                         "return c, e, m"]
    others = [s for s in out if "_k" not in s.code]
    assert [s.code for s in others] == ["m = w @ v", "s = a.sum()", "return c, e, m"]
    # run both programs
    ns = {"np": np, **kernels}
    vals = {"x": _f32(8, 8), "w": _f32(8, 8), "v": _f32(8, 8)}
    r1 = _exec(stmts, ns, vals)
    r2 = _exec(out, ns, vals)
    for p, q in zip(r1, r2):
        np.testing.assert_array_equal(p, q)


def _exec(stmts, ns, vals):
    src = render("prog", list(vals), stmts, [])
    return compile_function(src, "prog", dict(ns))(*vals.values())


def test_a_view_or_inplace_write_of_a_possibly_aliased_buffer_blocks():
    env = {"x": ((4, 4), F32), "g": ((4, 4), F32)}
    # g is a parameter: it may alias anything, so writing it in place is a barrier
    codes = ["a = x * 2", "g[0:2] = a[0:2]", "b = a + 1", "c = b * b"]
    stmts, (out, kernels) = _group(codes, env, ret=("c",))
    assert [s.code for s in out] == ["a = x * 2", "g[0:2] = a[0:2]", "c = _k0(a)", "return c"]
    # the same write into a fresh buffer is deferred past the kernel
    codes = ["g = np.zeros((4, 4), np.float32)"] + codes
    stmts, (out, kernels) = _group(codes, env, ret=("c", "g"))
    assert [s.code for s in out] == ["g = np.zeros((4, 4), np.float32)", "a, c = _k0(x)",
                                     "g[0:2] = a[0:2]", "return c, g"]


def test_inplace_accumulation_into_a_fresh_buffer_is_an_inout():
    env = {"x": ((4, 4), F32), "y": ((4, 4), F32)}
    codes = ["dx = np.full((4, 4), 1.0, np.float32)", "t = x * y", "dx += t * 2",
             "dx += y", "return dx"]
    stmts = [_stmt(c) for c in codes]
    out, kernels = F.fuse(stmts, {k: v[0] for k, v in env.items()},
                          {k: v[1] for k, v in env.items()}, executor=KernelSourceOnCPU)
    assert [s.code for s in out][1] == "dx = _k0(x, y, dx)"
    (k,) = kernels.values()
    assert k.source.operation == ("float t0 = x0 * x1;\nfloat t1 = z0 + t0 * 2.0f;\n"
                                  "z0 = t1 + x1;")
    buf = np.ones((4, 4), np.float32)
    x, y = _f32(4, 4), _f32(4, 4)
    res = k(x, y, buf)
    assert res is buf
    np.testing.assert_allclose(buf, 1 + x * y * 2 + y, rtol=1e-6)


def test_inplace_accumulation_after_a_view_is_left_alone():
    env = {"x": ((4, 4), F32), "y": ((4, 4), F32)}
    codes = ["dx = np.full((4, 4), 1.0, np.float32)", "v = dx.T", "t = x * y",
             "dx += t * 2", "r = v + 1"]
    stmts, (out, kernels) = _group(codes, env, ret=("r",))
    codes.append("return r")
    assert [s.code for s in out] == codes       # t alone is one operation: nothing to fuse
    # with the view gone, the accumulation fuses in place
    codes2 = ["dx = np.full((4, 4), 1.0, np.float32)", "t = x * y", "dx += t * 2",
              "r = dx + 1"]
    stmts, (out, kernels) = _group(codes2, env, ret=("r",))
    assert [s.code for s in out][1:] == ["dx, r = _k0(x, y, dx)", "return r"]


def test_inplace_update_is_not_fused_with_readers_of_a_view_of_its_buffer():
    # Fused, `acc += a` would write acc while the same kernel reads w (the same memory) as an
    # input loaded before the write: v would see the old values.
    env = {"a": ((3, 4), F32), "w": ((3, 4), F32)}
    codes = ["acc = np.zeros((3, 4), np.float32)", "w = acc[:, :]", "acc += a",
             "v = w * 2 + 1"]
    stmts, (out, kernels) = _group(codes, env, ret=("acc", "v"), executor=KernelSourceOnCPU)
    assert [s.code for s in out] == codes[:3] + ["v = _k0(w)", "return acc, v"]
    a = _f32(3, 4)
    ns = {"np": np, "a": a, **kernels}
    for s in out[:-1]:
        exec(s.code, ns)
    np.testing.assert_allclose(ns["v"], a * 2 + 1, rtol=1e-6)


def test_host_scalar_arithmetic_is_not_fused_nor_counted():
    env = {"x": ((4,), F32)}
    codes = ["dneg = 1.0 / 32", "dsum = -dneg", "d = np.full((4,), dsum, np.float32)",
             "e = d * x"]
    stmts, (out, kernels) = _group(codes, env)
    assert not kernels and [s.code for s in out] == codes
    assert count_launches(stmts) == 2          # np.full and d * x
    assert count_launches([_stmt("w_0, w_1 = w"), _stmt("v = g[:, 0:8]"),
                           _stmt("i, f = np.split(g, 2, axis=1)"), _stmt("del v"),
                           _stmt("if n != 3: raise _GuardFailed()"),
                           _stmt("u = g.sum(axis=1).reshape((4, 1))")]) == 1


def test_narrower_output_splits_the_group():
    env = {"u": ((1, 8), F32), "v": ((4, 8), F32)}
    codes = ["a = u * 2 + 1",         # (1, 8), used later: cannot be an output of a (4, 8) kernel
             "b = a * v + 1",
             "c = b * b",
             "s = a.sum() + c.sum()"]
    stmts, (out, kernels) = _group(codes, env, executor=KernelSourceOnCPU)
    assert [s.code for s in out] == ["a = _k0(u)", "c = _k1(a, v)", "s = a.sum() + c.sum()"]
    k0, k1 = kernels.values()
    u, v = _f32(1, 8), _f32(4, 8)
    a = k0(u)
    assert a.shape == (1, 8)
    np.testing.assert_allclose(k1(a, v), (a * v + 1) ** 2, rtol=1e-6)


def test_local_narrow_values_are_recomputed_in_the_kernel():
    env = {"u": ((1, 8), F32), "v": ((4, 8), F32)}
    codes = ["a = u * 2 + 1", "b = a * v + 1", "s = b.sum()"]
    stmts, (out, kernels) = _group(codes, env, executor=KernelSourceOnCPU)
    assert [s.code for s in out] == ["b = _k0(u, v)", "s = b.sum()"]
    (k,) = kernels.values()
    u, v = _f32(1, 8), _f32(4, 8)
    np.testing.assert_allclose(k(u, v), (u * 2 + 1) * v + 1, rtol=1e-6)


def test_unknown_shapes_and_unsupported_code_are_left_alone():
    env = {"x": ((4,), F32), "h": ((4,), np.dtype(np.float16))}
    codes = ["a = x * q + 1",          # q unknown
             "b = h * h + h",          # float16 is not supported
             "c = x // 2 + 1",         # floor division is not in the set
             "d = np.abs(x) + 1"]      # np.abs is not in the set
    stmts, (out, kernels) = _group(codes, env)
    assert not kernels and [s.code for s in out] == codes


# ------------------------------------------------------------------------------ random programs
def _random_program(rng):
    """A few statements of random elementwise arithmetic over mixed dtypes and shapes."""
    names = {"a": ((3, 4), F32), "b": ((1, 4), F32), "c": ((3, 1), F64), "k": ((3, 4), I32),
             "m": ((3, 4), B), "s": ((), float), "z": ((), F32)}
    avail = list(names)
    codes = []

    def expr(depth):
        r = rng.random()
        if depth == 0 or r < 0.25:
            if rng.random() < 0.2:
                return repr(float(rng.choice([0.5, 2.0, 1.5, 3.0]))) if rng.random() < 0.5 \
                    else str(int(rng.integers(1, 4)))
            return str(rng.choice(avail))
        if r < 0.6:
            op = rng.choice(["+", "-", "*", "/"])
            return f"({expr(depth - 1)} {op} {expr(depth - 1)})"
        if r < 0.68:
            return f"-{expr(depth - 1)}"
        if r < 0.78:
            fn = rng.choice(["tanh", "exp", "maximum", "minimum"])
            if fn in ("maximum", "minimum"):
                return f"np.{fn}({expr(depth - 1)}, {expr(depth - 1)})"
            return f"np.{fn}({expr(depth - 1)})"
        if r < 0.86:
            cmp = rng.choice(["<", ">=", "==", "!="])
            return f"np.where({expr(depth - 1)} {cmp} {expr(depth - 1)}, {expr(depth - 1)}, " \
                   f"{expr(depth - 1)})"
        if r < 0.93:
            return f"({expr(depth - 1)} > {expr(depth - 1)}).astype(np.float32)"
        return f"({expr(depth - 1)} ** 2)"

    if rng.random() < 0.5:                    # an accumulator, as the adjoint writes them
        codes.append("acc = np.zeros((3, 4), np.float32)")
    for i in range(int(rng.integers(2, 6))):
        r = rng.random()
        if codes and codes[0].startswith("acc") and r < 0.25:
            codes.append(f"acc {rng.choice(['+=', '-=', '*='])} {expr(2)}")
        elif codes and codes[0].startswith("acc") and r < 0.3:
            codes.append(f"w{i} = acc[:, :]")      # a view: acc is no longer alias-free
            names[f"w{i}"] = ((3, 4), F32)
            avail.append(f"w{i}")
        elif r < 0.4:                              # not elementwise, shape unknown to the pass
            codes.append(f"n{i} = {rng.choice(avail)}.sum(axis=0, keepdims=True)")
            avail.append(f"n{i}")
        else:
            codes.append(f"v{i} = {expr(3)}")
            avail.append(f"v{i}")
    return codes, names


def test_random_programs_fused_equal_numpy():
    rng = np.random.default_rng(1)
    vals = {"a": rng.uniform(-1, 1, (3, 4)).astype(np.float32),
            "b": rng.uniform(-1, 1, (1, 4)).astype(np.float32),
            "c": rng.uniform(-1, 1, (3, 1)), "k": rng.integers(1, 4, (3, 4)).astype(np.int32),
            "m": rng.random((3, 4)) < 0.5, "s": 0.75, "z": np.float32(-0.5)}
    tested = fused_any = 0
    while tested < 400:
        codes, names = _random_program(rng)
        ref = {"np": np, **copy.deepcopy(vals)}
        try:
            with np.errstate(all="ignore"):
                for c in codes:
                    exec(c, ref)
        except Exception:
            continue                       # NumPy refuses (e.g. - on bools): not a program
        targets = sorted({c.split(" ")[0] for c in codes})
        stmts = [_stmt(c) for c in codes]
        stmts.append(_stmt("return " + ", ".join(targets)))
        shapes = {k: v[0] for k, v in names.items()}
        dtypes = {k: v[1] for k, v in names.items()}
        out, kernels = F.fuse(stmts, shapes, dtypes, executor=KernelSourceOnCPU, min_ops=1)
        fused_any += bool(kernels)
        ns = {"np": np, **kernels, **copy.deepcopy(vals)}
        with np.errstate(all="ignore"):
            for s in out[:-1]:
                exec(s.code, ns)
        for t in targets:
            want, have = np.asarray(ref[t]), np.asarray(ns[t])
            assert have.dtype == want.dtype, (codes, t)
            assert have.shape == want.shape, (codes, t)
            tol = 1e-5 if want.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(have, want, rtol=tol, atol=tol, equal_nan=True,
                                       err_msg=f"{codes} {t}")
        tested += 1
    assert fused_any > 250


# ------------------------------------------------------------------------------ memory
def test_memory_on_cpu_reports_what_it_knows():
    m = M.memory()
    if m["device"] != "cpu":
        pytest.skip("a GPU is available")
    assert m["max_rss_bytes"] > 1 << 20
    assert {"rss_bytes", "traced_bytes", "traced_peak_bytes", "peak_bytes"} <= set(m)


def test_track_peak_on_cpu_uses_tracemalloc_only_when_tracing():
    if M.memory()["device"] != "cpu":
        pytest.skip("a GPU is available")
    was = tracemalloc.is_tracing()
    if was:
        tracemalloc.stop()
    try:
        with M.track_peak() as p:
            np.ones(1000)
        assert p.bytes is None and p.device == "cpu"
        tracemalloc.start()
        with M.track_peak() as p:
            a = np.ones(1 << 20)           # 8 MiB
            del a
        assert p.delta_bytes >= 8 << 20
        assert M.memory()["peak_bytes"] == p.bytes
        assert M.memory()["traced_peak_bytes"] is not None
    finally:
        tracemalloc.stop()
        if was:
            tracemalloc.start()


# ------------------------------------------------------------------------------ GPU (skipped here)
def _cupy():
    cupy = pytest.importorskip("cupy")
    if not cupy.cuda.is_available():
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(MODELS))
def test_gpu_fused_kernels_match_cpu(monkeypatch, name):
    cupy = _cupy()
    fn, make = MODELS[name]
    args = make()
    gargs = knetc.gpu(args)
    got = capture(monkeypatch, fn, gargs)
    shapes, dtypes = F.shapes_from_tape(got["adj"].tape, got["adj"])
    stmts, kernels = F.fuse(got["stmts"], shapes, dtypes)      # CupyKernel
    assert kernels
    fn2, _ = compile_fused(got, stmts, kernels)
    ref = run(got["entry"].fn, gargs)
    res = run(fn2, gargs)
    for a, b in zip(ref[0], res[0]):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(cupy.asnumpy(a), cupy.asnumpy(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(ref[1]), float(res[1]), rtol=1e-5)


@pytest.mark.gpu
def test_gpu_inout_kernel_updates_in_place():
    cupy = _cupy()
    env = {"x": ((4, 4), F32), "y": ((4, 4), F32)}
    codes = ["dx = np.full((4, 4), 1.0, np.float32)", "t = x * y", "dx += t * 2", "r = dx + 1"]
    stmts, (out, kernels) = _group(codes, env, ret=("dx", "r"), executor=F.CupyKernel)
    (k,) = kernels.values()
    x, y = cupy.asarray(_f32(4, 4)), cupy.asarray(_f32(4, 4))
    buf = cupy.ones((4, 4), cupy.float32)
    dx, r = k(x, y, buf)
    assert dx.data.ptr == buf.data.ptr          # updated in place
    cupy.testing.assert_allclose(dx, 1 + x * y * 2, rtol=1e-6)
    cupy.testing.assert_allclose(r, dx + 1, rtol=1e-6)


@pytest.mark.gpu
def test_gpu_memory_and_peak():
    cupy = _cupy()
    with M.track_peak() as p:
        a = cupy.ones(1 << 20, cupy.float32)
        del a
    assert p.delta_bytes >= 4 << 20
    m = M.memory()
    assert m["device"].startswith("cuda") and m["peak_bytes"] == p.bytes
