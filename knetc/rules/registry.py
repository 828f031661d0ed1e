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
import linecache
import os
import textwrap
import threading

from ..compiler.parse import def_block, source_text
from ..compiler.timings import timed
from ..runtime.backend import numpy_twin

__all__ = ["adjoint", "adjoint_emitter", "nondifferentiable", "alias", "static", "unbroadcast", "lookup",
           "forget", "Rule"]

_STATIC_ATTRS = ("shape", "ndim", "size", "dtype")


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


def registered() -> list[Rule]:
    """Every registered rule (the supported-function catalog is generated from it)."""
    return list(_rules.values())


def lookup(fn) -> Rule | None:
    """The rule registered for ``fn`` (a function, ufunc or builtin), or None. A function of the
    GPU namespace (``cupy.sin``) takes the rule of its NumPy twin (``np.sin``)."""
    try:
        rule = _rules.get(fn)
    except TypeError:
        return None
    if rule is None:
        twin = numpy_twin(fn)
        if twin is not None:
            rule = _rules.get(twin)
    return rule


def adjoint(*primitives, outputs: int = 1, forward=None):
    """Register the decorated template as the derivative of ``primitives`` (see module docs)."""
    def register(template):
        _note_file(template)
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


def forget(fn) -> None:
    """Unregister ``fn``'s rule (knetc.compiler.units drops the primitives of units it forgets)."""
    _rules.pop(_key(fn), None)


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
# whose statements build IR expressions (knetc.compiler.ir) and hand them to E. Each template
# expression becomes the Python code that builds its IR tree; constants are built once.

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%", ast.Pow: "**", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
           ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}
_CMPOPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
           ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_UNOPS = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~", ast.Not: "not "}


# filename -> (size, modification time) of the files templates were registered from, when they
# were: a template is compiled from its text on first use, and a file changed since (knetc
# upgraded under a running process, a rule edited) holds other text at that line (another
# rule's, and a wrong gradient). Such a file's text is checked against the running code.
_files: dict = {}


def _stat(filename):
    try:
        st = os.stat(filename)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _note_file(template) -> None:
    filename = template.__code__.co_filename
    if filename not in _files:
        _files[filename] = _stat(filename)


def _template_def(tmpl) -> tuple:
    """``(text, ast.FunctionDef)`` of a template, read from its file (checked against the
    running code when the file changed since it was imported: a KnetcError when it differs)."""
    stat = _files.get(tmpl.__code__.co_filename)
    if stat is None or _stat(tmpl.__code__.co_filename) != stat:
        src = source_text(tmpl)
        return src, ast.parse(src).body[0]
    src = _block(tmpl)
    if src is not None:
        try:
            node = ast.parse(src).body[0]
        except SyntaxError:
            node = None
        if isinstance(node, ast.FunctionDef) and node.name == tmpl.__code__.co_name:
            return src, node
    src = textwrap.dedent(inspect.getsource(tmpl))
    return src, ast.parse(src).body[0]


def _block(tmpl) -> str | None:
    """The text of a template's def (decorators first), dedented, read by indentation
    (``parse.def_block``; measured 2026-11-30: inspect, which tokenizes, took 0.3 ms a
    template, a tenth of a differentiated tree LSTM's first call). A string or bracket reaching
    back to the def's column cuts it short, and then it does not parse: ``_template_def`` asks
    inspect."""
    code = tmpl.__code__
    block = def_block(linecache.getlines(code.co_filename), code.co_firstlineno)
    return None if block is None else textwrap.dedent(block)


