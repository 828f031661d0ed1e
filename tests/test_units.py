"""Units (knetc.compiler.units): in a function whose calls keep missing the cache, a helper
called again with arguments of one kind becomes one operation whose backward is compiled once.
Every gradient is checked against central finite differences (float64) and against the same
function with units off, on new tree shapes and values call after call; helpers that are not
self-contained (they steer on a value, read a global array, call a function that is rebound)
are inlined and stay exact."""
import numpy as np
import pytest

import knetc
from knetc import settings
from knetc.compiler import units
from knetc.gradcheck import numeric_grad

RNG = np.random.default_rng(3)


def params():
    r = np.random.default_rng(7)
    return {"E": r.standard_normal((9, 3)), "W": r.standard_normal((6, 3)) * 0.5,
            "b": r.standard_normal(3), "U": r.standard_normal((3, 4))}


def random_tree(rng, depth=0):
    if depth > 2 or rng.random() < 0.3:
        return (int(rng.integers(0, 4)), int(rng.integers(0, 9)))
    return (int(rng.integers(0, 4)), random_tree(rng, depth + 1), random_tree(rng, depth + 1))


def leaf(w, word):
    h = np.tanh(w["E"][word] + w["b"])
    return h * 0.5 + np.sin(h)


def node(w, a, b):
    h = np.tanh(np.concatenate([a, b]) @ w["W"] + w["b"])
    return h, np.sum(h * h)


def encode(w, tree):
    if len(tree) == 2:
        h = leaf(w, tree[1])
        return h, 0.0, 1
    ha, la, na = encode(w, tree[1])
    hb, lb, nb = encode(w, tree[2])
    h, extra = node(w, ha, hb)
    return h, la + lb + 0.1 * extra, na + nb + 1


def tree_loss(w, tree):
    h, extra, count = encode(w, tree)
    return (extra - knetc.logp(h @ w["U"])[tree[0]]) / count


def _agree(a, b, rtol=1e-6, atol=1e-9):
    """Equal gradients (None: a leaf the loss does not reach, zero)."""
    for k in a:
        x, y = a[k], b[k]
        if x is None or y is None:
            assert (x is None or not np.any(x)) and (y is None or not np.any(y)), k
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_trees_use_units_and_agree_with_inlined_and_finite_differences():
    w = params()
    g = knetc.grad(lambda w, t: tree_loss(w, t))
    rng = np.random.default_rng(0)
    trees = [random_tree(rng) for _ in range(40)]
    with settings.override(units=False):
        g_off = knetc.grad(lambda w, t: tree_loss(w, t))
        want = [g_off(w, t) for t in trees]
    for i, t in enumerate(trees):
        got = g(w, t)
        _agree(got, want[i])
        if i % 8 == 7:
            _agree(got, numeric_grad(tree_loss, w, t), rtol=1e-5, atol=1e-8)
    kinds = [sig[0].__name__ for sig, u in list(units._units.items()) if isinstance(u, units.Unit)]
    assert "leaf" in kinds and "node" in kinds
    assert knetc.cache_info(g).tier0 >= 5


def steering(w, x, n):
    return np.tanh(x @ w["W"][:3]) * n if n > 1 else np.sin(x) + w["b"]


def reads_global(w, x):
    return np.tanh(x * SCALE + w["b"])


SCALE = np.ones(3)


def calls(w, x):
    return inner(x + w["b"]) * 2.0


def inner(x):
    return np.tanh(x) * np.cos(x)


def other_inner(x):
    return np.sin(x) * 3.0


def chain(w, xs, ns, f):
    s = 0.0
    for x, n in zip(xs, ns):
        s = s + np.sum(f(w, x, n) if f is steering else f(w, x))
    return s


@pytest.mark.parametrize("helper", [steering, reads_global, calls])
def test_helpers_that_are_not_self_contained_or_change_stay_exact(helper):
    global SCALE, inner
    w = params()

    def wrap(w, xs, ns):
        return chain(w, xs, ns, helper)
    g = knetc.grad(wrap)
    for step in range(12):
        k = 2 + step % 3          # a new length every call: calls keep missing
        xs = [RNG.standard_normal(3) for _ in range(k)]
        ns = [int(RNG.integers(0, 3)) for _ in range(k)]
        if step == 7:
            SCALE = np.full(3, 2.0)       # a global array the helper reads changes
            inner = other_inner           # and a function it calls is rebound
        got = g(w, xs, ns)
        _agree(got, numeric_grad(wrap, w, xs, ns), rtol=1e-5, atol=1e-8)
    SCALE = np.ones(3)
    inner = _inner


