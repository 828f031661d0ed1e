"""Rules for np.linalg, special functions (knetc.erf, knetc.gelu, scipy.special) and the
classification losses of sequence models (nll over (B, T, V) scores, one-hot constants).

Every check compares knetc's gradient with central finite differences in float64, twice (the
second call runs the compiled code; see tests/test_rules.py). Inputs are well conditioned:
matrices are shifted away from singular ones, SPD matrices (b @ b.T + n I) feed cholesky, eigh
and solve, and losses of eigen- and singular vectors are invariant to their signs.
"""
import math
import subprocess
import sys

import numpy as np
import pytest

import knetc
from knetc.rules.registry import lookup
from gradtest import check, second_order

try:
    import scipy.special as sp
except ImportError:  # pragma: no cover - scipy is optional
    sp = None

RNG = np.random.default_rng(2024)


def square(shape):
    """A random matrix (stack) comfortably away from singular."""
    n = shape[-1]
    return RNG.normal(size=shape) + 3.0 * np.eye(n)


def spd(shape):
    b = RNG.normal(size=shape)
    return b @ np.swapaxes(b, -1, -2) + shape[-1] * np.eye(shape[-1])


SHAPES = [(2, 2), (3, 3), (4, 4), (2, 3, 3)]
W = np.sin(np.arange(1.0, 49.0)).reshape(2, 4, 6)   # fixed weights for vector losses


# ---------------------------------------------------------------------------------------------
# Inverses, systems, determinants

def inv_(a): return np.sum(np.sin(np.linalg.inv(a)))
def det_(a): return np.sum(np.sin(np.linalg.det(a))) + np.sum(np.linalg.det(a) ** 2) * 0.1
def slogdet_(a):
    sign, logdet = np.linalg.slogdet(a)
    return np.sum(np.sin(logdet)) + np.sum(sign) * 0.0
def logdet_only(a): return np.sum(np.linalg.slogdet(a)[1] * 1.5)
def solve_(a, b): return np.sum(np.sin(np.linalg.solve(a, b)))
def pinv_(a): return np.sum(np.sin(np.linalg.pinv(a)) * W[0, : a.shape[-1], : a.shape[-2]])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("f", [inv_, det_, slogdet_, logdet_only, pinv_])
def test_square(f, shape):
    check(f, square(shape))


@pytest.mark.parametrize("shapes", [((3, 3), (3,)), ((3, 3), (3, 2)), ((2, 3, 3), (2, 3, 2)),
                                    ((2, 3, 3), (3,)), ((2, 3, 3), (3, 2)), ((3, 3), (2, 3, 2)),
                                    ((4, 4), (4, 1))], ids=str)
def test_solve(shapes):
    sa, sb = shapes
    check(solve_, spd(sa) + 0.3 * RNG.normal(size=sa), RNG.normal(size=sb), argnums=(0, 1))


@pytest.mark.parametrize("shape", [(3, 2), (2, 3), (2, 4, 3)], ids=str)
def test_pinv_rectangular(shape):
    check(pinv_, RNG.normal(size=shape))


# ---------------------------------------------------------------------------------------------
# Factorizations

def chol(a): return np.sum(np.sin(np.linalg.cholesky(a)) * W[0, : a.shape[-1], : a.shape[-1]])
def chol_upper(a): return np.sum(np.sin(np.linalg.cholesky(a, upper=True)))
def chol_of_sym(b): return np.sum(np.sin(np.linalg.cholesky(b @ b.T + 3.0 * np.eye(3))))


def eigh_(a):
    w, v = np.linalg.eigh(a)
    return np.sum(np.sin(w)) + np.sum(v * v * W[0, : a.shape[-1], : a.shape[-1]])


def eigh_upper(a):
    w, v = np.linalg.eigh(a, UPLO="U")
    return np.sum(w * w) + np.sum((v[..., 0:1] * v) ** 2 * W[1, : a.shape[-1], : a.shape[-1]])


