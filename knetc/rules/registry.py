"""The rule registry: derivative templates registered by decorator.

A rule is a *template*: a small Python function that is never called. Its source is read once and
turned into an emitter that writes the adjoint statements for one call of the primitive, with the
user's variable names and the shapes known at specialization time::

    @adjoint(np.tanh)
    def tanh(y, x):
        d[x] = d[y] * (1 - y * y)

Template form
-------------
* The first parameter names the primitive's result; the others repeat the primitive's parameters
  (same names, same defaults), so keyword and positional calls bind the same way.
* Each statement of the body is one of
    ``d[x] = EXPR``             the gradient contribution for argument ``x``
    ``d[a], d[b] = EXPR``       several at once (EXPR returns a tuple; an argument without a
                                gradient is simply skipped)
    ``t = EXPR``                a temporary shared by the statements after it
    ``if TEST: ... else: ...``  TEST is decided when code is generated: it may use constant
                                arguments and the static attributes below.
* ``d[y]`` is the gradient of the result. EXPR may use the result, the arguments and any name of the
  template's module (``np``, runtime helpers).
* ``x.shape``, ``x.ndim``, ``x.size`` and ``x.dtype`` of an array argument are known when code is
  generated and become literals.
* ``unbroadcast(e, x)``: ``e`` is shaped like the result; it is summed down to ``x``'s shape. Shapes
  are known, so nothing is emitted when they already agree.
* ``outputs=N`` registers a primitive that returns a tuple of N values; ``y`` is then that tuple and
  ``d[y]`` a tuple of gradients, ``None`` for the results that need none.
* ``forward=f``: when differentiating, the generated forward pass calls ``f`` (same parameters)
  instead; it returns the primitive's result(s) followed by one extra value saved for the backward
  pass, and the template's second parameter names that saved value::

      @adjoint(dropout, forward=dropout_with_mask)
      def dropout(y, mask, x, p):
          d[x] = d[y] * mask

Users register rules for their own functions the same way (see ``knetc.adjoint``).
"""
from __future__ import annotations

import ast
import inspect
import textwrap
import threading

__all__ = ["adjoint", "adjoint_emitter", "nondifferentiable", "alias", "static", "unbroadcast", "lookup", "Rule"]

_STATIC_ATTRS = ("shape", "ndim", "size", "dtype")
# Functions whose result may share memory with an argument: never accumulated into in place.
_VIEWS = {"reshape", "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to", "moveaxis",
          "ravel", "asarray", "T"}


class Rule:
    """What the compiler knows about one primitive."""

    def __init__(self, fn, template=None, outputs=1, forward=None, differentiable=True,
                 impure=False, alias=False, name=None):
        self.fn, self.template, self.outputs, self.forward = fn, template, outputs, forward
        self.differentiable, self.impure, self.alias = differentiable, impure, alias
        self.name = name or _short_name(fn)
        self.builtin = False    # knetc's own rules are marked after loading (rules/__init__.py)
        self._emitter = None
        self._lock = threading.Lock()
        if template is not None:
            sig = inspect.signature(template)
            params = list(sig.parameters.values())
            if getattr(template, "_knetc_emitter", False):
                params = params[1:]  # a hand-written emitter's first parameter is E
            nout = 2 if forward is not None else 1
            self.out_params = [p.name for p in params[:nout]]
            self.params = [p.name for p in params[nout:]]
            self.defaults = {p.name: p.default for p in params[nout:]
                             if p.default is not inspect.Parameter.empty}

    def bind(self, args, kwargs) -> dict:
        """The primitive's arguments by the template's parameter names (defaults filled in)."""
        if len(args) > len(self.params):
            raise TypeError(f"{self.name}() takes {len(self.params)} arguments ({len(args)} given)")
        bound = dict(zip(self.params, args))
        for k, v in kwargs.items():
            if k not in self.params:
                raise TypeError(f"knetc: the rule for {self.name} has no argument {k!r}")
            bound[k] = v
        for p in self.params:
            if p not in bound:
                if p not in self.defaults:
                    raise TypeError(f"{self.name}() missing argument {p!r}")
                bound[p] = self.defaults[p]
        return bound

    @property
    def emitter(self):
        """The template compiled into a function that writes the adjoint statements."""
        if self._emitter is None:
            with self._lock:
                if self._emitter is None:
                    self._emitter = _compile_template(self)
        return self._emitter


_rules: dict = {}


def _key(fn):
    try:
        hash(fn)
        return fn
    except TypeError:
        return id(fn)


def mark_builtin() -> None:
    """Mark every rule registered so far as knetc's own (their runtime never reads
    ``training()`` unless impure or with a ``forward``); rules registered later are the user's."""
    for rule in _rules.values():
        rule.builtin = True


