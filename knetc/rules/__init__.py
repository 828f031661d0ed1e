"""Derivative rules, one module per primitive family.

Importing this package registers every rule. A rule is a short template (see registry.adjoint).
"""
from . import registry  # noqa: F401


def load_all():
    """Register the built-in rules (imported lazily: the rules refer to the compiler's codegen)."""
    from . import arith, knet, nondiff, reduce, shape  # noqa: F401
    for optional in ("conv", "rnn", "layers"):
        try:
            __import__(f"{__name__}.{optional}")
        except ImportError:  # pragma: no cover - while the layer runtime is absent
            pass
    registry.mark_builtin()
