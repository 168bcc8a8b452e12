"""A LLaMA-style checkpoint written straight into one fused onnxruntime graph (the `lmpc-gqa` layout).

Why build the graph from the weights instead of rewriting optimum's export: at 135M parameters the
time per token goes to per-operator overhead, and optimum's graph has ~4,000 small nodes (a KV concat,
mask arithmetic and shape glue in every layer) that pattern-matching fusions only partly remove. The
architecture is a handful of operations, so this module emits exactly those, each as onnxruntime's
fused kernel; 11 nodes per layer:

    SkipSimplifiedLayerNorm (residual add + RMSNorm) → MatMulNBits (packed Q|K|V)
    → GroupQueryAttention (rotary inside, KV cache updated in place) → MatMulNBits (O)
    → SkipSimplifiedLayerNorm → MatMulNBits (packed gate|up) → Split → SiLU(gate) · up → MatMulNBits (down)

The tied embedding is stored once, in int8 blocks: GatherBlockQuantized reads it as the token
embedding and MatMulNBits as the LM head, which runs on the last position only (a prefill computes no
logits it would throw away).

Graph interface (B sequences, S new tokens each; C = KV buffer capacity, chosen by the runtime):
    input_ids            int64 [B, S]
    seqlens_k            int32 [B]      tokens in each sequence after this step, minus one
    total_sequence_length int32 []      the largest of those token counts
    past_key.{i}, past_value.{i}  float32 [B, kv_heads, C, head_dim]
    → logits             float32 [B, vocab]  (for the last of the S positions)
    → present_key.{i}, present_value.{i}  the same buffers, written in place when bound to the same memory
GroupQueryAttention accepts S > 1 on a non-empty cache only for B = 1: prefill runs one sequence at a
time, decode steps batch any number.

With `lora_rank` r > 0 the graph also takes low-rank updates at run time (per-NPC adapters of rank r on
one copy of the base weights; lmpc_runtime/adapters.py). The runtime keeps every adapter's tables in one
pool per input, adapter after adapter, and binds the run of adapters a batch uses; a mask picks each row's
own. Each layer's four linear groups g (qkv, o, gate_up, down; K inputs, N outputs, n projections packed)
add ((x · A_gᵀ) ⊙ mask_n) · B_g to the base product, four nodes each:
    lora_a.{i}.{g}  float32 [T·n·r, K]     the tables of T consecutive adapters of the pool
    lora_b.{i}.{g}  float32 [T·n·r, N]
    lora_mask.{n}   float32 [B, 1, T·n·r]  1 over the rows of each sequence's adapter, 0 elsewhere
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmpc_runtime.errors import ExportError

from .quantize import BlockQuantized, quantize

LAYOUT = "lmpc-gqa"
OPSET = 21
# The linear groups of a layer, in the order the graph computes them, with the projections each packs.
LINEAR_GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "gate_up": ("gate_proj", "up_proj"),
                 "down": ("down_proj",)}


@dataclass(frozen=True)
class Variant:
    """How the weights are stored: float32, or `bits`-bit blocks of `block` inputs, computed with int8
    activations quantised in blocks of the same size."""

    name: str
    bits: int | None  # None: float32 weights (the parity baseline of the graph itself)
    block: int = 32
    accuracy_level: int = 4  # MatMulNBits: 4 quantises activations to int8 blocks (VNNI/AMX kernels)


VARIANTS = {
    "fp32": Variant("fp32", None),
    "int8": Variant("int8", 8),  # llama.cpp's Q8_0 scheme
    "int8-b16": Variant("int8-b16", 8, block=16),  # finer activation scales; 1.25 bytes per weight, not 1.125
    "int4": Variant("int4", 4),
}


def load_weights(checkpoint: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint's safetensors files, as float32 numpy arrays."""
    from safetensors.numpy import load_file

    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{checkpoint}: no .safetensors weights")
    weights: dict[str, np.ndarray] = {}
    for path in files:
        weights.update({k: v.astype(np.float32) for k, v in load_file(str(path)).items()})
    return weights


