"""The model that writes synthetic dialogue, behind one small interface: `chat(messages) -> text`.

Two implementations:
- `LocalGenerator`: the LMPC runtime itself on an exported model (by default the base SmolLM2 of the
  build cache), offline. It keeps the KV caches of its last few prompts and starts each new prompt from
  the one sharing the longest prefix, so the alternating question and answer prompts, which each repeat
  a long fixed start, cost little after the first of each.
- `OpenAIChatGenerator`: any server speaking the OpenAI chat-completions protocol (a bigger model on the
  writer's GPU box, vLLM, llama.cpp's server…), through the standard library's HTTP client.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np

from lmpc_runtime.bundle import ModelSpec, read_bundle
from lmpc_runtime.chat import ChatFormat, SpecialTokens
from lmpc_runtime.engine import EngineOptions, KvSequence, open_engine
from lmpc_runtime.errors import ExportError
from lmpc_runtime.npc import common_prefix
from lmpc_runtime.reply import Reply, drive
from lmpc_runtime.sampling import Sampler, SamplingConfig

Message = tuple[str, str]  # (role, text); roles as in ChatML: system, user, assistant


class Generator(Protocol):
    description: str

    def chat(self, messages: list[Message], max_tokens: int = 120, temperature: float = 0.8) -> str:
        """The assistant's next turn after `messages` (stripped text, possibly empty)."""


class LocalGenerator:
    """Generation with the runtime's engine and sampler on an int8 ONNX model."""

    CACHED_PROMPTS = 4

    def __init__(self, model_path: Path, spec: ModelSpec, tokenizer_path: Path, special: SpecialTokens,
                 seed: int = 0, threads: int = 2):
        self.description = f"the local LMPC runtime on {model_path.parent.name}/{model_path.name}"
        self.engine = open_engine(str(model_path), spec, EngineOptions(threads=threads))
        self.chat_format = ChatFormat.from_file(str(tokenizer_path), special)
        self.special = special
        self.rng = np.random.default_rng(seed)
        self._seqs: list[KvSequence] = []  # most recently used last
        self.prefilled = 0  # prompt tokens actually run through the model, for the curious and the tests

    @classmethod
    def from_bundle(cls, path: str | Path, seed: int = 0) -> "LocalGenerator":
        bundle = read_bundle(path)
        return cls(bundle.model_path, bundle.model, bundle.tokenizer_path, bundle.special, seed)

    @classmethod
    def from_model_entry(cls, entry: Path, seed: int = 0) -> "LocalGenerator":
        """From a build-cache entry (`build.prepare_model`): its shipped model and normalised tokenizer."""
        from .build import MODEL_FILE, model_spec, special_tokens

        export = json.loads((entry / "export.json").read_text())
        config = export["config"]
        tokenizer = entry / "checkpoint" / "tokenizer.json"
        spec = model_spec(config, export["layout"], MODEL_FILE, "", config.get("max_position_embeddings", 2048))
        return cls(entry / MODEL_FILE, spec, tokenizer, special_tokens(tokenizer), seed)

    def chat(self, messages: list[Message], max_tokens: int = 120, temperature: float = 0.8) -> str:
        prompt = [t for role, text in messages for t in self.chat_format.turn(role, text)]
        prompt += self.chat_format.open_turn()
        seq = self._closest(prompt)
        # Keep the cached prefix, but always leave at least one token to feed.
        seq.rewind(min(common_prefix(seq.tokens, prompt), len(prompt) - 1))
        self.prefilled += len(prompt) - len(seq)
        config = SamplingConfig(temperature=temperature, top_p=0.95, repetition_penalty=1.1,
                                max_tokens=max_tokens)
        reply = Reply(reply_id=0, npc_id="generator", seq=seq, todo=prompt[len(seq):],
                      sampler=Sampler(config, self.rng, banned=self.special.banned),
                      stream=self.chat_format.text_stream(), end_token=self.special.im_end,
                      max_tokens=max_tokens, recent=prompt)
        for _ in drive(self.engine, reply):
            pass
        return reply.final_text

    def _closest(self, prompt: list[int]) -> KvSequence:
        """The cached sequence sharing the longest prefix with `prompt` (a new one if none shares much)."""
        best = max(self._seqs, key=lambda s: common_prefix(s.tokens, prompt), default=None)
        shared = common_prefix(best.tokens, prompt) if best is not None else 0
        if best is None or (shared < 16 and len(self._seqs) < self.CACHED_PROMPTS):
            best = self.engine.new_sequence()
        else:
            self._seqs.remove(best)
        self._seqs.append(best)
        return best


class ChatEndpoint:
    """POSTs to an OpenAI-compatible `/chat/completions` endpoint through the standard library's HTTP client,
    retrying overload and server errors. The API key, if any, is read from the environment variable named;
    `what` names the endpoint's role in error messages."""

    def __init__(self, base_url: str, what: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 3):
        if not base_url.startswith(("http://", "https://")):
            raise ExportError(f"{what} URL must start with http:// or https://, not {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.what = what
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.timeout = timeout
        self.retries = retries

    def complete(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                # Overload and server errors are worth another try; a bad request is not.
                if exc.code not in (429, 500, 502, 503, 504) or attempt == self.retries:
                    raise ExportError(f"{self.url}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.retries:
                    raise ExportError(f"{self.url}: cannot reach the {self.what}: {exc}") from exc
            except json.JSONDecodeError as exc:
                raise ExportError(f"{self.url}: the answer is not JSON: {exc}") from exc
            time.sleep(min(2 ** attempt, 10))


class OpenAIChatGenerator:
    """A `/chat/completions` endpoint asked for the next turn."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 3, seed: int | None = 0):
        self.endpoint = ChatEndpoint(base_url, "generator", api_key_env, timeout, retries)
        self.url = self.endpoint.url
        self.model = model
        self.description = f"{model} at {self.url}"
        self.seed = seed

    def chat(self, messages: list[Message], max_tokens: int = 120, temperature: float = 0.8) -> str:
        body = {"model": self.model, "messages": [{"role": r, "content": t} for r, t in messages],
                "max_tokens": max_tokens, "temperature": temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        answer = self.endpoint.complete(body)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ExportError(f"{self.url}: unexpected answer shape: {str(answer)[:300]}") from exc
        return (content or "").strip()
