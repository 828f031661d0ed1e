"""The NumPy halves of every GPU test case (tests/gpu/), run on the CPU.

The GPU tests compare the CuPy path with the NumPy path on the same inputs; this file proves
that the NumPy half of each of them runs and gives a finite loss and finite gradients, so a GPU
failure is about the GPU path, never about a case that was invalid to begin with. It also checks
that the GPU test modules import without CuPy.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from knetc import tree
from knetc.gradcheck import gradcheck
from knetc.runtime.backend import cpu

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
import test_gpu_fusion as GF  # noqa: E402
import test_gpu_memory as GM  # noqa: E402
import test_gpu_rules as GR  # noqa: E402
from gpu_helpers import numpy_half  # noqa: E402


def _finite(result, what):
    g, loss = result
    assert np.isfinite(float(loss)), f"{what}: loss {loss}"
    for i, leaf in enumerate(tree.leaves(g)):
        if leaf is not None:
            assert np.all(np.isfinite(np.asarray(leaf))), f"{what}: gradient leaf {i} not finite"


def test_the_cases_have_unique_ids():
    ids = [c.id for c in GR.ALL_CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(ids) > 300


@pytest.mark.parametrize("family", list(GR.FAMILIES))
def test_rule_cases_numpy_half(family):
    """Each case's NumPy half, twice (the second call may run other code: tier 0 or compiled),
    with the same answer both times."""
    for case in GR.FAMILIES[family]:
        args = case.args()
        first = numpy_half(case.f, args, case.argnums)
        _finite(first, case.id)
        second = numpy_half(case.f, args, case.argnums)
        np.testing.assert_allclose(float(second[1]), float(first[1]), rtol=1e-12, err_msg=case.id)
        for a, b in zip(tree.leaves(second[0]), tree.leaves(first[0])):
            if b is not None:
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14,
                                           err_msg=case.id)


def test_the_case_arguments_are_reproducible():
    case = GR.ALL_CASES[7]
    for a, b in zip(tree.leaves(list(case.args())), tree.leaves(list(case.args()))):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


def test_numpy_constant_case_numpy_half():
    case = GR.numpy_constant_case()
    _finite(numpy_half(case.f, case.args()), case.id)


def test_borrowed_draws_leave_the_other_modules_stream_alone():
    before = GR.R.RNG.bit_generator.state
    GR.UNARY_CASES[3].args()
    assert GR.R.RNG.bit_generator.state == before


@pytest.mark.parametrize("dtype_name", list(GF.DTYPES))
@pytest.mark.parametrize("name", list(GF.MODELS))
def test_fusion_models_numpy_half(name, dtype_name):
    result, args = GF.model_numpy_half(name, dtype_name)
    _finite(result, name)
    dtype = GF.DTYPES[dtype_name][0]
    assert all(np.asarray(g).dtype == dtype for g in result[0])
    assert gradcheck(GF.MODELS[name][0], *GF.model_args(name, "float64")[1])


def test_statement_counter_of_the_fusion_test():
    src = "def f_grad(w):\n    # c\n    a, b = _k1(x, y)\n    dx += a\n    del a\n    return dx, b\n"
    assert GF._statements(src) == 2
    assert GF.FUSED_CALL.search(src)


def test_memory_cases_numpy_half():
    w, x, y = GM.mlp_args()
    _finite(numpy_half(GM.mlp_loss, (w, x, y)), "mlp")
    assert GM.step_bound(w, x) > 4 * sum(a.nbytes for a in w)


def test_nested_structure_round_trip_numpy_half():
    w = GM.nested_structure()
    back = cpu(w)
    GM.assert_same_structure(back, w)
    assert back["layers"][0].w is not w["layers"][0].w      # a copy