def eigh_values(a): return np.sum(np.sin(np.linalg.eigh(a)[0]))
def eigh_vectors(a): return np.sum(np.linalg.eigh(a)[1] ** 2 * W[0, : a.shape[-1], : a.shape[-1]])
def eigvalsh_(a): return np.sum(np.sin(np.linalg.eigvalsh(a)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("f", [chol, chol_upper, eigh_, eigh_upper, eigh_values, eigh_vectors, eigvalsh_])
def test_symmetric(f, shape):
    # NumPy reads one triangle: finite differences of any entry agree with the rule.
    check(f, spd(shape) + 0.1 * RNG.normal(size=shape))


def test_cholesky_of_a_built_symmetric_matrix():
    check(chol_of_sym, RNG.normal(size=(3, 3)))


def test_eigh_values_at_repeated_eigenvalues_stay_finite():
    g = knetc.grad(eigh_values)(np.eye(3) * 2.0)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, np.eye(3) * np.cos(2.0), atol=1e-12)


def svd_(a):
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    k = s.shape[-1]
    return (np.sum(np.sin(s)) + np.sum(u * u * W[0, : a.shape[-2], :k])
            + np.sum(vh * vh * W[1, :k, : a.shape[-1]]) + np.sum(np.sin((u * s[..., None, :]) @ vh)))


def svd_values(a): return np.sum(np.sin(np.linalg.svd(a, full_matrices=False)[1]))
def svd_square_full(a):
    u, s, vh = np.linalg.svd(a)
    return np.sum(np.sin(s)) + np.sum(u ** 2 * W[0, :3, :3])
def svdvals_(x): return np.sum(np.sin(np.linalg.svdvals(x)))


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 4), (2, 3, 3), (3, 2), (2, 4), (2, 4, 3), (2, 3, 4)],
                         ids=str)
def test_svd(shape):
    check(svd_, RNG.normal(size=shape))
    check(svd_values, RNG.normal(size=shape))
    if hasattr(np.linalg, "svdvals"):
        check(svdvals_, RNG.normal(size=shape))


def test_svd_square_default_full_matrices():
    check(svd_square_full, RNG.normal(size=(3, 3)))


def svd_no_uv(a): return np.sum(np.linalg.svd(a, compute_uv=False)[0])
def svd_full_rect(a): return np.sum(np.linalg.svd(a)[1])


def test_svd_forms_without_rule_are_refused():
    with pytest.raises(knetc.NoRuleError, match="full_matrices=False"):
        knetc.grad(svd_full_rect)(RNG.normal(size=(3, 2)))
    # svd is a primitive with three results: compute_uv=False (one result) is refused
    with pytest.raises(knetc.NoRuleError, match="svdvals"):
        knetc.grad(svd_no_uv)(RNG.normal(size=(3, 3)))


# ---------------------------------------------------------------------------------------------
# Norms

def norm_(x, ord, axis, keepdims):
    return np.sum(np.sin(np.linalg.norm(x, ord, axis, keepdims)) * 1.5)


NORMS = [  # (shape, ord, axis); inf orders are below (a float argument is not a constant)
    ((5,), None, None), ((5,), 2, None), ((5,), 1, None), ((5,), 3, None), ((5,), 0, None),
    ((3, 4), None, None), ((3, 4), "fro", None), ((3, 4), "nuc", None), ((3, 4), 2, None),
    ((3, 4), -2, None), ((3, 4), 1, None), ((3, 4), -1, None), ((3, 4), None, 1), ((3, 4), 2, 0),
    ((3, 4), 1, -1), ((3, 4), 3, 1), ((3, 4), "fro", (1, 0)), ((3, 4), "nuc", (1, 0)),
    ((2, 3, 4), None, None), ((2, 3, 4), None, (1, 2)), ((2, 3, 4), "nuc", (0, 2)),
    ((2, 3, 4), 2, (2, 1)), ((2, 3, 4), -2, (1, 2)), ((2, 3, 4), 1, (0, 1)), ((2, 3, 4), 4, -1),
    ((2, 3, 4), None, (0, 2))]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape,ord,axis", NORMS, ids=str)
def test_norm(shape, ord, axis, keepdims):
    x = (RNG.uniform(0.5, 2.0, size=shape) * RNG.choice([-1.0, 1.0], size=shape))
    check(norm_, x, ord, axis, keepdims)


def norm_inf(x): return np.sum(np.sin(np.linalg.norm(x, np.inf, axis=-1)))
def norm_ninf(x): return np.sum(np.sin(np.linalg.norm(x, -np.inf, axis=0, keepdims=True)))
def norm_inf_vec(x): return np.sin(np.linalg.norm(x[0], np.inf))
def norm_inf_mat(x): return np.sin(np.linalg.norm(x, np.inf))
def norm_ninf_mat(x): return np.sum(np.sin(np.linalg.norm(x, -np.inf, axis=(1, 0), keepdims=True)))


@pytest.mark.parametrize("f", [norm_inf, norm_ninf, norm_inf_vec, norm_inf_mat, norm_ninf_mat])
def test_norm_inf(f):
    x = RNG.uniform(0.5, 2.0, size=(3, 4)) * RNG.choice([-1.0, 1.0], size=(3, 4))
    check(f, x)


