"""The runtime a game opens once: it loads NPC bundles and shares one model among the NPCs that use it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from .bundle import read_bundle
from .chat import ChatFormat
from .engine import Engine, EngineOptions, open_engine
from .errors import InvalidArgumentError
from .npc import Npc
from .sampling import SamplingConfig


class Runtime:
    """Owns the loaded models and NPCs. `seed` makes every NPC's replies reproducible run to run."""

    def __init__(self, threads: int = 2, spinning: bool = False, seed: int | None = None):
        if not isinstance(threads, int) or not 1 <= threads <= 256:
            raise InvalidArgumentError(f"threads must be an integer in 1..256, not {threads!r}")
        self.options = EngineOptions(threads=threads, spinning=spinning)
        self._seeds = np.random.SeedSequence(seed)
        self._engines: dict[tuple[str, str], Engine] = {}
        self._npcs: dict[str, Npc] = {}
        self._ids = itertools.count(1)

    def load_npc(self, bundle_path: str | Path, npc_id: str | None = None, seed: int | None = None,
                 sampling: SamplingConfig | None = None) -> Npc:
        """Load a bundle (validated and hash-checked) as a new NPC. Raises a `BundleError` subclass."""
        if npc_id is not None and (not isinstance(npc_id, str) or not npc_id):
            raise InvalidArgumentError("npc_id must be a non-empty string")
        bundle = read_bundle(bundle_path)
        npc_id = npc_id or f"{bundle.name}#{next(self._ids)}"
        if npc_id in self._npcs:
            raise InvalidArgumentError(f"an NPC with id {npc_id!r} is already loaded")
        key = (bundle.model.sha256, bundle.model.layout)
        engine = self._engines.get(key)
        if engine is None:
            engine = self._engines[key] = open_engine(str(bundle.model_path), bundle.model, self.options)
        if seed is None:
            seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        chat = ChatFormat.from_file(str(bundle.tokenizer_path), bundle.special)
        npc = self._npcs[npc_id] = Npc(npc_id, bundle, engine, chat, seed=seed, sampling=sampling)
        return npc

    def npc(self, npc_id: str) -> Npc:
        try:
            return self._npcs[npc_id]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"no NPC with id {npc_id!r} is loaded") from None

    @property
    def npcs(self) -> list[Npc]:
        return list(self._npcs.values())

    def unload_npc(self, npc_id: str) -> None:
        npc = self.npc(npc_id)
        if npc.current is not None:
            npc.current.cancel()
        del self._npcs[npc_id]
        # A model no NPC uses any more is released.
        in_use = {(n.bundle.model.sha256, n.bundle.model.layout) for n in self._npcs.values()}
        for key in [k for k in self._engines if k not in in_use]:
            del self._engines[key]

    def close(self) -> None:
        for npc_id in list(self._npcs):
            self.unload_npc(npc_id)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
