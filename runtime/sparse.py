"""Row-sparse gradients: what ``grad(f, sparse=True)`` returns for an array read only by rows.

An embedding ``E`` (vocabulary × dimension) read as ``E[ids]`` has a gradient that is zero
except on the rows in ``ids``. As a dense array it costs a fill of the whole table every step
and an optimizer pass over it; as ``SparseRows`` it is the rows and what to add to each (Knet's
``Sparse`` gradient of ``getindex``; PyTorch's ``nn.Embedding(sparse=True)``), and
``knetc.update`` with SGD touches those rows only. ``np.asarray(g)`` or ``g.dense()`` give the
dense array, equal to what ``grad(f)`` returns (the same additions in the same order).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .prims import add_rows, sum_by_row

__all__ = ["SparseRows", "sparse_rows", "sparse_rows_add"]


class SparseRows:
    """A gradient that is zero but on some rows of the first axis.

    ``shape`` and ``dtype`` are those of the dense gradient (the parameter's); ``parts`` is a
    tuple of ``(index, values)``: integer arrays on the first axis (repeats add up, negative
    counts from the end) and ``values`` of shape ``index.shape + shape[1:]``. The dense
    gradient is zeros with every part's values added at its index.

    >>> g = SparseRows((4, 2), np.float64, ((np.array([1, 3, 1]), np.ones((3, 2))),))
    >>> g.dense()[:, 0]
    array([0., 2., 0., 1.])
    >>> rows, values = g.coalesce(); rows, values[:, 0]
    (array([1, 3]), array([2., 1.]))
    """

    __slots__ = ("shape", "dtype", "parts")
    # NumPy's operators and ufuncs do not take it as an array (they would see an object):
    # a + g, g * 2.0 and np.asarray(g) work; other arithmetic asks for g.dense() first.
    __array_ufunc__ = None

    def __init__(self, shape: tuple, dtype: Any, parts: tuple) -> None:
        self.shape, self.dtype, self.parts = tuple(shape), np.dtype(dtype), tuple(parts)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def dense(self) -> np.ndarray:
        """The gradient as an array (zeros, with the rows' values added)."""
        out = np.zeros(self.shape, self.dtype)
        for index, values in self.parts:
            add_rows(out, index, values)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.dense()
        return out if dtype is None else out.astype(dtype, copy=False)

    def coalesce(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, values)``: each row once, in increasing order, with the sum of what every
        part adds to it (``values`` of shape ``(len(rows),) + shape[1:]``)."""
        rest = self.shape[1:]
        index = np.concatenate([np.asarray(i, np.intp).ravel() for i, _ in self.parts])
        values = np.concatenate([np.asarray(v, self.dtype).reshape((-1,) + rest)
                                 for _, v in self.parts])
        if not index.size:
            return index, values
        return sum_by_row(index, values, self.shape[0])

    def _scaled(self, c) -> "SparseRows":
        if not _is_scalar(c):
            return NotImplemented
        return SparseRows(self.shape, self.dtype,
                          tuple((i, (v * c).astype(self.dtype, copy=False)) for i, v in self.parts))

    def __mul__(self, c):
        return self._scaled(c)

    __rmul__ = __mul__

    def __imul__(self, c):
        """Scale this gradient (``clip_grad_norm``); its parts get new value arrays, so that
        gradients sharing them (a sum) are left as they were."""
        scaled = self._scaled(c)
        if scaled is NotImplemented:
            return NotImplemented
        self.parts = scaled.parts
        return self

    def __truediv__(self, c):
        return self._scaled(1.0 / c) if _is_scalar(c) else NotImplemented

    def __neg__(self) -> "SparseRows":
        return self._scaled(-1)

    def __add__(self, other):
        if type(other) is SparseRows:
            if other.shape != self.shape:
                raise ValueError(f"cannot add SparseRows of shapes {self.shape} and {other.shape}")
            return SparseRows(self.shape, np.result_type(self.dtype, other.dtype),
                              self.parts + other.parts)
        return self.dense() + other

    def __radd__(self, other):
        if type(other) is SparseRows:
            return other.__add__(self)
        return other + self.dense()

    def __repr__(self) -> str:
        n = sum(int(np.size(i)) for i, _ in self.parts)
        return f"SparseRows(shape={self.shape}, dtype={self.dtype}, {n} rows in {len(self.parts)} parts)"


def _is_scalar(c) -> bool:
    return isinstance(c, (int, float, np.number)) and not isinstance(c, bool)


def _part(index, values, dtype) -> tuple:
    """One contribution, copied: later writes to the program's buffers cannot reach it."""
    return np.array(index, np.intp), np.array(values, dtype)


def sparse_rows(shape: tuple, dtype: Any, index, values) -> SparseRows:
    """The first contribution to a row-sparse gradient (generated code)."""
    return SparseRows(shape, dtype, (_part(index, values, dtype),))


def sparse_rows_add(g: SparseRows, index, values) -> SparseRows:
    """A further contribution (a second lookup of the same table)."""
    return SparseRows(g.shape, g.dtype, g.parts + (_part(index, values, g.dtype),))
