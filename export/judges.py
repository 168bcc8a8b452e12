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

import json
import math
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from lmpc_runtime.chat import ChatFormat
from lmpc_runtime.engine import Engine
from lmpc_runtime.errors import ExportError

from .apc import LABELS

Pair = tuple[str, str]  # (reply, statement)

# The answer words, in LABELS order; the judge is asked to answer with one of them.
ANSWERS = ("agree", "contradict", "neither")
ANSWER_OF = {"entail": "agree", "neutral": "neither", "contradict": "contradict"}
JUDGE_SYSTEM = ("You check what a character in a story says against facts about him. You answer with one "
                "word: agree, contradict or neither.")


def judge_question(reply: str, statement: str) -> tuple[str, str]:
    """The judging question in two parts: the reply (shared by all statements), then the statement."""
    return (f"The character said: \"{reply}\"\n",
            f"Fact: {statement}\nDoes what the character said agree with the fact, contradict it, or "
            "neither (it does not talk about it)? Answer agree, contradict or neither.")


class NliJudge(Protocol):
    name: str

    def scores(self, pairs: Sequence[Pair]) -> np.ndarray:
        """Raw scores [len(pairs), 3] for (entail, neutral, contradict); higher is likelier."""


class LocalJudge:
    """A local model asked `judge_question`, read through its next-token log-probabilities."""

    def __init__(self, engine: Engine, chat: ChatFormat, name: str = "local"):
        self.engine = engine
        self.chat = chat
        self.name = name
        # The first token of each answer word as the model would start its turn with it.
        firsts = [chat.encode_text(ANSWER_OF[label])[0] for label in LABELS]
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
                                              *self.chat.close_turn(), *self.chat.open_turn()])
            out[row] = _log_softmax(logits)[self._answer_ids]
        return out


class EndpointJudge:
    """An OpenAI-compatible `/chat/completions` endpoint asked `judge_question` for one token."""

    def __init__(self, base_url: str, model: str = "default", api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise ExportError(f"judge URL must start with http:// or https://, not {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"{model} at {self.url}"
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.timeout = timeout

    def scores(self, pairs: Sequence[Pair]) -> np.ndarray:
        return np.array([self._one(reply, statement) for reply, statement in pairs]).reshape(-1, 3)

    def _one(self, reply: str, statement: str) -> list[float]:
        body = {"model": self.model, "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 10,
                "messages": [{"role": "system", "content": JUDGE_SYSTEM},
                             {"role": "user", "content": "".join(judge_question(reply, statement))}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                choice = json.loads(response.read())["choices"][0]
        except urllib.error.HTTPError as exc:
            raise ExportError(f"{self.url}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise ExportError(f"{self.url}: cannot reach the judge: {exc}") from exc
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise ExportError(f"{self.url}: unexpected answer: {exc}") from exc
        return _answer_scores(choice)


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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max()
    return logits - top - math.log(np.exp(logits - top).sum())
