"""Cleaning synthetic dialogue before training: what is dropped, and why.

Line checks (each names the reason a line fails):
- `slop`: a phrase from the shipped blacklist (`data/slop_phrases.txt`) or the sheet's `avoid_phrases`;
- `refusal`: an assistant's refusal, disclaimer or moral lecture;
- `assistant_speak`: the "I → name" test. Put the character's name in place of "I" and "me": a line that
  now reads like an assistant describing itself ("Orlando is here to help you", "Orlando's purpose is
  to answer") is out of character. Also caught: the character spoken of in the third person, and
  narration ("Orlando smiles").
- `unknown_name`: a capitalised name found nowhere in the sheet: 135M generators invent people and places;
- `malformed`: empty, too short or long, cut off mid-sentence, stage directions, role markers;
- `repetition`: a phrase said three times, or a sentence twice.
A generated or drilled (`knowledge.py`) dialogue is cut before its first failing exchange (and dropped if
none is left). The writer's own dialogues are never dropped; their failures are reported as warnings.

Corpus checks, on generated dialogues only: `near_duplicate` (character replies sharing most of their
word trigrams with a reply already kept; the writer's are kept first) and `frequent_opening` (the same
first three words in more than a few percent of replies: downsampled).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources

from lmpc_runtime.actions import split_tail
from lmpc_runtime.sheet import CharacterSheet

from .dialogues import Dialogue

REASONS = {
    "slop": "a blacklisted phrase (shipped list or the sheet's avoid_phrases)",
    "refusal": "an assistant's refusal, disclaimer or moral lecture",
    "assistant_speak": "fails the I -> name test, or speaks of the character in the third person",
    "unknown_name": "a name the sheet never uses (invented)",
    "malformed": "empty, too short or long, cut off, stage directions or role markers",
    "repetition": "a phrase or sentence repeated",
    "near_duplicate": "nearly the same as a reply already kept",
    "frequent_opening": "an opening too many replies share (downsampled)",
}
MAX_WORDS = 110
NEAR_DUPLICATE = 0.6  # Jaccard similarity of word trigram sets
OPENING_SHARE = 0.05  # most replies one opening may start, beyond a floor of OPENING_FLOOR
OPENING_FLOOR = 3
EXAMPLES_PER_REASON = 3

_WORDS = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SENTENCES = re.compile(r"[^.!?…]+[.!?…]+")
_CAPITALISED = re.compile(r"\b[A-Z][a-zA-Z'-]+")
_SENTENCE_START = re.compile(r"(^|[.!?…:;]\s+|[\"“(]\s*|\n\s*)$")
_TERMINAL = re.compile(r"[.!?…\"'”’)]\s*$")
_ROLE_MARKER = re.compile(r"<\||(^|\n)\s*(user|assistant|system|player|npc|speaker)\s*:", re.IGNORECASE)
_STAGE = re.compile(r"\*[^*]+\*|\((?:laughs|smiles|sighs|pauses?|nods|pausing)[^)]*\)", re.IGNORECASE)

REFUSALS = [re.compile(p, re.IGNORECASE) for p in (
    # "I cannot help feeling ..." is a person speaking, not a refusal.
    r"\bI (?:can ?not|can't|am unable to|'m unable to|am not able to|won't) "
    r"(?:help(?! (?:but|feeling|thinking|wondering|noticing|myself|it)\b)|assist|provide|answer|comply|engage|"
    r"fulfil|fulfill|generate|write)",
    r"\b(?:sorry|apologi[sz]e),? but I (?:can|cannot|can't|won't|am not)",
    r"\bit(?:'s| is) (?:important|essential|crucial|vital) to "
    r"(?:remember|note|recogni[sz]e|understand|respect)",
    r"\b(?:inappropriate|offensive|harmful|explicit) (?:content|language|request|material)",
    r"\bplease (?:note|remember|be aware|keep in mind)",
    r"\bI (?:must|have to|need to) (?:remind|emphasi[sz]e|point out)",
    r"\bconsult (?:a|an|your) (?:professional|doctor|expert|lawyer)",
    r"\b(?:content|ethical|community) (?:policy|policies|guidelines)",
    r"\blet(?:'s| us) keep (?:this|our conversation|things) (?:respectful|positive|appropriate|civil)",
)]
# Predicates that, with the character's name as subject, describe an assistant rather than a person.
_ASSISTANT_PREDICATES = (
    r"(?:is|am|are) (?:here|happy|glad|delighted|always) (?:to )?(?:help|assist|serve)",
    r"(?:can|could|will|would) (?:help|assist) you",
    r"(?:is|am) (?:an? |just an? )?(?:ai|assistant|language model|chatbot|program|virtual)",
    r"'s (?:purpose|role|job|function|goal) is to (?:help|assist|serve|answer|provide)",
    r"(?:does not|doesn't|do not|don't|cannot|can't) (?:have|experience) "
    r"(?:personal|feelings|emotions|opinions|a body)",
    r"(?:was|is|am) (?:designed|programmed|trained|created|built) to",
    r"(?:hopes?|hope) (?:this|that) (?:helps|answers)",
)
_NARRATION_VERBS = ("is", "was", "has", "had", "would", "will", "believes", "thinks", "feels", "says",
                    "said", "replies", "replied", "answers", "answered", "smiles", "smiled", "nods", "nodded",
                    "laughs", "sighs", "looks", "leans", "pauses", "gazes", "turns", "raises", "speaks")
_NARRATED_FEATURES = ("gaze", "eyes", "voice", "face", "smile", "brow", "lips", "hand", "hands", "expression")
# Capitalised words that are not names.
_COMMON_CAPITALISED = frozenset("""
i i'm i've i'll i'd ser sir lady lord my mister master mistress goodman goodwife madam miss king queen prince
princess highness majesty grace lordship ladyship excellency monday tuesday wednesday thursday friday saturday
sunday ah oh aye nay yes no well alas god gods
""".split())


def default_slop() -> tuple[str, ...]:
    text = resources.files("lmpc_export").joinpath("data/slop_phrases.txt").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line.lower() for line in lines if line and not line.startswith("#"))


def _phrase_pattern(phrase: str) -> re.Pattern:
    # Whole words at each end where the phrase starts or ends with a word character.
    start = r"\b" if phrase[:1].isalnum() else ""
    end = r"\b" if phrase[-1:].isalnum() else ""
    return re.compile(start + re.escape(phrase) + end, re.IGNORECASE)


def trigrams(text: str) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORDS.findall(text)]
    return {tuple(words[i:i + 3]) for i in range(max(len(words) - 2, 1))} if words else set()


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def opening(text: str) -> str:
    return " ".join(w.lower() for w in _WORDS.findall(text)[:3])


@dataclass
class HygieneReport:
    considered: Counter = field(default_factory=Counter)  # dialogues per source
    kept: Counter = field(default_factory=Counter)
    truncated: int = 0  # generated dialogues kept only up to their first failing exchange
    dropped: Counter = field(default_factory=Counter)  # reason -> dialogues dropped for it
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few offending lines
    warnings: list[str] = field(default_factory=list)  # the writer's lines that fail a check

    def note(self, reason: str, line: str) -> None:
        found = self.examples.setdefault(reason, [])
        if len(found) < EXAMPLES_PER_REASON:
            found.append(line)

    def to_dict(self) -> dict:
        return {"considered": dict(self.considered), "kept": dict(self.kept), "truncated": self.truncated,
                "dropped": dict(self.dropped), "examples": self.examples, "warnings": self.warnings}


class Hygiene:
    def __init__(self, sheet: CharacterSheet, slop: tuple[str, ...] | None = None, seed: int = 0):
        self.sheet = sheet
        self.seed = seed
        phrases = (default_slop() if slop is None else slop) + tuple(p.lower() for p in sheet.avoid_phrases)
        self._slop = [(p, _phrase_pattern(p)) for p in dict.fromkeys(phrases)]
        names = [re.escape(n) for n in (sheet.name, sheet.name.split()[0])]
        subject = rf"\b(?:ser |sir |lord )?(?:{'|'.join(names)})"
        self._assistant = [re.compile(subject + r"\s*" + p, re.IGNORECASE) for p in _ASSISTANT_PREDICATES]
        self._narration = re.compile(subject + r"\b(?: (?:" + "|".join(_NARRATION_VERBS) + r")|'s (?:"
                                     + "|".join(_NARRATED_FEATURES) + r"))\b", re.IGNORECASE)
        self._vocabulary = {w.lower() for w in _WORDS.findall(_sheet_text(sheet))} | _COMMON_CAPITALISED

    # Line checks -----------------------------------------------------------------------------------

    def reply_problems(self, text: str, player: str = "") -> list[str]:
        """Reasons a character's reply to `player` is unfit for training (empty list: fit). A name the
        player said first is not the character's invention. A typed tail (actions.py) is not speech."""
        text = split_tail(text)[0]
        problems = self._form_problems(text, min_words=3, said=player)
        lowered = text.lower()
        if any(pattern.search(lowered) for _, pattern in self._slop):
            problems.append("slop")
        if any(p.search(text) for p in REFUSALS):
            problems.append("refusal")
        if self.assistant_speak(text):
            problems.append("assistant_speak")
        return problems

    def player_problems(self, text: str) -> list[str]:
        """Reasons a generated player line is unfit (narration instead of speech, invented names…)."""
        problems = self._form_problems(text, min_words=2)
        if self._narration.search(text):
            problems.append("assistant_speak")
        return problems

    def _form_problems(self, text: str, min_words: int, said: str = "") -> list[str]:
        problems = []
        words = _WORDS.findall(text)
        if (len(words) < min_words or len(words) > MAX_WORDS or not _TERMINAL.search(text)
                or _ROLE_MARKER.search(text) or _STAGE.search(text)):
            problems.append("malformed")
        if set(self.unknown_names(text)) - set(_WORDS.findall(said)):
            problems.append("unknown_name")
        if repeats(text):
            problems.append("repetition")
        return problems

    def assistant_speak(self, text: str) -> bool:
        """The "I → name" test, and third-person talk about the character."""
        first = self.sheet.name.split()[0]
        swapped = re.sub(r"\bI(?:'m| am)\b", f"{first} is", text)
        swapped = re.sub(r"\b(?:I|me)\b", first, swapped)
        swapped = re.sub(r"\bmy\b", f"{first}'s", swapped, flags=re.IGNORECASE)
        return any(p.search(swapped) for p in self._assistant) or bool(self._narration.search(text))

    def unknown_names(self, text: str) -> list[str]:
        """Capitalised words, other than at the start of a sentence, that the sheet never uses."""
        found = []
        for match in _CAPITALISED.finditer(text):
            word = match.group().rstrip("'-").removesuffix("'s")
            if word.lower() in self._vocabulary:
                continue
            if _SENTENCE_START.search(text[: match.start()]):
                continue
            found.append(word)
        return found

    # Whole set --------------------------------------------------------------------------------------

    def clean(self, dialogues: list[Dialogue]) -> tuple[list[Dialogue], HygieneReport]:
        """Keep what passes; the writer's dialogues always, generated ones only as far as they are clean."""
        report = HygieneReport()
        passed = []
        for dialogue in dialogues:
            report.considered[dialogue.source] += 1
            if dialogue.source in ("sheet", "writer"):
                for player, npc in dialogue.turns:
                    problems = self.reply_problems(npc, player)
                    if problems:
                        report.warnings.append(f"{', '.join(problems)}: {npc}")
                passed.append(dialogue)
                continue
            kept, reason, line = self._clean_turns(dialogue)
            if kept is None:
                report.dropped[reason] += 1
                report.note(reason, line)
                continue
            if len(kept.turns) < len(dialogue.turns):
                report.truncated += 1
            passed.append(kept)
        kept = self._drop_near_duplicates(passed, report)
        kept = self._downsample_openings(kept, report)
        for dialogue in kept:
            report.kept[dialogue.source] += 1
        return kept, report

    def _clean_turns(self, dialogue: Dialogue) -> tuple[Dialogue | None, str, str]:
        good = []
        for player, npc in dialogue.turns:
            # A writer's drill may ask "Name?"; only a generator's player lines need checking.
            problems = self.player_problems(player) if dialogue.source == "generated" else []
            line = player
            if not problems:
                problems, line = self.reply_problems(npc, player), npc
            if problems:
                if not good:
                    return None, problems[0], line
                break
            good.append((player, npc))
        # A cut dialogue no longer ends with the reply its `covers` describe.
        covers = dialogue.covers if len(good) == len(dialogue.turns) else ()
        return Dialogue(tuple(good), dialogue.source, dialogue.context, dialogue.memories, covers), "", ""

    def _drop_near_duplicates(self, dialogues: list[Dialogue], report: HygieneReport) -> list[Dialogue]:
        # The writer's first, so a generated echo of a hand-written reply is the one that goes.
        order = sorted(range(len(dialogues)), key=lambda i: dialogues[i].source == "generated")
        seen: list[set] = []
        keep = set()
        for i in order:
            dialogue = dialogues[i]
            grams = trigrams(" ".join(dialogue.replies))
            echo = any(jaccard(grams, other) >= NEAR_DUPLICATE for other in seen)
            if dialogue.source == "generated" and echo:
                report.dropped["near_duplicate"] += 1
                report.note("near_duplicate", dialogue.replies[0])
                continue
            seen.append(grams)
            keep.add(i)
        return [d for i, d in enumerate(dialogues) if i in keep]

    def _downsample_openings(self, dialogues: list[Dialogue], report: HygieneReport) -> list[Dialogue]:
        counts = Counter(opening(r) for d in dialogues for r in d.replies)
        total = sum(counts.values())
        cap = max(OPENING_FLOOR, int(OPENING_SHARE * total))
        rng = random.Random(self.seed)
        generated = [i for i, d in enumerate(dialogues) if d.source == "generated"]
        rng.shuffle(generated)
        drop = set()
        for i in generated:
            over = [o for o in map(opening, dialogues[i].replies) if counts[o] > cap]
            if over:
                drop.add(i)
                for reply in dialogues[i].replies:
                    counts[opening(reply)] -= 1
                report.dropped["frequent_opening"] += 1
                report.note("frequent_opening", f"[{over[0]}…] {dialogues[i].replies[0]}")
        return [d for i, d in enumerate(dialogues) if i not in drop]


def repeats(text: str, gram: int = 4) -> bool:
    """A phrase of `gram` words said three times, or a sentence (of three words or more) said twice."""
    lowered = [w.lower() for w in _WORDS.findall(text)]
    grams = Counter(tuple(lowered[i:i + gram]) for i in range(len(lowered) - gram + 1))
    if grams and max(grams.values()) >= 3:
        return True
    sentences = [" ".join(_WORDS.findall(s.lower())) for s in _SENTENCES.findall(text)]
    sentences = [s for s in sentences if len(s.split()) >= 3]
    return len(sentences) != len(set(sentences))


def _sheet_text(sheet: CharacterSheet) -> str:
    """Every word the writer used anywhere in the sheet: names found here are not invented."""
    def walk(value) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [t for k, v in value.items() for t in [str(k), *walk(v)]]
        if isinstance(value, (list, tuple)):
            return [t for v in value for t in walk(v)]
        return []
    return "\n".join(walk(sheet.to_dict()))
