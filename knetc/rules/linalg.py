"""Rules for np.linalg: norm, inv, pinv, solve, lstsq, det, slogdet, cholesky, qr, eigh, eigvalsh,
svd and svdvals, matrix_power, multi_dot, stacked (leading batch axes) wherever NumPy accepts
them. Real inputs only.

The formulas are autograd's and JAX's (Giles 2008, "An extended collection of matrix derivative
results"; Murray 2016 for cholesky; Townsend 2016 for svd). Each is written with functions that
have rules themselves, so gradients of gradients work. Conventions where NumPy's function is not
differentiable, or where the libraries differ:

* **norm at 0.** The 2-norm (and Frobenius, and p-norms) is not differentiable at 0; like JAX
  (jax-ml/jax#21723, "working as intended") and autograd, the gradient there is ``x / norm(x)``
  = 0/0, NaN. Use ``np.sum(x * x)`` for a squared norm. The 1-norm's gradient is ``sign(x)``
  (0 at 0, as ``abs``); inf/-inf norms and the matrix 1/inf norms share the gradient equally
  between tied maxima (as ``np.max``); ``ord=0`` (a count) has gradient 0. The spectral norms
  (``ord=2``/``-2`` on matrices) need their singular value to be simple, ``'nuc'`` needs nonzero
  singular values (full rank). ``ord`` must be a constant (see ``norm_form``).
* **cholesky and eigh read one triangle.** NumPy's ``cholesky`` uses only the lower triangle
  (``upper=True``: the upper one) and ``eigh`` only the ``UPLO`` triangle. The gradient is that
  of the function NumPy computes: zero on the triangle it ignores, ``G + G.T`` below (above) the
  diagonal. For a matrix built symmetric (``a = b @ b.T``, ``(m + m.T) / 2``) this gives the same
  gradient wrt what it is built from as the symmetric gradient of JAX (and autograd's cholesky),
  and unlike that, it is what finite differences of NumPy's function give.
* **eigh and svd with repeated values.** The eigenvector (singular vector) terms divide by
  differences of eigenvalues (squared singular values); for exactly equal ones this rule uses 0
  where the formula would divide by 0, so gradients of functions of the eigenvalues (singular
  values) alone stay finite at repeated values. Vector gradients near repeated values are
  genuinely unbounded. The loss must not depend on the sign (phase) of the vectors.
* **det, slogdet and inv at singular matrices.** The gradient uses ``inv(a)`` (autograd's
  choice): NumPy raises LinAlgError for an exactly singular matrix (JAX returns the adjugate for
  det there). slogdet's ``sign`` has no gradient.
* **svd** needs ``full_matrices=False`` unless the matrix is square, and ``compute_uv=True``:
  knetc registers ``svd`` as a primitive with three results, so ``svd(a, compute_uv=False)``
  (one result) is refused; write ``np.linalg.svdvals(a)``. ``hermitian=True`` (which reads one
  triangle through eigh) is refused for svd and pinv.
* **pinv** is differentiable where the rank is constant (full rank here, in practice).
* **qr** (``mode='reduced'``, or ``'complete'`` of square matrices) of full-rank square or tall
  matrices: ``dA = (dQ + Q copyltu(M)) R^-T`` with ``M = R dR^T - dQ^T Q`` and ``copyltu(M)``
  the symmetric matrix with M's lower triangle (Liao et al. 2019, "Differentiable programming
  tensor networks"; PyTorch's rule). Wide matrices and the modes 'r' and 'raw' are refused.
* **lstsq** of a full-rank matrix: the solution through the normal equations (``A^T A`` for tall
  and square matrices, ``A A^T`` for wide ones: the minimum-norm solution); the residuals (the
  envelope theorem: ``2 r`` wrt b, ``-2 r x^T`` wrt a) and the singular values (as svdvals) have
  gradients too (second derivatives through the singular values are refused); ``rank`` has none.
* **matrix_power** with a constant integer ``n``: the gradient ``sum_k (A^T)^k G (A^T)^(n-1-k)`` is
  the top-right block of ``[[A^T, G], [0, A^T]]^n``, itself a matrix_power; negative ``n`` goes
  through ``inv(a)``.
* **multi_dot** of a list of arrays (a first or last 1-D array is a row or column vector): each
  gradient is the product of the others' transposes around d[y] (knetc's tracer currently turns a
  list of arrays of one shape into one stacked array, which is handled as such).
* **eig** and **eigvals** have no rule: their results are complex in general and knetc has no
  complex gradients.
"""
import numpy as np

