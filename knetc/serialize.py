"""Save and load models, optimizer state and everything else a training run holds, safely (no pickle).

``save(path, obj)`` writes ONE ``.npz`` file (``numpy.savez``): every array is an entry
(``a0``, ``a1``, ...) and the structure is a JSON document stored in the entry ``__knetc__``
(a 0-d unicode array).  ``load(path)`` reads it with ``np.load(..., allow_pickle=False)`` and
rebuilds the exact structure.  No pickle is ever written or read, and no class named by the file
is instantiated unless it is one of the few that this module knows (below).

What is kept
------------
* Python ``None``, ``bool``, ``int`` (any size), ``float`` (bit for bit, NaN and -0.0 too), ``str``;
* ``list``, ``tuple`` and ``dict`` nested to any depth: lists stay lists, tuples stay tuples, dicts
  keep their key order; dict keys may be ``str`` or ``int``;
* NumPy arrays of every dtype but ``object`` (bool, ints, floats, complex, strings, bytes,
  datetimes, structured records; byte order and shape kept; ``np.memmap`` comes back as an
  ordinary array), NumPy scalars (they stay NumPy scalars), and ``np.dtype`` objects;
* CuPy arrays: saved from the GPU (``.get()``); ``load`` returns them as NumPy arrays, or, with
  ``load(path, gpu=True)``, as CuPy arrays again (only the ones that were CuPy arrays when saved);
* one array object that appears at several places is saved once and comes back as one object
  (tied weights stay tied); distinct arrays that merely overlap in memory (views) come back
  as independent copies;
* the optimizers of ``knetc.optim`` (those in ``optim.OPTIMIZERS``): class, hyperparameters and
  state (step counters and per-parameter buffers), wherever they sit in the structure, e.g. the
  nested structure made by ``optimizers(model, Adam)``.  Training continues exactly;
* batchnorm running moments (``bnmoments()``): momentum, running mean and variance.  The
  optional ``meaninit``/``varinit`` functions are not saved: they are only used while ``mean`` /
  ``var`` are still None, so they are dropped once the moments exist, and saving moments that
  still need them raises ``TypeError``;
* RNN specs (the ``RNN`` dataclass ``rnninit`` returns: mode, sizes, layers, bidirectional,
  dropout, dtype), rebuilt through their constructor (which validates them).

Anything else (functions, other classes, subclasses of ``list``/``tuple``/``dict`` such as
namedtuples, Python ``complex``, sets) raises ``TypeError`` naming where it sits in ``obj``
(``obj['layers'][2].mean``); nothing is written then.

File format and versions
------------------------
The JSON document is ``{"version": V, "root": NODE}``; a node is ``{"t": TYPE, ...}``.  ``save``
writes the lowest version that can hold ``obj``, so that older knetc can read what it can:

* version 1 (knetc 0.1.0): ``atom`` (None/bool/str), ``int`` (decimal string), ``float``
  (``float.hex``), ``array`` / ``scalar`` (an npz entry), ``list``, ``tuple``, ``dict`` (a list of
  ``[key, node]`` pairs), ``optimizer`` (class name, hyperparameter and state nodes).  Int dict
  keys, a shared entry for a shared array and the ``"dev": "cupy"`` mark on arrays are version
  1 too (a version 1 reader already handles them, ignoring the mark);
* version 2 adds ``dtype``, ``bnmoments`` and ``spec`` (a registered dataclass, e.g. ``RNN``).

``load`` reads every version up to its own and refuses newer files, and files that are not
knetc's, with a ``ValueError`` that says why.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Any

import numpy as np

from knetc import optim
from knetc.runtime import backend, layers, rnn

__all__ = ["save", "load"]

_KEY = "__knetc__"
_VERSION = 2          # the newest format this module writes and reads

# The dataclass-like classes that ``load`` may construct, by the stable name stored in the file.
# Only these: the file names a class, this table decides whether it is built.
_SPECS: dict[str, type] = {
    "rnn.RNN": rnn.RNN,
}
_SPEC_NAMES = {cls: name for name, cls in _SPECS.items()}


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy" and hasattr(x, "get") and hasattr(x, "dtype")


def _kind(x: Any) -> str:
    return f"{type(x).__module__}.{type(x).__qualname__}"


class _Writer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.seen: dict[int, tuple[Any, str]] = {}   # id(array) -> (array, key): keeps it alive
        self.version = 1

    def array(self, a: np.ndarray, where: str) -> str:
        if a.dtype.hasobject:
            raise TypeError(f"cannot save the object-dtype array at {where} safely "
                            "(it would need pickle); convert it to a numeric or string dtype")
        key = f"a{len(self.arrays)}"
        self.arrays[key] = a
        return key

    def shared(self, x: Any, where: str, convert: Any) -> str:
        """The entry of array ``x``: one entry per array object, however often it appears."""
        hit = self.seen.get(id(x))
        if hit is not None:
            return hit[1]
        key = self.array(convert(x), where)
        self.seen[id(x)] = (x, key)
        return key

    def node(self, x: Any, where: str) -> Any:
        t = type(x)
        if x is None or t is bool or t is str:
            return {"t": "atom", "v": x}
        if t is int:
            return {"t": "int", "v": str(x)}
        if t is float:
            return {"t": "float", "v": float.hex(x)}
        if isinstance(x, np.generic):
            return {"t": "scalar", "k": self.array(np.asarray(x), where)}
        if t is np.ndarray or t is np.memmap:
            return {"t": "array", "k": self.shared(x, where, np.asarray)}
        if _is_cupy(x):
            return {"t": "array", "k": self.shared(x, where, lambda a: a.get()), "dev": "cupy"}
        if t is list or t is tuple:
            return {"t": t.__name__, "v": [self.node(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if t is dict:
            for k in x:
                if type(k) is not str and type(k) is not int:
                    raise TypeError(f"cannot save the dict at {where}: key {k!r} is a "
                                    f"{_kind(k)}; dict keys must be str or int")
            return {"t": "dict", "v": [[k, self.node(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        if isinstance(x, optim.Optimizer):
            return self.optimizer(x, where)
        if t is layers.BNMoments:
            return self.bnmoments(x, where)
        if t in _SPEC_NAMES:
            return self.spec(x, _SPEC_NAMES[t], where)
        if isinstance(x, np.dtype):
            if x.hasobject:
                raise TypeError(f"cannot save the object dtype at {where} safely")
            self.version = max(self.version, 2)
            return {"t": "dtype", "k": self.array(np.empty(0, x), where)}
        hint = ""
        if isinstance(x, (list, tuple, dict)):
            base = next(b for b in (list, tuple, dict) if isinstance(x, b))
            hint = f" (a subclass of {base.__name__}: convert it with {base.__name__}(...))"
        elif isinstance(x, (int, float, str)):
            hint = " (a subclass of a Python scalar type: convert it first)"
        raise TypeError(f"cannot save the {_kind(x)} at {where}{hint}: knetc.save handles nested "
                        "list/tuple/dict of arrays, numbers, str, None, dtypes, knetc.optim "
                        "optimizers, bnmoments and RNN specs")

    def optimizer(self, x: Any, where: str) -> Any:
        name = type(x).__name__
        if optim.OPTIMIZERS.get(name) is not type(x):
            raise TypeError(f"cannot save the optimizer {_kind(x)} at {where}: only the classes in "
                            "knetc.optim.OPTIMIZERS can be saved")
        return {"t": "optimizer", "cls": name,
                "hyper": self.node(x.hyperparams(), f"{where}.hyperparams()"),
                "state": self.node(x.state(), f"{where}.state()")}

    def bnmoments(self, x: Any, where: str) -> Any:
        for name, init in (("mean", "meaninit"), ("var", "varinit")):
            if getattr(x, name) is None and getattr(x, init) is not None:
                raise TypeError(f"cannot save {where}.{init}: functions are not saved, and these "
                                f"moments still need it (their {name} is None); run one batch "
                                f"through batchnorm first, or pass {name}= instead of {init}=")
        self.version = max(self.version, 2)
        return {"t": "bnmoments", "momentum": self.node(x.momentum, f"{where}.momentum"),
                "mean": self.node(x.mean, f"{where}.mean"), "var": self.node(x.var, f"{where}.var")}

    def spec(self, x: Any, name: str, where: str) -> Any:
        self.version = max(self.version, 2)
        fields = dataclasses.fields(x)
        return {"t": "spec", "cls": name,
                "v": [[f.name, self.node(getattr(x, f.name), f"{where}.{f.name}")]
                      for f in fields if f.init]}


def save(path: str | os.PathLike, obj: Any) -> None:
    """Save ``obj`` to the ``.npz`` file ``path`` (written atomically; no suffix is added).

    See the module docstring for what ``obj`` may hold; anything else raises ``TypeError``
    naming its place in ``obj``, before any file is written.
    """
    w = _Writer()
    root = w.node(obj, "obj")
    doc = {"version": w.version, "root": root}
    entries = dict(w.arrays)
    entries[_KEY] = np.array(json.dumps(doc))
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **entries)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Damaged(ValueError):
    pass


class _Reader:
    def __init__(self, arrays: dict[str, np.ndarray], gpu: bool) -> None:
        self.arrays = arrays
        self.gpu = gpu
        self.moved: dict[str, Any] = {}    # key -> CuPy array (one per entry: aliasing is kept)

    def entry(self, n: Any, where: str) -> np.ndarray:
        k = n.get("k")
        if k not in self.arrays:
            raise _Damaged(f"the array entry {k!r} for {where} is missing")
        return self.arrays[k]

    def items(self, n: Any, where: str) -> list:
        v = n.get("v")
        if not isinstance(v, list):
            raise _Damaged(f"malformed {n.get('t')} node at {where}")
        return v

    def node(self, n: Any, where: str) -> Any:
        if not isinstance(n, dict):
            raise _Damaged(f"malformed node at {where}")
        t = n.get("t")
        if t == "atom":
            v = n.get("v")
            if v is not None and type(v) is not bool and type(v) is not str:
                raise _Damaged(f"malformed atom at {where}")
            return v
        if t == "int":
            return int(n["v"])
        if t == "float":
            return float.fromhex(n["v"])
        if t == "array":
            a = self.entry(n, where)
            if n.get("dev") == "cupy" and self.gpu:
                k = n["k"]
                if k not in self.moved:
                    self.moved[k] = _cupy(where).asarray(a)
                return self.moved[k]
            return a
        if t == "scalar":
            return self.entry(n, where)[()]
        if t == "list":
            return [self.node(v, f"{where}[{i}]") for i, v in enumerate(self.items(n, where))]
        if t == "tuple":
            return tuple(self.node(v, f"{where}[{i}]") for i, v in enumerate(self.items(n, where)))
        if t == "dict":
            out = {}
            for kv in self.items(n, where):
                if not (isinstance(kv, list) and len(kv) == 2 and type(kv[0]) in (str, int)):
                    raise _Damaged(f"malformed dict entry at {where}")
                out[kv[0]] = self.node(kv[1], f"{where}[{kv[0]!r}]")
            return out
        if t == "dtype":
            return self.entry(n, where).dtype
        if t == "optimizer":
            return self.optimizer(n, where)
        if t == "bnmoments":
            return layers.bnmoments(self.node(n["momentum"], f"{where}.momentum"),
                                    self.node(n["mean"], f"{where}.mean"),
                                    self.node(n["var"], f"{where}.var"))
        if t == "spec":
            return self.spec(n, where)
        raise _Damaged(f"unknown node type {t!r} at {where}")

    def optimizer(self, n: Any, where: str) -> Any:
        name = n.get("cls")
        cls = optim.OPTIMIZERS.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(f"the optimizer at {where} is a {name!r}, which this knetc does not "
                             f"have (knetc.optim.OPTIMIZERS: {sorted(optim.OPTIMIZERS)})")
        hyper = self.node(n["hyper"], f"{where}.hyperparams()")
        state = self.node(n["state"], f"{where}.state()")
        try:
            o = cls(**hyper)
            o.load_state(state)
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot rebuild the {name} at {where} from the file's hyperparameters "
                             f"{sorted(hyper)} and state {sorted(state)}: {e}") from None
        return o

    def spec(self, n: Any, where: str) -> Any:
        name = n.get("cls")
        cls = _SPECS.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(f"the object at {where} is a {name!r}, which knetc.load does not build "
                             f"(it builds only {sorted(_SPECS)})")
        kw = {}
        for kv in self.items(n, where):
            if not (isinstance(kv, list) and len(kv) == 2 and type(kv[0]) is str):
                raise _Damaged(f"malformed field at {where}")
            kw[kv[0]] = self.node(kv[1], f"{where}.{kv[0]}")
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot rebuild the {name} at {where} from the file's fields "
                             f"{sorted(kw)}: {e}") from None


def _cupy(where: str) -> Any:
    cp = backend.cupy_module()
    if cp is None:
        raise RuntimeError(f"knetc.load(..., gpu=True): {where} was a CuPy array, but no CUDA GPU "
                           "is available here; load with gpu=False to get NumPy arrays")
    return cp


def load(path: str | os.PathLike, *, gpu: bool = False) -> Any:
    """Load what ``save`` wrote (any format version up to this knetc's); no pickle is ever used.

    Arrays come back as NumPy arrays.  With ``gpu=True``, the arrays that were CuPy arrays when
    saved come back as CuPy arrays (``RuntimeError`` when no GPU works here); the others stay
    NumPy.  A file that is not a knetc file, is damaged, or was written by a newer knetc raises
    ``ValueError`` saying which.
    """
    with np.load(path, allow_pickle=False) as z:
        if _KEY not in z.files:
            raise ValueError(f"{path} is not a knetc file (no {_KEY} entry)")
        try:
            doc = json.loads(str(z[_KEY]))
        except ValueError:
            raise ValueError(f"{path} is not a knetc file, or is damaged: its {_KEY} entry is "
                             "not JSON") from None
        version = doc.get("version") if isinstance(doc, dict) else None
        if type(version) is not int or "root" not in doc:
            raise ValueError(f"{path} is damaged or not a knetc file: no format version")
        if version > _VERSION:
            raise ValueError(f"{path} was written by a newer knetc (file format {version}; this "
                             f"knetc reads formats 1 to {_VERSION}): upgrade knetc to load it")
        if version < 1:
            raise ValueError(f"{path} has an unknown file format version {version}")
        arrays = {k: z[k] for k in z.files if k != _KEY}
    try:
        return _Reader(arrays, gpu).node(doc["root"], "obj")
    except _Damaged as e:
        raise ValueError(f"{path} is damaged (format {version}): {e}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is damaged (format {version}): {type(e).__name__}: {e}") from None
