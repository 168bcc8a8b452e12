"""The fast engine, for the `lmpc-gqa` layout (see `export/fused_graph.py` for the graph it drives).

The graph's attention operator reads and writes the KV cache in place, so the cache is not passed in
and out of the model at every step: each sequence owns a slot of a `KvPool`, the pool's memory is
bound to the session once (IO binding, by address), and a step moves only token ids in and logits
out. Several sequences decode in one forward pass when their slots are consecutive; `KvPool.gather`
makes them so, copying a sequence's cache only when the set of sequences stepped together changes.

A bundle carries the whole graph and the same model cut into segments of a few layers
(export/segments.py), one session each. Paced passes run a segment at a time: `begin_extend`/`begin_step`
start a `ForwardPass`, each `advance()` runs one segment, and the caller (the per-frame scheduler) may stop
between two and go on in the next frame. Until a pass completes or is cancelled, its sequences are held
(`SequenceBusyError` for anything that would change them); their cache grows only when the pass
completes, so a cancelled pass leaves it as it was. Synchronous passes (`extend`, `step`: `npc.ask`, a
tool) have no frame to keep and run the whole graph, one onnxruntime run instead of 34.

Each graph is opened when first needed (the paced one at once, so that a bad graph fails at load):
onnxruntime prepacks the weights of each session, and Python cannot share them, so holding both graphs
costs a second copy of the weights (~190 MB). A game in tick mode that never calls `npc.ask` opens only
the segments; worker mode and `EngineOptions(segmented=False)` only the whole graph.

A model exported with a LoRA rank takes per-NPC adapters at run time (see adapters.py): each sequence
names its adapter (or none), and a batch of sequences with different adapters still runs as one pass.

Not thread-safe: one thread drives an engine and its sequences.
"""

from __future__ import annotations

import mmap
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .adapters import MASK_PREFIX, Adapter, AdapterTables, LoraPool, is_lora_input, lora_layer
from .bundle import ModelSpec
from .errors import ContextOverflowError, ModelError, SequenceBusyError, StateError
from .prefix_cache import PrefixCache
from .session import EngineOptions, make_session, refuse_mismatched_graph

KINDS = ("key", "value")
# The two graphs of a bundle: the whole model in one session, and the same model cut into segments.
WHOLE, SEGMENTED = "whole", "segmented"
# Inputs and outputs every segment has, or the first and last have; any other name is the hidden state
# one segment hands to the next.
_LENGTH_INPUTS = ("seqlens_k", "total_sequence_length")