from ..compiler.tape import Sym
from ..runtime.backend import array_module
from .registry import adjoint, static
from .support import is_int, ndim_of, normal_axis, refuse, shape_of, size_of, sum_to_shape

# d[...] is the template language's gradient table (see registry.py), never a Python name.
# ruff: noqa: F821


# ---------------------------------------------------------------------------------------------
# Runtime helpers (each with its own rule, for gradients of gradients)

def or_zeros(g, like):
    """``g``, or zeros shaped like ``like`` when ``g`` is None (a result the loss does not use,
    in the gradient tuple of a primitive with several results)."""
    if g is None:
        return array_module(like).zeros_like(like)
    return g


@adjoint(or_zeros)
def or_zeros_(y, g, like):
    d[g] = d[y]


def inverse_gaps(w):
    """``F[..., i, j] = 1 / (w[..., j] - w[..., i])``, and 0 where the two are equal (the
    diagonal; repeated values: see the module docstring)."""
    xp = array_module(w)
    gap = w[..., None, :] - w[..., :, None]
    zero = gap == 0
    return xp.where(zero, 0, 1 / xp.where(zero, 1, gap))


@adjoint(inverse_gaps)
def inverse_gaps_(f, w):
    t = -(f * f) * d[f]     # dF[i, j] / dw[j] = -F[i, j]^2, dF[i, j] / dw[i] = +F[i, j]^2
    d[w] = np.sum(t, axis=-2) - np.sum(t, axis=-1)


# ---------------------------------------------------------------------------------------------
# Static helpers: decide the template's branches when code is generated

def _reduced(axes, x):
    """``x``'s shape with ``axes`` kept as size 1 (norm's result with keepdims=True)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape_of(x)))


def norm_form(x, ord, axis):
    """``(kind, axes)`` for ``np.linalg.norm(x, ord, axis)``: the reduced axes (normalized, in
    the order given: (row axis, column axis) for a matrix norm) and the norm's kind."""
    if isinstance(ord, Sym):
        refuse("np.linalg.norm: ord must be a constant when differentiating: write it in the "
               "source (np.inf, 3.0) or pass an int or a string; a float held in an argument, a "
               "global or a closure variable is read when the code runs")
    nd = ndim_of(x)
    if axis is None:
        axes = tuple(range(nd))
        if ord is None:
            return "l2", axes   # the 2-norm of x.ravel(), whatever x's rank
    elif is_int(axis):
        axes = (normal_axis(axis, nd),)
    else:
        axes = tuple(normal_axis(a, nd) for a in axis)
    if len(axes) == 1:
        if isinstance(ord, str):
            refuse(f"np.linalg.norm: ord={ord!r} is a matrix norm, not a vector norm")
        if ord is None or ord == 2:
            return "l2", axes
        if ord == 1:
            return "l1", axes
        if ord == np.inf or ord == -np.inf:
            return "extreme", axes
        if ord == 0:
            return "count", axes
        return "lp", axes
    if len(axes) != 2:
        refuse(f"np.linalg.norm: no gradient rule for axis={axis!r}")
    kinds = {"fro": "l2", "nuc": "nuc", 2: "top", -2: "bottom", 1: "cols", -1: "cols",
             np.inf: "rows", -np.inf: "rows"}
    if ord is None:
        return "l2", axes
    try:
        return kinds[ord], axes
    except (KeyError, TypeError):
        refuse(f"np.linalg.norm: no gradient rule for the matrix norm ord={ord!r}")


