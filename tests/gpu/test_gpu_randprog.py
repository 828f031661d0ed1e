"""Random loss programs (tests/randprog.py): the gradient on CuPy arrays equals the NumPy one.

The CPU suite checks these programs against finite differences; here the same programs, with
the same float64 values moved to the GPU, must give the same loss and gradients (or, where the
NumPy path raises a KnetcError, the GPU path must raise one too: never a different answer).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import knetc
from knetc import tree
from knetc.runtime.backend import cpu, gpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import randprog  # noqa: E402

N = int(os.environ.get("KNETC_GPU_RANDPROG_N", "60"))


def _run(mod, prog, args, gl):
    for k, v in gl.items():
        setattr(mod, k, v)
    return knetc.gradloss(mod.loss, argnums=prog.argnum)(*args)


@pytest.mark.parametrize("seed", range(N))
def test_random_program_on_gpu(cp, seed, tmp_path):
    prog = randprog.generate(seed)
    mod, _, modname = randprog._load(prog, str(tmp_path), "gpu")
    try:
        rng = np.random.default_rng(seed)
        args, gl = prog.draw(rng, randprog.DIMS_A)
        try:           # a program that fails on CuPy without knetc (NumPy constants mixed with
            for k, v in gpu(gl).items():      # device arrays, say) is the user's to port
                setattr(mod, k, v)
            mod.loss(*gpu(list(args)))
        except Exception as e:
            pytest.skip(f"the program does not run on CuPy by itself: {type(e).__name__}: {e}")
        try:
            want, lwant = _run(mod, prog, args, gl)
        except knetc.KnetcError:
            with pytest.raises(knetc.KnetcError):
                _run(mod, prog, gpu(list(args)), gpu(gl))
            return
        except Exception:
            pytest.skip("the program does not run under NumPy with this draw")
        got, lgot = _run(mod, prog, gpu(list(args)), gpu(gl))
        assert all(not isinstance(g, np.ndarray) for g in tree.leaves(got))
        np.testing.assert_allclose(float(lgot), float(lwant), rtol=1e-9, atol=1e-12)
        for a, b in zip(tree.leaves(want), tree.leaves(cpu(got))):
            np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64),
                                       rtol=1e-8, atol=1e-10)
    finally:
        sys.modules.pop(modname, None)
