"""Tests for knetc.optim: Knet's optimizers on Rosenbrock, structures, gclip, defaults."""
import numpy as np
import pytest

from knetc import optim
from knetc.optim import (SGD, Adadelta, Adagrad, Adam, Momentum, Nesterov, Rmsprop, optimizers,
                         update)

START = (-1.2, 1.0)


def rosen(x, y):
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosen_grad(x, y):
    """Hand-written gradient of the 2-D Rosenbrock function (works on floats and arrays)."""
    return -2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)


# per-optimizer settings that reach the minimum (1, 1) from (-1.2, 1)
SETTINGS = {
    SGD: (dict(lr=2e-3), 5000),
    Momentum: (dict(lr=5e-4), 3000),
    Nesterov: (dict(lr=5e-4), 3000),
    Adagrad: (dict(lr=1.0), 5000),
    Adadelta: (dict(lr=0.03, rho=0.5), 5000),
    Rmsprop: (dict(lr=1e-3), 5000),
    Adam: (dict(lr=0.05), 3000),
}


# Each layout: make parameters, read (x, y) from them, build the gradient structure.
def _array():
    return np.array(START)


def _array_xy(w):
    return w[0], w[1]


def _array_grad(w):
    return np.array(rosen_grad(*w))


def _tuple():
    return (np.array([START[0]]), np.array([START[1]]))


def _tuple_xy(w):
    return w[0][0], w[1][0]


def _tuple_grad(w):
    gx, gy = rosen_grad(w[0], w[1])
    return (gx, gy)


def _dict():
    return {"x": np.array(START[0]), "y": np.array(START[1])}  # 0-d arrays


def _dict_xy(w):
    return float(w["x"]), float(w["y"])


def _dict_grad(w):
    gx, gy = rosen_grad(w["x"], w["y"])
    return {"x": gx, "y": gy}


def _list():
    return [np.array([START[0]]), START[1]]  # y is a Python float leaf


def _list_xy(w):
    return w[0][0], w[1]


def _list_grad(w):
    gx, gy = rosen_grad(w[0], w[1])
    return [gx, float(gy[0])]