def norm_plain(x): return np.linalg.norm(x)


def test_norm_at_zero_is_nan_as_jax():
    # JAX and autograd: x / norm(x) at 0 is 0/0 (jax-ml/jax#21723: "working as intended").
    with np.errstate(invalid="ignore", divide="ignore"):
        g = knetc.grad(norm_plain)(np.zeros(3))
    assert np.all(np.isnan(g))
    np.testing.assert_allclose(knetc.grad(norm_plain)(np.array([3.0, 4.0])), [0.6, 0.8])


INF = np.inf


def norm_global_float(x): return np.linalg.norm(x, INF)


def test_norm_order_read_at_run_time_is_refused():
    with pytest.raises(knetc.NoRuleError, match="ord must be a constant"):
        knetc.grad(norm_global_float)(RNG.normal(size=4))


# ---------------------------------------------------------------------------------------------
# Gradients of gradients

def chol_local(a):   # second-order losses read no global array
    return np.sum(np.sin(np.linalg.cholesky(a)) * np.arange(1.0, 10.0).reshape(3, 3))


def eigh_local(a):
    w, v = np.linalg.eigh(a)
    return np.sum(np.sin(w)) + np.sum(v * v * np.arange(1.0, 10.0).reshape(3, 3))


@pytest.mark.parametrize("f,make", [
    (det_, lambda: square((3, 3))), (inv_, lambda: square((3, 3))), (inv_, lambda: square((2, 3, 3))),
    (slogdet_, lambda: square((3, 3))), (chol_local, lambda: spd((3, 3))),
    (eigh_local, lambda: spd((3, 3))), (chol_upper, lambda: spd((2, 3, 3))),
    (svd_values, lambda: RNG.normal(size=(3, 2)))], ids=lambda v: getattr(v, "__name__", ""))
