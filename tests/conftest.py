"""Shared fixtures: the committed tiny bundle, and the real SmolLM2 demo bundle that `make test` builds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
REPO = Path(__file__).parents[1]
TINY_BUNDLE = ASSETS / "tiny.lmpc"
ORLANDO_SHEET = REPO / "examples" / "characters" / "orlando_marlo.toml"


@pytest.fixture(scope="session")
def tiny_bundle() -> Path:
    return TINY_BUNDLE


@pytest.fixture
def tiny_copy(tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    dst = tmp_path / "tiny.lmpc"
    shutil.copytree(TINY_BUNDLE, dst)
    return dst


@pytest.fixture(scope="session")
def real_bundle() -> Path:
    """The real demo bundle. `make test` builds it first and sets LMPC_REAL_BUNDLE, so there it must exist."""
    path = Path(os.environ.get("LMPC_REAL_BUNDLE", REPO / "build" / "orlando_marlo.lmpc"))
    if not (path / "manifest.msgpack").is_file():
        if os.environ.get("LMPC_REAL_BUNDLE"):
            pytest.fail(f"LMPC_REAL_BUNDLE={path} is not a built bundle")
        pytest.skip("the real demo bundle is not built (run `make bundle`)")
    return path
