"""The game: a pygame loop in the usual order (`event.get()` → update → draw → `flip()` →
`clock.tick(60)`), with the runtime's `tick()` given whatever time the frame has left before the clock
would sleep it away.

The player walks the yard of the Tipped Lantern, talks to Ser Orlando Marlo (FOCUS priority, his reply
streamed word by word into the dialogue panel) while Marta and Jory chatter at the next table (AMBIENT
priority, speech bubbles); a graph shows each frame's time and the part of it the runtime took.

What the game knows reaches the NPCs as facts (`Runtime.set_fact`): the player's name is a fact every
NPC holds from the start; the letter lying in the yard, once handed to Orlando, sets
`quest.accounts_found` on him (which opens a lorebook entry of his) and `yard.letter_delivered` on
everyone, which unlocks a memory of the moment that each NPC was given at load time, hidden until then.
F5 saves the game with every NPC's state, F9 loads it (savegame.py).

Orlando also acts (his sheet's `[[actions]]`): convinced, he hands the player his father's last letter,
which the game puts in the player's pack and tells him as the fact `letter.given` (his sheet gates the
action on it, so he cannot give it twice); gravely insulted, he ends the talk and will not speak again
for a while. Each reply's emotion shows beside his name.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pygame
from lmpc_runtime import (ACTION, DONE, EMOTION, ERROR, SUMMARY, TEXT, Event, InvalidArgumentError, LmpcError, Runtime,
                          SamplingConfig)
from lmpc_runtime.actions import call_text
from lmpc_runtime.runtime import AMBIENT, FOCUS, NORMAL

from . import world
from .chatter import Chatter
from .savegame import GameSaveError, YardState, load_game, save_game
from .script import SCREENSHOT, Script, ScriptFailed
from .ui import INK, MUTED, DialoguePanel, FrameGraph, Journal, Notices, Text, panel

FPS = 60
FRAME_S = 1.0 / FPS
SAFETY_MS = 2.0  # kept back from the runtime's budget: the clock's sleep and the next event pump need it
MIN_BUDGET_MS = 1.0  # even a frame already late gives the runtime this, so replies keep moving
MAX_STEP_S = 0.05  # a walk step covers the last frame's time, but no more than this after a slow frame
FIRST_WORDS_DEADLINE_MS = 300.0  # asked of the scheduler for Orlando's first token
AMBIENT_SAMPLING = SamplingConfig(max_tokens=40)  # bubbles hold a sentence or two
PLAYER_NAME = "Mira"
LETTER_FACT = "quest.accounts_found"  # gates Orlando's lorebook entry "The hidden accounts, found"
DELIVERED_FACT = "yard.letter_delivered"  # gates the memories below
LETTER_MEMORIES = {
    "orlando": "The traveller brought Orlando a sealed letter from Brightwater Hall: his father's hidden "
               "accounts were found in the crypt beneath the chapel, and they name Chancellor Vance.",
    "regular": "Tonight a traveller handed Ser Orlando a sealed letter with a red seal at his table in the "
               "yard of the Tipped Lantern, and he went pale reading it.",
}
GIVEN_FACT = "letter.given"  # Orlando has handed over his father's letter: closes his give_item action
COLD_SHOULDER_S = 30.0  # after ending a talk, Orlando will not speak again for this long
MOVES = {pygame.K_LEFT: (-1, 0), pygame.K_a: (-1, 0), pygame.K_RIGHT: (1, 0), pygame.K_d: (1, 0),
         pygame.K_UP: (0, -1), pygame.K_w: (0, -1), pygame.K_DOWN: (0, 1), pygame.K_s: (0, 1)}
ENTER_KEYS = (pygame.K_RETURN, pygame.K_KP_ENTER)


@dataclass
class Options:
    orlando: Path
    ambient: list[Path]  # two bundles, or none for a quiet yard
    frames: int | None = None  # stop after this many frames
    script: Script | None = None
    report: Path | None = None
    threads: int = 2
    worker: bool = False
    seed: int = 487
    player_name: str = PLAYER_NAME
    save_dir: Path = Path("saves/yard")


@dataclass
class Exchange:
    """One thing the player said to Orlando and how the answer came, for the report."""

    player: str
    reply_id: int
    asked_at: float
    reply: str = ""
    finish: str = ""
    tokens: int = 0
    text_events: int = 0
    first_words_ms: float | None = None  # Enter → the first whole word on screen (after flip)
    done_ms: float | None = None
    actions: list[str] = field(default_factory=list)  # "give_item item=father_letter"
    emotion: str = ""


@dataclass
class Record:
    frame_ms: list[float] = field(default_factory=list)
    tick_ms: list[float] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Game:
    def __init__(self, options: Options, screen: pygame.Surface):
        self.options = options
        self.screen = screen
        self.text = Text()
        self.background = world.paint_background()
        self.player = world.Actor("You", 96, 486, world.PLAYER_LOOK)
        self.record = Record()
        self.notices = Notices()
        self.graph = FrameGraph(pygame.Rect(10, 10, 250, 84))
        self.journal = Journal(pygame.Rect(world.WIDTH - 290, 10, 280, 250))
        self.script = options.script
        self.held: set[int] = set()
        self.running = True
        self.frame = 0
        self.now = time.perf_counter()
        self.dt = FRAME_S  # the last frame's time, for movement
        self._mute_text_until_keyup: int | None = None
        self._screenshot: str | None = None
        self.letter = "lying"  # then "carried", then "delivered" (savegame.LETTER_STATES)
        self.save_pending = False  # F5 was pressed; the save is written once no NPC is mid-reply
        self.saves = 0
        self.loads = 0
        self.cold_until = 0.0  # Orlando ended the talk: the clock time until which he will not speak

        self._loading("Loading Ser Orlando Marlo…")
        self.rt = Runtime(threads=options.threads, seed=options.seed, worker=options.worker)
        self.orlando = self.rt.load_npc(options.orlando, npc_id="orlando")
        self.orlando_actor = world.Actor(self.orlando.name, 492, 292, world.ORLANDO_LOOK, facing=-1)
        self.dialogue = DialoguePanel(pygame.Rect(10, world.HEIGHT - 212, world.WIDTH - 20, 202),
                                      f"Ser {self.orlando.name}")
        self._portrait = _portrait(self.orlando_actor)
        self.current: Exchange | None = None
        self.chatter: Chatter | None = None
        self.ambient_actors: dict[str, world.Actor] = {}
        if options.ambient:
            npcs = []
            for i, path in enumerate(options.ambient):
                self._loading(f"Loading the regulars of the Tipped Lantern ({i + 1}/{len(options.ambient)})")
                npcs.append(self.rt.load_npc(path, npc_id=f"regular{i + 1}", priority=AMBIENT,
                                             sampling=AMBIENT_SAMPLING))
            self.chatter = Chatter(self.rt, npcs)
            spots = ((712, 346, world.MARTA_LOOK, 1.0), (852, 350, world.JORY_LOOK, -1.0))
            for npc, (x, y, look, facing) in zip(npcs, spots, strict=True):
                self.ambient_actors[npc.id] = world.Actor(npc.name, x, y, look, facing)
            self.chatter.start(time.perf_counter())
        self.npcs = self.rt.npcs  # Orlando first, then the regulars (the runtime forgets them at close)
        self._tell_everyone("player.name", options.player_name)
        # Memories are embedded now, at the loading screen; they stay hidden until the letter is handed over.
        # Through the runtime: in worker mode the NPCs' state belongs to its thread.
        self.rt.remember(self.orlando, LETTER_MEMORIES["orlando"], importance=0.9, requires=DELIVERED_FACT)
        for npc in self.npcs[1:]:
            self.rt.remember(npc, LETTER_MEMORIES["regular"], importance=0.7, requires=DELIVERED_FACT)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> Record:
        clock = pygame.time.Clock()
        frame_start = time.perf_counter()
        try:
            while self.running and (self.options.frames is None or self.frame < self.options.frames):
                self.now = frame_start
                if self.script is not None:
                    self.script.frame(self)
                for event in pygame.event.get():
                    self.handle(event)
                self.update()
                self.draw()
                pygame.display.flip()
                self._after_flip()
                # The frame is on screen; what is left of it goes to the model, not to sleep.
                left_ms = (FRAME_S - (time.perf_counter() - frame_start)) * 1000 - SAFETY_MS
                t0 = time.perf_counter()
                self.rt.tick(budget_ms=max(left_ms, MIN_BUDGET_MS))
                tick_ms = (time.perf_counter() - t0) * 1000
                clock.tick(FPS)
                end = time.perf_counter()
                frame_ms = (end - frame_start) * 1000
                self.dt = min(end - frame_start, MAX_STEP_S)
                frame_start = end
                self.graph.record(frame_ms, tick_ms)
                self.record.frame_ms.append(frame_ms)
                self.record.tick_ms.append(tick_ms)
                self.frame += 1
        except ScriptFailed as exc:
            self.record.problems.append(f"script: {exc}")
        finally:
            self.rt.close()
        if self.options.report is not None:
            self.write_report(self.options.report)
        return self.record

    def handle(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == SCREENSHOT:
            self._screenshot = event.path
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.held.clear()  # the key-ups go to another window
        elif event.type == pygame.KEYUP:
            self.held.discard(event.key)
            if event.key == self._mute_text_until_keyup:
                self._mute_text_until_keyup = None
        elif event.type == pygame.KEYDOWN:
            self.held.add(event.key)
            self._key(event.key)
        elif event.type == pygame.TEXTINPUT and self.dialogue.open and self._mute_text_until_keyup is None:
            self.dialogue.box.insert(event.text)

    def _key(self, key: int) -> None:
        if key == pygame.K_F5:  # saving and loading work everywhere, in a conversation too
            self.save_pending = True
        elif key == pygame.K_F9:
            self._load()
        elif self.dialogue.open:
            if key in ENTER_KEYS:
                self._say(self.dialogue.box.take())
            elif key == pygame.K_BACKSPACE:
                self.dialogue.box.backspace()
            elif key == pygame.K_ESCAPE:
                self._leave_conversation()
        elif key == pygame.K_e and self.player.near(self.orlando_actor):
            if self.now < self.cold_until:
                self.notices.add("Ser Orlando keeps his back to you.", self.now)
            else:
                self._open_conversation(key)
        elif key == pygame.K_e and self.letter == "lying" and self._near_letter():
            self.letter = "carried"
            self.notices.add("You pick up a sealed letter addressed to Ser Orlando Marlo.", self.now)
        elif key == pygame.K_j:
            self.journal.visible = not self.journal.visible
        elif key == pygame.K_ESCAPE:
            self.running = False

    def _open_conversation(self, key: int) -> None:
        self.dialogue.open = True
        # The key that opened the box also sends its letter as TEXTINPUT: that is not part of the line.
        self._mute_text_until_keyup = key
        self.player.face(self.orlando_actor.pos.x)
        self.orlando_actor.face(self.player.pos.x)
        self.rt.set_priority(self.orlando, FOCUS)
        if self.letter == "carried":
            self._deliver_letter()
        if self.current is None and not self.dialogue.reply:
            greeting = self.orlando.greeting
            if greeting:
                self.dialogue.show("", greeting)

    def _deliver_letter(self) -> None:
        """The game tells the NPCs what just happened: a fact for Orlando's lorebook, and one that
        unlocks everyone's memory of the moment."""
        self.letter = "delivered"
        self.rt.set_fact(self.orlando, LETTER_FACT, True)
        self._tell_everyone(DELIVERED_FACT, True)
        self.notices.add("You hand Ser Orlando the letter from Brightwater Hall.", self.now)

    def _tell_everyone(self, fact: str, value) -> None:
        for npc in self.npcs:
            self.rt.set_fact(npc, fact, value)

    def _near_letter(self) -> bool:
        return self.player.pos.distance_to(world.LETTER_SPOT) <= world.TALK_RANGE - 24

    # -- save and load ----------------------------------------------------------------------------

    def _save_when_quiet(self) -> None:
        """An NPC's state can be saved only between replies: F5 waits for the current ones to end (the
        regulars start no new line meanwhile), then writes everything at once."""
        if not self.save_pending or any(npc.current is not None for npc in self.npcs):
            return
        state = YardState((self.player.pos.x, self.player.pos.y), self.letter, list(self.journal.entries),
                          self.chatter.topic if self.chatter is not None else 0)
        try:
            save_game(self.rt, self.options.save_dir, state, self.npcs)
        except InvalidArgumentError:
            return  # the worker thread started a waiting line meanwhile: try again when it ends
        except (LmpcError, OSError) as exc:
            self._problem(f"Could not save: {exc}")
        else:
            self.saves += 1
            self.notices.add("Saved.", self.now)
        self.save_pending = False

    def _load(self) -> None:
        """Stop every reply in progress, then restore the NPCs and the yard from the save."""
        for npc in self.npcs:
            self.rt.cancel(npc)
        # Their `done`/cancelled events belong to the game being replaced (in worker mode some may come
        # later; they name replies this game no longer waits for).
        events = self.rt.poll()
        self.save_pending = False
        if self.current is not None:  # Orlando was cut short: his words so far stay in the panel
            cut = next((e for e in events if e.kind == DONE and e.reply == self.current.reply_id), None)
            self.current.finish = "cancelled"
            if cut is not None:  # what he had said, shown or not yet
                self.current.reply, self.current.tokens = cut.text, cut.tokens
            self.dialogue.finish(self.dialogue.visible_reply)
            self.current = None
        try:
            state = load_game(self.rt, self.options.save_dir, self.npcs)
        except (GameSaveError, LmpcError) as exc:
            self._problem(f"Could not load: {exc}")
            if self.chatter is not None:
                self.chatter.start(self.now, self.chatter.topic)
            return
        self.player.pos.update(state.player)
        self.letter = state.letter
        self.journal.entries[:] = state.journal
        self.dialogue.open = False
        self.rt.set_priority(self.orlando, NORMAL)
        said, answered = self.orlando.history[-1] if self.orlando.history else ("", "")
        self.dialogue.show(said, answered)
        if self.chatter is not None:
            self.chatter.start(self.now, state.topic)
        self.loads += 1
        self.notices.add("Loaded.", self.now)

    def _leave_conversation(self) -> None:
        self.dialogue.open = False
        self.rt.set_priority(self.orlando, NORMAL)

    def _say(self, line: str) -> None:
        if not line:
            return
        try:
            # A new line cuts Orlando short if he is still answering the last one.
            reply_id = self.rt.say(self.orlando, line, deadline_ms=FIRST_WORDS_DEADLINE_MS, interrupt=True)
        except LmpcError as exc:
            self._problem(f"Orlando cannot hear that: {exc}")
            return
        self.current = Exchange(line, reply_id, time.perf_counter())
        self.record.exchanges.append(self.current)
        self.dialogue.ask(line)

    # -- update -----------------------------------------------------------------------------------

    def update(self) -> None:
        now = self.now
        for event in self.rt.poll():
            self._on_runtime_event(event, now)
        if self.chatter is not None and not self.save_pending:
            self.chatter.update(now)
        self._save_when_quiet()
        if not self.dialogue.open:
            direction = pygame.Vector2()
            for key in self.held:
                direction += MOVES.get(key, (0, 0))
            others = [self.orlando_actor, *self.ambient_actors.values()]
            self.player.step(direction, self.dt, others)
        else:
            self.player.walking = False

    def _on_runtime_event(self, event: Event, now: float) -> None:
        if event.kind == SUMMARY:
            self.journal.add(self._name_of(event.npc), event.text)
        elif event.kind == ERROR:
            self._problem(f"{self._name_of(event.npc)}: {event.text}")
        elif event.npc == self.orlando.id:
            self._on_orlando(event, now)
        elif self.chatter is not None and self.chatter.owns(event.npc):
            self.chatter.on_event(event, now)

    def _on_orlando(self, event: Event, now: float) -> None:
        exchange = self.current
        if exchange is None or event.reply != exchange.reply_id:
            return  # a reply the player has already talked over
        if event.kind == TEXT:
            self.dialogue.add(event.text)
            exchange.text_events += 1
        elif event.kind == EMOTION:
            exchange.emotion = event.text
            self.dialogue.speaker = f"Ser {self.orlando.name} ({event.text})"
        elif event.kind == ACTION:
            exchange.actions.append(call_text(event.text, event.args))
            if event.text == "give_item":
                self.rt.set_fact(self.orlando, GIVEN_FACT, True)
                self.notices.add("Ser Orlando gives you his father's last letter.", now)
        elif event.kind == DONE:
            self.dialogue.finish(event.text)
            exchange.reply, exchange.finish, exchange.tokens = event.text, event.finish, event.tokens
            exchange.done_ms = (now - exchange.asked_at) * 1000
            self.current = None
            if "end_conversation" in exchange.actions:
                self._leave_conversation()
                self.cold_until = now + COLD_SHOULDER_S
                self.notices.add("Ser Orlando turns his back on you.", now)

    def _after_flip(self) -> None:
        """Note when the first words of a reply reached the screen."""
        exchange = self.record.exchanges[-1] if self.record.exchanges else None
        if exchange is not None and exchange.first_words_ms is None and self.dialogue.visible_reply \
                and self.dialogue.player_line == exchange.player:
            exchange.first_words_ms = (time.perf_counter() - exchange.asked_at) * 1000

    def _problem(self, message: str) -> None:
        self.record.problems.append(message)
        self.notices.add(message, self.now, problem=True)

    def _name_of(self, npc_id: str) -> str:
        return self.rt.npc(npc_id).name.split()[0]

    # -- draw -------------------------------------------------------------------------------------

    def draw(self) -> None:
        screen, now = self.screen, self.now
        screen.blit(self.background, (0, 0))
        actors = [self.player, self.orlando_actor, *self.ambient_actors.values()]
        heads = {}  # by actor: names may repeat (two NPCs from one bundle)
        for actor in sorted(actors, key=lambda a: a.pos.y):  # nearer the bottom is nearer the viewer
            heads[id(actor)] = actor.draw(screen, now)
        if self.letter == "lying":
            letter = world.draw_letter(screen, world.LETTER_SPOT, now)
            if self._near_letter():
                self._prompt(letter, "E  Pick up the letter")
        talkable = self.player.near(self.orlando_actor)
        self._label(self.orlando_actor, heads[id(self.orlando_actor)],
                    "E  Talk to Ser Orlando" if talkable and not self.dialogue.open else self.orlando.name)
        if self.chatter is not None:
            for speaker in self.chatter.speakers:
                actor = self.ambient_actors[speaker.npc.id]
                self._label(actor, heads[id(actor)], actor.name)
                speaker.bubble.draw(screen, self.text, heads[id(actor)], now)
        self.graph.draw(screen, self.text)
        self.journal.draw(screen, self.text)
        if self.orlando.facts.get(GIVEN_FACT):
            screen.blit(self.text.render("In your pack: Aldous Marlo's last letter", 18, INK), (14, 100))
        if self.dialogue.open:
            self.dialogue.draw(screen, self.text, self._draw_portrait, now)
        else:
            hint = self.text.render("WASD / arrows: walk    E: talk / pick up    J: journal    "
                                    "F5: save    F9: load    Esc: quit", 18, MUTED)
            screen.blit(hint, (14, world.HEIGHT - 24))
        self.notices.draw(screen, self.text, now)
        if self._screenshot is not None:
            path, self._screenshot = Path(self._screenshot), None
            path.parent.mkdir(parents=True, exist_ok=True)
            pygame.image.save(screen, str(path))

    def _label(self, actor: world.Actor, head: pygame.Rect, label: str) -> None:
        if actor.near(self.player, 160) or label != actor.name:
            self._prompt(head, label)

    def _prompt(self, above: pygame.Rect, label: str) -> None:
        rendered = self.text.render(label, 18, INK)
        box = rendered.get_rect(midbottom=(above.centerx, above.top - 4)).inflate(10, 4)
        panel(self.screen, box, (16, 14, 20, 170))
        self.screen.blit(rendered, rendered.get_rect(center=box.center))

    def _draw_portrait(self, surface: pygame.Surface, rect: pygame.Rect) -> None:
        panel(surface, rect, (40, 36, 52, 255))
        surface.blit(self._portrait, self._portrait.get_rect(center=rect.center))

    def _loading(self, message: str) -> None:
        self.screen.fill((18, 16, 22))
        rendered = self.text.render(message, 26, INK)
        self.screen.blit(rendered, rendered.get_rect(center=self.screen.get_rect().center))
        pygame.display.flip()
        pygame.event.pump()

    # -- what a script may look at (see script.GameView) -----------------------------------------

    def actor_position(self, name: str) -> pygame.Vector2:
        if name.lower() == "letter":
            return pygame.Vector2(world.LETTER_SPOT)
        return self._actor(name).pos

    def player_position(self) -> pygame.Vector2:
        return self.player.pos

    def near(self, name: str) -> bool:
        if name.lower() == "letter":
            return self._near_letter()
        return self.player.near(self._actor(name), world.TALK_RANGE - 8)

    def saving(self) -> bool:
        return self.save_pending

    def reply_pending(self) -> bool:
        return self.current is not None

    def reply_words_shown(self) -> bool:
        return self.current is not None and self.current.text_events > 0

    def chatter_lines(self) -> int:
        return len(self.chatter.lines) if self.chatter is not None else 0

    def _actor(self, name: str) -> world.Actor:
        for actor in (self.orlando_actor, *self.ambient_actors.values()):
            if name.lower() in actor.name.lower().split() or name.lower() == actor.name.lower():
                return actor
        raise ScriptFailed(f"nobody called {name!r} is in the yard")

    # -- report -----------------------------------------------------------------------------------

    def write_report(self, path: Path) -> None:
        report = {
            "frames": self.frame,
            "mode": "worker" if self.options.worker else "tick",
            "threads": self.options.threads,
            "frame_ms": [round(ms, 3) for ms in self.record.frame_ms],
            "tick_ms": [round(ms, 3) for ms in self.record.tick_ms],
            "exchanges": [vars(e) | {"asked_at": None} for e in self.record.exchanges],
            "chatter": [{"who": who, "text": text, "finish": finish}
                        for who, text, finish in (self.chatter.lines if self.chatter else [])],
            "journal": [{"who": who, "text": text} for who, text in self.journal.entries],
            "problems": self.record.problems,
            "player": [round(self.player.pos.x, 1), round(self.player.pos.y, 1)],
            "script_done": self.script.done if self.script is not None else None,
            "letter": self.letter,
            "saves": self.saves,
            "loads": self.loads,
            "facts": {npc.id: dict(npc.facts) for npc in self.npcs},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))


def _portrait(actor: world.Actor) -> pygame.Surface:
    """Orlando drawn at twice his size, for the dialogue panel."""
    small = pygame.Surface((40, 52), pygame.SRCALPHA)
    sitter = world.Actor(actor.name, 20, 50, actor.look, facing=1.0)
    sitter.draw(small, now=0.0)
    return pygame.transform.scale2x(small)
