"""knetc.save / knetc.load keep everything a training run holds: checkpoints that resume exactly
(a ResNet-style CNN with batchnorm moments, an LSTM language model with Adam), RNN specs,
scalars, every array dtype, nested structures; clear errors for what cannot be saved safely, and
the file format's versions (a file in knetc 0.1.0's format, built here, still loads)."""
from __future__ import annotations

import collections
import dataclasses
import enum
import json

import numpy as np
import pytest

import knetc
from knetc import optim, serialize
from knetc.runtime import backend
from knetc.runtime.layers import BNMoments
from knetc.runtime.rnn import RNN, rnnforw

KEY = "__knetc__"


def same(a, b):
    """Exact equality: types, dtypes, shapes and bits (NaN == NaN, -0.0 != 0.0)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert type(k) is type(next(kb for kb in b if kb == k))
            same(a[k], b[k])
    elif isinstance(a, float):
        assert float.hex(a) == float.hex(b)
    elif isinstance(a, BNMoments):
        assert a.momentum == b.momentum
        same(a.mean, b.mean)
        same(a.var, b.var)
    elif isinstance(a, optim.Optimizer):
        assert a.hyperparams() == b.hyperparams()
        same(a.state(), b.state())
    else:
        assert a == b


def round_trip(tmp_path, obj, name="x.npz", **kw):
    p = tmp_path / name
    serialize.save(p, obj)
    return serialize.load(p, **kw)


def doc_of(path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z[KEY]))


# --------------------------------------------------------------------------- a ResNet-style CNN

def _resnet(seed):
    rng = np.random.default_rng(seed)

    def conv(o, i):
        return (rng.standard_normal((o, i, 3, 3)) * 0.2).astype(np.float32)

    def block(C):
        return {"w": conv(C, C), "bn": knetc.bnparams(C), "moments": knetc.bnmoments(momentum=0.2)}

    return {"conv0": conv(4, 3), "bn0": knetc.bnparams(4), "m0": knetc.bnmoments(),
            "blocks": [block(4), block(4)],
            "fc": (rng.standard_normal((4, 5)) * 0.3).astype(np.float32), "b": np.zeros(5, np.float32)}


def resnet_loss(model, x, y):
    h = knetc.relu(knetc.batchnorm(knetc.conv4(model["conv0"], x, padding=1), model["m0"], model["bn0"]))
    for blk in model["blocks"]:
        h = knetc.relu(h + knetc.batchnorm(knetc.conv4(blk["w"], h, padding=1), blk["moments"], blk["bn"]))
    h = knetc.pool(h, window=8, mode=1)
    return knetc.nll(h.reshape(h.shape[0], -1) @ model["fc"] + model["b"], y)


def _cnn_step(grad, model, opts, rng):
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    optim.update(model, grad(model, x, y), opts)


def test_resnet_checkpoint_resumes_bit_for_bit(tmp_path):
    grad = knetc.grad(resnet_loss)
    model = _resnet(0)
    opts = optim.optimizers(model, optim.Momentum, lr=0.05)
    data = np.random.default_rng(1)
    for _ in range(3):
        _cnn_step(grad, model, opts, data)
    m = model["blocks"][1]["moments"]
    assert not np.all(m.mean == 0) and not np.all(m.var == 1)   # non-trivial running statistics

    ck = round_trip(tmp_path, {"model": model, "opts": opts, "step": 3,
                               "data_rng": data.bit_generator.state})
    model2, opts2 = ck["model"], ck["opts"]
    same(model, model2)
    same(opts, opts2)
    assert type(model2["m0"]) is BNMoments and model2["blocks"][0]["moments"].momentum == 0.2
    assert model2["m0"] is not model["m0"] and model2["conv0"] is not model["conv0"]
    data2 = np.random.default_rng()
    data2.bit_generator.state = ck["data_rng"]

    # test-time predictions use the running moments: identical
    x = np.random.default_rng(5).standard_normal((2, 4, 8, 8)).astype(np.float32)
    with knetc.training_mode(False):
        same(knetc.batchnorm(x, model["m0"]), knetc.batchnorm(x, model2["m0"]))
    # the next training steps: identical parameters, moments and optimizer state, bit for bit
    for _ in range(2):
        _cnn_step(grad, model, opts, data)
        _cnn_step(grad, model2, opts2, data2)
    same(model, model2)
    same(opts, opts2)


# --------------------------------------------------------------------------- an LSTM language model

V, E, H, T, B = 11, 6, 8, 5, 3


def _lm(seed):
    r, w = knetc.rnninit(E, H, rnnType="lstm", numLayers=2, seed=seed)
    rng = np.random.default_rng(seed + 1)
    return [r, w, (rng.standard_normal((V, E)) * 0.3).astype(np.float32),
            (rng.standard_normal((H, V)) * 0.3).astype(np.float32), np.zeros(V, np.float32)]


def lm_loss(model, x, y, h):
    r, wr, wx, wy, by = model
    out, hy, cy = rnnforw(r, wr, wx[x], h[0], h[1])
    h[0], h[1] = knetc.getval(hy), knetc.getval(cy)
    return knetc.nll(out.reshape(-1, out.shape[2]) @ wy + by, y)


def _lm_step(grad, run):
    x = run["data"].integers(0, V, (T, B))
    y = run["data"].integers(0, V, T * B)
    optim.update(run["model"], grad(run["model"], x, y, run["h"]), run["opts"])
    run["step"] += 1


def _lm_run(seed):
    model = _lm(seed)
    return {"model": model, "opts": optim.optimizers(model, optim.Adam, lr=0.01), "h": [None, None],
            "step": 0, "data": np.random.default_rng(seed + 2)}


def test_lstm_lm_with_adam_resumes_exactly(tmp_path):
    grad = knetc.grad(lm_loss)
    ref = _lm_run(7)
    for _ in range(5):
        _lm_step(grad, ref)

    run = _lm_run(7)
    for _ in range(3):
        _lm_step(grad, run)
    p = tmp_path / "lm.npz"
    serialize.save(p, {**run, "data": run["data"].bit_generator.state})
    ck = serialize.load(p)
    assert type(ck["model"][0]) is RNN and ck["model"][0] == run["model"][0]
    assert ck["opts"][0] is None and ck["opts"][1].t == 3 and ck["step"] == 3
    data = np.random.default_rng()
    data.bit_generator.state = ck["data"]
    run = {**ck, "data": data}
    for _ in range(2):
        _lm_step(grad, run)

    assert run["step"] == 5 and run["opts"][2].t == 5
    same(run["model"], ref["model"])
    same(run["opts"], ref["opts"])
    same(run["h"], ref["h"])


# --------------------------------------------------------------------------- specs and moments

@pytest.mark.parametrize("kw", [dict(rnnType="lstm"), dict(rnnType="gru", numLayers=3, dropout=0.25),
                                dict(rnnType="relu", bidirectional=True, dtype=np.float64),
                                dict(rnnType=":tanh", numLayers=2, bidirectional=True)])
def test_rnn_spec_round_trip(tmp_path, kw):
    r, w = knetc.rnninit(3, 4, seed=0, **kw)
    r2, w2 = round_trip(tmp_path, (r, w))
    assert type(r2) is RNN and r2 == r and hash(r2) == hash(r) and repr(r2) == repr(r)
    assert dataclasses.asdict(r2) == dataclasses.asdict(r) and r2.paramSize == r.paramSize
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(r.dtype)
    for a, b in zip(rnnforw(r, w, x), rnnforw(r2, w2, x)):
        same(a, b)
    assert doc_of(tmp_path / "x.npz")["version"] == 2


def test_bnmoments_states(tmp_path):
    fresh = knetc.bnmoments(momentum=0.3)                       # nothing seen yet: mean/var None
    given = knetc.bnmoments(mean=np.arange(3.0), var=np.full(3, 2.0, np.float32))
    inited = knetc.bnmoments(meaninit=np.zeros, varinit=np.ones)
    with knetc.training_mode(True):
        knetc.batchnorm(np.random.default_rng(0).standard_normal((5, 3)), inited)
    back = round_trip(tmp_path, [fresh, given, inited])
    same([fresh, given, inited], back)
    assert back[0].mean is None and back[0].momentum == 0.3
    assert back[2].meaninit is None and back[2].varinit is None   # no longer needed: not saved
    with knetc.training_mode(True):                              # the fresh one still initializes
        knetc.batchnorm(np.ones((4, 2), np.float32), back[0])
    assert back[0].mean.dtype == np.float32 and back[0].mean.shape == (2,)

    with pytest.raises(TypeError, match=r"obj\['m'\]\.meaninit"):
        serialize.save(tmp_path / "bad.npz", {"m": knetc.bnmoments(meaninit=np.zeros)})
    assert not (tmp_path / "bad.npz").exists()


@pytest.mark.parametrize("cls", list(optim.OPTIMIZERS.values()), ids=lambda c: c.__name__)
def test_every_optimizer_nested_fresh_and_trained(tmp_path, cls):
    w = {"a": [np.ones((2, 3), np.float32), 0.5], "b": (np.arange(4.0),), 3: {"c": np.zeros(2)}}
    opts = optim.optimizers(w, cls, lr=0.01, gclip=1.0)
    fresh = round_trip(tmp_path, opts, "fresh.npz")             # before the first update
    same(opts, fresh)
    rng = np.random.default_rng(0)

    def grads():
        return {"a": [rng.standard_normal((2, 3)).astype(np.float32), float(rng.standard_normal())],
                "b": (rng.standard_normal(4),), 3: {"c": rng.standard_normal(2)}}

    for _ in range(3):
        optim.update(w, grads(), opts)
    w2, opts2 = round_trip(tmp_path, (w, opts), "trained.npz")
    assert type(opts2) is dict and type(opts2["b"]) is tuple and type(opts2[3]["c"]) is cls
    same(opts, opts2)
    for _ in range(2):
        g = grads()
        optim.update(w, g, opts)
        optim.update(w2, g, opts2)
    same(w, w2)
    same(opts, opts2)


# --------------------------------------------------------------------------- scalars, nesting, arrays

def test_scalars_and_nested_structures(tmp_path):
    obj = {
        "ints": [0, -1, 2 ** 100, -(2 ** 64) - 1], "bools": (True, False), "none": None,
        "floats": [0.1, -0.0, float("inf"), -float("inf"), float("nan"), 5e-324, 1.7976931348623157e308],
        "strs": ["", "ascii", "ünï☃😀", "quote\" and \\ and \n", "\ud800"],
        1: "int key", -7: {"nested": [[(), ((1,),)], {}]}, "1": "str key beside int key 1",
        "mixed": [1, 1.0, True, "1", None],
        "deep": [[[[[{"k": (1, [2, (3,)])}]]]]],
        "dtypes": [np.dtype(np.float32), np.dtype(">i2"), np.dtype([("x", "<f8"), ("n", "u1", (2,))])],
    }
    back = round_trip(tmp_path, obj)
    same(obj, back)
    assert list(back) == list(obj) and type(back["bools"][0]) is bool and type(back["mixed"][0]) is int
    assert back[1] == "int key" and back["1"].startswith("str") and type(back[-7]["nested"][0][1]) is tuple
    assert doc_of(tmp_path / "x.npz")["version"] == 2           # dtypes need format 2
    serialize.save(tmp_path / "v1.npz", {k: v for k, v in obj.items() if k != "dtypes"})
    assert doc_of(tmp_path / "v1.npz")["version"] == 1          # the rest is readable by knetc 0.1.0


def test_arrays_of_every_dtype(tmp_path):
    rng = np.random.default_rng(0)
    rec = np.zeros(3, dtype=[("x", "<f4"), ("name", "U3"), ("v", ">i2", (2,))])
    rec["x"], rec["name"], rec["v"] = [1.5, -2, 3], ["a", "bc", "def"], [[1, 2], [3, 4], [5, 6]]
    arrays = [np.array([True, False])]
    arrays += [np.arange(-3, 3).astype(t) for t in (np.int8, np.int16, np.int32, np.int64)]
    arrays += [np.arange(6).astype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64)]
    arrays += [rng.standard_normal(5).astype(t) for t in (np.float16, np.float32, np.float64, np.longdouble)]
    arrays += [(rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(t)
               for t in (np.complex64, np.complex128, np.clongdouble)]
    arrays += [np.array(["x", "ünï"]), np.array([b"ab", b"\x00\xff"]), np.array([b"\x01\x02"], "V2"), rec,
               np.array(["2024-01-01T00:00:00.123456789", "NaT"], "datetime64[ns]"),
               np.array([1, -3], "timedelta64[s]"), np.arange(4, dtype=">f8"), np.array(np.nan, np.float32),
               np.zeros((0, 3), np.int32), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
               np.arange(20.0).reshape(4, 5)[::2, 1::2], np.array([np.nan, -0.0, np.inf])]
    scalars = [np.float32(1.5), np.float64(-0.0), np.longdouble(1) / 3, np.int8(-5), np.uint64(2 ** 64 - 1),
               np.bool_(True), np.complex64(1 - 2j), np.str_("s"), np.bytes_(b"b"),
               np.datetime64("2020-02-29"), np.timedelta64(5, "ms"), rec[1]]
    back_arrays, back_scalars = round_trip(tmp_path, (arrays, scalars))
    same(arrays, back_arrays)
    same(scalars, back_scalars)
    assert back_arrays[-3].shape == (2, 3) and back_arrays[-3].flags.writeable


def test_shared_arrays_stay_shared_and_memmap(tmp_path):
    w = np.arange(6.0).reshape(2, 3)
    mm = np.memmap(tmp_path / "mm.bin", dtype=np.float32, mode="w+", shape=(3,))
    mm[:] = [1, 2, 3]
    back = round_trip(tmp_path, {"embed": w, "tied": [w, w.copy()], "mm": mm})
    assert back["embed"] is back["tied"][0] and back["tied"][1] is not back["embed"]
    assert type(back["mm"]) is np.ndarray and back["mm"].tolist() == [1, 2, 3]
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert len(z.files) == 3 + 1                             # w saved once


# --------------------------------------------------------------------------- CuPy arrays

class FakeCupyArray:
    """Looks like a cupy.ndarray to save(): module ``cupy...``, ``.dtype`` and ``.get()``."""

    def __init__(self, a):
        self.a = a
        self.dtype, self.shape = a.dtype, a.shape

    def get(self):
        return self.a.copy()


FakeCupyArray.__module__ = "cupy._core.core"


class FakeCupyModule:
    @staticmethod
    def asarray(a):
        return FakeCupyArray(np.asarray(a))


def test_cupy_arrays_come_back_as_numpy_unless_asked(tmp_path, monkeypatch):
    g = FakeCupyArray(np.arange(3.0))
    obj = {"g": g, "again": g, "cpu": np.ones(2)}
    back = round_trip(tmp_path, obj)
    assert type(back["g"]) is np.ndarray and back["g"] is back["again"] and back["g"].tolist() == [0, 1, 2]
    assert doc_of(tmp_path / "x.npz")["version"] == 1

    monkeypatch.setattr(backend, "cupy_module", lambda: None)
    with pytest.raises(RuntimeError, match=r"obj\['g'\] was a CuPy array"):
        serialize.load(tmp_path / "x.npz", gpu=True)
    monkeypatch.setattr(backend, "cupy_module", lambda: FakeCupyModule)
    back = serialize.load(tmp_path / "x.npz", gpu=True)
    assert type(back["g"]) is FakeCupyArray and back["g"] is back["again"]
    assert type(back["cpu"]) is np.ndarray


@pytest.mark.gpu
def test_real_cupy_round_trip(tmp_path):
    cp = backend.cupy_module()
    if cp is None:
        pytest.skip("no CUDA GPU")
    w = [cp.arange(6, dtype=cp.float32).reshape(2, 3), np.zeros(2)]
    opts = optim.optimizers(w, optim.Adam)
    optim.update(w, [cp.ones((2, 3), cp.float32), np.ones(2)], opts)
    w2, opts2 = round_trip(tmp_path, (w, opts))
    assert type(w2[0]) is np.ndarray and type(opts2[0].fstm) is np.ndarray
    w3, opts3 = serialize.load(tmp_path / "x.npz", gpu=True)
    assert type(w3[0]) is cp.ndarray and type(w3[1]) is np.ndarray and type(opts3[0].fstm) is cp.ndarray
    np.testing.assert_array_equal(w3[0].get(), w[0].get())


# --------------------------------------------------------------------------- errors

class Point(collections.namedtuple("Point", "x y")):
    pass


@dataclasses.dataclass
class NotRegistered:
    lr: float = 0.1


class Color(enum.IntEnum):
    RED = 1


class MyOpt(optim.SGD):
    pass


@pytest.mark.parametrize("bad, where", [
    ({"layers": [np.ones(2), lambda x: x]}, r"obj\['layers'\]\[1\]"),
    ({"a": {1.5: 2}}, r"obj\['a'\]: key 1\.5"),
    ({"a": {True: 2}}, r"obj\['a'\]: key True"),
    ((1, {2, 3}), r"obj\[1\]"),
    ([1j], r"obj\[0\]"),
    ({"p": Point(1, 2)}, r"obj\['p'\] \(a subclass of tuple"),
    ({"d": collections.OrderedDict(a=1)}, r"obj\['d'\] \(a subclass of dict"),
    ([np.array([object()], dtype=object)], r"object-dtype array at obj\[0\]"),
    ({"dt": np.dtype(object)}, r"object dtype at obj\['dt'\]"),
    ({"sched": NotRegistered()}, r"obj\['sched'\]"),
    ([Color.RED], r"obj\[0\] \(a subclass of a Python scalar"),
    ({"o": [MyOpt()]}, r"obj\['o'\]\[0\]: only the classes in knetc.optim.OPTIMIZERS"),
    ({"o": optim.SGD(lr=lambda t: 0.1)}, r"obj\['o'\]\.hyperparams\(\)\['lr'\]"),
])
def test_unknown_types_name_their_place(tmp_path, bad, where):
    with pytest.raises(TypeError, match=where):
        serialize.save(tmp_path / "x.npz", bad)
    assert not list(tmp_path.iterdir())                          # nothing written, no temporary left


# --------------------------------------------------------------------------- format versions

# The JSON document knetc 0.1.0 (format 1) wrote for the object built by _v1_object(): captured
# from that version's save() before format 2 existed.
V1_DOC = (
    '{"version": 1, "root": {"t": "dict", "v": [["w", {"t": "list", "v": [{"t": "array", "k": "a0"}, '
    '{"t": "array", "k": "a1"}]}], ["opt", {"t": "list", "v": [{"t": "optimizer", "cls": "Adam", '
    '"hyper": {"t": "dict", "v": [["lr", {"t": "float", "v": "0x1.47ae147ae147bp-7"}], ["beta1", '
    '{"t": "float", "v": "0x1.ccccccccccccdp-1"}], ["beta2", {"t": "float", "v": "0x1.ff7ced916872bp-1"}], '
    '["eps", {"t": "float", "v": "0x1.5798ee2308c3ap-27"}], ["gclip", {"t": "float", "v": "0x0.0p+0"}]]}, '
    '"state": {"t": "dict", "v": [["t", {"t": "int", "v": "1"}], ["fstm", {"t": "array", "k": "a2"}], '
    '["scndm", {"t": "array", "k": "a3"}]]}}, {"t": "atom", "v": null}]}], ["meta", {"t": "dict", "v": '
    '[["lr", {"t": "float", "v": "0x1.999999999999ap-4"}], ["n", {"t": "int", "v": "3"}], ["big", '
    '{"t": "int", "v": "1180591620717411303424"}], ["name", {"t": "atom", "v": "x"}], ["none", {"t": "atom", '
    '"v": null}], ["flag", {"t": "atom", "v": true}], ["pair", {"t": "tuple", "v": [{"t": "int", "v": "1"}, '
    '{"t": "float", "v": "0x1.4000000000000p+1"}]}]]}], ["s", {"t": "scalar", "k": "a4"}]]}}')


def _v1_arrays():
    w0 = np.arange(6, dtype=np.float32).reshape(2, 3)
    o = optim.Adam(lr=0.01)
    o.update(w0, np.full((2, 3), 0.5, np.float32))
    return {"a0": w0, "a1": np.array([1, -2], np.int64), "a2": o.fstm, "a3": o.scndm,
            "a4": np.array(2.0, np.float32)}


def write_v1_file(path, doc=V1_DOC, arrays=None):
    """A file laid out as knetc 0.1.0 wrote it: np.savez of the arrays and the JSON document."""
    arrays = _v1_arrays() if arrays is None else arrays
    with open(path, "wb") as f:
        np.savez(f, **arrays, **{KEY: np.array(doc)})


def _v1_object():
    a = _v1_arrays()
    o = optim.Adam(lr=0.01)
    o.load_state({"t": 1, "fstm": a["a2"], "scndm": a["a3"]})
    return {"w": [a["a0"], a["a1"]], "opt": [o, None],
            "meta": {"lr": 0.1, "n": 3, "big": 2 ** 70, "name": "x", "none": None, "flag": True,
                     "pair": (1, 2.5)},
            "s": np.float32(2.0)}


def test_loads_a_format_1_file(tmp_path):
    p = tmp_path / "old.npz"
    write_v1_file(p)
    back = serialize.load(p)
    same(_v1_object(), back)
    o = back["opt"][0]
    assert type(o) is optim.Adam and o.t == 1
    o.update(back["w"][0], np.ones((2, 3), np.float32))     # and training continues
    assert o.t == 2
    # today's save() still writes exactly that document for format-1 content
    serialize.save(tmp_path / "new.npz", _v1_object())
    with np.load(tmp_path / "new.npz", allow_pickle=False) as z:
        assert str(z[KEY]) == V1_DOC


def _doc(version, root):
    return json.dumps({"version": version, "root": root})


@pytest.mark.parametrize("doc, arrays, match", [
    (_doc(3, {"t": "atom", "v": None}), {},
     r"newer knetc \(file format 3; this knetc reads formats 1 to 2\)"),
    (json.dumps({"root": {"t": "atom", "v": None}}), {}, "no format version"),
    (_doc("1", {"t": "atom", "v": None}), {}, "no format version"),
    (_doc(0, {"t": "atom", "v": None}), {}, "unknown file format version 0"),
    ("not json", {}, "not JSON"),
    (_doc(2, {"t": "list", "v": [{"t": "hologram"}]}), {}, r"unknown node type 'hologram' at obj\[0\]"),
    (_doc(1, {"t": "array", "k": "a7"}), {}, "entry 'a7' for obj is missing"),
    (_doc(1, {"t": "atom", "v": [1]}), {}, "malformed atom"),
    (_doc(2, {"t": "spec", "cls": "os.system", "v": [["command", {"t": "atom", "v": "echo"}]]}), {},
     r"'os.system', which knetc.load does not build \(it builds only \['rnn.RNN'\]\)"),
    (_doc(2, {"t": "spec", "cls": "rnn.RNN", "v": [["mode", {"t": "atom", "v": "lstm"}]]}), {},
     "cannot rebuild the rnn.RNN at obj"),
    (_doc(1, {"t": "optimizer", "cls": "Lion", "hyper": {"t": "dict", "v": []},
              "state": {"t": "dict", "v": []}}), {}, "'Lion', which this knetc does not have"),
    (_doc(1, {"t": "optimizer", "cls": "Adam",
              "hyper": {"t": "dict", "v": [["nope", {"t": "int", "v": "1"}]]},
              "state": {"t": "dict", "v": []}}), {}, "cannot rebuild the Adam at obj"),
])
def test_bad_files_say_why(tmp_path, doc, arrays, match):
    p = tmp_path / "bad.npz"
    write_v1_file(p, doc, arrays)
    with pytest.raises(ValueError, match=match):
        serialize.load(p)


def test_version_written_is_the_lowest_that_holds_the_content(tmp_path):
    r, w = knetc.rnninit(2, 3, seed=0)
    for obj, version in [([np.ones(2), {1: 2.0}], 1), ({"opt": optim.Adam()}, 1), ([r, w], 2),
                         ({"m": knetc.bnmoments()}, 2), (np.dtype("f4"), 2)]:
        serialize.save(tmp_path / "v.npz", obj)
        assert doc_of(tmp_path / "v.npz")["version"] == version, obj
    assert serialize._VERSION == 2