def lookup(fn) -> Rule | None:
    """The rule registered for ``fn`` (a function, ufunc or builtin), or None."""
    try:
        return _rules.get(fn)
    except TypeError:
        return None


def adjoint(*primitives, outputs: int = 1, forward=None):
    """Register the decorated template as the derivative of ``primitives`` (see module docs)."""
    def register(template):
        for fn in primitives:
            _rules[_key(fn)] = Rule(fn, template, outputs=outputs, forward=forward)
        return template
    return register


def adjoint_emitter(*primitives, outputs: int = 1, forward=None):
    """Register a hand-written emitter ``emit(E, y, *args)`` for rules a template cannot express
    (indexing). ``E`` is knetc.compiler.reverse.Emit."""
    def register(emit):
        emit._knetc_emitter = True
        for fn in primitives:
            rule = Rule(fn, emit, outputs=outputs, forward=forward)
            rule._emitter = lambda E, *a, _emit=emit: _emit(E, *a)
            _rules[_key(fn)] = rule
        return emit
    return register


def nondifferentiable(*fns, impure: bool = False, outputs: int = 1):
    """Declare functions whose results carry no gradient (comparisons, argmax, zeros_like…).

    ``impure=True`` marks functions that must run every time even without symbolic arguments
    (random number generators).
    """
    for fn in fns:
        _rules[_key(fn)] = Rule(fn, differentiable=False, impure=impure, outputs=outputs)


def static(value):
    """In a template: ``static(expr)`` is computed when code is generated and written as a literal."""
    return value


def unbroadcast(value, like):
    """In a template: sum ``value`` (shaped like the result) down to ``like``'s shape."""
    return value


def alias(fn):
    """Declare ``fn`` as the identity cut off from the gradient (Knet's getval/value)."""
    _rules[_key(fn)] = Rule(fn, differentiable=False, alias=True)
    return fn


def _short_name(fn):
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return {"truediv": "div", "getitem": "getindex", "matmul": "mm"}.get(name, name).strip("_") or "t"


# ---------------------------------------------------------------------------------------------
# Template compiler: the template's body becomes an emitter function
#     def emit(E, <out>, [<saved>], <params…>)
# whose parameters receive static information (constants, or Syms with .shape/.ndim/.dtype), and
# whose statements call E to write code strings. Expressions are turned into format strings once.

def _compile_template(rule: Rule):
    tmpl = rule.template
    src = textwrap.dedent(inspect.getsource(tmpl))
    fdef = ast.parse(src).body[0]
    ctx = _Ctx(rule, tmpl.__globals__, tmpl)
    body = []
    for stmt in fdef.body:
        body.extend(ctx.stmt(stmt))
    args = ", ".join(["E"] + rule.out_params + rule.params)
    code = ast.Module(body=[ast.FunctionDef(
        name="emit", args=ast.parse(f"def f({args}): pass").body[0].args,
        body=body or [ast.Pass()], decorator_list=[], returns=None, type_comment=None,
        type_params=[])], type_ignores=[])
    ast.fix_missing_locations(code)
    text = ast.unparse(code)
    ns = dict(tmpl.__globals__)
    ns.update({"_T": ctx.formats, "_O": ctx.objects})
    exec(compile(text, f"<knetc rule {rule.name}>", "exec"), ns)
    emit = ns["emit"]
    emit.source = text
    return emit