def rotary_tables(config: dict, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [positions, head_dim / 2] of LLaMA's rotary embedding (half-split, not interleaved)."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    if config.get("rope_scaling"):
        raise ExportError(f"rope_scaling {config['rope_scaling']} is not supported")
    inv_freq = 1.0 / (config.get("rope_theta", 10000.0) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.arange(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class _GraphWriter:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs) -> list[str]:
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs


class FusedGraphBuilder:
    def __init__(self, config: dict, weights: dict[str, np.ndarray], variant: Variant, lora_rank: int = 0):
        if config.get("model_type", "llama") != "llama" or config.get("hidden_act", "silu") != "silu":
            raise ExportError("only LLaMA-style models (SiLU MLP) can be written in the fused layout")
        if not config.get("tie_word_embeddings", False) and "lm_head.weight" in weights:
            raise ExportError("the fused layout expects tied embeddings (one shared copy for input and output)")
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise ExportError("biases in attention or MLP are not supported by the fused layout")
        self.config, self.weights, self.variant = config, weights, variant
        # Rotary tables for every position the model was trained for: a bundle's context may be shorter.
        self.positions = config.get("max_position_embeddings", 2048)
        self.hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads", self.heads)
        self.head_dim = config.get("head_dim") or self.hidden // self.heads
        self.vocab = config["vocab_size"]
        self.layers = config["num_hidden_layers"]
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.lora_rank = lora_rank
        self.lora_inputs: list[tuple[str, list]] = []  # (name, its shape)
        self.g = _GraphWriter()

    def _w(self, name: str) -> np.ndarray:
        try:
            return self.weights[name]
        except KeyError:
            raise ExportError(f"the checkpoint has no tensor '{name}'") from None

    def _quantized(self, name: str, weight: np.ndarray) -> tuple[BlockQuantized, list[str]]:
        q = quantize(weight, self.variant.bits, self.variant.block)
        inputs = [self.g.const(f"{name}.q", q.data), self.g.const(f"{name}.scales", q.scales)]
        if q.zero_points is not None:
            inputs.append(self.g.const(f"{name}.zero_points", q.zero_points))
        return q, inputs

    def _linear(self, name: str, x: str, weight: np.ndarray) -> str:
        """x [..., K] @ weight.T, weight [N, K] in torch Linear layout (plus the run-time adapter's update)."""
        out = f"{name}.out"
        base = f"{name}.base" if self.lora_rank else out
        if self.variant.bits is None:
            self.g.node("MatMul", [x, self.g.const(f"{name}.weight_t", weight.T)], [base], name)
        else:
            q, inputs = self._quantized(name, weight)
            self.g.node("MatMulNBits", [x, *inputs], [base], name, domain="com.microsoft", K=q.k, N=q.n,
                        bits=q.bits, block_size=q.block, accuracy_level=self.variant.accuracy_level)
        if self.lora_rank:
            self._low_rank_update(name, x, base, out, weight.shape)
        return out

    def _low_rank_update(self, name: str, x: str, base: str, out: str, shape: tuple[int, int]) -> None:
        """out = base + ((x [B, S, K] · lora_a [R, K]ᵀ → [B, S, R]) ⊙ mask [B, 1, R]) · lora_b [R, N]."""
        layer, group = name.removeprefix("layer").split(".")
        a, b = f"lora_a.{layer}.{group}", f"lora_b.{layer}.{group}"
        parts = len(LINEAR_GROUPS[group])
        mask = f"lora_mask.{parts}"
        rows = f"lora_rows.{parts}"  # T · n · r: the same for every input of n packed projections
        self.lora_inputs += [(a, [rows, shape[1]]), (b, [rows, shape[0]])]
        if (mask, ["batch", 1, rows]) not in self.lora_inputs:
            self.lora_inputs.append((mask, ["batch", 1, rows]))
        g = self.g
        down = g.node("FusedMatMul", [x, a], [f"{name}.lora_down"], f"{name}.lora_a", domain="com.microsoft",
                      transB=1)[0]
        own = g.node("Mul", [down, mask], [f"{name}.lora_own"], f"{name}.lora_mask")[0]
        up = g.node("MatMul", [own, b], [f"{name}.lora_up"], f"{name}.lora_b")[0]
        g.node("Add", [base, up], [out], f"{name}.lora_add")

    def _embedding_and_head(self) -> tuple[str, callable]:
        """Embeds input_ids; returns the embeddings and a function that applies the tied LM head."""
        table = self._w("model.embed_tokens.weight")
        g = self.g
        if self.variant.bits is None:
            w = g.const("embed.weight", table)
            g.node("Gather", [w, "input_ids"], ["embed.out"], "embed")
            head = lambda x: g.node("Gemm", [x, w], ["logits"], "lm_head", transB=1)[0]  # noqa: E731
            return "embed.out", head
        # One int8 copy of the table [V, H / block, block], read by both operators. GatherBlockQuantized wants
        # its scales with the data's rank, MatMulNBits wants them 2-D: the 3.5 MB of scales exist twice.
        q = quantize(table, 8, self.variant.block)
        data = g.const("embed.q", q.data)
        gather_scales = g.const("embed.gather_scales", q.scales[:, :, None])
        g.node("GatherBlockQuantized", [data, "input_ids", gather_scales], ["embed.blocks"], "embed",
               domain="com.microsoft", bits=8, block_size=q.block, gather_axis=0, quantize_axis=2)
        g.node("Reshape", ["embed.blocks", g.const("embed.shape", np.array([0, 0, self.hidden], np.int64))],
               ["embed.out"], "embed.reshape")
        scales = g.const("embed.scales", q.scales)

        def head(x: str) -> str:
            return g.node("MatMulNBits", [x, data, scales], ["logits"], "lm_head", domain="com.microsoft",
                          K=q.k, N=q.n, bits=8, block_size=q.block, accuracy_level=self.variant.accuracy_level)[0]

        return "embed.out", head

    def build(self):
        from onnx import TensorProto, helper

        g, hd = self.g, self.head_dim
        cos, sin = rotary_tables(self.config, self.positions)
        g.const("rotary.cos", cos)
        g.const("rotary.sin", sin)
        x, head = self._embedding_and_head()
        residual = None
        for i in range(self.layers):
            p = f"model.layers.{i}"
            x, residual = self._norm(f"layer{i}.attn_norm", x, residual, self._w(f"{p}.input_layernorm.weight"))
            qkv = self._linear(f"layer{i}.qkv", x, np.concatenate(
                [self._w(f"{p}.self_attn.{m}_proj.weight") for m in ("q", "k", "v")], axis=0))
            attn = g.node("GroupQueryAttention",
                          [qkv, "", "", f"past_key.{i}", f"past_value.{i}", "seqlens_k", "total_sequence_length",
                           "rotary.cos", "rotary.sin"],
                          [f"layer{i}.attn.out", f"present_key.{i}", f"present_value.{i}"],
                          f"layer{i}.attn", domain="com.microsoft", num_heads=self.heads, kv_num_heads=self.kv_heads,
                          do_rotary=1, rotary_interleaved=0, scale=float(1.0 / np.sqrt(hd)))[0]
            x = self._linear(f"layer{i}.o", attn, self._w(f"{p}.self_attn.o_proj.weight"))
            x, residual = self._norm(f"layer{i}.mlp_norm", x, residual, self._w(f"{p}.post_attention_layernorm.weight"))
            gate_up = self._linear(f"layer{i}.gate_up", x, np.concatenate(
                [self._w(f"{p}.mlp.gate_proj.weight"), self._w(f"{p}.mlp.up_proj.weight")], axis=0))
            inter = self.config["intermediate_size"]
            gate, up = g.node("Split", [gate_up, g.const(f"layer{i}.split", np.array([inter, inter], np.int64))],
                              [f"layer{i}.gate", f"layer{i}.up"], f"layer{i}.split", axis=-1)
            sig = g.node("Sigmoid", [gate], [f"layer{i}.sigmoid"], f"layer{i}.sigmoid")[0]
            silu = g.node("Mul", [gate, sig], [f"layer{i}.silu"], f"layer{i}.silu")[0]
            act = g.node("Mul", [silu, up], [f"layer{i}.act"], f"layer{i}.act")[0]
            x = self._linear(f"layer{i}.down", act, self._w(f"{p}.mlp.down_proj.weight"))
        x, _ = self._norm("final_norm", x, residual, self._w("model.norm.weight"))
        # Only the last position predicts a token: [B, S, H] → [B, H].
        last = g.node("Gather", [x, g.const("last_position", np.array(-1, np.int64))], ["last_hidden"],
                      "last_position", axis=1)[0]
        head(last)

        kv_shape = ["batch", self.kv_heads, "capacity", hd]
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        ]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", self.vocab])]
        for i in range(self.layers):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_{kind}.{i}", TensorProto.FLOAT, kv_shape))
                outputs.append(helper.make_tensor_value_info(f"present_{kind}.{i}", TensorProto.FLOAT, kv_shape))
        inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in self.lora_inputs]
        graph = helper.make_graph(g.nodes, "lmpc_gqa", inputs, outputs, g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                         helper.make_opsetid("com.microsoft", 1)],
                                  producer_name="lmpc")
        model.ir_version = 10
        return model

    def _norm(self, name: str, x: str, residual: str | None, weight: np.ndarray) -> tuple[str, str]:
        """RMSNorm of x + residual; returns (normalised, the new residual stream)."""
        g = self.g
        w = g.const(f"{name}.weight", weight)
        if residual is None:  # the first norm reads the embeddings, which are the residual stream
            return g.node("SimplifiedLayerNormalization", [x, w], [f"{name}.out"], name, axis=-1,
                          epsilon=self.eps, stash_type=1)[0], x
        out = g.node("SkipSimplifiedLayerNormalization", [x, residual, w],
                     [f"{name}.out", "", "", f"{name}.residual"], name, domain="com.microsoft", epsilon=self.eps)
        return out[0], out[3]


def data_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".data")


def export_fused(checkpoint: Path, out_path: Path, variant: Variant,
                 weights: dict[str, np.ndarray] | None = None, lora_rank: int = 0) -> Path:
    """Write the `lmpc-gqa` graph of `checkpoint` with `variant` weights (taking adapters of rank
    `lora_rank` at run time, if not 0) to `out_path`, its weights beside it in `data_path(out_path)`.
    onnxruntime maps that file into memory rather than copying it: after its kernels have repacked the
    weights, only the embedding rows actually read stay resident."""
    import onnx

    config = json.loads((checkpoint / "config.json").read_text())
    if weights is None:
        weights = load_weights(checkpoint)
    model = FusedGraphBuilder(config, weights, variant, lora_rank).build()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data_path(out_path).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(out_path), save_as_external_data=True, location=data_path(out_path).name)
    data_path(out_path).chmod(0o644)  # onnx creates it private; bundles are meant to be shared
    return out_path
