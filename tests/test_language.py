"""Each Python language feature that knetc specializes, differentiated correctly.

Gradients are compared with central finite differences in float64 (or with a hand-derived
gradient where that is clearer).
"""
import math

import numpy as np
import pytest

import knetc


# ---------------------------------------------------------------------------------------------
# helpers

def _float_leaves(value, path=()):
    """(path, leaf) for every float leaf (float ndarray or Python float) of a nested structure."""
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.floating):
            yield path, value
    elif type(value) is float:
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _float_leaves(v, path + (i,))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _float_leaves(v, path + (k,))


def _get(value, path):
    for p in path:
        value = value[p]
    return value


def _replace(value, path, new):
    """A copy of ``value`` (a structure) with the leaf at ``path`` replaced."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        out = list(value)
        out[head] = _replace(value[head], rest, new)
        return out
    if isinstance(value, tuple):
        out = list(value)
        out[head] = _replace(value[head], rest, new)
        return tuple(out)
    out = dict(value)
    out[head] = _replace(value[head], rest, new)
    return out


def numgrad(f, args, argnum=0, eps=1e-6, **kwargs):
    """Central finite differences of f wrt args[argnum], with the same structure (None for
    non-float leaves)."""
    args = list(args)
    w = args[argnum]

    def call(wnew):
        a = list(args)
        a[argnum] = wnew
        return float(f(*a, **kwargs))

    def leaf_grad(path, leaf):
        if type(leaf) is float:
            up, down = call(_replace(w, path, leaf + eps)), call(_replace(w, path, leaf - eps))
            return (up - down) / (2 * eps)
        g = np.zeros(leaf.shape, np.float64)
        for i in np.ndindex(leaf.shape):
            for sgn in (1, -1):
                x = leaf.astype(np.float64).copy()
                x[i] += sgn * eps
                g[i] += sgn * call(_replace(w, path, x))
        return g / (2 * eps)

    def build(value, path=()):
        if isinstance(value, np.ndarray):
            return leaf_grad(path, value) if np.issubdtype(value.dtype, np.floating) else None
        if type(value) is float:
            return leaf_grad(path, value)
        if isinstance(value, list):
            return [build(v, path + (i,)) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return tuple(build(v, path + (i,)) for i, v in enumerate(value))
        if isinstance(value, dict):
            return {k: build(v, path + (k,)) for k, v in value.items()}
        return None

    return build(w)


def assert_same(got, want, rtol=1e-5, atol=1e-7):
    """Structures equal, arrays close (None matches None; Python floats stay Python floats)."""
    if want is None:
        assert got is None, f"expected None, got {got!r}"
    elif isinstance(want, list):
        assert type(got) is list and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            assert_same(g, w, rtol, atol)
    elif isinstance(want, tuple):
        assert type(got) is tuple and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            assert_same(g, w, rtol, atol)
    elif isinstance(want, dict):
        assert type(got) is dict and set(got) == set(want), (got, want)
        for k in want:
            assert_same(got[k], want[k], rtol, atol)
    elif type(want) is float:
        assert type(got) is float, f"expected a Python float, got {type(got).__name__}"
        assert got == pytest.approx(want, rel=rtol, abs=atol)
    else:
        got = np.asarray(got)
        assert got.shape == np.shape(want), (got.shape, np.shape(want))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def check(f, *args, argnum=0, rtol=1e-5, atol=1e-7, **kwargs):
    """knetc's gradient of f equals central differences; returns knetc's gradient."""
    got = knetc.grad(f, argnum=argnum)(*args, **kwargs)
    want = numgrad(f, args, argnum, **kwargs)
    assert_same(got, want, rtol, atol)
    return got


rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------------------------------
# functions: helpers, closures, lambdas, nested defs, recursion

def _layer(w, x):
    return np.tanh(w @ x)


def _twolayer(w, x):
    h = _layer(w[0], x)
    return np.sum(_layer(w[1], h) ** 2)


def test_helper_functions():
    check(_twolayer, [randn(3, 4), randn(2, 3)], randn(4, 5))


def _make_closure_loss(scale, bias):
    def loss(w, x):
        return np.sum(np.sin(w * x) * scale + bias)
    return loss


def test_closure_reads_enclosing_variables():
    loss = _make_closure_loss(2.5, randn(3))
    check(loss, randn(3), randn(3))


def _closure_array_loss(w, x):
    c = np.cos(x)

    def inner(v):
        return np.sum(v * c)          # reads `c` from the enclosing (specialized) frame
    return inner(w * w)


def test_closure_inside_function():
    check(_closure_array_loss, randn(4), randn(4))


def _lambda_loss(w, x):
    act = lambda z: z * np.tanh(z)   # noqa: E731
    sq = lambda a, b=2: a ** b       # noqa: E731
    return np.sum(sq(act(w @ x)))


def test_lambdas():
    check(_lambda_loss, randn(2, 3), randn(3))


def _nested_def_loss(w, x):
    def layer(v, k):
        def nonlin(z):
            return 1 / (1 + np.exp(-z))
        return nonlin(v * k)
    h = layer(x, w)
    return np.sum(layer(h, w))


def test_nested_defs():
    check(_nested_def_loss, randn(5), randn(5))


def _tree_encode(tree, E, W):
    if isinstance(tree, int):
        return E[tree]
    left, right = tree
    return np.tanh(W @ np.concatenate([_tree_encode(left, E, W), _tree_encode(right, E, W)]))


def _tree_loss(params, tree):
    E, W = params
    return np.sum(_tree_encode(tree, E, W) ** 2)


def test_recursion_over_tree():
    E, W = randn(6, 3), randn(3, 6) * 0.5
    tree = ((0, 1), (2, (3, 5)))
    g = check(_tree_loss, (E, W), tree)
    assert np.all(g[0][4] == 0)       # leaf 4 is not in the tree


def _factorial_like(w, n):
    if n == 0:
        return w
    return np.sin(_factorial_like(w, n - 1)) * w


def _recursive_depth_loss(w, n):
    return np.sum(_factorial_like(w, n))


def test_recursion_on_int():
    check(_recursive_depth_loss, randn(3), 4)


class _Act:
    def __init__(self, kind):
        self.kind = kind

    def __call__(self, z):
        return np.tanh(z) if self.kind == "tanh" else self.relu(z)

    def relu(self, z):
        return np.maximum(z, 0.0)


class _Chain:
    def __init__(self, *acts):
        self.acts = list(acts)

    def apply(self, ws, x):
        for w, act in zip(ws, self.acts):
            x = act(w @ x)
        return x


def _chain_loss(ws, model, x):
    return np.sum(model.apply(ws, x) ** 2)


def test_methods_and_callable_objects():
    model = _Chain(_Act("tanh"), _Act("relu"), _Act("tanh"))
    check(_chain_loss, [randn(4, 3), randn(4, 4), randn(2, 4)], model, randn(3))


# ---------------------------------------------------------------------------------------------
# loops

def _for_range(w, x):
    s = 0.0
    for i in range(3):
        s = s + np.sum(np.sin(w * x[i]))
    for i in range(1, 6, 2):
        s = s + np.sum(w * x[i])
    return s


def test_for_range():
    check(_for_range, randn(4), randn(6, 4))


def _for_list_tuple(ws, x):
    s = 0
    for w in ws:                       # list
        x = np.tanh(w @ x)
    for k in (1.0, 2.0, 3.0):          # tuple
        s = s + k * np.sum(x)
    return s


def test_for_list_and_tuple():
    check(_for_list_tuple, [randn(3, 3), randn(3, 3)], randn(3))


def _for_dict(w, x):
    s = 0
    for k, v in w.items():
        s = s + np.sum(v * x[k])
    for k in w.keys():
        s = s + np.sum(np.cos(w[k]))
    for v in w.values():
        s = s + np.sum(v ** 3)
    for k in w:
        s = s + np.sum(w[k]) * 0.5
    return s


def test_for_dict_items_keys_values():
    check(_for_dict, {"a": randn(3), "b": randn(3)}, {"a": randn(3), "b": randn(3)})


def _for_zip_enumerate(ws, xs):
    s = 0
    for w, x in zip(ws, xs):
        s = s + np.sum(w * x)
    for i, w in enumerate(ws):
        s = s + (i + 1) * np.sum(w ** 2)
    for i, (w, x) in enumerate(zip(ws, xs), start=2):
        s = s + i * np.sum(np.sin(w) * x)
    return s


def test_for_zip_enumerate():
    check(_for_zip_enumerate, [randn(2), randn(2), randn(2)], [randn(2), randn(2), randn(2)])


def _for_array_rows(w, x):
    s = 0
    for row in x:                      # iterate an array's first axis
        s = s + np.sum(np.tanh(w @ row))
    for wr in w:                       # ... of the parameter itself
        s = s + np.sum(wr ** 2)
    return s


def test_for_over_array_first_axis():
    check(_for_array_rows, randn(3, 4), randn(5, 4))


def _while_loss(w, n):
    i = 0
    h = w
    while i < n:
        h = np.sin(h) + w
        i += 1
    return np.sum(h)


def test_while():
    check(_while_loss, randn(3), 4)


def _break_continue(w, xs):
    s = 0
    for i, x in enumerate(xs):
        if i == 1:
            continue
        if i == 4:
            break
        s = s + np.sum(w * x) * (i + 1)
    j = 0
    while True:
        j += 1
        if j % 2:
            continue
        s = s + np.sum(w ** j)
        if j >= 4:
            break
    return s


def test_break_continue():
    check(_break_continue, randn(3), [randn(3) for _ in range(6)])


def _for_else(w, xs, stop):
    s = 0
    for i, x in enumerate(xs):
        if i == stop:
            break
        s = s + np.sum(w * x)
    else:
        s = s + np.sum(np.exp(w))       # only when the loop was not broken
    return s


def test_for_else():
    xs = [randn(3) for _ in range(3)]
    w = randn(3)
    g_broken = check(_for_else, w, xs, 1)
    np.testing.assert_allclose(g_broken, xs[0])
    g_full = check(_for_else, w, xs, 10)
    np.testing.assert_allclose(g_full, xs[0] + xs[1] + xs[2] + np.exp(w))


# ---------------------------------------------------------------------------------------------
# branches

def _if_python(w, mode, scale):
    if mode == "sin":
        y = np.sin(w)
    elif mode == "cos":
        y = np.cos(w)
    else:
        y = w ** 2
    y = y * 2 if scale > 1 else y
    return np.sum(y)


def test_if_elif_ternary_on_python_values():
    w = randn(4)
    np.testing.assert_allclose(knetc.grad(_if_python)(w, "sin", 2), 2 * np.cos(w))
    np.testing.assert_allclose(knetc.grad(_if_python)(w, "cos", 0), -np.sin(w))
    np.testing.assert_allclose(knetc.grad(_if_python)(w, "sq", 0), 2 * w)
    check(_if_python, w, "sq", 3)


def _if_array(w, x):
    if np.sum(x) > 0:
        return np.sum(w * x)
    else:
        return np.sum(w ** 2)


def _ternary_array(w, x):
    return np.sum(np.sin(w)) if np.max(w * x) > 0.5 else np.sum(np.cos(w))


def test_if_on_array_values_guards_and_recompiles():
    g = knetc.grad(_if_array)
    w = randn(3)
    x_pos, x_neg = np.array([1.0, 2.0, 3.0]), np.array([-1.0, -2.0, -3.0])
    np.testing.assert_allclose(g(w, x_pos), x_pos)
    np.testing.assert_allclose(g(w, x_neg), 2 * w)        # guard fails: the other branch
    np.testing.assert_allclose(g(w, x_pos), x_pos)        # and back again
    np.testing.assert_allclose(g(w, x_neg * 2), 2 * w)
    assert sum(len(v) for v in g._cache.values()) == 2    # one per branch, both kept


def test_ternary_on_array_values():
    g = knetc.grad(_ternary_array)
    w = np.array([1.0, 0.2, -0.3])
    np.testing.assert_allclose(g(w, np.array([1.0, 1.0, 1.0])), np.cos(w))
    np.testing.assert_allclose(g(w, np.array([0.1, 0.1, 0.1])), -np.sin(w))
    np.testing.assert_allclose(g(w, np.array([1.0, 0.0, 0.0])), np.cos(w))


def _elif_array(w):
    s = np.sum(w)
    if s > 1:
        return np.sum(w ** 3)
    elif s > -1:
        return np.sum(w ** 2)
    return np.sum(-w)


def test_elif_on_array_values():
    g = knetc.grad(_elif_array)
    for w in (np.array([1.0, 2.0]), np.array([0.1, 0.2]), np.array([-1.0, -2.0]),
              np.array([0.3, 0.1]), np.array([3.0, 0.5])):
        check(_elif_array, w)
        np.testing.assert_allclose(g(w), numgrad(_elif_array, (w,)), rtol=1e-5)


def _while_array(w, x):
    h = w * x
    while np.sum(h * h) > 1.0:      # the number of iterations depends on the data
        h = h * 0.5
    return np.sum(h)


def test_while_on_array_values_guards_and_recompiles():
    g = knetc.grad(_while_array)
    w = np.ones(2)
    for x, halvings in [((1.0, 1.0), 1), ((10.0, 10.0), 4), ((0.1, 0.1), 0), ((1.0, 1.0), 1)]:
        x = np.array(x)
        np.testing.assert_allclose(g(w, x), x * 0.5 ** halvings)
    assert sum(len(v) for v in g._cache.values()) == 3


def _branch_on_float(a, x):
    if a > 0:
        return a * np.sum(x)
    return -a * a * np.sum(x)


def test_branch_on_python_float_parameter():
    g = knetc.grad(_branch_on_float)
    x = np.array([1.0, 2.0])
    assert g(2.0, x) == pytest.approx(3.0)
    assert g(-2.0, x) == pytest.approx(12.0)
    assert g(0.5, x) == pytest.approx(3.0)


def _format_loss(w):
    s = f"{np.sum(w):.2f}|{'a'!r}"            # text whose length depends on the value
    return np.sum(w) * len(s)


def test_f_string_of_an_array_value_is_guarded():
    g = knetc.grad(_format_loss)
    np.testing.assert_allclose(g(np.ones(2)), [8.0, 8.0])          # "2.00|'a'"
    np.testing.assert_allclose(g(np.ones(2) * 10), [9.0, 9.0])     # "20.00|'a'"


_lam2, _lam3 = (lambda w: np.sum(w * 2)), (lambda w: np.sum(w * 3))   # noqa: E731


def test_several_lambdas_on_one_line():
    w = randn(2)
    np.testing.assert_allclose(knetc.grad(_lam2)(w), [2.0, 2.0])
    np.testing.assert_allclose(knetc.grad(_lam3)(w), [3.0, 3.0])


def _lambda_factory(k):
    if k:
        a, b = (lambda w: np.sum(w * k)), (lambda w: np.sum(w * k * 10))   # noqa: E731
    return a, b


def test_several_indented_lambdas_on_one_line():
    a, b = _lambda_factory(2.0)
    w = randn(2)
    np.testing.assert_allclose(knetc.grad(a)(w), [2.0, 2.0])
    np.testing.assert_allclose(knetc.grad(b)(w), [20.0, 20.0])


def _late_binding(w):
    k = 1.0
    f = lambda v: v * k          # noqa: E731
    k = 3.0                      # closures see the variable, not its value at definition
    fs = [lambda v: v * i for i in range(3)]   # all use i == 2, as in Python
    return np.sum(f(w)) + sum(np.sum(g(w)) for g in fs)


def test_closure_late_binding():
    np.testing.assert_allclose(knetc.grad(_late_binding)(randn(2)), [9.0, 9.0])


# ---------------------------------------------------------------------------------------------
# assignment forms, literals, comprehensions

def _unpacking(w, x):
    a, b = w
    (c, d), e = (a * x, b), np.sin(a)
    first, *rest = [a, b, c, d]
    *init, last = (a, b, c)
    s = np.sum(first * e) + np.sum(last)
    for r in rest:
        s = s + np.sum(r)
    for i in init:
        s = s + np.sum(i ** 2)
    return s


def test_tuple_unpacking_and_starred():
    check(_unpacking, (randn(3), randn(3)), randn(3))


def _augassign_int_start(w, xs):
    s = 0
    for x in xs:
        s += np.sum(x * w)
    s *= 2
    s -= np.sum(w)
    s /= 3
    return s


def _augassign_float_start(w, xs):
    s = 1.5
    for x in xs:
        s += x * w
    return np.sum(s ** 2)


def test_augmented_assignment_of_names():
    xs = [randn(3) for _ in range(3)]
    w = randn(3)
    g = check(_augassign_int_start, w, xs)
    np.testing.assert_allclose(g, (2 * sum(xs) - 1) / 3)
    check(_augassign_float_start, w, xs)


def _augassign_in_helper(w, xs):
    def accumulate(v, x):
        acc = v * 1.0
        acc += np.tanh(x * v)       # a fresh local array: rebinding is the in-place result
        acc *= x
        return acc
    s = 0.0
    for x in xs:
        s += np.sum(accumulate(w, x))
    return s


def test_augmented_assignment_inside_helpers():
    check(_augassign_in_helper, randn(3), [randn(3), randn(3)])


def _augassign_keeps_dtype(w, x):
    s = w * 2                       # float32
    s += x                          # float64 x: in place, s stays float32
    return np.sum(s * s)


def test_augmented_assignment_keeps_dtype_like_numpy():
    w, x = randn(3).astype(np.float32), randn(3)
    g, loss = knetc.gradloss(_augassign_keeps_dtype)(w, x)
    assert loss.dtype == np.float32
    assert loss == _augassign_keeps_dtype(w, x)
    s = w * 2 + x.astype(np.float32)
    np.testing.assert_allclose(g, 4 * s, rtol=1e-5)


def _augassign_alias_name(w, x):
    s = w * 2
    t = s
    s += x                          # in Python this changes t too
    return np.sum(t)


def _augassign_alias_caller(w, x):
    def bump(v):
        v += x                      # changes the caller's `a`
        return v
    a = w * 2
    b = bump(a)
    return np.sum(a) + np.sum(b)


def _augassign_view_of_argument(w, x):
    s = w[0]
    s += x                          # changes the caller's w
    return np.sum(s)


def _augassign_container(w, x):
    s = w * 2
    hs = [s]
    s += x                          # changes hs[0]
    return np.sum(hs[0])


@pytest.mark.parametrize("f", [_augassign_alias_name, _augassign_alias_caller,
                               _augassign_view_of_argument, _augassign_container])
def test_augmented_assignment_of_shared_arrays_is_a_mutation(f):
    with pytest.raises(knetc.MutationError) as e:
        knetc.grad(f)(randn(2, 3), randn(3))
    assert "s += x" in str(e.value) or "v += x" in str(e.value)


def _literals(w, x):
    lst = [w, w * 2, x]
    tup = (np.sin(w), np.cos(w))
    d = {"a": w * x, "b": tup, "c": [lst[0], 3]}
    return np.sum(d["a"]) + np.sum(d["b"][1]) + np.sum(d["c"][0] ** 2) * d["c"][1] + np.sum(lst[1])


def test_list_tuple_dict_literals():
    check(_literals, randn(3), randn(3))


def _comprehensions(w, xs):
    hs = [np.tanh(w @ x) for x in xs]
    sq = {i: np.sum(h ** 2) for i, h in enumerate(hs) if i != 1}
    pairs = [a * b for a in (1.0, 2.0) for b in hs[:2]]
    return sum(sq.values()) + np.sum(pairs[3]) + sum(np.sum(p) for p in pairs)


def _score(w, x):
    return np.sum(np.sin(w @ x))


def _genexpr(w, xs):
    return sum(_score(w, x) for x in xs)


def test_list_dict_comprehensions():
    check(_comprehensions, randn(2, 3), [randn(3) for _ in range(3)])


def test_generator_expression_sum():
    check(_genexpr, randn(2, 3), [randn(3) for _ in range(4)])


def _builtins_python(w, xs, sizes):
    n = len(xs)
    total = sum(sizes)
    s = 0
    for i in range(min(n, 3)):
        s = s + np.sum(w * xs[i]) * max(sizes)
    for a, b in zip(sizes, xs):
        s = s + a * np.sum(w * b)
    for i, x in enumerate(xs):
        if isinstance(x, np.ndarray) and isinstance(sizes[i], int):
            s = s + abs(-i) * np.sum(w ** 2)
    return s / total + len(w) * np.sum(w) + max(1, 2) * min(3.0, 4.0)


def test_builtins_on_python_values():
    check(_builtins_python, randn(3), [randn(3) for _ in range(4)], [1, 2, 3, 4])


# ---------------------------------------------------------------------------------------------
# arguments

def _kw_default(w, x, scale=2.0, shift=0.0):
    return np.sum((w * x * scale + shift) ** 2)


def test_keyword_and_default_arguments():
    w, x = randn(3), randn(3)
    check(_kw_default, w, x)
    check(_kw_default, w, x, scale=0.5)
    check(_kw_default, w, x=x, shift=1.0)
    np.testing.assert_allclose(knetc.grad(_kw_default)(w, x, 3.0), 18.0 * w * x * x)


def _kwonly_inner(v, k=1.0, *, power=2, shift=0.0):
    return np.sum((v * k + shift) ** power)


def _kwonly_caller(w, x):
    return (_kwonly_inner(w) + _kwonly_inner(w, 2.0, power=3) +
            _kwonly_inner(w * x, shift=1.0, k=0.5) + _kwonly_inner(v=w, power=1))


def test_keyword_only_arguments_of_called_functions():
    w, x = randn(3), randn(3)
    check(_kwonly_caller, w, x)


def _star_inner(*ws, **opts):
    s = 0
    for w in ws:
        s = s + np.sum(w ** opts.get("p", 2)) * opts["k"]
    for name in sorted(opts):
        s = s + len(name) * np.sum(ws[0])
    return s


def _star_caller(w, x, rest):
    s = _star_inner(w, x, *rest, k=1.5, **{"p": 3})
    return s + _star_inner(*[w, w * x], k=0.5)


def test_star_args_and_kwargs_of_called_functions():
    check(_star_caller, randn(3), randn(3), [randn(3), randn(3)])


def _kwonly_top(w, x, *, power=2, shift=0.0):
    return np.sum((w * x + shift) ** power)


def _star_top(w, x, *rest, **kw):
    s = np.sum(w * x)
    for r in rest:
        s = s + np.sum(np.sin(w * r))
    for k, v in kw.items():
        s = s + np.sum(w ** 2) * v
    return s


def test_keyword_only_parameters_of_the_differentiated_function():
    w, x = randn(3), randn(3)
    check(_kwonly_top, w, x)
    check(_kwonly_top, w, x, power=3, shift=1.0)


def test_star_parameters_of_the_differentiated_function():
    check(_star_top, randn(3), randn(3), randn(3), randn(3), a=2.0, b=3)


# ---------------------------------------------------------------------------------------------
# array methods, attributes, indexing

def _methods(w, x):
    y = w @ x                               # (3, 5)
    s = y.sum(axis=0).sum() + y.mean() + y.max()
    s = s + y.T.reshape(5, 3)[1].sum() + y.reshape((15,)).mean(axis=0)
    s = s + np.sum(y.sum(axis=1, keepdims=True) * w)
    n, m = y.shape
    s = s * (n + m + y.ndim) + y.astype(np.float64).sum(axis=-1).max()
    return s + y.T.mean(axis=1).sum()


def test_array_methods_and_attributes():
    w, x = randn(3, 4), randn(4, 5)
    check(_methods, w, x)


def _indexing(w, idx, mask):
    s = np.sum(w[1:3, ::2] ** 2) + np.sum(w[None, 0]) + np.sum(w[..., -1] * 3)
    s = s + np.sum(w[idx] ** 2)          # idx repeats a row: gradients accumulate
    s = s + np.sum(np.sin(w[mask]))
    s = s + np.sum(w[:, None, 1:2]) + w[2, 3] * w[0, 0]
    return s


def test_indexing_slices_none_ellipsis_intarrays_masks():
    w = randn(4, 5)
    idx = np.array([0, 2, 2, 3, 0, 0])
    mask = w > 0
    check(_indexing, w, idx, mask)
    # hand check of the repeated integer-array index: row 0 appears three times
    g2 = knetc.grad(lambda w, idx: np.sum(w[idx]))(w, idx)
    np.testing.assert_allclose(g2[:, 0], [3, 0, 2, 1])


def _embedding_loss(E, tokens):
    return np.sum(np.tanh(E[tokens]).sum(axis=0) ** 2)


def test_embedding_lookup_repeated_indices():
    check(_embedding_loss, randn(5, 3), np.array([1, 1, 4, 1, 0]))


# ---------------------------------------------------------------------------------------------
# parameter structures

def _mlp(w, x, y):
    h = np.tanh(w["W1"] @ x + w["b1"])
    p = w["W2"] @ h + w["b2"]
    return np.mean((p - y) ** 2)


def test_dict_parameters():
    w = {"W1": randn(4, 3), "b1": randn(4, 1), "W2": randn(2, 4), "b2": randn(2, 1)}
    g = check(_mlp, w, randn(3, 5), randn(2, 5))
    assert list(g) == ["W1", "b1", "W2", "b2"]


class Spec:
    """A non-array leaf inside a parameter structure."""

    def __init__(self, act):
        self.act = act


def _nested(p, x):
    layers, cfg = p["layers"], p["cfg"]
    h = x
    for (W, b), spec in zip(layers, cfg["specs"]):
        h = W @ h + b
        if spec.act == "tanh":
            h = np.tanh(h)
    return np.sum(h ** 2) * cfg["scale"] + cfg["n"] * np.sum(layers[0][1])


def test_nested_structures_and_non_float_leaves():
    p = {"layers": [(randn(3, 2), randn(3)), (randn(1, 3), randn(1))],
         "cfg": {"specs": (Spec("tanh"), Spec("id")), "scale": 0.7, "n": 2}}
    x = randn(2)
    g = knetc.grad(_nested)(p, x)
    want = numgrad(_nested, (p, x))
    assert_same(g, want)
    assert g["cfg"]["specs"] == (None, None)
    assert g["cfg"]["n"] is None
    assert type(g["cfg"]["scale"]) is float
    assert type(g["layers"]) is list and type(g["layers"][0]) is tuple


def _pyfloat(a, x):
    return np.sum(np.sin(a * x)) + a ** 2


def test_python_float_parameter():
    x = randn(4)
    g = knetc.grad(_pyfloat)(0.3, x)
    assert type(g) is float
    assert g == pytest.approx(np.sum(np.cos(0.3 * x) * x) + 0.6)


def _pyfloat_only(a):
    return a * a * 3.0 + math.sin(0) + a


def test_python_float_pure_python_function():
    g = knetc.grad(_pyfloat_only)(2.0)
    assert type(g) is float and g == pytest.approx(13.0)


def _float_tuple_params(p, x):
    a, b = p
    return np.sum(np.tanh(a * x + b))


def test_python_float_leaves_in_tuple():
    check(_float_tuple_params, (0.5, -0.2), randn(3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64(dtype):
    w, x = randn(3, 4).astype(dtype), randn(4).astype(dtype)
    g = knetc.grad(_layer_loss)(w, x)
    assert g.dtype == dtype
    want = numgrad(_layer_loss, (w.astype(np.float64), x.astype(np.float64)))
    tol = 1e-3 if dtype == np.float32 else 1e-6
    np.testing.assert_allclose(g, want, rtol=tol, atol=tol)


def _layer_loss(w, x):
    return np.sum(np.tanh(w @ x) ** 2)


def test_argnum_1():
    w, x = randn(3, 4), randn(4)
    check(_layer_loss, w, x, argnum=1)
    g = knetc.grad(_mlp, argnum=2)({"W1": randn(4, 3), "b1": randn(4, 1), "W2": randn(2, 4),
                                     "b2": randn(2, 1)}, randn(3, 5), randn(2, 5))
    assert g.shape == (2, 5)


def test_gradloss_returns_loss():
    w, x = randn(3, 4), randn(4)
    g, loss = knetc.gradloss(_layer_loss)(w, x)
    assert float(loss) == pytest.approx(_layer_loss(w, x))
    assert_same(g, numgrad(_layer_loss, (w, x)))


@knetc.grad
def _decorated(w, x):
    return np.sum(np.exp(w) * x)


def test_decorator_form():
    w, x = randn(3), randn(3)
    np.testing.assert_allclose(_decorated(w, x), np.exp(w) * x)
    np.testing.assert_allclose(_decorated(w, 2 * x), 2 * np.exp(w) * x)


@knetc.grad(argnum=1)
def _decorated_argnum(w, x):
    return np.sum(np.exp(w) * x)


def test_decorator_with_argnum():
    w, x = randn(3), randn(3)
    np.testing.assert_allclose(_decorated_argnum(w, x), np.exp(w))


@knetc.differentiable
def _kept(w, x):
    return np.sum(np.exp(w) * x)


def test_differentiable_keeps_the_function():
    w, x = randn(3), randn(3)
    np.testing.assert_allclose(_kept(w, x), np.sum(np.exp(w) * x))        # still the function
    np.testing.assert_allclose(_kept.grad(w, x), np.exp(w) * x)
    g, loss = _kept.gradloss(w, x)
    np.testing.assert_allclose(g, np.exp(w) * x)
    np.testing.assert_allclose(loss, np.sum(np.exp(w) * x))
    assert "def _kept_grad(w, x):" in _kept.source(w, x)
    entries = list(_kept._g._cache.values())
    assert len(entries) == 1 and len(entries[0]) == 1   # grad, gradloss, source: one compile


def _calls_kept(w, x):
    return _kept(w, x) * 2.0


def test_differentiable_inside_a_differentiated_function():
    w, x = randn(3), randn(3)
    np.testing.assert_allclose(knetc.grad(_calls_kept)(w, x), 2 * np.exp(w) * x)


# ---------------------------------------------------------------------------------------------
# the char-LM side effect: a loss that stores its hidden state into a list argument

def _charlm_loss(w, x, h):
    a = np.tanh(w["Wh"] @ h[0] + w["Wx"] @ x)
    b = np.tanh(w["Wc"] @ a + h[1])
    h[0], h[1] = knetc.getval(a), knetc.getval(b)
    return np.sum(b ** 2)


def test_store_into_list_argument_on_every_call():
    w = {"Wh": randn(3, 3) * 0.5, "Wx": randn(3, 2), "Wc": randn(3, 3) * 0.5}
    g = knetc.grad(_charlm_loss)
    h = [np.zeros(3), np.zeros(3)]
    ref = [np.zeros(3), np.zeros(3)]
    for step in range(4):
        x = randn(2)
        want_g = numgrad(lambda w: _charlm_loss(w, x, [r.copy() for r in ref]), (w,))
        got = g(w, x, h)
        assert_same(got, want_g)
        _charlm_loss(w, x, ref)           # the reference update, in plain NumPy
        np.testing.assert_allclose(h[0], ref[0])
        np.testing.assert_allclose(h[1], ref[1])
    assert not np.allclose(h[0], 0)


def _store_then_branch(w, x, h):
    h[0] = h[0] + x                   # a store, then a branch on array values
    if np.sum(x) > 0:
        return np.sum(w * h[0])
    return np.sum(w)


def test_store_is_not_repeated_when_a_guard_fails():
    g = knetc.grad(_store_then_branch)
    h = [np.zeros(2)]
    w = np.array([1.0, 2.0])
    np.testing.assert_allclose(g(w, np.ones(2), h), [1.0, 1.0])
    np.testing.assert_allclose(h[0], [1.0, 1.0])
    np.testing.assert_allclose(g(w, -np.ones(2), h), [1.0, 1.0])   # first entry's guard fails
    np.testing.assert_allclose(h[0], [0.0, 0.0])                   # stored once, not twice
    np.testing.assert_allclose(g(w, np.ones(2) * 2, h), [2.0, 2.0])
    np.testing.assert_allclose(h[0], [2.0, 2.0])


def _chained_store(w, h, d):
    h[0] = b = w * 2
    d["state"] = [b, 3]
    d["state"][1] = np.sum(b)         # a new list, changed after it was stored
    return np.sum(b)


def test_chained_assignment_store_and_later_changes():
    h, d = [None], {"state": None}
    w = np.array([1.0, 2.0])
    np.testing.assert_allclose(knetc.grad(_chained_store)(w, h, d), [2.0, 2.0])
    np.testing.assert_allclose(h[0], [2.0, 4.0])
    np.testing.assert_allclose(d["state"][0], [2.0, 4.0])
    assert d["state"][1] == pytest.approx(6.0)


# ---------------------------------------------------------------------------------------------
# grad of grad

def _cube(x):
    return x ** 3


def _sin(x):
    return np.sin(x)


def _poly(x):
    return 2.0 * x ** 4 - x * x


def test_grad_of_grad_python_float():
    d2 = knetc.grad(knetc.grad(_cube))
    assert d2(2.0) == pytest.approx(12.0)
    assert d2(-0.5) == pytest.approx(-3.0)
    assert knetc.grad(knetc.grad(_sin))(0.7) == pytest.approx(-np.sin(0.7))
    assert knetc.grad(knetc.grad(_poly))(1.5) == pytest.approx(24 * 1.5 ** 2 - 2)
    assert knetc.grad(knetc.grad(knetc.grad(_cube)))(2.0) == pytest.approx(6.0)


def test_grad_of_grad_zero_d_array():
    d2 = knetc.grad(knetc.grad(_sin))
    for v in (0.7, -1.2):
        g = d2(np.array(v))
        assert np.shape(g) == ()
        np.testing.assert_allclose(g, -np.sin(v))
    np.testing.assert_allclose(knetc.grad(knetc.grad(_cube))(np.array(1.5)), 9.0)


def _guard_then_rename(w, x):
    flags = [np.sum(x) > 0]
    if flags[0]:
        s = np.sum(w)
    else:
        s = np.sum(w * 2)
    f = flags[0]  # noqa: F841 - renames the guarded temporary after the guard was written
    return s


def test_guard_on_a_value_renamed_later():
    g = knetc.grad(_guard_then_rename)
    w = np.ones(2)
    np.testing.assert_allclose(g(w, np.ones(2)), [1.0, 1.0])
    np.testing.assert_allclose(g(w, -np.ones(2)), [2.0, 2.0])   # the guard fails, recompiles
    np.testing.assert_allclose(g(w, np.ones(2)), [1.0, 1.0])    # and the first entry still fits


def _passthrough(x):
    return x * 1.0


def _passthrough_grad(dy):
    return dy     # returns its argument: the compiler must not accumulate into it in place


@knetc.adjoint(_passthrough)
def _passthrough_rule(y, x):
    d[x] = _passthrough_grad(d[y])  # noqa: F821  (d is the template's gradient table)


def _uses_passthrough_twice(p, c):
    x, w = p
    return np.sum((_passthrough(x) + _passthrough(x) + w) * c)


def test_user_rule_returning_its_argument_is_not_updated_in_place():
    x, w, c = randn(4), randn(4), randn(4)
    dx, dw = knetc.grad(_uses_passthrough_twice)([x, w], c)
    np.testing.assert_allclose(dx, 2 * c)
    np.testing.assert_allclose(dw, c)      # shares d[add] with x's contributions


def _mixed_precision(w, x):
    return np.sum(np.tanh(x @ w["a"]) * w["b"]) + np.sum(w["c"] * x[0])


def test_gradients_have_their_parameters_dtype_when_data_is_wider():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))                      # float64 data
    w = {"a": rng.standard_normal((3, 2)).astype(np.float32),
         "b": rng.standard_normal(2).astype(np.float32),
         "c": rng.standard_normal(3)}                    # one float64 parameter
    g = knetc.grad(_mixed_precision)(w, x)
    assert g["a"].dtype == np.float32 and g["b"].dtype == np.float32 and g["c"].dtype == np.float64
    want = knetc.numeric_grad(_mixed_precision, w, x)
    for k in w:
        np.testing.assert_allclose(g[k], want[k], rtol=1e-5, atol=1e-6)
