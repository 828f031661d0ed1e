"""What a PyTorch user expects of knetc.optim beside Knet's optimizers: weight decay and AdamW
(against NumPy transcriptions of torch's documented update equations, and torch itself when
installed), learning-rate schedules, clip_grad_norm, and the cached update plans (never stale,
same results as the general walk, no temporaries)."""
import doctest
import pickle
import tracemalloc

import numpy as np
import pytest

import knetc
from knetc import optim, schedules, tree
from knetc.optim import (SGD, Adadelta, Adagrad, Adam, AdamW, Momentum, Nesterov, Rmsprop,
                         clip_grad_norm, optimizers, update)

ALL = (SGD, Momentum, Nesterov, Adagrad, Adadelta, Rmsprop, Adam, AdamW)
STEPS = 20


def _problem(seed=0, shape=(4, 3), steps=STEPS):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(shape)
    gs = [rng.standard_normal(shape) for _ in range(steps)]
    return w0, gs


# ---- torch's documented update equations, transcribed literally (float64) -------------------
# https://pytorch.org/docs/stable/generated/torch.optim.SGD.html, .Adam.html, .AdamW.html

def torch_sgd(w0, gs, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    theta, b = w0.copy(), None
    for t, g in enumerate(gs, 1):
        g = g.copy()
        lr_t = lr(t) if callable(lr) else lr
        if weight_decay != 0:
            g = g + weight_decay * theta
        if momentum != 0:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        theta = theta - lr_t * g
    return theta


def torch_adam(w0, gs, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    theta = w0.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(gs, 1):
        lr_t = lr(t) if callable(lr) else lr
        if decoupled:
            theta = theta - lr_t * weight_decay * theta            # AdamW
        elif weight_decay != 0:
            g = g + weight_decay * theta                           # Adam's L2
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        mhat = m / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        theta = theta - lr_t * mhat / (np.sqrt(vhat) + eps)
    return theta


def run_knetc(opt, w0, gs, dtype=np.float64):
    w = w0.astype(dtype)
    for g in gs:
        opt.update(w, g.astype(dtype))
    return w


TORCH_CASES = {
    "sgd": (lambda: SGD(lr=0.05), dict(lr=0.05)),
    "sgd-wd": (lambda: SGD(lr=0.05, weight_decay=0.1), dict(lr=0.05, weight_decay=0.1)),
    "momentum-wd": (lambda: Momentum(lr=0.02, gamma=0.9, weight_decay=0.05),
                    dict(lr=0.02, momentum=0.9, weight_decay=0.05)),
    "nesterov-wd": (lambda: Nesterov(lr=0.02, gamma=0.9, weight_decay=0.05),
                    dict(lr=0.02, momentum=0.9, weight_decay=0.05, nesterov=True)),
    "adam": (lambda: Adam(lr=0.01), dict(lr=0.01)),
    "adam-wd": (lambda: Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
                dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": (lambda: AdamW(lr=0.01), dict(lr=0.01, weight_decay=0.01, decoupled=True)),
    "adamw-wd": (lambda: AdamW(lr=0.03, beta1=0.85, weight_decay=0.3),
                 dict(lr=0.03, betas=(0.85, 0.999), weight_decay=0.3, decoupled=True)),
}


def _reference(name, w0, gs, **over):
    _, kw = TORCH_CASES[name]
    kw = {**kw, **over}
    return (torch_sgd if name.startswith(("sgd", "momentum", "nesterov")) else torch_adam)(w0, gs, **kw)


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_matches_torch_equations(name):
    w0, gs = _problem()
    make, _ = TORCH_CASES[name]
    ref = _reference(name, w0, gs)
    np.testing.assert_allclose(run_knetc(make(), w0, gs), ref, rtol=1e-10, atol=1e-12)
    # float32 parameters and gradients follow within float32 rounding
    np.testing.assert_allclose(run_knetc(make(), w0, gs, np.float32), ref, rtol=2e-5, atol=2e-6)
    assert not np.allclose(ref, w0)


def test_weight_decay_defaults_and_hyperparams():
    for cls in (SGD, Momentum, Nesterov, Adagrad, Adadelta, Rmsprop, Adam):
        o = cls()
        assert o.weight_decay == 0 and "weight_decay" not in o.hyperparams()
        o2 = cls(weight_decay=0.01)
        assert o2.hyperparams()["weight_decay"] == 0.01
        assert "weight_decay=0.01" in repr(o2)
        assert o2.clone().weight_decay == 0.01
    assert AdamW().hyperparams() == dict(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8,
                                         weight_decay=0.01, gclip=0)
    assert AdamW(weight_decay=0).hyperparams()["weight_decay"] == 0   # always listed for AdamW
    assert isinstance(AdamW(), Adam) and knetc.AdamW is AdamW
    assert "AdamW" in optim.OPTIMIZERS          # saved and loaded like Knet's own


def test_weight_decay_is_l2_on_the_other_optimizers():
    """weight_decay=wd behaves as the gradient g + wd*w for every optimizer."""
    w0, gs = _problem(1)
    wd = 0.2
    for cls in (Adagrad, Adadelta, Rmsprop, Momentum):
        got = run_knetc(cls(weight_decay=wd), w0, gs)
        w = w0.copy()
        o = cls()
        for g in gs:
            o.update(w, g + wd * w)
        np.testing.assert_allclose(got, w, rtol=1e-12, err_msg=cls.__name__)


def test_gclip_then_weight_decay():
    """Clip the gradient (per array), then add the decay: torch's clip_grad_norm_ + optimizer."""
    w0, gs = _problem(2)
    gs = [10 * g for g in gs]
    got = run_knetc(Adam(lr=0.01, gclip=1.0, weight_decay=0.1), w0, gs)
    clipped = [g * min(1.0, 1.0 / np.linalg.norm(g)) for g in gs]
    np.testing.assert_allclose(got, torch_adam(w0, clipped, lr=0.01, weight_decay=0.1), rtol=1e-10)
    got = run_knetc(AdamW(lr=0.01, gclip=1.0, weight_decay=0.1), w0, gs)
    np.testing.assert_allclose(got, torch_adam(w0, clipped, lr=0.01, weight_decay=0.1,
                                               decoupled=True), rtol=1e-10)


# ---- against torch itself -----------------------------------------------------------------

def _torch_run(torch, make_opt, w0, gs, sched=None):
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = make_opt([p])
    s = sched(opt) if sched is not None else None
    for g in gs:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        if s is not None:
            s.step()
    return p.detach().numpy()


def test_matches_torch():
    torch = pytest.importorskip("torch")
    w0, gs = _problem(3)
    TO = torch.optim
    cases = [
        (SGD(lr=0.05, weight_decay=0.1), lambda ps: TO.SGD(ps, lr=0.05, weight_decay=0.1)),
        (Momentum(lr=0.02, gamma=0.9, weight_decay=0.05),
         lambda ps: TO.SGD(ps, lr=0.02, momentum=0.9, weight_decay=0.05)),
        (Nesterov(lr=0.02, gamma=0.9, weight_decay=0.05),
         lambda ps: TO.SGD(ps, lr=0.02, momentum=0.9, weight_decay=0.05, nesterov=True)),
        (Adam(lr=0.01, weight_decay=0.1), lambda ps: TO.Adam(ps, lr=0.01, weight_decay=0.1)),
        (Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6),
         lambda ps: TO.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
        (AdamW(), lambda ps: TO.AdamW(ps, lr=0.001)),            # the defaults agree
        (AdamW(lr=0.03, weight_decay=0.3), lambda ps: TO.AdamW(ps, lr=0.03, weight_decay=0.3)),
    ]
    for ours, theirs in cases:
        got = run_knetc(ours, w0, gs)
        np.testing.assert_allclose(got, _torch_run(torch, theirs, w0, gs), rtol=1e-9, atol=1e-12,
                                   err_msg=repr(ours))


def test_schedules_match_torch_schedulers():
    torch = pytest.importorskip("torch")
    w0, gs = _problem(4, steps=30)
    TO, LS = torch.optim, torch.optim.lr_scheduler
    cases = [
        (SGD(lr=schedules.step(0.1, every=7, gamma=0.5)),
         lambda ps: TO.SGD(ps, lr=0.1), lambda o: LS.StepLR(o, step_size=7, gamma=0.5)),
        (Adam(lr=schedules.cosine(0.05, total=29, min_lr=0.001)),
         lambda ps: TO.Adam(ps, lr=0.05), lambda o: LS.CosineAnnealingLR(o, T_max=29, eta_min=0.001)),
        (AdamW(lr=schedules.cosine(0.05, total=29), weight_decay=0.2),
         lambda ps: TO.AdamW(ps, lr=0.05, weight_decay=0.2),
         lambda o: LS.CosineAnnealingLR(o, T_max=29)),
        (SGD(lr=schedules.linear_warmup(0.1, warmup=10)),
         lambda ps: TO.SGD(ps, lr=0.1),
         lambda o: LS.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=9)),
    ]
    for ours, opt, sched in cases:
        got = run_knetc(ours, w0, gs)
        np.testing.assert_allclose(got, _torch_run(torch, opt, w0, gs, sched), rtol=1e-9,
                                   atol=1e-12, err_msg=repr(ours))


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    gs = [rng.standard_normal(s) for s in [(3, 4), (4,), (2, 2, 2)]]
    for max_norm in (0.5, 100.0):
        ps = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in gs]
        for p, g in zip(ps, gs):
            p.grad = torch.tensor(g)
        tn = float(torch.nn.utils.clip_grad_norm_(ps, max_norm))
        ours = [g.copy() for g in gs]
        n = clip_grad_norm(ours, max_norm)
        assert n == pytest.approx(tn, rel=1e-12)
        for a, p in zip(ours, ps):
            np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-12)


