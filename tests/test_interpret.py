"""knetc.compiler.interpret: IR statements walked give what the same statements rendered and
compiled give (tier 0 walks them; cached entries compile them)."""
import numpy as np
import pytest

import knetc
from knetc import errors
from knetc.compiler import interpret, ir
from knetc.compiler.codegen import render_body


def _both(stmts, **values):
    """Run ``stmts`` walked and compiled, each on its own copy of ``values``: the two envs."""
    def env():
        return {"np": np, "_GuardFailed": errors.GuardFailed,
                **{k: v.copy() if isinstance(v, np.ndarray) else v for k, v in values.items()}}
    walked, compiled = env(), env()
    interpret.run(stmts, walked)
    exec(compile(render_body(stmts), "<test>", "exec"), compiled)     # noqa: S102
    return walked, compiled


def _same(a, b):
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b))


N, C = ir.Name, ir.Const
ARITH = ["+", "-", "*", "/", "//", "%", "**", "@", "<", "<=", ">", ">=", "==", "!="]


@pytest.mark.parametrize("op", ARITH)
def test_binary_operators_on_arrays(op):
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 3)) + 0.5, rng.random((3, 3)) + 0.5
    w, c = _both([ir.Assign("z", ir.BinOp(op, N("x"), N("y")))], x=x, y=y)
    _same(w["z"], c["z"])


@pytest.mark.parametrize("op", ["<<", ">>", "&", "|", "^", "is", "is not", "in", "not in",
                                "and", "or"])
def test_other_binary_operators_on_python_values(op):
    shared = (1, 2)
    if op in ("in", "not in"):
        left, right = (1, 3), ((1, 2), [3])
    elif op in ("is", "is not", "and", "or"):
        left, right = (0, 3, shared), (shared, 0, (1, 2))
    else:
        left, right = (0, 3, 5), (2, 0, 1)
    for a in left:
        for b in right:
            w, c = _both([ir.Assign("z", ir.BinOp(op, N("a"), N("b")))], a=a, b=b)
            _same(w["z"], c["z"])


def test_and_or_short_circuit():
    """``False and f()`` never calls f, as Python's ``and`` would not."""
    calls = []

    def f():
        calls.append(1)
        return 5
    stmts = [ir.Assign("z", ir.BinOp("and", C(0), ir.call(N("f")))),
             ir.Assign("u", ir.BinOp("or", C(2), ir.call(N("f"))))]
    w, c = _both(stmts, f=f)
    assert calls == [] and w["z"] == c["z"] == 0 and w["u"] == c["u"] == 2


def test_expressions_of_every_kind():
    x = np.arange(24.0).reshape(2, 3, 4)
    stmts = [
        ir.Assign("a", ir.Subscript(N("x"), ir.Tuple([ir.Slice(C(None), C(1)), C(1),
                                                       ir.Slice(None, None, C(-2))]))),
        ir.Assign("b", ir.Subscript(N("x"), ir.Slice(C(1)))),
        ir.Assign("c", ir.call(ir.np_fn("sum"), N("x"), axis=ir.Tuple([C(0), C(2)]),
                               keepdims=C(True))),
        ir.Assign("d", ir.method(N("x"), "reshape", C(6), C(-1))),
        ir.Assign("e", ir.UnaryOp("-", ir.Attr(N("x"), "T"))),
        ir.Assign("f", ir.Dict([C("k"), C(2)], [ir.List([C(1), C(float("inf"))]), ir.lit((1, 2))])),
        ir.Assign("g", ir.Tuple([C(np.float32(0.5)), ir.UnaryOp("not ", C(0)),
                                 ir.UnaryOp("~", C(5))])),
        ir.Assign("h", ir.lit(slice(1, None, 2))),
        ir.Assign("i", ir.call(N("len"), N("x"))),     # a builtin, read after env
        ir.Assign("j", ir.Subscript(N("x"), ir.Tuple([]))),
    ]
    w, c = _both(stmts, x=x)
    for k in "abcdefghij":
        _same(w[k], c[k])