def norm_kind(x, ord, axis) -> str:
    return norm_form(x, ord, axis)[0]


def norm_axes(x, ord, axis) -> tuple:
    return norm_form(x, ord, axis)[1]


def norm_kept(x, ord, axis) -> tuple:
    return _reduced(norm_axes(x, ord, axis), x)


def norm_moved(x, ord, axis) -> bool:
    """A matrix norm over axes other than the last two (in order): moveaxis is needed."""
    nd = ndim_of(x)
    return norm_axes(x, ord, axis) != (nd - 2, nd - 1)


def svd_form(a, full_matrices, compute_uv, hermitian) -> str:
    """'square', 'wide' (m < n) or 'tall' (m > n); refuses the forms without a rule."""
    if not compute_uv:
        refuse("np.linalg.svd(a, compute_uv=False) has no gradient rule (svd is registered with "
               "three results); use np.linalg.svdvals(a) for the singular values")
    if hermitian:
        refuse("np.linalg.svd(a, hermitian=True) has no gradient rule; use hermitian=False")
    m, n = shape_of(a)[-2:]
    if full_matrices and m != n:
        refuse("np.linalg.svd(a, full_matrices=True) of a non-square matrix has no gradient "
               "rule; use full_matrices=False")
    return "square" if m == n else "wide" if m < n else "tall"


def upper_triangle(uplo) -> bool:
    """eigh's UPLO: does NumPy read the upper triangle?"""
    if str(uplo).upper() not in ("L", "U"):
        refuse(f"np.linalg.eigh: UPLO must be 'L' or 'U', not {uplo!r}")
    return str(uplo).upper() == "U"


def pinv_check(hermitian) -> bool:
    if hermitian:
        refuse("np.linalg.pinv(a, hermitian=True) has no gradient rule; use hermitian=False")
    return True


def differs(shape, like) -> bool:
    """Must a contribution of ``shape`` be summed down to ``like``'s shape (broadcast axes)?"""
    return tuple(shape) != shape_of(like)


_NUMPY2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def solve_vector(a, b) -> bool:
    """Does np.linalg.solve take ``b`` as (a stack of) vectors? NumPy 2: only a 1-D b; NumPy 1:
    a b with one axis fewer than a."""
    return ndim_of(b) == 1 if _NUMPY2 else ndim_of(b) == ndim_of(a) - 1


def solve_shapes(a, b, y) -> tuple:
    """(shape of d[a] before summing, shape of d[b] before summing) for np.linalg.solve."""
    ys = shape_of(y)
    if solve_vector(a, b):
        return ys[:-1] + (ys[-1], ys[-1]), ys
    return ys[:-2] + (ys[-2], ys[-2]), ys


# ---------------------------------------------------------------------------------------------
# Norms

