"""The function transforms a JAX or PyTorch user expects: several argnums, has_aux,
value_and_grad, and eval-mode gradients (training_mode(False) around grad), each checked against
central finite differences in float64 or PyTorch's eval mode."""
import numpy as np
import pytest

import knetc
from knetc import numeric_grad

RNG = np.random.default_rng(7)


def loss3(w, x, b):
    return np.sum(np.tanh(x @ w + b) ** 2)


def with_aux(w, x, b):
    r = np.tanh(x @ w + b)
    return np.sum(r ** 2), {"r": r, "count": x.shape[0], "tag": "ok"}


def data():
    return RNG.standard_normal((3, 2)), RNG.standard_normal((4, 3)), RNG.standard_normal(2)


@pytest.mark.parametrize("argnums", [(0, 1), (2, 0), (-1, -3), [1, 2]])
def test_a_tuple_of_argnums_gives_a_tuple_of_gradients(argnums):
    g = knetc.grad(loss3, argnums=argnums)
    for _ in range(3):          # the compiled path too (and tier 0 is not used for one key)
        args = data()
        out = g(*args)
        assert type(out) is tuple and len(out) == len(argnums)
        for i, gi in zip(argnums, out):
            np.testing.assert_allclose(gi, numeric_grad(loss3, *args, argnum=i % 3), rtol=1e-6,
                                       atol=1e-8)


def test_negative_argnum_counts_from_the_end_and_argnum_is_an_alias():
    args = data()
    np.testing.assert_allclose(knetc.grad(loss3, argnums=-1)(*args),
                               numeric_grad(loss3, *args, argnum=2), rtol=1e-6)
    np.testing.assert_allclose(knetc.grad(loss3, argnum=1)(*args),
                               numeric_grad(loss3, *args, argnum=1), rtol=1e-6)


@pytest.mark.parametrize("bad", [3, -4, (0, 3), (), (1, 1), 1.0, "w", True])
def test_bad_argnums_are_a_knetc_error_saying_what_is_allowed(bad):
    with pytest.raises(knetc.KnetcError) as info:
        knetc.grad(loss3, argnums=bad)
    assert isinstance(info.value, TypeError)
    assert "argnums" in str(info.value) and ("w, x, b" in str(info.value) or "twice" in str(info.value)
                                             or "no argument" in str(info.value))


def test_has_aux_returns_the_aux_values_of_each_call():
    g = knetc.grad(with_aux, has_aux=True)
    for _ in range(3):
        args = data()
        dw, aux = g(*args)
        np.testing.assert_allclose(dw, numeric_grad(lambda *a: with_aux(*a)[0], *args), rtol=1e-6)
        np.testing.assert_allclose(aux["r"], np.tanh(args[1] @ args[0] + args[2]))
        assert aux["count"] == 4 and aux["tag"] == "ok"


def test_gradloss_and_value_and_grad_orders_with_and_without_aux():
    args = data()
    want_g = numeric_grad(loss3, *args)
    want_l = loss3(*args)
    g, loss = knetc.gradloss(loss3)(*args)
    assert np.isclose(loss, want_l) and np.allclose(g, want_g, rtol=1e-6)
    loss, g = knetc.value_and_grad(loss3)(*args)
    assert np.isclose(loss, want_l) and np.allclose(g, want_g, rtol=1e-6)
    g, loss, aux = knetc.gradloss(with_aux, has_aux=True)(*args)
    assert np.isclose(loss, want_l) and aux["count"] == 4
    (loss, aux), (dw, db) = knetc.value_and_grad(with_aux, argnums=(0, 2), has_aux=True)(*args)
    assert np.isclose(loss, want_l) and aux["tag"] == "ok"
    assert np.allclose(db, numeric_grad(loss3, *args, argnum=2), rtol=1e-6)


def test_has_aux_needs_a_pair():
    def single(w):
        return np.sum(w)
    with pytest.raises(knetc.LossError) as info:
        knetc.grad(single, has_aux=True)(np.ones(3))
    assert "has_aux" in str(info.value) and info.value.lineno is not None


