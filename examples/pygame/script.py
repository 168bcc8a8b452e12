"""Scripted input for headless runs, tests and benchmarks: a text file of commands, turned frame by frame
into the same pygame events a keyboard makes and posted into the event queue, so the game reads them
with `pygame.event.get()` like a player's keys.

    # walk to Orlando and ask him something
    walk_to Orlando 600        # steer towards him, at most 600 frames
    press e                    # KEYDOWN, the TEXTINPUT a real key makes, KEYUP next frame
    type Who are you, sir knight?
    press enter
    wait_reply 3600            # until his reply is complete, at most 3600 frames
    press f5
    screenshot build/yard.png  # after this frame is drawn
    quit

Other commands: `wait FRAMES`, `hold KEY FRAMES` (e.g. `hold right 30`), `wait_words [FRAMES]` (until
Orlando's reply in progress shows its first words), `wait_chatter LINES [FRAMES]`
(until the background NPCs have finished that many lines), `wait_saved [FRAMES]` (until the save asked
for with F5 is written), `walk_to letter` (the letter lying in the yard). Everything after `type ` is
typed as is; elsewhere `#` starts a comment. A wait that runs out fails the script (`ScriptFailed`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pygame

SCREENSHOT = pygame.event.custom_type()  # event with `path`: save the screen once this frame is drawn
TYPED_PER_FRAME = 4  # characters a scripted typist enters per frame
DEFAULT_WAIT = 3600  # frames a wait command allows when the script gives no limit
KEY_ALIASES = {"enter": "return", "esc": "escape"}
ARROWS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


class ScriptError(ValueError):
    """The script file cannot be read or has a bad line."""


class ScriptFailed(RuntimeError):
    """A command's condition was not met in time (e.g. the reply never came)."""


class GameView(Protocol):
    """What a script may look at: the game exposes these for `walk_to` and the waits."""

    def actor_position(self, name: str) -> pygame.Vector2: ...
    def player_position(self) -> pygame.Vector2: ...
    def near(self, name: str) -> bool: ...
    def reply_pending(self) -> bool: ...
    def reply_words_shown(self) -> bool: ...
    def chatter_lines(self) -> int: ...
    def saving(self) -> bool: ...


@dataclass(frozen=True)
class Command:
    line: int
    verb: str
    args: tuple


def parse(text: str, source: str = "<script>") -> list[Command]:
    commands = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("type "):
            commands.append(Command(number, "type", (stripped[5:],)))
            continue
        words = shlex.split(stripped, comments=True)
        if not words:
            continue
        try:
            commands.append(_command(number, words[0], words[1:]))
        except (ValueError, TypeError) as exc:
            raise ScriptError(f"{source}:{number}: {exc}") from None
    return commands