# ---- schedules ------------------------------------------------------------------------------

def test_schedule_values():
    s = schedules.step(0.1, every=3, gamma=0.5)
    assert [s(t) for t in (1, 3, 4, 6, 7, 10)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125]
    assert schedules.step(1.0, every=10)(11) == pytest.approx(0.1)      # torch's gamma default

    c = schedules.cosine(0.1, total=10, min_lr=0.01)
    assert c(1) == 0.1
    assert c(6) == pytest.approx(0.055)                                 # half-way
    assert c(11) == pytest.approx(0.01) and c(1000) == pytest.approx(0.01)
    vals = [c(t) for t in range(1, 12)]
    assert all(a > b for a, b in zip(vals, vals[1:]))                   # decreasing
    assert schedules.cosine(2.0, total=4)(3) == pytest.approx(1.0)      # min_lr=0 default

    lw = schedules.linear_warmup(0.2, warmup=4)
    assert [lw(t) for t in (1, 2, 3, 4, 5, 100)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    lc = schedules.linear_warmup(0.2, warmup=4, then=schedules.cosine(0.2, total=10))
    assert lc(4) == pytest.approx(0.2) and lc(5) == pytest.approx(0.2)   # then's step 1
    assert lc(10) == pytest.approx(schedules.cosine(0.2, total=10)(6))
    assert lc(14) == pytest.approx(0.2 * (1 + np.cos(np.pi * 9 / 10)) / 2)
    assert schedules.linear_warmup(0.2, 2, then=0.01)(3) == 0.01        # then as a number
    assert schedules.linear_warmup(0.2, 0)(1) == 0.2                    # no warm-up


def test_schedule_objects():
    s = schedules.linear_warmup(1e-3, 500, then=schedules.cosine(1e-3, 9500, min_lr=1e-5))
    assert repr(s) == ("linear_warmup(0.001, warmup=500, then=cosine(0.001, total=9500, "
                       "min_lr=1e-05))")
    assert eval(repr(s), vars(schedules)) == s                         # repr round-trips
    assert s == schedules.linear_warmup(0.001, 500, schedules.cosine(0.001, 9500, 1e-5))
    assert s != schedules.linear_warmup(0.001, 500) and hash(s) == hash(eval(repr(s), vars(schedules)))
    assert pickle.loads(pickle.dumps(s)) == s
    assert isinstance(s, schedules.Schedule)
    with pytest.raises(AttributeError):
        s.lr = 1.0
    with pytest.raises(ValueError, match="from 1"):
        s(0)
    with pytest.raises(ValueError, match="every"):
        schedules.step(0.1, every=0)
    with pytest.raises(ValueError, match="total"):
        schedules.cosine(0.1, total=2.5)
    with pytest.raises(TypeError, match="lr"):
        schedules.step("0.1", every=2)
    assert schedules.step(np.float32(0.5), 2).lr == 0.5


def test_optimizers_use_schedules():
    # SGD with a step schedule: the step taken is lr(t) * g, t counted from 1
    s = schedules.step(1.0, every=2, gamma=0.5)
    w = np.zeros(1)
    o = SGD(lr=s)
    deltas = []
    for _ in range(5):
        before = w.copy()
        o.update(w, np.ones(1))
        deltas.append(float(before[0] - w[0]))
    assert deltas == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert o.t == 5 and o.state() == {"t": 5} and o.current_lr() == 0.25
    assert SGD(lr=s).current_lr() == 1.0                 # before any update: step 1's
    o.update(w, None)                                    # no gradient: not a step
    assert o.t == 5
    # any callable works (a lambda, a function of t); it is called with the optimizer's count
    seen = []
    o = Momentum(lr=lambda t: seen.append(t) or 0.01)
    for _ in range(3):
        o.update(np.zeros(2), np.ones(2))
    assert seen == [1, 2, 3]
    # optimizers(w, cls, lr=schedule): each parameter's optimizer counts its own updates
    w = [np.zeros(2), np.zeros(3)]
    opts = optimizers(w, Adam, lr=schedules.cosine(0.1, total=10))
    for i in range(4):
        update(w, [np.ones(2), np.ones(3) if i % 2 else None], opts)
    assert [o.t for o in opts] == [4, 2]
    # a shared SGD counts one step per update call, not one per array
    sgd = SGD(lr=schedules.step(1.0, every=1, gamma=0.5))
    w = [np.zeros(2), np.zeros(2), np.zeros(2)]
    update(w, [np.ones(2)] * 3, sgd)
    update(w, [np.ones(2)] * 3, sgd)
    assert sgd.t == 2 and all(np.allclose(a, -1.5) for a in w)


def test_schedule_state_survives_save_and_load(tmp_path):
    """The step count is state: a reloaded optimizer continues its schedule where it was."""
    w = np.zeros(3)
    o = SGD(lr=0.1, weight_decay=0.01)
    for _ in range(3):
        o.update(w, np.ones(3))
    knetc.save(tmp_path / "c.npz", (w, o))
    w2, o2 = knetc.load(tmp_path / "c.npz")
    assert o2.t == 3 and o2.weight_decay == 0.01 and o2.hyperparams() == o.hyperparams()
    o.update(w, np.ones(3))
    o2.update(w2, np.ones(3))
    np.testing.assert_array_equal(w, w2)


# ---- clip_grad_norm -------------------------------------------------------------------------

def test_clip_grad_norm_structures():
    g = {"layers": [np.array([3.0, 0.0]), (np.array([[0.0]]), None)], "b": [4.0], "skip": None}
    ids = [id(g["layers"][0]), id(g["layers"][1][0])]
    n = clip_grad_norm(g, 1.0)
    assert n == pytest.approx(5.0)
    assert [id(g["layers"][0]), id(g["layers"][1][0])] == ids           # scaled in place
    np.testing.assert_allclose(g["layers"][0], [0.6, 0.0], rtol=1e-6)
    assert type(g["b"][0]) is float and g["b"][0] == pytest.approx(0.8, rel=1e-6)
    assert g["skip"] is None and g["layers"][1][1] is None
    total = np.sqrt(sum(float(np.sum(np.square(x))) for x in tree.leaves(g) if x is not None))
    assert total == pytest.approx(1.0, rel=1e-5)
    # below max_norm: untouched, the norm is still returned
    g2 = [np.array([0.3, 0.4], np.float32)]
    before = g2[0].copy()
    assert clip_grad_norm(g2, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g2[0], before)
    assert g2[0].dtype == np.float32
    assert clip_grad_norm([None, []], 1.0) == 0.0
    # float16 gradients: no overflow in the norm
    big = [np.full(1000, 300.0, np.float16)]
    assert clip_grad_norm(big, 1.0) == pytest.approx(300.0 * np.sqrt(1000), rel=1e-3)
    assert big[0].dtype == np.float16 and np.isfinite(big[0]).all()


def test_clip_grad_norm_errors_and_nonfinite():
    with pytest.raises(TypeError, match="tuple"):
        clip_grad_norm((np.ones(2), 5.0), 1.0)
    with pytest.raises(TypeError, match="str"):
        clip_grad_norm([np.ones(2), "x"], 1.0)
    g = [np.array([np.inf, 1.0])]
    assert clip_grad_norm(g, 1.0) == np.inf
    np.testing.assert_array_equal(g[0], [np.inf, 1.0])                  # nothing scaled
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm(g, 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_in_a_training_loop():
    w = [knetc.xavier(5, 3), np.zeros(3)]
    opts = optimizers(w, AdamW, lr=0.01)
    for _ in range(3):
        g = [np.ones((5, 3)) * 100, np.ones(3) * 100]
        n = clip_grad_norm(g, 1.0)
        assert n > 1
        update(w, g, opts)
    assert all(o.t == 3 for o in opts)


# ---- update plans ---------------------------------------------------------------------------

def _nested(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {"enc": [rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)],
            "dec": (rng.standard_normal((3, 2)).astype(dtype),), 7: {"s": 0.5, "name": "mlp"},
            "n": 3}


def _grads(w, rng):
    return {"enc": [rng.standard_normal((4, 3)).astype(w["enc"][0].dtype),
                    rng.standard_normal(3).astype(w["enc"][1].dtype)],
            "dec": (rng.standard_normal((3, 2)).astype(w["dec"][0].dtype),),
            7: {"s": float(rng.standard_normal()), "name": None}, "n": None}


@pytest.mark.parametrize("make", [
    lambda: SGD(lr=0.1), lambda: SGD(lr=schedules.step(0.1, 2), weight_decay=0.1, gclip=0.5),
    lambda: Momentum(weight_decay=0.01), lambda: Nesterov(gclip=1.0), lambda: Adagrad(),
    lambda: Adadelta(weight_decay=0.1, gclip=0.5), lambda: Rmsprop(), lambda: Adam(gclip=0.3),
    lambda: Adam(lr=schedules.cosine(0.01, 5), weight_decay=0.1), lambda: AdamW(gclip=0.5),
], ids=["sgd", "sgd-all", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam",
        "adam-sched", "adamw"])
def test_plan_equals_per_array_updates(make):
    """update(w, g, opts) through its plan gives, bit for bit, what opt.update on each array gives."""
    w, ref = _nested(), _nested()
    opts, ropts = optimizers(w, make()), optimizers(ref, make())
    rng1, rng2 = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(6):
        update(w, _grads(w, rng1), opts)
        g = _grads(ref, rng2)
        ropts["enc"][0].update(ref["enc"][0], g["enc"][0])
        ropts["enc"][1].update(ref["enc"][1], g["enc"][1])
        ropts["dec"][0].update(ref["dec"][0], g["dec"][0])
        ref[7]["s"] = ropts[7]["s"].update(ref[7]["s"], g[7]["s"])
    for a, b in zip(tree.leaves(w), tree.leaves(ref)):
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b
    assert type(w[7]["s"]) is float and opts["enc"][0].t == 6


def test_plan_is_never_stale():
    w = [np.ones(3, np.float32), np.ones(2, np.float32)]
    opts = optimizers(w, Adam, lr=0.1)
    g = [np.ones(3, np.float32), np.ones(2, np.float32)]
    update(w, g, opts)
    # the user replaces an array: the new one is updated, the old one no more
    old, new = w[0], np.zeros(3, np.float32)
    w[0] = new
    kept = old.copy()
    update(w, g, opts)
    np.testing.assert_array_equal(old, kept)
    assert (new < 0).all() and w[0] is new
    # an array of another shape: the optimizer's state no longer fits, a clear error
    w[1] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"state 'fstm' has shape \(2,\)"):
        update(w, [g[0], np.ones(5, np.float32)], opts)
    opts[1] = Adam(lr=0.1)                 # a new optimizer for it: fine
    update(w, [g[0], np.ones(5, np.float32)], opts)
    assert opts[1].t == 1 and w[1].shape == (5,)
    # an optimizer replaced by None, a gradient of the wrong shape: the walk's errors
    opts[1] = None
    with pytest.raises(TypeError, match=r"no optimizer for the parameter at w\[1\]"):
        update(w, [g[0], np.ones(5, np.float32)], opts)
    opts[1] = Adam()
    with pytest.raises(ValueError, match="gradient shape"):
        update(w, [g[0], np.ones(4, np.float32)], opts)
    # the structure grows without optimizers: refused as before
    w.append(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="optimizers at w do not match"):
        update(w, g + [np.ones(2, np.float32)], opts)
    # a state restored with load_state is checked again
    w2 = [np.ones(2)]
    o2 = optimizers(w2, Momentum)
    update(w2, [np.ones(2)], o2)
    o2[0].load_state({"velocity": np.zeros(3)})
    with pytest.raises(ValueError, match="velocity"):
        update(w2, [np.ones(2)], o2)


def test_plan_gradient_shapes_the_walk_handles():
    w = {"a": np.ones(2), "b": [np.ones(2), np.ones(2)]}
    opts = optimizers(w, SGD, lr=1.0)
    update(w, {"a": np.ones(2), "b": [np.ones(2), np.ones(2)]}, opts)
    update(w, {"b": [np.ones(2), None]}, opts)                  # fewer dict keys
    update(w, {"b": None, "a": np.ones(2)}, opts)               # a None subtree, other key order
    update(w, {"b": (np.ones(2), np.ones(2)), "a": [1.0, 1.0]}, opts)   # tuple for list, a list
    np.testing.assert_array_equal(w["a"], [-2, -2])
    np.testing.assert_array_equal(w["b"][0], [-2, -2])
    np.testing.assert_array_equal(w["b"][1], [-1, -1])
    with pytest.raises(TypeError, match=r"gradient at w is a list, expected a dict"):
        update(w, [np.ones(2)], opts)
    with pytest.raises(ValueError, match=r"gradient at w\['b'\] does not match"):
        update(w, {"b": [np.ones(2)]}, opts)
    with pytest.raises(ValueError, match=r"optimizers at w do not match"):
        update(w, {"c": np.ones(2)}, opts)
    t = (np.ones(2), 0.5)
    ot = optimizers(t, SGD)
    with pytest.raises(TypeError, match=r"float w\[1\] inside a tuple"):
        update(t, (np.ones(2), 1.0), ot)


def test_plan_cache_is_bounded_and_ids_are_only_hints():
    for i in range(3 * optim._MAX_PLANS):
        n = 1 + i % 5
        w = [np.full(2, float(i)) for _ in range(n)] + ([{"x": np.zeros(1)}] if i % 2 else [])
        opts = optimizers(w, SGD, lr=1.0)
        g = [np.ones(2)] * n + ([{"x": np.ones(1)}] if i % 2 else [])
        update(w, g, opts)
        assert all((a == i - 1).all() for a in w[:n])
        if i % 2:
            assert w[-1]["x"][0] == -1
    assert len(optim._PLANS) <= optim._MAX_PLANS


def test_update_allocates_no_temporaries():
    """After the first update, updates of an MLP's parameters allocate no arrays."""
    shapes = [(784, 64), (64,), (64, 64), (64,), (64, 10), (10,)]
    for cls in (SGD, Adam, AdamW):
        w = [np.ones(s, np.float32) for s in shapes]
        g = [np.full(s, 0.01, np.float32) for s in shapes]
        opts = optimizers(w, cls, lr=schedules.cosine(0.01, 100), gclip=1e6, weight_decay=1e-4)
        update(w, g, opts)
        tracemalloc.start()
        try:
            for _ in range(20):
                update(w, g, opts)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 20_000, (cls.__name__, peak)     # one (64, 10) float32 temporary is 2560 B


def test_dtypes():
    for dt in (np.float16, np.float32, np.float64):
        w = np.ones(4, dt)
        o = Adam(lr=0.1, weight_decay=0.1)
        o.update(w, np.ones(4, dt))
        assert w.dtype == dt and o.fstm.dtype == dt
        np.testing.assert_allclose(w, 0.9, rtol=1e-3)
    # a float32 parameter with a float64 gradient stays float32
    w = np.ones(3, np.float32)
    SGD(lr=0.5).update(w, np.ones(3))
    assert w.dtype == np.float32 and (w == 0.5).all()
    with pytest.raises(TypeError):
        SGD(lr="fast")
    with pytest.raises(TypeError, match="cannot update a str"):
        SGD().update("w", np.ones(1))


def test_docstring_examples():
    for mod in (optim, schedules):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.failed == 0 and res.attempted > 5, mod.__name__
    for name in ("AdamW", "clip_grad_norm", "schedules", "update", "optimizers"):
        assert name in knetc.__all__
    for obj in (AdamW, clip_grad_norm, schedules.step, schedules.cosine, schedules.linear_warmup,
                update, optimizers, SGD, Adam):
        assert ">>>" in obj.__doc__, obj
