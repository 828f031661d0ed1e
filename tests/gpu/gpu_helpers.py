"""What the GPU tests share: a test case (a loss, how to draw its arguments), its NumPy half and its
GPU half, and the comparison of the two.

Every GPU test is written as ``numpy_half`` (runs on the CPU, gives the reference) plus a GPU half
on the same values moved with ``knetc.gpu``; ``tests/test_gpu_cases_cpu.py`` runs the NumPy half
of every case on the CPU, so the cases themselves are known to be valid before a GPU sees them.
Nothing here imports cupy: the tests receive it from the ``cp`` fixture (tests/gpu/conftest.py).

Loss functions must not use NumPy arrays made outside the call (module-level constants) or built
from constants alone inside it (``np.arange(12.0)`` is evaluated once, on the host): with CuPy
arguments those would meet device arrays. Weights are therefore passed as arguments, and move
to the device with the rest.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import knetc
from knetc import tree
from knetc.errors import KnetcError
from knetc.runtime.backend import cpu, gpu

F64_TOL = dict(rtol=1e-9, atol=1e-11)
F32_TOL = dict(rtol=1e-4, atol=1e-5)


@dataclass(frozen=True)
class Case:
    """One GPU-vs-NumPy comparison: ``f`` (a module-level loss), ``make(rng)`` (its arguments,
    NumPy), ``argnums`` (what is differentiated) and the tolerances of the comparison."""
    id: str
    f: Callable
    make: Callable[[np.random.Generator], tuple]
    argnums: Any = 0
    rtol: float = F64_TOL["rtol"]
    atol: float = F64_TOL["atol"]
    to_gpu: Callable[[tuple], tuple] | None = None   # default: knetc.gpu of every argument

    def args(self) -> tuple:
        """The arguments, drawn from a generator seeded by the case's id (reproducible alone)."""
        return tuple(self.make(np.random.default_rng(zlib.crc32(self.id.encode()))))


def seeded(case_id: str) -> np.random.Generator:
    """A generator seeded by a test's name: the same draw whichever tests run before it."""
    return np.random.default_rng(zlib.crc32(case_id.encode()))


def borrowed(module, draw: Callable, *args, seed: int = 0):
    """``draw(*args)`` of another test module, with that module's global ``RNG`` swapped for a
    seeded one during the call: the draw is reproducible, and the module's own tests keep the
    random stream they would have had without us."""
    saved = module.RNG
    module.RNG = np.random.default_rng(seed)
    try:
        return draw(*args)
    finally:
        module.RNG = saved


def numpy_half(f: Callable, args: tuple, argnums=0):
    """``(gradient, loss)`` of ``f`` on NumPy arrays: the reference of every comparison."""
    return knetc.gradloss(f, argnums=argnums)(*args)


def gpu_half(f: Callable, args: tuple, argnums=0, to_gpu: Callable | None = None):
    """``(gradient, loss)`` of ``f`` on the same arguments moved to the GPU (``knetc.gpu``, or
    ``to_gpu(args)`` for arguments knetc.gpu does not move, such as batchnorm's moments)."""
    moved = tuple(gpu(list(args))) if to_gpu is None else tuple(to_gpu(args))
    return knetc.gradloss(f, argnums=argnums)(*moved)


def _host(a):
    """A device leaf that cpu() did not move (a 0-d array inside an unregistered type, say)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a


def assert_same(got, want, rtol: float, atol: float, *, cp=None, what: str = "") -> None:
    """Loss and every gradient leaf of ``got`` (a GPU result) equal ``want`` (NumPy's), with the
    same dtypes; with ``cp``: every gradient of a device array is a device array (no silent copy
    to the host)."""
    (g1, l1), (g0, l0) = got, want
    np.testing.assert_allclose(float(l1), float(l0), rtol=rtol, atol=atol, err_msg=f"{what} loss")
    leaves1 = [_host(a) for a in tree.leaves(cpu(g1))]
    leaves0 = [_host(a) for a in tree.leaves(cpu(g0))]      # fused vs unfused: both on the GPU
    assert len(leaves1) == len(leaves0), f"{what}: gradient structures differ"
    if cp is not None:
        for i, (a, b) in enumerate(zip(tree.leaves(g1), leaves0)):
            if isinstance(b, np.ndarray) and b.ndim > 0:
                assert isinstance(a, cp.ndarray), f"{what}: gradient leaf {i} is a " \
                    f"{type(a).__name__} on the GPU (a silent copy to the host?)"
    for i, (a, b) in enumerate(zip(leaves1, leaves0)):
        assert (a is None) == (b is None), f"{what}: gradient leaf {i}: {a!r} vs {b!r}"
        if b is None:
            continue
        if hasattr(b, "dtype"):
            assert np.asarray(a).dtype == np.asarray(b).dtype, \
                f"{what}: gradient leaf {i} dtype {np.asarray(a).dtype} on the GPU, " \
                f"{np.asarray(b).dtype} with NumPy"
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol,
                                   err_msg=f"{what} gradient leaf {i}")


def compare_case(case: Case, cp, calls: int = 2) -> None:
    """The GPU half of ``case`` equals its NumPy half. The GPU gradient is taken ``calls`` times:
    the first call of a new specialization may run uncompiled (tier 0), a later one runs the
    compiled (and, on the GPU, fused) code; each must agree. A KnetcError on the GPU (a function
    CuPy lacks, refused with a message) skips the case with that message: never a wrong value."""
    args = case.args()
    want = numpy_half(case.f, args, case.argnums)
    for k in range(calls):
        try:
            got = gpu_half(case.f, args, case.argnums, case.to_gpu)
        except KnetcError as e:
            import pytest
            pytest.skip(f"the GPU path refuses {case.id}: {str(e).splitlines()[0]}")
        assert_same(got, want, case.rtol, case.atol, cp=cp,
                    what=f"{case.id} (GPU call {k + 1})")


def as_f32(args: tuple) -> tuple:
    """The float64 arrays (and 0-d arrays) of ``args`` as float32; everything else unchanged."""
    def one(a):
        if isinstance(a, np.ndarray) and a.dtype == np.float64:
            return a.astype(np.float32)
        return a
    return tuple(tree.map(one, a) if isinstance(a, (list, tuple, dict)) else one(a) for a in args)
