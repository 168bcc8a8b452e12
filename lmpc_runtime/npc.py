"""One NPC in a game: its persona, the conversation so far, and the KV cache that mirrors it.

Each new player line turns the whole conversation into the token ids the model should see, keeps the
longest prefix the cache already holds, and prefills only the rest. The cache starts out holding the
persona, copied from the engine's prefix cache (computed once for all NPCs that share it), so the
persona is never prefilled while the player waits, a cancelled reply costs nothing to undo, and
dropping old turns when the context fills re-reads only what follows the persona.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from typing import Any, Iterator

import numpy as np

from .bundle import Bundle
from .chat import ChatFormat
from .engine import Engine
from .errors import ContextOverflowError, InvalidArgumentError
from .reply import FINISH_CANCELLED, Event, Reply, drive
from .sampling import Sampler, SamplingConfig

MAX_PLAYER_CHARS = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_player_text(text: Any) -> str:
    """What the model is shown of a player's line: no control characters, at most MAX_PLAYER_CHARS."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"a player line must be a string, not {type(text).__name__}")
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", text)).strip()
    if not text:
        raise InvalidArgumentError("the player line is empty")
    if len(text) > MAX_PLAYER_CHARS:
        cut = text.rfind(" ", 0, MAX_PLAYER_CHARS)
        text = text[: cut if cut > MAX_PLAYER_CHARS // 2 else MAX_PLAYER_CHARS]
    return text


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    mismatch = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(mismatch[0])


class Npc:
    """A character the player can talk to. Not thread-safe: drive it from one thread."""

    def __init__(self, npc_id: str, bundle: Bundle, engine: Engine, chat: ChatFormat,
                 seed: int | None = None, sampling: SamplingConfig | None = None):
        self.id = npc_id
        self.bundle = bundle
        self.engine = engine
        self.chat = chat
        self.sampling = sampling or bundle.sampling
        self.rng = np.random.default_rng(seed)
        self.history: list[tuple[str, str]] = []  # (player line, NPC reply), oldest first
        self.current: Reply | None = None
        self._reply_ids = itertools.count(1)
        persona = bundle.persona
        self.persona_tokens = chat.turn("system", persona.system)
        for player, npc in persona.shots:
            self.persona_tokens += chat.turn("user", player) + chat.turn("assistant", npc)
        # Starts holding the persona: computed once per engine, copied for each NPC that shares it.
        self.seq = engine.new_sequence(self.persona_tokens)

    @property
    def name(self) -> str:
        return self.bundle.character.name

    def prompt_tokens(self, player_text: str, max_tokens: int) -> list[int]:
        """Persona + as many recent exchanges as fit + the new line, leaving room for the reply."""
        budget = self.engine.spec.context_length - max_tokens
        player = self.chat.turn("user", player_text) + self.chat.open_turn()
        room = budget - len(self.persona_tokens)
        if len(player) > room:
            if room < 16:
                raise ContextOverflowError(f"{self.name}: the persona leaves no room for a conversation")
            # A line longer than the whole context keeps its beginning.
            player = self.chat.turn("user", self.chat.decode(self.chat.encode_text(player_text)[: room - 16]))
            player += self.chat.open_turn()
        turns: list[list[int]] = []
        used = len(player)
        for said, answered in reversed(self.history):
            exchange = self.chat.turn("user", said) + self.chat.turn("assistant", answered)
            if used + len(exchange) > room:
                break
            turns.append(exchange)
            used += len(exchange)
        return self.persona_tokens + [t for exchange in reversed(turns) for t in exchange] + player

    def start_reply(self, player_text: str, sampling: SamplingConfig | None = None) -> Reply:
        """Queue the prompt for `player_text`; the reply is produced by whoever drives it."""
        if self.current is not None and not self.current.done:
            raise InvalidArgumentError(f"{self.name} is still answering; cancel that reply first")
        text = clean_player_text(player_text)
        config = sampling or self.sampling
        prompt = self.prompt_tokens(text, config.max_tokens)
        self.seq.rewind(common_prefix(self.seq.tokens, prompt))
        fallbacks = self.bundle.character.fallback_lines
        reply = Reply(
            reply_id=next(self._reply_ids),
            npc_id=self.id,
            seq=self.seq,
            todo=prompt[len(self.seq):],
            sampler=Sampler(config, self.rng, banned=self.bundle.special.banned),
            stream=self.chat.text_stream(),
            end_token=self.bundle.special.im_end,
            max_tokens=config.max_tokens,
            stop=config.stop,
            fallback=fallbacks[int(self.rng.integers(len(fallbacks)))] if fallbacks else "",
            recent=prompt,
            player_text=text,
        )
        self.current = reply
        return reply

    def end_reply(self, reply: Reply) -> None:
        """Record a finished reply in the conversation (a cancelled one leaves no trace)."""
        if reply is self.current:
            self.current = None
        if reply.done and reply.finish != FINISH_CANCELLED:
            self.history.append((reply.player_text, reply.final_text))

    def ask(self, player_text: str, sampling: SamplingConfig | None = None) -> Iterator[Event]:
        """Answer on the calling thread, yielding events as tokens arrive (for tools and tests)."""
        reply = self.start_reply(player_text, sampling)
        try:
            yield from drive(self.engine, reply)
        finally:
            if not reply.done:
                reply.cancel()
            self.end_reply(reply)

    def reset(self) -> None:
        """Forget the conversation (the persona's cache is kept)."""
        self.history.clear()
        self.seq.rewind(common_prefix(self.seq.tokens, self.persona_tokens))
