"""One NPC reply as a state machine: prompt tokens to prefill, then one sampled token per decode step.

Whoever drives a `Reply` (the synchronous `drive` below, or the per-frame scheduler) only moves tokens
in and logits out; the reply decides what each token means: streamed text, sentence boundaries, the end
of the turn, a stop string, a repetition loop, or the token limit. Every decision is reported as an
`Event` the game can drain.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .actions import TailWriter
from .chat import TextStream
from .engine import Engine, KvSequence
from .following import AnswerFollower
from .names import ReplyNames
from .sampling import Sampler

# Event kinds, in the order a reply emits them.
STARTED, TEXT, SENTENCE, DONE, ERROR, SUMMARY = "started", "text", "sentence", "done", "error", "summary"
# A reply's typed tail (actions.py), just before its DONE: an action (`text` its name, `args` its
# arguments) and an emotion (`text` the label).
ACTION, EMOTION = "action", "emotion"
# Event kinds of a load started with `Runtime.start_loading` (reply id 0): its progress, then its end.
LOADING, LOADED = "loading", "loaded"
# Why a reply finished.
FINISH_END, FINISH_LENGTH, FINISH_STOP, FINISH_REPEAT, FINISH_CANCELLED, FINISH_FALLBACK, FINISH_ERROR = (
    "end_of_turn", "length", "stop_string", "repetition", "cancelled", "fallback", "error")

# In the last tokens before the limit, text past the last full sentence is held back, since the limit
# may cut it off and a game cannot unsay what it showed.
HOLD_NEAR_LIMIT = 16
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class Event:
    """`tokens` counts the tokens a reply has produced so far; on a `loading` event it is the percent of
    the load done."""

    kind: str
    npc: str
    reply: int
    text: str = ""
    finish: str = ""
    tokens: int = 0
    args: dict[str, str] = field(default_factory=dict)  # an `action` event's arguments


@dataclass
class ReplyTimes:
    created: float
    first_token: float | None = None
    finished: float | None = None


def last_sentence_end(text: str) -> int:
    """Index just past the last complete sentence in `text`, or 0 if there is none."""
    end = 0
    for match in _SENTENCE_END.finditer(text + " "):
        end = match.end()
    return end


LOOP_REPEATS = 3


def loop_period(tokens: list[int], repeats: int = LOOP_REPEATS, max_period: int = 12) -> int:
    """The length of a short pattern the last tokens repeat `repeats` times in a row, or 0."""
    for period in range(1, max_period + 1):
        span = period * repeats
        if len(tokens) < span:
            break
        tail = tokens[-span:]
        if all(tail[i] == tail[i % period] for i in range(span)):
            return period
    return 0


def _cut_for_length(text: str) -> int:
    """Where a reply stopped by the token limit ends: its last full sentence, unless that drops most of it."""
    cut = last_sentence_end(text)
    return cut if cut >= len(text) // 3 else len(text)


TRAIL_OFF = "…"


def _trail_off(text: str) -> str:
    """A reply cut by the limit in mid-sentence (no earlier sentence end kept enough of it) trails off
    with an ellipsis, so it reads as the character breaking off, not as the text being chopped."""
    if not text.strip() or last_sentence_end(text) >= len(text.rstrip()):
        return text
    return text + TRAIL_OFF


def _first_sentence_end(text: str) -> int:
    match = _SENTENCE_END.search(text + " ")
    return match.end() if match else 0


def _sentence_key(sentence: str) -> str:
    return " ".join(_WORDS.findall(sentence.lower()))


class Reply:
    """A reply in progress. `todo` is the prompt still to prefill; `next_token` the one to feed next."""

    def __init__(self, reply_id: int, npc_id: str, seq: KvSequence, todo: list[int], sampler: Sampler,
                 stream: TextStream, end_token: int, max_tokens: int, stop: tuple[str, ...] = (),
                 fallback: str = "", recent: list[int] | None = None, player_text: str = "",
                 kind: str = "reply", on_done: Callable[["Reply"], list[Event]] | None = None,
                 names: ReplyNames | None = None, tail: TailWriter | None = None,
                 follower: AnswerFollower | None = None):
        self.id = reply_id
        self.player_text = player_text
        # "reply" answers a player; other kinds (e.g. "summary") are background jobs of the NPC's model.
        self.kind = kind
        # Called once when the reply finishes; the events it returns follow the DONE event.
        self.on_done = on_done
        self.npc_id = npc_id
        self.seq = seq
        self.todo = list(todo)
        self.sampler = sampler
        # Which tokens would start or extend a name the character never heard of (`names.py`).
        self.names = names
        # The writer's answer shown as the turn before, which the reply is nudged to go on with.
        self.follower = follower
        # The typed tail of actions and emotions it may end with (None: the character declares none).
        self.tail = tail
        self._ending = (FINISH_END, "")  # why the speech ended, and its text, while the tail is written
        self.stream = stream
        self.end_token = end_token
        self.max_tokens = max_tokens
        self.stop = stop
        self.fallback = fallback
        self.generated: list[int] = []
        self.next_token: int | None = None
        self.finish = ""
        self.final_text = ""
        self.times = ReplyTimes(created=time.perf_counter())
        # Tokens the repetition penalty looks at: the conversation so far, then this reply.
        self._recent = list(recent if recent is not None else seq.tokens)
        self._shown = 0  # characters of stream.text already sent as TEXT events
        self._sentence_start = 0
        self._sentences: set[str] = set()
        self._checked = 0  # characters of stream.text already checked for repeated sentences

    @property
    def done(self) -> bool:
        return bool(self.finish)

    @property
    def phase(self) -> str:
        if self.finish:
            return "done"
        return "prefill" if self.todo else "decode"

    def take_prefill(self, limit: int) -> list[int]:
        """The next prompt tokens to prefill: at most `limit`, and never all but one when the chunk can
        spare a token. A one-token pass onto a cache runs attention's decode kernel, whose rounding differs
        from the prompt kernel's (up to ~0.4 in a logit on SmolLM2), while passes of two or more tokens
        give the same cache however the prompt is cut; so a reply prefilled in a frame's budget-sized
        chunks samples exactly what one whole pass would."""
        size = min(limit, len(self.todo))
        if len(self.todo) - size == 1 and size > 2:
            size -= 1
        chunk, self.todo = self.todo[:size], self.todo[size:]
        return chunk

    def accept(self, logits: np.ndarray) -> list[Event]:
        """Sample the next token from `logits` [vocab] and report what it changes."""
        tail = self.tail
        if tail is not None and tail.writing:
            return self._accept_tail(logits)
        guard = self.names.discouraged(self.stream.text) if self.names is not None else None
        banned = tail.free_banned(self.stream.text) if tail is not None else None
        follower = self.follower
        favoured = follower.favoured(self.generated) if follower is not None else None
        token = self.sampler.pick(logits, self._recent, guard, banned, favoured)
        if follower is not None:
            follower.took(token)
        now = time.perf_counter()
        events: list[Event] = []
        if self.times.first_token is None:
            self.times.first_token = now
            events.append(self._event(STARTED))
        if token == self.end_token:
            return events + self._end_speech(FINISH_END, self.stream.text, None)
        if tail is not None and tail.opens(token, len(self.seq)):
            self._ending = (FINISH_END, self.stream.text)
            self.generated.append(token)
            self.next_token = token
            return events
        self.generated.append(token)
        self._recent.append(token)
        self.stream.push(token)
        text = self.stream.text
        for stop in self.stop:
            at = text.find(stop)
            if at >= 0:
                return events + self._emit_text(text[:at]) + self._end_speech(FINISH_STOP, text[:at], token)
        repeated = self._repeated_sentence()
        if repeated is not None:
            return events + self._end_speech(FINISH_REPEAT, text[:repeated], token)
        events += self._emit_text(text[: self._visible_end(text)])
        period = loop_period(self.generated)
        if period:
            # Keep one saying of the pattern, or only the sentences before it if there are any.
            once = self.stream.decode(self.generated[: len(self.generated) - (LOOP_REPEATS - 1) * period])
            return events + self._end_speech(FINISH_REPEAT, once[: last_sentence_end(once)] or once, token)
        if len(self.generated) >= self.max_tokens:
            return events + self._end_speech(FINISH_LENGTH, _trail_off(text[: _cut_for_length(text)]), token)
        self.next_token = token
        return events

    def _end_speech(self, why: str, text: str, token: int | None) -> list[Event]:
        """The reply's speech is over, ending with `text`: finish now, or first have the model write the
        tail the character owes (its emotion, or the action decided for the reply). `token`, the last one
        sampled, is fed before the tail's line break; None when it was the end of the turn, which the line
        break replaces."""
        tail = self.tail
        if tail is None or not tail.owes_tag():
            return self._finish(why, text)
        self._ending = (why, text)
        tail.write_emotion(or_action=True)
        if token is None:
            return self._accept_tail(None)
        self.next_token = token
        return []

    def _accept_tail(self, logits: np.ndarray | None) -> list[Event]:
        """The next token of the tail: picked by its automaton, never shown as text (`logits` is None only
        when the token is forced)."""
        tail = self.tail
        token = tail.pick(logits)
        if token is None:  # the model meant a tag not allowed now
            if not (tail.wants_emotion() and tail.rewind_to is not None):
                return self._finish(*self._ending)
            # Back to before the tail's line break, and the emotion instead.
            self.seq.rewind(tail.rewind_to)
            tail.rewind_to = None
            tail.write_emotion()
            token = tail.pick(logits)
        self.generated.append(token)
        if tail.advance(token, len(self.seq)):
            return self._finish(*self._ending)
        self.next_token = token
        return []

    def cancel(self) -> list[Event]:
        if self.finish:
            return []
        return self._finish(FINISH_CANCELLED, self.stream.text)

    def fail(self, message: str) -> list[Event]:
        """End the reply because the model failed: an `error` event, then `done` with what was said so far
        (or the fallback line, so the player never faces an empty bubble)."""
        if self.finish:
            return []
        return [self._event(ERROR, message)] + self._finish(FINISH_ERROR, self.stream.text[: self._shown])

    def _visible_end(self, text: str) -> int:
        """How much of `text` may be shown now: nothing before its first word, never the start of a
        possible stop string, and close to the token limit never a sentence that the limit may cut off."""
        if not _WORDS.search(text):
            return 0  # nothing sayable yet: it may end as the fallback line, which must not follow it
        end = len(text)
        if self.tail is not None:
            end = len(text.rstrip("\n"))  # a line break may open the tail
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    end = min(end, len(text) - n)
                    break
        if len(self.generated) >= self.max_tokens - HOLD_NEAR_LIMIT:
            end = min(end, _cut_for_length(text))
        return end

    def _emit_text(self, visible: str) -> list[Event]:
        events = []
        if len(visible) > self._shown:
            events.append(self._event(TEXT, visible[self._shown:]))
            self._shown = len(visible)
        end = last_sentence_end(visible)
        if end > self._sentence_start:
            sentence = visible[self._sentence_start:end].strip()
            self._sentence_start = end
            if sentence:
                events.append(self._event(SENTENCE, sentence))
        return events

    def _repeated_sentence(self) -> int | None:
        """If a sentence completed since the last check was already said in this reply, where it starts."""
        text = self.stream.text
        end = last_sentence_end(text)
        start = self._checked
        self._checked = max(end, self._checked)
        while start < end:
            stop = start + (_first_sentence_end(text[start:end]) or end - start)
            key = _sentence_key(text[start:stop])
            if key and key in self._sentences:
                return start
            self._sentences.add(key)
            start = stop
        return None

    def _finish(self, why: str, text: str) -> list[Event]:
        """End the reply with `text`, a prefix of what was streamed (or empty, to use the fallback line)."""
        events = []
        # Nothing sayable (empty, or only punctuation and symbols): the sheet's fallback line instead.
        if not _WORDS.search(text) and why != FINISH_CANCELLED and self.fallback:
            text, why = self.fallback, why if why == FINISH_ERROR else FINISH_FALLBACK
            self._shown = self._sentence_start = 0
        if self.tail is not None:
            text = text.rstrip()
        if why != FINISH_CANCELLED:
            if len(text) > self._shown:
                events.append(self._event(TEXT, text[self._shown:]))
            tail = text[self._sentence_start:].strip()
            if tail:
                events.append(self._event(SENTENCE, tail))
        self.finish = why
        self.final_text = text.strip()
        self.next_token = None
        self.times.finished = time.perf_counter()
        if why not in (FINISH_CANCELLED, FINISH_ERROR) and self.tail is not None:
            events += [self._event(ACTION if tag.kind == "action" else EMOTION, tag.name, args=tag.args)
                       for tag in self.tail.parsed()]
        events.append(self._event(DONE, self.final_text, finish=why))
        if self.on_done is not None:
            events += self.on_done(self)
        return events

    def _event(self, kind: str, text: str = "", finish: str = "", args: dict[str, str] | None = None) -> Event:
        return Event(kind, self.npc_id, self.id, text, finish, len(self.generated), dict(args or {}))

    def metrics(self) -> dict[str, float]:
        """Time to first token and decode speed, from the reply's own clock readings."""
        t = self.times
        ttft = (t.first_token - t.created) if t.first_token else float("nan")
        decode_time = (t.finished - t.first_token) if t.finished and t.first_token else 0.0
        steps = max(len(self.generated) - 1, 0)
        return {
            "ttft_ms": ttft * 1000,
            "decode_tok_s": steps / decode_time if decode_time > 0 and steps else float("nan"),
            "tokens": len(self.generated),
        }


def drive(engine: Engine, reply: Reply, prefill_chunk: int = 512) -> Iterator[Event]:
    """Run a reply to its end on the calling thread, yielding its events as they happen."""
    while not reply.done:
        if reply.todo:
            chunk = reply.take_prefill(prefill_chunk)
            logits = engine.extend(reply.seq, chunk)
            if reply.todo:
                continue
        else:
            logits = engine.extend(reply.seq, [reply.next_token])
        yield from reply.accept(logits)