@adjoint(np.linalg.norm)
def norm(y, x, ord=None, axis=None, keepdims=False):
    if y.ndim == 0 or keepdims:     # d[y] and y broadcast against x as they are
        g = d[y]
        yk = y
    else:                           # put the reduced axes back, as size 1
        g = np.reshape(d[y], static(norm_kept(x, ord, axis)))
        yk = np.reshape(y, static(norm_kept(x, ord, axis)))
    if norm_kind(x, ord, axis) == "l2":
        d[x] = x * (g / yk)
    elif norm_kind(x, ord, axis) == "l1":
        d[x] = np.sign(x) * g
    elif norm_kind(x, ord, axis) == "extreme":     # max or min of |x|, ties sharing
        m = (np.abs(x) == yk).astype(x.dtype)
        d[x] = np.sign(x) * m * (g / np.sum(m, axis=static(norm_axes(x, ord, axis)), keepdims=True))
    elif norm_kind(x, ord, axis) == "count":       # ord=0 counts the nonzero entries
        d[x] = np.zeros_like(x)
    elif norm_kind(x, ord, axis) == "lp":          # y = (sum |x|^p)^(1/p)
        d[x] = np.sign(x) * np.abs(x) ** static(float(ord) - 1) * (g / yk ** static(float(ord) - 1))
    elif norm_kind(x, ord, axis) in ("cols", "rows"):
        # ord=±1: the max/min over columns of the column sums of |x| (ord=±inf: rows).
        if norm_kind(x, ord, axis) == "cols":
            s = np.sum(np.abs(x), axis=static(norm_axes(x, ord, axis)[0]), keepdims=True)
            if ord > 0:
                m = (s == np.max(s, axis=static(norm_axes(x, ord, axis)[1]), keepdims=True))
            else:
                m = (s == np.min(s, axis=static(norm_axes(x, ord, axis)[1]), keepdims=True))
            m = m.astype(x.dtype)
            d[x] = np.sign(x) * m * (g / np.sum(m, axis=static(norm_axes(x, ord, axis)[1]),
                                                keepdims=True))
        else:
            s = np.sum(np.abs(x), axis=static(norm_axes(x, ord, axis)[1]), keepdims=True)
            if ord > 0:
                m = (s == np.max(s, axis=static(norm_axes(x, ord, axis)[0]), keepdims=True))
            else:
                m = (s == np.min(s, axis=static(norm_axes(x, ord, axis)[0]), keepdims=True))
            m = m.astype(x.dtype)
            d[x] = np.sign(x) * m * (g / np.sum(m, axis=static(norm_axes(x, ord, axis)[0]),
                                                keepdims=True))
    else:   # nuc, top, bottom: from the SVD of the matrices (moved to the last two axes)
        if norm_moved(x, ord, axis):
            xm = np.moveaxis(x, static(norm_axes(x, ord, axis)), (-2, -1))
        else:
            xm = x
        usv = np.linalg.svd(xm, full_matrices=False)
        if norm_kind(x, ord, axis) == "nuc":
            uv = usv[0] @ usv[2]
        elif norm_kind(x, ord, axis) == "top":       # the largest singular value: u1 v1^T
            uv = usv[0][..., :, :1] @ usv[2][..., :1, :]
        else:                                        # the smallest
            uv = usv[0][..., :, -1:] @ usv[2][..., -1:, :]
        if norm_moved(x, ord, axis):
            d[x] = np.moveaxis(uv, (-2, -1), static(norm_axes(x, ord, axis))) * g
        else:
            d[x] = uv * g


# ---------------------------------------------------------------------------------------------
# Inverses and linear systems

@adjoint(np.linalg.inv)
def inv(y, a):
    yt = np.swapaxes(y, -1, -2)
    d[a] = -(yt @ d[y] @ yt)


@adjoint(np.linalg.pinv)
def pinv(y, a, rcond=None, hermitian=False, rtol=None):
    if pinv_check(hermitian):   # autograd's formula (Golub and Pereyra 1973), y = pinv(a)
        yt = np.swapaxes(y, -1, -2)
        h = y @ (yt @ d[y])
        k = (d[y] @ yt) @ y
        t = -(y @ np.swapaxes(d[y], -1, -2) @ y) + h - (h @ a) @ y + k - y @ (a @ k)
        d[a] = np.swapaxes(t, -1, -2)


@adjoint(np.linalg.solve)
def solve(y, a, b):
    at = np.swapaxes(a, -1, -2)
    if solve_vector(a, b):     # NumPy 2: a 1-D b is one vector (for every matrix of a stack)
        gb = np.linalg.solve(at, np.expand_dims(d[y], -1))[..., 0]
        ga = -(np.expand_dims(gb, -1) * np.expand_dims(y, -2))
    else:
        gb = np.linalg.solve(at, d[y])
        ga = -(gb @ np.swapaxes(y, -1, -2))
    if differs(solve_shapes(a, b, y)[0], a):
        d[a] = sum_to_shape(ga, static(shape_of(a)))
    else:
        d[a] = ga
    if differs(solve_shapes(a, b, y)[1], b):
        d[b] = sum_to_shape(gb, static(shape_of(b)))
    else:
        d[b] = gb


