"""Random loss programs for knetc, written the way users write them, and the check they must pass.

``generate(seed)`` returns a :class:`Program`: the source of a module holding a scalar loss
``loss(w, ...)`` (with helper functions, a global or two), the structure of its arguments and how
to draw their values. ``check(program, folder)`` writes it to ``folder``, imports it, calls
``knetc.gradloss`` several times (new values, a second shape where the program allows one, calls
whose array values take the other branch), and compares every gradient with central finite
differences in float64, and the loss with the function's own value.

What the programs use (README, "What the specializer understands"):

* parameters: a dict (with an int and a string leaf, lists, tuples, pairs and nested dicts of
  arrays, Python floats, 0-d arrays), a list, a single array, a Python float; data arguments (float
  arrays, integer index arrays with repeats, a boolean mask, class labels, a Python int, a bool, a
  list of arrays); sometimes the gradient is taken with respect to a data array (``argnum``),
  data passed by keyword, or ``knetc.differentiable(loss).gradloss`` used instead of ``gradloss``;
* loops over ``range`` (a literal, ``len(...)``, ``x.shape[0]``, an int argument, ``w["n"]``),
  over lists of parameters (``enumerate``, ``zip``, pairs, ``reversed``, slices, ``ws[i]``,
  filtered comprehensions, dict keys, ``.items()``/``.values()``), over an array's first axis,
  over a list of arrays; ``while`` with a counter and with an array test; ``continue``/``break``
  (also on an array's value); accumulators (``+=``), recurrences (``h = np.tanh(h @ W + b)``),
  lists built with ``append`` then stacked/summed; comprehensions and ``sum(...)``;
* ``if``/``elif``/``else`` and ternaries on Python values (an int, a bool, a string, a shape, a
  Python float parameter, a global) and on array values (``if np.sum(h) > 0:``);
* helper functions at module level (positional, keyword, default and keyword-only arguments,
  ``*args``/``**kwargs``, tuple results), closures over the loss's locals, lambdas (with
  defaults), a closure factory, a recursive helper, global floats and global functions (both
  changed between calls); swaps, starred unpacking, the walrus operator;
* indexing with ints (also a loop variable), slices (negative steps), ``None``, ``...``, integer
  arrays with repeats (literal, ``np.array``, data), boolean masks (values, data, rows);
  broadcasting between shapes (size-1 axes, suffixes, scalars, Python floats and ints);
  reductions with ``axis``/``keepdims``/positional axes; elementwise NumPy functions; matmul,
  ``dot``, ``einsum``, ``tensordot``; reshape/ravel/transpose/swapaxes/concatenate/stack/
  vstack/hstack/flip/roll/tile/repeat/pad/diff/cumsum/squeeze/expand_dims; sort, median,
  average, hypot, arctan2, logaddexp, power, norm, inv/solve/slogdet of SPD matrices;
  ``knetc.relu/sigm/elu/softmax/logp/nll``; augmented assignment of names (arrays the function
  owns, and scalars); one value used twice in one expression (``h @ h.T``, ``h - h[idx]``,
  ``np.concatenate([h, h])``, ``v @ v``...) and parameters read in several places.

Values are kept in safe domains by construction: every expression carries an interval that holds
for every draw (so ``log``/``sqrt``/division only see positive or nonzero values and ``exp`` only
moderate ones) and flags for values that may hold exact ties (so ``abs``, ``maximum``, ``clip``,
comparisons and ``max`` never sit on a kink by construction). A draw that still lands within the
finite-difference step of a kink is recognised (one-sided differences disagree) and redrawn.

The check: the plain function runs first on several draws (NumPy floating-point errors raised;
line coverage picks draws that take other branches), then on a second batch size and on all
dimensions changed where the program allows it. Calls go A, other shapes (the third new key runs
at tier 0), then more A draws; every gradient is compared (all entries on the first call of each
shape, a sample afterwards) with a five-point central difference (h = 1e-4), rtol 1e-5 and atol
1e-7 times max(1, |loss|); a mismatch is rechecked with one-sided and narrow central differences
(h = 1e-6) before it counts. Also checked: the gradient's structure (same containers, float64
arrays of the parameter's shape or None, None for int/str leaves), that grad and gradloss agree,
that the loss equals the function's value, and that the arguments are not changed.

Run ``python tests/randprog.py SEED`` to print one program, ``python tests/randprog.py --run N``
to check many (``--jobs``), or ``KNETC_RANDPROG_N=2000 python -m pytest
tests/test_random_programs.py``.
"""
from __future__ import annotations

import copy
import importlib.util
import itertools
import math
import os
import random
import re
import sys
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

# ------------------------------------------------------------------------------------------
# shapes

DIMS_A = {"n": 3, "d": 4, "m": 5}          # the shapes the program is generated for
DIMS_BATCH = {"n": 6, "d": 4, "m": 5}      # a second batch size
DIMS_ALL = {"n": 4, "d": 6, "m": 7}        # every dimension changed
_DIM_OF = {v: k for k, v in DIMS_A.items()}
SIZE_SLACK = 2.5   # bounds of sums assume sizes up to this factor larger than in DIMS_A
BIG = 40.0         # expressions whose bound exceeds this are squashed


def sym_shape(shape):
    """A concrete DIMS_A shape as dimension names (ints that are no dimension stay ints)."""
    return tuple(_DIM_OF.get(s, s) for s in shape)


def resolve(sshape, dims):
    return tuple(dims[s] if isinstance(s, str) else s for s in sshape)


# ------------------------------------------------------------------------------------------
# typed expressions

class E:
    """A generated expression: its text, shape (for DIMS_A), kind and what holds for every draw.

    kind: 'arr' (a NumPy array or NumPy scalar), 'pyf' (a Python float), 'int' (a Python int).
    lo, hi: bounds of every element. tied: elements may hold exact values that put a kink on them
    (zeros from maximum, clipped values, cancellations). dup: entries may repeat exactly (gathers
    with repeats, concatenations), which puts ties on max/min. src: the leaves it depends on.
    """
    __slots__ = ("text", "shape", "kind", "lo", "hi", "tied", "dup", "src", "atom", "gap",
                 "alias")

    def __init__(self, text, shape=(), kind="arr", lo=-1.0, hi=1.0, tied=False, dup=False,
                 src=frozenset(), atom=False, gap=0.0, alias=frozenset()):
        self.text, self.shape, self.kind = text, tuple(shape), kind
        self.lo, self.hi = float(lo), float(hi)
        self.tied, self.dup, self.src, self.atom = tied, dup, frozenset(src), atom
        self.gap = gap if lo <= 0 <= hi else min(abs(lo), abs(hi))
        self.alias = frozenset(alias)   # names whose memory this value may share (views)

    @property
    def mag(self):
        return max(abs(self.lo), abs(self.hi))

    @property
    def const(self):
        return not self.src

    @property
    def p(self):
        """The text, parenthesized unless atomic."""
        return self.text if self.atom else f"({self.text})"

    def named(self, name):
        return E(name, self.shape, self.kind, self.lo, self.hi, self.tied, self.dup, self.src,
                 True, self.gap, {name})

    def view(self, text, shape, alias=None):
        """A view of this value (basic indexing, reshape, transpose): same bounds, shares memory."""
        return E(text, shape, self.kind if shape == self.shape else "arr", self.lo, self.hi,
                 self.tied, self.dup, self.src, True, self.gap,
                 self.alias if alias is None else alias)

    def __repr__(self):
        return f"E({self.text!r}, {self.shape}, {self.kind}, [{self.lo:.3g}, {self.hi:.3g}])"


def union(a: E, b: E, text=None) -> E:
    return E(text or a.text, a.shape, a.kind if a.kind == b.kind else "arr", min(a.lo, b.lo),
             max(a.hi, b.hi), a.tied or b.tied, a.dup or b.dup, a.src | b.src, True,
             min(a.gap, b.gap), a.alias | b.alias)


def fmt(c: float) -> str:
    s = f"{c:.2f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def const(c: float) -> E:
    return E(fmt(c) if c >= 0 else f"-{fmt(-c)}", (), "pyf", c, c, atom=c >= 0)


def _prod_bounds(a, b):
    ps = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
    return min(ps), max(ps)


def _bshape(*shapes):
    return tuple(np.broadcast_shapes(*shapes))


class GenFail(Exception):
    """A production that does not apply here (the generator tries another)."""


# ------------------------------------------------------------------------------------------
# argument leaves

@dataclass
class Leaf:
    kind: str            # arr pyf int str bool idx mask seq
    shape: tuple = ()    # symbolic shape (arr, mask, idx length); for seq: element shape
    dist: tuple = ("sym", 0.2, 1.0)
    extra: object = None  # idx: the size of the indexed axis; int/str/bool: the choices; seq: len

    def draw(self, rng, dims):
        shape = resolve(self.shape, dims)
        if self.kind == "arr":
            return _draw_float(rng, self.dist, shape)
        if self.kind == "pyf":
            return float(_draw_float(rng, self.dist, ()))
        if self.kind == "idx":
            n = resolve((self.extra,), dims)[0]
            ix = rng.integers(0, n, size=shape)
            if ix.size >= 2:   # repeats, always
                ix.flat[-1] = ix.flat[0]
            return ix
        if self.kind == "mask":
            m = rng.random(shape) < 0.5
            m.flat[0] = True
            return m
        if self.kind in ("int", "str", "bool"):
            return self.extra[int(rng.integers(len(self.extra)))]
        if self.kind == "func":
            return getattr(np, self.extra[int(rng.integers(len(self.extra)))])
        if self.kind == "seq":
            return [_draw_float(rng, self.dist, shape) for _ in range(self.extra)]
        raise AssertionError(self.kind)


def _draw_float(rng, dist, shape):
    kind, a, b = dist
    mag = rng.uniform(a, b, size=shape)
    if kind == "sym":
        mag = mag * rng.choice([-1.0, 1.0], size=shape)
    return np.asarray(mag, dtype=np.float64) if shape else float(mag)


def draw_tree(tree, rng, dims):
    if isinstance(tree, Leaf):
        v = tree.draw(rng, dims)
        if tree.kind == "arr" and not tree.shape:
            return np.asarray(v, dtype=np.float64)   # a 0-d array parameter
        return v
    if isinstance(tree, list):
        return [draw_tree(t, rng, dims) for t in tree]
    if isinstance(tree, tuple):
        return tuple(draw_tree(t, rng, dims) for t in tree)
    if isinstance(tree, dict):
        return {k: draw_tree(t, rng, dims) for k, t in tree.items()}
    raise AssertionError(type(tree))


# ------------------------------------------------------------------------------------------
# functions being generated

class Fn:
    """A function under construction: its lines, its variables, and how new leaves enter it."""

    def __init__(self, name, kind, parent=None, indent=1):
        self.name, self.kind, self.parent = name, kind, parent
        self.vars: dict[str, E] = {}
        self.lists: dict[str, tuple] = {}      # name -> (element E, length)
        self.funcs: list = []                  # closures / lambdas visible here
        self.frozen: set = set()               # captured by a closure: never rebound
        self.owned: set = set()                # arrays computed here, referenced by one name
        self.params: list = []                 # helper: [(name, E template, default text)]
        self.lines: list = []
        self.indent = indent
        self.loop_vars: set = set()
        self.state: set = set()                # loop-carried names of the loop being generated
        self.kinky = False                     # uses a kink somewhere (helpers: call rules)

    def emit(self, line):
        self.lines.append("    " * self.indent + line)


@dataclass
class Helper:
    name: str
    params: list          # [(pname, E template)] positional
    defaults: list        # [(pname, E template, default text)]
    kwonly: list          # [(pname, E template, default text)]
    ret: list             # [E] results (one, or a tuple)
    kinky: bool
    recursive: bool = False


@dataclass
class Program:
    seed: int
    source: str
    argnames: list
    args: list            # Leaf trees, one per argument
    argnum: int
    globals_: dict        # name -> Leaf (redrawn per call) for float globals
    features: set = field(default_factory=set)
    api: str = "gradloss"  # or "differentiable" (knetc.differentiable(loss).gradloss)
    kwcall: bool = False   # pass the data arguments by keyword

    def draw(self, rng, dims):
        args = tuple(draw_tree(t, rng, dims) for t in self.args)
        gl = {k: draw_tree(t, rng, dims) for k, t in self.globals_.items()}
        return args, gl


# ------------------------------------------------------------------------------------------
# the generator

UNARY_SMOOTH = ["tanh", "sin", "cos", "exp", "log", "sqrt", "square", "pow2", "pow3", "neg",
                "sigmoid", "log1p_sq", "softplus", "recip", "exp_negsq", "expm1", "cosh",
                "arctan", "act"]
UNARY_KINK = ["abs", "relu", "clip", "maximum_c", "minimum_c", "where_c", "fabs"]


