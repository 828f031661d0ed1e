"""GPU tests: every test here is marked ``gpu`` and skips cleanly without CuPy and a CUDA device.

``cp`` is the cupy module (the test is skipped when it cannot be used); ``to_gpu``/``to_cpu``
move nested structures of arrays. Each test compares the GPU path with the NumPy path on the
same inputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:      # the examples package lives at the repository root
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def cp():
    from knetc.runtime.backend import cupy_module
    cupy = cupy_module()
    if cupy is None:
        pytest.skip("needs CuPy and a CUDA GPU")
    return cupy
