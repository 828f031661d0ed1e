"""GPU kernel fusion: runs of elementwise statements become one generated CUDA kernel each.

On the GPU every NumPy-style array operation is one kernel launch (``dadd = dh * (1 - h * h)``
is three). This pass finds maximal groups of elementwise statements of the final straight-line
program (the forward's gate arithmetic, the adjoint's ``dx = dy * (1 - y * y)`` lines, loss
tails, in-place gradient accumulations) and rewrites each group into ONE statement

    out1, out2 = _k3(in1, in2, ...)

where ``_k3`` runs a CuPy ``ElementwiseKernel`` generated from the group. Intermediate values
used only inside the group become registers of the kernel; values used later are its outputs.

``plan``   what fuses: typing, grouping, what may move, the rewritten statement list
``cuda``   the CUDA C text of a group, the kernel cache, the kernel a fused statement calls

Where it runs
    ``fuse_program(stmts, tape, adj)`` is the call for ``pipeline.compile_trace`` (GPU
    specializations only; put the returned kernels in the namespace), on the statements after
    ``eliminate_dead_code`` (so "used later" is final) and BEFORE ``insert_frees``. It is correct
    after ``insert_frees`` too (a ``del`` is an ordinary use), but fuses less there. The CPU path
    never calls it; the tests run it on the CPU with the stand-ins of ``tests/fusion_cpu.py``.

What is elementwise
    ``name = expr`` or ``name op= expr`` (op one of + - * /) where ``expr`` holds only names,
    int/float/bool constants, ``np.float32(c)`` style constants, the operators + - * / (and
    ``** c``), unary -, one comparison, ``np.tanh/exp/log/sqrt/maximum/minimum/where`` and
    ``.astype(np.<dtype>)``, on values of known shape and dtype (float32/float64/int32/int64/bool)
    with at least one device array.

What may move
    The fused statement takes the place of the group's last member. A statement met between
    members either stays before it ("passed": it neither reads what the members define nor
    defines what they read or define) or moves after it ("deferred": e.g. ``s = a.sum()`` or
    ``dg[:, 0:8] += da`` reading a member's result; no later member may then read what it
    defines or define what it reads or defines); otherwise the group ends there. Effects
    (guards, stores, random draws, the return) and anything unparsable are barriers, and so are
    in-place writes (``x[i] = v``, ``x[i] += v``, ``np.add.at``) into a buffer that may have
    aliases, i.e. not made fresh by an allocation or an elementwise statement in this program, or
    handed since to a statement that could keep a view of it. Deferring and passing keep the
    relative order of the statements that are not fused.

In-place accumulation ``dx += e``
    Joins a group when ``dx`` is local to the group, or when its buffer is known fresh (made by an
    elementwise statement, an allocation such as ``np.full``, ``@`` or a copy, and not handed to
    any non-elementwise statement since) and has the group's full shape: it is then an in-out
    parameter of the kernel, updated in place as before.

Shapes and dtypes
    ``shapes[name]`` is a tuple and ``dtypes[name]`` a NumPy dtype for device arrays (0-d
    included); ``dtypes[name]`` is the Python type ``float``/``int``/``bool`` for host scalars.
    Names missing from either are unknown; the pass infers the results of elementwise and
    host-scalar statements itself (NumPy 2 promotion rules: Python scalars are weak) and leaves
    statements touching unknown names alone. ``shapes_from_tape`` gives what the compiler knows
    statically.

Results are NumPy's: dtypes, literal types and scalar conversions as NumPy has them, and
``np.maximum/np.minimum`` give NaN for a NaN operand as NumPy's and CuPy's do (see ``cuda``).

What it needs of a statement
    The pass reads a statement only through these attributes: ``code`` (its Python text, parsed
    in one place, ``plan.statement_tree``, and scanned for names the kernel names must avoid),
    ``defs`` and ``uses`` (names written and read, beyond what the parse shows), ``effect`` (true
    for a barrier), and ``loc`` and ``back``, copied from a group's first member onto its fused
    statement. It makes statements in one place, ``plan.kernel_call_stmt``. Statements it does not
    fuse are passed through as the same objects.
"""
from .cuda import CACHE, CupyKernel, KernelCache, KernelSource, kernel_source
from .plan import Group, fuse, fuse_program, shapes_from_tape

__all__ = ["fuse", "fuse_program", "shapes_from_tape", "Group", "KernelSource", "kernel_source",
           "KernelCache", "CupyKernel", "CACHE"]