class Gen:
    def __init__(self, seed: int):
        self.seed = seed
        self.r = random.Random(seed)
        self.count = itertools.count(1)
        self.features: set = set()
        self.helpers: list[Helper] = []
        self.module_lines: list = []
        self.globals_: dict = {}
        self.global_funcs: dict = {}
        # the parameter container
        self.w_style = self.wpick([(5, "dict"), (3, "list"), (1, "single"), (1, "float")])
        self.w_tree = {} if self.w_style == "dict" else [] if self.w_style == "list" else None
        self.wkeys = itertools.count(1)
        self.aliases: list = []        # (alias, access text) assignments at the top of loss
        self.data: dict[str, Leaf] = {}
        self.data_order: list = []
        self.groups: list = []         # (text, element templates, length)
        self.fn: Fn = None
        self.depth_limit = 3
        self.leaves: dict[str, E] = {}
        self.root: Fn = None
        self.uses_knetc = False   # parameters and data read so far (access text -> E)

    # -- random helpers -------------------------------------------------------------------
    def chance(self, p):
        return self.r.random() < p

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def wpick(self, pairs):
        total = sum(w for w, _ in pairs)
        x = self.r.random() * total
        for w, v in pairs:
            x -= w
            if x < 0:
                return v
        return pairs[-1][1]

    def fresh(self, prefix):
        return f"{prefix}{next(self.count)}"

    def feat(self, name):
        self.features.add(name)

    # -- leaves -------------------------------------------------------------------------
    def param_dist(self):
        return ("pos", 0.5, 1.5) if self.chance(0.15) else ("sym", 0.2, 1.0)

    def leaf_E(self, text, shape, dist, src, kind="arr"):
        lo, hi = (dist[1], dist[2]) if dist[0] == "pos" else (-dist[2], dist[2])
        gap = dist[1]
        return E(text, shape, kind, lo, hi, src={src}, atom=True, gap=gap, alias={text})

    def new_leaf(self, shape, kind="arr", dist=None, prefer_data=False):
        """A new parameter (or data argument) of this shape, as it is read in the current
        function (a helper gets it as a new parameter)."""
        fn = self.fn
        if fn.kind == "helper":
            return self.helper_param(shape, kind)
        dist = dist or self.param_dist()
        if kind == "pyf":
            shape = ()
        as_data = prefer_data or self.chance(0.15)
        if not as_data:
            e = self.new_param(shape, kind, dist)
            if e is not None:
                return e
        return self.new_data(shape, kind, dist)

    def new_param(self, shape, kind, dist):
        leaf = Leaf(kind, sym_shape(shape), dist)
        if self.w_style in ("single", "float"):
            if self.w_tree is not None:
                return None
            if self.w_style == "float" and (kind != "pyf"):
                if shape != () or not self.chance(0.7):
                    return None
                kind = leaf.kind = "pyf"
            self.w_tree = leaf
            self.feat(f"w_{self.w_style}")
            e = self.leaves["w"] = self.leaf_E("w", shape, dist, "w", kind)
            return e
        if self.w_style == "dict":
            prefix = "s" if kind == "pyf" else {0: "c", 1: "b"}.get(len(shape), "W")
            key = f"{prefix}{next(self.wkeys)}"
            self.w_tree[key] = leaf
            text = f'w["{key}"]'
        else:
            self.w_tree.append(leaf)
            text = f"w[{len(self.w_tree) - 1}]"
        if kind == "arr" and self.chance(0.3):   # read once into a local at the top of loss
            alias = text.replace('w["', "").replace('"]', "").replace("w[", "w").replace("]", "")
            alias = alias if alias != text else self.fresh("p")
            alias = f"{alias}_"
            self.aliases.append((alias, text))
            text = alias
            self.feat("param_alias")
        self.feat(f"w_{self.w_style}")
        if kind == "pyf":
            self.feat("pyfloat_param")
        e = self.leaf_E(text, shape, dist, text, kind)
        self.leaves[text] = e
        return e

    def new_data(self, shape, kind="arr", dist=None):
        names = [n for n in ("x", "y", "z") if n not in self.data]
        if not names:
            e = self.new_param(shape, kind, dist or self.param_dist())
            if e is not None:
                return e
            # every name taken and no room in w: reuse an existing float data array
            for n, lf in self.data.items():
                if lf.kind == "arr" and resolve(lf.shape, DIMS_A) == tuple(shape):
                    return self.leaf_E(n, shape, lf.dist, n)
            raise GenFail("no room for a new leaf")
        name = names[0]
        dist = dist or ("sym", 0.1, 1.0)
        self.data[name] = Leaf("pyf" if kind == "pyf" else "arr", sym_shape(shape), dist)
        self.data_order.append(name)
        self.feat("data_arg")
        e = self.leaf_E(name, shape, dist, name, "pyf" if kind == "pyf" else "arr")
        self.leaves[name] = e
        return e

    def special_data(self, name, leaf):
        if name not in self.data:
            self.data[name] = leaf
            self.data_order.append(name)
        return self.data[name]

    def helper_param(self, shape, kind):
        fn = self.fn
        pname = f"a{len(fn.params) + 1}"
        lo, hi = (-1.0, 1.0)
        tmpl = E(pname, shape, kind, lo, hi, src={f"@{fn.name}.{pname}"}, atom=True)
        fn.params.append((pname, tmpl, None))
        fn.vars[pname] = tmpl
        return tmpl

    # -- scope --------------------------------------------------------------------------
    def visible_vars(self):
        """(name, E, fn) of every variable readable here (closures see their parents'; the loss
        and its closures also read the parameters and data used so far)."""
        out = []
        fn = self.fn
        while fn is not None:
            for k, v in fn.vars.items():
                out.append((k, v, fn))
            if fn.kind not in ("closure", "lambda"):
                break
            fn = fn.parent
        if fn is not None and fn.kind == "loss":
            out += [(k, v, None) for k, v in self.leaves.items()]
        return out

    def use_var(self, name, owner):
        if owner is not None and owner is not self.fn:   # captured: the loss never rebinds it
            owner.frozen.add(name)
            owner.owned.discard(name)
            self.feat("closure_capture")

    def vars_of_shape(self, shape, kinds=("arr",)):
        return [(k, v, f) for k, v, f in self.visible_vars()
                if v.shape == tuple(shape) and v.kind in kinds]

    # -- expressions --------------------------------------------------------------------
    def expr(self, shape, depth, allow_py=False):
        """An expression of exactly this shape (a Python float too when allow_py and ())."""
        shape = tuple(shape)
        for _ in range(12):
            prods = self.productions(shape, depth, allow_py)
            prod = self.wpick(prods)
            try:
                e = prod(shape, depth)
            except GenFail:
                continue
            if e is None:
                continue
            assert e.shape == shape, (prod, e, shape)
            return self.tame(e)
        return self.leaf(shape, allow_py)

    def productions(self, shape, depth, allow_py):
        if depth <= 0:
            return [(6, self.p_leaf), (1, self.p_index)]
        ps = [(5, self.p_leaf), (4, self.p_unary), (5, self.p_binary), (1.5, self.p_index),
              (1.2, self.p_reduce), (0.6, self.p_kink)]
        if len(shape) >= 1:
            ps += [(1.2, self.p_matmul), (0.5, self.p_reshape), (0.6, self.p_concat),
                   (0.4, self.p_stack), (0.3, self.p_misc_shape)]
        else:
            ps += [(1.0, self.p_matmul), (1.5, self.p_scalar_reduce)]
        if len(shape) == 2 or len(shape) == 3:
            ps.append((0.6, self.p_transpose))
        ps += [(0.8, self.p_call), (0.4, self.p_ifexp), (0.5, self.p_where),
               (1.2, self.p_selfuse), (1.0, self.p_extra)]
        if allow_py and shape == ():
            ps.append((2.0, self.p_pyfloat))
        return ps

    def tame(self, e):
        if e.mag <= BIG:
            return e
        k = self.pick(["tanh", "scale", "sin"])
        if k == "tanh":
            return self.unary_apply("tanh", e)
        if k == "sin":
            return self.unary_apply("sin", e)
        c = float(10 ** math.ceil(math.log10(e.mag)))
        return E(f"{e.p} / {fmt(c)}", e.shape, e.kind, e.lo / c, e.hi / c, e.tied, e.dup, e.src)

    def leaf(self, shape, allow_py=False):
        kinds = ("arr", "pyf") if allow_py or shape == () else ("arr",)
        cands = self.vars_of_shape(shape, kinds)
        if cands and self.chance(0.7):
            # prefer loop-carried state and recent names
            prefer = self.fn.state | self.fn.loop_vars
            weights = [(5 if k in prefer else 1) + i * 0.2 for i, (k, v, f) in enumerate(cands)]
            k, v, f = cands[self.wpick(list(zip(weights, range(len(cands)))))]
            self.use_var(k, f)
            return v
        if shape == () and (allow_py and self.chance(0.5)):
            if self.chance(0.3) and self.fn.kind != "helper":
                return self.global_float()
            return self.new_leaf((), "pyf")
        return self.new_leaf(shape)

    def p_leaf(self, shape, depth):
        return self.leaf(shape)

    def global_float(self):
        if not self.globals_ or self.chance(0.3):
            name = f"C{len(self.globals_) + 1}"
            self.globals_[name] = Leaf("pyf", (), ("pos", 0.3, 0.9))
        name = self.pick(sorted(self.globals_))
        self.feat("global_float")
        return E(name, (), "pyf", 0.3, 0.9, src={name}, atom=True)

    # unary --------------------------------------------------------------------------------
    def p_unary(self, shape, depth):
        op = self.pick(UNARY_SMOOTH)
        if op in ("log", "sqrt"):
            inner = self.positive(shape, depth - 1)
        else:
            inner = self.expr(shape, depth - 1)
        return self.unary_apply(op, inner)

    def unary_apply(self, op, a):
        s, src = a.shape, a.src
        self.feat(f"u_{op}")

        def mk(text, lo, hi, tied=a.tied, atom=True, gap=0.0):
            return E(text, s, "arr", lo, hi, tied, a.dup, src, atom, gap)
        if op == "tanh":
            return mk(f"np.tanh({a.text})", math.tanh(a.lo), math.tanh(a.hi))
        if op == "sin":
            return mk(f"np.sin({a.text})", -1, 1)
        if op == "cos":
            return mk(f"np.cos({a.text})", -1, 1)
        if op == "arctan":
            return mk(f"np.arctan({a.text})", math.atan(a.lo), math.atan(a.hi))
        if op == "exp":
            if a.hi > 3 or a.lo < -30:
                return self.unary_apply("exp", self.unary_apply("tanh", a))
            return mk(f"np.exp({a.text})", math.exp(a.lo), math.exp(a.hi))
        if op == "expm1":
            if a.hi > 3:
                raise GenFail
            return mk(f"np.expm1({a.text})", math.expm1(a.lo), math.expm1(a.hi))
        if op == "cosh":
            if a.mag > 3:
                raise GenFail
            lo = 1.0 if a.lo <= 0 <= a.hi else math.cosh(min(abs(a.lo), abs(a.hi)))
            return mk(f"np.cosh({a.text})", lo, math.cosh(a.mag))
        if op == "exp_negsq":
            return mk(f"np.exp(-{a.p} ** 2)", 0.0, 1.0)
        if op == "log":
            if a.lo < 0.1:
                a = self.make_positive(a)
            return mk(f"np.log({a.text})", math.log(a.lo), math.log(a.hi))
        if op == "sqrt":
            if a.lo < 0.05:
                a = self.make_positive(a)
            return mk(f"np.sqrt({a.text})", math.sqrt(a.lo), math.sqrt(a.hi))
        if op == "square":
            lo = 0.0 if a.lo <= 0 <= a.hi else min(a.lo ** 2, a.hi ** 2)
            return mk(f"np.square({a.text})", lo, a.mag ** 2)
        if op == "pow2":
            lo = 0.0 if a.lo <= 0 <= a.hi else min(a.lo ** 2, a.hi ** 2)
            return mk(f"{a.p} ** 2", lo, a.mag ** 2, atom=False)
        if op == "pow3":
            if a.mag > 3:
                raise GenFail
            return mk(f"{a.p} ** 3", a.lo ** 3, a.hi ** 3, atom=False)
        if op == "neg":
            return mk(f"-{a.p}", -a.hi, -a.lo, atom=False, gap=a.gap)
        if op == "sigmoid":
            if a.mag > 30:
                raise GenFail
            lo, hi = 1 / (1 + math.exp(-a.lo)), 1 / (1 + math.exp(-a.hi))
            return mk(f"1.0 / (1.0 + np.exp(-{a.p}))", lo, hi, atom=False)
        if op == "log1p_sq":
            return mk(f"np.log1p({a.p} ** 2)", 0.0, math.log1p(a.mag ** 2))
        if op == "softplus":
            if a.hi > 30:
                raise GenFail
            return mk(f"np.log(1.0 + np.exp({a.text}))", math.log1p(math.exp(a.lo)),
                      math.log1p(math.exp(a.hi)))
        if op == "recip":
            if a.gap < 0.2 and not (a.lo > 0.2 or a.hi < -0.2):
                a = self.make_positive(a)
            g = a.gap if a.lo <= 0 <= a.hi else min(abs(a.lo), abs(a.hi))
            if g < 0.2:
                raise GenFail
            if a.lo > 0:
                return mk(f"1.0 / {a.p}", 1 / a.hi, 1 / a.lo, atom=False)
            if a.hi < 0:
                return mk(f"1.0 / {a.p}", 1 / a.hi, 1 / a.lo, atom=False)
            return mk(f"1.0 / {a.p}", -1 / g, 1 / g, atom=False)
        if op == "act":
            if self.fn.kind == "helper" and self.chance(0.5):
                raise GenFail
            name, f = self.global_function()
            if f == "tanh":
                return mk(f"{name}({a.text})", math.tanh(a.lo), math.tanh(a.hi))
            return mk(f"{name}({a.text})", -1, 1)
        raise AssertionError(op)

    def global_function(self):
        if not self.global_funcs or self.chance(0.2):
            name = f"ACT{len(self.global_funcs) + 1}"
            f = self.pick(["tanh", "sin"])
            self.global_funcs[name] = f
        name = self.pick(sorted(self.global_funcs))
        self.feat("global_function")
        return name, self.global_funcs[name]

    def positive(self, shape, depth):
        """An expression that is >= 0.1 for every draw."""
        cands = [(k, v, f) for k, v, f in self.vars_of_shape(shape) if v.lo >= 0.1]
        if cands and self.chance(0.4):
            k, v, f = self.pick(cands)
            self.use_var(k, f)
            return v
        if self.chance(0.25) and self.fn.kind != "helper":
            return self.new_leaf(shape, dist=("pos", 0.5, 1.5))
        return self.make_positive(self.expr(shape, max(depth, 0)))

    def make_positive(self, a):
        self.feat("positive_form")
        s = a.shape
        k = self.pick(["sq", "exp", "abs", "sqrtsq", "onetanh", "softplus", "max"])
        if k == "exp" and a.hi <= 3 and a.lo >= -20:
            return E(f"np.exp({a.text})", s, "arr", math.exp(a.lo), math.exp(a.hi), a.tied,
                     a.dup, a.src, True)
        if k == "abs" and not a.tied and not a.const:
            c = self.pick([0.5, 1.0])
            return E(f"np.abs({a.text}) + {fmt(c)}", s, "arr", c, a.mag + c, False, a.dup, a.src)
        if k == "sqrtsq":
            return E(f"np.sqrt({a.p} ** 2 + 1.0)", s, "arr", 1.0, math.sqrt(a.mag ** 2 + 1),
                     a.tied, a.dup, a.src, True)
        if k == "onetanh" and a.lo >= -1.5:
            return E(f"1.0 + np.tanh({a.text})", s, "arr", 1 + math.tanh(a.lo),
                     1 + math.tanh(a.hi), a.tied, a.dup, a.src)
        if k == "softplus" and a.hi <= 30:
            return E(f"np.log(1.0 + np.exp({a.text}))", s, "arr", math.log1p(math.exp(a.lo)),
                     math.log1p(math.exp(a.hi)), a.tied, a.dup, a.src, True)
        if k == "max" and not a.tied and not a.const:
            self.fn.kinky = True
            return E(f"np.maximum({a.text}, 0.5)", s, "arr", 0.5, max(a.hi, 0.5), True, a.dup,
                     a.src, True)
        c = self.pick([0.5, 1.0])
        return E(f"{a.p} ** 2 + {fmt(c)}", s, "arr", c, a.mag ** 2 + c, a.tied, a.dup, a.src)

    # kinks -----------------------------------------------------------------------------------
    def smooth_arg(self, shape, depth):
        """An expression without exact ties (safe under abs, maximum, comparisons)."""
        for _ in range(6):
            a = self.expr(shape, depth)
            if not a.tied and not a.const:
                return a
        return self.new_leaf(shape) if self.fn.kind != "helper" else self.helper_param(shape, "arr")

    def p_kink(self, shape, depth):
        op = self.pick(UNARY_KINK)
        a = self.smooth_arg(shape, depth - 1)
        self.fn.kinky = True
        self.feat(f"k_{op}")
        s, src = shape, a.src
        if op in ("abs", "fabs"):
            f = "np.abs" if op == "abs" else self.pick(["np.fabs", "np.absolute"])
            if shape == () and self.chance(0.4):
                f = "abs"
            return E(f"{f}({a.text})", s, "arr", 0.0, a.mag, False, a.dup, src, True)
        if op == "relu":
            return E(f"np.maximum({self.pick(['0', '0.0'])}, {a.text})", s, "arr",
                     max(0, a.lo), max(0, a.hi), True, a.dup, src, True)
        if op == "clip":
            c = self.pick([0.3, 0.5, 0.8])
            return E(f"np.clip({a.text}, -{fmt(c)}, {fmt(c)})", s, "arr", max(a.lo, -c),
                     min(a.hi, c), True, a.dup, src, True)
        if op == "maximum_c":
            c = self.pick([-0.2, 0.1, 0.3])
            return E(f"np.maximum({a.text}, {const(c).text})", s, "arr", max(a.lo, c),
                     max(a.hi, c), True, a.dup, src, True)
        if op == "minimum_c":
            c = self.pick([-0.1, 0.2, 0.5])
            return E(f"np.minimum({a.text}, {const(c).text})", s, "arr", min(a.lo, c),
                     min(a.hi, c), True, a.dup, src, True)
        if op == "where_c":
            c = self.pick([0.0, 0.2, -0.3])
            b = self.expr(shape, depth - 1)
            neutral = self.pick(["0.0", f"{a.p} * 0.5"])
            lo, hi = min(a.lo, b.lo, 0.5 * a.lo, 0), max(a.hi, b.hi, 0.5 * a.hi, 0)
            return E(f"np.where({a.p} > {const(c).text}, {b.text}, {neutral})", s, "arr", lo, hi,
                     True, a.dup or b.dup, src | b.src, True)
        raise AssertionError(op)

    # binary -------------------------------------------------------------------------------
    def operand(self, shape, depth):
        """An expression that broadcasts against ``shape`` (smaller, size-1 axes, a scalar, a
        Python float or int, or the full shape)."""
        shape = tuple(shape)
        k = self.wpick([(4, "full"), (2, "const"), (1.5, "suffix"), (1.5, "ones"),
                        (1, "scalar"), (0.6, "pyscalar"), (0.4, "int")])
        if k == "full" or not shape and k in ("suffix", "ones"):
            return self.expr(shape, depth)
        if k == "const":
            return const(self.pick([0.5, 2.0, 1.5, -1.0, 0.3, 3.0, -0.7]))
        if k == "suffix":
            cut = self.r.randint(1, len(shape))
            self.feat("broadcast_suffix")
            return self.expr(shape[cut:], depth)
        if k == "ones":
            s = list(shape)
            for i in range(len(s)):
                if self.chance(0.5):
                    s[i] = 1
            if s == list(shape):
                s[self.r.randrange(len(s))] = 1
            if self.chance(0.3):
                s = s[self.r.randint(0, len(s) - 1):]
            self.feat("broadcast_ones")
            return self.expr(tuple(s), depth)
        if k == "scalar":
            return self.expr((), depth)
        if k == "pyscalar":
            return self.expr((), depth, allow_py=True)
        # a Python int: the loop variable or a length
        ints = [(n, v) for n, v, f in self.visible_vars() if v.kind == "int"]
        if ints and self.chance(0.6):
            n, v = self.pick(ints)
            self.feat("int_operand")
            return E(f"({n} + 1)", (), "int", v.lo + 1, v.hi + 1, src={n})
        arrs = [(n, v, f) for n, v, f in self.visible_vars() if v.kind == "arr" and v.shape]
        if arrs:
            n, v, f = self.pick(arrs)
            self.use_var(n, f)
            self.feat("length_operand")
            text = self.pick([f"len({n})", f"{n}.shape[-1]", f"{n}.size", f"{n}.ndim"])
            return E(text, (), "int", 1, 100, src=set(), atom=True)
        return const(2.0)

    def p_binary(self, shape, depth):
        a = self.expr(shape, depth - 1)
        b = self.operand(shape, depth - 1)
        if self.chance(0.4):
            a, b = b, a
        op = self.wpick([(4, "+"), (3, "-"), (4, "*"), (1.5, "/"), (0.5, "np.add"),
                         (0.5, "np.multiply"), (0.3, "np.subtract"), (0.3, "np.divide")])
        out = _bshape(a.shape, b.shape)
        if out != shape:
            a, b = (a, b) if a.shape == shape else (b, a)
        self.feat("binary")
        if a.shape != b.shape:
            self.feat("broadcast")
        shared = bool(a.src & b.src)
        if op in ("/", "np.divide"):
            if not (b.lo > 0.2 or b.hi < -0.2) and b.gap < 0.2:
                if b.const:
                    raise GenFail
                b = self.make_positive(b)
            g = b.gap if b.lo <= 0 <= b.hi else min(abs(b.lo), abs(b.hi))
            inv = (1 / b.hi, 1 / b.lo) if (b.lo > 0 or b.hi < 0) else (-1 / g, 1 / g)
            lo, hi = _prod_bounds(a, E("", (), lo=inv[0], hi=inv[1]))
            text = f"{a.p} / {b.p}" if op == "/" else f"np.divide({a.text}, {b.text})"
            return E(text, shape, "arr", lo, hi, a.tied or b.tied or shared, a.dup or b.dup,
                     a.src | b.src, op != "/")
        if op in ("*", "np.multiply"):
            lo, hi = _prod_bounds(a, b)
            text = f"{a.p} * {b.p}" if op == "*" else f"np.multiply({a.text}, {b.text})"
            return E(text, shape, "arr", lo, hi, a.tied or b.tied, a.dup or b.dup,
                     a.src | b.src, op != "*")
        if op in ("+", "np.add"):
            lo, hi = a.lo + b.lo, a.hi + b.hi
            text = f"{a.p} + {b.p}" if op == "+" else f"np.add({a.text}, {b.text})"
        else:
            lo, hi = a.lo - b.hi, a.hi - b.lo
            text = f"{a.p} - {b.p}" if op == "-" else f"np.subtract({a.text}, {b.text})"
        tied = (a.tied or a.const) and (b.tied or b.const) or shared
        dup = a.dup or b.dup or (a.shape != shape and b.shape != shape and
                                 (a.const or b.const))
        if a.kind == "pyf" and b.kind == "pyf":
            raise GenFail
        return E(text, shape, "arr", lo, hi, tied, dup, a.src | b.src, op not in ("+", "-"))

    def p_where(self, shape, depth):
        """np.where / np.maximum / np.minimum of two independent values."""
        a = self.smooth_arg(shape, depth - 1)
        b = self.operand(shape, depth - 1)
        if b.tied or (b.src & a.src) or b.kind == "int":
            raise GenFail
        self.fn.kinky = True
        k = self.pick(["max", "min", "where", "where2"])
        self.feat(f"where_{k}")
        lo, hi = min(a.lo, b.lo), max(a.hi, b.hi)
        src = a.src | b.src
        if k == "max":
            return E(f"np.maximum({a.text}, {b.text})", shape, "arr", max(a.lo, b.lo), hi, False,
                     a.dup, src, True)
        if k == "min":
            return E(f"np.minimum({b.text}, {a.text})", shape, "arr", lo, min(a.hi, b.hi), False,
                     a.dup, src, True)
        if k == "where":
            return E(f"np.where({a.p} > {b.p}, {a.text}, {b.text})", shape, "arr", lo, hi, False,
                     a.dup, src, True)
        c = self.expr(shape, depth - 1)
        return E(f"np.where({a.p} < {b.p}, {c.text}, {a.p} * {b.p})", shape, "arr",
                 min(c.lo, *_prod_bounds(a, b)), max(c.hi, *_prod_bounds(a, b)),
                 c.tied, a.dup or c.dup, src | c.src, True)

    # reductions --------------------------------------------------------------------------------
    def some_dim(self):
        return self.pick([3, 4, 5, 2])

    def p_reduce(self, shape, depth):
        """A reduction over one axis, keepdims, or several axes."""
        if len(shape) >= 1 and 1 in shape and self.chance(0.5):
            k = shape.index(1)
            src_shape = shape[:k] + (self.some_dim(),) + shape[k + 1:]
            keep = True
        else:
            if len(shape) >= 3:
                raise GenFail
            k = self.r.randint(0, len(shape))
            src_shape = shape[:k] + (self.some_dim(),) + shape[k:]
            keep = False
        op = self.wpick([(4, "sum"), (3, "mean"), (1, "max"), (0.6, "min"), (0.4, "prod"),
                         (0.3, "var"), (0.3, "std")])
        if op in ("max", "min"):
            a = self.smooth_arg(src_shape, depth - 1)
            if a.dup:
                raise GenFail
            self.fn.kinky = True
        elif op == "prod":
            a = self.expr(src_shape, depth - 1)
            if a.mag > 1.5:
                raise GenFail
        else:
            a = self.expr(src_shape, depth - 1)
        ax = k
        if k == len(src_shape) - 1 and self.chance(0.5):
            ax = -1
        kd = ", keepdims=True" if keep else ""
        form = self.pick(["np", "method", "positional"]) if a.kind == "arr" else "np"
        if op in ("var", "std") and form == "method" and self.chance(0.97):
            form = "np"     # x.std() is not among knetc's array methods (a KnetcError)
        fname = {"sum": "sum", "mean": "mean", "max": "max", "min": "min", "prod": "prod",
                 "var": "var", "std": "std"}[op]
        if op == "max" and form == "np" and self.chance(0.3):
            fname = "amax"
        if form == "method" and fname != "amax":
            text = f"{a.p}.{fname}(axis={ax}{kd})"
        elif form == "positional" and not keep:
            text = f"np.{fname}({a.text}, {ax})"
        else:
            text = f"np.{fname}({a.text}, axis={ax}{kd})"
        self.feat(f"reduce_{op}" + ("_keepdims" if keep else ""))
        n = src_shape[k] * SIZE_SLACK
        lo, hi, tied = a.lo, a.hi, a.tied
        if op == "sum":
            lo, hi = min(a.lo * n, a.lo), max(a.hi * n, a.hi)
        elif op == "prod":
            m = max(a.mag, 1.0) ** n
            lo, hi = -m, m
        elif op == "var":
            lo, hi = 0.0, (a.hi - a.lo) ** 2
            tied = tied or a.dup
        elif op == "std":
            if a.dup or a.tied or a.const:
                raise GenFail
            lo, hi = 0.0, a.hi - a.lo
            self.fn.kinky = True
        e = E(text, shape, "arr", lo, hi, tied, a.dup, a.src, True)
        return e

    def p_scalar_reduce(self, shape, depth):
        """A full reduction to a scalar: np.sum, .mean(), builtin sum over a vector, a masked
        sum, np.dot."""
        k = self.wpick([(3, "sum"), (2, "mean"), (1, "max"), (1, "builtin_sum"), (2, "mask"),
                        (0.5, "norm"), (0.4, "logsumexp")])
        s = self.pick([(4,), (3, 4), (5,), (3,), (4, 5), (2, 3)])
        if k == "builtin_sum":
            a = self.expr((self.some_dim(),), depth - 1)
            self.feat("builtin_sum")
            n = a.shape[0] * SIZE_SLACK
            return E(f"sum({a.text})", (), "arr", min(a.lo, a.lo * n), max(a.hi, a.hi * n),
                     a.tied, False, a.src, True)
        if k == "mask":
            return self.masked_sum(depth)
        if k == "max":
            a = self.smooth_arg(s, depth - 1)
            if a.dup:
                raise GenFail
            self.fn.kinky = True
            self.feat("reduce_max_all")
            text = self.pick([f"np.max({a.text})", f"{a.p}.max()", f"np.amax({a.text})",
                              f"np.min({a.text})"])
            return E(text, (), "arr", a.lo, a.hi, False, False, a.src, True)
        if k == "norm":
            a = self.smooth_arg(s, depth - 1)
            self.feat("norm_by_hand")
            return E(f"np.sqrt(np.sum({a.p} ** 2) + 1e-3)", (), "arr", 0.03,
                     math.sqrt(a.mag ** 2 * np.prod(s) * SIZE_SLACK + 1e-3), a.tied, False,
                     a.src, True)
        if k == "logsumexp":
            a = self.expr(s, depth - 1)
            if a.hi > 5:
                raise GenFail
            self.feat("logsumexp_by_hand")
            n = float(np.prod(s)) * SIZE_SLACK
            return E(f"np.log(np.sum(np.exp({a.text})))", (), "arr", a.lo,
                     a.hi + math.log(n), a.tied, False, a.src, True)
        a = self.expr(s, depth - 1)
        n = float(np.prod(s)) * SIZE_SLACK
        if k == "sum":
            text = self.pick([f"np.sum({a.text})", f"{a.p}.sum()"])
            self.feat("reduce_all_sum")
            return E(text, (), "arr", min(a.lo, a.lo * n), max(a.hi, a.hi * n), a.tied, False,
                     a.src, True)
        text = self.pick([f"np.mean({a.text})", f"{a.p}.mean()"])
        self.feat("reduce_all_mean")
        return E(text, (), "arr", a.lo, a.hi, a.tied, False, a.src, True)

    def masked_sum(self, depth):
        """np.sum(v[v > c]), np.sum(v[mask]), v[rows].sum(): a shape that depends on values."""
        k = self.pick(["self", "mask", "rows"])
        if self.fn.kind == "helper":
            k = "self"
        if k == "self":
            a = self.smooth_arg(self.pick([(4,), (3, 4), (5,)]), depth - 1)
            c = const(self.pick([0.0, 0.2, -0.3]))
            inner = f"{a.p}[{a.p} > {c.text}]"
            self.fn.kinky = True
            self.feat("mask_self")
        elif k == "mask":
            shp = self.pick([(3,), (3, 4)])
            a = self.expr(shp, depth - 1)
            self.special_data("mask", Leaf("mask", sym_shape(shp)))
            if resolve(self.data["mask"].shape, DIMS_A) != shp:
                raise GenFail
            inner = f"{a.p}[mask]"
            self.feat("mask_data")
        else:
            a = self.expr((3, 4), depth - 1)
            b = self.smooth_arg((3,), depth - 1)
            if b.src & a.src and a.tied:
                raise GenFail
            inner = f"{a.p}[{b.p} > 0]"
            self.fn.kinky = True
            self.feat("mask_rows")
        f = self.pick(["np.sum({})", "{}.sum()", "np.sum({} ** 2)"])
        n = 20 * SIZE_SLACK
        if "** 2" in f:
            text = f.format(inner)
            return E(text, (), "arr", 0.0, a.mag ** 2 * n, a.tied, False, a.src, True)
        text = f.format(inner) if not f.startswith("{}") else f"{inner}.sum()"
        return E(text, (), "arr", min(0, a.lo * n), max(0, a.hi * n), a.tied, False, a.src, True)

    # matmul -----------------------------------------------------------------------------------
    def p_matmul(self, shape, depth):
        k = self.some_dim()
        if len(shape) == 2:
            a = self.expr((shape[0], k), depth - 1)
            b = self.expr((k, shape[1]), depth - 1)
        elif len(shape) == 1:
            if self.chance(0.5):
                a, b = self.expr((shape[0], k), depth - 1), self.expr((k,), depth - 1)
            else:
                a, b = self.expr((k,), depth - 1), self.expr((k, shape[0]), depth - 1)
        elif len(shape) == 0:
            a, b = self.expr((k,), depth - 1), self.expr((k,), depth - 1)
        elif len(shape) == 3:
            a = self.expr(shape[:2] + (k,), depth - 1)
            b = self.expr((k, shape[2]) if self.chance(0.5) else (shape[0], k, shape[2]), depth - 1)
        else:
            raise GenFail
        form = self.wpick([(5, "@"), (1.5, "dot"), (0.7, "matmul"), (0.5, "einsum"),
                           (0.4, "tensordot")])
        if form == "dot" and len(shape) == 3:
            form = "@"
        if form == "einsum":
            if len(shape) == 2:
                text = f"np.einsum('ik,kj->ij', {a.text}, {b.text})"
            elif len(shape) == 0:
                text = f"np.einsum('i,i->', {a.text}, {b.text})"
            else:
                form = "@"
        if form == "tensordot":
            if len(a.shape) == 2 and len(b.shape) <= 2:
                text = f"np.tensordot({a.text}, {b.text}, axes=1)"
            else:
                form = "@"
        if form == "@":
            text = f"{a.p} @ {b.p}"
        elif form == "dot":
            text = f"np.dot({a.text}, {b.text})" if self.chance(0.8) else f"{a.p}.dot({b.text})"
            if a.kind != "arr":
                text = f"np.dot({a.text}, {b.text})"
        elif form == "matmul":
            text = f"np.matmul({a.text}, {b.text})"
        self.feat(f"matmul_{form}")
        m = max(abs(x) for x in _prod_bounds(a, b)) * k * SIZE_SLACK
        return E(text, shape, "arr", -m, m, a.tied or b.tied, True if (a.dup or b.dup) else False,
                 a.src | b.src, form != "@")

    # indexing ---------------------------------------------------------------------------------
    def p_index(self, shape, depth):
        """Index an existing value (or a new bigger leaf) down to ``shape``."""
        cands = [(k, v, f) for k, v, f in self.visible_vars() if v.kind == "arr" and v.shape]
        self.r.shuffle(cands)
        prefer = self.fn.state | self.fn.loop_vars
        cands.sort(key=lambda c: c[0] not in prefer)     # loop variables and state first
        for k, v, f in cands[:6]:
            idx = self.index_to(v.shape, shape)
            if idx is not None:
                self.use_var(k, f)
                return self.apply_index(v, idx)
        src = self.inflate(shape)
        if src is None:
            raise GenFail
        base = self.expr(src, depth - 1) if self.chance(0.3) else self.leaf(src)
        idx = self.index_to(base.shape, shape)
        if idx is None:
            raise GenFail
        return self.apply_index(base, idx)

    def apply_index(self, base, idx):
        text, shape, dup, kind = idx
        self.feat(f"index_{kind}")
        return E(f"{base.p}[{text}]", shape, "arr", base.lo, base.hi, base.tied,
                 base.dup or dup, base.src, True, alias=frozenset() if dup else base.alias)

    def inflate(self, shape):
        """A bigger shape that indexes down to ``shape``."""
        k = self.pick(["insert", "grow", "same"])
        if k == "insert" and len(shape) < 3:
            i = self.r.randint(0, len(shape))
            return shape[:i] + (self.some_dim(),) + shape[i:]
        if k == "grow" and shape:
            i = self.r.randrange(len(shape))
            s = list(shape)
            s[i] = s[i] + self.r.randint(1, 3)
            return tuple(s)
        if shape:
            return shape
        return (self.some_dim(),)

    def index_to(self, src, tgt):
        """An index expression taking shape ``src`` to ``tgt``: (text, shape, dup, kind) or
        None. Built at random, kept when NumPy agrees on the shape."""
        for _ in range(8):
            try:
                r = self.random_index(src, tgt)
            except GenFail:
                continue
            if r is None:
                continue
            text, dup, kind, env = r
            try:
                out = eval(f"_V[{text}]", {"np": np, "_V": np.zeros(src), **env}).shape
            except Exception:
                continue
            if out == tuple(tgt):
                if kind == "loopvar":
                    # valid for every value of the loop variable
                    ok = True
                    for n, (lo, hi) in env.get("__ranges__", {}).items():
                        for val in (lo, hi):
                            try:
                                eval(f"_V[{text}]", {"np": np, "_V": np.zeros(src), **env, n: val})
                            except Exception:
                                ok = False
                    if not ok:
                        continue
                return text, tuple(tgt), dup, kind
        return None

    def random_index(self, src, tgt):
        """Per-axis choices steered towards the target shape."""
        nd, nt = len(src), len(tgt)
        env = {}
        kind = "basic"
        dup = False
        parts = []
        # which source axes are dropped by an int (when the target has fewer axes)
        drop = set()
        extra = nd - nt
        if extra > 0:
            drop = set(self.r.sample(range(nd), extra))
        insert_none = None
        if extra < 0:
            if extra < -1:
                return None
            insert_none = self.r.randint(0, nd)
        fancy_axis = None
        ti = 0
        for ax in range(nd + (1 if insert_none is not None else 0)):
            if insert_none is not None and ax == insert_none:
                parts.append("None")
                kind = "none"
                ti += 1
                continue
            sax = ax - (1 if insert_none is not None and ax > insert_none else 0)
            n = src[sax]
            if sax in drop:
                ints = [n - 1, 0, -1, 1 if n > 1 else 0]
                loops = [(nm, v) for nm, v, f in self.visible_vars()
                         if v.kind == "int" and nm in self.fn.loop_vars and v.hi < n]
                if loops and self.chance(0.5):
                    nm, v = self.pick(loops)
                    parts.append(nm)
                    env[nm] = int(v.lo)
                    env.setdefault("__ranges__", {})[nm] = (int(v.lo), int(v.hi))
                    kind = "loopvar"
                else:
                    parts.append(str(self.pick(ints)))
                    kind = "int" if kind == "basic" else kind
                continue
            t = tgt[ti]
            ti += 1
            if t == n:
                c = self.wpick([(6, ":"), (1, "::-1"), (0.6, "fancy")])
                if c == "fancy" and fancy_axis is None:
                    fancy_axis = ax
                    parts.append(self.fancy(n, t, env))
                    kind, dup = "fancy", True
                else:
                    parts.append(c)
                    if c == "::-1":
                        kind = "negstep"
                continue
            if t < n:
                c = self.pick(["head", "tail", "mid", "step", "negstep", "fancy"])
                if c == "fancy" and fancy_axis is None:
                    fancy_axis = ax
                    parts.append(self.fancy(n, t, env))
                    kind, dup = "fancy", True
                elif c == "head":
                    parts.append(f":{t}")
                elif c == "tail":
                    parts.append(f"{n - t}:" if self.chance(0.5) else f"-{t}:")
                elif c == "mid" and n - t >= 1:
                    a = self.r.randint(0, n - t)
                    parts.append(f"{a}:{a + t}")
                elif c == "step" and (n + 1) // 2 == t:
                    parts.append("::2")
                    kind = "step"
                elif c == "negstep":
                    start = self.r.randint(t - 1, n - 1)
                    stop = start - t
                    parts.append(f"{start}:{stop}:-1" if stop >= 0 else
                                 self.pick([f"{start}::-1", f"-{n - start}::-1"]))
                    kind = "negstep"
                else:
                    parts.append(f":{t}")
                continue
            if t > n and fancy_axis is None:
                fancy_axis = ax
                parts.append(self.fancy(n, t, env))
                kind, dup = "fancy", True
                continue
            return None
        if fancy_axis is not None and kind not in ("fancy",):
            kind = "fancy"
        # trailing full slices are usually left out; sometimes an Ellipsis stands for them
        while len(parts) > 1 and parts[-1] == ":" and self.chance(0.7):
            parts.pop()
        if len(parts) >= 2 and parts[0] == ":" and self.chance(0.3) and "None" not in parts:
            parts[0] = "..."
            if parts.count("...") > 1:
                return None
            kind = "ellipsis" if kind == "basic" else kind
        return ", ".join(parts), dup, kind, env

    def fancy(self, n, t, env):
        """An integer-array index of length t into an axis of size n, with a repeat."""
        if t > 6:
            raise GenFail
        vals = [self.r.randrange(n) for _ in range(t)]
        if t >= 2:
            vals[-1] = vals[0]
        form = self.pick(["list", "nparray", "data"]) if self.fn.kind != "helper" else \
            self.pick(["list", "nparray"])
        if form == "data":
            name = f"idx{n}_{t}"
            dim_n, dim_t = _DIM_OF.get(n), _DIM_OF.get(t)
            if dim_n is not None and dim_t is not None and (
                    name in self.data or sum(k.startswith("idx") for k in self.data) < 2):
                self.special_data(name, Leaf("idx", (dim_t,), extra=dim_n))
                env[name] = np.array(vals)
                self.feat("index_data_idx")
                return name
        if form == "nparray":
            return f"np.array({vals})"
        return str(vals)

    # shape ops ----------------------------------------------------------------------------------
    def p_reshape(self, shape, depth):
        size = int(np.prod(shape))
        options = []
        if len(shape) >= 2:
            options.append((size,))
            options.append(tuple(reversed(shape)))
            if len(shape) == 3:
                options.append((shape[0], shape[1] * shape[2]))
                options.append((shape[0] * shape[1], shape[2]))
        if len(shape) == 1:
            for a in (2, 3, 4, 5):
                if size % a == 0 and 1 < a < size:
                    options.append((a, size // a))
            if not options:
                options.append((size, 1))
        if len(shape) == 2 and 1 not in shape:
            options.append((shape[0], shape[1], 1))
        if not options:
            raise GenFail
        src = self.pick(options)
        a = self.expr(src, depth - 1)
        if a.kind != "arr":
            raise GenFail
        if len(shape) == 1 and self.chance(0.5):
            text = self.pick([f"{a.p}.reshape(-1)", f"{a.p}.ravel()", f"np.ravel({a.text})",
                              f"np.reshape({a.text}, (-1,))", f"{a.p}.flatten()"])
        else:
            dims = list(shape)
            if self.chance(0.3):
                dims[self.r.randrange(len(dims))] = -1
            t = ", ".join(map(str, dims))
            text = self.pick([f"{a.p}.reshape({t})", f"{a.p}.reshape(({t}))",
                              f"np.reshape({a.text}, ({t},))".replace(",,)", ",)")])
        self.feat("reshape")
        return a.view(text, shape)

    def p_transpose(self, shape, depth):
        if len(shape) == 2:
            a = self.expr((shape[1], shape[0]), depth - 1)
            if a.kind != "arr":
                raise GenFail
            text = self.pick([f"{a.p}.T", f"np.transpose({a.text})", f"{a.p}.transpose()",
                              f"np.swapaxes({a.text}, 0, 1)"])
        else:
            perm = list(range(3))
            self.r.shuffle(perm)
            if perm == [0, 1, 2]:
                perm = [2, 0, 1]
            inv = [perm.index(i) for i in range(3)]
            src = tuple(shape[inv[i]] for i in range(3))
            a = self.expr(src, depth - 1)
            if a.kind != "arr":
                raise GenFail
            text = self.pick([f"np.transpose({a.text}, {tuple(perm)})",
                              f"{a.p}.transpose({', '.join(map(str, perm))})"])
            if np.zeros(src).transpose(perm).shape != shape:
                raise GenFail
        self.feat("transpose")
        return a.view(text, shape)

    def p_concat(self, shape, depth):
        axes = [i for i, s in enumerate(shape) if s >= 2]
        if not axes:
            raise GenFail
        ax = self.pick(axes)
        n = shape[ax]
        cut = self.r.randint(1, n - 1)
        parts = [shape[:ax] + (cut,) + shape[ax + 1:], shape[:ax] + (n - cut,) + shape[ax + 1:]]
        es = [self.expr(p, depth - 1) for p in parts]
        if any(e.kind != "arr" for e in es):
            raise GenFail
        axt = ax if not (ax == len(shape) - 1 and self.chance(0.4)) else -1
        if ax == 0 and len(shape) == 2 and self.chance(0.25):
            text = f"np.vstack([{es[0].text}, {es[1].text}])"
        elif ax == 1 and len(shape) == 2 and self.chance(0.25):
            text = f"np.hstack(({es[0].text}, {es[1].text}))"
        elif ax == 0 and self.chance(0.3):
            text = f"np.concatenate([{es[0].text}, {es[1].text}])"
        else:
            text = f"np.concatenate([{es[0].text}, {es[1].text}], axis={axt})"
        self.feat("concatenate")
        src = es[0].src | es[1].src
        return E(text, shape, "arr", min(e.lo for e in es), max(e.hi for e in es),
                 any(e.tied for e in es), True, src, True)

    def p_stack(self, shape, depth):
        axes = [i for i, s in enumerate(shape) if 2 <= s <= 4]
        if not axes or len(shape) > 3:
            raise GenFail
        ax = self.pick(axes)
        part = shape[:ax] + shape[ax + 1:]
        es = [self.expr(part, depth - 1) for _ in range(shape[ax])]
        if any(e.kind == "int" for e in es):
            raise GenFail
        items = ", ".join(e.text for e in es)
        axt = ax if not (ax == len(shape) - 1 and self.chance(0.4)) else -1
        if ax == 0 and self.chance(0.3):
            text = f"np.stack([{items}])"
        elif ax == 0 and self.chance(0.2) and part:
            text = f"np.array([{items}])"
        else:
            text = f"np.stack([{items}], axis={axt})"
        self.feat("stack")
        return E(text, shape, "arr", min(e.lo for e in es), max(e.hi for e in es),
                 any(e.tied for e in es), True, frozenset().union(*(e.src for e in es)), True)

    def p_selfuse(self, shape, depth):
        """One value used twice in one expression: h @ h.T, h * h[::-1], np.outer(v, v),
        np.concatenate([h, h]), v @ v, h - h.mean(axis=0): the classic accumulation cases."""
        arrs = [(k, v, f) for k, v, f in self.visible_vars() if v.kind == "arr" and v.shape]
        self.r.shuffle(arrs)
        for k, v, f in arrs[:8]:
            r = self.selfuse_of(v, shape)
            if r is not None:
                self.use_var(k, f)
                self.feat("selfuse")
                return r
        raise GenFail

    def selfuse_of(self, v, shape):
        s, src, t = v.shape, v.src, v.p
        opts = []
        m = v.mag
        if s == shape:
            opts += [(f"{t} * {t}", 0.0, m * m, False, "mul"),
                     (f"{t} * {t}[::-1]", -m * m, m * m, False, "rev"),
                     (f"{t} - {t}.mean(axis=0)", -2 * m, 2 * m, True, "center"),
                     (f"{t} / (1.0 + {t} ** 2)", -0.5, 0.5, False, "div")]
            if len(s) == 2:
                opts.append((f"{t} * {t}.sum(axis=1, keepdims=True)", -m * m * 12, m * m * 12,
                             False, "rowsum"))
                opts.append((f"{t} + {t}[:, ::-1]", -2 * m, 2 * m, True, "fliplr"))
            if len(s) >= 1 and s[0] >= 2:
                n = s[0]
                perm = [self.r.randrange(n) for _ in range(n)]
                perm[-1] = perm[0]
                ix = self.pick([str(perm), f"np.array({perm})"])
                opts.append((f"{t}[{ix}] * {t}", -m * m, m * m, False, "gather"))
                opts.append((f"{t} - {t}[{ix}]", -2 * m, 2 * m, True, "gather_sub"))
                idx_name = f"idx{n}_{n}"
                if n in _DIM_OF and self.fn.kind != "helper" and (
                        idx_name in self.data or sum(k.startswith("idx") for k in self.data) < 2):
                    self.special_data(idx_name, Leaf("idx", (_DIM_OF[n],), extra=_DIM_OF[n]))
                    opts.append((f"{t}[{idx_name}] + {t}", -2 * m, 2 * m, False, "gather_data"))
        if len(s) == 2 and shape == (s[0], s[0]):
            opts.append((f"{t} @ {t}.T", -m * m * s[1] * SIZE_SLACK, m * m * s[1] * SIZE_SLACK,
                         False, "gram"))
        if len(s) == 2 and shape == (s[1], s[1]):
            opts.append((f"np.dot({t}.T, {t})", -m * m * s[0] * SIZE_SLACK,
                         m * m * s[0] * SIZE_SLACK, False, "gramT"))
        if len(s) == 1 and shape == ():
            opts += [(f"{t} @ {t}", 0.0, m * m * s[0] * SIZE_SLACK, False, "dot"),
                     (f"np.dot({t}, {t}[::-1])", -m * m * s[0] * SIZE_SLACK,
                      m * m * s[0] * SIZE_SLACK, False, "dotrev")]
        if len(s) == 1 and shape == (s[0], s[0]):
            opts.append((f"np.outer({t}, {t})", -m * m, m * m, False, "outer"))
        if shape == (2 * s[0],) + s[1:]:
            opts += [(f"np.concatenate([{t}, {t}])", v.lo, v.hi, False, "concat"),
                     (f"np.concatenate([{t}, {t}[::-1]], axis=0)", v.lo, v.hi, False, "concatrev")]
        if shape == (2,) + s:
            opts.append((f"np.stack([{t}, 0.5 * {t}])", min(v.lo, 0.5 * v.lo),
                         max(v.hi, 0.5 * v.hi), False, "stack"))
        if shape == () and s:
            opts.append((f"np.sum({t} * {t}[..., ::-1])", -m * m * 60, m * m * 60, False,
                         "sumrev"))
        if not opts:
            return None
        text, lo, hi, tied, k = self.pick(opts)
        self.feat(f"selfuse_{k}")
        dup = v.dup or k in ("concat", "concatrev", "stack", "gather", "gather_sub", "gather_data",
                             "gram", "gramT", "outer", "rev", "fliplr")   # repeated entries
        return E(text, shape, "arr", lo, hi, v.tied or tied, dup, src, False)

    def p_extra(self, shape, depth):
        """Less common NumPy functions and knetc's own primitives."""
        k = self.pick(["power", "hypot", "arctan2", "logaddexp", "sort", "median", "average",
                       "take", "repeat", "pad", "tri", "diag", "norm", "cumprod", "knetc",
                       "linalg", "nll", "softmax"])
        self.feat(f"extra_{k}")
        if k == "power":
            base = self.positive(shape, depth - 1)
            if base.hi > 10 or base.lo < 0.05:
                raise GenFail
            ex = self.operand(shape, depth - 1)
            if ex.mag > 2 or _bshape(shape, ex.shape) != shape:
                raise GenFail
            lb = max(abs(math.log(base.lo)), abs(math.log(base.hi)))
            m = math.exp(ex.mag * lb)
            text = self.pick([f"np.power({base.text}, {ex.text})", f"{base.p} ** {ex.p}"])
            return E(text, shape, "arr", 1 / m, m, base.tied or ex.tied, base.dup or ex.dup,
                     base.src | ex.src, text.startswith("np.power"))
        if k in ("hypot", "arctan2", "logaddexp"):
            a = self.expr(shape, depth - 1)
            b = self.positive(shape, depth - 1) if k == "arctan2" else self.operand(shape, depth - 1)
            if _bshape(a.shape, b.shape) != shape:
                raise GenFail
            if k == "hypot":
                if a.gap < 0.1 and b.gap < 0.1 and not (b.lo > 0 or a.lo > 0):
                    raise GenFail
                return E(f"np.hypot({a.text}, {b.text})", shape, "arr", 0.0,
                         math.hypot(a.mag, b.mag), a.tied or b.tied, a.dup or b.dup,
                         a.src | b.src, True)
            if k == "arctan2":
                return E(f"np.arctan2({a.text}, {b.text})", shape, "arr", -1.6, 1.6,
                         a.tied or b.tied, a.dup or b.dup, a.src | b.src, True)
            return E(f"np.logaddexp({a.text}, {b.text})", shape, "arr",
                     max(a.lo, b.lo), max(a.hi, b.hi) + 0.7, a.tied or b.tied, a.dup or b.dup,
                     a.src | b.src, True)
        if k in ("sort", "median") and shape:
            if k == "sort":
                a = self.smooth_arg(shape, depth - 1)
                if a.dup:
                    raise GenFail
                self.fn.kinky = True
                return E(f"np.sort({a.text}, axis={self.r.randrange(len(shape))})", shape, "arr",
                         a.lo, a.hi, False, False, a.src, True)
            ax = self.r.randint(0, len(shape))
            if len(shape) >= 3:
                raise GenFail
            a = self.smooth_arg(shape[:ax] + (self.pick([3, 4, 5]),) + shape[ax:], depth - 1)
            if a.dup:
                raise GenFail
            self.fn.kinky = True
            return E(f"np.median({a.text}, axis={ax})", shape, "arr", a.lo, a.hi, False, False,
                     a.src, True)
        if k == "average" and len(shape) <= 1:
            n = self.pick([3, 4])
            a = self.expr(shape + (n,), depth - 1)
            wts = self.positive((n,), depth - 1)
            return E(f"np.average({a.text}, axis=-1, weights={wts.text})", shape, "arr", a.lo,
                     a.hi, a.tied, a.dup, a.src | wts.src, True)
        if k == "take" and shape:
            n = shape[0] + self.pick([0, 1])
            a = self.leaf((n,) + shape[1:])
            ix = [self.r.randrange(n) for _ in range(shape[0])]
            ix[-1] = ix[0]
            return E(f"np.take({a.text}, {ix}, axis=0)", shape, "arr", a.lo, a.hi, a.tied, True,
                     a.src, True)
        if k == "repeat" and shape and shape[-1] % 2 == 0:
            a = self.expr(shape[:-1] + (shape[-1] // 2,), depth - 1)
            return E(f"np.repeat({a.text}, 2, axis={len(shape) - 1})", shape, "arr", a.lo, a.hi,
                     a.tied, True, a.src, True)
        if k == "pad" and shape and all(x >= 3 for x in shape):
            a = self.expr(tuple(x - 2 for x in shape), depth - 1)
            return E(f"np.pad({a.text}, 1)", shape, "arr", min(a.lo, 0), max(a.hi, 0), True,
                     True, a.src, True)
        if k == "tri" and len(shape) == 2 and shape[0] == shape[1]:
            a = self.expr(shape, depth - 1)
            f = self.pick(["np.tril", "np.triu"])
            return E(f"{f}({a.text})", shape, "arr", min(a.lo, 0), max(a.hi, 0), True, True,
                     a.src, True)
        if k == "diag":
            if len(shape) == 2 and shape[0] == shape[1]:
                a = self.expr((shape[0],), depth - 1)
                return E(f"np.diag({a.text})", shape, "arr", min(a.lo, 0), max(a.hi, 0), True,
                         True, a.src, True)
            if len(shape) == 1:
                a = self.expr((shape[0], shape[0]), depth - 1)
                return E(f"np.diag({a.text})", shape, "arr", a.lo, a.hi, a.tied, a.dup, a.src,
                         True, alias=a.alias | {"<read-only view>"})
            if shape == ():
                n = self.pick([3, 4])
                a = self.expr((n, n), depth - 1)
                return E(f"np.trace({a.text})", (), "arr", a.lo * n * SIZE_SLACK,
                         a.hi * n * SIZE_SLACK, a.tied, False, a.src, True)
        if k == "norm":
            if shape == ():
                a = self.smooth_arg(self.pick([(4,), (3, 4)]), depth - 1)
                n = float(np.prod(a.shape)) * SIZE_SLACK
                return E(f"np.linalg.norm({a.text})", (), "arr", 0, a.mag * math.sqrt(n), False,
                         False, a.src, True)
            if len(shape) == 1:
                a = self.smooth_arg(shape + (self.pick([3, 4]),), depth - 1)
                return E(f"np.linalg.norm({a.text}, axis=1)", shape, "arr", 0, a.mag * 4, False,
                         False, a.src, True)
        if k == "cumprod" and shape:
            a = self.expr(shape, depth - 1)
            if a.mag > 1.2:
                raise GenFail
            return E(f"np.cumprod({a.text}, axis={len(shape) - 1})", shape, "arr", -2.5, 2.5,
                     a.tied, a.dup, a.src, True)
        if k == "knetc":
            if self.fn.kind == "helper" and self.chance(0.5):
                raise GenFail
            f = self.pick(["relu", "sigm", "elu"])
            a = self.smooth_arg(shape, depth - 1) if f != "sigm" else self.expr(shape, depth - 1)
            self.uses_knetc = True
            if f == "relu":
                self.fn.kinky = True
                return E(f"knetc.relu({a.text})", shape, "arr", max(0, a.lo), max(0, a.hi), True,
                         a.dup, a.src, True)
            if f == "sigm":
                return E(f"knetc.sigm({a.text})", shape, "arr", 0, 1, a.tied, a.dup, a.src, True)
            return E(f"knetc.elu({a.text})", shape, "arr", -1, max(a.hi, 0), a.tied, a.dup, a.src,
                     True)
        if k == "softmax" and shape:
            a = self.expr(shape, depth - 1)
            if a.mag > 20:
                raise GenFail
            self.uses_knetc = True
            f = self.pick(["knetc.softmax", "knetc.logp"])
            if f == "knetc.softmax":
                return E(f"{f}({a.text}, axis=-1)", shape, "arr", 0, 1, a.tied, a.dup, a.src, True)
            return E(f"{f}({a.text}, axis=-1)", shape, "arr", a.lo - a.hi - 5, 0, a.tied, a.dup,
                     a.src, True)
        if k == "nll" and shape == ():
            if self.fn.kind == "helper":
                raise GenFail
            scores = self.expr((3, 5), depth - 1)
            if scores.mag > 20:
                raise GenFail
            self.special_data("labels", Leaf("idx", ("n",), extra="m"))
            self.uses_knetc = True
            return E(f"knetc.nll({scores.text}, labels)", (), "arr", 0, 2 * scores.mag + 3,
                     scores.tied, False, scores.src, True)
        if k == "linalg" and len(shape) == 2 and shape[0] == shape[1] and shape[0] <= 5:
            n = shape[0]
            a = self.expr((n, self.pick([3, 4, 5])), depth - 1)
            if a.mag > 3 or a.kind != "arr":
                raise GenFail
            spd = f"{a.p} @ {a.p}.T + np.eye({n})"
            f = self.pick(["inv", "solve"])
            if f == "inv":
                text = f"np.linalg.inv({spd})"
            else:
                b = self.expr(shape, depth - 1)
                if b.mag > 5:
                    raise GenFail
                text = f"np.linalg.solve({spd}, {b.text})"
            self.feat(f"linalg_{f}")
            return E(text, shape, "arr", -5, 5, a.tied, True, a.src, True)
        if k == "linalg" and shape == ():
            n = self.pick([3, 4])
            a = self.expr((n, self.pick([3, 4])), depth - 1)
            if a.mag > 2 or a.kind != "arr":
                raise GenFail
            self.feat("linalg_slogdet")
            return E(f"np.linalg.slogdet({a.p} @ {a.p}.T + np.eye({n}))[1]", (), "arr", 0,
                     n * math.log(1 + a.mag ** 2 * 5 * SIZE_SLACK), a.tied, False, a.src, True)
        raise GenFail

    def p_misc_shape(self, shape, depth):
        k = self.pick(["flip", "roll", "cumsum", "tile", "expand", "squeeze", "diff", "outer"])
        self.feat(f"shape_{k}")
        if k == "flip":
            a = self.expr(shape, depth - 1)
            ax = self.r.randrange(len(shape))
            return a.view(f"np.flip({a.text}, axis={ax})", shape)
        if k == "roll":
            a = self.expr(shape, depth - 1)
            ax = self.r.randrange(len(shape))
            return E(f"np.roll({a.text}, 1, axis={ax})", shape, "arr", a.lo, a.hi, a.tied, a.dup,
                     a.src, True)
        if k == "cumsum":
            a = self.expr(shape, depth - 1)
            ax = self.r.randrange(len(shape))
            n = shape[ax] * SIZE_SLACK
            return E(f"np.cumsum({a.text}, axis={ax})", shape, "arr", min(a.lo, a.lo * n),
                     max(a.hi, a.hi * n), a.tied, a.dup, a.src, True)
        if k == "tile":
            if shape[0] % 2:
                raise GenFail
            a = self.expr((shape[0] // 2,) + shape[1:], depth - 1)
            reps = "(2,)" if len(shape) == 1 else f"({2}, {', '.join('1' for _ in shape[1:])})"
            return E(f"np.tile({a.text}, {reps})", shape, "arr", a.lo, a.hi, a.tied, True,
                     a.src, True)
        if k == "expand":
            if 1 not in shape:
                raise GenFail
            ax = shape.index(1)
            a = self.expr(shape[:ax] + shape[ax + 1:], depth - 1)
            if a.kind != "arr":
                raise GenFail
            return a.view(f"np.expand_dims({a.text}, {ax})", shape)
        if k == "squeeze":
            ax = self.r.randint(0, len(shape))
            a = self.expr(shape[:ax] + (1,) + shape[ax:], depth - 1)
            return a.view(f"np.squeeze({a.text}, axis={ax})", shape)
        if k == "diff":
            a = self.expr(shape[:-1] + (shape[-1] + 1,), depth - 1)
            return E(f"np.diff({a.text})", shape, "arr", a.lo - a.hi, a.hi - a.lo,
                     a.tied or a.dup, a.dup, a.src, True)
        if len(shape) != 2:
            raise GenFail
        a, b = self.expr((shape[0],), depth - 1), self.expr((shape[1],), depth - 1)
        lo, hi = _prod_bounds(a, b)
        return E(f"np.outer({a.text}, {b.text})", shape, "arr", lo, hi, a.tied or b.tied, True,
                 a.src | b.src, True)

    # calls ----------------------------------------------------------------------------------------
    def p_call(self, shape, depth):
        """Call a helper (module level), a closure or a lambda that returns this shape; or
        define a new one."""
        fns = [h for h in self.helpers if len(h.ret) == 1 and h.ret[0].shape == shape
               and not h.recursive]
        if fns and self.chance(0.6):
            return self.call_helper(self.pick(fns), depth)
        if self.fn.kind == "loss" or self.fn.kind == "closure":
            closures = [c for c in self.root.funcs if c[1].shape == shape]
            if closures and self.chance(0.8):
                return self.call_closure(self.pick(closures), depth)
        if self.fn.kind == "helper" or len(self.helpers) >= 4:
            raise GenFail
        h = self.make_helper([shape], depth)
        return self.call_helper(h, depth)

    def make_helper(self, ret_shapes, depth):
        """A new module-level function returning these shapes; its inputs become parameters."""
        name = self.fresh(self.pick(["layer", "block", "f", "score", "mix", "feat"]))
        outer = self.fn
        fn = Fn(name, "helper", indent=1)
        self.fn = fn
        try:
            nstmts = self.r.randint(0, 2)
            for _ in range(nstmts):
                self.stmt_assign(depth=2)
            rets = [self.expr(s, 2) for s in ret_shapes]
        finally:
            self.fn = outer
        if not fn.params:   # a helper with no input: give it one, used
            raise GenFail
        # defaults and keyword-only arguments: float knobs
        defaults, kwonly = [], []
        if self.chance(0.5):
            c = self.pick([0.5, 1.0, 2.0])
            defaults.append(("scale", E("scale", (), "pyf", 0.3, 2.0, src={f"@{name}.scale"}), fmt(c)))
            rets = [self.scaled(e, "scale", 0.3, 2.0) for e in rets]
        if self.chance(0.3):
            kwonly.append(("shift", E("shift", (), "pyf", -0.5, 0.5, src={f"@{name}.shift"}), "0.0"))
            rets = [E(f"{e.p} + shift", e.shape, "arr", e.lo - 0.5, e.hi + 0.5, e.tied, e.dup,
                      e.src, False) for e in rets]
        sig = [p for p, _, _ in fn.params] + [f"{p}={d}" for p, _, d in defaults]
        if kwonly:
            sig += ["*"] + [f"{p}={d}" for p, _, d in kwonly]
        lines = [f"def {name}({', '.join(sig)}):"] + fn.lines
        ret_text = ", ".join(e.text for e in rets)
        lines.append(f"    return {ret_text}")
        self.module_lines.append(lines)
        h = Helper(name, [(p, t) for p, t, _ in fn.params], defaults, kwonly,
                   [self.tame(e) for e in rets], fn.kinky)
        if any(r.mag > BIG for r in rets):
            raise GenFail
        self.helpers.append(h)
        self.feat("helper")
        return h

    def scaled(self, e, name, lo, hi):
        a, b = _prod_bounds(e, E("", (), lo=lo, hi=hi))
        return E(f"{e.p} * {name}", e.shape, "arr", a, b, e.tied, e.dup, e.src, False)

    def compatible(self, tmpl: E, arg: E):
        if tmpl.shape != arg.shape:
            return False
        if tmpl.kind == "pyf" and arg.kind == "int":
            return False
        return arg.lo >= tmpl.lo - 1e-12 and arg.hi <= tmpl.hi + 1e-12

    def call_args(self, params, depth, kinky):
        """Argument expressions fitting each parameter template."""
        args = []
        for pname, tmpl in params:
            for attempt in range(4):
                if tmpl.shape == ():
                    a = self.expr((), depth - 1, allow_py=True) if attempt < 3 else \
                        self.unary_apply("tanh", self.expr((), 0))
                else:
                    a = self.expr(tmpl.shape, depth - 1) if attempt < 2 else \
                        self.unary_apply(self.pick(["tanh", "sin"]), self.leaf(tmpl.shape))
                if self.compatible(tmpl, a) and (not a.tied or not kinky) and \
                        (not a.dup or not kinky):
                    break
            else:
                raise GenFail
            args.append(a)
        if kinky:
            for x, y in itertools.combinations(args, 2):
                if x.src & y.src:
                    raise GenFail
        return args

    def call_helper(self, h: Helper, depth):
        args = self.call_args(h.params, depth, h.kinky)
        texts = []
        kwstyle = self.chance(0.3) and len(h.params) > 1
        for (pname, _), a in zip(h.params, args):
            last = len(texts) == len(h.params) - 1
            texts.append(f"{pname}={a.text}" if kwstyle and last else a.text)
            if kwstyle and last:
                self.feat("call_keyword")
        scale = None
        for pname, tmpl, d in h.defaults:
            if self.chance(0.5):
                scale = self.pick([0.3, 0.5, 1.5])
                texts.append(f"{pname}={fmt(scale)}" if kwstyle or self.chance(0.6)
                             else fmt(scale))
                self.feat("call_default_given")
            else:
                self.feat("call_default_used")
        for pname, tmpl, d in h.kwonly:
            if self.chance(0.5):
                texts.append(f"{pname}={fmt(self.pick([0.2, -0.3]))}")
                self.feat("call_kwonly")
        src = frozenset().union(*(a.src for a in args))
        r = h.ret[0]
        self.feat("call_helper")
        return E(f"{h.name}({', '.join(texts)})", r.shape, "arr", r.lo, r.hi,
                 r.tied or any(a.tied for a in args), r.dup or any(a.dup for a in args),
                 src, True, alias=frozenset().union(*(a.alias for a in args)))

    def call_closure(self, c, depth):
        name, ret, params, kinky, has_c = c
        args = self.call_args(params, depth, kinky)
        self.feat("call_closure")
        texts = [a.text for a in args]
        if has_c and self.chance(0.5):
            texts.append(self.pick(["c=0.3", "0.8", "c=1.0"]))
            self.feat("call_closure_default_given")
        src = frozenset().union(*(a.src for a in args)) | ret.src
        return E(f"{name}({', '.join(texts)})", ret.shape, "arr", ret.lo, ret.hi,
                 ret.tied or any(a.tied for a in args), ret.dup or any(a.dup for a in args),
                 src, True, alias=ret.alias | frozenset().union(*(a.alias for a in args)))

    def p_ifexp(self, shape, depth):
        a = self.expr(shape, depth - 1)
        b = self.expr(shape, depth - 1)
        cond = self.condition(depth - 1)
        self.feat("ifexp")
        return E(f"{a.p} if {cond} else {b.p}", shape, a.kind if a.kind == b.kind else "arr",
                 min(a.lo, b.lo), max(a.hi, b.hi), a.tied or b.tied, a.dup or b.dup,
                 a.src | b.src, False, alias=a.alias | b.alias)

    def p_pyfloat(self, shape, depth):
        """Python float arithmetic on Python float parameters."""
        a = self.leaf((), allow_py=True)
        if a.kind != "pyf":
            a = self.new_leaf((), "pyf") if self.fn.kind != "helper" else a
        k = self.pick(["mul", "add", "abs", "pow", "max"])
        self.feat(f"pyfloat_{k}")
        if k == "mul":
            c = self.pick([0.5, 2.0, -1.5])
            lo, hi = sorted((a.lo * c, a.hi * c))
            return E(f"{fmt(c) if c > 0 else '(' + const(c).text + ')'} * {a.p}", (), a.kind,
                     lo, hi, a.tied, False, a.src)
        if k == "add":
            return E(f"{a.p} + 1.0", (), a.kind, a.lo + 1, a.hi + 1, a.tied, False, a.src)
        if k == "abs" and not a.tied and not a.const:
            self.fn.kinky = True
            return E(f"abs({a.text})", (), a.kind, 0.0, a.mag, False, False, a.src, True)
        if k == "max" and not a.tied and not a.const:
            self.fn.kinky = True
            return E(f"max({a.text}, 0.1)", (), a.kind, max(a.lo, 0.1), max(a.hi, 0.1), True,
                     False, a.src, True)
        return E(f"{a.p} ** 2", (), a.kind, 0.0, a.mag ** 2, a.tied, False, a.src)

    # conditions -------------------------------------------------------------------------------------
    def condition(self, depth, python_only=False, array_only=False):
        """A test for if/while/ternary: on a Python value or on an array's value."""
        k = "array" if array_only else self.wpick(
                       [(3, "array"), (1, "flag"), (1, "k"), (0.8, "shape"), (0.6, "pyparam"),
                        (0.5, "str"), (0.5, "global")] if not python_only else
                       [(1, "flag"), (1, "k"), (0.8, "shape"), (0.5, "str")])
        if self.fn.kind == "helper" and k in ("flag", "k", "str", "pyparam"):
            k = "array"
        if k == "array":
            s = self.pick([(), (4,), (3, 4), (3,)])
            a = self.smooth_arg(s, max(depth, 0))
            self.fn.kinky = True
            self.feat("if_array")
            c = self.pick(["0", "0.0", "0.1", "-0.2"])
            if s == ():
                form = self.pick(["{} > {}", "{} < {}", "float({}) > {}"])
                return form.format(a.text if form.startswith("float") else a.p, c)
            form = self.pick(["np.sum({}) > {}", "{}.mean() < {}", "np.max({}) > {}",
                              "{}.sum() > {}", "np.mean({}) >= {}"])
            if "max" in form and a.dup:
                form = "np.sum({}) > {}"
            text = form.format(a.p if form.startswith("{}") else a.text, c)
            if self.chance(0.15):
                text = f"{text} and {self.condition(0, python_only=True)}"
            return text
        if k == "flag":
            self.special_data("flag", Leaf("bool", (), extra=(True, False)))
            self.feat("if_flag")
            return self.pick(["flag", "not flag"])
        if k == "k":
            self.special_data("k", Leaf("int", (), extra=(1, 2)))
            self.feat("if_int")
            return self.pick(["k > 1", "k == 1", "k >= 2"])
        if k == "shape":
            cands = [(n, v, f) for n, v, f in self.visible_vars() if v.kind == "arr" and v.shape
                     and _DIM_OF.get(v.shape[0]) == "n" and f is self.fn]
            if not cands:
                return "True" if self.chance(0.2) else self.condition(depth, python_only)
            n, v, f = self.pick(cands)
            self.feat("if_shape")
            return self.pick([f"{n}.shape[0] > 4", f"len({n}) <= 3", f"{n}.shape[0] == 3"])
        if k == "pyparam":
            if self.w_style != "dict":
                return self.condition(depth, python_only)
            a = self.new_param((), "pyf", ("sym", 0.2, 1.0))
            self.feat("if_pyfloat_param")
            return f"{a.text} > 0"
        if k == "str":
            if self.w_style != "dict":
                return self.condition(depth, python_only)
            if "act" not in self.w_tree:
                self.w_tree["act"] = Leaf("str", (), extra=("tanh", "sin"))
            self.feat("if_str_leaf")
            return self.pick(['w["act"] == "tanh"', 'w["act"] != "sin"'])
        g = self.global_float()
        self.feat("if_global")
        return f"{g.text} > 0.6"

    # statements -------------------------------------------------------------------------------------
    def new_name(self, shape):
        return self.fresh({0: "s", 1: "v", 2: "h"}.get(len(shape), "t"))

    def some_shape(self):
        return self.wpick([(3, (3, 4)), (2, (4,)), (1.5, ()), (1, (3, 5)), (1, (5,)),
                           (1, (4, 5)), (0.7, (3,)), (0.4, (3, 1)), (0.4, (1, 4)),
                           (0.5, (2, 4)), (0.3, (3, 4, 5)), (0.3, (2, 3, 4))])

    def bind(self, name, e, owned=True):
        """name = e: the name now holds e; names e may share memory with are no longer the only
        holders of their arrays (no ``+=`` on them: that would write through the view)."""
        fn = self.fn
        for a in e.alias:
            fn.owned.discard(a)
        fn.vars[name] = e.named(name)
        if owned and e.kind == "arr" and not (e.alias - {name}) and name not in fn.frozen:
            fn.owned.add(name)
        else:
            fn.owned.discard(name)

    def shared(self, e):
        """e is stored somewhere else too (a list, a container): its names lose ownership."""
        for a in e.alias:
            self.fn.owned.discard(a)

    def stmt_assign(self, depth=None, shape=None, name=None):
        shape = self.some_shape() if shape is None else shape
        e = self.expr(shape, depth or self.depth_limit)
        name = name or self.new_name(shape)
        self.fn.emit(f"{name} = {e.text}")
        self.bind(name, e)
        return name

    def rebindable(self):
        fn = self.fn
        return [(k, v) for k, v in fn.vars.items()
                if k.isidentifier() and k not in fn.frozen and k not in fn.loop_vars
                and v.kind in ("arr", "pyf") and not any(k == p for p, _, _ in fn.params)]

    def stmt_rebind(self, depth):
        """h = f(h, ...): a new value under the same name."""
        cands = self.rebindable()
        if not cands:
            return self.stmt_assign()
        k, v = self.pick(cands)
        self.fn.state.add(k)
        try:
            e = self.expr(v.shape, depth)
        finally:
            self.fn.state.discard(k)
        if v.shape == ():
            pass
        self.fn.emit(f"{k} = {e.text}")
        self.bind(k, e)
        self.feat("rebind")

    def stmt_augassign(self, depth):
        fn = self.fn
        cands = [(k, v) for k, v in self.rebindable() if k in fn.owned or v.kind == "pyf"]
        if not cands:
            return self.stmt_accumulate(depth)
        k, v = self.pick(cands)
        op = self.pick(["+=", "-=", "*="])
        b = self.operand(v.shape, depth - 1) if v.shape else self.expr((), depth - 1)
        if _bshape(v.shape, b.shape) != v.shape:
            b = self.expr(v.shape, depth - 1)
        if op == "*=":
            if b.mag > 2:
                b = self.unary_apply("tanh", b)
            lo, hi = _prod_bounds(v, b)
        elif op == "+=":
            lo, hi = v.lo + b.lo, v.hi + b.hi
        else:
            lo, hi = v.lo - b.hi, v.hi - b.lo
        kind = v.kind if v.kind == b.kind or (v.kind == "pyf" and b.kind == "int") else "arr"
        if v.kind == "pyf" and b.kind == "arr" and b.shape == ():
            kind = "arr"
        tied = v.tied or b.tied or bool(v.src & b.src and op == "-=")
        e = E(k, v.shape, kind, lo, hi, tied, v.dup or b.dup, v.src | b.src, True)
        fn.emit(f"{k} {op} {b.text}")
        self.bind(k, self.tame_var(k, e))
        self.feat("augassign" + ("_array" if v.shape else "_scalar"))

    def tame_var(self, k, e):
        if e.mag > BIG:
            self.fn.emit(f"{k} = np.tanh({k})")
            return E(k, e.shape, "arr", math.tanh(e.lo), math.tanh(e.hi), e.tied, e.dup, e.src,
                     True)
        return e

    def stmt_accumulate(self, depth):
        name = self.fresh("total")
        self.fn.emit(f"{name} = 0.0")
        self.bind(name, const(0.0))
        e = self.expr((), depth, allow_py=True)
        self.fn.emit(f"{name} += {e.text}")
        self.bind(name, E(name, (), "arr" if e.kind == "arr" else "pyf", min(0, e.lo),
                          max(0, e.hi), e.tied, False, e.src, True))
        self.feat("accumulate")

    def stmt_if(self, depth):
        """if/elif/else assigning the same names in every branch."""
        fn = self.fn
        cond = self.condition(depth - 1)
        shape = self.some_shape()
        rebind = self.rebindable()
        target_old = None
        if rebind and self.chance(0.4):
            target, target_old = self.pick(rebind)
            shape = target_old.shape
        else:
            target = self.new_name(shape)
        nbranch = 3 if self.chance(0.2) else 2
        conds = [cond] + ([self.condition(depth - 1)] if nbranch == 3 else [])
        results = []
        saved_vars, saved_owned = dict(fn.vars), set(fn.owned)
        still_owned = set(saved_owned)
        for b in range(nbranch):
            if b:
                still_owned &= fn.owned
            fn.vars, fn.owned = dict(saved_vars), set(saved_owned)
            head = "if" if b == 0 else "elif" if b < nbranch - 1 else "else"
            fn.emit(f"{head} {conds[b]}:" if head != "else" else "else:")
            fn.indent += 1
            if target_old is not None and b == nbranch - 1 and self.chance(0.3):
                fn.emit("pass")
                results.append(target_old)
            else:
                for _ in range(self.r.randint(0, 1)):
                    self.stmt_assign(depth=2)
                if target_old is not None:
                    fn.state.add(target)
                e = self.expr(shape, depth)
                fn.state.discard(target)
                fn.emit(f"{target} = {e.text}")
                results.append(e)
            fn.indent -= 1
        fn.vars, fn.owned = saved_vars, still_owned & fn.owned
        e = results[0]
        for r in results[1:]:
            e = union(e, r)
        self.bind(target, e, owned=False)
        self.feat("if_stmt" + ("_elif" if nbranch == 3 else ""))

    # loops ----------------------------------------------------------------------------------------
    def loop_header(self):
        """A for-loop header: (text, {name: E} bound per iteration, iterations (max), int names,
        fixed: whether the count is the same for every call of this shape)."""
        fn = self.fn
        k = self.wpick([(3, "range"), (2, "params"), (1, "rows"), (1, "seq"), (0.6, "enumerate"),
                        (0.6, "zip"), (0.4, "pairs"), (0.5, "keys"), (0.5, "items")])
        if fn.kind != "loss" and k not in ("range", "rows"):
            k = "range"
        if k == "range":
            rk = self.pick(["lit", "len", "shape", "k", "lit", "wint"])
            n = self.pick([2, 3])
            rtext, fixed = str(n), True
            if rk in ("len", "shape"):
                cands = [(nm, v, f) for nm, v, f in self.visible_vars()
                         if nm.isidentifier() and v.kind == "arr" and v.shape
                         and 2 <= v.shape[0] <= 5]
                if cands:
                    nm, v, f = self.pick(cands)
                    self.use_var(nm, f)
                    n = v.shape[0]
                    rtext = f"len({nm})" if rk == "len" else f"{nm}.shape[0]"
                else:
                    rk = "lit"
            elif rk == "k" and fn.kind == "loss":
                self.special_data("k", Leaf("int", (), extra=(1, 2)))
                rtext, n, fixed = "k", 2, False
            elif rk == "wint" and self.w_style == "dict" and fn.kind == "loss":
                if "n" not in self.w_tree:
                    self.w_tree["n"] = Leaf("int", (), extra=(2, 3))
                rtext, n, fixed = 'w["n"]', 3, False
            else:
                rk = "lit"
            i = self.fresh("i")
            ie = E(i, (), "int", 0, n - 1, src={i}, atom=True)
            self.feat(f"loop_range_{rk}")
            if self.chance(0.15) and rk == "lit":
                self.feat("loop_range_start")
                return (f"for {i} in range(1, {n + 1}):", {i: E(i, (), "int", 1, n, src={i},
                                                                atom=True)}, n, {i}, fixed)
            return (f"for {i} in range({rtext}):", {i: ie}, n, {i}, fixed)
        if k == "enumerate":
            g = self.param_group()
            if g is None:
                return None
            text, tmpl, length = g
            i, p = self.fresh("i"), self.fresh("p")
            ie = E(i, (), "int", 0, length - 1, src={i}, atom=True)
            self.feat("loop_enumerate")
            return (f"for {i}, {p} in enumerate({text}):", {i: ie, p: tmpl}, length, {i}, True)
        if k == "params":
            g = self.param_group()
            if g is None:
                return None
            text, tmpl, length = g
            p = self.fresh("p")
            self.feat("loop_params")
            return (f"for {p} in {text}:", {p: tmpl}, length, set(), True)
        if k == "pairs":
            g = self.pair_group()
            if g is None:
                return None
            text, (t1, t2), length = g
            a, b = self.fresh("W"), self.fresh("b")
            self.feat("loop_pairs")
            return (f"for {a}, {b} in {text}:", {a: t1, b: t2}, length, set(), True)
        if k == "zip":
            g1, g2 = self.param_group(), self.param_group(fresh_only=True)
            if g1 is None or g2 is None:
                return None
            a, b = self.fresh("p"), self.fresh("q")
            self.feat("loop_zip")
            return (f"for {a}, {b} in zip({g1[0]}, {g2[0]}):", {a: g1[1], b: g2[1]},
                    min(g1[2], g2[2]), set(), True)
        if k == "rows":
            cands = [(nm, v, f) for nm, v, f in self.visible_vars()
                     if nm.isidentifier() and v.kind == "arr" and len(v.shape) >= 2
                     and v.shape[0] <= 5]
            if not cands:
                return None
            nm, v, f = self.pick(cands)
            self.use_var(nm, f)
            r = self.fresh("row")
            self.feat("loop_rows")
            return (f"for {r} in {nm}:", {r: v.view(r, v.shape[1:])}, v.shape[0], set(),
                    _DIM_OF.get(v.shape[0]) != "n")
        if k == "seq":
            if "xs" not in self.data:
                self.special_data("xs", Leaf("seq", ("n", "d"), ("sym", 0.1, 1.0), extra=3))
            xt = self.fresh("xt")
            self.feat("loop_seq")
            return (f"for {xt} in xs:", {xt: E(xt, (3, 4), "arr", -1, 1, src={"xs"}, atom=True)},
                    3, set(), True)
        if k == "items":
            if self.w_style != "dict":
                return None
            shape = self.pick([(4,), (3, 4), ()])
            length = self.pick([2, 3])
            dist = ("sym", 0.2, 1.0)
            key = f"sub{next(self.wkeys)}"
            self.w_tree[key] = {n: Leaf("arr" if shape or self.chance(0.5) else "pyf",
                                        sym_shape(shape), dist) for n in "abc"[:length]}
            p = self.fresh("p")
            tmpl = self.leaf_E(p, shape, dist, f"@sub{key}")
            self.feat("loop_dict_items")
            if self.chance(0.5):
                kk = self.fresh("name")
                return (f'for {kk}, {p} in w["{key}"].items():', {p: tmpl}, length, set(), True)
            return (f'for {p} in w["{key}"].values():', {p: tmpl}, length, set(), True)
        if k == "keys":
            if self.w_style != "dict":
                return None
            shape = self.pick([(4,), (4, 4), ()])
            length = self.pick([2, 3])
            dist = ("sym", 0.2, 1.0)
            keys = [f"g{next(self.wkeys)}" for _ in range(length)]
            for key in keys:
                self.w_tree[key] = Leaf("arr", sym_shape(shape), dist)
            kk = self.fresh("key")
            self.feat("loop_dict_keys")
            tmpl = self.leaf_E(f"w[{kk}]", shape, dist, f"@keys{kk}")
            keys_text = "[" + ", ".join(f'"{k}"' for k in keys) + "]"
            return (f"for {kk} in {keys_text}:", {f"w[{kk}]": tmpl}, length, set(), True)
        return None

    def param_group(self, fresh_only=False):
        """A list of same-shaped parameters in w (new, or one made before): (text, E, length)."""
        if self.w_style not in ("dict", "list"):
            return None
        if self.groups and not fresh_only and self.chance(0.5):
            return self.pick(self.groups)
        shape = self.pick([(4, 4), (4,), (), (4, 5), (5, 5), (3, 4)])
        length = self.pick([2, 3])
        dist = ("sym", 0.2, 1.0)
        leaves = [Leaf("arr" if shape or self.chance(0.5) else "pyf", sym_shape(shape), dist)
                  for _ in range(length)]
        if self.w_style == "dict":
            key = f"layers{next(self.wkeys)}"
            self.w_tree[key] = leaves if self.chance(0.8) else tuple(leaves)
            text = f'w["{key}"]'
        else:
            self.w_tree.append(leaves)
            text = f"w[{len(self.w_tree) - 1}]"
        if self.fn.kind == "loss" and self.chance(0.3):
            alias = self.fresh("ws")
            self.aliases.append((alias, text))
            text = alias
        tmpl = self.leaf_E("", shape, dist, f"@{text}")
        self.groups.append((text, tmpl, length))
        self.feat("param_list")
        return text, tmpl, length

    def pair_group(self):
        if self.w_style not in ("dict", "list"):
            return None
        d = self.pick([4, 5])
        length = self.pick([2, 3])
        dist = ("sym", 0.2, 1.0)
        pairs = [(Leaf("arr", sym_shape((d, d)), dist), Leaf("arr", sym_shape((d,)), dist))
                 for _ in range(length)]
        if self.w_style == "dict":
            key = f"pairs{next(self.wkeys)}"
            self.w_tree[key] = pairs
            text = f'w["{key}"]'
        else:
            self.w_tree.append(pairs)
            text = f"w[{len(self.w_tree) - 1}]"
        t1 = self.leaf_E("", (d, d), dist, f"@{text}.W")
        t2 = self.leaf_E("", (d,), dist, f"@{text}.b")
        self.feat("param_pairs")
        return text, (t1, t2), length

    def stmt_loop(self, depth):
        """A for (or while) loop: an accumulator, a recurrence or a list built with append."""
        fn = self.fn
        hdr = self.loop_header() if self.chance(0.85) else None
        is_while = hdr is None and fn.kind == "loss"
        if hdr is None and not is_while:
            return self.stmt_assign()
        pattern = self.wpick([(3, "acc"), (2.5, "rec"), (1.5, "append"), (0.7, "acc_array")])
        if hdr is not None:
            header, loopvars, n_iter, ints, fixed = hdr
        else:
            j = self.fresh("j")
            n_iter, fixed = self.pick([2, 3]), True
            fn.emit(f"{j} = 0")
            header = f"while {j} < {n_iter}:"
            loopvars = {j: E(j, (), "int", 0, n_iter - 1, src={j}, atom=True)}
            ints = {j}
            self.feat("loop_while")
        # the loop-carried name
        if pattern == "rec":
            rb = [(k, v) for k, v in self.rebindable() if v.kind == "arr" and v.shape
                  and v.shape[-1] in (4, 5)]
            if rb and self.chance(0.6):
                state, old = self.pick(rb)
            else:
                shape = self.pick([(3, 4), (4,), (3, 5), (5,)])
                state = self.new_name(shape)
                e = self.expr(shape, 2)
                fn.emit(f"{state} = {e.text}")
                self.bind(state, e)
                old = fn.vars[state]
            shape = old.shape
            # the state inside the body: anything the first value or a squashed value can be
            inside = E(state, shape, "arr", min(old.lo, -1), max(old.hi, 1), old.tied, old.dup,
                       old.src, True, alias={state})
        elif pattern in ("acc", "acc_array"):
            state = self.fresh("acc")
            if pattern == "acc_array":
                shape = self.pick([(4,), (3, 4), (5,)])
                init = self.pick([f"np.zeros({shape if len(shape) > 1 else shape[0]})", "0.0"])
                fn.emit(f"{state} = {init}")
            else:
                shape = ()
                fn.emit(f"{state} = {self.pick(['0.0', '0'])}")
        else:
            state = self.fresh("outs")
            shape = self.pick([(4,), (3, 4), (), (5,)])
            fn.emit(f"{state} = []")
        if is_while and pattern in ("rec", "acc") and self.chance(0.5):
            # a test on an array's value too: the number of iterations depends on the values
            saved = fn.vars.get(state)
            if pattern == "rec":
                fn.vars[state] = inside
            cond = self.condition(1, array_only=True)
            if saved is not None:
                fn.vars[state] = saved
            header = header[:-1] + f" and {cond}:"
            fixed = False
            self.feat("loop_while_array")
        fn.emit(header)
        fn.indent += 1
        saved_vars, saved_owned = dict(fn.vars), set(fn.owned)
        saved_loop = set(fn.loop_vars)
        for name, e in loopvars.items():
            fn.vars[name] = e if "[" in name else e.named(name)
        fn.loop_vars |= set(loopvars)
        if pattern == "rec":
            fn.vars[state] = inside
            fn.state.add(state)
        count = n_iter    # iterations that reach the end of the body
        try:
            if ints and fixed and self.chance(0.25):
                iv = next(iter(ints))
                lo = int(loopvars[iv].lo)
                if self.chance(0.5):
                    c = lo + self.pick([0, 1])
                    fn.emit(f"if {iv} == {c}:")
                    fn.emit("    continue")
                    count = n_iter - 1 if c < lo + n_iter else n_iter
                    self.feat("loop_continue")
                    if is_while:    # the counter must still advance
                        fn.lines.insert(len(fn.lines) - 1, "    " * (fn.indent + 1) + f"{iv} += 1")
                else:
                    c = lo + self.pick([1, 2])
                    fn.emit(f"if {iv} >= {c}:")
                    fn.emit("    break")
                    count = min(n_iter, c - lo)
                    self.feat("loop_break")
            for _ in range(self.r.randint(0, 1)):
                self.stmt_assign(depth=2)
            if pattern == "rec":
                body = self.expr(shape, depth)
                sq = self.pick(["tanh", "sin", "tanh"])
                new = self.unary_apply(sq, body)
                if self.chance(0.3):
                    new = E(f"0.5 * {state} + 0.5 * {new.p}", shape, "arr",
                            0.5 * inside.lo - 0.5, 0.5 * inside.hi + 0.5, new.tied, new.dup,
                            new.src | {state}, False)
                    self.feat("loop_residual")
                fn.emit(f"{state} = {new.text}")
                after = union(old, new, state)
                if not new.tied and self.chance(0.2):
                    c = self.pick(["0.2", "0", "-0.3"])
                    fn.emit(f"if {self.pick(['np.mean', 'np.sum'])}({state}) > {c}:")
                    fn.emit("    break")
                    self.feat("loop_break_array")
            elif pattern in ("acc", "acc_array"):
                term = self.expr(shape, depth, allow_py=not shape)
                op = self.pick(["+=", "+=", "-=", "= {} +"])
                if op == "= {} +":
                    fn.emit(f"{state} = {state} + {term.p}")
                else:
                    fn.emit(f"{state} {op} {term.text}")
                m = term.mag * (n_iter + 2)
                after = E(state, shape, "arr", -m, m, term.tied, term.dup, term.src, True)
            else:
                term = self.expr(shape, depth)
                self.shared(term)
                fn.emit(f"{state}.append({term.text})")
            if is_while:
                fn.emit(f"{next(iter(ints))} += 1")
        finally:
            fn.indent -= 1
            fn.vars, fn.owned = saved_vars, saved_owned & fn.owned
            fn.loop_vars = saved_loop
            fn.state.discard(state)
        self.feat(f"loop_{pattern}")
        if pattern != "append":
            self.bind(state, self.tame_var(state, after), owned=pattern != "rec")
            return
        if count <= 0:
            raise GenFail
        k = self.pick(["stack", "sum", "concat", "index", "list"])
        res = self.new_name(shape)
        m = term.mag
        if not fixed and k in ("stack", "concat"):
            k = "sum"
        if k == "stack" or (k == "concat" and not shape):
            fn.emit(f"{res} = np.stack({state})")
            self.bind(res, E(res, (count,) + shape, "arr", term.lo, term.hi, term.tied, True,
                             term.src, True))
            self.feat("list_stack")
        elif k == "concat":
            fn.emit(f"{res} = np.concatenate({state})")
            self.bind(res, E(res, (shape[0] * count,) + shape[1:], "arr", term.lo, term.hi,
                             term.tied, True, term.src, True))
            self.feat("list_concat")
        elif k == "sum":
            fn.emit(f"{res} = sum({state})")
            self.bind(res, E(res, shape, "arr", -m * (n_iter + 2), m * (n_iter + 2), term.tied,
                             term.dup, term.src, True))
            self.feat("list_builtin_sum")
        else:
            fn.emit(f"{res} = {state}[-1] * {state}[0]")
            self.bind(res, E(res, shape, "arr", -m * m, m * m, term.tied, term.dup, term.src,
                             True))
            self.feat("list_index")

    def stmt_closure(self, depth):
        """def f(z, c=0.5): ... over the loss's locals, or a lambda; called right away too."""
        fn = self.fn
        if fn.kind not in ("loss",):
            return self.stmt_assign()
        name = self.fresh("g")
        shape = self.some_shape()
        pshape = self.pick([shape, (), (4,)]) if shape else ()
        tmpl = E("inp", pshape, "arr", -1, 1, src={f"@{name}.inp"}, atom=True)
        inner = Fn(name, "closure", parent=fn, indent=fn.indent + 1)
        inner.vars["inp"] = tmpl
        outer = self.fn
        self.fn = inner
        is_lambda = self.chance(0.45)
        try:
            if not is_lambda:
                for _ in range(self.r.randint(0, 1)):
                    self.stmt_assign(depth=2)
            body = self.expr(shape, 2)
        finally:
            self.fn = outer
        default = self.chance(0.4)
        if default:
            body = self.scaled(body, "c", 0.3, 1.0)
        sig = "inp, c=0.5" if default else "inp"
        if is_lambda:
            fn.emit(f"{name} = lambda {sig}: {body.text}")
            self.feat("lambda")
        else:
            fn.emit(f"def {name}({sig}):")
            fn.lines.extend(inner.lines)
            fn.emit(f"    return {body.text}")
            self.feat("closure_def")
        if body.mag > BIG:
            body = self.unary_apply("tanh", body)
            return
        entry = (name, body, [("inp", tmpl)], inner.kinky, default)
        fn.funcs.append(entry)
        res = self.new_name(body.shape)
        call = self.call_closure(entry, 2)
        fn.emit(f"{res} = {call.text}")
        self.bind(res, call)
        # freeze the names the closure reads: the loss does not rebind them afterwards
        used = set(re.findall(r"[A-Za-z_]\w*", body.text + " " + " ".join(inner.lines)))
        for k in list(fn.vars):
            if k in used:
                fn.frozen.add(k)
                fn.owned.discard(k)

    def stmt_tuple(self, depth):
        """a, b = helper(...) with a tuple result."""
        if self.fn.kind != "loss" or len(self.helpers) >= 4:
            return self.stmt_assign()
        s1, s2 = self.some_shape(), self.pick([(), (4,)])
        h = self.make_helper([s1, s2], depth)
        args = self.call_args(h.params, depth, h.kinky)
        a, b = self.new_name(s1), self.new_name(s2)
        self.fn.emit(f"{a}, {b} = {h.name}({', '.join(x.text for x in args)})")
        src = frozenset().union(*(x.src for x in args))
        for nm, r in zip((a, b), h.ret):
            self.bind(nm, E(nm, r.shape, "arr", r.lo, r.hi, r.tied or any(x.tied for x in args),
                            r.dup or any(x.dup for x in args), src, True,
                            alias=frozenset().union(*(x.alias for x in args))))
        self.feat("tuple_unpack")

    def stmt_container(self, depth):
        """A list or dict literal of values, read back by index / key / sum / comprehension."""
        fn = self.fn
        shape = self.pick([(4,), (3, 4), ()])
        es = [self.expr(shape, depth - 1) for _ in range(self.pick([2, 3]))]
        name = self.fresh("items")
        kind = self.pick(["list", "dict", "tuple"])
        for e in es:
            self.shared(e)
        if kind == "dict":
            keys = [f'"{c}"' for c in "abc"[:len(es)]]
            fn.emit(f"{name} = {{{', '.join(f'{k}: {e.text}' for k, e in zip(keys, es))}}}")
        elif kind == "list":
            fn.emit(f"{name} = [{', '.join(e.text for e in es)}]")
        else:
            fn.emit(f"{name} = ({', '.join(e.text for e in es)},)")
        m = max(e.mag for e in es)
        src = frozenset().union(*(e.src for e in es))
        tied = any(e.tied for e in es)
        res = self.new_name(shape)
        how = self.pick(["index", "sum", "comp", "loop"])
        if kind == "dict":
            if how == "index":
                text = f'{name}["a"] * {name}["b"]'
                lo, hi = -m * m, m * m
            elif how == "comp":
                text = f"sum(np.sum(np.tanh(val)) for val in {name}.values())"
                shape, lo, hi = (), -50, 50
            elif how == "loop":
                text = f"sum({name}[key] for key in {name})"
                lo, hi = -m * len(es), m * len(es)
            else:
                text = f"sum({name}.values())"
                lo, hi = -m * len(es), m * len(es)
        else:
            if how == "index":
                text = f"{name}[0] - {name}[-1] * {name}[1]"
                lo, hi = -m - m * m, m + m * m
                tied = tied or len(es) == 2
            elif how == "comp":
                text = f"sum([np.sum(item ** 2) for item in {name}])"
                shape, lo, hi = (), 0, m * m * 100
            elif how == "loop":
                text = f"sum(item * 0.5 for item in {name})"
                lo, hi = -m * len(es), m * len(es)
            else:
                text = f"sum({name})"
                lo, hi = -m * len(es), m * len(es)
        fn.emit(f"{res} = {text}")
        self.bind(res, self.tame_var(res, E(res, shape, "arr", lo, hi, tied, False, src, True)))
        self.feat(f"container_{kind}_{how}")

    def stmt_recursive(self, depth):
        """A recursive helper over a list of square matrices."""
        if self.fn.kind != "loss" or any(h.recursive for h in self.helpers):
            return self.stmt_assign()
        g = self.param_group()
        if g is None or len(g[1].shape) != 2 or g[1].shape[0] != g[1].shape[1]:
            return self.stmt_assign()
        text, tmpl, length = g
        d = tmpl.shape[0]
        name = self.fresh("chain")
        self.module_lines.append([
            f"def {name}(h, ws, i=0):",
            "    if i == len(ws):",
            "        return h",
            f"    return {name}(np.tanh(h @ ws[i]), ws, i + 1)"])
        self.helpers.append(Helper(name, [], [], [], [E("", (3, d))], False, recursive=True))
        x = self.expr((3, d), 2)
        res = self.new_name((3, d))
        self.fn.emit(f"{res} = {name}({x.text}, {text})")
        self.bind(res, E(res, (3, d), "arr", -1, 1, x.tied, x.dup, x.src | tmpl.src, True))
        self.feat("recursion")

    def stmt_comprehension(self, depth):
        g = self.param_group()
        if g is None:
            return self.stmt_assign()
        text, tmpl, length = g
        res = self.fresh("reg")
        k = self.pick(["gen", "list", "dict"])
        if k == "gen":
            self.fn.emit(f"{res} = sum(np.sum(p * p) for p in {text})")
        elif k == "list":
            self.fn.emit(f"{res} = np.sum(np.stack([np.tanh(p) for p in {text}]) ** 2)")
        else:
            self.fn.emit(f"{res} = sum(np.mean(v) for v in "
                         f"{{str(j): p for j, p in enumerate({text})}}.values())")
        n = float(np.prod(tmpl.shape)) * length
        self.bind(res, E(res, (), "arr", -n, n, False, False, tmpl.src, True))
        self.feat(f"comprehension_{k}")

    def stmt_python(self, depth):
        """Python idioms around values: swaps, starred unpacking, the walrus, a closure made by
        a factory, *args helpers, reversed/sliced parameter lists, ws[i] in a range loop."""
        fn = self.fn
        if fn.kind != "loss":
            return self.stmt_assign()
        k = self.pick(["swap", "starred", "walrus", "factory", "varargs", "sliced", "indexed",
                       "filter", "nested"])
        self.feat(f"py_{k}")
        if k == "swap":
            cands = {}
            for n, v in self.rebindable():
                cands.setdefault((v.shape, v.kind), []).append((n, v))
            pairs = [c for c in cands.values() if len(c) >= 2]
            if not pairs:
                raise GenFail
            (a, va), (b, vb) = self.r.sample(self.pick(pairs), 2)
            fn.emit(f"{a}, {b} = {b}, {a}")
            fn.vars[a], fn.vars[b] = vb.named(a), va.named(b)
            fn.owned.discard(a)
            fn.owned.discard(b)
            return
        if k == "starred":
            shape = self.pick([(4,), (3, 4), ()])
            es = [self.expr(shape, depth - 1) for _ in range(3)]
            a, rest = self.new_name(shape), self.fresh("rest")
            fn.emit(f"{a}, *{rest} = [{', '.join(e.text for e in es)}]")
            self.bind(a, es[0])
            for e in es[1:]:
                self.shared(e)
            res = self.new_name(shape)
            fn.emit(f"{res} = {a} * {rest}[-1] + sum({rest})")
            m = max(e.mag for e in es)
            self.bind(res, self.tame_var(res, E(res, shape, "arr", -m * m - 2 * m, m * m + 2 * m,
                                                any(e.tied for e in es), False,
                                                frozenset().union(*(e.src for e in es)), True)))
            return
        if k == "walrus":
            shape = self.pick([(4,), (3, 4)])
            e = self.expr(shape, depth - 1)
            t = self.new_name(shape)
            res = self.new_name(())
            fn.emit(f"{res} = np.sum(({t} := {e.text}) * {t})")
            self.bind(t, e)
            self.bind(res, E(res, (), "arr", 0, e.mag ** 2 * 60, e.tied, False, e.src, True))
            return
        if k == "factory":
            name = self.fresh("make")
            c = self.pick([0.5, 2.0, -1.0])
            act = self.pick(["np.tanh", "np.sin"])
            self.module_lines.append([f"def {name}(scale, shift=0.0):",
                                      f"    return lambda z: {act}(z * scale + shift)"])
            f = self.fresh("act")
            fn.emit(f"{f} = {name}({fmt(c) if c > 0 else const(c).text}"
                    + (", shift=0.1)" if self.chance(0.4) else ")"))
            shape = self.some_shape()
            arg = self.expr(shape, depth - 1)
            res = self.new_name(shape)
            fn.emit(f"{res} = {f}({arg.text}) + {f}({arg.p} * 0.5)")
            self.bind(res, E(res, shape, "arr", -2, 2, arg.tied, arg.dup, arg.src, True))
            return
        if k == "varargs":
            name = self.fresh("total")
            if not any(h.name.startswith("vsum") for h in self.helpers):
                self.module_lines.append(["def vsum(*xs, weight=1.0, **unused):",
                                          "    out = 0.0",
                                          "    for x_ in xs:",
                                          "        out = out + np.sum(np.tanh(x_)) * weight",
                                          "    return out"])
                self.helpers.append(Helper("vsum", [], [], [], [E("", ())], False, recursive=True))
            es = [self.expr(self.some_shape(), depth - 1) for _ in range(self.pick([1, 2, 3]))]
            extra = self.pick(["", ", weight=0.5", ", weight=2.0, note=1"])
            if self.chance(0.3):
                fn.emit(f"{name} = vsum(*[{', '.join(e.text for e in es)}]{extra})")
            else:
                fn.emit(f"{name} = vsum({', '.join(e.text for e in es)}{extra})")
            n = 2 * sum(float(np.prod(e.shape)) for e in es) * SIZE_SLACK
            self.bind(name, self.tame_var(name, E(name, (), "arr", -n, n, any(e.tied for e in es),
                                                  False, frozenset().union(*(e.src for e in es)),
                                                  True)))
            return
        if k in ("sliced", "indexed", "filter"):
            g = self.param_group()
            if g is None or g[2] < 2:
                raise GenFail
            text, tmpl, length = g
            acc = self.fresh("acc")
            fn.emit(f"{acc} = 0.0")
            p = self.fresh("p")
            saved_vars, saved_owned, saved_loop = dict(fn.vars), set(fn.owned), set(fn.loop_vars)
            if k == "sliced":
                form = self.pick([f"reversed({text})", f"{text}[1:]", f"{text}[::-1]",
                                  f"{text}[:-1]", f"list(reversed({text}))[:2]"])
                fn.emit(f"for {p} in {form}:")
                fn.vars[p] = tmpl.named(p)
            elif k == "indexed":
                i = self.fresh("i")
                fn.emit(f"for {i} in range(len({text})):")
                p = f"{text}[{i}]"
                fn.vars[p] = tmpl.named(p)
                fn.vars[i] = E(i, (), "int", 0, length - 1, src={i}, atom=True)
                fn.loop_vars.add(i)
            else:
                fn.emit(f"for {p} in [q_ for q_ in {text} if q_ is not None]:")
                cond = self.pick([f"{p} is not None", f"isinstance({p}, (np.ndarray, float))"]
                                 + ([f"{p}.ndim == {len(tmpl.shape)}"] if tmpl.shape else []))
                fn.emit(f"    if not ({cond}):")
                fn.emit("        continue")
                fn.vars[p] = tmpl.named(p)
            fn.loop_vars.add(p)
            fn.indent += 1
            try:
                term = self.expr((), depth - 1, allow_py=True)
                fn.emit(f"{acc} += {term.text}")
            finally:
                fn.vars, fn.owned, fn.loop_vars = saved_vars, saved_owned & fn.owned, saved_loop
                fn.indent -= 1
            m = term.mag * (length + 1)
            self.bind(acc, self.tame_var(acc, E(acc, (), "arr", -m, m, term.tied, False, term.src,
                                                True)))
            return
        # nested dicts of parameters: w["enc"]["W"]
        if self.w_style != "dict":
            raise GenFail
        sub = self.w_tree.setdefault("enc", {})
        if not isinstance(sub, dict):
            raise GenFail
        shape = self.pick([(4, 4), (4,), (3, 4)])
        key = f"k{next(self.wkeys)}"
        sub[key] = Leaf("arr", sym_shape(shape), ("sym", 0.2, 1.0))
        leaf = self.leaf_E(f'w["enc"]["{key}"]', shape, ("sym", 0.2, 1.0), f"enc.{key}")
        self.leaves[leaf.text] = leaf
        e = self.expr(shape, depth - 1)
        res = self.new_name(shape)
        fn.emit(f"{res} = {e.p} * {leaf.text} + {leaf.text}[::-1]")
        lo, hi = _prod_bounds(e, leaf)
        self.bind(res, E(res, shape, "arr", lo - 1, hi + 1, e.tied, e.dup, e.src | leaf.src, True))

    def statement(self, depth):
        fn = self.fn
        k = self.wpick([(4, self.stmt_assign), (1.2, self.stmt_rebind), (1.2, self.stmt_augassign),
                        (1.6, self.stmt_if), (2.2, self.stmt_loop), (0.8, self.stmt_closure),
                        (0.4, self.stmt_tuple), (0.6, self.stmt_container),
                        (0.3, self.stmt_recursive), (0.4, self.stmt_comprehension),
                        (0.8, self.stmt_python)])
        n = len(fn.lines)
        saved = (dict(fn.vars), set(fn.owned), set(fn.frozen), list(fn.funcs))
        try:
            if k == self.stmt_assign:
                k()
            else:
                k(depth)
        except GenFail:
            del fn.lines[n:]
            fn.vars, fn.owned, fn.frozen, fn.funcs = saved
            fn.indent = 1

    # the program ----------------------------------------------------------------------------------
    def program(self) -> Program:
        loss = Fn("loss", "loss")
        self.fn = self.root = loss
        for _ in range(self.r.randint(2, 6)):
            self.statement(self.depth_limit)
        ret = self.final_expr()
        # argnum: usually w; sometimes a data array
        argnum = 0
        data_names = [n for n in self.data_order]
        argnames = ["w"] + data_names
        floats = [i for i, n in enumerate(argnames) if i > 0 and self.data[n].kind == "arr"]
        def has_float(t):
            if isinstance(t, Leaf):
                return t.kind in ("arr", "pyf")
            items = t.values() if isinstance(t, dict) else t
            return any(has_float(x) for x in items)
        if self.w_tree is None or not has_float(self.w_tree):
            unused = Leaf("arr", ("d",), ("sym", 0.2, 1.0))   # a parameter the loss ignores
            if self.w_tree is None:
                self.w_tree, access = unused, "w"
            elif isinstance(self.w_tree, dict):
                self.w_tree["unused"], access = unused, 'w["unused"]'
            else:
                self.w_tree.append(unused)
                access = "w[-1]"
            self.feat("unused_param")
            if not floats:
                # make sure something depends on it
                ret = f"{ret} + np.sum({access} ** 2)"
        if floats and self.chance(0.12):
            argnum = self.pick(floats)
            self.feat("argnum_data")
        lines = ["import numpy as np"] + (["", "import knetc"] if self.uses_knetc else []) + [""]
        for name, v in sorted(self.globals_.items()):
            lines.append(f"{name} = 0.5")
        for name, f in sorted(self.global_funcs.items()):
            lines.append(f"{name} = np.{f}")
        if self.globals_ or self.global_funcs:
            lines.append("")
        for h in self.module_lines:
            lines += [""] + h + [""]
        lines += ["", f"def loss({', '.join(argnames)}):"]
        for alias, text in self.aliases:
            lines.append(f"    {alias} = {text}")
        lines += loss.lines
        lines.append(f"    return {ret}")
        source = "\n".join(lines) + "\n"
        args = [self.w_tree] + [self.data[n] for n in data_names]
        globals_ = dict(self.globals_)
        for name in self.global_funcs:      # swapped between calls: guards must notice
            globals_[name] = Leaf("func", (), extra=("tanh", "sin"))
        api = self.wpick([(6, "gradloss"), (1, "differentiable")])
        kwcall = len(argnames) > 1 and self.chance(0.15)
        self.feat(f"api_{api}")
        if kwcall:
            self.feat("call_with_keywords")
        return Program(self.seed, source, argnames, args, argnum, globals_,
                       set(self.features), api, kwcall)

    def final_expr(self):
        fn = self.fn
        live = [(k, v) for k, v in fn.vars.items() if v.kind in ("arr", "pyf")]
        wdep = [(k, v) for k, v in live if any(s.startswith(("w", "@w", "@ws")) or s in
                                                {a for a, _ in self.aliases} for s in v.src)]
        chosen = []
        pool = wdep[-4:] + live[-3:]
        self.r.shuffle(pool)
        for k, v in pool:
            if k not in [c[0] for c in chosen] and len(chosen) < 3:
                chosen.append((k, v))
        parts = []
        for k, v in chosen:
            if v.shape == ():
                parts.append(k if v.mag < BIG else f"np.tanh({k})")
            else:
                f = self.pick(["np.sum({} ** 2)", "np.mean({})", "{}.sum()", "np.sum(np.tanh({}))",
                               "np.mean({} * {})"])
                parts.append(f.format(k, k))
        if not parts:
            e = self.expr((), 2)
            parts.append(e.text)
        if self.chance(0.15) and len(parts) >= 2:
            self.feat("return_ifexp")
            c = self.condition(1)
            return f"{parts[0]} if {c} else {parts[1]}" + "".join(f" + {p}" for p in parts[2:])
        ws = [self.pick(["", "0.5 * ", "2.0 * "]) for _ in parts]
        return " + ".join(w + p for w, p in zip(ws, parts))


def generate(seed: int) -> Program:
    """A random loss program (deterministic in ``seed``)."""
    for attempt in range(20):
        g = Gen(seed * 7919 + attempt)
        try:
            prog = g.program()
        except GenFail:
            continue
        prog.seed = seed
        return prog
    raise RuntimeError(f"randprog: no program for seed {seed}")


# ------------------------------------------------------------------------------------------
# the check

RTOL, ATOL = 1e-5, 1e-7


@dataclass
class Outcome:
    """What happened to one program.

    status: 'ok'; 'rejected' (a KnetcError naming the program's file and a line in it: allowed);
    'fail' (a wrong value, a crash, an error that does not say where); 'generror' (the program
    itself does not run: a bug of this generator).
    """
    status: str
    program: Program
    kind: str = ""
    message: str = ""
    calls: int = 0
    stats: dict = field(default_factory=dict)

    def report(self) -> str:
        return (f"randprog seed {self.program.seed}: {self.status} {self.kind}\n{self.message}\n"
                f"--- program (argnum={self.program.argnum}) ---\n{self.program.source}")


class _Nonsmooth(Exception):
    """This draw sits within the finite-difference step of a kink or a branch switch."""


def _float_paths(t, path=()):
    if isinstance(t, np.ndarray):
        if np.issubdtype(t.dtype, np.floating):
            yield path, t
    elif type(t) is float:
        yield path, t
    elif isinstance(t, (list, tuple)):
        for i, v in enumerate(t):
            yield from _float_paths(v, path + (i,))
    elif isinstance(t, dict):
        for k, v in t.items():
            yield from _float_paths(v, path + (k,))


def _get(t, path):
    for p in path:
        t = t[p]
    return t


def _replace(t, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(t, dict):
        out = dict(t)
    else:
        out = list(t)
    out[head] = _replace(t[head], rest, new)
    return tuple(out) if isinstance(t, tuple) else out


def _same(a, b) -> bool:
    """Exact equality of two argument structures (arrays by value)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


class _Lines:
    """Line coverage of the program's file while the plain function runs (which branches ran)."""

    def __init__(self, filename):
        self.filename, self.lines = filename, set()

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != self.filename:
            return None
        if event == "line":
            self.lines.add(frame.f_lineno)
        return self

    def __enter__(self):
        self._old = sys.gettrace()
        sys.settrace(self)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._old)


def _load(prog: Program, folder: str, tag: str):
    os.makedirs(folder, exist_ok=True)
    modname = f"randprog_{prog.seed}_{tag}"
    path = os.path.realpath(os.path.join(folder, modname + ".py"))
    with open(path, "w") as fh:
        fh.write(prog.source)
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod, path, modname


def _call(mod, f, args, gl):
    for k, v in gl.items():
        setattr(mod, k, v)
    return f(*args)


def _scalar(v) -> float:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != ():
        raise ValueError(f"the loss has shape {a.shape}")
    return float(a)


def check(prog: Program, folder: str, values: int = 3, tag: str = "0",
          sample: int = 16) -> Outcome:
    """Run ``prog`` through knetc.gradloss/grad for several argument values and shapes and
    compare with finite differences. Returns an Outcome (never raises for a knetc problem)."""
    import knetc
    try:
        mod, path, modname = _load(prog, folder, tag)
    except Exception as e:
        return Outcome("generror", prog, "import", f"{type(e).__name__}: {e}")
    try:
        return _check(prog, mod, path, values, sample, knetc)
    finally:
        sys.modules.pop(modname, None)


def _plain(mod, f, args, gl, path):
    """The function's own value (and the lines it ran), in float64, NumPy errors raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            with _Lines(path) as cov:
                v = _call(mod, f, copy.deepcopy(args), gl)
    return _scalar(v), frozenset(cov.lines)


def _check(prog, mod, path, values, sample, knetc):
    f = mod.loss
    rng = np.random.default_rng(prog.seed)
    stats = {"calls": 0, "nonsmooth": 0, "shapes": 0, "branches": 0, "entries": 0}
    nlines = prog.source.count("\n")

    # candidate draws: DIMS_A first (new values, other branches), then other shapes
    seen_lines = set()
    cands = []
    for i in range(values + 5):
        args, gl = prog.draw(rng, DIMS_A)
        try:
            v, lines = _plain(mod, f, args, gl, path)
        except FloatingPointError:
            continue
        except Exception as e:
            if i == 0 or not cands:
                return Outcome("generror", prog, "plain",
                               f"the program fails under NumPy: {type(e).__name__}: {e}\n"
                               + "".join(traceback.format_exception(e)[-3:]))
            continue
        if not math.isfinite(v):
            continue
        cands.append((args, gl, lines))
    if not cands:
        return Outcome("generror", prog, "plain", "no draw gives a finite loss")
    chosen = [cands[0]]
    seen_lines.add(cands[0][2])
    for c in cands[1:]:           # draws that run other lines (the other branch) first
        if c[2] not in seen_lines and len(chosen) < values:
            chosen.append(c)
            seen_lines.add(c[2])
            stats["branches"] += 1
    for c in cands[1:]:
        if len(chosen) >= values:
            break
        if not any(c is x for x in chosen):
            chosen.append(c)
    schedule = [("A", *chosen[0])]
    for dims_name, dims in (("batch", DIMS_BATCH), ("all", DIMS_ALL)):
        args, gl = prog.draw(rng, dims)
        try:
            v, lines = _plain(mod, f, args, gl, path)
        except Exception:
            continue
        if math.isfinite(v):
            schedule.append((dims_name, args, gl, lines))
            stats["shapes"] += 1
    schedule += [("A", *c) for c in chosen[1:]]
    if len(schedule) > 2 and schedule[1][0] != "A":
        a2, gl2 = prog.draw(rng, DIMS_BATCH if schedule[1][0] == "batch" else DIMS_ALL)
        try:
            v, lines = _plain(mod, f, a2, gl2, path)
            if math.isfinite(v):
                schedule.append((schedule[1][0], a2, gl2, lines))
        except Exception:
            pass

    if prog.api == "differentiable":
        gradloss = knetc.differentiable(f, argnum=prog.argnum).gradloss
    else:
        gradloss = knetc.gradloss(f, argnum=prog.argnum)
    grad = knetc.grad(f, argnum=prog.argnum)
    full = set()    # every entry on the first call of each shape; a sample afterwards
    for n, (dims_name, args, gl, lines) in enumerate(schedule):
        try:
            out = _one_call(prog, mod, f, path, nlines, args, gl, gradloss, grad if n == 0 else None,
                            rng, sample if dims_name in full else None, stats, knetc)
            full.add(dims_name)
        except _Nonsmooth:
            stats["nonsmooth"] += 1
            continue
        stats["calls"] += 1
        if out is not None:
            out.message = f"call {n + 1} ({dims_name} shapes): {out.message}"
            out.stats = stats
            out.calls = stats["calls"]
            return out
    if prog.api == "gradloss":
        stats["tier0"] = knetc.cache_info(f, argnum=prog.argnum, with_loss=True).tier0
    return Outcome("ok", prog, calls=stats["calls"], stats=stats)


def _one_call(prog, mod, f, path, nlines, args, gl, gradloss, grad, rng, sample, stats, knetc):
    argnum = prog.argnum
    value, _ = _plain(mod, f, args, gl, path)
    snapshot = copy.deepcopy(args)
    for k, v in gl.items():
        setattr(mod, k, v)
    def call(fn):
        if prog.kwcall:
            return fn(args[0], **dict(zip(prog.argnames[1:], args[1:])))
        return fn(*args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g, loss = call(gradloss)
            g2 = call(grad) if grad is not None else None
    except knetc.KnetcError as e:
        fname = getattr(e, "filename", None)
        line = getattr(e, "lineno", None)
        if fname and os.path.realpath(fname) == path and isinstance(line, int) \
                and 1 <= line <= nlines:
            return Outcome("rejected", prog, type(e).__name__, str(e).splitlines()[0])
        return Outcome("fail", prog, f"error-without-location {type(e).__name__}",
                       f"{type(e).__name__}: {e}\n(filename={fname!r}, lineno={line!r})\n"
                       + _tb(e))
    except Exception as e:
        return Outcome("fail", prog, f"crash {type(e).__name__}",
                       f"{type(e).__name__}: {e}\n" + _tb(e))
    if not _same(args, snapshot):
        return Outcome("fail", prog, "mutated-arguments", "knetc changed the arguments")
    try:
        lv = _scalar(loss)
    except Exception as e:
        return Outcome("fail", prog, "loss-not-scalar", f"gradloss's loss {loss!r}: {e}")
    if not abs(lv - value) <= 1e-9 * max(1.0, abs(value)):
        return Outcome("fail", prog, "wrong-loss", f"gradloss's loss {lv!r}, the function's "
                       f"value {value!r}")
    problem = _structure(args[argnum], g)
    if problem:
        return Outcome("fail", prog, "gradient-structure", problem)
    if g2 is not None:
        problem = _structure(args[argnum], g2)
        if problem or not _close_trees(g, g2):
            return Outcome("fail", prog, "grad-differs-from-gradloss",
                           problem or "grad(f) and gradloss(f) give different gradients")
    # finite differences
    leaves = list(_float_paths(args[argnum]))
    entries = []
    for path_, leaf in leaves:
        shape = np.shape(leaf)
        for index in (np.ndindex(*shape) if shape else [()]):
            entries.append((path_, index))
    if sample is not None and len(entries) > sample:
        pick = rng.choice(len(entries), size=sample, replace=False)
        entries = [entries[int(i)] for i in pick]
    scale = max(1.0, abs(value))
    for path_, index in entries:
        a = _get(g, path_)
        a = 0.0 if a is None else float(np.asarray(a, dtype=np.float64)[index])
        num = _fd(mod, f, args, gl, argnum, path_, index, 1e-4, 4)
        stats["entries"] += 1
        if abs(a - num) <= ATOL * scale + RTOL * abs(num):
            continue
        # A kink or a branch at this point: one-sided differences disagree; redraw the values.
        fwd, bwd, c2 = _one_sided(mod, f, args, gl, argnum, path_, index)
        if abs(fwd - bwd) > 1e-3 * (1 + abs(c2)):
            raise _Nonsmooth()
        # Smooth here, but not within the stencil's wider window (a kink 1e-4 away, or a point
        # where the function is only C1): the narrow central difference decides.
        if abs(a - c2) <= ATOL * scale + RTOL * abs(c2):
            stats["narrow"] = stats.get("narrow", 0) + 1
            continue
        where = "w" if argnum == 0 else prog.argnames[argnum]
        where += "".join(f"[{p!r}]" for p in path_) + (f"[{', '.join(map(str, index))}]"
                                                       if index else "")
        return Outcome("fail", prog, "wrong-gradient",
                       f"d loss / d {where}: knetc {a!r}, finite differences {num!r}")
    return None


def _tb(e) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    return "".join(traceback.format_list(tb[-4:]))


def _structure(arg, g, where="w") -> str:
    """Problems with the gradient's structure: same containers as the argument, an array of the
    same shape (float64) or None for each float array, a float (or None) for each Python float,
    None for other leaves."""
    if isinstance(arg, dict):
        if type(g) is not dict or g.keys() != arg.keys():
            keys = list(g) if isinstance(g, dict) else ""
            return f"{where}: gradient {type(g).__name__} {keys}, argument dict {list(arg)}"
        for k in arg:
            p = _structure(arg[k], g[k], f"{where}[{k!r}]")
            if p:
                return p
        return ""
    if isinstance(arg, (list, tuple)):
        if type(g) is not type(arg) or len(g) != len(arg):
            n = len(g) if hasattr(g, "__len__") else "?"
            return f"{where}: gradient {type(g).__name__} of {n}, argument {type(arg).__name__} of {len(arg)}"
        for i, (a, b) in enumerate(zip(arg, g)):
            p = _structure(a, b, f"{where}[{i}]")
            if p:
                return p
        return ""
    if isinstance(arg, np.ndarray) and np.issubdtype(arg.dtype, np.floating):
        if g is None:
            return ""
        if not isinstance(g, np.ndarray) or g.shape != arg.shape or g.dtype != arg.dtype:
            return (f"{where}: gradient {type(g).__name__} {getattr(g, 'shape', '')} "
                    f"{getattr(g, 'dtype', '')}, argument {arg.shape} {arg.dtype}")
        return ""
    if type(arg) is float:
        if g is None or isinstance(g, (float, np.floating)) or (
                isinstance(g, np.ndarray) and g.shape == ()):
            return ""
        return f"{where}: gradient {type(g).__name__} {getattr(g, 'shape', '')} for a float"
    if g is not None:
        return f"{where}: gradient {type(g).__name__} for a {type(arg).__name__} leaf (want None)"
    return ""


def _close_trees(a, b) -> bool:
    pa, pb = list(_float_paths(a)), list(_float_paths(b))
    if len(pa) != len(pb):
        return False
    for (p1, x), (p2, y) in zip(pa, pb):
        if p1 != p2 or not np.allclose(x, y, rtol=1e-12, atol=1e-14, equal_nan=True):
            return False
    return True


def _phi(mod, f, args, gl, argnum, path, index, t):
    leaf = _get(args[argnum], path)
    if isinstance(leaf, np.ndarray):
        new = leaf.copy()
        new[index] += t
    else:
        new = leaf + t
    a = list(args)
    a[argnum] = _replace(args[argnum], path, new)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return _scalar(_call(mod, f, a, gl))


def _fd(mod, f, args, gl, argnum, path, index, h, order):
    """Central differences: order 4 (five-point stencil) or 2."""
    def p(t):
        return _phi(mod, f, args, gl, argnum, path, index, t)
    if order == 2:
        return (p(h) - p(-h)) / (2 * h)
    return (8 * (p(h) - p(-h)) - (p(2 * h) - p(-2 * h))) / (12 * h)


def _one_sided(mod, f, args, gl, argnum, path, index, d=1e-6):
    def p(t):
        return _phi(mod, f, args, gl, argnum, path, index, t)
    p0, pp, pm = p(0.0), p(d), p(-d)
    return (pp - p0) / d, (p0 - pm) / d, (pp - pm) / (2 * d)


# ------------------------------------------------------------------------------------------
# command line

def run_many(seeds, folder, values=3, sample=16, progress=False):
    """Check programs for these seeds: a list of Outcomes (every status)."""
    outs = []
    for i, seed in enumerate(seeds):
        try:
            prog = generate(seed)
        except Exception as e:
            outs.append(Outcome("generror", Program(seed, "", [], [], 0, {}), "generate",
                                f"{type(e).__name__}: {e}\n{traceback.format_exc()[-800:]}"))
            continue
        outs.append(check(prog, folder, values=values, tag=str(i), sample=sample))
        if progress and (i + 1) % 100 == 0:
            print(f"  {i + 1} programs", file=sys.stderr, flush=True)
    return outs


def _worker(job):
    seeds, folder = job
    sys.setrecursionlimit(10000)
    outs = run_many(seeds, folder)
    return [(o.status, o.kind, o.message, o.program.seed, o.program.source,
             o.program.argnum, sorted(o.program.features), o.stats) for o in outs]


def main(argv=None):
    import argparse
    import tempfile
    import time
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seed", nargs="?", type=int, help="print the program for this seed")
    ap.add_argument("--run", type=int, metavar="N", help="check N programs")
    ap.add_argument("--start", type=int, default=0, help="first seed of --run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="check the program of SEED")
    ap.add_argument("--out", help="write failing programs here (one file per failure)")
    a = ap.parse_args(argv)
    if a.seed is not None and not a.run:
        prog = generate(a.seed)
        print(prog.source)
        print(f"# argnum={prog.argnum} features: {' '.join(sorted(prog.features))}")
        if a.check:
            o = check(prog, tempfile.mkdtemp(prefix="randprog"))
            print(o.report() if o.status != "ok" else f"ok {o.stats}")
        return 0
    n = a.run or 100
    seeds = list(range(a.start, a.start + n))
    folder = tempfile.mkdtemp(prefix="randprog")
    t0 = time.time()
    if a.jobs > 1:
        import multiprocessing as mp
        chunks = [(seeds[i::a.jobs * 4], os.path.join(folder, str(i))) for i in range(a.jobs * 4)]
        with mp.get_context("spawn").Pool(a.jobs) as pool:
            rows = [r for part in pool.imap_unordered(_worker, chunks) for r in part]
    else:
        rows = _worker((seeds, folder))
    dt = time.time() - t0
    from collections import Counter
    status = Counter(r[0] for r in rows)
    print(f"{len(rows)} programs in {dt:.1f} s: {dict(status)}")
    calls = sum(r[7].get("calls", 0) for r in rows if r[7])
    print(f"programs with a tier-0 run: {sum(1 for r in rows if r[7] and r[7].get('tier0'))}")
    print(f"gradient calls checked: {calls}; nonsmooth draws skipped: "
          f"{sum(r[7].get('nonsmooth', 0) for r in rows if r[7])}; programs with another shape: "
          f"{sum(1 for r in rows if r[7] and r[7].get('shapes'))}; with another branch: "
          f"{sum(1 for r in rows if r[7] and r[7].get('branches'))}")
    kinds = Counter((r[0], r[1]) for r in rows if r[0] != "ok")
    for (st, kind), c in kinds.most_common():
        print(f"  {c:5d} {st} {kind}")
    rej = Counter(r[2].split(": ", 1)[-1][:110] for r in rows if r[0] == "rejected")
    for msg, c in rej.most_common(15):
        print(f"     rejected x{c}: {msg}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for r in rows:
            if r[0] in ("fail", "generror"):
                with open(os.path.join(a.out, f"{r[0]}_{r[3]}.txt"), "w") as fh:
                    fh.write(f"# seed {r[3]} {r[0]} {r[1]} argnum={r[5]}\n# "
                             + r[2].replace("\n", "\n# ") + "\n" + r[4])
    return 0


if __name__ == "__main__":
    sys.exit(main())
