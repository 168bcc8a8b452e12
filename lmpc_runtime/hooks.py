"""Text hooks: the game's own callables on the way into the model and on the way out, e.g. translation.

`before_model(text) -> text` sees the player's (cleaned) line and returns what the model is shown.
`after_model(text) -> text` sees the NPC's reply one complete sentence at a time: with it installed, a
reply streams sentence by sentence (each sentence hooked, then sent as one `text` event) instead of token
by token, because a translator needs whole sentences. The conversation history keeps the model's own
words, so the model always reads its own language back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .errors import HookError
from .reply import DONE, ERROR, SENTENCE, TEXT, Event, Reply

Hook = Callable[[str], str]


@dataclass(frozen=True)
class TextHooks:
    before_model: Hook | None = None
    after_model: Hook | None = None

    def __post_init__(self) -> None:
        for name in ("before_model", "after_model"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise HookError(f"{name} must be callable")


def call_hook(hook: Hook, text: str, name: str) -> str:
    """Run a game's hook; anything it raises, or a non-string result, becomes a HookError."""
    try:
        result = hook(text)
    except Exception as exc:  # the game's code: any exception must be caught here, not reach the host
        raise HookError(f"the {name} hook raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, str):
        raise HookError(f"the {name} hook returned {type(result).__name__}, not a string")
    return result


class HookedReply(Reply):
    """A reply whose text passes through an `after_model` hook a sentence at a time.

    A sentence the hook fails on is shown as the model wrote it, after an `error` event saying why.
    """

    def __init__(self, *args, after_model: Hook, **kwargs):
        super().__init__(*args, **kwargs)
        self._after_model = after_model
        self._said: list[str] = []

    def accept(self, logits: np.ndarray) -> list[Event]:
        return self._rewrite(super().accept(logits))

    def cancel(self) -> list[Event]:
        return self._rewrite(super().cancel())

    def fail(self, message: str) -> list[Event]:
        return self._rewrite(super().fail(message))

    def _rewrite(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if event.reply != self.id or event.kind not in (TEXT, SENTENCE, DONE):
                out.append(event)
            elif event.kind == SENTENCE:
                try:
                    said = call_hook(self._after_model, event.text, "after_model")
                except HookError as exc:
                    out.append(replace(event, kind=ERROR, text=str(exc)))
                    said = event.text
                text = (" " if self._said else "") + said
                self._said.append(said)
                out += [replace(event, kind=TEXT, text=text), replace(event, text=said)]
            elif event.kind == DONE:
                out.append(replace(event, text=" ".join(self._said)))
        return out
