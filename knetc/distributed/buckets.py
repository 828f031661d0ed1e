"""Flat buffers for collectives over nested structures: the leaves of one dtype (and one array
module) are copied into contiguous buckets of at most ``bucket_bytes``, so a step makes one
collective per bucket instead of one per parameter; the buckets are allocated once per structure
and reused.

A ``Plan`` is built from a structure's ``Signature`` (per leaf: the kind, dtype and shape) and
says where each leaf lives: ``(bucket, offset, size)``. ``pack`` copies leaves in, ``unpack``
copies the results back into the same arrays (in place) or, for leaves that are not writable
arrays, returns new values to be put back by ``write_back``.
"""
from __future__ import annotations

import collections
import hashlib
import numbers
from typing import Any, Sequence

import numpy as np

from knetc import tree
from knetc.distributed.world import DistributedError

__all__ = ["Leaf", "Signature", "Plan", "signature", "describe_mismatch", "where", "check_writable",
           "writable", "write_back", "DEFAULT_BUCKET_BYTES", "DIRECT_BYTES"]

DEFAULT_BUCKET_BYTES = 16 << 20   # 16 MiB: few calls for real models, buffers of bounded size
# Array leaves of at least this size are reduced where they are (one collective each, no copy into
# and out of a bucket): the copies cost more than the latency of another collective.
DIRECT_BYTES = 64 << 10


def where(path: tuple, name: str = "tree") -> str:
    """``tree[0]['w']``: the path of a leaf as the user writes it."""
    return name + "".join(f"[{k!r}]" for k in path)


def _module_name(x: Any) -> str:
    return type(x).__module__.split(".")[0]


class Leaf:
    """One leaf of a structure as a collective sees it.

    ``kind``: ``"none"`` (skipped), ``"array"`` (a NumPy or CuPy array, reduced in place when
    writable), ``"scalar"`` (a Python or NumPy number, rebuilt with its type) or ``"object"``
    (anything else: only ``broadcast`` takes it, by pickling).
    """

    __slots__ = ("kind", "module", "dtype", "shape", "type")

    def __init__(self, x: Any) -> None:
        self.type = type(x)
        if x is None:
            self.kind, self.module, self.dtype, self.shape = "none", "", None, ()
        elif hasattr(x, "__array_interface__") or hasattr(x, "__cuda_array_interface__"):
            if isinstance(x, np.generic):
                self.kind, self.module, self.dtype, self.shape = "scalar", "numpy", x.dtype, ()
            else:
                self.kind, self.module = "array", _module_name(x)
                self.dtype, self.shape = np.dtype(x.dtype), tuple(x.shape)
        elif isinstance(x, (bool, numbers.Integral, numbers.Real)):
            dtype = np.dtype(bool if isinstance(x, bool) else
                             np.int64 if isinstance(x, numbers.Integral) else np.float64)
            self.kind, self.module, self.dtype, self.shape = "scalar", "numpy", dtype, ()
        else:
            self.kind, self.module, self.dtype, self.shape = "object", "", None, ()

    def key(self) -> tuple:
        return (self.kind, self.module, None if self.dtype is None else self.dtype.str, self.shape,
                self.type.__name__ if self.kind in ("scalar", "object") else "")

    def describe(self) -> str:
        if self.kind == "none":
            return "None"
        if self.kind == "object":
            return f"a {self.type.__name__} object"
        if self.kind == "scalar":
            return f"a {self.type.__name__} scalar"
        return f"a {self.module} {self.dtype} array of shape {self.shape}"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Signature:
    """What every rank must agree on before a collective: the structure and each leaf's kind,
    module, dtype and shape. ``digest`` is a 63-bit hash of it, the same in every process
    (Python's own ``hash`` of strings differs between processes)."""

    __slots__ = ("treedef", "paths", "leaves", "key", "_digest")

    def __init__(self, treedef: tree.TreeDef, paths: list, leaves: list[Leaf]) -> None:
        self.treedef, self.paths, self.leaves = treedef, paths, leaves
        self.key = (treedef, tuple(leaf.key() for leaf in leaves))
        self._digest: int | None = None

    @property
    def digest(self) -> int:
        if self._digest is None:
            text = repr((repr(self.treedef), [(repr(p), leaf.key()) for p, leaf in
                                               zip(self.paths, self.leaves)]))
            raw = hashlib.blake2b(text.encode(), digest_size=8).digest()
            self._digest = int.from_bytes(raw, "little") >> 1   # fits a signed int64, and so does -digest
        return self._digest

    def report(self) -> list[tuple[str, str]]:
        """``[(path, description)]`` per leaf, plus the structure: small, sent to rank 0 on mismatch."""
        return [("(structure)", repr(self.treedef))] + [
            (where(p), leaf.describe()) for p, leaf in zip(self.paths, self.leaves)]


