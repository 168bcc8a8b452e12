"""One NPC in a game: its persona, the conversation so far, what it knows, and the KV cache.

Each new player line turns the whole conversation into the token ids the model should see, keeps the
longest prefix the cache already holds, and prefills only the rest. The cache starts out holding the
persona, copied from the engine's prefix cache (computed once for all NPCs that share it), so the
persona is never prefilled while the player waits, a cancelled reply costs nothing to undo, and
dropping old turns when the context fills re-reads only what follows the persona.

The prompt of a turn is: persona, the exchanges still in the history, the memory note (lore entries and
retrieved memories, as a system turn), the player's line. The note of a turn is not kept afterwards, so
the next turn re-reads the last exchange (tens of tokens) but never the persona. Old exchanges leave the
history by summarisation (`background_jobs`), or, while a summary is still pending, are left out of the
prompt oldest first.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .actions import GAME_VALUES, TailGrammar, TailWriter, action_tags, tail_room, value_problems
from .adapters import Adapter
from .bundle import Bundle, read_memories
from .chat import ChatFormat
from .engine import Engine
from .errors import ContextOverflowError, InvalidArgumentError
from .following import AnswerFollower
from .hooks import HookedReply, TextHooks, call_hook
from .memory.embedder import Embedder
from .memory.action_cues import bundle_action_cues
from .memory.exchanges import bundle_exchanges
from .memory.gating import GameState, parse_condition
from .macros import UNNAMED_PLAYER, player_name, resolve
from .memory.lorebook import LoreScanner
from .memory.recall import Recall, RecallConfig, Recalled
from .memory.store import Memory, MemoryStore, bundle_store
from .memory.summary import PROMPT_OVERHEAD, SummaryConfig, clean_summary, exchanges_to_summarise, summary_prompt
from .names import NameGuard, ReplyNames, sheet_words
from .persona import memory_note, persona_tokens
from .reply import FINISH_CANCELLED, SUMMARY, Event, Reply, drive
from .sampling import Sampler, SamplingConfig

MAX_PLAYER_CHARS = 2000
# Tokens kept free for the player's line when deciding whether the history needs summarising.
PLAYER_LINE_RESERVE = 64
# Summaries are greedy: the same conversation always gives the same summary, whenever it is run.
SUMMARY_SAMPLING = SamplingConfig(temperature=0.0, repetition_penalty=1.1, repetition_window=64)
# Said when the model produced nothing sayable and the sheet has no fallback lines: a pause, never an
# empty speech bubble.
SILENT_FALLBACK = "…"
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


def _values_of(action: str, registered: dict[tuple[str, str], tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The game's values for one action's arguments, from values registered by (action, argument)."""
    return {arg: values for (name, arg), values in registered.items() if name == action}


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    mismatch = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(mismatch[0])


@dataclass
class NpcState:
    """What a save game holds of an NPC, as live objects (save.py encodes them, and builds and checks a
    new one before `Npc.restore` swaps it in). The persona and bundle are the NPC's own; `engine` is
    where `seq` lives (save.py reads and builds caches with it; it is never saved)."""

    history: list[tuple[str, str]]
    turn: int
    summarised_turns: int
    turns_since_summary: int
    facts: GameState
    game_time: float | None
    rng: np.random.Generator
    memories: MemoryStore
    lore: LoreScanner  # the lorebook's timers
    seq: Any  # the KV sequence (whatever the engine hands out)
    engine: Engine


