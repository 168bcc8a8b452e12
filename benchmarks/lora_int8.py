"""What int8 adapter tables would buy at run time (issue 18), and where the adapter's time goes: decode
steps of the merged model, of the village's base with its float32 LoRA tables, and of the same base
rewritten for int8 tables; one sequence, and batches of four sequences with four different adapters or one
shared.

    .venv/bin/python -m benchmarks.lora_int8 [--village build/village] [--merged build/orlando_marlo.lmpc] [--reps 3]

Four int8 formulations, each a rewrite of the base graph:
- DynamicQuantizeMatMul: each linear group's update (FusedMatMul → Mul by the mask → MatMul → Add, on
  float32 tables) becomes onnxruntime's DynamicQuantizeMatMul on int8 tables, broadcast over a run of T
  adapters: x [1, B, S, K] · a [T, 1, K, R] → [T, B, S, R], times each row's scales and mask [T, B, 1, R],
  · b [T, 1, R, N], summed over T, added to the base product (six operators a group);
- Cast: the same four operators, each table passed as int8 and cast to float32 in the graph (the scales
  of both tables would fold into a mask per layer and group);
- DequantizeLinear: each table int8 with a scale per row, dequantised in the graph;
- the a tables cast, the b tables dequantised (the a table's scales would fold into the b table's).
And one float32 contender that separates the update's operators from its bytes: the shipped graph with
tables of rank 1 (the same operators, a sixteenth of the bytes). Beside them, one product of the base
model's own int8 kernel (MatMulNBits) with its weights constant, as the base's are, and as a graph input, as
an adapter's would be.

The tables are random: the time does not depend on their values, so this measures the formulation, not the
adapter; its numbers would need a parity check before any export wrote it. Each contender runs in a fresh
process, in turns (PERF.md): 100 tokens in each sequence's cache, 60 timed steps bound as the engine binds
them (IO binding, cache updated in place, a mixed batch binding the run of its adapters with each row's
mask or scales), the runtime's session options (2 threads, no spinning). Results: results/lora_int8.json
and lora_int8.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .stats import ratios, save, spread

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CACHED, STEPS, CAPACITY = 100, 60, 512


def rewrite_for_int8(base_model: Path, rank: int, out: Path) -> Path:
    """The base graph (LoRA inputs of `rank`) with every update on int8 tables (see the module's docstring),
    written to `out`, beside the base: onnxruntime reads the base's data file only from the graph's own
    directory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(base_model), load_external_data=False)
    graph = model.graph
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    graph.initializer.extend([numpy_helper.from_array(np.array(1.0, np.float32), "int8.one"),
                              numpy_helper.from_array(np.array([0], np.int64), "int8.axis0")])
    nodes = {n.name: n for n in graph.node}
    replaced, dropped, inputs = {}, set(), []
    for node in graph.node:
        if node.op_type != "FusedMatMul" or not node.name.endswith(".lora_a"):
            continue
        group = node.name.removesuffix(".lora_a")
        x, a = node.input
        b = a.replace("lora_a", "lora_b")
        k, n = shapes[a][1], shapes[b][1]
        r = int(shapes[a][0].removeprefix("lora_rows.")) * rank  # one adapter's rows: n packed projections · rank
        add = nodes[f"{group}.lora_add"]
        qa, qb, scale = f"int8_{a}", f"int8_{b}", f"int8_scale{a.removeprefix('lora_a')}"
        inputs += [helper.make_tensor_value_info(qa, TensorProto.INT8, ["adapters", 1, k, r]),
                   helper.make_tensor_value_info(qb, TensorProto.INT8, ["adapters", 1, r, n]),
                   helper.make_tensor_value_info(scale, TensorProto.FLOAT, ["adapters", "batch", 1, r])]
        replaced[node.name] = [
            helper.make_node("Unsqueeze", [x, "int8.axis0"], [f"{group}.x4"], f"{group}.x4"),
            helper.make_node("DynamicQuantizeMatMul", [f"{group}.x4", qa, "int8.one"], [f"{group}.down"],
                             f"{group}.down", domain="com.microsoft"),
            helper.make_node("Mul", [f"{group}.down", scale], [f"{group}.scaled"], f"{group}.scale"),
            helper.make_node("DynamicQuantizeMatMul", [f"{group}.scaled", qb, "int8.one"], [f"{group}.up"],
                             f"{group}.up", domain="com.microsoft"),
            helper.make_node("ReduceSum", [f"{group}.up", "int8.axis0"], [f"{group}.sum"], f"{group}.sum", keepdims=0),
            helper.make_node("Add", [add.input[0], f"{group}.sum"], [add.output[0]], f"{group}.add")]
        dropped |= {f"{group}.lora_mask", f"{group}.lora_b", f"{group}.lora_add"}
    kept = []
    for node in graph.node:
        kept += replaced.get(node.name, [] if node.name in dropped else [node])
    del graph.node[:]
    graph.node.extend(kept)
    others = [i for i in graph.input if not i.name.startswith("lora_")]
    del graph.input[:]
    graph.input.extend(others + inputs)
    onnx.save(model, str(out))
    return out


