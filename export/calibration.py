"""Turning the estimators' raw numbers into probabilities, on pairs a person labelled by hand.

A calibration file (`<sheet>.apc_calibration.toml`, one `[[pair]]` per entry) holds statement, question,
reply, `relevant` (is the statement relevant to the question) and `label` (does the reply entail,
contradict or say nothing about the statement). From it:
- relevance: a logistic curve on the embedder's cosine of question and statement;
- NLI: a multinomial logistic regression on the judge's three scores, the cosine of reply and
  statement, and surface cues (`judges.surface_cues`: shared words, other numbers, other names,
  negations). On Orlando's 191 pairs a 135M judge alone is barely above chance; the cosine tells "says
  nothing about it" apart, the cues catch wrong ages and names, and together they do best.
Each is scored by k-fold cross-validation (fitted on the other folds, tested on the held-out one), so the
accuracy reported is that on pairs the calibration never saw, then fitted on all pairs for use.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lmpc_runtime.errors import ExportError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .apc import LABELS
from .judges import NliJudge, Pair, surface_cues


NLI_FEATURES = 9


@dataclass(frozen=True)
class LabelledPair:
    statement: str
    question: str
    reply: str
    relevant: bool
    label: str


def read_toml(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ExportError(f"{path}: cannot read the {what}: {exc}") from exc


def load_calibration(path: str | Path) -> list[LabelledPair]:
    path = Path(path)
    data = read_toml(path, "calibration set")
    pairs = []
    for i, entry in enumerate(data.get("pair", [])):
        where = f"{path}: pair {i + 1}"
        if not isinstance(entry, dict):
            raise ExportError(f"{where}: must be a table")
        for key in ("statement", "question", "reply"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ExportError(f"{where}: `{key}` must be a non-empty string")
        if not isinstance(entry.get("relevant"), bool):
            raise ExportError(f"{where}: `relevant` must be true or false")
        if entry.get("label") not in LABELS:
            raise ExportError(f"{where}: `label` must be one of {', '.join(LABELS)}")
        pairs.append(LabelledPair(entry["statement"], entry["question"], entry["reply"], entry["relevant"],
                                  entry["label"]))
    if not pairs:
        raise ExportError(f"{path}: no [[pair]] entries")
    return pairs


class Logistic:
    """Multinomial logistic regression (L2-regularised, standardised features), fitted by gradient descent."""

    def __init__(self, classes: int, weights: np.ndarray | None = None, mean: np.ndarray | None = None,
                 scale: np.ndarray | None = None):
        self.classes = classes
        self.weights, self.mean, self.scale = weights, mean, scale

    def fit(self, x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 2000, rate: float = 0.5) -> "Logistic":
        x = np.asarray(x, dtype=np.float64)
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0) + 1e-9
        z = self._design(x)  # [n, features + 1]
        onehot = np.eye(self.classes)[np.asarray(y)]
        w = np.zeros((z.shape[1], self.classes))
        for _ in range(steps):
            gradient = z.T @ (_softmax(z @ w) - onehot) / len(z) + l2 * w
            w -= rate * gradient
        self.weights = w
        return self

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return _softmax(self._design(np.asarray(x, dtype=np.float64)) @ self.weights)

    def _design(self, x: np.ndarray) -> np.ndarray:
        return np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))])

    def to_dict(self) -> dict:
        return {"classes": self.classes, "weights": self.weights.tolist(), "mean": self.mean.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Logistic":
        return cls(int(data["classes"]), np.array(data["weights"]), np.array(data["mean"]), np.array(data["scale"]))


class Embeddings:
    """Unit vectors of texts, each embedded once. `embed(texts) -> [n, dim]`."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray]):
        self._embed = embed
        self._known: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._known]
        if new:
            self._known.update(zip(new, self._embed(new)))
        return np.array([self._known[t] for t in texts])

    def cosines(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine of a[i] and b[i] [n]."""
        return np.einsum("nd,nd->n", self(a), self(b))


class Relevance:
    """P(statement relevant to a question), from the cosine of their embeddings.

    The labelled pairs were chosen to be about half relevant, but of all a character's statements only a
    few bear on any one line: probabilities fitted at the labelled set's base rate overstate relevance
    everywhere. `adapt_prior` re-estimates the base rate on the lines actually scored (every line against
    every statement) by the EM procedure of Saerens, Latinne & Decaestecker (2002, "Adjusting the outputs
    of a classifier to new a priori probabilities") and shifts the probabilities to it."""

    def __init__(self, embeddings: Embeddings, model: Logistic, trained_prior: float):
        self.embeddings, self.model, self.trained_prior = embeddings, model, trained_prior
        self.prior = trained_prior

    def probabilities(self, question: str, statements: Sequence[str]) -> np.ndarray:
        return self._shift(self._fitted(question, statements), self.prior)

    def adapt_prior(self, questions: Sequence[str], statements: Sequence[str], steps: int = 100) -> float:
        """Set and return the base rate of relevance among all (question, statement) pairs."""
        fitted = np.concatenate([self._fitted(q, statements) for q in questions])
        prior = self.trained_prior
        for _ in range(steps):
            updated = float(self._shift(fitted, prior).mean())
            if abs(updated - prior) < 1e-6:
                break
            prior = updated
        self.prior = prior
        return prior

    def _fitted(self, question: str, statements: Sequence[str]) -> np.ndarray:
        """P(relevant) at the labelled set's base rate [len(statements)]."""
        cos = self.embeddings.cosines([question] * len(statements), statements)
        return self.model.probabilities(cos[:, None])[:, 1]

    def _shift(self, p: np.ndarray, prior: float) -> np.ndarray:
        """Posteriors fitted at `trained_prior`, re-weighted to `prior`."""
        up, down = prior / self.trained_prior, (1 - prior) / (1 - self.trained_prior)
        return up * p / (up * p + down * (1 - p))


class Nli:
    """P(entail, neutral, contradict) [n, 3] of (reply, statement) pairs: a judge's scores, calibrated."""

    def __init__(self, judge: NliJudge, embeddings: Embeddings, model: Logistic):
        self.judge, self.embeddings, self.model = judge, embeddings, model

    def probabilities(self, pairs: Sequence[Pair]) -> np.ndarray:
        if not pairs:
            return np.zeros((0, 3))
        return self.model.probabilities(nli_features(self.judge, self.embeddings, pairs))


def nli_features(judge: NliJudge, embeddings: Embeddings, pairs: Sequence[Pair]) -> np.ndarray:
    """[n, 9]: the judge's three scores, the cosine of reply and statement, the surface cues."""
    cos = embeddings.cosines([r for r, _ in pairs], [s for _, s in pairs])
    cues = np.array([surface_cues(r, s) for r, s in pairs])
    return np.hstack([judge.scores(pairs), cos[:, None], cues])


def calibrate(pairs: list[LabelledPair], judge: NliJudge, embeddings: Embeddings, folds: int = 5,
              seed: int = 0) -> tuple[Relevance, Nli, dict]:
    """Fit both estimators on the labelled pairs; the report gives their cross-validated accuracy."""
    if len(pairs) < 2 * folds:
        raise ExportError(f"calibration needs at least {2 * folds} labelled pairs, not {len(pairs)}")
    relevant = np.array([p.relevant for p in pairs], dtype=np.int64)
    labels = np.array([LABELS.index(p.label) for p in pairs])
    rel_x = embeddings.cosines([p.question for p in pairs], [p.statement for p in pairs])[:, None]
    # Judge pairs grouped by reply, so a local judge reuses each reply's prompt.
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].reply)
    nli_x = np.zeros((len(pairs), NLI_FEATURES))
    nli_x[order] = nli_features(judge, embeddings, [(pairs[i].reply, pairs[i].statement) for i in order])

    fold = np.random.default_rng(seed).permutation(len(pairs)) % folds
    rel_cv = np.zeros(len(pairs))
    nli_cv = np.zeros((len(pairs), 3))
    for k in range(folds):
        train, test = fold != k, fold == k
        rel_cv[test] = Logistic(2).fit(rel_x[train], relevant[train]).probabilities(rel_x[test])[:, 1]
        nli_cv[test] = Logistic(3).fit(nli_x[train], labels[train]).probabilities(nli_x[test])
    relevance = Logistic(2).fit(rel_x, relevant)
    nli = Logistic(3).fit(nli_x, labels)
    raw = nli_x[:, :3].argmax(axis=1)
    predicted = nli_cv.argmax(axis=1)
    report = {
        "pairs": len(pairs),
        "folds": folds,
        "judge": judge.name,
        "relevance": {
            "accuracy": _share(rel_cv.round() == relevant),
            "majority_baseline": _share(relevant == round(relevant.mean())),
            "auc": _auc(rel_cv, relevant),
        },
        "nli": {
            "judge_alone_accuracy": _share(raw == labels),
            "accuracy": _share(predicted == labels),
            "majority_baseline": float(np.bincount(labels, minlength=3).max() / len(labels)),
            "recall": {label: _share(predicted[labels == i] == i) for i, label in enumerate(LABELS)},
            # rows: the hand label; columns: the calibrated estimate
            "confusion": [[int(np.sum((labels == i) & (predicted == j))) for j in range(3)] for i in range(3)],
        },
        "models": {"relevance": relevance.to_dict(), "nli": nli.to_dict()},
    }
    return Relevance(embeddings, relevance, float(relevant.mean())), Nli(judge, embeddings, nli), report


def _share(hits: np.ndarray) -> float:
    return float(np.mean(hits)) if len(hits) else 0.0


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[positive == 1], scores[positive == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    above = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return float(above)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
