"""What the compiler knows of each name's shape and type before anything runs: the forward
values (their Syms' concrete values) and each gradient's final name. Shared by the CPU
simplifications (``optimize``) and the GPU fusion pass."""
from __future__ import annotations

import numpy as np

from . import ir
from .tape import Sym, syms_in

_WEAK = (float, int, bool)


def shapes_from_tape(tape, adj=None) -> tuple[dict, dict]:
    """What the compiler knows without running anything: every forward value (its Sym's
    concrete value) and each gradient's final name (the shape of its value). The pass adds the
    results of elementwise statements and of ``np.full/zeros/ones/empty`` with literal shapes;
    other adjoint temporaries (a gradient's intermediate name, ``x.sum(axis=0)``) stay unknown,
    and elementwise statements reading them are not fused."""
    shapes, dtypes, by_id = {}, {}, {}
    for op in tape.ops:
        outs = op.outs if type(op.outs) is tuple else (op.outs,)
        found = [o for o in outs if type(o) is Sym]
        found += syms_in(op.args) + syms_in(list(op.kwargs.values()))
        if op.stmt is not None:     # guards on values (their Var nodes)
            found += [v.sym for v in _vars(op.stmt)]
        if type(op.saved) is Sym:
            found.append(op.saved)
        for s in found:
            by_id[id(s)] = s
            if s.val is not None:
                record_value(shapes, dtypes, s.name, s.val)
    if adj is not None:
        for key, g in adj.grads.items():
            s = by_id.get(key)
            if s is not None and s.val is not None and type(g) is ir.Name:
                record_value(shapes, dtypes, g.id, s.val)
    return shapes, dtypes


def _vars(stmt) -> list:
    """The traced values (ir.Var) an effect statement reads."""
    exprs = [e for e in (getattr(stmt, "test", None), getattr(stmt, "value", None)) if e is not None]
    return [v for e in exprs for v in ir.walk(e) if type(v) is ir.Var]


def record_value(shapes: dict, dtypes: dict, name: str, val):
    """Note ``val``'s shape and type under ``name`` (nothing for values that are not arrays or
    Python scalars)."""
    if type(val) in _WEAK:
        shapes[name], dtypes[name] = (), type(val)
    elif isinstance(val, np.generic):              # a 0-d device array on the GPU
        shapes[name], dtypes[name] = (), val.dtype
    elif hasattr(val, "shape") and hasattr(val, "dtype"):
        shapes[name], dtypes[name] = tuple(val.shape), np.dtype(val.dtype)
