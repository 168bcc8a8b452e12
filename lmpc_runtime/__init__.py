"""LMPC runtime: talk to fine-tuned small-model NPCs inside a game, offline, on the CPU.

    from lmpc_runtime import Runtime
    rt = Runtime(threads=2)
    npc = rt.load_npc("build/orlando_marlo.lmpc")
    for event in npc.ask("Who are you?"):
        ...
"""

from .bundle import Bundle, read_bundle
from .errors import (
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleMissingError,
    BundleVersionError,
    ContextOverflowError,
    ExportError,
    InvalidArgumentError,
    LmpcError,
    ModelError,
    SheetError,
)
from .npc import Npc
from .reply import Event
from .runtime import Runtime
from .sampling import SamplingConfig
from .sheet import CharacterSheet, load_sheet

__version__ = "0.1.0"

__all__ = [
    "Bundle", "BundleError", "BundleFormatError", "BundleIntegrityError", "BundleMissingError",
    "BundleVersionError", "CharacterSheet", "ContextOverflowError", "Event", "ExportError",
    "InvalidArgumentError", "LmpcError", "ModelError", "Npc", "Runtime", "SamplingConfig", "SheetError",
    "load_sheet", "read_bundle",
]
