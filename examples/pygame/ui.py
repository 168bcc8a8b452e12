"""What is drawn over the yard: the dialogue panel with its text box, speech bubbles, the journal, the
frame-time graph and short notices. Text surfaces are cached, since rendering text is the costliest
thing a pygame frame does here.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from functools import lru_cache

import numpy as np
import pygame

INK = (238, 230, 212)
MUTED = (168, 160, 150)
GOLD = (232, 190, 90)
PANEL = (24, 22, 30, 224)
EDGE = (120, 98, 62)
FRAME_MS = 1000 / 60
SLOW_MS = 20.0  # the target: frames slower than this are drawn red

_WHITESPACE = re.compile(r"\s")


def complete_words(text: str) -> str:
    """The part of a reply still streaming that may be shown: whole words only (up to the last space),
    so the panel fills word by word and never shows half a word that the next token completes."""
    cut = max((m.start() for m in _WHITESPACE.finditer(text)), default=0)
    return text[:cut].rstrip()


class Text:
    """Fonts and a cache of rendered lines (an LRU, since streamed replies change every few frames)."""

    def __init__(self, capacity: int = 600):
        self.fonts = {size: pygame.font.Font(None, size) for size in (18, 22, 26, 34)}
        self._cache: OrderedDict[tuple, pygame.Surface] = OrderedDict()
        self._capacity = capacity

    def render(self, line: str, size: int = 22, colour: tuple[int, int, int] = INK) -> pygame.Surface:
        key = (line, size, colour)
        surface = self._cache.get(key)
        if surface is None:
            surface = self.fonts[size].render(line, True, colour)
            self._cache[key] = surface
            if len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return surface

    def wrap(self, text: str, width: int, size: int = 22) -> list[str]:
        """Greedy word wrap to `width` pixels; a word wider than a line is split by characters."""
        font = self.fonts[size]
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line = ""
            for word in paragraph.split():
                candidate = f"{line} {word}" if line else word
                if font.size(candidate)[0] <= width:
                    line = candidate
                    continue
                if line:
                    lines.append(line)
                while font.size(word)[0] > width:
                    cut = max(1, next(i for i in range(len(word), 0, -1) if font.size(word[:i])[0] <= width))
                    lines.append(word[:cut])
                    word = word[cut:]
                line = word
            lines.append(line)
        return lines

    def blit_lines(self, surface: pygame.Surface, lines: list[str], x: int, y: int, size: int = 22,
                   colour: tuple[int, int, int] = INK, spacing: int = 2) -> int:
        """Draw lines top-down from (x, y); returns the y below the last one."""
        for line in lines:
            rendered = self.render(line, size, colour)
            surface.blit(rendered, (x, y))
            y += rendered.get_height() + spacing
        return y


def panel(surface: pygame.Surface, rect: pygame.Rect, fill: tuple[int, int, int, int] = PANEL) -> None:
    """A translucent dark panel with a brass edge."""
    surface.blit(_panel_body(rect.size, fill), rect)


@lru_cache(maxsize=32)
def _panel_body(size: tuple[int, int], fill: tuple[int, int, int, int]) -> pygame.Surface:
    body = pygame.Surface(size, pygame.SRCALPHA)
    pygame.draw.rect(body, fill, body.get_rect(), border_radius=10)
    pygame.draw.rect(body, EDGE, body.get_rect(), 2, border_radius=10)
    return body


class TextBox:
    """The player's line being typed. Characters arrive as TEXTINPUT events (so any keyboard layout and
    input method works); Backspace deletes; the caller takes the line on Enter."""

    MAX_CHARS = 200

    def __init__(self) -> None:
        self.text = ""

    def insert(self, text: str) -> None:
        self.text = (self.text + text)[: self.MAX_CHARS]

    def backspace(self) -> None:
        self.text = self.text[:-1]

    def take(self) -> str:
        line, self.text = self.text.strip(), ""
        return line


class DialoguePanel:
    """The conversation with the NPC the player talks to: their last line, the reply as it streams in
    word by word, and the text box for the next line."""

    def __init__(self, rect: pygame.Rect, speaker: str):
        self.rect = rect
        self.speaker = speaker
        self.box = TextBox()
        self.open = False
        self.player_line = ""
        self.reply = ""
        self.waiting = False  # a line was said and no reply has finished yet
        self.finished = True

    def ask(self, line: str) -> None:
        self.player_line, self.reply, self.waiting, self.finished = line, "", True, False

    def add(self, piece: str) -> None:
        self.reply += piece

    def finish(self, text: str) -> None:
        """The reply is complete; `text` is its final form (the runtime may trim an unfinished sentence)."""
        self.reply, self.waiting, self.finished = text, False, True

    def show(self, player_line: str, reply: str) -> None:
        """Show a past exchange (after loading a save)."""
        self.player_line, self.reply, self.waiting, self.finished = player_line, reply, False, True

    @property
    def visible_reply(self) -> str:
        return self.reply if self.finished else complete_words(self.reply)

    def draw(self, surface: pygame.Surface, text: Text, portrait, now: float) -> None:
        panel(surface, self.rect)
        x, y, width = self.rect.x + 112, self.rect.y + 12, self.rect.width - 128
        portrait(surface, pygame.Rect(self.rect.x + 14, self.rect.y + 16, 84, 96))
        surface.blit(text.render(self.speaker, 26, GOLD), (x, y))
        y += 26
        if self.player_line:
            said = text.wrap(f"You: {self.player_line}", width, 18)[-2:]
            y = text.blit_lines(surface, said, x, y, 18, MUTED)
            y += 4
        reply = self.visible_reply
        room = (self.rect.bottom - 46 - y) // (text.fonts[22].get_height() + 2)  # 5 lines: 80 tokens fit
        if reply:
            # A reply longer still keeps its latest lines in view.
            text.blit_lines(surface, text.wrap(reply, width, 22)[-max(room, 1):], x, y, 22, INK)
        elif self.waiting:
            dots = "." * (1 + int(now * 3) % 3)
            surface.blit(text.render(f"{self.speaker.split()[-1]} considers{dots}", 22, MUTED), (x, y))
        box = pygame.Rect(x - 4, self.rect.bottom - 38, width + 4, 28)
        pygame.draw.rect(surface, (12, 12, 18), box, border_radius=6)
        pygame.draw.rect(surface, EDGE, box, 1, border_radius=6)
        caret = "|" if int(now * 2) % 2 == 0 else " "
        typed = text.render(f"> {self.box.text}{caret}", 22, INK)
        area = pygame.Rect(max(0, typed.get_width() - box.width + 12), 0, box.width - 12, typed.get_height())
        surface.blit(typed, (box.x + 6, box.y + 6), area)
        hint = text.render("Enter: say    Esc: leave", 18, MUTED)
        surface.blit(hint, (self.rect.right - hint.get_width() - 14, self.rect.y + 14))


class SpeechBubble:
    """A background NPC's line over their head: fills word by word, fades a while after it ends."""

    WIDTH = 230
    MAX_LINES = 4
    LINGER_S = 7.0
    FADE_S = 1.5

    def __init__(self, side: int = 1):
        self.side = side  # the way the bubble grows from the head, away from the listener: -1 left, 1 right
        self.text = ""
        self.pieces = 0  # streamed pieces of the current line (a written line comes whole: 0)
        self.finished = True
        self.ended_at = -1e9

    def start(self, text: str = "", finished: bool = False, now: float = 0.0) -> None:
        self.text, self.finished, self.ended_at = text, finished, now if finished else 1e9
        self.pieces = 0

    def add(self, piece: str) -> None:
        self.text += piece
        self.pieces += 1

    def finish(self, text: str, now: float) -> None:
        self.text, self.finished, self.ended_at = text, True, now

    def fade_out(self, now: float) -> None:
        """Start fading now (someone else has started speaking)."""
        if self.finished:
            self.ended_at = min(self.ended_at, now - self.LINGER_S)

    def alpha(self, now: float) -> int:
        left = self.ended_at + self.LINGER_S + self.FADE_S - now
        return int(255 * min(1.0, max(0.0, left / self.FADE_S)))

    def draw(self, surface: pygame.Surface, text: Text, head: pygame.Rect, now: float) -> None:
        shown = self.text if self.finished else complete_words(self.text)
        alpha = self.alpha(now)
        if not shown or alpha == 0:
            return
        lines = text.wrap(shown, self.WIDTH - 20, 18)
        if len(lines) > self.MAX_LINES:
            lines = ["…"] + lines[-(self.MAX_LINES - 1):]
        height = 12 + 17 * len(lines)
        width = min(self.WIDTH, 20 + max(text.fonts[18].size(line)[0] for line in lines))
        box = pygame.Rect(0, 0, width, height)
        bottom = head.top - 34  # above the name label
        if self.side < 0:
            box.bottomright = (head.centerx + 24, bottom)
        else:
            box.bottomleft = (head.centerx - 24, bottom)
        box.clamp_ip(surface.get_rect().inflate(-8, -8))
        bubble = pygame.Surface((box.width, box.height + 12), pygame.SRCALPHA)
        pygame.draw.rect(bubble, (246, 240, 226), (0, 0, box.width, box.height), border_radius=9)
        tail_x = min(max(head.centerx - box.x, 14), box.width - 14)
        tail = [(tail_x - 7, box.height - 1), (tail_x + 7, box.height - 1), (tail_x, box.height + 11)]
        pygame.draw.polygon(bubble, (246, 240, 226), tail)
        text.blit_lines(bubble, lines, 10, 7, 18, (40, 34, 30), spacing=3)
        bubble.set_alpha(alpha)
        surface.blit(bubble, box.topleft)