class _Ctx:
    def __init__(self, rule, globals_, tmpl):
        self.rule, self.globals, self.tmpl = rule, globals_, tmpl
        self.out = rule.out_params[0]
        self.params = set(rule.params) | set(rule.out_params)
        self.temps: set[str] = set()
        self.formats: list[str] = []
        self.objects: list = []

    def error(self, node, msg):
        file = inspect.getsourcefile(self.tmpl)
        line = self.tmpl.__code__.co_firstlineno + getattr(node, "lineno", 1) - 1
        raise SyntaxError(f"knetc rule template {self.rule.name} ({file}, line {line}): {msg}")

    # statements -------------------------------------------------------------------------
    def stmt(self, node):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return []  # docstring
        if isinstance(node, ast.Pass):
            return []
        if isinstance(node, ast.If):
            test = node.test  # evaluated in the emitter on static values
            body = [s for n in node.body for s in self.stmt(n)] or [ast.Pass()]
            orelse = [s for n in node.orelse for s in self.stmt(n)]
            return [ast.If(test=test, body=body, orelse=orelse)]
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            grads = self._grad_targets(target)
            if grads is not None:
                code, fresh = self.expr(value)
                if len(grads) == 1 and not isinstance(target, ast.Tuple):
                    p = grads[0]
                    call = f"E.grad({p!r}, {code}, {fresh})"
                    return ast.parse(f"if E.needs({p!r}): {call}").body
                names = [g if g is not None else None for g in grads]
                need = " or ".join(f"E.needs({p!r})" for p in names if p is not None)
                return ast.parse(f"if {need}: E.grads({names!r}, {code})").body
            if isinstance(target, ast.Name):
                self.temps.add(target.id)
                code, _ = self.expr(value)
                return ast.parse(f"{target.id} = E.temp({target.id!r}, {code})").body
        self.error(node, "expected d[x] = ..., a temporary t = ..., or an if on static values")

    def _grad_targets(self, target):
        elts = target.elts if isinstance(target, ast.Tuple) else [target]
        out = []
        for e in elts:
            if isinstance(e, ast.Subscript) and isinstance(e.value, ast.Name) and e.value.id == "d":
                if not isinstance(e.slice, ast.Name) or e.slice.id not in self.rule.params:
                    self.error(e, "d[...] must name one of the primitive's arguments")
                out.append(e.slice.id)
            elif isinstance(e, ast.Name) and e.id == "_":
                out.append(None)
            else:
                return None
        return out

    # expressions ------------------------------------------------------------------------
    def expr(self, node):
        """(emitter expression producing the code string, whether the result is fresh memory)."""
        holes: list[str] = []
        fresh = _is_fresh(node)
        top_unbroadcast = _is_call(node, "unbroadcast")
        tree = _Holes(self, holes).visit(ast.parse(ast.unparse(node), mode="eval").body)
        text = ast.unparse(tree)
        fmt = text.replace("{", "{{").replace("}", "}}")
        for i in range(len(holes)):
            fmt = fmt.replace(f"__k{i}__", "{%d}" % i)
        self.formats.append(fmt)
        code = f"_T[{len(self.formats) - 1}].format({', '.join(holes)})"
        if top_unbroadcast:  # decided when emitting: fresh if a sum was written
            fresh = f"(E.summed or {_is_fresh(node.args[0])})"
        return code, fresh


def _is_call(node, name):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _is_fresh(node) -> bool:
    """Does this template expression certainly produce new memory (so a later contribution may be
    added into it in place)? Arithmetic and NumPy's own functions and methods do, except views;
    any other function might return one of its arguments, so it is not trusted."""
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return True
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            return f.id == "unbroadcast" and _is_fresh(node.args[0])
        if isinstance(f, ast.Attribute):
            numpy_function = isinstance(f.value, ast.Name) and f.value.id == "np"
            array_method = f.attr in ("sum", "mean", "astype", "copy", "max", "min", "prod", "dot")
            return (numpy_function or array_method) and f.attr not in _VIEWS
    return False


class _Holes(ast.NodeTransformer):
    """Replace template names by holes filled when emitting."""

    def __init__(self, ctx, holes):
        self.ctx, self.holes = ctx, holes

    def hole(self, emitter_expr):
        self.holes.append(emitter_expr)
        return ast.Name(id=f"__k{len(self.holes) - 1}__", ctx=ast.Load())

    def visit_Subscript(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == "d":
            if not (isinstance(node.slice, ast.Name) and node.slice.id == self.ctx.out):
                self.ctx.error(node, "only the result's gradient d[%s] can be read" % self.ctx.out)
            return self.hole("E.dout()")
        return self.generic_visit(node)

    def visit_Name(self, node):
        c = self.ctx
        if node.id in c.params:
            return self.hole(f"E.a({node.id!r})")
        if node.id in c.temps:
            return self.hole(node.id)
        if node.id in ("np", "None", "True", "False") or node.id in __builtins__:
            return node
        obj = c.globals.get(node.id)
        if obj is None:
            c.error(node, f"unknown name {node.id!r}")
        c.objects.append(obj)
        return self.hole(f"E.ref(_O[{len(c.objects) - 1}])")

    def visit_Attribute(self, node):
        c = self.ctx
        if isinstance(node.value, ast.Name) and node.value.id in c.params:
            if node.attr in _STATIC_ATTRS:
                return self.hole(f"E.static({node.value.id!r}, {node.attr!r})")
            return ast.Attribute(value=self.visit(node.value), attr=node.attr, ctx=ast.Load())
        if isinstance(node.value, ast.Name) and node.value.id == "np":
            return node
        # module.function from the template's globals: refer to the object itself.
        try:
            obj = eval(compile(ast.Expression(node), "<rule>", "eval"), c.globals)
        except Exception:
            return self.generic_visit(node)
        c.objects.append(obj)
        return self.hole(f"E.ref(_O[{len(c.objects) - 1}])")

    def visit_Call(self, node):
        if _is_call(node, "static"):  # computed when emitting, written as a literal
            return self.hole(f"E.lit({ast.unparse(node.args[0])})")
        if _is_call(node, "unbroadcast"):
            inner, _ = self.ctx.expr(node.args[0])
            param = node.args[1].id
            return self.hole(f"E.unbroadcast({inner}, {param!r})")
        return self.generic_visit(node)
