"""Peak RSS of a process with one NPC loaded and talking; run by `benchmarks.engine` as a fresh child.

    python -m benchmarks.rss_child ours BUNDLE < job.json
    python -m benchmarks.rss_child llama GGUF < job.json

job.json: {"threads": 2, "new_tokens": 100, "lines": [player line, ...], "prompts": [[token ids], ...]}.
Ours talks through the whole runtime (`Runtime.load_npc`, `Npc.ask`); llama.cpp evaluates the same
prompts (persona + line, as token ids) and decodes greedily. Only what each side needs is imported,
so neither pays for the other's libraries. Prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import sys


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def ours(bundle: str, job: dict) -> dict:
    from lmpc_runtime import Runtime, SamplingConfig

    loaded_only = None
    with Runtime(threads=job["threads"], seed=1) as rt:
        npc = rt.load_npc(bundle, sampling=SamplingConfig(max_tokens=job["new_tokens"]))
        loaded_only = peak_rss_mb()
        for line in job["lines"]:
            for _ in npc.ask(line):
                pass
        return {"peak_rss_mb": peak_rss_mb(), "after_load_mb": loaded_only, "context_tokens": len(npc.seq)}


def llama(gguf: str, job: dict) -> dict:
    import numpy as np

    from benchmarks.llama_peer import LlamaPeer

    peer = LlamaPeer(gguf, threads=job["threads"])
    loaded_only = peak_rss_mb()
    for prompt in job["prompts"]:
        peer.rewind(0)
        token = int(np.argmax(peer.extend(prompt)))
        for _ in range(job["new_tokens"]):
            token = int(np.argmax(peer.extend([token])))
    return {"peak_rss_mb": peak_rss_mb(), "after_load_mb": loaded_only, "context_tokens": len(peer)}


if __name__ == "__main__":
    side, path = sys.argv[1], sys.argv[2]
    print(json.dumps({"ours": ours, "llama": llama}[side](path, json.load(sys.stdin))))
