"""Shared fixtures: the committed tiny bundle, tiny graphs built at test time, and the real SmolLM2 demo
bundle that `make test` builds."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmpc_runtime.bundle import ModelSpec

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


# The acting tiny bundle's actions and emotions (`acting_bundle`).
ACTIONS = [
    {"name": "give_item", "description": "hands something over", "args": {"item": ["father_letter", "coin"]},
     "requires": "not letter.given"},
    {"name": "end_conversation"},
    {"name": "follow", "args": {"target": "game"}},
]
EMOTIONS = ["calm", "sad", "angry"]


@pytest.fixture
def acting_bundle(tiny_copy) -> Path:
    """A copy of the tiny bundle whose sheet declares actions and emotions."""
    import msgpack

    from lmpc_runtime.bundle import MANIFEST_NAME, pack_manifest

    path = tiny_copy / MANIFEST_NAME
    manifest = msgpack.unpackb(path.read_bytes())
    manifest["character"]["actions"] = [{"description": "", "requires": "", "args": {}, **a} for a in ACTIONS]
    manifest["character"]["emotions"] = EMOTIONS
    path.write_bytes(pack_manifest(manifest))
    return tiny_copy


@pytest.fixture(scope="session")
def real_bundle() -> Path:
    """The real demo bundle. `make test` builds it first and sets LMPC_REAL_BUNDLE, so there it must exist."""
    path = Path(os.environ.get("LMPC_REAL_BUNDLE", REPO / "build" / "orlando_marlo.lmpc"))
    if not (path / "manifest.msgpack").is_file():
        if os.environ.get("LMPC_REAL_BUNDLE"):
            pytest.fail(f"LMPC_REAL_BUNDLE={path} is not a built bundle")
        pytest.skip("the real demo bundle is not built (run `make bundle`)")
    return path


@dataclass(frozen=True)
class TinyGraphs:
    """One fresh tiny checkpoint exported both ways, in float32: the fused graph and optimum's."""

    fused: Path
    fused_spec: ModelSpec
    reference: Path
    reference_spec: ModelSpec


@pytest.fixture(scope="session")
def tiny_graphs(tmp_path_factory) -> TinyGraphs:
    """Needs the export extra (torch, optimum); about 10 s, once per test session."""
    pytest.importorskip("torch")
    pytest.importorskip("optimum")
    from lmpc_export import fused_graph, onnx_export
    from lmpc_export.build import model_spec
    from lmpc_export.tiny import make_tiny_checkpoint

    tmp = tmp_path_factory.mktemp("tiny-graphs")
    shutil.copyfile(TINY_BUNDLE / "tokenizer.json", tmp / "tokenizer.json")
    checkpoint = make_tiny_checkpoint(tmp / "checkpoint", tmp / "tokenizer.json", seed=3)
    config = json.loads((checkpoint / "config.json").read_text())
    fused = fused_graph.export_fused(checkpoint, tmp / "fused.onnx", fused_graph.VARIANTS["fp32"])
    reference = onnx_export.export_fp32(checkpoint, tmp / "optimum")
    return TinyGraphs(fused, model_spec(config, fused_graph.LAYOUT, fused.name, "", 1024),
                      reference, model_spec(config, "optimum-kv-concat", reference.name, "", 1024))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under `make test` (LMPC_EXPECT_INSTALLED=1) everything is installed and built, so a skipped test
    means something the suite should have had is missing: report it as a failure, not a quiet "s"."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("LMPC_EXPECT_INSTALLED") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under `make test`, where nothing may be missing: {reason}"
