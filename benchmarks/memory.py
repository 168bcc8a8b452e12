"""Memory benchmarks: embedding a player line, retrieval at 10,000 memories, and the size of a save.

    .venv/bin/python -m benchmarks.memory [--bundle build/orlando_marlo.lmpc] [--memories 10000]

Targets (issue 4): embedding a line <= 5 ms; retrieval <= 100 us per query at 10,000 memories with
recall@10 >= 0.98 against the exact index; a save of an NPC with 1,000 memories <= 1 MB without KV.
Each timing alternates ours with a peer in the same run (PERF.md): the embedder with the float32
checkpoint run by torch (as sentence-transformers would), hnswlib with the exact numpy index.
Results go to benchmarks/results/memory.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lmpc_runtime import Runtime, read_bundle
from lmpc_runtime.engine import EngineOptions
from lmpc_runtime.memory.embedder import Embedder
from lmpc_runtime.memory.store import ExactIndex, HnswIndex, MemoryStore

from .machine import cpu_name
from .stats import alternate, percentiles

THREADS = 2
PLAYER_LINES = [
    "Who are you?", "What do you think of the Archlector?", "Where can I find the Tipped Lantern?",
    "My sister was taken by the Order last winter and I need your help to find her.",
    "Have you ever read the First Testament?", "How much for the grey mare?",
    "I found a ledger with your father's seal on it in the crypt.", "Good evening, ser knight.",
]
NAMES = ["Mira", "Tobin", "Isolde", "Jory", "Abel", "Wenna", "the smith", "the innkeeper", "a Luminant",
         "the mayor", "a Kharran scout", "a Tessalian merchant", "the ferryman", "Lady Mirabel", "the squire",
         "a beggar", "the miller's son", "Ser Halden", "the bailiff", "a novice"]
DEEDS = ["lost a silver ring", "sold a lame horse", "found a sealed letter", "broke a promise", "paid a debt",
         "stole a loaf", "sang at the fair", "fought a duel", "hid a ledger", "healed a child", "burned a barn",
         "bought a sword", "carried a message", "lit the beacon", "insulted a priest", "rescued a dog",
         "forged a seal", "won a wager", "drowned a cart", "found the missing key"]
PLACES = ["at the Tipped Lantern", "by the river Aure", "in the Ashward", "at Brightwater Hall", "on the east road",
          "near the Sunspire", "at Kestrel Ford", "in the Aster Vale", "at the market", "by the old mill"]
TIMES = ["last spring", "during the Hungry Year", "on the feast of first light", "three days ago", "in the winter",
         "at dawn", "after the harvest", "before the storm"]


def synthetic_memories(count: int) -> list[str]:
    """Varied, plausible event memories: names x deeds x places x times, shuffled deterministically."""
    combos = list(itertools.product(NAMES, DEEDS, PLACES, TIMES))
    rng = np.random.default_rng(0)
    picked = rng.choice(len(combos), size=count, replace=count > len(combos))
    return [f"{n.capitalize() if n[0].islower() else n} {d} {p} {t}." for n, d, p, t in (combos[i] for i in picked)]


def queries(count: int) -> list[str]:
    rng = np.random.default_rng(1)
    return [f"Do you know who {DEEDS[rng.integers(len(DEEDS))]} {PLACES[rng.integers(len(PLACES))]}?"
            for _ in range(count)]


def bench_embedding(bundle, embedder: Embedder, torch_peer: bool = True) -> dict:
    lines = itertools.cycle(PLAYER_LINES)
    if not torch_peer:
        ours_s, _ = alternate(lambda: embedder.embed_one(next(lines)), lambda: None, rounds=200)
        return {"line_ms": percentiles(ours_s, 1e3), **_batch_ms(embedder)}
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from lmpc_export.embedder import embedder_source

    torch.set_num_threads(THREADS)
    model = AutoModel.from_pretrained(embedder_source(), local_files_only=True).float().eval()
    tokenizer = Tokenizer.from_file(str(bundle.embedder_tokenizer_path))
    tokenizer.no_padding()

    def peer():
        ids = torch.tensor([tokenizer.encode(next(lines)).ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        torch.nn.functional.normalize(hidden.mean(0), dim=0)

    ours_s, peer_s = alternate(lambda: embedder.embed_one(next(lines)), peer, rounds=200)
    return {"line_ms": percentiles(ours_s, 1e3), "torch_fp32_line_ms": percentiles(peer_s, 1e3),
            "ratio_torch_over_ours": statistics.median(peer_s) / statistics.median(ours_s), **_batch_ms(embedder)}


def _batch_ms(embedder: Embedder) -> dict:
    batch = PLAYER_LINES * 8
    t = time.perf_counter()
    embedder.embed(batch)
    return {"batch64_ms_per_text": (time.perf_counter() - t) * 1e3 / len(batch)}


def bench_retrieval(embedder: Embedder, count: int) -> dict:
    texts = synthetic_memories(count)
    t = time.perf_counter()
    vectors = embedder.embed(texts, batch_size=64)
    embed_s = time.perf_counter() - t
    qs = embedder.embed(queries(300))
    ids = np.arange(count, dtype=np.int64)
    exact, hnsw = ExactIndex(vectors.shape[1]), HnswIndex(vectors.shape[1])
    exact.add(ids, vectors)
    t = time.perf_counter()
    hnsw.add(ids, vectors)
    build_s = time.perf_counter() - t
    recall = np.mean([len({i for i, _ in exact.search(q, 10)} & {i for i, _ in hnsw.search(q, 10)}) / 10
                      for q in qs])
    cycle = itertools.cycle(qs)
    hnsw_s, exact_s = alternate(lambda: hnsw.search(next(cycle), 10), lambda: exact.search(next(cycle), 10), 600)

    store = MemoryStore(vectors.shape[1])
    for text, vector in zip(texts, vectors):
        store.add(text, vector, "event")
    store_s, _ = alternate(lambda: store.search(next(cycle), 5), lambda: None, 600)
    return {"memories": count, "embed_all_s": embed_s, "hnsw_build_s": build_s, "recall_at_10": float(recall),
            "hnsw_query_us": percentiles(hnsw_s, 1e6), "exact_query_us": percentiles(exact_s, 1e6),
            "ratio_exact_over_hnsw": statistics.median(exact_s) / statistics.median(hnsw_s),
            "store_search_k5_us": percentiles(store_s, 1e6), "store_backend": store.backend,
            "ef_search": HnswIndex.EF_SEARCH, "M": HnswIndex.M}


def bench_exact_crossover(dim: int) -> dict:
    """Query time of both indexes on random unit vectors at a few sizes, to place MemoryStore's switch."""
    rng = np.random.default_rng(2)
    out = {}
    for n in (512, 1024, 2048, 4096):
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        exact, hnsw = ExactIndex(dim), HnswIndex(dim)
        exact.add(np.arange(n, dtype=np.int64), vectors)
        hnsw.add(np.arange(n, dtype=np.int64), vectors)
        q = itertools.cycle(vectors[:50])
        e, h = alternate(lambda: exact.search(next(q), 10), lambda: hnsw.search(next(q), 10), 300)
        out[n] = {"exact_us": statistics.median(e) * 1e6, "hnsw_us": statistics.median(h) * 1e6}
    return out


