"""knetc.graph_step on the CPU: everything but CUDA, through a backend that imitates streams and
graphs with NumPy (a "graph" replays the captured Python body).  The arguments' checks, the
refusals, the static input buffers, the per-step scalars and the identity checks are the real
code; the update is the NumPy evaluation of the fused kernels' statements."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest

import knetc
from knetc import errors, graphs, optim_kernels, schedules
from knetc.optim import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the examples package lives at the repository root
    sys.path.insert(0, str(ROOT))


class FakeCaptureError(RuntimeError):
    """What the fake CUDA raises for an operation refused while capturing."""


class FakeGraph:
    def __init__(self, body):
        self.body = body
        self.launches = 0


class FakeStream:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeBackend:
    """NumPy arrays as device arrays; capture runs the body once and undoes what it wrote (a
    real capture runs nothing); a launch runs the body again."""

    gpu = False

    def __init__(self, fail_in_capture: Exception | None = None):
        self.log: list = []
        self.capturing = False
        self.fail_in_capture = fail_in_capture
        self.current = FakeStream("current")

    def is_array(self, x):   # NumPy's loss is a scalar, CuPy's a 0-d array
        return isinstance(x, (np.ndarray, np.generic))

    def to_device(self, x):
        return np.array(x, copy=True, order="C")

    def zeros(self, shape):
        return np.zeros(shape)

    def new_stream(self):
        return FakeStream("capture")

    def current_stream(self):
        return self.current

    def on_stream(self, stream):
        self.log.append(("on", stream.name))
        return contextlib.nullcontext()

    def memory(self):
        return contextlib.nullcontext()

    def synchronize(self):
        self.log.append("sync")

    def capture(self, stream, body, protect):
        saved = [a.copy() for a in protect]
        self.capturing = True
        try:
            body()
        finally:
            self.capturing = False
            for a, s in zip(protect, saved):
                a[...] = s
        self.log.append(("capture", stream.name))
        return FakeGraph(body)

    def capture_error(self, e):
        return isinstance(e, FakeCaptureError)

    def launch(self, graph, stream):
        self.log.append(("launch", stream.name))
        graph.body()
        graph.launches += 1

    def copy_in(self, static, x, stream):
        if x is not static:
            self.log.append(("copy", stream.name))
            static[...] = x

    def set_scalars(self, dev, host, stream):
        self.log.append(("scalars", stream.name))
        dev[...] = host

    def copy_out(self, x, stream):
        return np.array(x, copy=True)

    def update(self, spec, w, g, states, row):
        if self.capturing and self.fail_in_capture is not None:
            raise self.fail_in_capture
        optim_kernels.evaluate(spec, w, g, states, row)


def mlp_problem(seed=0, n=20, batches=5):
    from examples import mnist_mlp
    rng = np.random.default_rng(seed)
    w = mnist_mlp.initweights(hidden=(16,))
    data = [(rng.random((n, 1, 28, 28), np.float32), rng.integers(0, 10, n))
            for _ in range(batches)]
    return mnist_mlp.loss, w, data


def ordinary(loss, w, opts, data, argnums=0):
    """The steps without a graph: losses and the parameters after them."""
    gl = knetc.gradloss(loss, argnums=argnums)
    losses = []
    for args in data:
        full = list(args)
        full.insert(argnums, w)
        g, lo = gl(*full)
        knetc.update(w, g, opts)
        losses.append(float(lo))
    return losses


def copy(w):
    return [a.copy() for a in w]


@pytest.mark.parametrize("kw", [{}, {"gclip": 0.1, "weight_decay": 0.01,
                                     "lr": schedules.linear_warmup(0.01, 3)}])
def test_replays_equal_ordinary_steps_mlp_adam(kw):
    loss, w, data = mlp_problem()
    wa, wb = copy(w), copy(w)
    oa, ob = knetc.optimizers(wa, knetc.Adam, **kw), knetc.optimizers(wb, knetc.Adam, **kw)
    expected = ordinary(loss, wa, oa, data)
    b = FakeBackend()
    step = knetc.graph_step(loss, wb, ob, *data[0], backend=b)
    assert all(np.array_equal(x, y) for x, y in zip(wb, w))   # warm-up and capture: no update
    got = [float(step(x, y)) for x, y in data]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    for x, y in zip(wb, wa):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert [o.t for o in ob] == [o.t for o in oa] == [len(data)] * 4
    assert step.replays == len(data) and step.graph.launches == len(data)
    # every call: copies into the static buffers, the scalars, the launch, on the current stream
    assert ("launch", "current") in b.log and ("scalars", "current") in b.log
    assert ("capture", "capture") in b.log and ("on", "capture") in b.log
    assert "knetc: gradient of loss" in step.source


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_replays(name):
    def loss(w, x):
        return np.sum((x @ w["a"] + w["b"]) ** 2) / 8

    rng = np.random.default_rng(1)
    w = {"a": rng.standard_normal((3, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}
    xs = [(rng.standard_normal((8, 3)).astype(np.float32),) for _ in range(4)]
    wa = {k: v.copy() for k, v in w.items()}
    wb = {k: v.copy() for k, v in w.items()}
    kw = {"gclip": 0.5, "weight_decay": 0.01}
    oa = knetc.optimizers(wa, OPTIMIZERS[name], **kw)
    ob = knetc.optimizers(wb, OPTIMIZERS[name], **kw)
    expected = ordinary(loss, wa, oa, xs)
    step = knetc.graph_step(loss, wb, ob, *xs[0], backend=FakeBackend())
    got = [float(step(*x)) for x in xs]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    for k in w:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-6, atol=1e-7)


def test_w_elsewhere_in_the_arguments_and_constants():
    def loss(x, w, scale, batch):
        return np.sum((x @ w[0] - batch["y"]) ** 2) * scale

    rng = np.random.default_rng(2)
    w = [rng.standard_normal((3, 1)).astype(np.float32)]
    data = [(rng.standard_normal((5, 3)).astype(np.float32), 2,
             {"y": rng.standard_normal((5, 1)).astype(np.float32)}) for _ in range(3)]
    wa, wb = copy(w), copy(w)
    oa, ob = knetc.optimizers(wa, knetc.SGD, lr=0.01), knetc.optimizers(wb, knetc.SGD, lr=0.01)
    expected = ordinary(loss, wa, oa, data, argnums=1)
    step = knetc.graph_step(loss, wb, ob, *data[0], argnums=1, backend=FakeBackend())
    got = [float(step(*d)) for d in data]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(wb[0], wa[0], rtol=1e-6)
    # the static buffers hold the last batch
    np.testing.assert_array_equal(step.inputs[0], data[-1][0])
    np.testing.assert_array_equal(step.inputs[2]["y"], data[-1][2]["y"])
    x, _, batch = data[0]
    with pytest.raises(errors.KnetcError, match="fixed in a graph"):
        step(x, 3, batch)                          # another constant
    with pytest.raises(errors.KnetcError, match="structure"):
        step(x, 2, {"z": batch["y"]})              # another structure
    with pytest.raises(errors.KnetcError, match="holds a float where"):
        step(1.0, 2, batch)


def test_negative_argnums_is_from_the_end():
    def loss(x, w):
        return np.sum(x @ w)

    w = np.ones((2, 1), np.float32)
    step = knetc.graph_step(loss, w, knetc.SGD(lr=0.5), np.ones((3, 2), np.float32),
                            argnums=-1, backend=FakeBackend())
    step(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(w, np.full((2, 1), -0.5, np.float32))   # 1 - 0.5 * 3


def _linear():
    def loss(w, x):
        return np.sum((x @ w[0]) ** 2)

    w = [np.ones((3, 2), np.float32), np.ones(2, np.float32)]   # w[1] has no gradient
    return loss, w, np.ones((4, 3), np.float32)


def test_static_buffer_checks():
    loss, w, x = _linear()
    opts = knetc.optimizers(w, knetc.Adam)
    step = knetc.graph_step(loss, w, opts, x, backend=FakeBackend())
    with pytest.raises(errors.KnetcError, match=r"pad the batch to shape \(4, 3\)"):
        step(np.ones((5, 3), np.float32))
    with pytest.raises(errors.KnetcError, match="dtype float64"):
        step(np.ones((4, 3)))
    with pytest.raises(errors.ArgumentError, match="takes 1 argument"):
        step(x, x)
    assert [o.t for o in opts] == [0, 0]        # nothing counted by refused calls
    step(x)
    step(step.inputs[0])                        # the static buffer itself: nothing to copy
    # w[1] has no gradient: not updated, its optimizer does not count (as knetc.update)
    assert [o.t for o in opts] == [2, 0]
    np.testing.assert_array_equal(w[1], np.ones(2, np.float32))


def test_identity_checks():
    loss, w, x = _linear()
    opts = knetc.optimizers(w, knetc.Adam, gclip=1.0)
    step = knetc.graph_step(loss, w, opts, x, backend=FakeBackend())
    step(x)
    w[0][...] = 2.0                             # in place: fine
    step(x)
    old = w[0]
    w[0] = old.copy()
    with pytest.raises(errors.KnetcError, match="no longer holds the arrays"):
        step(x)
    w[0] = old
    opts[0].gclip = 0.0
    with pytest.raises(errors.KnetcError, match="other options"):
        step(x)
    opts[0].gclip = 1.0
    opts[0].lr = 0.5                            # values may change: read at every step
    step(x)
    opts[0].load_state({"t": 3, "fstm": np.zeros((3, 2), np.float32),
                        "scndm": np.zeros((3, 2), np.float32)})
    with pytest.raises(errors.KnetcError, match="state array"):
        step(x)


def test_numpy_parameters_are_refused():
    loss, w, x = _linear()
    with pytest.raises(errors.KnetcError, match="GPU-only"):
        knetc.graph_step(loss, w, knetc.optimizers(w, knetc.Adam), x)


def test_argument_validation():
    loss, w, x = _linear()
    opts = knetc.optimizers(w, knetc.Adam)
    fb = FakeBackend()
    for bad in (True, "0", 2, -3, 0.0, (0, 1)):
        with pytest.raises(errors.ArgumentError, match="argnums"):
            knetc.graph_step(loss, w, opts, x, argnums=bad, backend=fb)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(errors.ArgumentError, match="warmup"):
            knetc.graph_step(loss, w, opts, x, warmup=bad, backend=fb)
    with pytest.raises(errors.ArgumentError, match="must be a function"):
        knetc.graph_step(3, w, opts, x, backend=fb)
    with pytest.raises(errors.KnetcError, match="no optimizer"):
        knetc.graph_step(loss, w, [opts[0], None], x, backend=fb)
    with pytest.raises(errors.KnetcError, match="shared"):
        knetc.graph_step(loss, w, knetc.SGD(), x, backend=fb)
    with pytest.raises(errors.KnetcError, match="is a number"):
        w2 = [w[0], 0.5]
        knetc.graph_step(loss, w2, knetc.optimizers(w2, knetc.SGD), x, backend=fb)
    with pytest.raises(errors.KnetcError, match="no fused update"):
        w3 = [w[0].astype(np.float16)]
        knetc.graph_step(loss, w3, knetc.optimizers(w3, knetc.SGD), x.astype(np.float16),
                         backend=fb)
    with pytest.raises(errors.KnetcError, match="holds no parameter"):
        knetc.graph_step(loss, ["name"], [None], x, backend=fb)


def test_random_numbers_are_refused():
    def loss(w, x):
        return np.sum(knetc.dropout(x @ w[0], 0.5))

    w = [np.ones((3, 2), np.float32)]
    with pytest.raises(errors.KnetcError, match="random numbers"):
        knetc.graph_step(loss, w, knetc.optimizers(w, knetc.SGD), np.ones((4, 3), np.float32),
                         backend=FakeBackend())


def test_capture_errors_become_knetc_errors():
    loss, w, x = _linear()
    opts = knetc.optimizers(w, knetc.SGD)
    fail = FakeCaptureError("the current stream is capturing, so D2H transfers are disallowed")
    with pytest.raises(errors.KnetcError, match="synchronises with the host") as info:
        knetc.graph_step(loss, w, opts, x, backend=FakeBackend(fail_in_capture=fail))
    assert info.value.__cause__ is fail
    assert "float(x)" in str(info.value)          # the hint names the usual causes
    other = ValueError("a bug elsewhere")
    with pytest.raises(ValueError, match="a bug elsewhere"):
        knetc.graph_step(loss, w, opts, x, backend=FakeBackend(fail_in_capture=other))
    np.testing.assert_array_equal(w[0], np.ones((3, 2), np.float32))   # nothing updated


def test_check_capturable_reads_code_not_comments():
    graphs.check_capturable("def f(x):\n    # mnist.py:3  y = dropout(x)\n    return x\n")
    with pytest.raises(errors.KnetcError):
        graphs.check_capturable("def f(x):\n    y, m = dropout_with_mask(x, 0.5)\n")
    for code in ("r = np.random.rand(3)", "d = draw(generator, 'normal', size=(3,))",
                 "x = dropout(x, 0.5)"):
        with pytest.raises(errors.KnetcError, match="random numbers"):
            graphs.check_capturable(f"def f(x):\n    {code}\n")
    graphs.check_capturable("def f(r, w, x):\n    h = rnnforw(r, w, x, dropout=0.0)\n")


def test_value_branches_are_refused_at_capture_on_the_gpu_only():
    """On the CPU a branch on a value is a guard like any other; on the GPU reading the value
    needs a device-to-host copy, which CuPy refuses while capturing (tested on the GPU)."""
    def loss(w, x):
        s = np.sum(x @ w[0])
        if s > 0:
            return s
        return -s

    w = [np.ones((3, 2), np.float32)]
    step = knetc.graph_step(loss, w, knetc.optimizers(w, knetc.SGD, lr=0.01),
                            np.ones((4, 3), np.float32), backend=FakeBackend())
    assert "_GuardFailed" in step.source


def test_selftest_without_a_gpu():
    from knetc.runtime.backend import cupy_module
    if cupy_module() is not None:
        pytest.skip("a GPU is here: tests/gpu runs the selftest")
    assert "no CuPy" in graphs.selftest()


def test_repr():
    loss, w, x = _linear()
    step = knetc.graph_step(loss, w, knetc.optimizers(w, knetc.Adam), x, backend=FakeBackend())
    assert "1 parameter update(s), 0 replay(s)" in repr(step)


def test_the_step_is_compiled_and_captured_for_capture():
    """Warm-up and capture run with the ``capture`` switch on (products through knetc's cuBLAS
    on the GPU: a cache variant of its own); replays and later gradients have it off."""
    from knetc import settings
    seen = []

    class Recording(FakeBackend):
        def update(self, spec, w, g, states, row):
            seen.append((self.capturing, settings.enabled("capture")))
            super().update(spec, w, g, states, row)

    loss, w, x = _linear()
    step = knetc.graph_step(loss, w, knetc.optimizers(w, knetc.SGD), x, backend=Recording())
    assert (False, True) in seen and (True, True) in seen      # warm-up, capture
    seen.clear()
    step(x)
    assert seen == [(False, False)]                             # the replay
    assert not settings.enabled("capture")


def test_cupys_cublas_refusal_is_named():
    loss, w, x = _linear()
    fail = NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
    with pytest.raises(errors.KnetcError, match="uses cuBLAS") as info:
        knetc.graph_step(loss, w, knetc.optimizers(w, knetc.SGD), x,
                         backend=FakeBackend(fail_in_capture=fail))
    assert info.value.__cause__ is fail and "np.tensordot" in str(info.value)
