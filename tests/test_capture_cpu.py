"""Code for CUDA-graph capture, on the CPU: the ``capture`` switch, its cache variant, the
rewrite of ``a @ b`` into ``np.matmul(a, b)``, the capturable namespace, and runtime.cublas's
pure parts (the GEMM arguments, checked by evaluating them column-major with NumPy, as cuBLAS
would), its ctypes calls (into a fake cuBLAS made of Python callbacks), library discovery and
error translation.  The GPU half is tests/gpu/test_gpu_cublas.py."""
from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

import knetc
from knetc import errors, settings
from knetc.compiler import capture, ir, pipeline
from knetc.runtime import capturable, cublas


# ----- the settings switch and the cache variant ------------------------------------------------

def test_capture_switch_default_env_and_override(monkeypatch):
    monkeypatch.delenv("KNETC_CAPTURE", raising=False)
    monkeypatch.delenv("KNETC_FUSE", raising=False)
    monkeypatch.delenv("KNETC_TIER0", raising=False)
    assert not settings.enabled("capture")
    assert settings.enabled("fuse") and settings.enabled("tier0")     # unchanged defaults
    monkeypatch.setenv("KNETC_CAPTURE", "1")
    assert settings.enabled("capture")
    with settings.override(capture=False):
        assert not settings.enabled("capture")
    monkeypatch.setenv("KNETC_CAPTURE", "0")
    assert not settings.enabled("capture")
    with settings.override(capture=True):
        assert settings.enabled("capture")
        with settings.override(capture=False):
            assert not settings.enabled("capture")
        assert settings.enabled("capture")
    monkeypatch.setenv("KNETC_FUSE", "0")
    assert not settings.enabled("fuse")


def _shadow_numpy():
    """A module standing for CuPy: NumPy's names in a module that is not numpy."""
    shadow = types.ModuleType("shadow_numpy_capture")
    for k, v in vars(np).items():
        if not k.startswith("__"):
            setattr(shadow, k, v)
    return shadow


SHADOW = _shadow_numpy()


def _loss(w, x, v):
    h = np.tanh(x @ w["a"] + w["b"])             # 2-D @ 2-D (and x.T-style views backwards)
    s = v @ w["a"]                                # 1-D @ 2-D
    t = w["a"] @ h[0, :2]                         # 2-D @ 1-D (of a strided view)
    stack = np.stack([h, 2 * h]) @ w["c"]         # batched @ 2-D
    return np.sum(h ** 2) + np.sum(s * s) + np.sum(t) + np.sum(stack ** 2) + np.dot(v @ w["a"], w["b"])


def _problem():
    rng = np.random.default_rng(0)
    w = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(2),
         "c": rng.standard_normal((2, 4))}
    return w, rng.standard_normal((5, 3)), rng.standard_normal(3)


def _code(source):
    return "\n".join(line.split("#")[0] for line in source.splitlines())


@pytest.fixture
def on_device(monkeypatch):
    """Generated code believes its arrays are on a device (np bound to a module not numpy)."""
    monkeypatch.setattr(pipeline, "_array_module", lambda fn, params, args: SHADOW)
    monkeypatch.setenv("KNETC_FUSE", "0")     # fusion generates CUDA: GPU only


def test_capture_writes_products_as_np_matmul_with_the_same_gradient(on_device):
    w, x, v = _problem()
    with settings.override(capture=False):
        g0 = knetc.grad(_loss)
        plain = g0(w, x, v)
        src_plain = g0.source(w, x, v)
    with settings.override(capture=True):
        g1 = knetc.grad(_loss)
        got = g1(w, x, v)
        src = g1.source(w, x, v)
    assert " @ " in _code(src_plain) and "np.matmul" not in _code(src_plain)
    assert " @ " not in _code(src), src
    assert _code(src).count("np.matmul(") >= 8, src      # forward and backward products
    assert "written for CUDA-graph capture" in src
    for k in w:
        np.testing.assert_allclose(got[k], plain[k], rtol=1e-12)
    ref = _numpy_grad(w, x, v)
    for k in w:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-6)