@timed("rules")
def _compile_template(rule: Rule):
    from ..compiler import ir
    tmpl = rule.template
    src, fdef = _template_def(tmpl)
    ctx = _Ctx(rule, tmpl.__globals__, tmpl)
    body = []
    for stmt in fdef.body:
        body.extend(ctx.stmt(stmt))
    args = ", ".join(["E"] + rule.out_params + rule.params)
    text = f"def emit({args}):\n" + "".join(f"    {line}\n" for line in body or ["pass"])
    ns = dict(tmpl.__globals__)
    ns.update({"_O": ctx.objects, "_K": ctx.consts, "_ir": ir})
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
        self.objects: list = []     # objects the generated code refers to (by name)
        self.consts: list = []      # IR nodes built once: literals, np.<name>

    def error(self, node, msg):
        file = inspect.getsourcefile(self.tmpl)
        line = self.tmpl.__code__.co_firstlineno + getattr(node, "lineno", 1) - 1
        raise SyntaxError(f"knetc rule template {self.rule.name} ({file}, line {line}): {msg}")

    # statements: lines of the emitter ------------------------------------------------------
    def stmt(self, node, indent=""):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return []  # docstring
        if isinstance(node, ast.Pass):
            return []
        if isinstance(node, ast.If):   # decided when emitting, on static values
            lines = [f"{indent}if {ast.unparse(node.test)}:"]
            lines += [s for n in node.body for s in self.stmt(n, indent + "    ")] or [f"{indent}    pass"]
            if node.orelse:
                lines.append(f"{indent}else:")
                lines += [s for n in node.orelse for s in self.stmt(n, indent + "    ")] or \
                    [f"{indent}    pass"]
            return lines
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            grads = self._grad_targets(target)
            if grads is not None:
                code = self.expr(value)
                if len(grads) == 1 and not isinstance(target, ast.Tuple):
                    p = grads[0]
                    return [f"{indent}if E.needs({p!r}): E.grad({p!r}, {code})"]
                need = " or ".join(f"E.needs({p!r})" for p in grads if p is not None)
                return [f"{indent}if {need}: E.grads({grads!r}, {code})"]
            if isinstance(target, ast.Name):
                self.temps.add(target.id)
                return [f"{indent}{target.id} = E.temp({target.id!r}, {self.expr(value)})"]
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

    # expressions: the Python code that builds the expression's IR -------------------------
    def const(self, node) -> str:
        self.consts.append(node)
        return f"_K[{len(self.consts) - 1}]"

    def obj(self, value) -> str:
        self.objects.append(value)
        return f"E.ref(_O[{len(self.objects) - 1}])"

    def expr(self, node) -> str:
        from ..compiler import ir
        t = type(node)
        if t is ast.Constant:
            return self.const(ir.Const(node.value))
        if t is ast.Name:
            return self.name(node)
        if t is ast.BinOp:
            return f"_ir.BinOp({_BINOPS[type(node.op)]!r}, {self.expr(node.left)}, {self.expr(node.right)})"
        if t is ast.UnaryOp:
            return f"_ir.UnaryOp({_UNOPS[type(node.op)]!r}, {self.expr(node.operand)})"
        if t is ast.Compare:
            if len(node.ops) != 1:
                self.error(node, "write chained comparisons as separate ones joined by &")
            return f"_ir.BinOp({_CMPOPS[type(node.ops[0])]!r}, {self.expr(node.left)}, " \
                   f"{self.expr(node.comparators[0])})"
        if t is ast.BoolOp:
            op = "and" if isinstance(node.op, ast.And) else "or"
            code = self.expr(node.values[0])
            for v in node.values[1:]:
                code = f"_ir.BinOp({op!r}, {code}, {self.expr(v)})"
            return code
        if t is ast.Call:
            return self.call(node)
        if t is ast.Attribute:
            return self.attribute(node)
        if t is ast.Subscript:
            if isinstance(node.value, ast.Name) and node.value.id == "d":
                if not (isinstance(node.slice, ast.Name) and node.slice.id == self.out):
                    self.error(node, "only the result's gradient d[%s] can be read" % self.out)
                return "E.dout()"
            return f"_ir.Subscript({self.expr(node.value)}, {self.index(node.slice)})"
        if t is ast.Tuple or t is ast.List:
            kind = "Tuple" if t is ast.Tuple else "List"
            return f"_ir.{kind}([{', '.join(self.expr(e) for e in node.elts)}])"
        if t is ast.IfExp:   # decided when emitting, on static values
            return f"({self.expr(node.body)} if {ast.unparse(node.test)} else {self.expr(node.orelse)})"
        self.error(node, f"{t.__name__} is not supported in a template expression")

    def index(self, node) -> str:
        if isinstance(node, ast.Slice):
            parts = ["None" if p is None else self.expr(p) for p in (node.lower, node.upper, node.step)]
            return f"_ir.Slice({', '.join(parts)})"
        if isinstance(node, ast.Tuple):
            return f"_ir.Tuple([{', '.join(self.index(e) for e in node.elts)}])"
        return self.expr(node)

    def name(self, node) -> str:
        from ..compiler import ir
        c = self
        if node.id in c.params:
            return f"E.a({node.id!r})"
        if node.id in c.temps:
            return node.id
        if node.id == "np":
            return self.const(ir.NP)
        if node.id in ("None", "True", "False"):
            return self.const(ir.Const({"None": None, "True": True, "False": False}[node.id]))
        if node.id not in c.globals and node.id in __builtins__:
            return self.const(ir.Name(node.id))
        if node.id not in c.globals:
            c.error(node, f"unknown name {node.id!r}")
        return self.obj(c.globals[node.id])

    def attribute(self, node) -> str:
        from ..compiler import ir
        c = self
        if isinstance(node.value, ast.Name) and node.value.id in c.params:
            if node.attr in _STATIC_ATTRS:
                return f"E.static({node.value.id!r}, {node.attr!r})"
            return f"_ir.Attr({self.expr(node.value)}, {node.attr!r})"
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and root.id == "np":   # np.linalg.norm: written as such
            return self.const(_attr_chain(node, ir))
        if isinstance(root, ast.Name) and root.id in c.globals and root.id not in c.temps:
            # module.function from the template's globals: refer to the object itself.
            try:
                obj = eval(compile(ast.Expression(node), "<rule>", "eval"), c.globals)
            except Exception:
                obj = None
            if obj is not None:
                return self.obj(obj)
        return f"_ir.Attr({self.expr(node.value)}, {node.attr!r})"

    def call(self, node) -> str:
        if _is_call(node, "static"):  # computed when emitting, written as a literal
            return f"E.lit({ast.unparse(node.args[0])})"
        if _is_call(node, "unbroadcast"):
            return f"E.unbroadcast({self.expr(node.args[0])}, {node.args[1].id!r})"
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            self.error(node, "*args and **kwargs are not supported in a template call")
        args = ", ".join(self.expr(a) for a in node.args)
        kwargs = ", ".join(f"({k.arg!r}, {self.expr(k.value)})" for k in node.keywords)
        return f"_ir.Call({self.expr(node.func)}, [{args}], [{kwargs}])"


def _attr_chain(node, ir):
    if isinstance(node, ast.Name):
        return ir.NP
    return ir.Attr(_attr_chain(node.value, ir), node.attr)


def _is_call(node, name):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
