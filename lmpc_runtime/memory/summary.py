"""Long-term memory: the oldest exchanges of a conversation, summarised by the NPC's own model.

When the exchanges still in the history take more than `at_fraction` of the room the context leaves
them (or every `every_turns` player turns), the oldest of them are written out as a transcript and the
NPC's model summarises it on a scratch sequence, as a background job. The summary becomes a `summary`
memory, found again by retrieval when it matters, and the summarised exchanges leave the context. The
persona is never summarised or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..chat import ChatFormat
from ..errors import InvalidArgumentError
from ..persona import first_sentence

# The prompt is short and concrete: a 135M model summarises a plain transcript best when told the form.
SUMMARY_SYSTEM = (
    "You keep the journal of {name}. Summarise the conversation below in two or three sentences, in the "
    "third person and the past tense: what {player} asked or told {name}, and what {name} answered or "
    "promised. Write only the summary."
)
PROMPT_OVERHEAD = 120  # tokens of the summary prompt besides the transcript, rounded up
MAX_SUMMARY_CHARS = 600


@dataclass(frozen=True)
class SummaryConfig:
    """When and how much of a conversation is summarised."""

    at_fraction: float = 0.75  # summarise once the history fills this share of the room it has
    every_turns: int = 0  # also summarise every N player turns (0: only when the context fills)
    keep_turns: int = 2  # the latest exchanges always stay in the context word for word
    max_tokens: int = 96  # longest summary

    def __post_init__(self) -> None:
        if not 0 < self.at_fraction <= 1 or self.every_turns < 0 or self.keep_turns < 0 or self.max_tokens < 8:
            raise InvalidArgumentError(f"summary settings out of range: {self}")


def exchanges_to_summarise(token_counts: list[int], room: int, turns_since: int, limit: int,
                           config: SummaryConfig) -> int:
    """How many of the oldest exchanges to summarise now (0: none is due).

    token_counts: the tokens of each exchange still in the history, oldest first; room: tokens the
    context leaves for the history; limit: most transcript tokens one summary prompt may hold.
    """
    candidates = len(token_counts) - config.keep_turns
    if candidates <= 0:
        return 0
    total = sum(token_counts)
    every = config.every_turns and turns_since >= config.every_turns
    if total <= config.at_fraction * room and not every:
        return 0
    # Near the limit, about half the history goes; on the every-N-turns rhythm, all but the kept turns.
    target = total if every else total / 2
    count, used = 0, 0
    while count < candidates and used < target and (count == 0 or used + token_counts[count] <= limit):
        used += token_counts[count]
        count += 1
    return count


def transcript(name: str, player: str, exchanges: list[tuple[str, str]]) -> str:
    return "\n".join(f"{player}: {said}\n{name}: {answered}" for said, answered in exchanges)


def summary_prompt(chat: ChatFormat, name: str, player: str, exchanges: list[tuple[str, str]],
                   limit: int) -> list[int]:
    """The scratch sequence's prompt; a transcript longer than `limit` tokens keeps its end."""
    lines = chat.encode_text(transcript(name, player, exchanges))[-limit:]
    return (chat.turn("system", SUMMARY_SYSTEM.format(name=name, player=player))
            + chat.turn("user", chat.decode(lines)) + chat.open_turn())


def clean_summary(text: str, name: str, player: str, exchanges: list[tuple[str, str]]) -> str:
    """The model's summary, or, when it wrote nothing usable, the first sentence of what each side said."""
    text = " ".join(text.split())
    if len(text.split()) >= 3:
        return text[:MAX_SUMMARY_CHARS]
    said = "; ".join(first_sentence(p) for p, _ in exchanges)
    answered = "; ".join(first_sentence(n) for _, n in exchanges)
    return f"{player} said: {said} {name} answered: {answered}"[:MAX_SUMMARY_CHARS]