def test_second_order(f, make):
    check(second_order(f), make(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ord,axis", [(None, None), (None, 1), ("nuc", None), (1, 1), (3, 0)], ids=str)
def test_second_order_norm(ord, axis):
    x = RNG.uniform(0.5, 2.0, size=(3, 4)) * RNG.choice([-1.0, 1.0], size=(3, 4))
    check(second_order(norm_, ord, axis, False), x, rtol=1e-4, atol=1e-6)


def test_second_order_solve():
    b = RNG.normal(size=(3, 2))
    check(second_order(solve_, b), spd((3, 3)), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# float32 gradients stay float32

def solve_f32(a): return np.sum(np.sin(np.linalg.solve(a, a[..., 0])))
def norms_f32(a):
    return (np.linalg.norm(a) + np.linalg.norm(a, "nuc") + np.sum(np.linalg.norm(a, 3, axis=0))
            + np.linalg.norm(a, np.inf) + np.linalg.norm(a, -1))
def erf_gelu_f32(a): return np.sum(knetc.erf(a) + knetc.gelu(a) + knetc.gelu(a, approximate="tanh"))


F32 = [inv_, det_, slogdet_, chol, eigh_, svd_, eigvalsh_, solve_f32, norms_f32, erf_gelu_f32]


@pytest.mark.parametrize("f", F32, ids=lambda f: f.__name__)
def test_float32(f):
    a = spd((3, 3)).astype(np.float32)
    g = knetc.grad(f)(a)
    assert g.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# knetc.erf and knetc.gelu (no SciPy)

def test_erf_values():
    x = np.concatenate([np.linspace(-7, 7, 2001), np.geomspace(1e-300, 6.0, 200),
                        -np.geomspace(1e-300, 6.0, 200), [0.0, 0.5, 1.0, 1.5, 30.0]])
    ref = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(knetc.erf(x), ref, rtol=1e-14, atol=0)
    assert knetc.erf(np.inf) == 1.0 and knetc.erf(-np.inf) == -1.0 and np.isnan(knetc.erf(np.nan))
    assert knetc.erf(0.5) == pytest.approx(math.erf(0.5), rel=1e-15)
    assert knetc.erf(np.float32([0.5, 2.0])).dtype == np.float32
    np.testing.assert_allclose(knetc.erf(np.float32([0.5, -2.0])), [math.erf(0.5), math.erf(-2.0)],
                               rtol=1e-6)
    np.testing.assert_allclose(knetc.erf(np.array([1, -2])), [math.erf(1), math.erf(-2)], rtol=1e-15)


def test_gelu_values():
    x = np.linspace(-12, 12, 801)
    exact = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    np.testing.assert_allclose(knetc.gelu(x), exact, rtol=1e-13, atol=1e-300)
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(knetc.gelu(x, approximate="tanh"), tanh, rtol=1e-14)
    assert abs(knetc.gelu(x, approximate="tanh") - knetc.gelu(x)).max() < 1e-3
    with pytest.raises(ValueError, match="approximate"):
        knetc.gelu(x, approximate="fast")


def erf_(x): return np.sum(np.sin(knetc.erf(x)))
def gelu_(x): return np.sum(np.sin(knetc.gelu(x)))
def gelu_tanh(x): return np.sum(np.sin(knetc.gelu(x, approximate="tanh")))
def gelu_mlp(w, x): return np.sum(knetc.gelu(w[1] @ knetc.gelu(w[0] @ x)) ** 2)


@pytest.mark.parametrize("f", [erf_, gelu_, gelu_tanh])
def test_erf_gelu_gradients(f):
    x = RNG.normal(size=(3, 4)) * 2.0
    check(f, x)
    check(second_order(f), x, rtol=1e-4, atol=1e-6)


def test_gelu_in_a_model():
    w = [RNG.normal(size=(5, 4)), RNG.normal(size=(3, 5))]
    check(gelu_mlp, w, RNG.normal(size=(4, 6)), argnums=(0, 1))


def test_special_module_without_scipy(tmp_path):
    # Blocking scipy: knetc imports, erf/gelu have rules, no scipy rule is registered.
    script = tmp_path / "noscipy.py"
    script.write_text(
        "import sys\n"
        "sys.modules['scipy'] = None\n"
        "sys.modules['scipy.special'] = None\n"
        "import numpy as np\n"
        "import knetc\n"
        "from knetc.rules import special\n"
        "assert special.sp is None\n"
        "def loss(x):\n"
        "    return np.sum(knetc.gelu(x))\n"
        "g = knetc.grad(loss)(np.ones(3))\n"
        "assert abs(g[0] - 1.0833154705876864) < 1e-12, g\n")
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# scipy.special (skipped without scipy)

def sp_unary(x, name): return np.sum(np.sin(getattr(sp, name)(x)))


SP_UNARY = [("erf", None), ("erfc", None), ("erfinv", (-0.9, 0.9)), ("ndtr", None), ("log_ndtr", None),
            ("expit", None), ("log_expit", None), ("logit", (0.1, 0.9)), ("gammaln", (0.5, 3.0)),
            ("digamma", (0.5, 3.0)), ("psi", (0.5, 3.0))]


def _data(rng, shape=(3, 4)):
    return RNG.normal(size=shape) if rng is None else RNG.uniform(*rng, size=shape)


@pytest.mark.parametrize("name,rng", SP_UNARY, ids=[n for n, _ in SP_UNARY])
def test_scipy_unary(name, rng):
    pytest.importorskip("scipy.special")
    check(sp_unary, _data(rng), name)


def sp_gammaln_sum(z): return np.sum(sp.gammaln(z))
def sp_gammaln2(x): return np.sum(np.sin(knetc.grad(sp_gammaln_sum)(x)))
def sp_polygamma(x): return np.sum(np.sin(sp.polygamma(2, x)))
def sp_xlogy(x1, x2): return np.sum(np.sin(sp.xlogy(x1, x2)))
def sp_xlog1py(x1, x2): return np.sum(np.sin(sp.xlog1py(x1, x2)))
def sp_lse(x, axis, keepdims): return np.sum(np.sin(sp.logsumexp(x, axis=axis, keepdims=keepdims)))
def sp_lse_b(x, b): return np.sum(np.sin(sp.logsumexp(x, axis=1, b=b)))
def sp_softmax(x, axis): return np.sum(sp.softmax(x, axis=axis) * W[0, :3, :4])
def sp_log_softmax(x, axis): return np.sum(sp.log_softmax(x, axis=axis) * W[0, :3, :4])


def test_scipy_more():
    pytest.importorskip("scipy.special")
    x = RNG.uniform(0.5, 3.0, size=(3, 4))
    check(sp_gammaln2, x, rtol=1e-4, atol=1e-6)      # gammaln -> digamma -> polygamma(1)
    check(sp_polygamma, x)
    check(second_order(sp_unary, "digamma"), x, rtol=1e-4, atol=1e-6)
    check(sp_xlogy, RNG.normal(size=(3, 4)), x, argnums=(0, 1))
    check(sp_xlogy, RNG.normal(size=(4,)), x, argnums=(0, 1))
    check(sp_xlog1py, RNG.normal(size=(3, 1)), x, argnums=(0, 1))
    for axis in (None, 0, 1, (0, 1)):
        for keepdims in (False, True):
            check(sp_lse, RNG.normal(size=(3, 4)), axis, keepdims)
    check(sp_lse_b, RNG.normal(size=(3, 4)), x, argnums=(0, 1))
    check(sp_lse_b, RNG.normal(size=(3, 4)), x[0], argnums=(0, 1))
    for axis in (None, 0, -1):
        check(sp_softmax, RNG.normal(size=(3, 4)), axis)
        check(sp_log_softmax, RNG.normal(size=(3, 4)), axis)


def test_scipy_float32():
    pytest.importorskip("scipy.special")
    x = RNG.uniform(0.2, 0.8, size=(3, 4)).astype(np.float32)
    for name, _ in SP_UNARY:
        assert knetc.grad(sp_unary)(x, name).dtype == np.float32, name


# ---------------------------------------------------------------------------------------------
# Sequence losses: nll over (B, T, V) scores, one-hot constants

def nll_avg(scores, labels): return knetc.nll(scores, labels)


def nll_total(scores, labels):
    total, count = knetc.nll(scores, labels, average=False)
    return total / count


def lm_loss(w, x, labels):   # (B, T, D) @ (D, V): scores (B, T, V), labels (B, T)
    return knetc.nll(np.tanh(x @ w[0]) @ w[1], labels)


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 2, 3, 4), (4,), (6, 3)], ids=str)
def test_nll_any_rank(shape):
    scores = RNG.normal(size=shape)
    labels = RNG.integers(0, shape[-1], size=shape[:-1]) if len(shape) > 1 else 2
    lp = knetc.logp(scores)
    expected = -np.mean(np.take_along_axis(lp, np.reshape(labels, shape[:-1] + (1,)), -1))
    assert knetc.nll(scores, labels) == pytest.approx(expected, rel=1e-12)
    total, count = knetc.nll(scores, labels, average=False)
    assert count == int(np.prod(shape[:-1])) and total / count == pytest.approx(expected, rel=1e-12)
    check(nll_avg, scores, labels)
    check(nll_total, scores, labels)