class KvPool:
    """Keys and values of every live sequence of one engine, in a single array

        storage [layers, 2 (key, value), slots, kv_heads, capacity, head_dim]   float32

    so that, for each layer, a run of consecutive slots is one [batch, kv_heads, capacity, head_dim]
    tensor, the layout the attention operator reads. Each slot has room for a whole context; memory is
    nonetheless committed only for positions written (in 4 KB pages, 16 positions), because the array
    lives in an anonymous memory map whose zeroed pages the OS provides on first touch. (numpy's own
    allocator asks Linux for 2 MB transparent huge pages for big arrays, which would commit every
    slot whole.) Slots of sequences that were garbage-collected are reused.
    """

    def __init__(self, layers: int, kv_heads: int, capacity: int, head_dim: int):
        self.storage = _mapped_zeros((layers, 2, 0, kv_heads, capacity, head_dim))
        self._owners: list[weakref.ref] = []
        # Bumped whenever `storage` is reallocated: addresses bound to a session are then stale.
        self.generation = 0

    @property
    def slots(self) -> int:
        return self.storage.shape[2]

    def owner(self, slot: int) -> "PooledSequence | None":
        return self._owners[slot]()

    def acquire(self, seq: "PooledSequence") -> int:
        for slot, ref in enumerate(self._owners):
            if ref() is None:
                self._owners[slot] = weakref.ref(seq)
                return slot
        self._grow(1)
        self._owners[-1] = weakref.ref(seq)
        return self.slots - 1

    def _grow(self, count: int) -> None:
        """`count` more slots, free. Only the written part of each live slot is copied, including the
        positions a pass in flight has written so far (it is rebound to the new storage before it goes on)."""
        old = self.storage
        layers, _, slots, kv_heads, capacity, head_dim = old.shape
        self.storage = _mapped_zeros((layers, 2, slots + count, kv_heads, capacity, head_dim))
        for slot in range(slots):
            seq = self.owner(slot)
            if seq is not None and seq.extent:
                self.storage[:, :, slot, :, : seq.extent] = old[:, :, slot, :, : seq.extent]
        self._owners += [_dead_ref] * count
        self.generation += 1

    def copy(self, src: int, dst: int, length: int) -> None:
        self.storage[:, :, dst, :, :length] = self.storage[:, :, src, :, :length]

    def _swap(self, a: int, b: int) -> None:
        seq_a, seq_b = self.owner(a), self.owner(b)
        length = max(seq_a.extent if seq_a else 0, seq_b.extent if seq_b else 0)
        held = self.storage[:, :, a, :, :length].copy()
        self.storage[:, :, a, :, :length] = self.storage[:, :, b, :, :length]
        self.storage[:, :, b, :, :length] = held
        self._owners[a], self._owners[b] = self._owners[b], self._owners[a]
        for seq, slot in ((seq_a, b), (seq_b, a)):
            if seq is not None:
                seq.slot = slot

    def gather(self, seqs: list["PooledSequence"]) -> int:
        """Put `seqs` in consecutive slots (moving as few as possible); returns the first slot.

        Sequences held by a pass in flight stay where they are: their slots are bound to that pass."""
        mine = {seq.slot for seq in seqs}
        n = len(seqs)
        if max(mine) - min(mine) == n - 1:
            return min(mine)
        pinned = {slot for slot in range(self.slots) if slot not in mine
                  and (owner := self.owner(slot)) is not None and owner.busy}
        windows = [first for first in range(self.slots - n + 1) if not pinned & set(range(first, first + n))]
        if windows:
            first = max(windows, key=lambda f: (len(mine & set(range(f, f + n))), -f))
        else:
            first = self.slots
            self._grow(n)
        window = range(first, first + n)
        free = [slot for slot in window if slot not in mine]
        for seq in [s for s in seqs if s.slot not in window]:
            self._swap(seq.slot, free.pop())
        return first

    def address(self, layer: int, kind: int, slot: int) -> int:
        """Memory address of the [kv_heads, capacity, head_dim] block of one slot of one layer's K or V."""
        return self.storage[layer, kind, slot].ctypes.data


def _mapped_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros in a fresh anonymous memory map (unmapped when the array is freed)."""
    size = int(np.prod(shape)) * 4
    if size == 0:
        return np.zeros(shape, np.float32)
    return np.frombuffer(mmap.mmap(-1, size), np.float32).reshape(shape)


def _dead_ref() -> None:
    """The owner of a free slot."""
    return None


class PooledSequence:
    """One sequence: `tokens[i]` is the token whose keys/values sit at position i of its pool slot, computed
    with `adapter`'s update of the weights (None: the base model's)."""

    def __init__(self, pool: KvPool, adapter: Adapter | None = None):
        self.tokens: list[int] = []
        self.adapter = adapter
        self._pool = pool
        self.slot = pool.acquire(self)
        self.in_flight: ForwardPass | None = None  # the pass writing positions len(self).. now

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def busy(self) -> bool:
        return self.in_flight is not None

    @property
    def extent(self) -> int:
        """Positions of the slot holding keys/values: the tokens, and those of a pass in flight."""
        return len(self.tokens) + (self.in_flight.new_tokens if self.in_flight is not None else 0)

    def rewind(self, length: int) -> None:
        """Keep only the first `length` tokens (the cache past them is overwritten by what comes next)."""
        _check_free([self])
        if not 0 <= length <= len(self.tokens):
            raise ValueError(f"cannot rewind a sequence of {len(self.tokens)} tokens to {length}")
        del self.tokens[length:]

    def fork(self) -> "PooledSequence":
        """An independent copy, in a slot of its own. Allowed while a pass is in flight: the pass writes
        only positions past the tokens, and the copy takes just the tokens' keys and values."""
        twin = PooledSequence(self._pool, self.adapter)
        self._pool.copy(self.slot, twin.slot, len(self))
        twin.tokens = list(self.tokens)
        return twin


def _check_free(seqs: list[PooledSequence]) -> None:
    if any(seq.busy for seq in seqs):
        raise SequenceBusyError("a forward pass over this sequence is in flight: finish or cancel it first")