_inner = inner


def gathers(w, i, j):
    return np.tanh(w["E"][i] * w["E"][j] + w["E"][0]) @ w["U"]


def test_a_helper_that_only_indexes_an_embedding_scatters_rows():
    """Rows selected twice (i == j, or 0) accumulate; the rest of the gradient stays zero."""
    w = params()

    def f(w, pairs):
        return np.sum(np.stack([gathers(w, i, j) for i, j in pairs]) ** 2)
    g = knetc.grad(f)
    for k in range(10):
        pairs = [(int(RNG.integers(0, 9)), int(RNG.integers(0, 9))) for _ in range(2 + k % 4)]
        pairs[0] = (pairs[0][0], pairs[0][0])          # the same row twice in one call
        _agree(g(w, pairs), numeric_grad(f, w, pairs), rtol=1e-5, atol=1e-8)
    u = [u for sig, u in units._units.items() if sig[0] is gathers and isinstance(u, units.Unit)]
    assert u and u[0].gathers


def bag(w, ids):
    return np.tanh(np.mean(np.stack([w["E"][i] for i in ids]), axis=0) + w["b"])


def test_a_helper_that_stacks_rows_of_an_embedding_scatters_rows():
    """``np.stack([E[i] for i in ids])`` is one gather (tape.Tape._rows_of); a unit made of it
    still returns only the rows it read, repeated ids accumulating."""
    w = params()

    def f(w, groups):
        return np.sum(np.stack([bag(w, ids) for ids in groups]) @ w["U"])
    g = knetc.grad(f)
    for k in range(12):
        groups = [tuple(int(x) for x in RNG.integers(0, 9, 3)) for _ in range(2 + k)]
        groups[0] = (groups[0][0], groups[0][0], groups[0][1])      # a row twice in one call
        _agree(g(w, groups), numeric_grad(f, w, groups), rtol=1e-5, atol=1e-8)
    u = [u for sig, u in units._units.items() if sig[0] is bag and isinstance(u, units.Unit)]
    assert u and u[0].gathers and u[0].compact


def test_units_off_is_the_same_function():
    w = params()
    rng = np.random.default_rng(4)
    trees = [random_tree(rng) for _ in range(12)]

    def make():
        return knetc.grad(lambda w, t: tree_loss(w, t))
    on = make()
    with settings.override(units=False):
        off = make()
        want = [off(w, t) for t in trees]
    for t, b in zip(trees, want):
        _agree(on(w, t), b)


def appends(w, x, out):
    h = np.tanh(x @ w["W"][:3] + w["b"])
    out.append(h)
    return np.sum(h * h) + np.sum(np.sin(h))


def test_a_helper_that_changes_its_arguments_is_never_a_unit():
    w = params()

    def f(w, xs):
        s = 0.0
        for x in xs:
            kept = []
            s = s + appends(w, x, kept) + np.sum(kept[0] ** 2)   # what it appended counts
        return s
    g = knetc.grad(f)
    for k in range(16):
        xs = [RNG.standard_normal(3) for _ in range(3 + k)]    # a new length: calls miss
        _agree(g(w, xs), numeric_grad(f, w, xs), rtol=1e-5, atol=1e-8)
    assert knetc.cache_info(g).tier0 > 10
    assert not any(isinstance(u, units.Unit) for sig, u in units._units.items()
                   if sig[0] is appends)


# -- random tree programs: units on against units off -----------------------------------------

