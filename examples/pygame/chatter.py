"""Two background NPCs talking to each other at AMBIENT priority, so the model works on them only when
the NPC the player talks to has what it needs.

One of them opens a topic with a written line; from then on each answers what the other just said,
after a pause long enough to read the bubble. After a few lines a new topic starts, since two small
models left to themselves drift and repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmpc_runtime import DONE, STARTED, TEXT, Event, Npc, Runtime

from .ui import SpeechBubble

PAUSE_S = 1.2  # between one line ending and the answer being asked for
LINES_PER_TOPIC = 6
MAX_HEARD_CHARS = 300  # what one hears of a long line

# (who opens: 0 or 1, the opening line). Written for Marta Greyhand (0) and Jory Tallow (1) at the
# Tipped Lantern; they read as ordinary talk for any two townsfolk.
TOPICS = (
    (1, "Another child at your door this morning, Marta. Letters again, or only a cough?"),
    (0, "You've a face like a wet week, Jory. What did the tithe-men take this time?"),
    (1, "That knight is back at his table. He drinks cider in the Ashward as if he means it."),
    (0, "They say the old king coughed through the whole feast at the Sunspire. Will he see the spring?"),
    (1, "Rain's coming up off the river. My mare knows it before the priests do."),
)


@dataclass
class Speaker:
    npc: Npc
    bubble: SpeechBubble
    reply: int | None = None  # the reply of theirs being streamed into their bubble


class Chatter:
    def __init__(self, rt: Runtime, npcs: list[Npc]):
        if len(npcs) != 2:
            raise ValueError("chatter needs exactly two NPCs")
        self.rt = rt
        # The first stands on the left of the table, the second on the right: bubbles grow outwards.
        self.speakers = [Speaker(npcs[0], SpeechBubble(side=-1)), Speaker(npcs[1], SpeechBubble(side=1))]
        self.lines: list[tuple[str, str, str]] = []  # (who, what, finish), every line finished so far
        self.topic = 0  # the next topic to open (kept in save games)
        self._in_topic = 0
        self._next: tuple[float, int, str] | None = None  # (when, who answers, what they heard)

    def start(self, now: float, topic: int | None = None) -> None:
        """Open a topic now (`topic`, or the next one): at the start, and again after a load."""
        if topic is not None:
            self.topic = topic
        for speaker in self.speakers:
            speaker.reply = None
            speaker.bubble.start("", finished=True, now=now)
        self._open_topic(now)

    def owns(self, npc_id: str) -> bool:
        return any(s.npc.id == npc_id for s in self.speakers)

    def update(self, now: float) -> None:
        if self._next is not None and now >= self._next[0]:
            _, who, heard = self._next
            self._next = None
            self.speakers[who].reply = self.rt.say(self.speakers[who].npc, heard)

    def on_event(self, event: Event, now: float) -> None:
        who = next(i for i, s in enumerate(self.speakers) if s.npc.id == event.npc)
        speaker = self.speakers[who]
        if event.reply != speaker.reply:
            return
        if event.kind == STARTED:
            speaker.bubble.start()
            self.speakers[1 - who].bubble.fade_out(now)
        elif event.kind == TEXT:
            speaker.bubble.add(event.text)
        elif event.kind == DONE:
            speaker.reply = None
            speaker.bubble.finish(event.text, now)
            self.lines.append((speaker.npc.name, event.text, event.finish))
            self._in_topic += 1
            if event.text and self._in_topic < LINES_PER_TOPIC:
                self._next = (now + PAUSE_S, 1 - who, event.text[:MAX_HEARD_CHARS])
            else:
                self._open_topic(now + PAUSE_S)

    def _open_topic(self, now: float) -> None:
        opener, line = TOPICS[self.topic % len(TOPICS)]
        self.topic += 1
        self._in_topic = 0
        self.speakers[opener].bubble.start(line, finished=True, now=now)
        self.speakers[1 - opener].bubble.fade_out(now)
        self._next = (now, 1 - opener, line)
