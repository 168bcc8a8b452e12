"""Cutting a fused `lmpc-gqa` graph into segments the runtime can run one after another.

A decode step of the whole graph takes longer than a game's frame budget, and onnxruntime cannot stop a
graph half way. So the bundle also carries the model cut at layer boundaries: segment k runs layers
[first_k, end_k), the first segment also embeds `input_ids`, and the LM head (as costly as several
layers) is cut along the vocabulary into segments of its own, the first of which also applies the final
norm and the last concatenates the logits. The scheduler runs as many segments as a frame's budget
allows and resumes the pass in the next frame (see lmpc_runtime/fused_engine.py).

What flows from one layer segment to the next is the residual stream at the boundary, as the whole graph
has it: the last layer's MLP output and the residual before it, two [batch, sequence, hidden] float32
tensors keeping their names in the whole graph (`layer{i}.down.out`, `layer{i}.mlp_norm.residual`). The
next layer adds them in its SkipSimplifiedLayerNorm exactly as it does in the whole graph; the head's
slices are its rows, computed by the same kernel: the segments' logits are the whole graph's, bit for bit.

No weight is copied: a segment's initializers point at the same offsets of the whole graph's data file
(a slice of the head at the offset of its rows), so the bundle holds every weight once, the tied
embedding included (read by the first segment's Gather and by the head's slices).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lmpc_runtime.errors import ExportError

_LAYER_NODE = re.compile(r"layer(\d+)\.")
_EMBEDDING_NODES = ("embed", "embed.reshape")
_HEAD_NODES = ("final_norm", "last_position")
_HEAD_PART_NODE = re.compile(r"lm_head\.part(\d+)(?:\.concat)?")


@dataclass(frozen=True)
class Segment:
    """Layers [first_layer, end_layer) of the model, written to `file` (no layers: a part of the head)."""

    file: str
    first_layer: int
    end_layer: int


def plan(num_layers: int, layers_per_segment: int, head_parts: int) -> list[tuple[int, int]]:
    """Stage ranges: `layers_per_segment` layers each, then the LM head in `head_parts` segments.

    Stage i < num_layers is layer i (the embedding rides with layer 0); stage num_layers + j is the j-th
    slice of the vocabulary of the head. The head is a [hidden, vocab] product that costs about as much
    as eight layers of SmolLM2-135M, so it gets segments of its own, cut along the vocabulary.
    """
    if layers_per_segment < 1 or head_parts < 1:
        raise ExportError(f"segments need at least one layer ({layers_per_segment}) and one head part ({head_parts})")
    ranges = [(first, min(first + layers_per_segment, num_layers))
              for first in range(0, num_layers, layers_per_segment)]
    return ranges + [(num_layers + j, num_layers + j + 1) for j in range(head_parts)]


def _stage(node_name: str, num_layers: int) -> int:
    """Which stage a node belongs to (see `plan`)."""
    match = _LAYER_NODE.match(node_name)
    if match:
        return int(match.group(1))
    if node_name in _EMBEDDING_NODES:
        return 0
    if node_name in _HEAD_NODES:  # the final norm: with the first slice of the head
        return num_layers
    match = _HEAD_PART_NODE.fullmatch(node_name)
    if match:
        return num_layers + int(match.group(1))
    raise ExportError(f"the fused graph has a node '{node_name}' that belongs to no layer")


def _row_slice(tensor, name: str, rows: range):
    """Rows `rows` (first axis) of an initializer, as a new initializer; an external one keeps pointing
    into the same data file, at the slice's offset."""
    from onnx import TensorProto

    part = TensorProto()
    part.CopyFrom(tensor)
    part.name = name
    part.dims[0] = len(rows)
    row_bytes = len(tensor.raw_data) // tensor.dims[0] if tensor.raw_data else None
    if tensor.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        row_bytes = int(info["length"]) // tensor.dims[0]
        del part.external_data[:]
        for key, value in (("location", info["location"]),
                           ("offset", str(int(info.get("offset", 0)) + rows.start * row_bytes)),
                           ("length", str(len(rows) * row_bytes))):
            entry = part.external_data.add()
            entry.key, entry.value = key, value
    elif row_bytes is not None:
        part.raw_data = tensor.raw_data[rows.start * row_bytes: rows.stop * row_bytes]
    else:
        raise ExportError(f"initializer {tensor.name} is stored in a way the head cannot be cut from")
    return part


