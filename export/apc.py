"""APC: how faithful a reply is to everything the writer said about the character, as one number.

After Peng & Shang (2024), "Quantifying and Optimizing Global Faithfulness in Persona-driven
Role-playing". For a player line q, a reply r and each persona statement s:

    term(s) = P(s relevant to q) · P(r entails s) + (1 − P(s relevant to q)) · (1 − P(r contradicts s))

and the reply's APC is the sum of the terms over all statements: a statement the question is about
counts when the reply honours it, and every other statement counts as long as the reply does not
contradict it. The maximum is the number of statements.

Asking a judge model about every statement for every reply is the cost of APC. A reply can only
entail or contradict what it talks about, so the judge is asked only about the statements most
relevant to the question or most similar to the reply (`judged` of them); the rest are scored as
neutral (entails 0, contradicts 0), their term being 1 − P(relevant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmpc_runtime.sheet import CharacterSheet

from .memories import sheet_statements

LABELS = ("entail", "neutral", "contradict")
ENTAIL, NEUTRAL, CONTRADICT = range(3)
PERSONA_SOURCES = ("facts[", "values[", "objectives[", "opinions.")
NEUTRAL_ROW = np.array([0.0, 1.0, 0.0])


def persona_statements(sheet: CharacterSheet) -> list[str]:
    """The writer's statements about the character (facts, values, aims, opinions), worded as the
    bundle's memories word them."""
    return [text for text, _, source in sheet_statements(sheet, "") if source.startswith(PERSONA_SOURCES)]


def apc_terms(relevance: np.ndarray, nli: np.ndarray) -> np.ndarray:
    """relevance [S] = P(statement relevant to the question); nli [S, 3] = P(entail, neutral, contradict)
    of the reply against each statement → each statement's term [S], in [0, 1]."""
    relevance = np.asarray(relevance, dtype=np.float64)
    nli = np.asarray(nli, dtype=np.float64)
    if nli.shape != (len(relevance), 3):
        raise ValueError(f"nli must be [{len(relevance)}, 3], not {list(nli.shape)}")
    return relevance * nli[:, ENTAIL] + (1.0 - relevance) * (1.0 - nli[:, CONTRADICT])


def apc(relevance: np.ndarray, nli: np.ndarray) -> float:
    return float(apc_terms(relevance, nli).sum())


def to_judge(relevance: np.ndarray, similarity: np.ndarray, judged: int) -> np.ndarray:
    """Indices of the statements worth a judge's look: the `judged` most relevant to the question, then
    the `judged` most similar to the reply (without repeats)."""
    by_relevance = np.argsort(-relevance, kind="stable")[:judged]
    taken = set(by_relevance.tolist())
    by_similarity = [i for i in np.argsort(-similarity, kind="stable") if i not in taken]
    return np.array([*by_relevance, *by_similarity[:judged]], dtype=np.int64)


@dataclass
class ScoredReply:
    """One reply's APC, with the terms [S] that make it up."""

    question: str
    reply: str
    terms: np.ndarray
    relevance: np.ndarray  # [S]
    nli: np.ndarray  # [S, 3]; neutral rows for statements the judge was not asked about

    @property
    def score(self) -> float:
        return float(self.terms.sum())

    @property
    def contradicted(self) -> list[int]:
        """Statements the reply more likely contradicts than not."""
        return [int(i) for i in np.flatnonzero(self.nli[:, CONTRADICT] > 0.5)]


def statement_satisfaction(scored: list[ScoredReply]) -> np.ndarray:
    """Mean term of each statement over the replies [S]: 1 is a statement always honoured."""
    return np.mean([s.terms for s in scored], axis=0)