# ---------------------------------------------------------------------------------------------
# Determinants

@adjoint(np.linalg.det)
def det(y, a):
    if a.ndim == 2:
        d[a] = (d[y] * y) * np.swapaxes(np.linalg.inv(a), -1, -2)
    else:
        d[a] = np.expand_dims(d[y] * y, (-2, -1)) * np.swapaxes(np.linalg.inv(a), -1, -2)


@adjoint(np.linalg.slogdet, outputs=2)
def slogdet(y, a):
    g = or_zeros(d[y][1], y[1])     # the sign has no gradient
    if a.ndim == 2:
        d[a] = g * np.swapaxes(np.linalg.inv(a), -1, -2)
    else:
        d[a] = np.expand_dims(g, (-2, -1)) * np.swapaxes(np.linalg.inv(a), -1, -2)


# ---------------------------------------------------------------------------------------------
# Factorizations

@adjoint(np.linalg.cholesky)
def cholesky(y, a, upper=False):
    # Murray 2016: S = L^-T Phi(L^T dL) L^-1, Phi = lower triangle with half the diagonal.
    if upper:
        lo = np.swapaxes(y, -1, -2)
        p = y @ np.swapaxes(d[y], -1, -2)
    else:
        lo = y
        p = np.swapaxes(y, -1, -2) @ d[y]
    eye = np.eye(static(shape_of(a)[-1]), dtype=a.dtype)
    li = np.linalg.inv(lo)
    s = np.swapaxes(li, -1, -2) @ (np.tril(p) - 0.5 * (p * eye)) @ li
    if upper:   # the triangle NumPy reads: S + S^T off the diagonal, S's diagonal
        d[a] = np.triu(s + np.swapaxes(s, -1, -2), 1) + s * eye
    else:
        d[a] = np.tril(s + np.swapaxes(s, -1, -2), -1) + s * eye


@adjoint(np.linalg.eigh, outputs=2)
def eigh(y, a, UPLO="L"):
    v = y[1]
    vt = np.swapaxes(v, -1, -2)
    eye = np.eye(static(shape_of(a)[-1]), dtype=a.dtype)
    inner = inverse_gaps(y[0]) * (vt @ or_zeros(d[y][1], v)) + \
        np.expand_dims(or_zeros(d[y][0], y[0]), -1) * eye
    gs = v @ inner @ vt
    if upper_triangle(UPLO):
        d[a] = np.triu(gs + np.swapaxes(gs, -1, -2), 1) + gs * eye
    else:
        d[a] = np.tril(gs + np.swapaxes(gs, -1, -2), -1) + gs * eye


@adjoint(np.linalg.eigvalsh)
def eigvalsh(y, a, UPLO="L"):
    v = np.linalg.eigh(a, UPLO)[1]
    gs = (v * np.expand_dims(d[y], -2)) @ np.swapaxes(v, -1, -2)
    eye = np.eye(static(shape_of(a)[-1]), dtype=a.dtype)
    if upper_triangle(UPLO):
        d[a] = np.triu(gs + np.swapaxes(gs, -1, -2), 1) + gs * eye
    else:
        d[a] = np.tril(gs + np.swapaxes(gs, -1, -2), -1) + gs * eye