def _numpy_grad(w, x, v):
    """The gradient by central differences (each parameter entry), for an independent check."""
    out = {}
    for k, p in w.items():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            hi = {kk: vv.copy() for kk, vv in w.items()}
            lo = {kk: vv.copy() for kk, vv in w.items()}
            hi[k][i] += 1e-6
            lo[k][i] -= 1e-6
            g[i] = (_loss(hi, x, v) - _loss(lo, x, v)) / 2e-6
        out[k] = g
    return out


def test_capture_binds_the_capturable_namespace(on_device):
    def loss(w, x, v):      # a function of its own: nothing cached yet
        return _loss(w, x, v)

    w, x, v = _problem()
    with settings.override(capture=True), knetc.api.recording() as entries:
        knetc.grad(loss)(w, x, v)
    assert entries
    ns = entries[0].fn.__globals__["np"]
    assert ns is capturable.namespace(SHADOW)
    assert ns.matmul is cublas.matmul and ns.dot is cublas.dot
    assert ns.tanh is SHADOW.tanh and ns.linalg is SHADOW.linalg
    with settings.override(capture=False), knetc.api.recording() as entries:
        knetc.grad(loss)(w, x, v)
    assert entries and entries[0].fn.__globals__["np"] is not ns


def test_capture_on_numpy_changes_nothing_but_the_cache():
    w, x, v = _problem()
    with settings.override(capture=True):
        src = knetc.grad(_loss).source(w, x, v)
    assert " @ " in _code(src) and "np.matmul" not in _code(src)


@pytest.mark.parametrize("first", [True, False])
def test_switching_capture_never_reuses_the_other_settings_code(on_device, first):
    def loss(w, x):
        return np.sum((x @ w) ** 2)

    w, x = np.ones((3, 2)), np.ones((4, 3))
    g = knetc.grad(loss)
    sources = {}
    for cap in (first, not first, first):
        with settings.override(capture=cap):
            g(w, x)
            sources.setdefault(cap, g.source(w, x))
            info = knetc.cache_info(g)
            assert info.misses == 1, (cap, info)     # one compile per setting, then hits
    assert "np.matmul(" in _code(sources[True]) and " @ " in _code(sources[False])
    with settings.override(capture=first):      # called twice: the second one hit
        assert knetc.cache_info(g).hits == 1
    # a new grad of the same function shares the caches per setting
    with settings.override(capture=True):
        assert "np.matmul(" in knetc.grad(loss).source(w, x)


def test_tier0_is_off_for_capture_code(on_device):
    def loss(w, x):
        return np.sum(x @ w)

    w, x = np.ones((3, 2)), np.ones((4, 3))
    with settings.override(capture=True):
        tr = pipeline.trace(loss, ["w", "x"], [pipeline.inspect.Parameter.POSITIONAL_OR_KEYWORD] * 2,
                            (w, x), 0)
        assert not pipeline.can_run_traced(tr)
    with settings.override(capture=False):
        assert pipeline.can_run_traced(tr)


# ----- the IR rewrite ---------------------------------------------------------------------------

def _stmt_types(cls=ir.Stmt):
    """The statement classes of knetc.compiler.ir (tests define stand-ins of their own)."""
    for s in cls.__subclasses__():
        if s.__module__ == ir.__name__:
            yield s
        yield from _stmt_types(s)


def test_rewrite_knows_every_statement_type():
    assert set(_stmt_types()) == set(capture.STMT_FIELDS)