class Journal:
    """What the NPCs have come to remember of their conversations, fed by `summary` events."""

    def __init__(self, rect: pygame.Rect):
        self.rect = rect
        self.entries: list[tuple[str, str]] = []  # (who remembers, what), oldest first
        self.visible = True

    def add(self, who: str, text: str) -> None:
        self.entries.append((who, text))

    def draw(self, surface: pygame.Surface, text: Text) -> None:
        if not self.visible:
            return
        lines: list[tuple[str, tuple[int, int, int], int]] = []
        for who, what in reversed(self.entries):  # newest first
            lines.append((f"{who} remembers:", GOLD, 18))
            lines += [(line, INK, 18) for line in text.wrap(what, self.rect.width - 24, 18)]
        if not lines:
            lines = [(line, MUTED, 18) for line in
                     text.wrap("What the people here come to remember of your talks will be written here.",
                               self.rect.width - 24, 18)]
        room = (self.rect.height - 40) // 17
        shown = lines[:room]
        height = 40 + 17 * len(shown)
        panel(surface, pygame.Rect(self.rect.x, self.rect.y, self.rect.width, height), (24, 22, 30, 200))
        surface.blit(text.render("Journal", 22, GOLD), (self.rect.x + 12, self.rect.y + 9))
        hint = text.render("J: hide", 18, MUTED)
        surface.blit(hint, (self.rect.right - hint.get_width() - 12, self.rect.y + 12))
        y = self.rect.y + 32
        for line, colour, size in shown:
            surface.blit(text.render(line, size, colour), (self.rect.x + 12, y))
            y += 17