def rewrite_for_conversion(base_model: Path, out: Path, a_op: str, b_op: str) -> Path:
    """The base graph with every table passed as int8 and converted to float32 before the update's own
    operators, lora_a.* by `a_op` and lora_b.* by `b_op`: "Cast", or "DequantizeLinear" with a scale per
    row (input `dq_scale.<table>` [rows]); written to `out` beside the base."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(base_model), load_external_data=False)
    graph = model.graph
    tables = {i.name: i for i in graph.input if i.name.startswith(("lora_a.", "lora_b."))}
    converted = []
    for name, spec in tables.items():
        spec.type.tensor_type.elem_type = TensorProto.INT8
        if (a_op if name.startswith("lora_a.") else b_op) == "Cast":
            converted.append(helper.make_node("Cast", [name], [f"{name}.float"], f"{name}.cast", to=TensorProto.FLOAT))
        else:
            rows = spec.type.tensor_type.shape.dim[0].dim_param
            graph.input.append(helper.make_tensor_value_info(f"dq_scale.{name}", TensorProto.FLOAT, [rows]))
            converted.append(helper.make_node("DequantizeLinear", [name, f"dq_scale.{name}"], [f"{name}.float"],
                                              f"{name}.dequantize", axis=0))
    for node in graph.node:
        node.input[:] = [f"{x}.float" if x in tables else x for x in node.input]
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend(converted + kept)  # the conversions read graph inputs only: first is topological
    onnx.save(model, str(out))
    return out


def child(model: str, rank: int, batch: int = 1, adapters: int = 1) -> dict:
    """Tokens per second of STEPS decode steps of `model` for `batch` sequences, row b using adapter
    b % `adapters`, in this process."""
    from lmpc_runtime.engine import EngineOptions
    from lmpc_runtime.session import make_session

    session = make_session(model, EngineOptions())
    rng = np.random.default_rng(0)
    io, held = session.io_binding(), []

    def bind(name: str, array: np.ndarray) -> None:
        held.append(array)
        io.bind_cpu_input(name, array)

    for spec in session.get_inputs():
        name, shape = spec.name, spec.shape
        if name == "input_ids":
            bind(name, np.full((batch, 1), 1234, np.int64))
        elif name == "seqlens_k":
            bind(name, np.full(batch, CACHED, np.int32))
        elif name == "total_sequence_length":
            bind(name, np.array(CACHED + 1, np.int32))
        elif name.startswith("past_"):
            cache = np.zeros((batch, shape[1], CAPACITY, shape[3]), np.float32)  # [batch, kv_heads, capacity, head_dim]
            held.append(cache)
            io.bind_input(name, "cpu", 0, np.float32, list(cache.shape), cache.ctypes.data)
            io.bind_output(name.replace("past_", "present_"), "cpu", 0, np.float32, list(cache.shape), cache.ctypes.data)
        elif name.startswith("lora_mask"):  # [batch, 1, adapters · R]: ones over each row's adapter
            rows = int(shape[2].split(".")[1]) * rank
            mask = np.zeros((batch, 1, adapters * rows), np.float32)
            for b in range(batch):
                mask[b, 0, (b % adapters) * rows:(b % adapters + 1) * rows] = 1.0
            bind(name, mask)
        elif name.startswith("lora_") and spec.type == "tensor(int8)":  # converted in the graph
            rows = int(shape[0].split(".")[1]) * rank
            bind(name, rng.integers(-127, 128, (adapters * rows, shape[1]), dtype=np.int8))
        elif name.startswith("lora_"):  # [adapters · R, K or N]
            rows = int(shape[0].split(".")[1]) * rank
            bind(name, (0.01 * rng.standard_normal((adapters * rows, shape[1]))).astype(np.float32))
        elif name.startswith("dq_scale."):  # [adapters · R]
            bind(name, np.full(adapters * int(shape[0].split(".")[1]) * rank, 1e-4, np.float32))
        elif name.startswith("int8_lora"):  # [adapters, 1, K, R] or [adapters, 1, R, N]
            bind(name, rng.integers(-127, 128, (adapters, 1, shape[2], shape[3]), dtype=np.int8))
        elif name.startswith("int8_scale"):  # [adapters, batch, 1, R]: each row's scales under its adapter
            scales = np.zeros((adapters, batch, 1, shape[3]), np.float32)
            for b in range(batch):
                scales[b % adapters, b] = 1e-4
            bind(name, scales)
        else:
            raise ValueError(f"{model}: an input this benchmark does not know: {name}")
    logits = np.empty((batch, session.get_outputs()[0].shape[-1]), np.float32)
    io.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
    for _ in range(5):
        session.run_with_iobinding(io)
    start = time.perf_counter()
    for _ in range(STEPS):
        session.run_with_iobinding(io)
    return {"tokens_per_s": STEPS * batch / (time.perf_counter() - start)}


def run_child(*args: object) -> dict:
    """This module's `--child ARGS` in a fresh process: its JSON result."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.lora_int8", "--child", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def int8_product_us(weights_constant: bool, k: int = 576, n: int = 3072, block: int = 32, runs: int = 200) -> float:
    """Microseconds of one MatMulNBits product x [1, 1, k] · int8 weights [n, k], the base model's kernel,
    with its weights an initializer (prepacked at load) or a graph input, as adapter tables would be."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.integers(0, 256, (n, k // block, block), dtype=np.uint8)
    scales = np.full((n, k // block), 0.01, np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, k])]
    feed = {"x": rng.standard_normal((1, 1, k)).astype(np.float32)}
    if weights_constant:
        initializers = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(scales, "s")]
    else:
        initializers = []
        inputs += [helper.make_tensor_value_info("w", TensorProto.UINT8, list(weights.shape)),
                   helper.make_tensor_value_info("s", TensorProto.FLOAT, list(scales.shape))]
        feed |= {"w": weights, "s": scales}
    node = helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=8,
                            block_size=block, accuracy_level=4)
    graph = helper.make_graph([node], "product", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, n])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(10):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return (time.perf_counter() - start) / runs * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lora_int8", description=__doc__.split("\n\n")[0])
    p.add_argument("--village", type=Path, default=REPO / "build" / "village" / "orlando_marlo.lmpc")
    p.add_argument("--merged", type=Path, default=REPO / "build" / "orlando_marlo.lmpc")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.child and args.child[0] == "product":
        print(json.dumps({"us": int8_product_us(args.child[1] == "constant")}))
        return 0
    if args.child:
        print(json.dumps(child(args.child[0], *map(int, args.child[1:]))))
        return 0
    from lmpc_runtime import read_bundle

    from .machine import describe, summary_line

    village, merged = read_bundle(args.village), read_bundle(args.merged)
    rank = village.model.lora_rank
    # The rewrites go beside the base (onnxruntime reads its data file only from the graph's own
    # directory) and are removed afterwards.
    base = village.model_path
    rewrites = [base.with_name(f".int8-{kind}.onnx") for kind in ("dqmm", "cast", "dequantize", "cast-dq")]
    try:
        int8 = rewrite_for_int8(base, rank, rewrites[0])
        cast = rewrite_for_conversion(base, rewrites[1], "Cast", "Cast")
        dequantize = rewrite_for_conversion(base, rewrites[2], "DequantizeLinear", "DequantizeLinear")
        cast_dq = rewrite_for_conversion(base, rewrites[3], "Cast", "DequantizeLinear")
        contenders = {"one NPC, merged model": (merged.model_path, 1, 1),
                      "one NPC, fp32 tables (shipped)": (village.model_path, 1, 1),
                      "one NPC, fp32 tables of rank 1 (the operators, 1/16 of the bytes)": (village.model_path, 1, 1, 1),
                      "one NPC, int8 tables (DynamicQuantizeMatMul)": (int8, 1, 1),
                      "one NPC, int8 tables cast to float32 in the graph": (cast, 1, 1),
                      "one NPC, int8 tables dequantised in the graph": (dequantize, 1, 1),
                      "one NPC, int8 tables, a cast, b dequantised": (cast_dq, 1, 1),
                      "4 NPCs, 4 adapters, fp32 tables (shipped)": (village.model_path, 4, 4),
                      "4 NPCs, one adapter, fp32 tables (shipped)": (village.model_path, 4, 1),
                      "4 NPCs, 4 adapters, int8 tables (DynamicQuantizeMatMul)": (int8, 4, 4),
                      "4 NPCs, one adapter, int8 tables (DynamicQuantizeMatMul)": (int8, 4, 1),
                      "4 NPCs, 4 adapters, int8 tables cast to float32 in the graph": (cast, 4, 4),
                      "4 NPCs, one adapter, int8 tables cast to float32 in the graph": (cast, 4, 1),
                      "4 NPCs, 4 adapters, int8 tables, a cast, b dequantised": (cast_dq, 4, 4),
                      "4 NPCs, one adapter, int8 tables, a cast, b dequantised": (cast_dq, 4, 1)}
        runs: dict[str, list[float]] = {label: [] for label in contenders}
        product: dict[str, list[float]] = {"constant": [], "input": []}
        for _ in range(args.reps):
            for label, (model, batch, adapters, *tables_rank) in contenders.items():
                runs[label].append(run_child(model, tables_rank[0] if tables_rank else rank, batch, adapters)["tokens_per_s"])
            for weights in product:
                product[weights].append(run_child("product", weights)["us"])
    finally:
        for path in rewrites:
            path.unlink(missing_ok=True)
    merged_speed = runs["one NPC, merged model"]
    singles = [label.removeprefix("one NPC, ") for label in runs if label.startswith("one NPC, ") and "merged" not in label]
    mixed = [label.removeprefix("4 NPCs, 4 adapters, ") for label in runs if label.startswith("4 NPCs, 4 adapters, ")]
    summary = {"tokens_per_s": {label: spread(v) for label, v in runs.items()},
               "single_vs_merged": {tables: ratios(runs[f"one NPC, {tables}"], merged_speed) for tables in singles},
               "mixed_vs_shared": {tables: ratios(runs[f"4 NPCs, 4 adapters, {tables}"], runs[f"4 NPCs, one adapter, {tables}"])
                                   for tables in mixed},
               "int8_product_us": {weights: spread(v) for weights, v in product.items()}}
    machine = describe()
    report = {"date": time.strftime("%Y-%m-%d"), "machine": summary_line(machine), "reps": args.reps, "rank": rank,
              "runs": runs, "product_us": product, "summary": summary}

    def cell(d: dict, fmt: str) -> str:
        return f"{d['median']:{fmt}} [{d['min']:{fmt}}–{d['max']:{fmt}}]"

    lines = [f"# Run-time adapter tables in int8 against float32 ({report['date']})", "",
             f"{report['machine']}. {args.reps} reps, each a fresh process, contenders in turns; median [min–max]. "
             f"Decode steps, {CACHED} tokens cached in each sequence, {STEPS} steps; rank {rank}; the runtime's "
             "session options (2 threads, no spinning); random tables.", "",
             "| contender | tokens/s |", "|---|---|"]
    lines += [f"| {label} | {cell(d, '.1f')} |" for label, d in summary["tokens_per_s"].items()]
    lines += ["", "| tables | one NPC against the merged model (target ≥ 0.9×) | 4 adapters against one shared (target ≥ 0.85×) |",
              "|---|---|---|"]
    lines += [f"| {tables} | {cell(ratio, '.2f')}× | "
              + (f"{cell(summary['mixed_vs_shared'][tables], '.2f')}× |" if tables in summary["mixed_vs_shared"] else "not run |")
              for tables, ratio in summary["single_vs_merged"].items()]
    lines += ["", "One int8 product, x [1, 1, 576] · weights [3072, 576], on onnxruntime's MatMulNBits (the base model's "
              "kernel), one thread:", "", "| weights | µs |", "|---|---|"]
    lines += [f"| {'an initializer, prepacked at load' if weights == 'constant' else 'a graph input, as tables would be'} | "
              f"{cell(d, '.0f')} |" for weights, d in summary["int8_product_us"].items()]
    save(args.out, "lora_int8", report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