def load(path: str | Path) -> list[Command]:
    try:
        return parse(Path(path).read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ScriptError(f"cannot read the script: {exc}") from None


def _command(number: int, verb: str, args: list[str]) -> Command:
    def frames(value: str) -> int:
        n = int(value)
        if n < 0:
            raise ValueError(f"{verb}: a frame count cannot be negative")
        return n

    if verb == "wait" and len(args) == 1:
        return Command(number, verb, (frames(args[0]),))
    if verb == "hold" and len(args) == 2:
        return Command(number, verb, (key_code(args[0]), frames(args[1])))
    if verb == "press" and len(args) == 1:
        return Command(number, verb, (key_code(args[0]), _typed_char(args[0])))
    if verb == "walk_to" and len(args) in (1, 2):
        return Command(number, verb, (args[0], frames(args[1]) if len(args) == 2 else DEFAULT_WAIT))
    if verb in ("wait_reply", "wait_words") and len(args) <= 1:
        return Command(number, verb, (frames(args[0]) if args else DEFAULT_WAIT,))
    if verb == "wait_chatter" and len(args) in (1, 2):
        return Command(number, verb, (frames(args[0]), frames(args[1]) if len(args) == 2 else DEFAULT_WAIT))
    if verb == "wait_saved" and len(args) <= 1:
        return Command(number, verb, (frames(args[0]) if args else DEFAULT_WAIT,))
    if verb == "screenshot" and len(args) == 1:
        return Command(number, verb, (args[0],))
    if verb == "quit" and not args:
        return Command(number, verb, ())
    raise ValueError(f"cannot read {' '.join([verb, *args])!r} (the commands: examples/pygame/script.py)")


def key_code(name: str) -> int:
    name = KEY_ALIASES.get(name.lower(), name.lower())
    try:
        return pygame.key.key_code(name)
    except ValueError:
        raise ValueError(f"unknown key {name!r}") from None


def _typed_char(name: str) -> str:
    """The text a real key press also produces (SDL sends TEXTINPUT after KEYDOWN for printable keys)."""
    return name if len(name) == 1 and name.isprintable() else ""


class Script:
    """Plays commands one after another; `frame(game)` posts this frame's events. `done` once all ran."""

    def __init__(self, commands: list[Command]):
        self._steps: Iterator[None] = self._run(commands)
        self._game: GameView | None = None
        self.done = False

    def frame(self, game: GameView) -> None:
        self._game = game
        if not self.done:
            try:
                next(self._steps)
            except StopIteration:
                self.done = True

    def _run(self, commands: list[Command]) -> Iterator[None]:
        """A generator: each `yield` ends the script's part of one frame."""
        for command in commands:
            yield from getattr(self, f"_do_{command.verb}")(command, *command.args)

    # -- commands ---------------------------------------------------------------------------------

    def _do_wait(self, command: Command, count: int) -> Iterator[None]:
        for _ in range(count):
            yield

    def _do_hold(self, command: Command, key: int, count: int) -> Iterator[None]:
        _key(pygame.KEYDOWN, key)
        for _ in range(count):
            yield
        _key(pygame.KEYUP, key)

    def _do_press(self, command: Command, key: int, char: str) -> Iterator[None]:
        _key(pygame.KEYDOWN, key, char)
        if char:
            pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=char))
        yield
        _key(pygame.KEYUP, key, char)

    def _do_type(self, command: Command, text: str) -> Iterator[None]:
        for start in range(0, len(text), TYPED_PER_FRAME):
            pygame.event.post(pygame.event.Event(pygame.TEXTINPUT, text=text[start:start + TYPED_PER_FRAME]))
            yield

    def _do_walk_to(self, command: Command, name: str, limit: int) -> Iterator[None]:
        held: set[int] = set()
        for _ in range(limit):
            if self._game.near(name):
                break
            delta = self._game.actor_position(name) - self._game.player_position()
            wanted = {key_code(arrow) for arrow, (dx, dy) in ARROWS.items()
                      if (dx and dx * delta.x > 4) or (dy and dy * delta.y > 4)}
            for key in held - wanted:
                _key(pygame.KEYUP, key)
            for key in wanted - held:
                _key(pygame.KEYDOWN, key)
            held = wanted
            yield
        else:
            raise ScriptFailed(f"line {command.line}: did not reach {name} within {limit} frames")
        for key in held:
            _key(pygame.KEYUP, key)

    def _do_wait_reply(self, command: Command, limit: int) -> Iterator[None]:
        yield from self._wait_for(command, limit, lambda: not self._game.reply_pending(), "the reply")

    def _do_wait_words(self, command: Command, limit: int) -> Iterator[None]:
        yield from self._wait_for(command, limit, self._game.reply_words_shown, "the first words of the reply")

    def _do_wait_chatter(self, command: Command, lines: int, limit: int) -> Iterator[None]:
        yield from self._wait_for(command, limit, lambda: self._game.chatter_lines() >= lines,
                                  f"{lines} lines of chatter")

    def _wait_for(self, command: Command, limit: int, ready, what: str) -> Iterator[None]:
        for _ in range(limit):
            if ready():
                return
            yield
        raise ScriptFailed(f"line {command.line}: {what} did not come within {limit} frames")

    def _do_wait_saved(self, command: Command, limit: int) -> Iterator[None]:
        yield  # the F5 pressed just before is read in the next frame
        yield from self._wait_for(command, limit, lambda: not self._game.saving(), "the save")

    def _do_screenshot(self, command: Command, path: str) -> Iterator[None]:
        pygame.event.post(pygame.event.Event(SCREENSHOT, path=path))
        yield

    def _do_quit(self, command: Command) -> Iterator[None]:
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        self.done = True
        yield


def _key(kind: int, key: int, char: str = "") -> None:
    pygame.event.post(pygame.event.Event(kind, key=key, mod=0, unicode=char, scancode=0))