class FrameGraph:
    """The last few seconds of frame times as bars (the part spent in the runtime's `tick` in violet),
    with the 60 FPS and 20 ms lines, the frame rate and the p99 of the window."""

    def __init__(self, rect: pygame.Rect, frames: int = 180):
        self.rect = rect
        self.frame_ms: deque[float] = deque(maxlen=frames)
        self.tick_ms: deque[float] = deque(maxlen=frames)

    def record(self, frame_ms: float, tick_ms: float) -> None:
        self.frame_ms.append(frame_ms)
        self.tick_ms.append(tick_ms)

    def draw(self, surface: pygame.Surface, text: Text) -> None:
        panel(surface, self.rect, (16, 16, 22, 200))
        plot = self.rect.inflate(-16, -34).move(0, 12)
        scale = plot.height / 40.0  # the plot spans 0–40 ms
        for ms, colour in ((FRAME_MS, (90, 140, 90)), (SLOW_MS, (170, 90, 70))):
            y = plot.bottom - round(ms * scale)
            pygame.draw.line(surface, colour, (plot.x, y), (plot.right, y))
        bar = plot.width / self.frame_ms.maxlen
        for i, (frame, tick) in enumerate(zip(self.frame_ms, self.tick_ms, strict=True)):
            x = plot.x + round(i * bar)
            h = min(plot.height, round(frame * scale))
            colour = ((110, 190, 120) if frame <= FRAME_MS + 1.5
                      else (226, 186, 80) if frame <= SLOW_MS else (226, 90, 70))
            pygame.draw.line(surface, colour, (x, plot.bottom), (x, plot.bottom - h))
            if tick > 0.05:
                top = plot.bottom - min(h, round(tick * scale))
                pygame.draw.line(surface, (160, 120, 230), (x, plot.bottom), (x, top))
        if self.frame_ms:
            recent = np.fromiter(self.frame_ms, float)
            fps = 1000.0 / recent[-60:].mean()
            label = f"{fps:4.0f} FPS   {recent[-1]:4.1f} ms   p99 {np.percentile(recent, 99):4.1f} ms"
            surface.blit(text.render(label, 18, INK), (self.rect.x + 8, self.rect.y + 6))


class Notices:
    """Short messages at the top of the screen ("Saved.", or what went wrong), each for a few seconds."""

    SHOW_S = 3.0
    CENTRE_X = 465

    def __init__(self) -> None:
        self.items: deque[tuple[str, float, bool]] = deque(maxlen=3)

    def add(self, message: str, now: float, problem: bool = False) -> None:
        self.items.append((message, now, problem))

    def draw(self, surface: pygame.Surface, text: Text, now: float) -> None:
        y = 14
        for message, at, problem in list(self.items):
            if now - at > self.SHOW_S:
                continue
            rendered = text.render(message, 18, (246, 150, 120) if problem else INK)
            # Centred in the gap between the frame graph (left) and the journal (right).
            box = rendered.get_rect(midtop=(self.CENTRE_X, y)).inflate(20, 10)
            panel(surface, box, (24, 22, 30, 230))
            surface.blit(rendered, rendered.get_rect(center=box.center))
            y += box.height + 6