def test_has_aux_at_tier_0():
    """A new structure every call runs uncompiled first: aux comes back from there too."""
    def tree_loss(w, tree):
        if isinstance(tree, tuple):
            a, sa = tree_loss(w, tree[0])
            b, sb = tree_loss(w, tree[1])
            return np.tanh(a + b), sa + sb
        return w[tree], 1
    def loss(w, tree):
        h, size = tree_loss(w, tree)
        return np.sum(h * h), size
    g = knetc.grad(loss, has_aux=True)
    w = RNG.standard_normal((5, 3))
    trees = [((0, 1), 2), (0, (1, (2, 3))), ((4, 0), (1, 2)), (((1, 2), 3), 4), (0, (3, 4))]
    with knetc.settings.override(tier0=True):
        for t in trees:
            dw, size = g(w, t)
            assert size == len(str(t).replace("(", "").replace(")", "").split(","))
            np.testing.assert_allclose(dw, numeric_grad(lambda w: loss(w, t)[0], w), rtol=1e-6,
                                       atol=1e-8)


# ---- eval-mode gradients ----------------------------------------------------------------

def bn_net(w, x, moments):
    h = x @ w["W"]
    h = knetc.batchnorm(h, moments, w["bn"])
    h = knetc.dropout(np.tanh(h), 0.5)
    return np.sum(h * w["v"])


def bn_setup():
    w = {"W": RNG.standard_normal((5, 4)), "bn": np.concatenate([RNG.uniform(0.5, 1.5, 4),
                                                                 RNG.standard_normal(4)]),
         "v": RNG.standard_normal(4)}
    m = knetc.bnmoments()
    for _ in range(5):       # running statistics of training batches
        knetc.batchnorm(RNG.standard_normal((8, 5)) @ w["W"] * 2 + 1, m, w["bn"], training=True)
    return w, m


def test_eval_mode_gradients_use_and_keep_the_running_moments():
    w, m = bn_setup()
    x = RNG.standard_normal((6, 5))
    mean, var = m.mean.copy(), m.var.copy()
    with knetc.training_mode(False):
        dx = knetc.grad(bn_net, argnums=1)(w, x, m)
        dx2 = knetc.grad(bn_net, argnums=1)(w, x, m)      # cached: same
        want = numeric_grad(bn_net, w, x, m, argnum=1)    # the function in eval mode
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dx2, want, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(m.mean, mean)       # running moments left unchanged
    np.testing.assert_array_equal(m.var, var)


def test_the_default_still_trains_and_the_modes_are_cached_apart():
    w, m = bn_setup()
    x = RNG.standard_normal((6, 5))
    with knetc.training_mode(False):
        eval_dx = knetc.grad(bn_net, argnums=1)(w, x, m)
    np.random.seed(0)
    train_dx = knetc.grad(bn_net, argnums=1)(w, x, m)        # batch statistics, dropout on
    assert not np.allclose(train_dx, eval_dx)
    with knetc.training_mode(False):      # the training call moved the running moments
        want = numeric_grad(bn_net, w, x, m, argnum=1)
        np.testing.assert_allclose(knetc.grad(bn_net, argnums=1)(w, x, m), want, rtol=1e-6,
                                   atol=1e-8)


def test_eval_mode_matches_pytorch_eval():
    torch = pytest.importorskip("torch")
    w, m = bn_setup()
    x = RNG.standard_normal((6, 5))
    with knetc.training_mode(False):
        dx = knetc.grad(bn_net, argnums=1)(w, x, m)
    lin = torch.nn.Linear(5, 4, bias=False).double()
    bn = torch.nn.BatchNorm1d(4, eps=1e-5).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w["W"].T))
        bn.weight.copy_(torch.from_numpy(w["bn"][:4]))
        bn.bias.copy_(torch.from_numpy(w["bn"][4:]))
        bn.running_mean.copy_(torch.from_numpy(m.mean.reshape(-1)))
        bn.running_var.copy_(torch.from_numpy(m.var.reshape(-1)))
    net = torch.nn.Sequential(lin, bn, torch.nn.Tanh(), torch.nn.Dropout(0.5)).eval()
    xt = torch.from_numpy(x).requires_grad_(True)
    (net(xt) * torch.from_numpy(w["v"])).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