def test_rewrite_reaches_every_expression_and_statement():
    a, b, c = ir.Name("a"), ir.Name("b"), ir.Name("c")
    mm = ir.BinOp("@", a, b)
    stmts = [
        ir.Assign("y", ir.BinOp("+", ir.BinOp("@", mm, c), ir.Const(1.0))),
        ir.Accumulate("g", a, ir.call(ir.np_fn("sum"), mm, axis=ir.Const(0)), True),
        ir.ScatterAdd("s", None, ir.Tuple([ir.Slice(None, ir.Const(2))]), mm, "basic",
                      ir.call(ir.np_fn("zeros"), ir.Const((3,)))),
        ir.AddInPlace("z", ir.UnaryOp("-", mm), ir.Subscript(mm, ir.Const(0))),
        ir.Do(ir.call(ir.Name("f"), ir.List([mm]), k=ir.Dict([ir.Const("x")], [mm]))),
        ir.Guard(ir.BinOp("!=", ir.Attr(mm, "shape"), ir.Const(()))),
        ir.Store(ir.Subscript(ir.Name("d"), ir.Const("k")), mm),
        ir.Free(["y"]),
        ir.Return(ir.Tuple([mm, ir.Name("y")])),
        ir.Assign("keep", ir.BinOp("*", a, b)),
    ]
    before = [s.render() for s in stmts]
    out = capture.matmul_calls(stmts)
    assert [s.render() for s in stmts] == before      # the input is not changed
    texts = [s.render() for s in out]
    assert all("@" not in t for t in texts), texts
    assert texts[0] == "y = np.matmul(np.matmul(a, b), c) + 1.0"
    assert texts[1] == "g = a + np.sum(np.matmul(a, b), axis=0)"
    assert texts[3] == "z[np.matmul(a, b)[0]] += -np.matmul(a, b)"
    assert texts[8] == "return np.matmul(a, b), y"
    assert out[-1] is stmts[-1] and out[7] is stmts[7]     # nothing to rewrite: same object
    assert "np" in out[0].uses and out[0].defs == ("y",)
    assert out[0].fresh and type(out[2]) is ir.ScatterAdd and out[2].mode == "basic"


# ----- the capturable namespace and the NumPy paths ---------------------------------------------

def test_capturable_namespace_is_built_once_per_module():
    ns = capturable.namespace(SHADOW)
    assert capturable.namespace(SHADOW) is ns
    assert ns.matmul is cublas.matmul and ns.dot is cublas.dot
    assert ns.random is SHADOW.random and ns.float32 is np.float32
    assert ns.__name__ == "knetc_capturable_shadow_numpy_capture"


def test_numpy_arrays_take_numpy_paths():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    np.testing.assert_array_equal(cublas.matmul(a, b), a @ b)
    out = np.empty((4, 2))
    assert cublas.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, a @ b)
    np.testing.assert_array_equal(cublas.dot(a, b), np.dot(a, b))
    assert cublas.dot(2.0, 3.0) == 6.0
    t = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(cublas.dot(t, rng.standard_normal((4, 2))).shape, (2, 3, 2))


# ----- the GEMM arguments, evaluated as cuBLAS would ------------------------------------------