@adjoint(np.linalg.svd, outputs=3)
def svd(y, a, full_matrices=True, compute_uv=True, hermitian=False):
    # Townsend 2016 (autograd's grad_svd), real case; k = min(m, n), v = vh^T.
    if svd_form(a, full_matrices, compute_uv, hermitian) is None:  # refuses the forms without a rule
        pass
    u = y[0]
    s = y[1]
    vh = y[2]
    gu = or_zeros(d[y][0], u)
    gvh = or_zeros(d[y][2], vh)
    f = inverse_gaps(s * s)         # 1 / (s_j^2 - s_i^2)
    utgu = np.swapaxes(u, -1, -2) @ gu
    vtgv = vh @ np.swapaxes(gvh, -1, -2)
    j = (f * (utgu - np.swapaxes(utgu, -1, -2))) * np.expand_dims(s, -2) + \
        np.expand_dims(s, -1) * (f * (vtgv - np.swapaxes(vtgv, -1, -2))) + \
        np.expand_dims(or_zeros(d[y][1], s), -1) * np.eye(static(min(shape_of(a)[-2:])), dtype=a.dtype)
    if svd_form(a, full_matrices, compute_uv, hermitian) == "square":
        d[a] = u @ j @ vh
    elif svd_form(a, full_matrices, compute_uv, hermitian) == "wide":    # m < n
        d[a] = u @ j @ vh + (u / np.expand_dims(s, -2)) @ (gvh - np.swapaxes(vtgv, -1, -2) @ vh)
    else:                                                                 # m > n
        d[a] = u @ j @ vh + (gu - u @ utgu) @ (vh / np.expand_dims(s, -1))


if hasattr(np.linalg, "svdvals"):   # NumPy >= 2
    @adjoint(np.linalg.svdvals)
    def svdvals(y, x):
        usv = np.linalg.svd(x, full_matrices=False)
        d[x] = (usv[0] * np.expand_dims(d[y], -2)) @ usv[2]



# ---------------------------------------------------------------------------------------------
# QR

def qr_form(a, mode) -> bool:
    """Refuses the forms of np.linalg.qr without a rule."""
    m, n = shape_of(a)[-2:]
    if mode not in ("reduced", "complete") or (mode == "complete" and m != n):
        refuse(f"np.linalg.qr(a, mode={mode!r}) has no gradient rule; use mode='reduced' (the "
               "default)")
    if m < n:
        refuse(f"np.linalg.qr of a wide matrix ({m}x{n}) has no gradient rule: square and tall "
               "matrices of full rank are differentiable")
    return True


@adjoint(np.linalg.qr, outputs=2)
def qr(y, a, mode="reduced"):
    if qr_form(a, mode):
        q = y[0]
        r = y[1]
        gq = or_zeros(d[y][0], q)
        mm = r @ np.swapaxes(or_zeros(d[y][1], r), -1, -2) - np.swapaxes(gq, -1, -2) @ q
        b = gq + q @ (np.tril(mm) + np.swapaxes(np.tril(mm, -1), -1, -2))    # copyltu(M)
        d[a] = np.swapaxes(np.linalg.solve(r, np.swapaxes(b, -1, -2)), -1, -2)     # b R^-T


# ---------------------------------------------------------------------------------------------
# Least squares

def lstsq_form(a, b) -> str:
    """'tall' (m >= n: the normal equations A^T A) or 'wide'; refuses stacks."""
    if ndim_of(a) != 2:
        refuse("np.linalg.lstsq: a must be a matrix")
    m, n = shape_of(a)
    return "tall" if m >= n else "wide"


def has_residuals(y) -> bool:
    """Did lstsq return residuals (m > n and full rank)?"""
    return size_of(y[1]) > 0


def singular_value_grad(gs, a):
    """The gradient wrt ``a`` of ``sum(gs * svdvals(a))`` (0 when ``gs`` is None: the loss does
    not use lstsq's singular values)."""
    if gs is None:
        return 0.0
    xp = array_module(a)
    u, _, vh = xp.linalg.svd(a, full_matrices=False)
    return (u * gs) @ vh


@adjoint(singular_value_grad)
def singular_value_grad_(z, gs, a):
    if gs is None:
        pass
    else:
        t = static(refuse("np.linalg.lstsq: second derivatives through its singular values have "  # noqa: F841
                          "no rule; use np.linalg.svdvals(a)"))