@dataclass
class _Binding:
    """An IO binding of one segment with the KV buffers of slots [first, first + batch) bound (and, for the
    last segment, its logits buffer)."""

    io: ort.IOBinding
    logits: np.ndarray | None  # [batch, vocab]
    lora_key: tuple = ()  # (first slot, end slot, pool generation) of the adapter tables bound


@dataclass
class _Segment:
    """One segment's session: it runs `layers` (none: a part of the LM head), reads the tensors named in
    `carried_in` that earlier segments gave, and gives `carried_out` (name → shape, dims "batch" and
    "sequence" standing for the pass's) to later ones."""

    session: ort.InferenceSession
    layers: range
    step_inputs: list[str]  # of input_ids, seqlens_k, total_sequence_length: those it reads
    carried_in: list[str]
    carried_out: dict[str, list]
    last_read: list[str]  # tensors no later segment reads
    lora_tables: list[str]  # lora_{a,b}.{i}.{g} of its layers
    lora_masks: list[str]  # the lora_mask.{n} its layers read


_PLACEHOLDER = ort.OrtValue.ortvalue_from_numpy(np.zeros(1, np.float32))


class ForwardPass:
    """One forward pass over some sequences (a prefill chunk of one, or a decode step of several), run a
    segment at a time. Made by `FusedEngine.begin_extend` / `begin_step`."""

    def __init__(self, engine: "FusedEngine", graph: str, seqs: list[PooledSequence], tokens: list[list[int]]):
        _check_free(seqs)
        self.engine, self.seqs = engine, seqs
        self._graph = graph
        self._segments = engine.graph(graph)
        self.new_tokens = len(tokens[0])  # positions each sequence gains (as many for each)
        self.next_segment = 0
        self._first = engine.pool.gather(seqs) if len(seqs) > 1 else seqs[0].slot
        # Rows of the batch follow the slots; `order[row]` is the caller's index of that row.
        self._order = sorted(range(len(seqs)), key=lambda i: seqs[i].slot)
        ids = np.asarray([tokens[i] for i in self._order], np.int64)  # [batch, new tokens]
        totals = np.asarray([len(seqs[i]) + self.new_tokens for i in self._order], np.int32)
        # OrtValues made once and bound to each segment: binding one costs a microsecond, binding a numpy
        # array tens of them, which adds up over a dozen segments.
        self._sizes = {"batch": ids.shape[0], "sequence": ids.shape[1]}
        self._inputs = {"input_ids": ort.OrtValue.ortvalue_from_numpy(ids),
                        "seqlens_k": ort.OrtValue.ortvalue_from_numpy(totals - 1),
                        "total_sequence_length": ort.OrtValue.ortvalue_from_numpy(np.array(totals.max(), np.int32))}
        # The adapters' tables: the run of pool slots the rows use (views, bound by address), and each row's mask.
        adapters = [seqs[i].adapter for i in self._order]
        if engine.lora.shapes:
            first, end = engine.lora.run(adapters)
            self._lora_key = (first, end, engine.lora.generation)
            self._lora_tables = engine.lora.tables(first, end)
            self._inputs |= {name: ort.OrtValue.ortvalue_from_numpy(mask)
                             for name, mask in engine.lora.masks_for(adapters, first, end).items()}
        elif any(adapters):
            raise StateError("a sequence names an adapter, but this model takes none")
        # What a segment gives later ones, e.g. the residual stream [batch, new tokens, hidden].
        self._carried: dict[str, ort.OrtValue] = {}
        self._appended = tokens
        for seq in seqs:
            seq.in_flight = self

    @property
    def segments(self) -> int:
        return len(self._segments)

    @property
    def done(self) -> bool:
        return self.next_segment == self.segments

    def advance(self) -> np.ndarray | None:
        """Run the next segment. After the last one the sequences hold their new tokens, are released, and
        the logits [len(seqs), vocab] (of each sequence's last position, in the caller's order) are returned."""
        if self.done:
            raise StateError("this forward pass was completed or cancelled")
        engine, k = self.engine, self.next_segment
        segment = self._segments[k]
        binding = engine._binding(self._graph, k, self._first, len(self.seqs))
        io = binding.io
        for name in segment.step_inputs:
            io.bind_ortvalue_input(name, self._inputs[name])
        for name in segment.lora_masks:
            io.bind_ortvalue_input(name, self._inputs[name])
        if segment.lora_tables and binding.lora_key != self._lora_key:
            # Views of the pool, read by address: valid until the pool grows (its generation changes).
            for name in segment.lora_tables:
                table = self._lora_tables[name]
                io.bind_input(name, "cpu", 0, np.float32, list(table.shape), table.ctypes.data)
            binding.lora_key = self._lora_key
        for name in segment.carried_in:
            io.bind_ortvalue_input(name, self._carried[name])
        for name, shape in segment.carried_out.items():
            out = self._carried[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                [self._sizes.get(dim, dim) for dim in shape], np.float32)
            io.bind_ortvalue_output(name, out)
        try:
            segment.session.run_with_iobinding(io)
        except Exception as exc:  # onnxruntime's own error types (allocation failures, shape errors)
            self.cancel()
            raise ModelError(f"onnxruntime failed: {exc}") from exc
        finally:
            # A kept binding keeps what was bound to it alive: with a binding per segment and batch, the
            # activations of old passes held 75 MB for three NPCs. Bind a placeholder until the next pass.
            for name in segment.carried_in:
                io.bind_ortvalue_input(name, _PLACEHOLDER)
            for name in segment.carried_out:
                io.bind_ortvalue_output(name, _PLACEHOLDER)
        self.next_segment += 1
        for name in segment.last_read:
            del self._carried[name]
        if not self.done:
            return None
        self._release()
        for seq, tokens in zip(self.seqs, self._appended):
            seq.tokens.extend(tokens)
        logits = np.empty_like(binding.logits)
        logits[self._order] = binding.logits
        return logits

    def finish(self) -> np.ndarray:
        """Run every segment left; returns the logits as `advance` does after the last."""
        logits = None
        while logits is None:
            logits = self.advance()
        return logits

    def cancel(self) -> None:
        """Stop here: the sequences are released as they were (what the pass wrote past them is ignored
        and overwritten by the next pass)."""
        self.next_segment = self.segments
        self._carried.clear()
        self._release()

    def _release(self) -> None:
        for seq in self.seqs:
            if seq.in_flight is self:
                seq.in_flight = None


