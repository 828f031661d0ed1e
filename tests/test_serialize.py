"""Tests for knetc.serialize (safe .npz save/load)."""
import json

import numpy as np
import pytest

from knetc import optim, serialize


def _same(a, b):
    """Exact structural equality: types, dtypes, shapes and values."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and (a == b or (np.isnan(a) and np.isnan(b)))
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def test_round_trip_nested(tmp_path):
    obj = {
        "layers": [(np.ones((3, 2), np.float32), np.zeros(2, np.float64)),
                   (np.arange(6, dtype=np.int16).reshape(2, 3), np.array(True))],
        "meta": {"name": "mlp", "lr": 0.1, "epochs": 10, "big": 2 ** 70, "flag": False,
                 "none": None, "nan": float("nan"), "inf": -float("inf"), "third": 1 / 3},
        "scalars": [np.float32(1.5), np.int64(7), np.bool_(True)],
        "empty": [[], (), {}],
        "strs": np.array(["a", "bc"]),
        "0d": np.array(2.5, dtype=np.float16),
        "order": {"z": 1, "a": 2},
    }
    p = tmp_path / "model.npz"
    serialize.save(p, obj)
    back = serialize.load(p)
    _same(obj, back)
    with np.load(p, allow_pickle=False) as z:  # a plain, pickle-free npz
        doc = json.loads(str(z["__knetc__"]))
        assert doc["version"] == 1
    serialize.save(str(tmp_path / "noext"), [1.0])  # no suffix is added
    assert serialize.load(str(tmp_path / "noext")) == [1.0]


def test_refuses_unknown(tmp_path):
    class Thing:
        pass

    for bad in ([Thing()], {"a": {1.5: 2}}, np.array([object()], dtype=object), {1.5}, 1j):
        with pytest.raises(TypeError):
            serialize.save(tmp_path / "x.npz", bad)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_load_rejects_non_knetc(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, a=np.ones(2))
    with pytest.raises(ValueError, match="not a knetc file"):
        serialize.load(p)


def _train(w, opts, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        g = [rng.standard_normal(a.shape).astype(a.dtype) for a in w]
        optim.update(w, g, opts)


@pytest.mark.parametrize("cls", list(optim.OPTIMIZERS.values()), ids=lambda c: c.__name__)
def test_optimizer_state_round_trip(tmp_path, cls):
    w = [np.ones((4, 3), np.float32), np.zeros(3, np.float32)]
    opts = optim.optimizers(w, cls, lr=0.01, gclip=5.0)
    _train(w, opts, 5, seed=0)
    p = tmp_path / "ckpt.npz"
    serialize.save(p, {"w": w, "opt": opts})
    ck = serialize.load(p)
    w2, opts2 = ck["w"], ck["opt"]
    assert type(opts2[0]) is cls and opts2[0].hyperparams() == opts[0].hyperparams()
    _same(opts[0].state(), opts2[0].state())
    _train(w, opts, 7, seed=1)       # continue the original ...
    _train(w2, opts2, 7, seed=1)     # ... and the reloaded copy identically
    for a, b in zip(w, w2):
        np.testing.assert_array_equal(a, b)


def test_adam_continues_identically(tmp_path):
    w = np.linspace(-1, 1, 10)
    o = optim.Adam(lr=0.1)
    for _ in range(3):
        o.update(w, 2 * w)
    serialize.save(tmp_path / "a.npz", (w, o))
    w2, o2 = serialize.load(tmp_path / "a.npz")
    assert o2.t == 3 and isinstance(w2, np.ndarray)
    for _ in range(5):
        o.update(w, 2 * w)
        o2.update(w2, 2 * w2)
    np.testing.assert_array_equal(w, w2)
