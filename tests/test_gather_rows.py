"""A stack of rows of one array, each taken with one int (``np.stack([E[i] for i in words])``),
is recorded as one gather ``E[np.asarray([i, ...])]`` (knetc.compiler.tape.Tape._rows_of): the
same values, one scatter of rows in the backward instead of a statement per word. Every form is
checked against central finite differences, at tier 0 and compiled (gradtest.check), and the
forms that are not such a stack (another axis, two arrays, a slice, a row used twice) still
give NumPy's result."""
import numpy as np
import pytest

import knetc
from gradtest import check, check2

RNG = np.random.default_rng(3)
E = RNG.standard_normal((7, 3))
V = RNG.standard_normal(6)


def rows_stack(E, ids):
    return np.sum(np.tanh(np.stack([E[i] for i in ids])) * np.arange(1.0, 1 + len(ids))[:, None])


def rows_array(E, ids):
    x = np.array([E[i] for i in ids])
    return np.sum(np.sin(x @ np.ones((3, 2))) ** 2)


def rows_axis_kw(E, ids):
    return np.sum(np.stack([E[i] for i in ids], axis=0) ** 3)


def rows_axis_1(E, ids):        # columns side by side: not a gather of rows
    return np.sum(np.stack([E[i] for i in ids], axis=1) * np.arange(3.0)[:, None])


def two_arrays(E, ids):         # rows of E and of 2 * E: not one array
    F = 2 * E
    return np.sum(np.cos(np.stack([E[ids[0]], F[ids[1]], E[ids[2]]])))


def rows_and_slices(E, ids):
    return np.sum(np.stack([E[ids[0]], E[1:2][0], E[ids[1]]]) ** 2)


def rows_used_again(E, ids):
    r = E[ids[0]]
    return np.sum(np.stack([r, E[ids[1]], r]) ** 2) + np.sum(r * 3.0)


def scalars_of_a_vector(V, ids):
    return np.sum(np.exp(np.stack([V[i] for i in ids])))


def constant_ids(E):
    return np.sum(np.stack([E[k] for k in (4, 0, 4, -1)]) ** 2)


@pytest.mark.parametrize("f", [rows_stack, rows_array, rows_axis_kw, rows_axis_1, two_arrays,
                               rows_and_slices, rows_used_again])
@pytest.mark.parametrize("ids", [[3, 5, 3], [0, 6, 2, 2, 1], [-1, 0, -7]])
def test_stacked_rows_gradients(f, ids):
    check(f, E.copy(), ids)


def test_scalars_and_constant_ids():
    check(scalars_of_a_vector, V.copy(), [5, 0, 5, -2])
    check(constant_ids, E.copy())


def test_second_order_through_the_gather():
    check2(lambda E, ids: np.sum(np.stack([E[i] for i in ids]) ** 3), E.copy(), [2, 4, 2])


def test_one_gather_and_one_scatter_in_the_code():
    def embed(E, ids):      # its own cache
        return rows_stack(E, ids)
    g = knetc.grad(embed)
    ids = [3, 5, 3, 1]
    src = g.source(E.copy(), ids)
    assert src.count("add_rows(") == 1, src
    assert "= np.stack(" not in src and "= E[ids_0]" not in src, src
    # one entry for every sentence of that length: the ids are data
    for other in ([1, 1, 1, 1], [6, 0, 2, 5]):
        g(E.copy(), other)
    assert knetc.cache_info(g).entries == 1


def test_not_fused_forms_keep_their_values():
    for f, ids in [(rows_axis_1, [1, 2]), (two_arrays, [0, 1, 2]), (rows_and_slices, [3, 4])]:
        gl = knetc.gradloss(f)
        _, loss = gl(E.copy(), ids)
        np.testing.assert_allclose(loss, f(E.copy(), ids), rtol=1e-12)


def rows_by_array_items(E, V, order):   # ints read from an int array: 0-d int values
    total = 0.0
    for k in range(order.shape[0]):
        i = order[k]
        total = total + np.sum(E[i] * V[i]) + V[-1] * E[i][0]
    return total


@pytest.mark.parametrize("tier0", [False, True])
def test_one_row_taken_with_an_int_value_of_an_array(tier0, monkeypatch):
    """``E[i]`` with ``i`` an element of an int array (and of a 1-D array: a scalar), negative
    ints included: the short path of recording a row (Tape._row) against finite differences."""
    import knetc.api as api
    if tier0:
        monkeypatch.setattr(api, "TIER0_AFTER", -1)
    order = np.array([3, -1, 0, 3])
    f = lambda E, V: rows_by_array_items(E, V, order)       # noqa: E731
    g = knetc.grad(f, argnums=(0, 1))
    for _ in range(2):
        dE, dV = g(E, V)
        num = knetc.numeric_grad(lambda e: f(e, V), E.copy())
        np.testing.assert_allclose(dE, num, rtol=1e-6, atol=1e-9)
        num = knetc.numeric_grad(lambda v: f(E, v), V.copy())
        np.testing.assert_allclose(dV, num, rtol=1e-6, atol=1e-9)


def test_a_row_out_of_range_names_the_line():
    def f(E, ids):
        return np.sum(E[ids[0]])
    with pytest.raises(IndexError) as e:
        knetc.grad(f)(E, [40])
    assert any("while specializing" in n for n in getattr(e.value, "__notes__", []))
