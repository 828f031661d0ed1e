"""Rules for np.linalg: norm, inv, pinv, solve, det, slogdet, cholesky, eigh, eigvalsh, svd and
svdvals, stacked (leading batch axes) wherever NumPy accepts them. Real inputs only.

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
"""
import numpy as np

from ..compiler.tape import Sym
from ..runtime.backend import array_module
from .registry import adjoint, static
from .support import is_int, ndim_of, normal_axis, refuse, shape_of, sum_to_shape

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
