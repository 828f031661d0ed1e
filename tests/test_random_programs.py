"""Random loss programs (tests/randprog.py) through knetc.grad, against finite differences.

Each example is one generated program: a module with helper functions, closures, lambdas,
loops, branches on Python values and on array values, indexing, broadcasting, reductions and
lists/dicts of parameters (see randprog's docstring). It is called several times (new values,
a second shape where the program allows one, values that take another branch), and every
gradient is compared with central finite differences in float64, the loss with the function's own
value. A ``KnetcError`` that names the generated file and a line in it is an accepted outcome;
anything else (a wrong value, another exception, an error without a location) fails.

The example budget is fixed and the seeds derandomized, so CI runs the same programs every time.
Run many more by hand::

    KNETC_RANDPROG_N=2000 python -m pytest tests/test_random_programs.py

or survey failures by cause (several processes, failing programs written to a folder)::

    python tests/randprog.py --run 3000 --jobs 4 --out /tmp/randprog-failures
    python tests/randprog.py SEED --check        # one program, printed and checked

A failure prints the seed and the whole program; ``python tests/randprog.py SEED`` prints it again.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import knetc
import randprog

N = int(os.environ.get("KNETC_RANDPROG_N", "150"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("randprog"))


@settings(max_examples=N, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],   # shrinking a seed gives another program
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_random_program(seed, folder):
    out = randprog.check(randprog.generate(seed), folder)
    assert out.status in ("ok", "rejected"), out.report()


def test_generator_is_deterministic():
    assert randprog.generate(12345).source == randprog.generate(12345).source


def test_generated_programs_cover_the_language():
    """The features the generator is meant to exercise all occur in a modest number of seeds
    (so a change to the generator that silently drops one fails here)."""
    seen = set()
    for seed in range(300):
        seen |= randprog.generate(seed).features
    wanted = {
        "w_dict", "w_list", "w_single", "w_float", "param_list", "param_pairs", "param_alias",
        "pyfloat_param", "data_arg", "argnum_data", "call_with_keywords", "api_differentiable",
        "loop_range_lit", "loop_range_len", "loop_range_k", "loop_params", "loop_enumerate",
        "loop_zip", "loop_pairs", "loop_rows", "loop_seq", "loop_dict_keys", "loop_while",
        "loop_while_array", "loop_continue", "loop_break", "loop_break_array", "loop_acc",
        "loop_rec", "loop_append", "list_stack", "list_builtin_sum",
        "if_stmt", "if_stmt_elif", "if_array", "if_flag", "if_int", "if_shape", "if_str_leaf",
        "if_pyfloat_param", "ifexp", "return_ifexp",
        "helper", "call_helper", "call_keyword", "call_default_given", "call_default_used",
        "call_kwonly", "tuple_unpack", "closure_def", "lambda", "call_closure",
        "closure_capture", "recursion", "global_float", "global_function",
        "index_int", "index_negstep", "index_none", "index_fancy", "index_data_idx",
        "index_loopvar", "index_ellipsis", "mask_self", "mask_data",
        "broadcast", "broadcast_ones", "broadcast_suffix", "reduce_sum", "reduce_mean",
        "reduce_max", "reduce_sum_keepdims", "reduce_all_sum", "matmul_@", "matmul_dot",
        "reshape", "transpose", "concatenate", "stack", "augassign_array", "augassign_scalar",
        "rebind", "selfuse", "selfuse_gather", "selfuse_rev", "selfuse_dot",
        "u_tanh", "u_exp", "u_log", "u_sqrt", "u_sin", "k_abs", "k_clip", "k_relu", "where_max",
        "where_min", "where_where", "container_list_index", "container_dict_index",
        "comprehension_gen",
    }
    assert not wanted - seen, sorted(wanted - seen)


# -- bugs the generator found, fixed: minimal programs kept as regression tests ---------------
# add_rows wrote through a reshape that was a copy for non-contiguous buffers; np.prod's adjoint
# divided by entries that can be 0; `acc = np.zeros(3); acc += w` was refused.

def _prod_with_zero(w):
    return np.prod(w)


def _zeros_accumulator(w):
    acc = np.zeros(3)
    acc += w
    return np.sum(acc ** 2)


def _gather_beside_broadcast(w):
    return np.sum(w - w[np.array([0, 1, 2])], axis=1).sum()


KNOWN = [
    pytest.param(_gather_beside_broadcast, np.arange(60.0).reshape(3, 4, 5) / 60,
                 id="gather-gradient-lost"),
    pytest.param(_prod_with_zero, np.array([0.0, 2.0, 3.0]), id="prod-of-a-zero"),
    pytest.param(_zeros_accumulator, np.array([1.0, -2.0, 0.5]), id="zeros-then-plus-equals"),
]


@pytest.mark.parametrize("f, w", KNOWN)
def test_known_bug(f, w):
    g = knetc.grad(f)(w)
    num = knetc.numeric_grad(f, w)
    assert g is not None and np.allclose(g, num, rtol=1e-5, atol=1e-7), (g, num)