_SIGNATURES: "collections.OrderedDict" = collections.OrderedDict()


def signature(x: Any) -> tuple[Signature, list]:
    """The signature of the structure ``x`` and its leaves (in ``knetc.tree``'s order).

    A training loop passes structures of the same shape every step: the signature (paths,
    leaf descriptions, digest) is made once per (structure, leaf types, shapes, dtypes) and
    looked up afterwards, so a step pays for one flatten."""
    values, treedef = tree.flatten(x)
    quick = (treedef, tuple((type(v), getattr(v, "shape", None), getattr(v, "dtype", None))
                            for v in values))
    try:
        sig = _SIGNATURES.get(quick)
    except TypeError:          # an unhashable shape or dtype: describe it anew
        sig, quick = None, None
    if sig is None:
        pairs, treedef = tree.flatten_with_paths(x)
        sig = Signature(treedef, [p for p, _ in pairs], [Leaf(v) for _, v in pairs])
        if quick is not None:
            _SIGNATURES[quick] = sig
            if len(_SIGNATURES) > 64:
                _SIGNATURES.popitem(last=False)
    return sig, values


def describe_mismatch(reports: Sequence[list[tuple[str, str]]], what: str) -> str:
    """The first difference between the ranks' ``Signature.report``s, as a sentence naming the leaf."""
    base = reports[0]
    for r, rep in enumerate(reports[1:], 1):
        if rep == base:
            continue
        for i in range(max(len(base), len(rep))):
            a = base[i] if i < len(base) else None
            b = rep[i] if i < len(rep) else None
            if a != b:
                if i == 0:
                    return (f"{what}: the structures differ across ranks: rank 0 has {a[1]} with "
                            f"{len(base) - 1} leaves, rank {r} has {b[1]} with {len(rep) - 1} leaves")
                if a is None or b is None or a[0] != b[0]:
                    return (f"{what}: the structures differ across ranks: leaf {i - 1} is "
                            f"{a[0] if a else 'missing'} on rank 0 and {b[0] if b else 'missing'} "
                            f"on rank {r}")
                return (f"{what}: the leaf {a[0]} differs across ranks: rank 0 has {a[1]}, "
                        f"rank {r} has {b[1]}")
    return f"{what}: the ranks' structures differ"


