"""Shared fixtures.

``data_dir`` is the folder of real data sets (``housing/``, ``mnist/``, ``text/``, ...) that the
loader and example tests read.  It is ``$KNETC_DATA`` when that names a folder (CI sets it, see
``.ci/run``; a relative value is taken from the current directory, then from the repository root),
else ``../shared/data`` beside the repository.  Without either, the tests that use it are skipped;
nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def find_data_dir() -> Path | None:
    """The shared data folder, or None when there is none (see the module docstring)."""
    env = os.environ.get("KNETC_DATA")
    cands: list[Path] = []
    if env:
        p = Path(env).expanduser()
        cands += [p] if p.is_absolute() else [Path.cwd() / p, ROOT / p]
    cands.append(DEFAULT_DATA)
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder (absolute); skips the test when there is none."""
    d = find_data_dir()
    if d is None:
        env = os.environ.get("KNETC_DATA")
        where = f"KNETC_DATA={env!r} is not a folder and " if env else "KNETC_DATA is unset and "
        pytest.skip(f"no data folder: {where}{DEFAULT_DATA} does not exist")
    return d


@pytest.fixture
def data(monkeypatch, data_dir):
    """Point the loaders at the shared data folder (skip when it is absent); no progress bars."""
    monkeypatch.setenv("KNETC_DATA", str(data_dir))
    monkeypatch.setenv("KNETC_PROGRESS", "0")
    return data_dir


@pytest.fixture
def need(data):
    """``need(rel)``: skip the test unless the data folder holds the file ``rel`` (the loaders
    pointed at that folder, as ``data`` does)."""
    def check(rel: str) -> None:
        if not (data / rel).is_file():
            pytest.skip(f"{rel} not in {data}")
    return check


def _no_network(url, dest):
    raise OSError(f"network disabled in tests ({url})")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads, and an empty private cache (the loader tests)."""
    from knetc import data
    monkeypatch.setattr(data, "_download", _no_network)
    monkeypatch.setenv("KNETC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KNETC_DATA", raising=False)
    return tmp_path
