"""Who talks to the character, in what mood, where, why, and how well they know them.

Each synthetic dialogue starts from a `Scene` drawn from five independent lists (interlocutor × emotion ×
place × reason × familiarity), so questions come from many different people in many situations: a model
tends to ignore questions far from what it was trained on, and variety is the cure. The lists below suit
most pre-modern settings; the sheet's own important people are added to the interlocutors, each with
the sheet's description of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lmpc_runtime.persona import first_sentence
from lmpc_runtime.sheet import CharacterSheet

# "who, in a few words": a name or a role, and a manner.
INTERLOCUTORS = (
    "a royal historian, scholarly and reserved",
    "a young squire, eager and clumsy",
    "an old farmer, weathered and blunt",
    "a travelling merchant, shrewd and talkative",
    "a tavern keeper, gossipy and warm",
    "a priest, soft-spoken and watchful",
    "a city guard, tired and suspicious",
    "a street child, quick and cheeky",
    "a widow in mourning, quiet and bitter",
    "a foreign envoy, polished and curious",
    "a minstrel, flamboyant and nosy",
    "a blacksmith, gruff and practical",
    "a noblewoman, haughty and clever",
    "a novice scribe, timid and earnest",
    "a veteran soldier, scarred and laconic",
    "a midwife, brisk and kind",
    "a beggar, sharp-eyed and proud",
    "a pilgrim, pious and footsore",
    "a rival courtier, smooth and mocking",
    "a washerwoman, cheerful and frank",
    "a retired sea captain, loud and fond of tales",
    "a moneylender, polite and cold",
    "a shepherd boy, shy and wide-eyed",
    "a drunk mercenary, boastful and quarrelsome",
    "a herbalist, patient and wry",
    "a stable hand, friendly and slow-spoken",
    "a young noble, arrogant and bored",
    "a wandering stranger, odd and out of place",
    "a stonemason, proud of his craft",
    "a schoolteacher, precise and anxious",
)
EMOTIONS = (
    "curious", "angry", "afraid", "grieving", "amused", "suspicious", "hopeful", "desperate", "bored",
    "admiring", "merry from drink", "impatient", "embarrassed", "grateful", "resentful", "excited",
    "worried", "mocking", "calm", "confused",
)
PLACES = (
    "a crowded market square", "a quiet tavern corner", "the steps of a temple", "a muddy road outside town",
    "a castle courtyard", "a riverbank at dusk", "a village well", "a council antechamber",
    "a roadside shrine", "a barracks yard", "a feast hall after supper", "a library", "a stable",
    "a busy city gate", "a graveyard", "a harvest field", "a night watch on the walls",
    "a bridge in the rain",
    "a smoky kitchen", "a palace garden",
)
REASONS = (
    "to ask a favour", "by chance", "to warn them of something", "to complain", "to ask about their past",
    "on an errand for someone else", "to sell them something", "to challenge them", "to thank them",
    "out of plain curiosity", "to ask their advice", "to learn their opinion of someone important",
    "to test whether the rumours are true", "to ask for help for their family", "to pass the time",
    "to ask a question from far outside their world",
)
FAMILIARITY = (
    "has never heard of them", "knows them only by reputation", "has met them once before",
    "knows them well", "is an old friend of theirs",
)


@dataclass(frozen=True)
class Scene:
    interlocutor: str
    emotion: str
    place: str
    reason: str
    familiarity: str

    def describe(self, name: str) -> str:
        """One line for a generator prompt (and a sample's context), e.g. 'a priest …, feeling curious, …'."""
        return (f"{self.interlocutor}, feeling {self.emotion}, meets {name} at {self.place}, "
                f"{self.reason}; the speaker {self.familiarity.replace('them', name)}")


class SceneSampler:
    """Seeded draws of scenes; the same seed gives the same sequence of scenes."""

    def __init__(self, sheet: CharacterSheet, seed: int = 0):
        self.rng = random.Random(seed)
        world = sheet.world
        people = world.important_people + world.marginalised_important_people
        self.interlocutors = INTERLOCUTORS + tuple(
            f"{p.name} ({first_sentence(p.description).rstrip('.')})" for p in people)

    def draw(self) -> Scene:
        pick = self.rng.choice
        return Scene(pick(self.interlocutors), pick(EMOTIONS), pick(PLACES), pick(REASONS), pick(FAMILIARITY))