def _flat(x):
    """The memory an array's elements span, from its first element (non-negative strides on
    every dimension longer than 1)."""
    es = [s // x.itemsize for s in x.strides]
    extent = 1 + sum((n - 1) * s for n, s in zip(x.shape, es) if n > 1)
    assert all(s >= 0 for n, s in zip(x.shape, es) if n > 1)
    return np.lib.stride_tricks.as_strided(x, shape=(extent,), strides=(x.itemsize,))


def _op(flat, base, trans, rows, cols, ld, what):
    """op(X) (rows x cols) of a column-major matrix at ``flat[base:]`` with leading dimension
    ``ld``: X itself (OP_N, X is rows x cols) or X^T (OP_T, X is cols x rows)."""
    mem_rows = rows if trans == cublas.OP_N else cols
    assert ld >= max(1, mem_rows), f"{what}: ld {ld} < {mem_rows}: cuBLAS says INVALID_VALUE"
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    idx = base + (r + c * ld if trans == cublas.OP_N else c + r * ld)
    assert idx.size == 0 or (idx.min() >= 0 and idx.max() < flat.size), f"{what} out of bounds"
    return flat[idx]


def reference_gemm(g: cublas.Gemm, a_flat, b_flat, c_flat):
    """``C = op(A) op(B)`` column-major over flat buffers, batch by batch: cuBLAS's A is the
    right operand's memory (``b_flat``), its B the left operand's (``a_flat``)."""
    assert g.ldc >= max(1, g.m)
    for i in range(g.batch):
        opa = _op(b_flat, i * g.stride_a, g.transa, g.m, g.k, g.lda, "A")
        opb = _op(a_flat, i * g.stride_b, g.transb, g.k, g.n, g.ldb, "B")
        cm = opa @ opb
        r, c = np.meshgrid(np.arange(g.m), np.arange(g.n), indexing="ij")
        c_flat[i * g.stride_c + r + c * g.ldc] = cm


def host_matmul(a, b):
    """What runtime.cublas.matmul does, with NumPy memory and the reference GEMM for cuBLAS."""
    size = a.itemsize
    if cublas.needs_copy(a.shape, cublas.element_strides(a.strides, size), True):
        a = np.ascontiguousarray(a)
    if cublas.needs_copy(b.shape, cublas.element_strides(b.strides, size), False):
        b = np.ascontiguousarray(b)
    g = cublas.plan(a.shape, cublas.element_strides(a.strides, size), b.shape,
                    cublas.element_strides(b.strides, size))
    if g is None:
        return None, None
    c = np.full(g.shape, np.nan, a.dtype)
    if c.size == 0:
        return c, g
    if g.k == 0:
        c[...] = 0
        return c, g
    reference_gemm(g, _flat(a), _flat(b), c.reshape(-1))
    return c, g


def _cases():
    rng = np.random.default_rng(5)

    def r(*shape):
        return rng.standard_normal(shape)

    big = r(7, 9)
    stack = r(3, 5, 4)
    cases = {
        "2d@2d": (r(4, 3), r(3, 5)),
        "1d@2d": (r(3), r(3, 5)),
        "2d@1d": (r(4, 3), r(3)),
        "1d@1d": (r(6), r(6)),
        "aT@b": (r(3, 4).T, r(3, 5)),                 # x.T @ d: a transposed view, no copy
        "a@bT": (r(4, 3), r(5, 3).T),                 # d @ w.T
        "aT@bT": (r(3, 4).T, r(5, 3).T),
        "col-slice": (big[:, :3], r(3, 2)),           # rows with a larger leading dimension
        "row-slice-T": (big[:4, :].T, r(4, 2)),
        "strided-1d": (big[0, ::2], r(5, 2)),         # a vector with stride 2
        "strided-1d-right": (r(2, 4), big[::2, 1]),
        "column-view": (r(2, 7), big[:, 2]),
        "every-other": (big[::2, ::3], r(3, 2)),      # copied
        "1x1": (r(1, 1), r(1, 1)),
        "row@col": (r(1, 3), r(3, 1)),
        "batched": (stack, r(3, 4, 2)),
        "batched@2d": (stack, r(4, 6)),
        "2d@batched": (r(2, 5), stack),
        "batched@bT": (stack, np.swapaxes(r(3, 2, 4), -1, -2)),
        "aT-batched": (np.swapaxes(r(3, 4, 5), -1, -2), r(3, 4, 2)),
        "batch-1-vs-3": (r(1, 5, 4), r(3, 4, 2)),
        "4d-batch": (r(2, 3, 5, 4), r(2, 3, 4, 2)),
        "4d@2d": (r(2, 3, 5, 4), r(4, 2)),
        "leading-ones": (r(1, 3, 5, 4), r(3, 4, 2)),
        "1d@batched": (r(5), stack),
        "batched@1d": (stack, r(4)),
        "batch-slice": (r(6, 5, 4)[::2], r(3, 4, 2)),  # a batch stride of 2 matrices
        "broadcast-1d": (np.broadcast_to(r(1), (3,)), r(3, 2)),      # stride 0: copied
        "broadcast-rows": (np.broadcast_to(r(3), (4, 3)), r(3, 2)),
        "empty-m": (r(0, 3), r(3, 2)),
        "empty-k": (r(4, 0), r(0, 2)),
        "empty-batch": (r(0, 2, 3), r(3, 2)),
        "float32": (r(4, 3).astype(np.float32), r(3, 5).astype(np.float32).T.copy().T),
    }
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_gemm_arguments_compute_numpys_matmul(name):
    a, b = CASES[name]
    got, g = host_matmul(a, b)
    assert g is not None, name
    expected = np.matmul(a, b)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5 if a.dtype == np.float32 else 1e-12,
                               atol=1e-6)


