"""Derivative rules, one module per primitive family.

Importing this package registers nothing; ``load_all`` registers every rule (``import knetc``
calls it, after the compiler it needs is importable). A rule is a short template (see
registry.adjoint); ``support`` holds helpers several families share.
"""
from . import registry


def load_all():
    """Register the built-in rules, then mark them as knetc's own (see registry.mark_builtin)."""
    from . import (arith, contract, conv, elementwise, joining, knet, layers,  # noqa: F401
                   linalg, nondiff, reduce, rnn, shape, special, stats)
    registry.mark_builtin()
