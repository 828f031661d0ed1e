"""Where a gradient's compile time goes: seconds per stage, while ``knetc.compile_times()`` runs.

A first call pays for reading the source, specializing it (the forward runs meanwhile), writing
the adjoint, and either compiling the whole function or walking the adjoint once (tier 0);
``compile_times`` shows how much each took (as ``torch._dynamo.utils.compile_times`` does for
torch.compile), so that a slow first call can be told apart from a slow model. Each stage's
time is its own: a stage inside another (a helper unit's backward compiled while tier 0 walks
an adjoint, a source read while specializing) is taken out of the outer one.

Off (no collector), a stage costs one list check; stages are per specialization, never per
operation.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator

__all__ = ["CompileTimes", "compile_times", "stage", "timed", "STAGES"]

# The stages, in the order a first call meets them (what each covers: CompileTimes).
STAGES = ("parse", "rules", "specialize", "adjoint", "compile", "tier 0")

_collectors: list[CompileTimes] = []
_local = threading.local()


class CompileTimes(dict):
    """Seconds spent in each stage (``STAGES``) inside a ``knetc.compile_times()`` block, each
    stage's own time (a stage inside another is not counted twice), and ``counts``: how many
    times each ran.

    - parse: reading a function's source into a syntax tree (once per function);
    - rules: turning a derivative rule's template into its code writer (once per rule);
    - specialize: running the function on the arguments while recording it (its forward pass);
    - adjoint: writing the backward program from the rules;
    - compile: optimizing, rendering and compiling a whole gradient function;
    - tier 0: walking a first call's backward once over the recorded values, instead of
      compiling it (with the backward calls of helper units inside it).

    Running compiled code and cache lookups are in no stage; a helper unit's forward, run while
    specializing, counts as specializing."""

    def __init__(self):
        super().__init__((name, 0.0) for name in STAGES)
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)

    @property
    def total(self) -> float:
        """The seconds of all stages together."""
        return sum(self.values())

    def __str__(self) -> str:
        rows = [f"{name:<11}{self[name] * 1e3:9.2f} ms  ({self.counts[name]}×)"
                for name in STAGES if self.counts[name]]
        return "\n".join(rows + [f"{'total':<11}{self.total * 1e3:9.2f} ms"])


@contextlib.contextmanager
def compile_times() -> Iterator[CompileTimes]:
    """Collect the seconds knetc's compiler spends per stage inside the block (in any thread:
    a compile another thread runs meanwhile counts too).

    >>> with knetc.compile_times() as t:
    ...     g = knetc.grad(loss)(w, x, y)
    >>> print(t)             # a line per stage; t["specialize"] is seconds
    """
    times = CompileTimes()
    _collectors.append(times)
    try:
        yield times
    finally:
        _collectors.remove(times)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the block as stage ``name`` (one of ``STAGES``) in every open collector."""
    if not _collectors:
        yield
        return
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    inner = [0.0]           # seconds of stages inside this one
    stack.append(inner)
    start = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - start
        stack.pop()
        if stack:
            stack[-1][0] += took
        for times in list(_collectors):
            times[name] = times.get(name, 0.0) + took - inner[0]
            times.counts[name] = times.counts.get(name, 0) + 1


def timed(name: str):
    """Decorator: every call of the function is stage ``name``."""
    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            if not _collectors:
                return fn(*args, **kwargs)
            with stage(name):
                return fn(*args, **kwargs)
        return run
    return decorate