def test_transposed_views_are_not_copied():
    x = np.ones((3, 4))
    for shape, strides, left in [((4, 3), x.T.strides, True), ((4, 3), x.T.strides, False),
                                 ((2, 4, 3), (96, 8, 32), True)]:
        es = cublas.element_strides(strides, 8)
        assert not cublas.needs_copy(shape, es, left)
    g = cublas.plan((4, 3), (1, 4), (3, 5), (5, 1))      # x.T @ d
    assert (g.transa, g.transb, g.m, g.n, g.k, g.lda, g.ldb, g.ldc) == \
        (cublas.OP_N, cublas.OP_T, 5, 4, 3, 5, 4, 5)
    g = cublas.plan((4, 3), (3, 1), (3, 5), (1, 3))      # d @ w.T
    assert (g.transa, g.transb, g.lda, g.ldb) == (cublas.OP_T, cublas.OP_N, 3, 3)
    assert cublas.plan((2, 4, 3), (12, 3, 1), (3, 5), (5, 1)).stride_a == 0     # shared b
    assert cublas.needs_copy((4, 3), (6, 2), True)          # every other element
    assert cublas.needs_copy((4, 3), None, True)            # not in whole elements
    assert not cublas.needs_copy((2, 4, 3), (24, 3, 1), True)   # gaps between the matrices


def test_plan_refuses_what_it_does_not_cover():
    assert cublas.plan((), (), (3,), (1,)) is None                        # 0-d
    assert cublas.plan((2, 1, 4, 3), (12, 12, 3, 1), (1, 5, 3, 2), (30, 6, 2, 1)) is None
    assert cublas.plan((2, 4, 3), (12, 3, 1), (3, 3, 2), (6, 2, 1)) is None   # 2 vs 3 batches
    with pytest.raises(ValueError, match="core dimension"):
        cublas.plan((4, 3), (3, 1), (2, 5), (5, 1))
    assert cublas.plan((2 ** 31, 3), (3, 1), (3, 2), (2, 1)) is None       # C int overflow


def test_layout_and_batch_stride_details():
    assert cublas.layout(4, 3, 3, 1) == (cublas.OP_N, 3)
    assert cublas.layout(4, 3, 1, 4) == (cublas.OP_T, 4)
    assert cublas.layout(1, 3, 99, 1) == (cublas.OP_N, 3)      # one row: any row stride
    assert cublas.layout(1, 3, 99, 2) == (cublas.OP_T, 2)      # a strided row vector
    assert cublas.layout(4, 1, 5, 7) == (cublas.OP_N, 5)
    assert cublas.layout(4, 3, 0, 1) is None                  # broadcast rows
    assert cublas.layout(4, 3, 6, 2) is None
    assert cublas._batch_stride((2, 3), (36, 12)) == 12
    assert cublas._batch_stride((2, 3), (48, 12)) is None
    assert cublas._batch_stride((1, 3, 1), (0, 12, 5)) == 12
    assert cublas._batch_stride((1,), (7,)) == 0


# ----- ctypes calls into a fake cuBLAS ----------------------------------------------------------