class Plan:
    """Where each reducible leaf of one signature lives in the flat buckets.

    ``slots[i]`` is ``(bucket index, offset, size)`` for leaf ``i`` or None (a skipped leaf, or
    one of ``direct``: large arrays reduced in place when ``direct_bytes`` is given);
    ``buckets[b]`` is ``(module name, dtype, length)``; ``buffers`` are allocated on first use
    with ``xp.empty`` of the leaves' array module, then reused.
    """

    def __init__(self, sig: Signature, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 kinds: tuple[str, ...] = ("array", "scalar"), direct_bytes: int | None = None) -> None:
        self.signature = sig
        self.slots: list[tuple[int, int, int] | None] = []
        self.buckets: list[list] = []          # [module, dtype, length]
        self.direct: list[int] = []            # leaves reduced in place, outside the buckets
        open_bucket: dict[tuple, int] = {}      # (module, dtype) -> the bucket being filled
        for i, leaf in enumerate(sig.leaves):
            if leaf.kind not in kinds:
                self.slots.append(None)
                continue
            if direct_bytes is not None and leaf.kind == "array" and \
                    leaf.size * leaf.dtype.itemsize >= direct_bytes:
                self.direct.append(i)
                self.slots.append(None)
                continue
            group = (leaf.module, leaf.dtype)
            n = leaf.size
            b = open_bucket.get(group)
            if b is None or (self.buckets[b][2] > 0 and
                             (self.buckets[b][2] + n) * leaf.dtype.itemsize > bucket_bytes):
                b = open_bucket[group] = len(self.buckets)
                self.buckets.append([leaf.module, leaf.dtype, 0])
            self.slots.append((b, self.buckets[b][2], n))
            self.buckets[b][2] += n
        # the array modules ("numpy", "cupy") of the buckets and the direct leaves
        self.modules = {m for m, _, _ in self.buckets} | {sig.leaves[i].module for i in self.direct}
        self.buffers: list[Any] | None = None
        self.checked: set[str] = set()   # the ops whose leaf kinds and dtypes were accepted

    def allocate(self, modules: dict[str, Any]) -> list[Any]:
        """The flat buffers (allocated once: ``modules`` maps ``"numpy"``/``"cupy"`` to the module)."""
        if self.buffers is None:
            self.buffers = [modules[m].empty(n, dtype) for m, dtype, n in self.buckets]
        return self.buffers

    def pack(self, values: list, modules: dict[str, Any]) -> list[Any]:
        """Copy every planned leaf into its slice of the buffers; returns the buffers."""
        bufs = self.allocate(modules)
        for slot, leaf, x in zip(self.slots, self.signature.leaves, values):
            if slot is None:
                continue
            b, o, n = slot
            view = bufs[b][o:o + n]
            if leaf.kind == "array":
                # copy through a reshaped view: no temporary even for a non-contiguous leaf
                modules[leaf.module].copyto(view.reshape(leaf.shape), x)
            else:
                view[0] = x
        return bufs

    def unpack(self, values: list) -> dict[int, Any]:
        """Copy the buffers back into the planned leaves: writable arrays in place; returns
        ``{leaf index: new value}`` for the others (scalars, read-only arrays)."""
        bufs = self.buffers
        new: dict[int, Any] = {}
        for i, (slot, leaf, x) in enumerate(zip(self.slots, self.signature.leaves, values)):
            if slot is None:
                continue
            b, o, n = slot
            view = bufs[b][o:o + n]
            if leaf.kind == "array":
                if writable(x):
                    x[...] = view.reshape(leaf.shape)
                else:
                    new[i] = view.reshape(leaf.shape).copy()
            else:
                v = view[0].item()
                new[i] = leaf.type(v) if leaf.type is not bool else bool(v)
        return new


def writable(x: Any) -> bool:
    """Can ``x`` be written in place (an array whose flags allow it, or no flags at all)?"""
    flags = getattr(x, "flags", None)
    return flags is None or bool(getattr(flags, "writeable", True))


def check_writable(root: Any, sig: Signature, values: list, inplace: bool, what: str) -> None:
    """Before any communication (so that no rank has half-updated its leaves): with ``inplace``,
    every scalar or read-only array leaf must sit in a list or dict (or be the whole tree)."""
    if not inplace or (sig.treedef.num_leaves == 1 and sig.paths[0] == ()):
        return
    for path, leaf, x in zip(sig.paths, sig.leaves, values):
        if leaf.kind == "scalar" or leaf.kind == "object" or (leaf.kind == "array" and not writable(x)):
            parent = tree.get(root, path[:-1])
            if type(parent) not in (list, dict):
                raise DistributedError(
                    f"{what}: the leaf {where(path)} ({leaf.describe()}) cannot be updated in "
                    f"place: it is not a writable array and its container is a "
                    f"{type(parent).__name__}",
                    hint=f"use the result: tree = {what}(tree, ..., inplace=False)")


def write_back(root: Any, sig: Signature, new: dict[int, Any], inplace: bool, what: str) -> Any:
    """Put the values ``new`` (leaf index -> value) back. In place: into their list or dict (a
    DistributedError naming the leaf when its container is immutable); otherwise into a new tree,
    returned. Returns the (possibly new) root."""
    if not new:
        return root
    if not inplace or (sig.treedef.num_leaves == 1 and sig.paths[0] == ()):
        leaves = tree.leaves(root)
        for i, v in new.items():
            leaves[i] = v
        return tree.unflatten(sig.treedef, leaves)
    for i, v in new.items():
        path = sig.paths[i]
        tree.get(root, path[:-1])[path[-1]] = v     # a list or dict: check_writable made sure
    return root