def test_statements_of_every_kind():
    rng = np.random.default_rng(1)
    x = rng.random((4, 3))
    rows = np.array([0, 2, 0])
    stmts = [
        ir.Assign(("p", "q"), ir.call(ir.np_fn("split"), N("x"), C(2))),
        ir.Assign(("one",), ir.List([C(7)]), unpack=True),
        ir.Assign(("_", "r"), ir.Tuple([C(1), C(2)])),
        ir.Assign("acc", ir.method(N("x"), "copy")),
        ir.AddInPlace("acc", N("x")),
        ir.AddInPlace("acc", C(1.0), index=ir.Tuple([C(0), ir.Slice()])),
        ir.AddInPlace("acc", C(3.0), index=C(1), assign=True),
        ir.Accumulate("s", N("acc"), N("x"), inplace_ok=False),
        ir.ScatterAdd("t", None, N("rows"), ir.Subscript(N("x"), ir.Slice(None, C(3))), "rows",
                      zeros=ir.call(ir.np_fn("zeros_like"), N("x"))),
        ir.ScatterAdd("u", N("x"), C(1), N("r"), "basic", zeros=None),
        ir.Store(ir.Subscript(N("box"), C("k")), N("r")),
        ir.Do(ir.method(N("log"), "append", N("r"))),
        ir.Assign("gone", C(1)),
        ir.Free(["gone"]),
        ir.Return(ir.Tuple([N("s"), N("t")]), target="_result"),
    ]
    from knetc.compiler.optimize import LOWERING_NAMES
    w, c = _both(stmts, x=x, rows=rows, box={}, log=[], **LOWERING_NAMES)
    for k in ["p", "q", "one", "r", "acc", "s", "t", "u", "box", "log", "_result"]:
        _same(w[k], c[k])
    assert "gone" not in w and "gone" not in c


def test_a_guard_raises_as_compiled_code_does():
    for stmts in ([ir.Guard(BinOp_ne := ir.BinOp("!=", C(1), C(2)), line=7)],
                  [ir.Guard(BinOp_ne)]):
        with pytest.raises(errors.GuardFailed):
            interpret.run(stmts, {"_GuardFailed": errors.GuardFailed})
    interpret.run([ir.Guard(ir.BinOp("==", C(1), C(2)), line=7)], {})    # passes


def test_a_failing_statement_is_named_in_a_note():
    stmts = [ir.Assign("z", ir.BinOp("@", N("x"), N("y")))]
    with pytest.raises(ValueError) as e:
        interpret.run(stmts, {"x": np.ones((2, 3)), "y": np.ones((2, 3))})
    assert "z = x @ y" in "".join(e.value.__notes__)
    with pytest.raises(NameError):
        interpret.run([ir.Assign("z", N("nowhere"))], {})
    with pytest.raises(ValueError):
        interpret.run([ir.Assign(("a", "b"), ir.lit((1, 2, 3)))], {})


def test_tier_0_compiles_nothing(monkeypatch):
    """A new structure at tier 0 gets its gradient without a call of compile(), and it matches
    the compiled code's."""
    import builtins
    from knetc.compiler import pipeline

    def loss(w, tree):
        if isinstance(tree, int):
            return np.tanh(w[tree])
        return np.tanh(loss(w, tree[0]) * loss(w, tree[1]) + w[0])

    def total(w, tree):
        return np.sum(loss(w, tree) ** 2)
    w = np.random.default_rng(2).random((5, 3))
    trees = [(0, 1), ((0, 1), 2), (3, (1, (2, 4)))]
    g = knetc.grad(total)
    with knetc.settings.override(tier0=True, units=False):
        for t in trees[:2]:
            g(w, t)
        calls = []
        real = builtins.compile
        monkeypatch.setattr(pipeline, "compile", lambda *a, **k: calls.append(a) or real(*a, **k),
                            raising=False)
        before = knetc.cache_info(g).tier0
        got = g(w, trees[2])
        assert knetc.cache_info(g).tier0 == before + 1 and calls == []
    with knetc.settings.override(tier0=False):
        want = knetc.grad(total)(w, trees[2])
    np.testing.assert_allclose(got, want, rtol=1e-12)