class FakeCublas:
    """Python callbacks with cuBLAS's C prototypes; "device" memory is NumPy memory whose
    addresses the test registers.  The GEMMs run the reference GEMM on what they are passed, so
    a wrong argument order or type gives a wrong product (or an unknown address)."""

    def __init__(self, fail: dict | None = None):
        self.calls: list = []
        self.buffers: dict[int, np.ndarray] = {}
        self.fail = fail or {}
        for name, argtypes in cublas.PROTOTYPES.items():
            proto = ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)
            setattr(self, name, proto(self._make(name)))

    def register(self, x):
        self.buffers[x.ctypes.data] = x
        return x.ctypes.data

    def _make(self, name):
        def call(*args):
            self.calls.append((name, args))
            if name in self.fail:
                return self.fail[name]
            if name == "cublasCreate_v2":
                args[0][0] = 0xC0FFEE
            elif "gemm" in name:
                self._gemm(name, args)
            return 0
        return call

    def _gemm(self, name, args):
        if "Strided" in name:
            (h, ta, tb, m, n, k, alpha, pa, lda, sa, pb, ldb, sb, beta, pc, ldc, sc,
             batch) = args
        else:
            h, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc = args
            sa = sb = sc = 0
            batch = 1
        assert h == 0xC0FFEE and alpha[0] == 1.0 and beta[0] == 0.0
        g = cublas.Gemm(ta, tb, m, n, k, lda, ldb, ldc, sa, sb, sc, batch, ())
        reference_gemm(g, self.buffers[pb], self.buffers[pa], self.buffers[pc])


@pytest.mark.parametrize("name", ["2d@2d", "aT@bT", "batched@bT", "batch-1-vs-3", "float32",
                                  "strided-1d", "1d@1d"])
def test_handle_gemm_through_ctypes(name):
    a, b = CASES[name]
    size = a.itemsize
    if cublas.needs_copy(a.shape, cublas.element_strides(a.strides, size), True):
        a = np.ascontiguousarray(a)
    g = cublas.plan(a.shape, cublas.element_strides(a.strides, size), b.shape,
                    cublas.element_strides(b.strides, size))
    fake = FakeCublas()
    ws = np.zeros(64, np.uint8)
    h = cublas.Handle(cublas.Api(fake), ws.ctypes.data, ws.nbytes, keep=ws)
    fa, fb = _flat(a), _flat(b)
    c = np.full(g.shape, np.nan, a.dtype)
    pa, pb, pc = fake.register(fa), fake.register(fb), fake.register(c.reshape(-1))
    h.gemm(g, a.dtype, pa, pb, pc, 0x5EED)
    np.testing.assert_allclose(c, np.matmul(a, b), rtol=1e-5, atol=1e-6)
    names = [n for n, _ in fake.calls]
    assert names[:2] == ["cublasCreate_v2", "cublasSetMathMode"]
    assert fake.calls[1][1][1] == cublas.DEFAULT_MATH == 0
    # set-stream, then the workspace (set-stream resets it), then the product
    assert names[2:4] == ["cublasSetStream_v2", "cublasSetWorkspace_v2"]
    assert fake.calls[2][1][1] == 0x5EED
    assert fake.calls[3][1][1:] == (ws.ctypes.data, 64)
    prefix = "cublasS" if a.dtype == np.float32 else "cublasD"
    assert names[4] == prefix + ("gemm_v2" if g.batch == 1 else "gemmStridedBatched")


def test_status_codes_become_knetc_errors():
    fake = FakeCublas(fail={"cublasSgemm_v2": 7})
    h = cublas.Handle(cublas.Api(fake), 0, 0)
    g = cublas.plan((2, 3), (3, 1), (3, 4), (4, 1))
    with pytest.raises(errors.KnetcError, match=r"cublasSgemm_v2 failed: "
                       r"CUBLAS_STATUS_INVALID_VALUE \(7\) for a product of shape \(2, 4\)"):
        h.gemm(g, np.dtype(np.float32), 1, 2, 3, 0)
    with pytest.raises(errors.KnetcError, match="cublasCreate_v2 failed: "
                       "CUBLAS_STATUS_NOT_INITIALIZED"):
        cublas.Handle(cublas.Api(FakeCublas(fail={"cublasCreate_v2": 1})), 0, 0)
    with pytest.raises(errors.KnetcError, match=r"unknown status \(99\)"):
        cublas.check(99, "cublasX")
    cublas.check(0, "cublasX")


