"""KV caches of fixed prompt starts (an NPC's persona), computed once per engine and copied for each user.

Every conversation of an NPC begins with the same persona tokens, and every NPC built from the same
bundle shares them, so their keys and values are computed once; a new conversation starts from a fork
and prefills only what follows. Time to the first token then no longer grows with the persona.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

# Prefill in chunks: attention scratch memory grows with chunk length × context.
PREFILL_CHUNK = 256


class PrefixCache:
    """Sequences holding given prefixes, least recently used dropped beyond `max_entries`."""

    def __init__(self, engine: Any, max_entries: int = 8):
        # Weak: the engine owns this cache, and a cycle would keep a closed engine's session (native
        # memory the garbage collector does not see) alive until a full collection.
        self._engine = weakref.ref(engine)
        self.max_entries = max_entries
        # (adapter fingerprint or "", prefix tokens) → a sequence holding them: an adapter changes the cache.
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prefix: list[int]) -> bool:
        return self.holds(prefix)

    def holds(self, prefix: list[int], adapter: Any = None) -> bool:
        return (getattr(adapter, "fingerprint", ""), tuple(prefix)) in self._entries

    def sequence(self, prefix: list[int], adapter: Any = None) -> Any:
        """A new sequence of the engine that already holds `prefix` (computed now if not cached), run with
        `adapter` (None: the base weights)."""
        key = (getattr(adapter, "fingerprint", ""), tuple(prefix))
        cached = self._entries.pop(key, None)
        if cached is None:
            engine = self._engine()
            cached = engine.new_sequence(adapter=adapter)
            # On the paced graph: in tick mode that is the segments, and a game that never calls `npc.ask`
            # then never opens the whole graph.
            for start in range(0, len(prefix), PREFILL_CHUNK):
                engine.begin_extend(cached, list(prefix[start:start + PREFILL_CHUNK])).finish()
        self._entries[key] = cached
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return cached.fork()