LAYOUTS = {
    "array": (_array, _array_xy, _array_grad),
    "tuple": (_tuple, _tuple_xy, _tuple_grad),
    "dict": (_dict, _dict_xy, _dict_grad),
    "list+float": (_list, _list_xy, _list_grad),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("cls", list(SETTINGS), ids=lambda c: c.__name__)
def test_rosenbrock(cls, layout):
    kw, steps = SETTINGS[cls]
    make, xy, grad = LAYOUTS[layout]
    w = make()
    opts = optimizers(w, cls, **kw)
    start = rosen(*xy(w))
    for _ in range(steps):
        w = update(w, grad(w), opts)
    x, y = xy(w)
    loss = rosen(x, y)
    assert np.isfinite(loss)
    assert loss < 1e-3 and loss < start * 1e-4, (cls.__name__, layout, loss, x, y)
    assert abs(x - 1) < 0.05 and abs(y - 1) < 0.1
    if layout == "list+float":
        assert type(w[1]) is float


def test_structures_agree():
    """Per-array optimizers on split parameters follow the same path as one joint array."""
    for cls, (kw, _) in SETTINGS.items():
        a, t = _array(), _tuple()
        oa, ot = optimizers(a, cls, **kw), optimizers(t, cls, **kw)
        for _ in range(50):
            update(a, _array_grad(a), oa)
            update(t, _tuple_grad(t), ot)
        np.testing.assert_allclose(a, [t[0][0], t[1][0]], rtol=1e-12, err_msg=cls.__name__)


def _naive(cls, w, gs, **kw):
    """Knet's update formulas (update.jl docstrings), written plainly, for comparison."""
    o = cls(**kw)
    w = w.copy()
    v = G = d = m = np.zeros_like(w)
    for t, g in enumerate(gs, 1):
        if cls is SGD:
            w = w - o.lr * g
        elif cls is Momentum:
            v = o.gamma * v - o.lr * g
            w = w + v
        elif cls is Nesterov:
            vold = v
            v = o.gamma * v - o.lr * g
            w = w - o.gamma * vold + (1 + o.gamma) * v
        elif cls is Adagrad:
            G = G + g * g
            w = w - o.lr * g / np.sqrt(G + o.eps)
        elif cls is Rmsprop:
            G = o.rho * G + (1 - o.rho) * g * g
            w = w - o.lr * g / np.sqrt(G + o.eps)
        elif cls is Adadelta:
            G = o.rho * G + (1 - o.rho) * g * g
            up = g * np.sqrt(d + o.eps) / np.sqrt(G + o.eps)
            w = w - o.lr * up
            d = o.rho * d + (1 - o.rho) * up * up
        elif cls is Adam:
            m = o.beta1 * m + (1 - o.beta1) * g
            G = o.beta2 * G + (1 - o.beta2) * g * g
            w = w - o.lr * (m / (1 - o.beta1 ** t)) / (np.sqrt(G / (1 - o.beta2 ** t)) + o.eps)
    return w


@pytest.mark.parametrize("cls", list(SETTINGS), ids=lambda c: c.__name__)
def test_matches_knet_formulas(cls):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    gs = [rng.standard_normal((3, 4)) for _ in range(6)]
    w = w0.copy()
    o = cls()
    for g in gs:
        o.update(w, g)
    np.testing.assert_allclose(w, _naive(cls, w0, gs), rtol=1e-10, atol=1e-12)


def test_knet_defaults():
    # Knet.jl src/train20/update.jl (Knet 1.4)
    assert SGD().hyperparams() == dict(lr=0.1, gclip=0)
    assert Momentum().hyperparams() == dict(lr=0.05, gamma=0.95, gclip=0)
    assert Nesterov().hyperparams() == dict(lr=0.05, gamma=0.95, gclip=0)
    assert Adagrad().hyperparams() == dict(lr=0.05, eps=1e-6, gclip=0)
    assert Rmsprop().hyperparams() == dict(lr=0.01, rho=0.9, eps=1e-6, gclip=0)
    assert Adadelta().hyperparams() == dict(lr=1.0, rho=0.9, eps=1e-6, gclip=0)
    assert Adam().hyperparams() == dict(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, gclip=0)
    assert set(optim.OPTIMIZERS) == {"SGD", "Momentum", "Nesterov", "Adagrad", "Adadelta",
                                     "Rmsprop", "Adam", "AdamW"}


def test_gclip():
    g = np.array([3.0, 4.0])  # norm 5
    w = np.zeros(2)
    SGD(lr=1.0, gclip=1.0).update(w, g)
    np.testing.assert_allclose(w, [-0.6, -0.8])
    np.testing.assert_array_equal(g, [3.0, 4.0])  # the caller's gradient is not modified
    w = np.zeros(2)
    SGD(lr=1.0, gclip=10.0).update(w, g)  # norm below gclip: no scaling
    np.testing.assert_allclose(w, [-3.0, -4.0])
    w = np.zeros(2)
    SGD(lr=1.0).update(w, g)  # gclip=0: no clipping
    np.testing.assert_allclose(w, [-3.0, -4.0])
    o = Momentum(lr=1.0, gclip=2.0)
    w = np.zeros(2)
    o.update(w, g)
    np.testing.assert_allclose(o.velocity, [-1.2, -1.6])
    np.testing.assert_allclose(w, [-1.2, -1.6])
    # clipping is per array: each leaf is clipped by its own norm
    ws = [np.zeros(2), np.zeros(1)]
    update(ws, [g, np.array([0.5])], optimizers(ws, SGD, lr=1.0, gclip=1.0))
    np.testing.assert_allclose(ws[0], [-0.6, -0.8])
    np.testing.assert_allclose(ws[1], [-0.5])


@pytest.mark.parametrize("cls", list(SETTINGS), ids=lambda c: c.__name__)
def test_in_place_identity_and_dtype(cls):
    w = np.ones((5, 3), dtype=np.float32)
    ident, o = id(w), cls()
    states = None
    for i in range(3):
        out = o.update(w, np.full((5, 3), 0.5, dtype=np.float32))
        assert out is w and id(w) == ident
        assert w.dtype == np.float32
        st = {k: v for k, v in o.state().items() if isinstance(v, np.ndarray)}
        assert all(v.dtype == np.float32 for v in st.values())
        if states is not None:  # the state arrays are updated in place too
            assert all(st[k] is states[k] for k in st)
        states = st
    assert not np.all(w == 1)
    model = {"a": [w, np.zeros(2, np.float32)], "b": (np.ones(3, np.float32),)}
    leaves = [model["a"][0], model["a"][1], model["b"][0]]
    opts = optimizers(model, cls)
    g = {"a": [np.ones((5, 3), np.float32), np.ones(2, np.float32)], "b": (np.ones(3, np.float32),)}
    assert update(model, g, opts) is model
    assert all(x is y for x, y in zip([model["a"][0], model["a"][1], model["b"][0]], leaves))


def test_optimizers_structure():
    w = {"layers": [np.zeros(3), (np.zeros(2), 0.5)], "name": "mlp", "n": 3, "none": None}
    o = optimizers(w, Adam, lr=0.01)
    assert isinstance(o["layers"], list) and isinstance(o["layers"][1], tuple)
    assert isinstance(o["layers"][0], Adam) and o["layers"][0].lr == 0.01
    assert isinstance(o["layers"][1][1], Adam)  # float leaf gets an optimizer
    assert o["name"] is None and o["n"] is None and o["none"] is None
    assert o["layers"][0] is not o["layers"][1][0]  # one per leaf
    tmpl = Rmsprop(lr=0.5)
    o2 = optimizers([np.zeros(2), np.zeros(2)], tmpl)
    assert all(isinstance(x, Rmsprop) and x.lr == 0.5 and x is not tmpl for x in o2)


def test_update_forms():
    w = np.ones(3)
    update(w, np.ones(3))  # 2-arg form: SGD(lr=0.1)
    np.testing.assert_allclose(w, 0.9)
    update(w, np.ones(3), lr=0.5)
    np.testing.assert_allclose(w, 0.4)
    update(w, np.ones(3), SGD(lr=0.1))
    np.testing.assert_allclose(w, 0.3)
    ws = [np.ones(2), np.ones(2)]
    update(ws, [np.ones(2), None], SGD, lr=1.0)  # stateless SGD can be shared; None is skipped
    np.testing.assert_allclose(ws[0], 0.0)
    np.testing.assert_allclose(ws[1], 1.0)
    d = {"a": np.ones(2), "b": np.ones(2)}
    update(d, {"a": np.ones(2)}, optimizers(d, SGD, lr=1.0))  # dict gradient with fewer keys
    np.testing.assert_allclose(d["a"], 0.0)
    np.testing.assert_allclose(d["b"], 1.0)
    assert update(2.0, 1.0, SGD(lr=0.5)) == 1.5  # bare float: new value returned


def test_update_errors():
    with pytest.raises(TypeError, match="optimizers"):
        update(np.ones(2), np.ones(2), Adam)  # state would be thrown away each call
    with pytest.raises(TypeError, match="optimizers"):
        update([np.ones(2), np.ones(2)], [np.ones(2), np.ones(2)], Adam())
    w = (np.ones(2), 0.5)
    with pytest.raises(TypeError, match="tuple"):
        update(w, (np.ones(2), 1.0), optimizers(w, SGD))
    update(w, (np.ones(2), None), optimizers(w, SGD))  # float in tuple without gradient: fine
    with pytest.raises(ValueError, match="shape"):
        SGD().update(np.ones(2), np.ones(3))
    with pytest.raises(ValueError):
        update([np.ones(2)], [np.ones(2), np.ones(2)], [SGD()])


def test_state_inspectable():
    o = Adam()
    w = np.zeros(4)
    assert o.state() == {"t": 0, "fstm": None, "scndm": None}
    o.update(w, np.ones(4))
    st = o.state()
    assert st["t"] == 1 and st["fstm"].shape == (4,) and st["scndm"].shape == (4,)
    c = o.clone()
    assert c.hyperparams() == o.hyperparams() and c.t == 0 and c.fstm is None
    assert repr(o).startswith("Adam(lr=0.001")


# ---- the same minimization with gradients from the compiler ------------------------------
import knetc  # noqa: E402


def rosen_array(w):
    return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2


def rosen_tuple(w):
    x, y = w
    return np.sum((1 - x) ** 2 + 100 * (y - x ** 2) ** 2)


def rosen_dict(w):
    return np.sum((1 - w["x"]) ** 2 + 100 * (w["y"] - w["x"] ** 2) ** 2)


@pytest.mark.parametrize("f,w", [
    (rosen_array, lambda: np.array([-1.2, 1.0])),
    (rosen_tuple, lambda: (np.array([-1.2]), np.array([1.0]))),
    (rosen_dict, lambda: {"x": np.array(-1.2), "y": np.array(1.0)}),
], ids=["array", "tuple", "dict"])
def test_rosenbrock_with_knetc_grad(f, w):
    w = w()
    start = f(w)
    opt = optimizers(w, Adam, lr=0.02)
    g = knetc.grad(f)
    for _ in range(4000):
        update(w, g(w), opt)
    assert f(w) < 1e-4 < start
