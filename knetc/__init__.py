"""knetc: Knet for Python, a source-to-source autodiff compiler for plain NumPy (and CuPy) models.

    dw = knetc.grad(loss)(w, x, y)

reads ``loss``'s source, specializes it to the arguments, generates a straight-line adjoint
function from per-primitive rules, compiles and caches it, and runs it.
"""
from . import schedules, settings
from .rules import load_all as _load_rules
from .rules.registry import adjoint, adjoint_emitter, nondifferentiable
from .errors import KnetcError, LossError, MutationError, NoRuleError, UnsupportedSyntax
from .compiler.tape import PrecisionWarning
from .compiler.timings import CompileTimes, compile_times
from .api import (Differentiable, Grad, cache_info, differentiable, grad, gradloss, show,
                  value_and_grad)
from .runtime.prims import (elu, erf, gelu, getval, logp, logsumexp, mat, relu, selu, sigm,
                            softmax, training, training_mode)

from .optim import (SGD, Adadelta, Adagrad, Adam, AdamW, Momentum, Nesterov, Rmsprop,
                    clip_grad_norm, optimizers, update)
from .init import bilinear, gaussian, param, param0, xavier
from .data import minibatch
from .serialize import load, save

from .runtime.rnn import RNN, rnnforw, rnninit, rnnparam, rnnparams
from .runtime.conv import conv4, deconv4, pool, unpool
from .runtime.backend import array_module, atype, cpu, gpu
from .runtime.memory import memory, track_peak
from .gradcheck import gradcheck, numeric_grad
from .graphs import graph_step
from .tree import register_pytree
from .metrics import accuracy, bce, logistic, nll
from .runtime.layers import batchnorm, bmm, bnmoments, bnparams, dropout
from .runtime.sparse import SparseRows

# The public API (re-exported from the submodules).
__all__ = [
    "settings",
    "adjoint", "adjoint_emitter", "nondifferentiable",
    "KnetcError", "LossError", "MutationError", "NoRuleError", "UnsupportedSyntax", "PrecisionWarning",
    "Differentiable", "Grad", "cache_info", "differentiable", "grad", "gradloss", "show",
    "value_and_grad", "SparseRows", "CompileTimes", "compile_times",
    "elu", "erf", "gelu", "getval", "logp", "logsumexp", "mat", "relu", "selu", "sigm", "softmax",
    "training", "training_mode",
    "SGD", "Adadelta", "Adagrad", "Adam", "Momentum", "Nesterov", "Rmsprop", "optimizers", "update",
    "AdamW", "clip_grad_norm", "schedules",
    "bilinear", "gaussian", "param", "param0", "xavier",
    "minibatch",
    "load", "save",
    "RNN", "rnnforw", "rnninit", "rnnparam", "rnnparams",
    "conv4", "deconv4", "pool", "unpool",
    "array_module", "atype", "cpu", "gpu",
    "memory", "track_peak",
    "gradcheck", "numeric_grad", "register_pytree", "graph_step",
    "accuracy", "bce", "logistic", "nll",
    "batchnorm", "bmm", "bnmoments", "bnparams", "dropout",
]

_load_rules()

__version__ = "0.1.0"