def _program(seed: int) -> str:
    """A tree encoder whose helpers vary: an embedding read twice (the same int, another, a
    constant), a default argument, a Python int, a list or a bare array returned."""
    r = np.random.default_rng(seed)
    idx2 = ["word", "0", "word2"][r.integers(3)]
    ret = ["(h, extra)", "[h, extra, 3]", "h"][r.integers(3)]
    call = {"(h, extra)": "h, ex = nodeh(w, ha, hb)", "[h, extra, 3]": "h, ex, _ = nodeh(w, ha, hb)",
            "h": "h = nodeh(w, ha, hb)\n    ex = 0.0"}[ret]
    return f"""import numpy as np
import knetc


def leafh(w, word, word2, scale={["1.0", "0.5"][r.integers(2)]}):
    e = w["E"][word] * scale + w["E"][{idx2}] * 0.25
    return np.tanh(e @ w["A"] + w["b"]), {r.integers(3)}


def nodeh(w, a, b):
    h = np.tanh(np.concatenate([a, b]) @ w["W"] + w["b"])
    extra = np.sum(h * {["h", "a", "b"][r.integers(3)]})
    return {ret}


def enc(w, t):
    if len(t) == 2:
        h, k = leafh(w, t[1], t[0])
        return h, 0.0, 1 + k
    ha, la, na = enc(w, t[1])
    hb, lb, nb = enc(w, t[2])
    {call}
    return h, la + lb + 0.1 * ex, na + nb + 1


def loss(w, t):
    h, extra, n = enc(w, t)
    return (extra - knetc.logp(h @ w["U"])[t[0] % 3]) / n
"""