# ----- finding the library ----------------------------------------------------------------------

def test_library_candidates_order(tmp_path, monkeypatch):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /opt/x/nvidia/cu13/lib/libcublasLt.so.13\n"
        "7f01-7f02 r-xp 00000000 08:01 2 /opt/x/nvidia/cu13/lib/libcublas.so.13\n"
        "7f02-7f03 r--p 00000000 08:01 2 /opt/x/nvidia/cu13/lib/libcublas.so.13\n"
        "7f03-7f04 rw-p 00000000 00:00 0 \n")
    pkg = tmp_path / "fakenv" / "cu13" / "lib"
    pkg.mkdir(parents=True)
    (pkg / "libcublas.so.13").write_text("")
    (pkg / "libcublasLt.so.13").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    got = cublas.library_candidates(str(maps), ("fakenv.cu13", "no.such.package"),
                                    lambda name: "libcublas.so.11" if name == "cublas" else None)
    assert got == ["/opt/x/nvidia/cu13/lib/libcublas.so.13", "libcublas.so.13",
                   "libcublas.so.12", str(pkg / "libcublas.so.13"), "libcublas.so.11"]
    assert cublas.library_candidates(str(tmp_path / "none"), (), lambda n: None) == \
        ["libcublas.so.13", "libcublas.so.12"]


def test_load_library_takes_the_first_that_has_the_functions():
    good = types.SimpleNamespace(cublasSgemmStridedBatched=1, cublasSetWorkspace_v2=2)
    old = types.SimpleNamespace(cublasSgemmStridedBatched=1)      # no cublasSetWorkspace_v2

    def loader(path):
        if path == "missing":
            raise OSError("cannot open shared object file")
        return {"old": old, "good": good}[path]

    assert cublas.load_library(["missing", "old", "good"], loader) is good
    with pytest.raises(errors.KnetcError, match="cannot load cuBLAS.*missing: cannot open.*old"):
        cublas.load_library(["missing", "old"], loader)


def test_fallback_outside_and_inside_a_capture(monkeypatch):
    """What the GEMM does not cover goes to CuPy's own function outside a capture, and is a
    KnetcError inside one (CuPy's would raise NotImplementedError)."""
    capturing = []

    class FakeArray:
        def __init__(self, shape, dtype):
            self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)

    stream = types.SimpleNamespace(is_capturing=lambda: bool(capturing), ptr=0)
    fake = types.SimpleNamespace(ndarray=FakeArray, matmul=lambda a, b: "cupy.matmul",
                                 dot=lambda a, b: "cupy.dot",
                                 cuda=types.SimpleNamespace(get_current_stream=lambda: stream))
    monkeypatch.setattr(cublas, "_cupy_of", lambda *arrays: fake)
    ints = FakeArray((2, 3), np.int64), FakeArray((3, 2), np.int64)
    cubes = FakeArray((2, 3, 3), np.float32), FakeArray((2, 3, 3), np.float32)
    assert cublas.matmul(*ints) == "cupy.matmul"
    assert cublas.dot(*cubes) == "cupy.dot"
    assert cublas.matmul(FakeArray((), np.float32), cubes[0]) == "cupy.matmul"
    capturing.append(True)
    with pytest.raises(errors.KnetcError, match=r"np.matmul of shapes \(2, 3\) and \(3, 2\) "
                       r"\(int64, int64\) cannot be captured.*not float32/float64"):
        cublas.matmul(*ints)
    with pytest.raises(errors.KnetcError, match="np.dot .* N-D"):
        cublas.dot(*cubes)
    with pytest.raises(errors.KnetcError, match="not a CuPy array"):
        cublas.matmul(np.ones((2, 2)), cubes[0])
