"""The fused GPU update of every optimizer, checked on the CPU: the statements its CUDA kernel is
made from (knetc/optim_kernels.py), evaluated with NumPy, take exactly the NumPy path's steps; and
their C translation keeps Python's grouping of every operation."""
from __future__ import annotations

import ast
import re

import numpy as np
import pytest

import knetc
from knetc import optim, optim_kernels, schedules
from knetc.optim import OPTIMIZERS

# Options per optimizer: plain, clipped (small gclip: every step clips), gclip too large to clip,
# weight decay, a schedule, all together.
OPTIONS = {
    "plain": {},
    "clip": {"gclip": 0.05},
    "noclip": {"gclip": 1e6},
    "wd": {"weight_decay": 0.1},
    "schedule": {"lr": schedules.step(0.01, every=2, gamma=0.5)},
    "all": {"gclip": 0.05, "weight_decay": 0.1, "lr": schedules.linear_warmup(0.02, 3)},
}


def _forced(o, w):
    """Make ``o`` take its fused path on a NumPy array (the NumPy evaluation of the kernel)."""
    o._prepare(w)
    o._apply = o._apply_fused
    return o


def _steps(rng, shape, dtype, n=5):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(n)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_statements_take_the_numpy_steps(name, option, dtype):
    cls = OPTIMIZERS[name]
    kw = dict(OPTIONS[option])
    if name == "Adadelta" and "lr" not in kw:
        kw["lr"] = 0.5
    rng = np.random.default_rng(abs(hash((name, option))) % 1000)
    w0 = rng.standard_normal((7, 5)).astype(dtype)
    grads = _steps(rng, w0.shape, dtype)
    a, b = w0.copy(), w0.copy()
    oa, ob = cls(**kw), cls(**kw)
    _forced(ob, b)
    for g in grads:
        oa.update(a, g)
        ob.update(b, g)
        # the same operations in the same order: the same bits
        np.testing.assert_array_equal(b, a)
    assert oa.t == ob.t == len(grads)
    for k in cls.states:
        va, vb = getattr(oa, k), getattr(ob, k)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(vb, va)
    assert b.dtype == dtype


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_path_through_update_plans(name):
    """``knetc.update(w, g, opts)`` (its cached plan) calls the fused ``_apply`` too."""
    rng = np.random.default_rng(3)
    w = [rng.standard_normal((4, 3)).astype(np.float32), np.zeros(3, np.float32)]
    v = [x.copy() for x in w]
    oa = knetc.optimizers(w, OPTIMIZERS[name], gclip=0.5)
    ob = knetc.optimizers(v, OPTIMIZERS[name], gclip=0.5)
    for o, x in zip(ob, v):
        _forced(o, x)
    for _ in range(4):
        g = [rng.standard_normal(x.shape).astype(np.float32) for x in w]
        knetc.update(w, g, oa)
        knetc.update(v, [x.copy() for x in g], ob)
    for x, y in zip(v, w):
        np.testing.assert_array_equal(x, y)


def test_gradient_of_another_dtype_is_cast():
    w = np.ones(3, np.float32)
    o = _forced(optim.SGD(lr=0.5), w)
    o.update(w, np.full(3, 2.0))
    np.testing.assert_array_equal(w, np.zeros(3, np.float32))
    assert w.dtype == np.float32


def test_numpy_parameters_keep_the_numpy_path():
    o = optim.Adam()
    w = np.ones(3, np.float32)
    o.update(w, np.ones(3, np.float32))
    assert "_apply" not in o.__dict__          # no instance override: the method as before
    assert o._buf is not None                   # the NumPy path's scratch buffer
    assert o.fused(w) is None                   # GPU only by default
    s, states = o.fused(w, gpu_only=False)
    assert s == optim_kernels.spec("Adam") and states == (o.fstm, o.scndm)


def test_no_fused_update_for_other_dtypes_or_state():
    o = optim.Adam()
    assert o.fused(np.ones(3, np.float16), gpu_only=False) is None
    o = optim.Momentum()
    o.load_state({"t": 0, "velocity": np.zeros(3, np.float64)})
    assert o.fused(np.ones(3, np.float32), gpu_only=False) is None


