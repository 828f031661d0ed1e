"""Python ints of the arguments whose values only select: data, not part of the cache key.

A word id passed as a Python int (``E[i]`` for ``i in words``) would make every sentence a new
cache key if its value were keyed, as ints are keyed when they steer the code (a loop count, a
branch, a shape). So an int leaf of the arguments is first an ``IntArg``: indexing a traced
array with it (``E[i]``, ``x[:, i]``) reads it when the code runs (an int Sym), so one entry serves
every value. Any other use *steers*: the interpreter gets the plain int, the generated code gets
a guard on it (``if words[3] != 17: raise _GuardFailed``), and the trace reports its path, so that
the cache keys that leaf by value from then on (``SpecCache.learn``) and the guard never fails
on a hit. The class fails closed: every operation on an IntArg (arithmetic, comparison,
hashing, ``__index__``, formatting, attributes) goes through ``steer``; only ``Specializer``
passes it on untouched (names, containers, inlined calls), answers ``isinstance``/``type`` from
its type (the key checks the type), and turns it into data where an array is indexed.
"""
from __future__ import annotations

import operator

from . import ir


class IntArg:
    """An int leaf of the call's arguments at ``keypath`` (read at ``path`` in the code)."""
    __slots__ = ("value", "path", "keypath", "tape", "name", "_data")

    def __init__(self, value: int, path: ir.Expr, keypath: tuple, tape, name: str):
        self.value, self.path, self.keypath, self.tape, self.name = value, path, keypath, tape, name
        self._data = None

    def data(self):
        """The int as a value of the generated code (an int Sym read from the arguments)."""
        if self._data is None:
            self._data = self.tape.read(self.path, self.value, False, name=self.name)
        return self._data

    @property
    def data_sym(self):
        """The int Sym ``data`` made (its read), or None if it was not read as data."""
        return self._data

    def steer(self) -> int:
        """The plain int, for a use that steers the code: guarded, and keyed from now on."""
        tape = self.tape
        tape.steers += 1
        if self.keypath not in tape.steered:
            tape.steered.add(self.keypath)
            tape.guard(ir.BinOp("!=", self.path, ir.Const(self.value)), tape.loc[1])
        return self.value

    def __getattr__(self, name):        # .bit_length(), .real, ...
        return getattr(self.steer(), name)

    def __repr__(self):
        return repr(self.steer())


def _forward(op):
    return lambda self, *rest: op(self.steer(), *rest)


def _reflected(op):
    return lambda self, other: op(other, self.steer())


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("lshift", operator.lshift), ("rshift", operator.rshift), ("divmod", divmod)]:
    setattr(IntArg, f"__{_name}__", _forward(_op))
    setattr(IntArg, f"__r{_name}__", _reflected(_op))
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne),
                   ("neg", operator.neg), ("pos", operator.pos), ("abs", abs),
                   ("invert", operator.invert), ("index", operator.index), ("int", int),
                   ("float", float), ("complex", complex), ("bool", bool), ("hash", hash),
                   ("str", str), ("format", format), ("round", round),
                   ("trunc", lambda v: v.__trunc__()), ("floor", lambda v: v.__floor__()),
                   ("ceil", lambda v: v.__ceil__())]:
    setattr(IntArg, f"__{_name}__", _forward(_op))


def plain(value, steer: bool = True):
    """``value`` with every IntArg inside (lists, tuples, dicts, slices) its plain int: steered,
    or (``steer=False``, for ``isinstance``/``type``) just unwrapped."""
    t = type(value)
    if t is IntArg:
        return value.steer() if steer else value.value
    if t is list or t is tuple:
        for v in value:     # (a loop: this runs for every recorded operation)
            if type(v) in _NESTED:
                out = [plain(v, steer) for v in value]
                return out if t is list else tuple(out)
        return value
    if t is dict:
        for v in value.values():
            if type(v) in _NESTED:
                return {k: plain(v, steer) for k, v in value.items()}
        return value
    if t is slice:
        return slice(plain(value.start, steer), plain(value.stop, steer), plain(value.step, steer))
    return value


_NESTED = (IntArg, list, tuple, dict, slice)


def as_index(idx):
    """An index of a traced array: IntArgs alone or as items of a tuple become data (int Syms);
    inside slices or lists they steer (a slice bound decides the shape)."""
    t = type(idx)
    if t is IntArg:
        return idx.data()
    if t is tuple:
        return tuple(i.data() if type(i) is IntArg else plain(i) for i in idx)
    return plain(idx)