@adjoint(np.linalg.lstsq, outputs=4)
def lstsq(y, a, b, rcond=None):
    # x (n, k), with 1-D b and x as one column; g = dL/dx
    if ndim_of(b) == 1:
        bb = np.expand_dims(b, -1)
        xx = np.expand_dims(y[0], -1)
        g = np.expand_dims(or_zeros(d[y][0], y[0]), -1)
    else:
        bb = b
        xx = y[0]
        g = or_zeros(d[y][0], y[0])
    if lstsq_form(a, b) == "tall":          # x = (A^T A)^-1 A^T b
        z = np.linalg.solve(a.T @ a, g)
        az = a @ z
        if has_residuals(y):            # residuals[j] = |b_j - A x_j|^2, x optimal
            rg = (bb - a @ xx) * (or_zeros(d[y][1], y[1]) * 2)
            gb = az + rg
            ga = (bb - a @ xx) @ z.T - az @ xx.T - rg @ xx.T
        else:
            gb = az
            ga = (bb - a @ xx) @ z.T - az @ xx.T
    else:                                   # x = A^T (A A^T)^-1 b, the minimum-norm solution
        aat = a @ a.T
        w = np.linalg.solve(aat, bb)
        u = np.linalg.solve(aat, a @ g)
        gb = u
        ga = w @ g.T - u @ xx.T - w @ (a.T @ u).T
    d[a] = ga + singular_value_grad(d[y][3], a)
    if ndim_of(b) == 1:
        d[b] = gb[:, 0]
    else:
        d[b] = gb


# ---------------------------------------------------------------------------------------------
# matrix_power, multi_dot

def power_form(n) -> int:
    """matrix_power's exponent, a constant integer (refuses a traced one)."""
    if not is_int(n):
        refuse("np.linalg.matrix_power: the exponent n must be a constant integer when "
               "differentiating")
    return int(n)


@adjoint(np.linalg.matrix_power)
def matrix_power(y, a, n):
    if power_form(n) == 0:
        pass                                # the identity: no gradient
    elif power_form(n) == 1:
        d[a] = d[y]
    elif power_form(n) > 0:                 # the top-right block of [[A^T, G], [0, A^T]]^n
        at = np.swapaxes(a, -1, -2)
        blk = np.concatenate([np.concatenate([at, d[y]], axis=-1),
                              np.concatenate([np.zeros_like(at), at], axis=-1)], axis=-2)
        d[a] = np.linalg.matrix_power(blk, n)[..., static(slice(0, shape_of(a)[-1])),
                                              static(slice(shape_of(a)[-1], None))]
    else:                                   # inv(a) ** -n: through B = inv(a), dA = -B^T dB B^T
        bt = np.swapaxes(np.linalg.inv(a), -1, -2)
        blk = np.concatenate([np.concatenate([bt, d[y]], axis=-1),
                              np.concatenate([np.zeros_like(bt), bt], axis=-1)], axis=-2)
        d[a] = -(bt @ np.linalg.matrix_power(blk, static(-power_form(n)))[
            ..., static(slice(0, shape_of(a)[-1])), static(slice(shape_of(a)[-1], None))] @ bt)


def _as_matrices(arrays):
    """multi_dot's operands as matrices: a first 1-D array is a row, a last one a column."""
    mats = [array_module(m).asarray(m) for m in arrays]
    if mats[0].ndim == 1:
        mats[0] = mats[0][None, :]
    if mats[-1].ndim == 1:
        mats[-1] = mats[-1][:, None]
    return mats


def _chain(mats):
    """The product of a list of matrices, the cheaper way round for three."""
    if len(mats) == 3:
        (p, q), (_, r), (_, s) = mats[0].shape, mats[1].shape, mats[2].shape
        if p * q * r + p * r * s > q * r * s + p * q * s:
            return mats[0] @ (mats[1] @ mats[2])
    out = mats[0]
    for m in mats[1:]:
        out = out @ m
    return out


