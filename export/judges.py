"""The estimators behind APC: how relevant a statement is to a player's line, and whether a reply
entails, contradicts or says nothing about a statement (NLI).

Relevance comes from the bundle's sentence embedder: the cosine of question and statement, turned into
a probability by a logistic curve fitted on hand-labelled pairs (`calibration.py`).

An NLI judge maps (reply, statement) pairs to raw scores [n, 3] for (entail, neutral, contradict); the
calibration turns them into probabilities. Three judges share that interface:
- `LocalJudge`: a model of the local runtime, asked a judging question; its next-token log-probabilities
  of the three answer words are the scores. Offline, and as good as the model is.
- `EndpointJudge`: any OpenAI-compatible chat endpoint (a bigger model elsewhere), read the same way
  from `logprobs`, or from the answer's text where the server gives none.
- `CrossEncoderJudge`: a user-supplied ONNX NLI cross-encoder (premise, hypothesis) → 3 logits.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.engine import Engine
from lmpc_runtime.errors import ExportError

from .apc import LABELS
from .generator import ChatEndpoint

Pair = tuple[str, str]  # (reply, statement)

# The answer words, by label; the judge is asked to answer with one of them.
ANSWER_OF = {"entail": "agree", "neutral": "neither", "contradict": "contradict"}
JUDGE_SYSTEM = "You check what a character in a story says against facts about him."
ASK = "Does what the character said agree with the fact, contradict it, or neither?"


def judge_question(reply: str, statement: str) -> tuple[str, str]:
    """The judging question in two parts: the reply (shared by all statements), then the statement."""
    return f"The character said: \"{reply}\"\n", f"Fact: {statement}\n{ASK}"


class NliJudge(Protocol):
    name: str

    def scores(self, pairs: Sequence[Pair]) -> np.ndarray:
        """Raw scores [len(pairs), 3] for (entail, neutral, contradict); higher is likelier."""


class LocalJudge:
    """A local model asked `judge_question`, its answer begun with "Answer:", read through the
    log-probabilities of the three answer words as the next token. (A 135M model asked for a bare word
    starts with "The" or "No"; the prefix puts the answer where it can be read.)"""

    def __init__(self, engine: Engine, chat: ChatFormat, name: str = "local"):
        self.engine = engine
        self.chat = chat
        self.name = name
        # The first token of each answer word after "Answer:".
        firsts = [chat.encode_text(" " + ANSWER_OF[label])[0] for label in LABELS]
        if len(set(firsts)) != 3:
            raise ExportError("the judge's tokenizer starts two answer words with the same token")
        self._answer_ids = np.array(firsts)

    def scores(self, pairs: Sequence[Pair]) -> np.ndarray:
        out = np.zeros((len(pairs), 3))
        prefix_seq, prefix_reply = None, None
        for row, (reply, statement) in enumerate(pairs):
            shared, own = judge_question(reply, statement)
            if reply != prefix_reply:
                # Consecutive pairs about the same reply share the prompt up to the statement.
                prefix_seq, prefix_reply = self.engine.new_sequence(), reply
                start = [*self.chat.turn("system", JUDGE_SYSTEM), *self.chat.open_turn("user"),
                         *self.chat.encode_text(shared)]
                self.engine.extend(prefix_seq, start)
            seq = prefix_seq.fork()
            logits = self.engine.extend(seq, [*self.chat.encode_text(own), self.chat.special.im_end,
                                              *self.chat.close_turn(), *self.chat.open_turn(),
                                              *self.chat.encode_text("Answer:")])
            out[row] = _log_softmax(logits)[self._answer_ids]
        return out


class EndpointJudge:
    """An OpenAI-compatible `/chat/completions` endpoint asked `judge_question` for one token."""

    def __init__(self, base_url: str, model: str = "default", api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0, retries: int = 2):
        self.endpoint = ChatEndpoint(base_url, "judge", api_key_env, timeout, retries)
        self.model = model
        self.name = f"{model} at {self.endpoint.url}"

    def scores(self, pairs: Sequence[Pair]) -> np.ndarray:
        return np.array([self._one(reply, statement) for reply, statement in pairs]).reshape(-1, 3)

    def _one(self, reply: str, statement: str) -> list[float]:
        body = {"model": self.model, "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 10,
                "messages": [{"role": "system", "content": JUDGE_SYSTEM},
                             {"role": "user", "content": "".join(judge_question(reply, statement))
                              + " Answer with one word: agree, contradict or neither."}]}
        answer = self.endpoint.complete(body)
        try:
            return _answer_scores(answer["choices"][0])
        except (KeyError, IndexError, TypeError) as exc:
            raise ExportError(f"{self.endpoint.url}: unexpected answer: {str(answer)[:300]}") from exc


def _answer_scores(choice: dict) -> list[float]:
    """Scores from one chat completion choice: the top log-probabilities of its first token when given,
    else its text (the answer named gets 0, the others a log-probability of -10)."""
    floor = -10.0
    found = {}
    try:
        for candidate in choice["logprobs"]["content"][0]["top_logprobs"]:
            word = candidate["token"].strip().lower()
            for label in LABELS:
                if word and ANSWER_OF[label].startswith(word) and label not in found:
                    found[label] = float(candidate["logprob"])
    except (KeyError, IndexError, TypeError):
        text = str((choice.get("message") or {}).get("content") or "").strip().lower()
        found = {label: 0.0 for label in LABELS if text.startswith(ANSWER_OF[label][:4])}
    return [max(found.get(label, floor), floor) for label in LABELS]


class CrossEncoderJudge:
    """A user-supplied ONNX NLI cross-encoder: inputs input_ids and attention_mask (and token_type_ids if
    it has them) for the pair (premise = reply, hypothesis = statement), output logits [batch, 3] in the
    order `labels` names (most published NLI cross-encoders: contradiction, entailment, neutral)."""

    def __init__(self, model_path: str | Path, tokenizer_path: str | Path,
                 labels: Sequence[str] = ("contradict", "entail", "neutral"), max_tokens: int = 256):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if sorted(labels) != sorted(LABELS):
            raise ExportError(f"cross-encoder labels must name {', '.join(LABELS)} once each, not {list(labels)}")
        try:
            self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # onnxruntime and tokenizers raise bare exceptions for unreadable files
            raise ExportError(f"cannot load the cross-encoder {model_path} / {tokenizer_path}: {exc}") from exc
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.inputs = {i.name for i in self.session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self.inputs:
            raise ExportError(f"{model_path}: a cross-encoder needs input_ids and attention_mask inputs")
        self._order = [list(labels).index(label) for label in LABELS]
        self.name = f"cross-encoder {Path(model_path).name}"

    def scores(self, pairs: Sequence[Pair], batch_size: int = 16) -> np.ndarray:
        out = np.zeros((len(pairs), 3))
        for start in range(0, len(pairs), batch_size):
            batch = list(pairs[start:start + batch_size])
            encodings = self.tokenizer.encode_batch([(reply, statement) for reply, statement in batch])
            width = max(len(e.ids) for e in encodings)
            feed = {name: np.zeros((len(batch), width), dtype=np.int64) for name in
                    ("input_ids", "attention_mask", "token_type_ids") if name in self.inputs}
            for row, e in enumerate(encodings):
                feed["input_ids"][row, :len(e.ids)] = e.ids
                feed["attention_mask"][row, :len(e.ids)] = 1
                if "token_type_ids" in feed:
                    feed["token_type_ids"][row, :len(e.ids)] = e.type_ids
            logits = self.session.run(None, feed)[0]  # [batch, 3]
            if logits.shape != (len(batch), 3):
                raise ExportError(f"{self.name}: expected logits [{len(batch)}, 3], got {list(logits.shape)}")
            out[start:start + len(batch)] = np.asarray(logits)[:, self._order]
        return out


def surface_cues(reply: str, statement: str) -> list[float]:
    """Cheap textual evidence for NLI, [5]: the share of the statement's content words the reply uses;
    whether the reply gives numbers where the statement has others; names the reply uses that the statement,
    which names people, does not (at most 3); negations in the reply beyond the statement's; reply words."""
    reply_words, statement_words = _words(reply), _words(statement)
    content = {w for w in statement_words if len(w) > 3 and w not in _STOPWORDS}
    overlap = len(content & set(reply_words)) / max(len(content), 1)
    numbers_r = {w for w in reply_words if w.isdigit() or w in _NUMBER_WORDS}
    numbers_s = {w for w in statement_words if w.isdigit() or w in _NUMBER_WORDS}
    other_numbers = float(bool(numbers_r) and bool(numbers_s) and not numbers_r <= numbers_s)
    names_s = _names(statement)
    new_names = min(len(_names(reply) - names_s), 3) if names_s else 0
    negations = sum(w in _NEGATIONS for w in reply_words) - sum(w in _NEGATIONS for w in statement_words)
    return [overlap, other_numbers, float(new_names), float(negations), float(len(reply_words))]


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+")
_STOPWORDS = frozenset("""the a an and or of to in on at for with by from is are was were be been his her he him she
it its that this as not no but who which what when where has have had than into over under there their they them you
your me my we our""".split())
_NUMBER_WORDS = frozenset("""one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred first second
third""".split())
_NEGATIONS = frozenset("""not never no none nor cannot can't don't didn't won't isn't wasn't haven't hasn't nothing
neither unmarried""".split())


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _names(text: str) -> set[str]:
    """Capitalised words not at the start of a sentence."""
    return {m.group() for m in _NAME.finditer(text)} - {"I"}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max()
    return logits - top - math.log(np.exp(logits - top).sum())
