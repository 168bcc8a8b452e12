"""The exceptions LMPC raises: one base class, one subclass per thing that can go wrong.

A game catches `LmpcError` to handle every failure of the library; the subclasses say what failed.
The C ABI maps each class to its own status code (see `bindings/lmpc.h`).
"""


class LmpcError(Exception):
    """Base class of every error LMPC raises on purpose."""


class InvalidArgumentError(LmpcError, ValueError):
    """A caller passed a value the API does not accept (wrong type, out of range, unknown id)."""


class StateError(LmpcError):
    """A call made in the wrong state: from a thread that does not own the runtime, or after close."""


class SequenceBusyError(StateError):
    """A sequence was used while a forward pass over it is in flight (started, not yet finished or cancelled)."""


class SheetError(LmpcError):
    """A character sheet (or imported card) is malformed; `problems` lists each one with its place."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = list(problems)
        listed = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{path}: invalid character sheet:\n{listed}")


class BundleError(LmpcError):
    """An NPC bundle cannot be loaded."""


class BundleMissingError(BundleError):
    """The bundle directory, its manifest, or a file the manifest names does not exist."""


class BundleIntegrityError(BundleError):
    """A file of the bundle does not match the sha256 recorded in its manifest."""


class BundleVersionError(BundleError):
    """The bundle was written by a newer LMPC (format version) than this runtime reads."""


class BundleFormatError(BundleError):
    """The manifest is malformed or oversized, or the model does not have the inputs the manifest promises."""


class AdapterError(BundleError):
    """An NPC's LoRA adapter cannot be applied: unreadable or corrupt, made for another base model, or of a
    rank or shape the loaded model does not take."""


class ModelError(LmpcError):
    """onnxruntime failed while running the model (out of memory, bad shapes)."""


class ContextOverflowError(LmpcError):
    """A prompt does not fit the model's context window even after dropping all droppable turns."""


class ExportError(LmpcError):
    """The offline toolchain failed (missing extra, bad checkpoint, parity check out of bounds)."""


class HookError(LmpcError):
    """A text hook the game installed raised an exception or returned something other than a string."""


class SaveError(LmpcError):
    """A save game cannot be written or loaded; the NPC and any previous save file are left as they were."""


class SaveFormatError(SaveError):
    """The file is not an LMPC save (another kind of file), or its contents are malformed."""


class SaveCorruptError(SaveError):
    """The save is truncated or damaged: its length or checksum does not match."""


class SaveVersionError(SaveError):
    """The save was written by a newer LMPC (format version) than this runtime reads."""


class SaveMismatchError(SaveError):
    """The save belongs to another character or another model than the NPC it is loaded into."""
