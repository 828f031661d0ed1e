"""knetc's exceptions: every one names the user's file, line and construct, and what to do instead."""
from __future__ import annotations

import linecache


class KnetcError(Exception):
    """A model that knetc cannot differentiate as written.

    Attributes: ``filename``, ``lineno`` (the user's source position, when known), ``construct``
    (the offending source text) and ``hint`` (what to write instead).
    """

    def __init__(self, message: str, *, filename: str | None = None, lineno: int | None = None,
                 construct: str | None = None, hint: str | None = None):
        self.message, self.filename, self.lineno = message, filename, lineno
        self.construct, self.hint = construct, hint
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [self.message]
        if self.filename is not None and self.lineno is not None:
            parts.append(f'  File "{self.filename}", line {self.lineno}')
            text = self.construct or linecache.getline(self.filename, self.lineno).strip()
            if text:
                parts.append(f"    {text}")
        if self.hint:
            parts.append(self.hint)
        return "\n".join(parts)


class UnsupportedSyntax(KnetcError):
    """A statement or expression outside the subset that knetc specializes (class, try, with…)."""


class MutationError(KnetcError):
    """An in-place change of an array (``x[i] = v``, ``x += v``): arrays are values under grad."""


class NoRuleError(KnetcError):
    """A call to a function with no Python source and no registered derivative rule."""


class ArgumentError(KnetcError, TypeError):
    """knetc.grad called with arguments it cannot take (``argnums`` out of range, a wrong type);
    also a TypeError, as Python raises for a bad argument."""


class LossError(KnetcError):
    """The function's result is not a scalar, or the differentiated argument holds no float."""


class GuardFailed(Exception):
    """Raised inside generated code when a cached specialization does not fit this call."""