class FusedEngine:
    """One loaded `lmpc-gqa` model, shared by every NPC that uses it."""

    def __init__(self, model_path: str, spec: ModelSpec, options: EngineOptions = EngineOptions(),
                 max_prefixes: int = 8):
        self.spec = spec
        self.options = options
        # Each graph as its pieces: (file, layers it runs).
        self._pieces = {WHOLE: [(model_path, range(spec.num_layers))]}
        if spec.segments and options.segmented:
            folder = Path(model_path).parent
            self._pieces[SEGMENTED] = [(str(folder / s.file), range(s.first_layer, s.end_layer))
                                       for s in spec.segments]
        self.paced = SEGMENTED if SEGMENTED in self._pieces else WHOLE  # the graph `begin_*` passes run
        self._graphs: dict[str, list[_Segment]] = {}
        self.lora = LoraPool()
        self.graph(self.paced)
        self.pool = KvPool(spec.num_layers, spec.num_kv_heads, spec.context_length, spec.head_dim)
        self.prefixes = PrefixCache(self, max_prefixes)
        self._bindings: dict[tuple[str, int, int, int], _Binding] = {}
        self._bound_generation = self.pool.generation

    def graph(self, kind: str) -> list[_Segment]:
        """The sessions of the whole graph (one) or of the segments, opened on first use."""
        graph = self._graphs.get(kind)
        if graph is None:
            graph = self._graphs[kind] = self._open_graph(self._pieces[kind])
        return graph

    @property
    def open_graphs(self) -> list[str]:
        return sorted(self._graphs)

    @property
    def segments(self) -> int:
        """Segments of a paced pass: the scheduler sizes passes so that each segment fits a frame's budget."""
        return len(self.graph(self.paced))

    def _open_graph(self, pieces: list[tuple[str, range]]) -> list[_Segment]:
        segments = [self._open_segment(path, layers, k == 0, k == len(pieces) - 1)
                    for k, (path, layers) in enumerate(pieces)]
        given: set[str] = set()
        for (path, _), segment in zip(pieces, segments):
            refuse_mismatched_graph(path, [f"reads {name}, which no segment before gives"
                                           for name in segment.carried_in if name not in given])
            given |= set(segment.carried_out)
        for k, segment in enumerate(segments):
            later = {name for after in segments[k + 1:] for name in after.carried_in}
            segment.last_read = [name for name in segment.carried_in if name not in later]
        return segments

    def _open_segment(self, path: str, layers: range, first: bool, last: bool) -> _Segment:
        spec = self.spec
        session = make_session(path, self.options)
        inputs = {i.name: i.shape for i in session.get_inputs()}
        outputs = {o.name: o.shape for o in session.get_outputs()}
        kv = {f"past_{kind}.{i}" for i in layers for kind in KINDS}
        lora = sorted(name for name in inputs if is_lora_input(name))
        # Lengths are read by the attention of each layer; token ids by the embedding of the first segment.
        standard = ({"input_ids"} if first else set()) | (set(_LENGTH_INPUTS) if layers else set()) | kv | set(lora)
        carried_in = sorted(set(inputs) - standard - {"input_ids"})
        expected = standard | set(carried_in)
        problems = sorted(expected - set(inputs))
        if first and carried_in:
            problems.append(f"unexpected inputs {carried_in}")
        for name in sorted(kv & set(inputs)):
            shape = inputs[name]
            if len(shape) != 4 or shape[1] != spec.num_kv_heads or shape[3] != spec.head_dim:
                problems.append(f"{name} has shape {shape}")
        present = {n.replace("past_", "present_") for n in kv}
        problems += sorted((present | ({"logits"} if last else set())) - set(outputs))
        carried_out = {name: shape for name, shape in outputs.items() if name not in present | {"logits"}}
        if last and carried_out:
            problems.append(f"unexpected outputs {sorted(carried_out)}")
        problems += [f"{name} has shape {shape}" for name, shape in carried_out.items()
                     if not all(isinstance(dim, int) or dim in ("batch", "sequence") for dim in shape)]
        problems += self._lora_problems({name: inputs[name] for name in lora}, layers)
        refuse_mismatched_graph(path, problems)
        return _Segment(session, layers, sorted(standard - kv - set(lora)), carried_in, carried_out, [],
                        [n for n in lora if not n.startswith(MASK_PREFIX)], [n for n in lora if n.startswith(MASK_PREFIX)])

    def _lora_problems(self, inputs: dict[str, list], layers: range) -> list[str]:
        """What is wrong with a segment's LoRA inputs (none if the manifest promises none); records their
        shapes for the pool: tables [lora_rows.{n}, K or N] and masks [batch, 1, lora_rows.{n}], where an
        adapter's part is n · r rows."""
        if not self.spec.lora_rank:
            return [f"unexpected input {name}" for name in inputs][:1]
        problems = []
        for name, shape in inputs.items():
            rows = shape[-1] if name.startswith(MASK_PREFIX) else shape[0]
            parts = rows.removeprefix("lora_rows.") if isinstance(rows, str) else ""
            if not parts.isdigit():
                problems.append(f"{name} has shape {shape}")
            elif name.startswith(MASK_PREFIX):
                if shape[:2] != ["batch", 1]:
                    problems.append(f"{name} has shape {shape}")
                self.lora.masks[name] = int(parts) * self.spec.lora_rank
            elif lora_layer(name) not in layers or len(shape) != 2 or not isinstance(shape[1], int):
                problems.append(f"{name} has shape {shape}")
            else:
                self.lora.shapes[name] = (int(parts) * self.spec.lora_rank, shape[1])
        if layers and not inputs:
            problems.append(f"no LoRA inputs for layers {layers.start}..{layers.stop - 1}")
        return problems

    def new_sequence(self, prefix: list[int] = (), adapter: Adapter | None = None) -> PooledSequence:
        """An empty sequence, or one holding `prefix` (its cache computed once, then copied), run with
        `adapter` (one that `attach_adapter` returned) or the base weights."""
        if prefix:
            return self.prefixes.sequence(list(prefix), adapter)
        return PooledSequence(self.pool, adapter)

    def attach_adapter(self, tables: AdapterTables) -> Adapter:
        """Put an adapter's tables into this engine's pool (AdapterError if they do not fit the model);
        returns the adapter to give `new_sequence` (NPCs loading the same adapter file share one)."""
        return self.lora.attach(tables)

    def begin_extend(self, seq: PooledSequence, tokens: list[int], graph: str | None = None) -> ForwardPass:
        """Start appending `tokens` to `seq` (see ForwardPass; its logits have one row), on the paced graph
        unless `graph` says which."""
        if not tokens:
            raise ValueError("extend needs at least one token")
        self._check_owned([seq])
        total = len(seq) + len(tokens)
        if total > self.spec.context_length:
            raise ContextOverflowError(f"{total} tokens exceed the model's context of {self.spec.context_length}")
        return ForwardPass(self, graph or self.paced, [seq], [list(tokens)])

    def begin_step(self, seqs: list[PooledSequence], tokens: list[int], graph: str | None = None) -> ForwardPass:
        """Start advancing each sequence by its token in one forward pass (see ForwardPass), on the paced
        graph unless `graph` says which."""
        if not seqs or len(seqs) != len(tokens):
            raise ValueError(f"step needs one token for each of at least one sequence, not {len(seqs)} sequences "
                             f"and {len(tokens)} tokens")
        if len({id(s) for s in seqs}) != len(seqs):
            raise ValueError("a sequence can advance only once per step")
        self._check_owned(seqs)
        for seq in seqs:
            if len(seq) + 1 > self.spec.context_length:
                raise ContextOverflowError(
                    f"{len(seq) + 1} tokens exceed the model's context of {self.spec.context_length}")
        return ForwardPass(self, graph or self.paced, seqs, [[token] for token in tokens])

    def extend(self, seq: PooledSequence, tokens: list[int]) -> np.ndarray:
        """Append `tokens` to `seq` in one whole pass; return the logits [vocab] predicting the token after
        the last one."""
        return self.begin_extend(seq, tokens, WHOLE).finish()[0]

    def step(self, seqs: list[PooledSequence], tokens: list[int]) -> np.ndarray:
        """Advance each sequence by its token in one whole pass; returns logits [len(seqs), vocab]."""
        return self.begin_step(seqs, tokens, WHOLE).finish()

    def read_kv(self, seq: PooledSequence) -> np.ndarray:
        """A copy of the sequence's cache, [layers * 2 (key, value), kv_heads, len, head_dim] float32.
        Allowed while a pass is in flight, which writes only past the sequence's tokens."""
        self._check_owned([seq])
        spec, length = self.spec, len(seq)
        block = self.pool.storage[:, :, seq.slot, :, :length]  # [layers, 2, kv_heads, len, head_dim]
        return block.reshape(2 * spec.num_layers, spec.num_kv_heads, length, spec.head_dim).copy()

    def load_kv(self, tokens: list[int], kv: np.ndarray, adapter: Adapter | None = None) -> PooledSequence:
        """A new sequence holding `tokens` with the cache `kv` (as `read_kv` returns it, computed with
        `adapter`)."""
        spec, length = self.spec, len(tokens)
        seq = PooledSequence(self.pool, adapter)
        self.pool.storage[:, :, seq.slot, :, :length] = kv.reshape(
            spec.num_layers, 2, spec.num_kv_heads, length, spec.head_dim)
        seq.tokens = list(tokens)
        return seq

    def _check_owned(self, seqs: list[PooledSequence]) -> None:
        if any(getattr(seq, "_pool", None) is not self.pool for seq in seqs):
            raise ValueError("a sequence can only be extended by the engine that created it")

    def _binding(self, graph: str, segment: int, first: int, batch: int) -> _Binding:
        """The IO binding of one segment of a graph for slots [first, first + batch): past and present share
        the pool's memory. Bindings are made again after the pool's storage moved (it grew)."""
        if self._bound_generation != self.pool.generation:
            self._bindings.clear()
            self._bound_generation = self.pool.generation
        key = (graph, segment, first, batch)
        binding = self._bindings.get(key)
        if binding is not None:
            return binding
        spec, pool, segments = self.spec, self.pool, self._graphs[graph]
        io = segments[segment].session.io_binding()
        shape = [batch, spec.num_kv_heads, spec.context_length, spec.head_dim]
        for layer in segments[segment].layers:
            for k, kind in enumerate(KINDS):
                address = pool.address(layer, k, first)
                io.bind_input(f"past_{kind}.{layer}", "cpu", 0, np.float32, shape, address)
                io.bind_output(f"present_{kind}.{layer}", "cpu", 0, np.float32, shape, address)
        logits = None
        if segment == len(segments) - 1:
            logits = np.empty((batch, spec.vocab_size), np.float32)
            io.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        binding = self._bindings[key] = _Binding(io, logits)
        return binding
