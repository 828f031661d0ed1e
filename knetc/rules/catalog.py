"""The catalog of supported functions, generated from the rule registry so that it cannot drift.

``python -m knetc.rules.catalog`` prints the Markdown table the README carries between the
markers ``<!-- catalog -->`` and ``<!-- /catalog -->`` (``--write README.md`` rewrites them);
``missing()`` lists the everyday NumPy functions that still have no rule.
"""
from __future__ import annotations

import operator
import sys

import numpy as np

from . import load_all, registry

_OPERATORS = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
              operator.pow: "**", operator.matmul: "@", operator.neg: "unary -",
              operator.getitem: "x[...]", operator.mod: "%", operator.floordiv: "//",
              operator.lt: "<", operator.le: "<=", operator.gt: ">", operator.ge: ">=",
              operator.eq: "==", operator.ne: "!=", operator.and_: "&", operator.or_: "|",
              operator.xor: "^", operator.invert: "~", operator.pos: "unary +"}
_NAMESPACES = [("np", np), ("np.linalg", np.linalg), ("np.random", np.random)]
# The NumPy functions users reach for, by NumPy's documentation sections: those without a rule
# are listed by ``missing()`` (and a test keeps that list honest).
EVERYDAY = """
add subtract multiply divide true_divide power float_power negative positive abs absolute fabs
sqrt cbrt square exp exp2 expm1 log log2 log10 log1p logaddexp logaddexp2 reciprocal sign
sin cos tan arcsin arccos arctan arctan2 hypot sinh cosh tanh arcsinh arccosh arctanh sinc
deg2rad rad2deg degrees radians maximum minimum fmax fmin clip where mod remainder fmod
divmod modf nan_to_num heaviside copysign
sum mean prod max min amax amin var std median average cumsum cumprod diff ptp nansum nanmean
nanmax nanmin nanprod nanstd nanvar quantile percentile nanmedian
dot vdot matmul inner outer tensordot einsum kron cross trace diag diagonal tril triu
reshape transpose swapaxes moveaxis rollaxis squeeze expand_dims ravel broadcast_to
concatenate stack hstack vstack dstack column_stack append split array_split hsplit vsplit
dsplit repeat tile pad roll flip flipud fliplr rot90 atleast_1d atleast_2d atleast_3d
take take_along_axis sort partition linspace full full_like copy asarray array interp
convolve correlate
linalg.norm linalg.inv linalg.pinv linalg.solve linalg.det linalg.slogdet linalg.cholesky
linalg.eigh linalg.eigvalsh linalg.svd linalg.qr linalg.eig linalg.eigvals linalg.lstsq
linalg.matrix_power linalg.multi_dot
""".split()


def public_name(fn) -> str:
    """How users write ``fn``: ``np.tanh``, ``np.linalg.norm``, ``+``, ``knetc.relu``..."""
    op = _OPERATORS.get(fn) if _hashable(fn) else None
    if op is not None:
        return op
    name = getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    for prefix, ns in _NAMESPACES:
        if getattr(ns, name, None) is fn:
            return f"{prefix}.{name}"
    special = sys.modules.get("scipy.special")
    if special is not None and getattr(special, name, None) is fn:
        return f"scipy.special.{name}"
    import knetc
    if getattr(knetc, name, None) is fn:
        return f"knetc.{name}"
    if name in ("float", "int", "abs"):
        return name
    return ""        # an internal helper (its rule serves gradients of gradients)


def _hashable(fn) -> bool:
    try:
        hash(fn)
        return True
    except TypeError:
        return False


def _group(name: str) -> str:
    if name.startswith("np.linalg."):
        return "np.linalg"
    if name.startswith("np.random."):
        return "np.random (drawn anew on every call)"
    if name.startswith("np."):
        return "NumPy"
    if name.startswith("scipy."):
        return "scipy.special (when SciPy is installed)"
    if name.startswith("knetc."):
        return "knetc (Knet's primitives and layers)"
    return "Python operators and builtins"


def catalog() -> dict[str, dict[str, list[str]]]:
    """{"differentiable" | "non-differentiable": {group: sorted public names}}."""
    load_all()
    out: dict[str, dict[str, set]] = {"differentiable": {}, "non-differentiable": {}}
    for rule in registry.registered():
        name = public_name(rule.fn)
        if not name:
            continue
        kind = "differentiable" if rule.differentiable or rule.alias else "non-differentiable"
        if rule.alias:
            name += " (identity, cut from the gradient)"
        out[kind].setdefault(_group(name), set()).add(name)
    return {k: {g: sorted(v) for g, v in sorted(groups.items())} for k, groups in out.items()}


def markdown() -> str:
    """The README's table of supported functions."""
    lines = []
    for kind, groups in catalog().items():
        lines.append(f"**{kind.capitalize()}** ({sum(len(v) for v in groups.values())}):")
        lines.append("")
        lines.append("| family | functions |")
        lines.append("|---|---|")
        for group, names in groups.items():
            lines.append(f"| {group} | {', '.join(f'`{n}`' for n in names)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def missing() -> list[str]:
    """The everyday NumPy functions (``EVERYDAY``) that still have no rule."""
    load_all()
    out = []
    for name in EVERYDAY:
        ns, _, attr = name.rpartition(".")
        fn = getattr(np.linalg if ns == "linalg" else np, attr, None)
        if fn is not None and registry.lookup(fn) is None:
            out.append(f"np.{name}")
    return out


_START, _END = "<!-- catalog -->", "<!-- /catalog -->"


def rewrite(text: str) -> str:
    """``text`` with the part between the catalog markers replaced by ``markdown()``."""
    head, _, rest = text.partition(_START)
    _, _, tail = rest.partition(_END)
    return f"{head}{_START}\n{markdown()}{_END}{tail}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write"]:
        path = argv[1]
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(rewrite(text))
        return 0
    if argv[:1] == ["--missing"]:
        print("\n".join(missing()))
        return 0
    print(markdown(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
