"""A peft LoRA adapter turned into the low-rank tables the runtime applies on one shared base model.

The fused graph packs projections that read the same input into one product (q|k|v, gate|up; see
fused_graph.py), so it takes one low-rank update per packed group of n projections: x · A_gᵀ · B_g with
A_g [n·R, K] and B_g [n·R, N], R the graph's rank. An adapter of rank r gives each projection p the
update s · x · A_pᵀ · B_pᵀ (s = alpha / r), so a group's update has rank up to n · r. For r ≤ R the
tables are exact (the A_p stacked, the B_p block-diagonal, zero-padded); for r > R the group's update is
cut to its n·R largest singular directions, and how much of it that keeps (its share of the update's
squared norm) is reported: the export's parity check then shows what the cut costs in tokens.

The tables are written in float32 (float16 would halve them, but rounds the small values of B past what the
parity check allows), one pair per layer and group: `lora_a.{i}.{g}` [n·R, K], `lora_b.{i}.{g}` [n·R, N],
in the runtime's flat adapter file (lmpc_runtime/adapters.py).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpc_runtime.errors import ExportError

from . import checkpoint as ckpt
from .fused_graph import LINEAR_GROUPS

_MODULE_OF = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
              "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


@dataclass(frozen=True)
class LowRankTables:
    tables: dict[str, np.ndarray]  # lora_a.{i}.{g} [n·R, K] and lora_b.{i}.{g} [n·R, N], float32
    rank: int  # R, per projection
    kept: dict[str, float]  # group → the smallest share of an update's squared norm kept, over layers


def _projection_sizes(config: dict) -> dict[str, tuple[int, int]]:
    """(N outputs, K inputs) of each projection of a layer."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    return {"q_proj": (heads * head_dim, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden),
            "o_proj": (hidden, heads * head_dim), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
            "down_proj": (hidden, inter)}


def _peft_factors(adapter: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """layers.{i}.{projection} → (A [r, K], B [N, r]) and the scale s, from a peft adapter directory."""
    from safetensors.numpy import load_file

    ckpt.adapter_fingerprint(adapter)  # checks both files are there
    config = json.loads((adapter / ckpt.ADAPTER_CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{adapter}: a {config.get('peft_type')} adapter, not LoRA")
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_dora"):
        raise ExportError(f"{adapter}: per-module ranks, alphas or DoRA cannot be applied at run time; merge it")
    r = int(config["r"])
    scale = float(config["lora_alpha"]) / (r ** 0.5 if config.get("use_rslora") else r)
    factors: dict[str, list] = {}
    for key, value in load_file(str(adapter / ckpt.ADAPTER_WEIGHTS)).items():
        # base_model.model.model.layers.{i}.{self_attn|mlp}.{projection}.lora_{A|B}.weight
        parts = key.split(".")
        if "layers" not in parts or parts[-2] not in ("lora_A", "lora_B"):
            raise ExportError(f"{adapter}: unexpected tensor '{key}' (only LoRA on the layers' projections "
                              "can be applied at run time)")
        i = parts[parts.index("layers") + 1]
        factors.setdefault(f"layers.{i}.{parts[-3]}", [None, None])[parts[-2] == "lora_B"] = value.astype(np.float32)
    return {k: tuple(v) for k, v in factors.items()}, scale


def low_rank_tables(adapter: Path, config: dict, rank: int) -> LowRankTables:
    """The adapter's update of every layer and group as tables of `rank` per projection (see the module's
    docstring)."""
    factors, scale = _peft_factors(adapter)
    sizes = _projection_sizes(config)
    tables: dict[str, np.ndarray] = {}
    kept: dict[str, float] = {}
    for i in range(config["num_hidden_layers"]):
        for group, projections in LINEAR_GROUPS.items():
            k = sizes[projections[0]][1]
            a_rows, b_blocks, n = [], [], 0
            for p in projections:
                a, b = factors.pop(f"layers.{i}.{p}", (None, None))
                size = sizes[p][0]
                if a is not None:
                    if a.shape[1] != k or b.shape[0] != size:
                        raise ExportError(f"{adapter}: layer {i} {p} has A {a.shape} and B {b.shape}, the model "
                                          f"needs [r, {k}] and [{size}, r]")
                    block = np.zeros((a.shape[0], sum(sizes[q][0] for q in projections)), np.float32)
                    block[:, n:n + size] = scale * b.T
                    a_rows.append(a)
                    b_blocks.append(block)
                n += size
            a_g = np.concatenate(a_rows) if a_rows else np.zeros((0, k), np.float32)
            b_g = np.concatenate(b_blocks) if b_blocks else np.zeros((0, n), np.float32)
            a_g, b_g, share = _fit_rank(a_g, b_g, rank * len(projections))
            tables[f"lora_a.{i}.{group}"], tables[f"lora_b.{i}.{group}"] = a_g, b_g
            kept[group] = min(kept.get(group, 1.0), share)
    if factors:
        raise ExportError(f"{adapter}: LoRA on {sorted(factors)[:3]} does not belong to the model's layers")
    return LowRankTables(tables, rank, kept)


def _fit_rank(a: np.ndarray, b: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Tables [rank, K], [rank, N] giving the update aᵀ·b [K, N]: zero-padded if it fits, else its best rank-
    `rank` approximation, the singular values shared evenly by both sides.
    Returns them and the share of the update's squared norm kept."""
    if a.shape[0] <= rank:
        pad = rank - a.shape[0]
        return np.pad(a, ((0, pad), (0, 0))), np.pad(b, ((0, pad), (0, 0))), 1.0
    # aᵀ·b through the QR factors of both sides: an SVD of a small [r, r] core instead of [K, N].
    qa, ra = np.linalg.qr(a.T.astype(np.float64))  # aᵀ = qa ra: [K, r], [r, r]
    qb, rb = np.linalg.qr(b.T.astype(np.float64))  # bᵀ = qb rb: [N, r], [r, r]
    u, s, vt = np.linalg.svd(ra @ rb.T)
    root = np.sqrt(s[:rank])
    a_fit = (qa @ u[:, :rank] * root).T
    b_fit = (qb @ vt[:rank].T * root).T
    return a_fit.astype(np.float32), b_fit.astype(np.float32), float((s[:rank] ** 2).sum() / max((s ** 2).sum(), 1e-30))


def write_tables(tables: LowRankTables, path: Path) -> Path:
    """The tables as an adapter file (its format: lmpc_runtime/adapters.py)."""
    import msgpack

    from lmpc_runtime.adapters import ALIGN, FORMAT_VERSION, MAGIC

    names = sorted(tables.tables)
    header = msgpack.packb({"format_version": FORMAT_VERSION,
                            "tables": [[name, *tables.tables[name].shape] for name in names]}, use_bin_type=True)
    start = MAGIC + struct.pack("<I", len(header)) + header
    with open(path, "wb") as f:
        f.write(start + bytes(-len(start) % ALIGN))
        for name in names:
            f.write(np.ascontiguousarray(tables.tables[name], dtype="<f4").tobytes())
    return path
