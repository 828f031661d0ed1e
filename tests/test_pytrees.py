"""Parameters as pytrees: NamedTuples, dataclasses and registered classes hold parameters.

The gradient has the parameter's type (None where a field gets no gradient); leaves are read from
the object when the generated code runs; new instances of one structure share a compiled entry;
an object of an unregistered class that holds the parameters is an error saying how to register
it; optimizers/update walk these structures; knetc's own runtime objects stay opaque leaves.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pytest

import knetc
from knetc import tree

RNG = np.random.default_rng(7)


def randn(*shape):
    return RNG.standard_normal(shape)


def close(got, want, rtol=1e-6, atol=1e-8):
    """Same structure (types included) and close leaves; None (no gradient) matches None or
    zeros (finite differences of a leaf that does not reach the loss)."""
    lg, tg = tree.flatten(got)
    lw, tw = tree.flatten(want)
    assert len(lg) == len(lw) and repr(tg).replace("*", "") == repr(tw).replace("*", ""), (tg, tw)
    for a, b in zip(lg, lw):
        if b is None:
            assert a is None
        elif a is None:
            assert not np.any(b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# -- the classes ----------------------------------------------------------------------------------

class Layer(NamedTuple):
    w: np.ndarray
    b: np.ndarray


@dataclasses.dataclass(frozen=True)
class Frozen:
    layers: list          # Layer NamedTuples
    act: str = "tanh"     # a string field: part of the key, no gradient
    scale: float = 1.0    # a float field: a parameter


@dataclasses.dataclass
class Mutable:
    w: np.ndarray
    extra: dict           # a dict of arrays
    steps: int = 2        # an int field steering a loop: part of the key


def mlp(h, layers, act="tanh"):
    f = np.tanh if act == "tanh" else np.sin
    for layer in layers:
        h = f(h @ layer.w + layer.b)
    return h


def loss_frozen(m, x, y):
    return m.scale * np.sum((mlp(x, m.layers, m.act) - y) ** 2)


def loss_mutable(m, x):
    h = x
    for _ in range(m.steps):
        h = np.tanh(h @ m.w) * m.extra["g"]
    return np.sum(h ** 2) + np.sum(m.extra["u"])


def make_frozen(scale=0.5, act="tanh"):
    return Frozen([Layer(randn(3, 4), randn(4)), Layer(randn(4, 2), randn(2))], act, scale)


def make_mutable():
    return Mutable(randn(3, 3), {"g": randn(3), "u": randn(2)})


X, Y = randn(5, 3), randn(5, 2)


# -- gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["tanh", "sin"])
def test_frozen_dataclass_of_namedtuples(act):
    m = make_frozen(act=act)
    g = knetc.grad(loss_frozen)(m, X, Y)
    assert type(g) is Frozen and type(g.layers) is list and type(g.layers[0]) is Layer
    assert g.act is None and type(g.scale) is float           # a str field: no gradient
    close(g, knetc.numeric_grad(loss_frozen, m, X, Y))


def test_mutable_dataclass_with_dict_and_int_field():
    m = make_mutable()
    g = knetc.grad(loss_mutable)(m, X)
    assert type(g) is Mutable and type(g.extra) is dict and g.steps is None
    close(g, knetc.numeric_grad(loss_mutable, m, X))
    m3 = dataclasses.replace(m, steps=3)                       # another int: another specialization
    close(knetc.grad(loss_mutable)(m3, X), knetc.numeric_grad(loss_mutable, m3, X))


def test_nodes_nested_in_lists_and_dicts():
    def loss(p, x):
        h = np.tanh(x @ p["enc"][0].w + p["enc"][0].b)
        h = h @ p["enc"][1].w + p["enc"][1].b
        return np.sum(np.sin(h)) * p["m"].extra["u"][0] + p["bias"]

    p = {"enc": [Layer(randn(3, 4), randn(4)), Layer(randn(4, 2), randn(2))],
         "m": Mutable(randn(2, 2), {"g": randn(2), "u": randn(1)}), "bias": 0.3}
    g = knetc.grad(loss)(p, X)
    assert type(g["enc"][1]) is Layer and type(g["m"]) is Mutable
    assert g["m"].w is None and g["m"].extra["g"] is None         # fields that do not reach the loss
    close(g, knetc.numeric_grad(loss, p, X))


def test_namedtuple_argument_is_a_tuple_in_the_loss():
    def loss(layer, x):
        w, b = layer                          # unpacking and indexing a NamedTuple still work
        return np.sum(np.tanh(x @ w + layer[1])) + 0 * np.sum(b)

    p = Layer(randn(3, 2), randn(2))
    g = knetc.grad(loss)(p, X)
    assert type(g) is Layer
    close(g, knetc.numeric_grad(loss, p, X))


def test_methods_and_post_init_attributes():
    @dataclasses.dataclass
    class Affine:
        w: np.ndarray
        b: np.ndarray

        def __post_init__(self):
            self.fan_in = self.w.shape[0]      # not a field: read from the caller's object

        def __call__(self, x):
            return x @ self.w / self.fan_in + self.b

    def loss(f, x):
        return np.sum(f(x) ** 2)

    a = Affine(randn(3, 2), randn(2))
    g = knetc.grad(loss)(a, X)
    assert type(g) is Affine and g.fan_in == 3             # the gradient: made by its constructor
    close(g, knetc.numeric_grad(loss, a, X))
    assert knetc.grad(loss)(Affine(randn(4, 2), randn(2)), np.ones((2, 4))).w.shape == (4, 2)


def test_a_float_array_set_by_post_init_is_refused():
    @dataclasses.dataclass
    class Scaled:
        w: np.ndarray

        def __post_init__(self):
            self.w2 = self.w * 2.0             # derived from a field, outside the loss

    def loss(s, x):
        return np.sum(x @ s.w2)
    with pytest.raises(knetc.LossError, match=r"reads \.w2 .* not one of its fields") as e:
        knetc.grad(loss)(Scaled(randn(3, 2)), X)
    assert "make it a field" in str(e.value)


def test_properties_are_traced_and_class_constants_read_when_the_code_runs():
    @dataclasses.dataclass
    class Norm:
        w: np.ndarray
        SCALE = np.array([1.0, 2.0])            # a class constant (not a field)

        @property
        def w2(self):
            return self.w * 2.0                 # runs on the traced instance: differentiated

    def loss(n, x):
        return np.sum((x @ n.w2) * n.SCALE)

    n = Norm(randn(3, 2))
    close(knetc.grad(loss)(n, X), knetc.numeric_grad(loss, n, X))
    Norm.SCALE = np.array([-3.0, 0.5])          # never baked in: the next call sees it
    close(knetc.grad(loss)(n, X), knetc.numeric_grad(loss, n, X))
    assert knetc.cache_info(loss).entries == 1


@dataclasses.dataclass
class Checked:
    """A __post_init__ that refuses what is not an array: traced values, gradients of None."""
    w: np.ndarray
    unused: np.ndarray

    def __post_init__(self):
        if not all(isinstance(v, np.ndarray) for v in (self.w, self.unused)):
            raise TypeError("arrays only")
        self.n = len(self.w)
        self.w_sq = self.w ** 2


def test_a_refusing_post_init_is_bypassed():
    def loss(c, x):
        return np.sum(x[:, :c.n] @ c.w)        # c.n: set by __post_init__, read from the caller's
    c = Checked(randn(3, 2), randn(2))
    g = knetc.grad(loss)(c, X)
    assert type(g) is Checked and g.unused is None and not hasattr(g, "n")
    close(g, knetc.numeric_grad(loss, c, X))

    def loss_sq(c, x):
        return np.sum(x @ c.w_sq)
    with pytest.raises(knetc.LossError, match=r"reads \.w_sq .* not one of its fields"):
        knetc.grad(loss_sq)(c, X)


def test_float32_parameters_keep_their_dtype():
    p = Layer(randn(3, 2).astype(np.float32), randn(2).astype(np.float32))

    def loss(p, x):
        return np.sum(np.tanh(x @ p.w + p.b))
    g = knetc.grad(loss)(p, X.astype(np.float32))
    assert g.w.dtype == np.float32 and g.b.dtype == np.float32


# -- one compiled entry per structure, leaves read when the code runs -------------------------------

def test_new_instances_share_one_entry():
    def loss(m, x, y):                        # a function of its own: a cache that starts empty
        return loss_frozen(m, x, y)
    for _ in range(4):
        m = make_frozen()                     # new objects every call, same structure
        close(knetc.grad(loss)(m, X, Y), knetc.numeric_grad(loss, m, X, Y))
    info = knetc.cache_info(loss)
    assert info.entries == 1 and info.misses == 1 and info.hits == 3
    knetc.grad(loss)(make_frozen(act="sin"), X, Y)           # a str field is part of the key
    assert knetc.cache_info(loss).entries == 2


def test_flat_namedtuple_argument_takes_the_fast_key():
    def loss(p, x):
        return np.sum(np.tanh(x @ p.w + p.b))
    for _ in range(5):
        p = Layer(randn(3, 2), randn(2))
        close(knetc.grad(loss)(p, X), knetc.numeric_grad(loss, p, X))
    assert knetc.cache_info(loss).entries == 1
    knetc.grad(loss)(Layer(randn(3, 4), randn(4)), X)         # other shapes: another entry
    assert knetc.cache_info(loss).entries == 2


def test_a_plain_tuple_is_not_the_namedtuple():
    def loss(p, x):
        return np.sum(np.tanh(x @ p[0] + p[1]))
    w, b = randn(3, 2), randn(2)
    g1 = knetc.grad(loss)(Layer(w, b), X)
    g2 = knetc.grad(loss)((w, b), X)
    info = knetc.cache_info(loss)           # two specializations, not one shared key
    assert type(g1) is Layer and type(g2) is tuple and (info.misses, info.hits) == (2, 0)
    close(tuple(g1), g2)


def test_generated_code_reads_the_fields():
    src = knetc.show(loss_frozen, make_frozen(), X, Y)
    assert "m.layers[0].w" in src and "m.scale" in src
    assert "make_Frozen(" in src and "make_Layer(" in src


def test_non_differentiated_namedtuple_argument():
    class Batch(NamedTuple):
        x: np.ndarray
        y: np.ndarray

    def loss(w, batch):
        return np.sum((batch.x @ w - batch.y) ** 2)

    w = randn(3, 2)
    for _ in range(3):
        batch = Batch(randn(5, 3), randn(5, 2))
        close(knetc.grad(loss)(w, batch), knetc.numeric_grad(loss, w, batch))
    assert knetc.cache_info(loss).entries == 1


def test_tier0_runs_nodes():
    def loss(m, x, y):
        return loss_frozen(m, x, y)
    with knetc.settings.override(tier0=True):
        for n in (2, 3, 4, 5, 6):   # a new structure every call: tier 0 after the first ones
            m = Frozen([Layer(randn(3, n), randn(n)), Layer(randn(n, 2), randn(2))], "tanh", 0.5)
            close(knetc.grad(loss)(m, X, Y), knetc.numeric_grad(loss, m, X, Y))
    assert knetc.cache_info(loss).tier0 >= 1


# -- registered classes -----------------------------------------------------------------------------

class Box:
    """A class of the user's, registered with JAX's signature; ``tag`` is aux data."""

    def __init__(self, W, parts, tag):
        self.W, self.parts, self.tag = W, parts, tag


knetc.register_pytree(Box, lambda b: ((b.W, b.parts), b.tag), lambda tag, ch: Box(ch[0], ch[1], tag))


def loss_box(b, x):
    h = np.tanh(x @ b.W) @ b.parts[0]
    return np.sum(h * 2.0 if b.tag == "double" else h) + b.parts[1] ** 2


def make_box(tag="double"):
    return Box(randn(3, 4), [randn(4, 2), 0.7], tag)


def test_registered_class():
    b = make_box()
    g = knetc.grad(loss_box)(b, X)
    assert type(g) is Box and g.tag == "double" and type(g.parts) is list
    close(g, knetc.numeric_grad(loss_box, b, X))
    assert "_children(b)" in knetc.show(loss_box, b, X)        # read through its flatten


def test_registered_class_keys_by_aux_data():
    def loss(b, x):
        return loss_box(b, x)
    for _ in range(3):
        b = make_box()
        close(knetc.grad(loss)(b, X), knetc.numeric_grad(loss, b, X))
    assert knetc.cache_info(loss).entries == 1
    b = make_box("single")
    close(knetc.grad(loss)(b, X), knetc.numeric_grad(loss, b, X))
    assert knetc.cache_info(loss).entries == 2


def test_unhashable_aux_data_is_an_error():
    class Bad:
        def __init__(self, w, meta):
            self.w, self.meta = w, meta
    knetc.register_pytree(Bad, lambda b: ((b.w,), b.meta), lambda meta, ch: Bad(ch[0], meta))

    def loss(b):
        return np.sum(b.w)
    with pytest.raises(knetc.KnetcError, match="aux data of a .*Bad.* is not hashable"):
        knetc.grad(loss)(Bad(np.ones(2), ["a list"]))


def test_explicit_registration_replaces_the_automatic_one():
    @dataclasses.dataclass
    class D:
        w: np.ndarray
        name: str

    def loss(d):
        return np.sum(d.w ** 2) * (2.0 if d.name == "x" else 1.0)
    d = D(randn(3), "x")
    g = knetc.grad(loss)(d)                    # registered automatically: name is a child
    assert g.name is None
    tree.register_dataclass(D, meta_fields=["name"])     # now static: rebuilt with its value
    g = knetc.grad(loss)(d)
    info = knetc.cache_info(loss)           # a new key: specialized again, not a hit
    assert g.name == "x" and (info.misses, info.hits) == (2, 0)
    close(g, D(4.0 * d.w, "x"))


# -- objects of unregistered classes ----------------------------------------------------------------

class Plain:
    def __init__(self, W, b):
        self.W, self.b = W, b


def test_unregistered_object_as_the_parameter_is_an_error():
    def loss(p, x):
        return np.sum(np.tanh(x @ p.W + p.b))
    with pytest.raises(knetc.LossError, match="only inside an object of class Plain") as e:
        knetc.grad(loss)(Plain(randn(3, 2), randn(2)), X)
    assert "knetc.register_pytree(Plain" in str(e.value) and "dataclass or NamedTuple" in str(e.value)


def test_reading_float_arrays_of_an_unregistered_object_is_an_error():
    def loss(ps, x):
        return np.sum(np.tanh(x @ ps[1].W)) + np.sum(ps[0])
    with pytest.raises(knetc.LossError, match=r"reads \.W .* class Plain at ps\[1\]") as e:
        knetc.grad(loss)([randn(2), Plain(randn(3, 2), randn(2))], X)
    assert "knetc.register_pytree(Plain" in str(e.value)


def test_unregistered_object_without_float_arrays_stays_a_constant_leaf():
    class Config:
        def __init__(self):
            self.n, self.name = 2, "cfg"

    def loss(ps, x):
        h = x
        for _ in range(ps[1].n):
            h = np.tanh(h @ ps[0])
        return np.sum(h)
    ps = [randn(3, 3), Config()]
    g = knetc.grad(loss)(ps, X)
    assert g[1] is None
    close(g[0], knetc.numeric_grad(loss, ps, X)[0])


def test_unregistered_object_outside_the_differentiated_argument_is_fine():
    def loss(w, p, x):
        return np.sum(np.tanh(x @ p.W @ w))
    p = Plain(randn(3, 2), randn(2))
    w = randn(2, 2)
    close(knetc.grad(loss)(w, p, X), knetc.numeric_grad(loss, w, p, X))


# -- optimizers and update ----------------------------------------------------------------------

@dataclasses.dataclass
class Dense:
    w: np.ndarray
    b: np.ndarray


@dataclasses.dataclass
class MLP:
    layers: list
    scale: float = 1.0


def mlp_loss(m, x, y):
    h = x
    for layer in m.layers:
        h = np.tanh(h @ layer.w + layer.b)
    return np.mean((m.scale * h - y) ** 2)


def list_loss(m, x, y):
    h = x
    for w, b in m[0]:
        h = np.tanh(h @ w + b)
    return np.mean((m[1] * h - y) ** 2)


@pytest.mark.parametrize("opt", [knetc.Adam, knetc.SGD, knetc.Momentum])
def test_optimizers_and_update_train_a_dataclass_mlp_like_lists(opt):
    ws = [(randn(3, 8), randn(8)), (randn(8, 2), randn(2))]
    x, y = randn(32, 3), randn(32, 2)
    m = MLP([Dense(w.copy(), b.copy()) for w, b in ws], 1.0)
    ml = [[[w.copy(), b.copy()] for w, b in ws], 1.0]
    om = knetc.optimizers(m, opt, lr=0.05)
    ol = knetc.optimizers(ml, opt, lr=0.05)
    assert type(om) is MLP and type(om.layers[0]) is Dense and isinstance(om.layers[0].w, opt)
    arrays = [m.layers[0].w, m.layers[1].b]
    losses = []
    for _ in range(6):
        knetc.update(m, knetc.grad(mlp_loss)(m, x, y), om)
        knetc.update(ml, knetc.grad(list_loss)(ml, x, y), ol)
        losses.append(mlp_loss(m, x, y))
        assert losses[-1] == pytest.approx(list_loss(ml, x, y), rel=1e-12)
    assert losses[-1] < losses[0] < mlp_loss(MLP([Dense(*p) for p in ws]), x, y)
    assert m.layers[0].w is arrays[0] and m.layers[1].b is arrays[1]      # updated in place
    assert m.scale == pytest.approx(ml[1], rel=1e-12) and m.scale != 1.0  # a float field, replaced


def test_optimizers_and_update_on_namedtuples():
    p = [Layer(randn(3, 2), randn(2)), Layer(randn(2, 1), randn(1))]
    opts = knetc.optimizers(p, knetc.Adam, lr=0.1)
    assert type(opts[0]) is Layer and isinstance(opts[0].w, knetc.Adam)

    def loss(p, x):
        return np.sum(mlp(x, p) ** 2)
    before = loss(p, X)
    for _ in range(5):
        knetc.update(p, knetc.grad(loss)(p, X), opts)
    assert loss(p, X) < before


def test_update_refuses_a_float_in_a_frozen_dataclass_and_skips_none():
    m = make_frozen()
    opts = knetc.optimizers(m, knetc.SGD, lr=0.1)
    g = knetc.grad(loss_frozen)(m, X, Y)
    with pytest.raises(TypeError, match=r"cannot update the float w\.scale inside a Frozen"):
        knetc.update(m, g, opts)
    w0 = m.layers[0].w.copy()
    knetc.update(m, dataclasses.replace(g, scale=None), opts)    # None: skipped
    np.testing.assert_allclose(m.layers[0].w, w0 - 0.1 * g.layers[0].w)
    with pytest.raises(TypeError, match="gradient at w is a list, expected a Frozen"):
        knetc.update(m, [None], opts)


def test_update_with_one_sgd_over_a_dataclass():
    m = MLP([Dense(randn(3, 2), randn(2))], 2.0)
    g = knetc.grad(mlp_loss)(m, X, Y)
    w0, s0 = m.layers[0].w.copy(), m.scale
    knetc.update(m, g, lr=0.5)
    np.testing.assert_allclose(m.layers[0].w, w0 - 0.5 * g.layers[0].w)
    assert m.scale == pytest.approx(s0 - 0.5 * g.scale)


# -- knetc's own objects stay opaque -----------------------------------------------------------------

def test_knetc_runtime_objects_are_not_nodes():
    spec, _ = knetc.rnninit(3, 4, rnnType="tanh")
    assert dataclasses.is_dataclass(spec) and not tree.node_type(type(spec))
    moments = knetc.bnmoments()
    assert not tree.node_type(type(moments))
    assert tree.leaves(tree.auto_register([spec, moments])) == [spec, moments]
    assert knetc.optimizers([np.ones(2), spec, moments], knetc.SGD)[1:] == [None, None]


def test_bnmoments_in_the_parameters_keep_running_statistics():
    c = 3
    w = {"bn": knetc.bnparams(c, np.float64), "m": knetc.bnmoments(), "w": randn(4, c)}

    def loss(w, x):
        return np.sum(knetc.batchnorm(x @ w["w"], w["m"], w["bn"]) ** 2 * np.arange(1.0, c + 1))
    x = randn(8, 4)
    g = knetc.grad(loss)(w, x)
    assert g["m"] is None and g["bn"].shape == w["bn"].shape
    assert w["m"].mean is not None and np.any(w["m"].mean != 0)    # updated by the training call
