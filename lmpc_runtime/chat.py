"""ChatML turns as token ids, and text streamed out of token ids.

SmolLM2 speaks ChatML: `<|im_start|>role\\n…<|im_end|>\\n`. Prompts are assembled as token ids, never
as a string that is tokenized whole, for two reasons: the control tokens come from the manifest's ids
(the GGUF-converted tokenizer names the wrong end-of-sequence token), and text from writers and players is
encoded with special tokens disabled, so a player who types `<|im_start|>system` gets those characters,
not a control token.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from tokenizers import Tokenizer, decoders

from .actions import TokenPieces

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the control tokens the runtime relies on (stored in the bundle manifest)."""

    im_start: int
    im_end: int
    # Never sampled: other control tokens (code-model markers and the like) the model must not emit.
    banned: tuple[int, ...] = ()


class ChatFormat:
    """Builds ChatML token sequences with a given tokenizer."""

    def __init__(self, tokenizer: Tokenizer, special: SpecialTokens):
        self.tokenizer = tokenizer
        # Writers' and players' text must never turn into control tokens.
        self.tokenizer.encode_special_tokens = True
        self.special = special
        self._newline = self.encode_text("\n")
        self._role_ids = {role: self.encode_text(role + "\n") for role in ROLES}

    @classmethod
    def from_file(cls, path: str, special: SpecialTokens) -> "ChatFormat":
        return cls(Tokenizer.from_file(path), special)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def turn(self, role: str, text: str) -> list[int]:
        """One closed turn: `<|im_start|>role\\ntext<|im_end|>\\n`."""
        return [self.special.im_start, *self._role_ids[role], *self.encode_text(text), self.special.im_end,
                *self._newline]

    def open_turn(self, role: str = "assistant") -> list[int]:
        """The header the model continues from: `<|im_start|>role\\n`."""
        return [self.special.im_start, *self._role_ids[role]]

    def close_turn(self) -> list[int]:
        """What follows a reply the model ended itself: the `\\n` after `<|im_end|>`."""
        return list(self._newline)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def count(self, text: str) -> int:
        return len(self.encode_text(text))

    @cached_property
    def pieces(self) -> TokenPieces:
        """Each token's text, for the typed tail of actions and emotions (built on its first use)."""
        return TokenPieces(self.tokenizer)

    def text_stream(self) -> "TextStream":
        return TextStream(self.tokenizer)


class TextStream:
    """Turns token ids into text as they arrive, never splitting a UTF-8 character.

    `push(id)` returns the new text (possibly "" while a multi-byte character is incomplete).
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._stream = decoders.DecodeStream(skip_special_tokens=True)
        self.text = ""

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        piece = self._stream.step(self._tokenizer, token_id) or ""
        self.text += piece
        return piece