def bench_save(bundle_path: Path, embedder: Embedder, tmp: Path) -> dict:
    texts = synthetic_memories(1000)
    vectors = embedder.embed(texts, batch_size=64)
    with Runtime(threads=THREADS, seed=1) as rt:
        npc = rt.load_npc(bundle_path)
        for text, vector in zip(texts, vectors):
            npc.memories.add(text, vector, "event", "benchmark", game_time=1.0)
        for line in PLAYER_LINES[:3]:
            for _ in npc.ask(line):
                pass
        with_kv, kv_tokens = tmp / "npc-kv.sav", npc.context_tokens
        npc.save(with_kv, include_kv=True)
        path = tmp / "npc.sav"
        t = time.perf_counter()
        npc.save(path)
        save_s = time.perf_counter() - t
        t = time.perf_counter()
        npc.load(path)
        load_s = time.perf_counter() - t
        return {"memories": len(npc.memories), "own_memories": 1000, "history": len(npc.history),
                "save_bytes": path.stat().st_size, "save_ms": save_s * 1e3, "load_ms": load_s * 1e3,
                "save_with_kv_bytes": with_kv.stat().st_size,
                "kv_tokens": kv_tokens}


def markdown(results: dict) -> str:
    e, r, s = results["embedding"], results["retrieval"], results["save"]
    peer = (("same, float32 checkpoint in torch (peer)", f"{e['torch_fp32_line_ms']['median']:.2f} ms",
             f"ratio {e['ratio_torch_over_ours']:.2f}x") if "torch_fp32_line_ms" in e else
            ("same, float32 checkpoint in torch (peer)", "skipped", ""))
    rows = [
        ("embed one player line (int8 ONNX, ours)", f"{e['line_ms']['median']:.2f} ms", "<= 5 ms"),
        peer,
        (f"hnswlib query, k=10, {r['memories']} memories", f"{r['hnsw_query_us']['median']:.0f} us", "<= 100 us"),
        ("exact numpy query, same (peer)", f"{r['exact_query_us']['median']:.0f} us",
         f"ratio {r['ratio_exact_over_hnsw']:.2f}x"),
        ("recall@10, hnswlib vs exact", f"{r['recall_at_10']:.3f}", ">= 0.98"),
        ("MemoryStore.search k=5 (gating, re-rank)", f"{r['store_search_k5_us']['median']:.0f} us", ""),
        ("save, 1,000 memories + 3 exchanges, no KV", f"{s['save_bytes'] / 1e6:.3f} MB", "<= 1 MB"),
        ("save / load time", f"{s['save_ms']:.0f} / {s['load_ms']:.0f} ms", ""),
        (f"save with KV ({s['kv_tokens']} tokens)", f"{s['save_with_kv_bytes'] / 1e6:.1f} MB", ""),
    ]
    lines = [f"Machine: {results['machine']}; {THREADS} threads; medians of alternating runs.", "",
             "| measure | value | target / peer |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "Exact vs hnswlib query time (us, random 384-d unit vectors):", "",
              "| memories | exact | hnswlib |", "|---|---|---|"]
    lines += [f"| {n} | {v['exact_us']:.0f} | {v['hnsw_us']:.0f} |" for n, v in results["crossover"].items()]
    return "\n".join(lines) + "\n"


def run_all(bundle_path: Path, memories: int, tmp: Path, torch_peer: bool = True) -> dict:
    """Every memory benchmark; `torch_peer=False` skips the float32 torch embedder (it needs the export extra
    and the real MiniLM checkpoint)."""
    bundle = read_bundle(bundle_path)
    embedder = Embedder(str(bundle.embedder_path), str(bundle.embedder_tokenizer_path), bundle.embedder,
                        EngineOptions(threads=THREADS))
    results = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "load_avg_1min": os.getloadavg()[0]}
    results["embedding"] = bench_embedding(bundle, embedder, torch_peer)
    results["retrieval"] = bench_retrieval(embedder, memories)
    results["crossover"] = bench_exact_crossover(bundle.embedder.dim)
    results["save"] = bench_save(Path(bundle_path), embedder, tmp)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="build/orlando_marlo.lmpc")
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # the saves themselves are not results (one is 45 MB)
        results = run_all(Path(args.bundle), args.memories, Path(tmp))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "memory.json").write_text(json.dumps(results, indent=2))
    (out / "memory.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
