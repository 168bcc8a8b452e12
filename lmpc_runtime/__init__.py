"""LMPC runtime: talk to fine-tuned small-model NPCs inside a game, offline, on the CPU.

    from lmpc_runtime import Runtime
    rt = Runtime(threads=2)
    npc = rt.load_npc("build/orlando_marlo.lmpc")   # or rt.start_loading(...), which does not wait
    rt.say(npc, "Who are you?")
    while running:                 # once per frame
        rt.tick(budget_ms=4)
        for event in rt.poll(): ...
"""

from .bundle import Bundle, read_bundle
from .errors import (
    AdapterError,
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleMissingError,
    BundleVersionError,
    ContextOverflowError,
    HookError,
    InvalidArgumentError,
    LmpcError,
    ModelError,
    SaveCorruptError,
    SaveError,
    SaveFormatError,
    SaveMismatchError,
    SaveVersionError,
    SequenceBusyError,
    SheetError,
    StateError,
)
from .hooks import TextHooks
from .memory.recall import RecallConfig
from .memory.store import Memory
from .memory.summary import SummaryConfig
from .npc import Npc
from .reply import (
    ACTION,
    DONE,
    EMOTION,
    ERROR,
    FINISH_CANCELLED,
    FINISH_END,
    FINISH_ERROR,
    FINISH_FALLBACK,
    FINISH_LENGTH,
    FINISH_REPEAT,
    FINISH_STOP,
    LOADED,
    LOADING,
    SENTENCE,
    STARTED,
    SUMMARY,
    TEXT,
    Event,
)
from .runtime import Runtime
from .scheduler import AMBIENT, FOCUS, NORMAL, TickStats
from .sampling import SamplingConfig
from .sheet import CharacterSheet, load_sheet

__version__ = "0.1.0"

__all__ = [
    # event kinds (Event.kind) and how a reply ended (Event.finish, on `done`)
    "STARTED", "TEXT", "SENTENCE", "DONE", "ERROR", "SUMMARY", "LOADING", "LOADED", "ACTION", "EMOTION",
    "FINISH_END", "FINISH_LENGTH", "FINISH_STOP", "FINISH_REPEAT", "FINISH_CANCELLED", "FINISH_FALLBACK",
    "FINISH_ERROR",
    "AMBIENT", "AdapterError", "FOCUS", "NORMAL", "Bundle", "BundleError", "BundleFormatError", "BundleIntegrityError",
    "BundleMissingError", "BundleVersionError", "CharacterSheet", "ContextOverflowError", "Event",
    "HookError", "InvalidArgumentError", "LmpcError", "Memory", "ModelError", "Npc",
    "RecallConfig", "Runtime", "SamplingConfig", "SaveCorruptError", "SaveError", "SaveFormatError",
    "SaveMismatchError", "SaveVersionError", "SequenceBusyError", "SheetError", "StateError", "SummaryConfig", "TextHooks",
    "TickStats", "load_sheet", "read_bundle",
]
