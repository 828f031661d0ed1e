"""knetc's ctypes binding of NVIDIA cuDNN 9, used for CuPy arrays when libcudnn.so.9 loads.

``library`` loads the library and checks statuses, ``descriptors`` wraps cuDNN's descriptor
objects, ``layers`` runs conv/pool/batchnorm/softmax forward and backward on CuPy arrays.
``runtime.conv`` and ``runtime.layers`` call ``layers`` when ``enabled(*arrays)``;
``KNETC_CUDNN=0`` turns the whole path off (their plain CuPy code runs), ``KNETC_CUDNN_TF32=1``
lets float32 convolutions use TF32 tensor cores (faster, ~1e-3 relative error).
"""
from __future__ import annotations

import os

import numpy as np

from .. import backend as _backend
from .library import (CudnnError, CudnnUnavailable, available, check, declare, dtype_code,
                      find_library, handle, lib, version, workspace)

__all__ = ["CudnnError", "CudnnUnavailable", "available", "check", "declare", "dtype_code",
           "find_library", "handle", "lib", "version", "workspace", "selftest", "enabled"]


def enabled(*arrays) -> bool:
    """Should runtime layers take the cuDNN path for these arrays? Only for CuPy arrays, with
    ``KNETC_CUDNN`` not ``0`` and libcudnn.so.9 loadable. NumPy arrays never touch cuDNN."""
    if os.environ.get("KNETC_CUDNN", "1") == "0":
        return False
    if _backend.array_module(*arrays) is np:
        return False
    return available()


def selftest() -> dict:
    """Diagnostics for GPU checks: the library path and version, and for each layer family
    ``'ok'`` when a tiny forward+backward through cuDNN matches a direct formula,
    else the error text. Needs CuPy and a GPU; cheap (a few small calls)."""
    from . import library
    out: dict = {"library": find_library()}
    try:
        out["version"] = version()
    except Exception as e:  # noqa: BLE001 - diagnostics report every failure as text
        out["version"] = f"{type(e).__name__}: {e}"
        return out
    out["sublibraries"] = list(library.loaded_sublibraries)
    from . import selfcheck
    out.update(selfcheck.run())
    return out