def _tree(rng, depth=0):
    if depth > 2 or rng.random() < 0.35:
        return (int(rng.integers(0, 5)), int(rng.integers(0, 7)))
    return (int(rng.integers(0, 5)), _tree(rng, depth + 1), _tree(rng, depth + 1))


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_random_tree_programs_with_units_equal_inlined(seed, tmp_path):
    import importlib.util
    path = tmp_path / f"units_prog_{seed}.py"
    path.write_text(_program(seed))
    spec = importlib.util.spec_from_file_location(f"units_prog_{seed}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(seed)
    w = {"E": rng.standard_normal((7, 3)), "A": rng.standard_normal((3, 3)),
         "b": rng.standard_normal(3), "W": rng.standard_normal((6, 3)) * 0.5,
         "U": rng.standard_normal((3, 3))}
    trees = [_tree(rng) for _ in range(30)]
    with settings.override(units=False):
        off = knetc.grad(lambda w, t: mod.loss(w, t))
        want = [off(w, t) for t in trees]
    g = knetc.grad(mod.loss)
    for t, b in zip(trees, want):
        _agree(g(w, t), b, rtol=1e-9, atol=1e-12)
    assert any(isinstance(u, units.Unit) for sig, u in list(units._units.items())
               if getattr(sig[0], "__module__", None) == mod.__name__)


def labelled(w, tree):
    """A subtree's state and loss; its leaves call ``leaf`` (itself a unit by then)."""
    if len(tree) == 2:
        h = leaf(w, tree[1])
        return h, -knetc.logp(h @ w["U"])[tree[0]]
    ha, la = labelled(w, tree[1])
    hb, lb = labelled(w, tree[2])
    h, _ = node(w, ha, hb)
    return h, la + lb - knetc.logp(h @ w["U"])[tree[0]]


def same_label(tree):
    if len(tree) == 2:
        return (tree[1] % 4, tree[1] % 4)
    return (tree[0], same_label(tree[1]), same_label(tree[2]))


def labelled_loss(w, tree):
    return labelled(w, tree)[1]


def test_a_unit_inside_a_unit_gathers_its_rows():
    """A recurring subtree's unit calls ``leaf``'s unit, which only gathers rows of E: the outer
    unit gathers them too (rows scattered, never a dense zero array of E's size per call), even
    when the same word id also labels a node (an int used twice)."""
    w = params()
    g = knetc.grad(labelled_loss)
    with settings.override(units=False):
        off = knetc.grad(labelled_loss)
    rng = np.random.default_rng(11)
    for k in range(40):
        t = random_tree(rng)
        if k % 3 == 0:          # each word also labels its leaf: those ints are shared
            t = same_label(t)
        got = g(w, t)
        _agree(got, off(w, t))
        if k % 6 == 5:
            _agree(got, numeric_grad(labelled_loss, w, t), rtol=1e-5, atol=1e-8)
    outer = [u for sig, u in units._units.items() if sig[0] is labelled and isinstance(u, units.Unit)]
    assert outer, "no subtree of labelled became a unit"
    e_pos = [j for u in outer for j, i in enumerate(u.diff_idx) if j in u.gathers]
    assert e_pos, "the outer units do not gather E's rows"
    assert any(u.compact for u in outer)


def test_a_first_call_that_makes_units_runs_at_tier_0_and_compiles_whole_when_it_comes_back():
    """A first call whose helpers are called again alike makes them units and runs at tier 0
    with them (compiling the whole function costs about as much as tracing it again, wasted on
    a tree that never comes back). The same key at once again is a model of fixed shapes: it
    is compiled written out whole, with no unit; a new tree later runs at tier 0 with units."""
    def loss(w, tree):                   # a fresh function: a cache (and counts) of its own
        return tree_loss(w, tree)
    units._units.clear()
    units._seen.clear()
    w = params()
    big = random_tree(np.random.default_rng(11))
    while len(str(big)) < 60:            # enough leaves and nodes to see each kind 3 times
        big = (1, big, random_tree(RNG))
    g = knetc.grad(loss)
    with settings.override(units=False):
        want = knetc.grad(lambda w, t: tree_loss(w, t))(w, big)
    _agree(g(w, big), want)
    assert knetc.cache_info(loss).entries == 0 and knetc.cache_info(loss).tier0 == 1
    learned = [sig[0].__name__ for sig, u in list(units._units.items()) if isinstance(u, units.Unit)]
    assert "leaf" in learned and "node" in learned
    _agree(g(w, big), want)              # back at once: compiled whole
    assert knetc.cache_info(loss).entries == 1 and knetc.cache_info(loss).tier0 == 1
    src = g.source(w, big)
    assert "leaf_unit" not in src and "node_unit" not in src
    _agree(g(w, big), want)
    assert knetc.cache_info(loss).hits == 1
    other = (2, big, (0, 3))             # a new tree: tier 0, with the units
    got = g(w, other)
    assert knetc.cache_info(loss).tier0 == 2
    with settings.override(units=False):
        want = knetc.grad(lambda w, t: tree_loss(w, t))(w, other)
    _agree(got, want)
    num = numeric_grad(lambda W: tree_loss({**w, "W": W}, other), w["W"].copy())
    np.testing.assert_allclose(got["W"], num, rtol=1e-6, atol=1e-9)


def test_a_first_call_with_units_that_tier_0_cannot_run_is_traced_again_without_them():
    """A random draw outside the helpers keeps tier 0 out (its draw must be the generated
    code's): the first call is then traced again with every helper written out, and compiled."""
    def loss(w, tree, rng):
        h, extra, count = encode(w, tree)
        mask = rng.random(h.shape) < 0.9
        return (extra - knetc.logp((h * mask) @ w["U"])[tree[0]]) / count
    units._units.clear()
    units._seen.clear()
    w = params()
    big = random_tree(np.random.default_rng(11))
    while len(str(big)) < 60:
        big = (1, big, random_tree(RNG))
    g = knetc.grad(loss)
    got = g(w, big, np.random.default_rng(5))
    info = knetc.cache_info(loss)
    assert info.tier0 == 0 and info.entries == 1
    src = g.source(w, big, np.random.default_rng(5))
    assert "leaf_unit" not in src and "node_unit" not in src
    num = numeric_grad(lambda W: loss({**w, "W": W}, big, np.random.default_rng(5)), w["W"].copy())
    np.testing.assert_allclose(got["W"], num, rtol=1e-6, atol=1e-9)


def passes_through(a, b, c):             # hands an argument back; b is read only by dead code
    dead = np.stack([np.maximum(a[::-1], -0.2), np.cosh(b), np.sin(b)])  # noqa: F841
    return c


def loss_through(w, x):
    v = np.cos(x)
    for p in w["layers"]:
        v = np.sin(v * passes_through(x, p, w["c"]))
    return np.sum(v ** 2) + np.sum(w["c"])


def test_a_unit_that_hands_an_argument_back_passes_its_gradient():
    """A helper returning one of its arguments as it is: as a unit, the gradient reaching its
    output is that argument's (it was dropped: a wrong gradient); an argument read only by
    dead code gets no gradient (None), as when inlined."""
    units._units.clear()
    units._seen.clear()
    r = np.random.default_rng(5)
    w = {"layers": [r.standard_normal(4) for _ in range(6)], "c": r.standard_normal(4)}
    x = r.standard_normal(4)
    with settings.override(tier0=True):
        import knetc.api as api
        old, api.TIER0_AFTER = api.TIER0_AFTER, -1
        try:
            got = knetc.grad(lambda w, x: loss_through(w, x))(w, x)
        finally:
            api.TIER0_AFTER = old
    assert any(isinstance(u, units.Unit) for sig, u in units._units.items()
               if sig[0] is passes_through)
    with settings.override(units=False):
        want = knetc.grad(lambda w, x: loss_through(w, x))(w, x)
    assert all(g is None for g in got["layers"]) and all(g is None for g in want["layers"])
    num = numeric_grad(lambda c: loss_through({**w, "c": c}, x), w["c"].copy())
    np.testing.assert_allclose(got["c"], num, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["c"], want["c"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("sparse", [False, True])
def test_a_tree_that_comes_back_while_trees_mostly_miss_compiles_with_its_units(sparse):
    """A second epoch over a few hundred trees: each tree comes back once its function is known
    to miss mostly. Its compiled code calls the units (a call per helper, not every helper's
    operations again); it hits afterwards, and its gradients are the inlined ones (also the
    embedding's rows, with sparse=True)."""
    def loss(w, tree):                   # a fresh function: a cache (and counts) of its own
        return tree_loss(w, tree)
    units._units.clear()
    units._seen.clear()
    w = params()
    rng = np.random.default_rng(21)
    def shape(t):                        # a tree's key: its structure (the ints are data)
        return 0 if len(t) == 2 else (shape(t[1]), shape(t[2]))
    trees, shapes = [], set()
    while len(trees) < 8:
        t = random_tree(rng)
        if len(t) == 3 and shape(t) not in shapes:
            trees.append(t)
            shapes.add(shape(t))
    g = knetc.grad(loss, sparse=sparse)
    for t in trees:
        g(w, t)
    info = knetc.cache_info(loss, sparse=sparse)
    assert info.tier0 >= 6 and info.hits == 0
    back = trees[-1]
    got = g(w, back)                     # comes back: compiled, with the units
    assert knetc.cache_info(loss, sparse=sparse).entries == info.entries + 1
    entries = [e for es in g._cache.values() for e in es]
    assert len(entries) >= 1
    assert any("_vjp(" in e.source for e in entries), entries[-1].source   # a unit's backward
    again = g(w, back)
    assert knetc.cache_info(loss, sparse=sparse).hits == info.hits + 1
    if sparse:
        assert isinstance(got["E"], knetc.SparseRows)
        got, again = ({k: v if v is None else np.asarray(v) for k, v in d.items()}
                      for d in (got, again))
    with settings.override(units=False):
        want = knetc.grad(lambda w, t: tree_loss(w, t))(w, back)
    _agree(got, want)
    _agree(again, want)
    num = numeric_grad(lambda W: tree_loss({**w, "W": W}, back), w["W"].copy())
    np.testing.assert_allclose(got["W"], num, rtol=1e-6, atol=1e-9)


def two(w, x, c):                        # two outputs: the last call's second goes nowhere
    h = np.tanh(x @ w["W2"] + w["b2"])
    return h, np.exp(h * c)


def run_two(w, x, cs):
    s = 0.0
    for c in cs[:-1]:
        x, big = two(w, x, c)
        s = s + np.sum(np.tanh(big))
    x, _ = two(w, x, cs[-1])
    return s + np.sum(x * x)


@pytest.mark.parametrize("last", [0.5, 1e4])
def test_an_output_without_gradient_takes_zeros_and_stays_exact(last, monkeypatch):
    """A call whose second output goes nowhere uses the backward of every output, given zeros
    for it (one backward compiled per kind, not per set of outputs), and its gradient is the
    inlined one. When that output overflowed (exp of 1e4), zeros times inf would be nan: the
    call is made again with a backward of its first output alone, as exact as inlined."""
    units._units.clear()
    units._seen.clear()
    made = []
    real = units.Unit._make_vjp
    monkeypatch.setattr(units.Unit, "_make_vjp", lambda self, mask: made.append(mask) or
                        real(self, mask))
    r = np.random.default_rng(8)
    w = {"W2": r.standard_normal((4, 4)) * 0.5, "b2": r.standard_normal(4)}
    x = r.standard_normal(4)
    cs = [np.full(4, 0.5)] * 6 + [np.full(4, last)]
    import knetc.api as api
    with settings.override(tier0=True), np.errstate(over="ignore", invalid="ignore"):
        old, api.TIER0_AFTER = api.TIER0_AFTER, -1
        try:
            got = knetc.grad(lambda w, x, cs: run_two(w, x, cs))(w, x, cs)
        finally:
            api.TIER0_AFTER = old
        with settings.override(units=False):
            want = knetc.grad(lambda w, x, cs: run_two(w, x, cs))(w, x, cs)
    assert made[0] == (True, True)
    assert made == ([(True, True)] if last < 1 else [(True, True), (True, False)])
    for k in w:
        assert np.all(np.isfinite(got[k]))
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14)
    if last < 1:
        num = numeric_grad(lambda W: run_two({**w, "W2": W}, x, cs), w["W2"].copy())
        np.testing.assert_allclose(got["W2"], num, rtol=1e-6, atol=1e-9)


def rnn_cell(w, h, x):
    return np.tanh(h @ w["U"] + x @ w["W"] + w["b"])


def rnn_loss(w, xs):
    h = np.zeros(3)
    for x in xs:
        h = rnn_cell(w, h, x)
    return np.sum(h ** 2)


def test_an_entry_compiled_with_units_is_written_out_whole_once_hit_often(monkeypatch):
    """Two sequence lengths alternating from the first call look like a new structure every
    call: both are compiled with the cell as a unit. Hit WRITE_OUT_AFTER times, each is compiled
    again written out whole (a unit's backward runs its forward again), with the same gradient."""
    from knetc import api
    monkeypatch.setattr(api, "WRITE_OUT_AFTER", 4)

    def loss(w, xs):                      # a fresh function: a cache of its own
        return rnn_loss(w, xs)
    units._units.clear()
    units._seen.clear()
    r = np.random.default_rng(8)
    w = {"U": r.standard_normal((3, 3)) * 0.5, "W": r.standard_normal((2, 3)),
         "b": r.standard_normal(3)}
    seqs = [r.standard_normal((6, 2)), r.standard_normal((8, 2))]
    with settings.override(units=False):
        want = [knetc.grad(lambda w, xs: rnn_loss(w, xs))(w, xs) for xs in seqs]
    g = knetc.grad(loss)
    kinds = []
    for i in range(16):
        _agree(g(w, seqs[i % 2]), want[i % 2])
        kinds.append(sorted(e.units for es in g._cache.values() for e in es))
    assert kinds[3] == [True, True]                 # compiled with units at their comebacks
    assert kinds[-1] == [False, False]              # written out whole after four hits each
    assert all("vjp" not in e.source for es in g._cache.values() for e in es)
    info = knetc.cache_info(loss)
    assert info.entries == 2 and info.misses == 4
    num = numeric_grad(lambda W: rnn_loss({**w, "W": W}, seqs[1]), w["W"].copy())
    np.testing.assert_allclose(g(w, seqs[1])["W"], num, rtol=1e-6, atol=1e-9)


def pair(w, i, j):                        # reads two rows of an embedding: a gathering unit
    return np.tanh(w["E"][i] * 0.5 + w["E"][j] @ w["U"][:, :3] + w["b"])


def pairs_loss(w, pairs):
    return sum(np.sum(pair(w, i, j) ** 2) for i, j in pairs)


def test_a_repeated_word_does_not_compile_a_units_backward_again(monkeypatch):
    """A unit that gathers two rows of an embedding takes a row per int argument, the same
    word twice included: its backward has one shape per kind, so a call whose two words are
    equal reuses it (rows made unique had another shape: another compile inside a hit)."""
    from knetc import api

    def loss(w, pairs):
        return pairs_loss(w, pairs)
    units._units.clear()
    units._seen.clear()
    w = params()
    g = knetc.grad(loss)
    r = np.random.default_rng(12)
    for n in (5, 6, 7, 8):               # new lengths: misses, at tier 0, make the unit
        g(w, [(int(a), int(b)) for a, b in r.integers(0, 9, (n, 2)) if a != b] or [(0, 1)])
    distinct = [(1, 2), (3, 4), (5, 6), (7, 8), (0, 2)]
    g(w, distinct)
    g(w, distinct)                        # back: compiled (with the unit), then a hit
    made = []
    real = api.compile_trace
    monkeypatch.setattr(api, "compile_trace", lambda tr: made.append(tr) or real(tr))
    repeated = [(1, 1), (3, 3), (5, 6), (7, 7), (0, 0)]
    got = g(w, repeated)
    assert made == [] and knetc.cache_info(loss).hits >= 2
    with settings.override(units=False):
        want = knetc.grad(lambda w, p: pairs_loss(w, p))(w, repeated)
    _agree(got, want)
    num = numeric_grad(lambda E: pairs_loss({**w, "E": E}, repeated), w["E"].copy())
    np.testing.assert_allclose(got["E"], num, rtol=1e-6, atol=1e-9)
