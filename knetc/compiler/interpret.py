"""Run IR statements directly, without rendering them to text and calling ``compile()``.

Tier 0 (pipeline.run_traced) runs a specialization's adjoint once, over the values its trace
recorded: code that runs once costs less walked than compiled (measured 2026-11-30 on the DyNet
treenn's first tree of 29 nodes: ``compile()`` of its 700-line adjoint took 7.5 ms and rendering
it 1 ms; walking it took about 2 ms longer than running the compiled code).
Code that runs again and again is compiled (codegen), as it always was.

The meaning of every node is Python's, as ``ir`` renders it: names are read from one dict of
globals and locals, then from builtins; operators are ``operator``'s; ``and``/``or`` short-circuit;
``a[i] += v`` reads, adds in place and writes back. A statement that raises gets a note with its
text (the rendered line a compiled function would have shown in its traceback).
"""
from __future__ import annotations

import builtins
import operator

from . import ir

__all__ = ["run"]

_BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
           "//": operator.floordiv, "%": operator.mod, "**": operator.pow, "@": operator.matmul,
           "<<": operator.lshift, ">>": operator.rshift, "&": operator.and_, "|": operator.or_,
           "^": operator.xor, "<": operator.lt, "<=": operator.le, ">": operator.gt,
           ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "is": operator.is_,
           "is not": operator.is_not,
           "in": lambda a, b: a in b, "not in": lambda a, b: a not in b}
_UNARY = {"-": operator.neg, "+": operator.pos, "~": operator.invert, "not ": operator.not_}
_BUILTINS = vars(builtins)
_MISSING = object()


def run(stmts: list[ir.Stmt], env: dict):
    """Execute ``stmts`` as module-level code whose globals and locals are ``env``. Returns the
    value of a ``Return`` without a target (None if there is none)."""
    for s in stmts:
        try:
            t = type(s)
            if t is ir.Assign:
                value = ev(s.value, env)
                targets = s.targets
                if s.unpack:
                    values = tuple(value)
                    if len(values) != len(targets):
                        raise ValueError(f"cannot unpack {len(values)} values into "
                                         f"{len(targets)} names")
                    for name, v in zip(targets, values):
                        env[name] = v
                else:
                    env[targets[0]] = value
            elif t is ir.AddInPlace:
                _add_in_place(s, env)
            elif t is ir.Free:
                for name in s.names_:
                    del env[name]
            elif t is ir.Do:
                ev(s.value, env)
            elif t is ir.Return:
                value = ev(s.value, env)
                if s.target is None:
                    return value
                env[s.target] = value
            elif t is ir.Guard:
                if ev(s.test, env):
                    guard = _name("_GuardFailed", env)
                    raise guard() if s.line is None else guard(s.line)
            elif t is ir.Store:
                _store(s.target, ev(s.value, env), env)
            elif t is ir.Accumulate:
                env[s.target] = ev(s.base, env) + ev(s.value, env)
            elif t is ir.ScatterAdd:
                base = ev(s.zeros if s.base is None else s.base, env)
                env[s.target] = _name("index_add", env)(base, ev(s.index, env), ev(s.value, env))
            else:
                raise TypeError(f"knetc: no interpretation of the statement {s!r}")
        except Exception as e:
            e.add_note(f"knetc: in the generated statement: {s.render()}")
            raise
    return None


def _add_in_place(s: ir.AddInPlace, env: dict) -> None:
    """``name += value``, ``name[index] += value`` (``=`` when ``assign``)."""
    value = ev(s.value, env)
    if s.index is None:
        env[s.name] = value if s.assign else operator.iadd(env[s.name], value)
        return
    target, index = env[s.name], ev(s.index, env)
    target[index] = value if s.assign else operator.iadd(target[index], value)


def _store(target: ir.Expr, value, env: dict) -> None:
    t = type(target)
    if t is ir.Subscript:
        ev(target.value, env)[ev(target.index, env)] = value
    elif t is ir.Attr:
        setattr(ev(target.value, env), target.attr, value)
    elif t is ir.Name or t is ir.Var:
        env[target.id] = value
    else:
        raise TypeError(f"knetc: no interpretation of a store into {target!r}")


def _name(name: str, env: dict):
    """What ``name`` means in module-level code whose globals are ``env``."""
    v = env.get(name, _MISSING)
    if v is _MISSING:
        v = _BUILTINS.get(name, _MISSING)
        if v is _MISSING:
            raise NameError(f"name {name!r} is not defined")
    return v


def ev(e: ir.Expr, env: dict):
    """The value of expression ``e``."""
    t = type(e)
    if t is ir.Var:
        return env[e.sym.name]
    if t is ir.Name:
        return _name(e.id, env)
    if t is ir.Const:
        return e.value
    if t is ir.Call:
        f = ev(e.func, env)
        args = [ev(a, env) for a in e.args]
        if e.kwargs:
            return f(*args, **{k: ev(v, env) for k, v in e.kwargs})
        return f(*args)
    if t is ir.Attr:
        return getattr(ev(e.value, env), e.attr)
    if t is ir.Subscript:
        return ev(e.value, env)[ev(e.index, env)]
    if t is ir.BinOp:
        op = e.op
        if op == "and":
            left = ev(e.left, env)
            return ev(e.right, env) if left else left
        if op == "or":
            left = ev(e.left, env)
            return left if left else ev(e.right, env)
        return _BINARY[op](ev(e.left, env), ev(e.right, env))
    if t is ir.Tuple:
        return tuple([ev(x, env) for x in e.elts])
    if t is ir.List:
        return [ev(x, env) for x in e.elts]
    if t is ir.UnaryOp:
        return _UNARY[e.op](ev(e.operand, env))
    if t is ir.Slice:
        return slice(*[None if p is None else ev(p, env) for p in e.parts()])
    if t is ir.Dict:
        return {ev(k, env): ev(v, env) for k, v in zip(e.keys, e.values)}
    raise TypeError(f"knetc: no interpretation of the expression {e!r}")