def cut_head(model, parts: int) -> None:
    """Replace the LM head node by `parts` nodes over slices of the vocabulary, and a Concat of their
    logits (in place). The slices of the tied embedding are views of the same bytes of the data file."""
    from onnx import helper

    graph = model.graph
    index = next(i for i, node in enumerate(graph.node) if node.name == "lm_head")
    head = graph.node[index]
    initializers = {t.name: t for t in graph.initializer}
    weights = [initializers[name] for name in head.input[1:]]
    vocab = weights[0].dims[0]
    bounds = [vocab * j // parts for j in range(parts + 1)]
    nodes, pieces = [], []
    for j, (start, stop) in enumerate(zip(bounds, bounds[1:])):
        sliced = [_row_slice(w, f"{w.name}.part{j}", range(start, stop)) for w in weights]
        graph.initializer.extend(sliced)
        node = helper.make_node(head.op_type, [head.input[0], *(w.name for w in sliced)], [f"logits.part{j}"],
                                name=f"lm_head.part{j}", domain=head.domain)
        node.attribute.extend(a for a in head.attribute if a.name != "N")
        if any(a.name == "N" for a in head.attribute):
            node.attribute.append(helper.make_attribute("N", stop - start))
        nodes.append(node)
        pieces.append(node.output[0])
    nodes.append(helper.make_node("Concat", pieces, list(head.output), name=f"lm_head.part{parts - 1}.concat",
                                  axis=-1))
    del graph.node[index]
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    still_used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def split(model, num_layers: int, ranges: list[tuple[int, int]]) -> list:
    """The segment graphs (onnx ModelProto) of `model`, a whole fused graph loaded without its weights
    whose head is cut in as many parts as `ranges` has stages past the layers."""
    from onnx import TensorProto, helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_inputs = {v.name: v for v in graph.input}
    graph_outputs = {v.name: v for v in graph.output}
    stage_of = [_stage(node.name, num_layers) for node in graph.node]
    members = [[node for node, stage in zip(graph.node, stage_of) if first <= stage < end] for first, end in ranges]
    if sum(map(len, members)) != len(graph.node):
        raise ExportError(f"the segments {ranges} do not cover the graph's nodes exactly once")
    produced_in = {out: k for k, nodes in enumerate(members) for node in nodes for out in node.output if out}
    read_in = {}
    for k, nodes in enumerate(members):
        for node in nodes:
            for name in node.input:
                read_in.setdefault(name, set()).add(k)
    hidden = initializers["final_norm.weight"].dims[0]

    def handed_over(name: str):
        """A tensor one segment gives a later one: the residual stream [batch, sequence, hidden], or in the
        head the last position's hidden state [batch, hidden] and slices of the logits [batch, slice]."""
        if name == "last_hidden":
            shape = ["batch", hidden]
        elif name.startswith("logits.part"):
            j = int(name.removeprefix("logits.part"))
            node = next(n for nodes in members for n in nodes if n.name == f"lm_head.part{j}")
            shape = ["batch", initializers[node.input[1]].dims[0]]
        else:
            shape = ["batch", "sequence", hidden]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    segments = []
    for k, nodes in enumerate(members):
        inputs, weights, seen = [], [], set()
        for name in (name for node in nodes for name in node.input if name):
            if name in seen:
                continue
            seen.add(name)
            if name in initializers:
                weights.append(initializers[name])
            elif name in graph_inputs:
                inputs.append(graph_inputs[name])
            elif produced_in[name] != k:
                inputs.append(handed_over(name))
        outputs = []
        for name in (name for node in nodes for name in node.output if name):
            if name in graph_outputs:
                outputs.append(graph_outputs[name])
            elif any(reader > k for reader in read_in.get(name, ())):
                outputs.append(handed_over(name))
        segment = helper.make_model(helper.make_graph(nodes, f"{graph.name}_segment{k}", inputs, outputs, weights),
                                    opset_imports=list(model.opset_import), producer_name=model.producer_name)
        segment.ir_version = model.ir_version
        segments.append(segment)
    return segments


def write_segments(model_path: Path, out_dir: Path, num_layers: int, layers_per_segment: int,
                   head_parts: int) -> list[Segment]:
    """Write the segments of the fused graph at `model_path` into `out_dir`, which must also hold (or get)
    the whole graph's data file under the same name: the segments read their weights from it."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    ranges = plan(num_layers, layers_per_segment, head_parts)
    cut_head(model, head_parts)
    written = []
    for k, (segment, (first, end)) in enumerate(zip(split(model, num_layers, ranges), ranges)):
        name = f"{model_path.stem}.segment{k}.onnx"
        (out_dir / name).write_bytes(segment.SerializeToString())
        written.append(Segment(name, min(first, num_layers), min(end, num_layers)))
    return written