def test_fused_spec_follows_the_options():
    assert optim.Adam().fused_spec() == optim_kernels.spec("Adam")
    assert optim.Adam(gclip=1.0, weight_decay=0.1).fused_spec() == \
        optim_kernels.spec("Adam", clip=True, l2=True)
    assert optim.AdamW().fused_spec() == optim_kernels.spec("Adam", decoupled=True)
    assert optim.AdamW(weight_decay=0.0).fused_spec() == optim_kernels.spec("Adam")
    assert optim.Nesterov().fused_spec().kind == "Nesterov"
    with pytest.raises(ValueError):
        optim_kernels.spec("Adam", l2=True, decoupled=True)
    with pytest.raises(KeyError):
        optim_kernels.spec("Lion")


def test_fused_step_scalars_count_the_step():
    o = optim.Adam(lr=schedules.step(0.1, every=1, gamma=0.5), gclip=2.0)
    w = np.zeros(2, np.float32)
    o.fused(w, gpu_only=False)
    s1 = dict(zip(o.fused_spec().scalars, o.fused_step_scalars()))
    s2 = dict(zip(o.fused_spec().scalars, o.fused_step_scalars()))
    assert o.t == 2
    assert s1["gclip"] == 2.0 and s1["b1"] == 0.9
    # step 1: kstep = lr * sqrt(1 - b2) / (1 - b1); the schedule halves lr at step 2
    assert s1["kstep"] == pytest.approx(0.1 * np.sqrt(1 - 0.999) / (1 - 0.9))
    assert s2["kstep"] == pytest.approx(0.05 * np.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2))


# ----- the C translation -------------------------------------------------------------------------

def _all_specs():
    for kind in optim_kernels.KINDS:
        for clip in (False, True):
            for l2, dec in ((False, False), (True, False), (False, True)):
                yield optim_kernels.spec(kind, clip, l2, dec)


def _back_to_python(c: str) -> str:
    """The C of an expression without a ternary, read back as Python."""
    return c.replace("((T)(", "(T((").replace("(T((", "(T(")


@pytest.mark.parametrize("s", list(_all_specs()), ids=lambda s: s.name)
def test_c_translation_keeps_the_grouping(s):
    for target, expr in s.statements:
        c = optim_kernels.c_expr(expr)
        if "?" in c:
            assert c == ("(g * ((T)((((sqrt(sq) > gclip)) ? ((gclip / sqrt(sq))) : "
                         "(1.0)))))")
            continue
        back = ast.parse(_back_to_python(c), mode="eval")
        assert ast.dump(back) == ast.dump(ast.parse(expr, mode="eval")), (target, expr, c)


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("s", list(_all_specs()), ids=lambda s: s.name)
def test_cuda_source(s, graph):
    ins, outs, op, name = optim_kernels.cuda_source(s, graph)
    assert re.fullmatch(r"knetc_[a-z]+(_[cld]+)?(_graph)?", name)
    assert outs == ", ".join(f"T {n}" for n in ("w",) + s.states)
    params = [p.split()[-1] for p in ins.split(", ")]
    assert params[0] == "g" and ("sq" in params) == s.clip
    if graph:
        assert params[-1] == "kscal" and "raw float64 kscal" in ins
        for k, n in enumerate(s.scalars):
            assert f"const double {n} = kscal[{k}];" in op
    else:
        assert params[1 + s.clip:] == list(s.scalars)
    # every local is declared once, before use; outputs are assigned, never declared
    declared = re.findall(r"^T (\w+) =", op, re.M)
    assert len(declared) == len(set(declared))
    assert not set(declared) & set(("w",) + s.states)
    assert op.count(";") == len(s.statements) + (len(s.scalars) if graph else 0)


def test_c_expr_refuses_what_it_cannot_translate():
    for bad in ("w ** 2", "abs(w)", "w if g else w", "f(w)", "'x'"):
        with pytest.raises(ValueError):
            optim_kernels.c_expr(bad)


def test_scalar_names_are_the_optimizers_values():
    """Every scalar a kernel reads is provided by its optimizer (and nothing else)."""
    for cls in OPTIMIZERS.values():
        for kw in ({}, {"gclip": 1.0}, {"weight_decay": 0.1}, {"gclip": 1.0, "weight_decay": 0.1}):
            o = cls(**kw)
            s = o.fused_spec()
            assert len(o._fused_scalars(s, 1, 0.01)) == len(s.scalars)