class Npc:
    """A character the player can talk to. Not thread-safe: drive it from one thread."""

    def __init__(self, npc_id: str, bundle: Bundle, engine: Engine, chat: ChatFormat, embedder: Embedder,
                 seed: int | None = None, sampling: SamplingConfig | None = None, adapter: Adapter | None = None):
        self.id = npc_id
        self.bundle = bundle
        self._engine = engine
        self.adapter = adapter  # its LoRA adapter on the engine's shared base model (None: the weights as they are)
        self.chat = chat
        self.sampling = sampling or bundle.sampling
        self.rng = np.random.default_rng(seed)
        self.history: list[tuple[str, str]] = []  # (player line, NPC reply), oldest first
        self.current: Reply | None = None
        self._reply_ids = itertools.count(1)
        # Memory and knowledge: what the game tells the NPC, what it remembers, and how it recalls it.
        self.facts = GameState()
        self._personas: dict[str, list[int]] = {}  # persona tokens by the player's name ({{user}})
        # Starts holding the persona: computed once per engine, copied for each NPC that shares it.
        self._seq = engine.new_sequence(self.persona_tokens, adapter)
        self.hooks = TextHooks()
        self.game_time: float | None = None  # stamped on memories and summaries the NPC makes
        self.turn = 0  # player lines started so far; lorebook timers count these
        self.summarised_turns = 0  # exchanges that left the history into summaries
        self.turns_since_summary = 0
        self.summary_config = SummaryConfig()
        built = read_memories(bundle)  # read once for both
        self._recall = Recall(bundle_store(bundle, built), embedder, LoreScanner(bundle.character.lorebook, chat.count),
                              chat.count, self.name, exchanges=bundle_exchanges(bundle, built))
        # The writer's examples of when the character acts: they decide whether a reply ends with an action.
        self._action_cues = bundle_action_cues(bundle, built)
        self._summary_job: Reply | None = None
        self._summary_checked = False  # whether the history changed since a summary was last considered
        self._name_guard: NameGuard | None = None  # built on the first reply that asks for it
        # Values the game registered for its actions' game-valued arguments, by (action, argument).
        self.action_values: dict[tuple[str, str], tuple[str, ...]] = {}
        self._grammars: dict[tuple, TailGrammar] = {}  # compiled tails, by open actions and values
        # Context kept free beyond a reply's token limit for the tail of actions and emotions it may end with.
        self._tail_room = tail_room(bundle.character.actions, bundle.character.emotions)
        self._tail()  # the tokenizer's pieces and the first grammar: built while loading, not at the first reply

    @property
    def name(self) -> str:
        return self.bundle.character.name

    @property
    def persona_tokens(self) -> list[int]:
        """The persona (system prompt and example shots) with `{{user}}` as the game names the player now.
        A persona without the macro is one list; a new name only re-reads the persona from its first
        use of the name on (the cached prefix before it is kept)."""
        user = player_name(self.facts)
        tokens = self._personas.get(user)
        if tokens is None:
            persona = self.bundle.persona
            tokens = persona_tokens(self.chat, persona.system, persona.shots, self.name, user)
            if len(self._personas) >= 4:  # a game renaming the player often must not grow this
                self._personas.clear()
            self._personas[user] = tokens
        return tokens

    @property
    def greeting(self) -> str:
        """The sheet's greeting (empty if none), with `{{char}}` and `{{user}}` resolved."""
        return resolve(self.bundle.character.greeting, self.name, player_name(self.facts))

    def prompt_tokens(self, player_text: str, max_tokens: int, note: Sequence[str] = (),
                      exchanges: Sequence[tuple[str, str]] = ()) -> list[int]:
        """Persona + as many recent exchanges as fit + the recalled `exchanges` of the writer's + the memory
        note + the new line, leaving room for the reply. A line too long to leave room for the note goes
        without it; the recalled exchanges go in before the conversation's when there is room for them."""
        budget = self._engine.spec.context_length - max_tokens - self._tail_room
        player = self.chat.turn("user", player_text) + self.chat.open_turn()
        room = budget - len(self.persona_tokens)
        recalled = self.chat.turn("system", memory_note(self.name, list(note))) if note else []
        if len(recalled) + len(player) <= room:
            player = recalled + player
        elif len(player) > room:
            if room < 16:
                raise ContextOverflowError(f"{self.name}: the persona leaves no room for a conversation")
            # A line longer than the whole context keeps its beginning.
            player = self.chat.turn("user", self.chat.decode(self.chat.encode_text(player_text)[: room - 16]))
            player += self.chat.open_turn()
        turns: list[list[int]] = []  # newest first
        used = len(player)
        for said, answered in reversed(exchanges):  # recalled ones: each goes in if it fits
            exchange = self.chat.turn("user", said) + self.chat.turn("assistant", answered)
            if used + len(exchange) <= room:
                turns.append(exchange)
                used += len(exchange)
        for said, answered in reversed(self.history):  # the conversation: its newest part that fits
            exchange = self.chat.turn("user", said) + self.chat.turn("assistant", answered)
            if used + len(exchange) > room:
                break
            turns.append(exchange)
            used += len(exchange)
        return self.persona_tokens + [t for exchange in reversed(turns) for t in exchange] + player

    def next_reply_id(self) -> int:
        return next(self._reply_ids)

    def start_reply(self, player_text: str, sampling: SamplingConfig | None = None,
                    reply_id: int | None = None) -> Reply:
        """Build the prompt for `player_text`; the reply is produced by whoever drives it. The seam for tools
        that drive replies themselves (the toolchain batches its evaluation runs so); a game says lines
        through `Runtime.say`, which calls this and `end_reply` where the NPC's state lives."""
        if self.current is not None and not self.current.done:
            raise InvalidArgumentError(f"{self.name} is still answering; cancel that reply first")
        text = clean_player_text(player_text)
        if self.hooks.before_model is not None:
            text = clean_player_text(call_hook(self.hooks.before_model, text, "before_model"))
        config = sampling or self.sampling
        self.turn += 1
        messages = [line for exchange in self.history for line in exchange] + [text]
        recalled = self._recall.for_turn(text, messages, self.facts, self.turn)
        prompt = self.prompt_tokens(text, config.max_tokens, recalled.note, recalled.exchanges)
        # The cache may hold the whole prompt (the same line again after a cancelled reply), but not the
        # logits of its last token, which the first sampled token needs: that token is always fed again.
        self._seq.rewind(min(common_prefix(self._seq.tokens, prompt), len(prompt) - 1))
        fallbacks = self.bundle.character.fallback_lines
        reply_type, hook = (Reply, {}) if self.hooks.after_model is None else (
            HookedReply, {"after_model": self.hooks.after_model})
        reply = reply_type(
            **hook,
            reply_id=reply_id if reply_id is not None else self.next_reply_id(),
            npc_id=self.id,
            seq=self._seq,
            todo=prompt[len(self._seq):],
            sampler=Sampler(config, self.rng, banned=self.bundle.special.banned),
            stream=self.chat.text_stream(),
            end_token=self.bundle.special.im_end,
            max_tokens=config.max_tokens,
            stop=config.stop,
            fallback=fallbacks[int(self.rng.integers(len(fallbacks)))] if fallbacks else SILENT_FALLBACK,
            recent=prompt,
            player_text=text,
            names=self._names(prompt) if config.name_penalty else None,
            tail=self._tail(recalled),
            follower=self._follower(recalled) if config.follow_bonus else None,
        )
        self.current = reply
        return reply

    def _names(self, prompt: list[int]) -> ReplyNames:
        """The name guard of a reply to `prompt`: names of the sheet and of the prompt are known."""
        if self._name_guard is None:
            self._name_guard = NameGuard(self.chat.tokenizer.get_vocab(), sheet_words(self.bundle.character.to_dict()))
        return self._name_guard.for_prompt(self.chat.decode(prompt))

    def _follower(self, recalled: Recalled) -> AnswerFollower | None:
        """The reply's follower of the writer's answer recalled for the line, the one most alike (none if no
        exchange was alike enough)."""
        if not recalled.exchanges:
            return None
        return AnswerFollower(self.chat.encode_text(recalled.exchanges[-1][1]))

    def set_action_values(self, action: str, argument: str, values: Sequence[str]) -> None:
        """The values the NPC may pass for an argument the sheet leaves to the game (`args.x = "game"`),
        e.g. what the player can be given now; the model can never write any other. An empty list closes
        the action until values are registered again."""
        spec = next((a for a in self.bundle.character.actions if a.name == action), None)
        if spec is None:
            raise InvalidArgumentError(f"{self.name} has no action {action!r}")
        if spec.args.get(argument) != GAME_VALUES:
            raise InvalidArgumentError(f"{action}.{argument} is not an argument whose values the game gives "
                                       f"(the sheet says args.{argument} = \"{GAME_VALUES}\")")
        if isinstance(values, str):
            raise InvalidArgumentError("values must be a list of strings, not one string")
        problems = value_problems(list(values))
        if problems:
            raise InvalidArgumentError(f"{action}.{argument}: {'; '.join(problems)}")
        registered = {**self.action_values, (action, argument): tuple(values)}
        action_tags(spec, _values_of(action, registered))  # raises if too many combinations to compile
        self.action_values = registered

    def _tail(self, recalled: Recalled | None = None) -> TailWriter | None:
        """The typed tail of the next reply: the actions open under the game's facts now, and the emotions;
        the action it ends with decided by the writer's cues for what the player's line `recalled`, if any."""
        sheet = self.bundle.character
        if not sheet.actions and not sheet.emotions:
            return None
        open_now = tuple(a.name for a in sheet.actions if not a.requires or parse_condition(a.requires)(self.facts))
        key = (open_now, tuple(sorted(self.action_values.items())))
        grammar = self._grammars.get(key)
        if grammar is None:
            tags = [tag for a in sheet.actions if a.name in open_now
                    for tag in action_tags(a, _values_of(a.name, self.action_values))]
            if len(self._grammars) >= 16:  # a game changing facts and values often must not grow this
                self._grammars.clear()
            grammar = self._grammars[key] = TailGrammar(self.chat.pieces, tags, sheet.emotions)
        decided = None if recalled is None else self._action_cues.decide(recalled.vector, grammar.action_names,
                                                                          recalled.closest_exchange)
        return TailWriter(grammar, decided)

    def end_reply(self, reply: Reply) -> None:
        """Record a finished reply in the conversation (a cancelled one leaves no trace)."""
        if reply is self.current:
            self.current = None
        if reply.done and reply.finish != FINISH_CANCELLED:
            self.history.append((reply.player_text, reply.final_text))
            self.turns_since_summary += 1
            self._summary_checked = False

    def ask(self, player_text: str, sampling: SamplingConfig | None = None) -> Iterator[Event]:
        """Answer on the calling thread, yielding events as tokens arrive (for tools and tests); then run
        any background job that fell due, so a caller without a scheduler still gets its summaries."""
        reply = self.start_reply(player_text, sampling)
        try:
            yield from self.run_reply(reply)
        finally:
            if not reply.done:
                reply.cancel()
            self.end_reply(reply)
        for job in self.background_jobs():
            yield from self.run_reply(job)

    def run_reply(self, reply: Reply) -> Iterator[Event]:
        """Produce a reply from `start_reply` (or a background job) on the calling thread, yielding its
        events; the caller then hands it to `end_reply`."""
        return drive(self._engine, reply)

    @property
    def context_tokens(self) -> int:
        """Tokens in the NPC's KV cache now: the persona and the conversation as last read."""
        return len(self._seq)

    def reset(self) -> None:
        """Forget the conversation (the persona's cache is kept; memories, facts and summaries stay)."""
        self.history.clear()
        self._cancel_summary()
        self._seq.rewind(common_prefix(self._seq.tokens, self.persona_tokens))

    # --- Memory and knowledge ------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The sentence embedder (shared with the Runtime's other NPCs of the same embedder)."""
        return self._recall.embedder

    @property
    def memories(self) -> MemoryStore:
        """Everything the NPC can recall: its bundle's statements and what it gained in play."""
        return self._recall.store

    @property
    def recall_config(self) -> RecallConfig:
        return self._recall.config

    @recall_config.setter
    def recall_config(self, config: RecallConfig) -> None:
        if not isinstance(config, RecallConfig):
            raise InvalidArgumentError("recall_config must be a RecallConfig")
        self._recall.config = config

    def remember(self, text: str, kind: str = "event", source: str = "game", importance: float = 0.5,
                 requires: str = "", game_time: float | None = None, cues: Sequence[str] = ()) -> int:
        """Add a memory (embedded now, a few ms); returns its id. `requires` gates it on the facts; `cues`
        are questions a player might ask that should recall it (see memory/store.py)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"a memory's text must be a string, not {type(text).__name__}")
        if isinstance(cues, str) or not isinstance(cues, Sequence) or \
                not all(isinstance(c, str) and c.strip() for c in cues):
            raise InvalidArgumentError("cues must be a list of non-empty strings")
        embed = self._recall.embedder.embed_one
        return self.memories.add(text, embed(text.strip()), kind, source,
                                 self.game_time if game_time is None else game_time, importance, requires,
                                 [(cue, embed(cue.strip())) for cue in cues])

    def forget(self, memory_id: int) -> Memory:
        """Remove a memory, from the bundle or gained in play, so it is never recalled again."""
        return self.memories.forget(memory_id)

    def recall(self, text: str, k: int | None = None) -> list[tuple[Memory, float]]:
        """The memories a player line like `text` would bring to mind now, with their cosine similarity."""
        return self._recall.search(text, self.facts, k)

    def background_jobs(self) -> list[Reply]:
        """Generation jobs this NPC wants run when the game has time to spare, lowest priority first
        to drop: today at most one, a summary of the oldest exchanges once the history grows long.

        Each is a `Reply` of kind "summary" on its own scratch sequence; run it like any reply (the
        scheduler, or `reply.drive`). When it finishes it stores the summary memory, drops the
        summarised exchanges from the history and returns an `Event(kind="summary")`.
        """
        if self._summary_job is None and not self._summary_checked:
            self._summary_checked = True
            self._summary_job = self._next_summary()
        return [self._summary_job] if self._summary_job is not None else []

    def _history_room(self) -> int:
        """Tokens the context leaves the history next to a player line and a note at their largest; the
        note is planned at no more than half of what the persona and the reply leave."""
        available = (self._engine.spec.context_length - self.sampling.max_tokens - self._tail_room
                     - len(self.persona_tokens) - PLAYER_LINE_RESERVE)
        note = self._recall.config.note_tokens
        if self.bundle.character.lorebook.entries:
            note += self.bundle.character.lorebook.token_budget
        return available - min(note, available // 2)

    def _player_name(self) -> str:
        name = player_name(self.facts)
        return "The traveller" if name == UNNAMED_PLAYER else name

    def _next_summary(self) -> Reply | None:
        counts = [len(self.chat.turn("user", p)) + len(self.chat.turn("assistant", n)) for p, n in self.history]
        config = self.summary_config
        limit = self._engine.spec.context_length - PROMPT_OVERHEAD - config.max_tokens
        count = exchanges_to_summarise(counts, self._history_room(), self.turns_since_summary, limit, config)
        if not count:
            return None
        exchanges = self.history[:count]
        player = self._player_name()
        return Reply(
            reply_id=self.next_reply_id(),
            npc_id=self.id,
            seq=self._engine.new_sequence(adapter=self.adapter),
            todo=summary_prompt(self.chat, self.name, player, exchanges, limit),
            # Greedy decoding never draws from the generator: the NPC's own stays untouched.
            sampler=Sampler(SUMMARY_SAMPLING, np.random.default_rng(0), banned=self.bundle.special.banned),
            stream=self.chat.text_stream(),
            end_token=self.bundle.special.im_end,
            max_tokens=config.max_tokens,
            recent=[],
            kind=SUMMARY,
            on_done=partial(self._summary_done, exchanges=exchanges, player=player),
        )

    def _summary_done(self, job: Reply, exchanges: list[tuple[str, str]], player: str) -> list[Event]:
        if job is not self._summary_job:
            return []  # replaced by a reset or a loaded save while it ran
        self._summary_job = None
        if job.finish == FINISH_CANCELLED or self.history[: len(exchanges)] != exchanges:
            return []
        text = clean_summary(job.final_text, self.name, player, exchanges)
        first = self.summarised_turns + 1
        self.memories.add(text, self._recall.embedder.embed_one(text), "summary",
                          f"conversation, exchanges {first}-{first + len(exchanges) - 1}", self.game_time)
        del self.history[: len(exchanges)]
        self.summarised_turns += len(exchanges)
        self.turns_since_summary = 0
        self._summary_checked = False
        return [Event(SUMMARY, self.id, job.id, text, job.finish, len(job.generated))]

    def _cancel_summary(self) -> None:
        job, self._summary_job = self._summary_job, None
        if job is not None:
            job.cancel()
        self._summary_checked = False

    # --- Save games (see save.py) ---------------------------------------------------------------------

    def snapshot(self) -> NpcState:
        """The NPC's saveable state, not copied: encode it before the NPC runs again."""
        return NpcState(self.history, self.turn, self.summarised_turns, self.turns_since_summary, self.facts,
                        self.game_time, self.rng, self._recall.store, self._recall.lore, self._seq, self._engine)

    def restore(self, state: NpcState) -> None:
        """Swap in a whole state at once (built and checked beforehand); a summary in progress is dropped."""
        self._cancel_summary()
        self.history = list(state.history)
        self.turn, self.summarised_turns = state.turn, state.summarised_turns
        self.turns_since_summary = state.turns_since_summary
        self.facts, self.game_time, self.rng = state.facts, state.game_time, state.rng
        self._recall.store, self._recall.lore = state.memories, state.lore
        self._seq = state.seq

    def save(self, path: str | Path, include_kv: bool = False) -> None:
        """Write the NPC's whole state to one file, atomically. Raises a SaveError subclass."""
        from .save import save_file

        save_file(self, Path(path), include_kv)

    def load(self, path: str | Path) -> None:
        """Restore a state written by `save`; on any error the NPC is left exactly as it was."""
        from .save import load_file

        load_file(self, Path(path))

    def to_bytes(self, include_kv: bool = False) -> bytes:
        from .save import save_bytes

        return save_bytes(self, include_kv)

    def load_bytes(self, data: bytes) -> None:
        from .save import load_bytes

        load_bytes(self, data)