def _grads_of_product(g, mats):
    """For the product P of ``mats`` and dL/dP = g (a matrix): dL/dmats[i] = L^T g R^T, with
    L (R) the product of the matrices before (after) i."""
    k = len(mats)
    left = [None] * k       # left[i]: product of mats[:i]
    for i in range(1, k):
        left[i] = mats[0] if i == 1 else left[i - 1] @ mats[i - 1]
    out = [None] * k
    right = None            # product of mats[i + 1:]
    for i in range(k - 1, -1, -1):
        parts = ([left[i].T] if left[i] is not None else []) + [g] + \
            ([right.T] if right is not None else [])
        out[i] = _chain(parts)
        right = mats[i] if right is None else mats[i] @ right
    return out


def _shaped(grads, arrays):
    """The gradients shaped as the operands (a stacked array of them, when ``arrays`` is one)."""
    xp = array_module(*grads)
    if not isinstance(arrays, (list, tuple)):
        return xp.stack(grads)
    return [gi.reshape(np.shape(a)) for gi, a in zip(grads, arrays)]


def multi_dot_grads(g, arrays):
    """The gradients of np.linalg.multi_dot(arrays) (a list) given the result's gradient ``g``."""
    mats = _as_matrices(arrays)
    g = array_module(g).asarray(g).reshape(mats[0].shape[0], mats[-1].shape[1])
    return _shaped(_grads_of_product(g, mats), arrays)


def multi_dot_grads_stacked(g, arrays):
    """multi_dot_grads for a stacked array of matrices (one array result)."""
    return multi_dot_grads(g, arrays)


def multi_dot_grads_back(gz, g, arrays):
    """The gradients of multi_dot_grads(g, arrays) given those of its results ``gz`` (None where
    none). multi_dot_grads(g, arrays)[i] is the gradient of <g, multi_dot(arrays)> wrt arrays[i],
    which is linear in arrays[i], so <gz[i], it> = <g, multi_dot(arrays, with gz[i] in place i)>."""
    mats = _as_matrices(arrays)
    xp = array_module(*mats)
    g2 = xp.asarray(g).reshape(mats[0].shape[0], mats[-1].shape[1])
    dg = xp.zeros_like(g2)
    darr = [xp.zeros_like(m) for m in mats]
    for i, gi in enumerate(gz):
        if gi is None:
            continue
        swapped = list(mats)
        swapped[i] = xp.asarray(gi).reshape(mats[i].shape)
        dg = dg + _chain(swapped)
        for j, gj in enumerate(_grads_of_product(g2, swapped)):
            if j != i:
                darr[j] = darr[j] + gj
    return dg.reshape(np.shape(g)), _shaped(darr, arrays)


def _multi_dot_list(arrays, out) -> bool:
    """Is ``arrays`` a list (else one stacked array)? Refuses out=."""
    if out is not None:
        refuse("np.linalg.multi_dot(..., out=...) is not differentiable (it writes in place)")
    return isinstance(arrays, (list, tuple))


@adjoint(np.linalg.multi_dot)
def multi_dot(y, arrays, out=None):
    if _multi_dot_list(arrays, out):
        d[arrays] = multi_dot_grads(d[y], arrays)
    else:
        d[arrays] = multi_dot_grads_stacked(d[y], arrays)


@adjoint(multi_dot_grads, outputs=2)
def multi_dot_grads_(z, g, arrays):
    d[g], d[arrays] = multi_dot_grads_back(d[z], g, arrays)


@adjoint(multi_dot_grads_stacked)
def multi_dot_grads_stacked_(z, g, arrays):
    d[g], d[arrays] = multi_dot_grads_back(d[z], g, arrays)


@adjoint(multi_dot_grads_back, outputs=2)
def multi_dot_grads_back_(z, gz, g, arrays):
    t = static(refuse("np.linalg.multi_dot: third derivatives have no rule; write the product "  # noqa: F841
                      "with @"))