def test_nll_sequence_model_and_second_order():
    w = [RNG.normal(size=(4, 6)), RNG.normal(size=(6, 5))]
    x, labels = RNG.normal(size=(2, 3, 4)), RNG.integers(0, 5, size=(2, 3))
    check(lm_loss, w, x, labels)
    check(second_order(nll_avg, labels), RNG.normal(size=(2, 3, 5)), rtol=1e-4, atol=1e-6)


def test_nll_label_count_mismatch():
    with pytest.raises(ValueError, match="labels"):
        knetc.nll(RNG.normal(size=(2, 3, 5)), np.zeros((2, 2), dtype=int))


def onehot_take(scores, labels):
    onehot = np.take(np.eye(scores.shape[-1]), labels, axis=0)
    return -np.sum(onehot * knetc.logp(scores)) / labels.size


def onehot_eye(scores, labels):
    onehot = np.eye(scores.shape[-1])[labels]
    return -np.sum(onehot * knetc.logp(scores)) / labels.size


def test_onehot_take_is_a_constant():
    scores, labels = RNG.normal(size=(2, 3, 5)), RNG.integers(0, 5, size=(2, 3))
    check(onehot_take, scores, labels)
    np.testing.assert_allclose(onehot_take(scores, labels), knetc.nll(scores, labels), rtol=1e-12)


@pytest.mark.xfail(reason="needs the specializer to record indexing of a constant array by a traced "
                          "index (knetc/compiler/specialize.py, e_subscript)", strict=False)
def test_onehot_eye_is_a_constant():
    scores, labels = RNG.normal(size=(2, 3, 5)), RNG.integers(0, 5, size=(2, 3))
    check(onehot_eye, scores, labels)
    np.testing.assert_allclose(knetc.grad(onehot_eye)(scores, labels),
                               knetc.grad(nll_avg)(scores, labels), rtol=1e-12)


def test_rules_registered():
    for fn in (np.linalg.norm, np.linalg.inv, np.linalg.solve, np.linalg.det, np.linalg.slogdet,
               np.linalg.cholesky, np.linalg.eigh, np.linalg.svd, np.linalg.pinv, knetc.erf, knetc.gelu):
        assert lookup(fn) is not None and lookup(fn).differentiable, fn
    assert lookup(np.linalg.slogdet).outputs == 2 and lookup(np.linalg.svd).outputs == 3
