"""The fast engine, for the `lmpc-gqa` layout (see `export/fused_graph.py` for the graph it drives).

The graph's attention operator reads and writes the KV cache in place, so the cache is not passed in
and out of the model at every step: each sequence owns a slot of a `KvPool`, the pool's memory is
bound to the session once (IO binding, by address), and a step moves only token ids in and logits
out. Several sequences decode in one forward pass when their slots are consecutive; `KvPool.gather`
makes them so, copying a sequence's cache only when the set of sequences stepped together changes.

Not thread-safe: one thread drives an engine and its sequences.
"""

from __future__ import annotations

import mmap
import weakref
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .bundle import ModelSpec
from .errors import ContextOverflowError, ModelError
from .prefix_cache import PrefixCache
from .session import EngineOptions, make_session, refuse_mismatched_graph

KINDS = ("key", "value")


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
        self._grow()
        self._owners.append(weakref.ref(seq))
        return self.slots - 1

    def _grow(self) -> None:
        """One more slot. Only the written prefix of each live slot is copied."""
        old = self.storage
        layers, _, slots, kv_heads, capacity, head_dim = old.shape
        self.storage = _mapped_zeros((layers, 2, slots + 1, kv_heads, capacity, head_dim))
        for slot in range(slots):
            seq = self.owner(slot)
            if seq is not None and len(seq):
                self.storage[:, :, slot, :, : len(seq)] = old[:, :, slot, :, : len(seq)]
        self.generation += 1

    def copy(self, src: int, dst: int, length: int) -> None:
        self.storage[:, :, dst, :, :length] = self.storage[:, :, src, :, :length]

    def _swap(self, a: int, b: int) -> None:
        seq_a, seq_b = self.owner(a), self.owner(b)
        length = max(len(seq_a) if seq_a else 0, len(seq_b) if seq_b else 0)
        held = self.storage[:, :, a, :, :length].copy()
        self.storage[:, :, a, :, :length] = self.storage[:, :, b, :, :length]
        self.storage[:, :, b, :, :length] = held
        self._owners[a], self._owners[b] = self._owners[b], self._owners[a]
        for seq, slot in ((seq_a, b), (seq_b, a)):
            if seq is not None:
                seq.slot = slot

    def gather(self, seqs: list["PooledSequence"]) -> int:
        """Put `seqs` in consecutive slots (moving as few as possible); returns the first slot."""
        slots = sorted(seq.slot for seq in seqs)
        if slots[-1] - slots[0] == len(slots) - 1:
            return slots[0]
        front = range(len(seqs))
        taken = set(slots)
        free = [slot for slot in front if slot not in taken]
        for seq in [s for s in seqs if s.slot >= len(seqs)]:
            self._swap(seq.slot, free.pop())
        return 0

    def address(self, layer: int, kind: int, slot: int) -> int:
        """Memory address of the [kv_heads, capacity, head_dim] block of one slot of one layer's K or V."""
        return self.storage[layer, kind, slot].ctypes.data


def _mapped_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros in a fresh anonymous memory map (unmapped when the array is freed)."""
    size = int(np.prod(shape)) * 4
    if size == 0:
        return np.zeros(shape, np.float32)
    return np.frombuffer(mmap.mmap(-1, size), np.float32).reshape(shape)


class PooledSequence:
    """One sequence: `tokens[i]` is the token whose keys/values sit at position i of its pool slot."""

    def __init__(self, pool: KvPool):
        self.tokens: list[int] = []
        self._pool = pool
        self.slot = pool.acquire(self)

    def __len__(self) -> int:
        return len(self.tokens)

    def rewind(self, length: int) -> None:
        """Keep only the first `length` tokens (the cache past them is overwritten by what comes next)."""
        if not 0 <= length <= len(self.tokens):
            raise ValueError(f"cannot rewind a sequence of {len(self.tokens)} tokens to {length}")
        del self.tokens[length:]

    def fork(self) -> "PooledSequence":
        """An independent copy, in a slot of its own."""
        twin = PooledSequence(self._pool)
        self._pool.copy(self.slot, twin.slot, len(self))
        twin.tokens = list(self.tokens)
        return twin


@dataclass
class _Binding:
    """An IO binding with the KV buffers of slots [first, first + batch) bound, and its logits buffer."""

    io: ort.IOBinding
    logits: np.ndarray  # [batch, vocab]


class FusedEngine:
    """One loaded `lmpc-gqa` model, shared by every NPC that uses it."""

    def __init__(self, model_path: str, spec: ModelSpec, options: EngineOptions = EngineOptions(),
                 max_prefixes: int = 8):
        self.spec = spec
        self.options = options
        self.session = make_session(model_path, options)
        self._check_graph(model_path)
        self.pool = KvPool(spec.num_layers, spec.num_kv_heads, spec.context_length, spec.head_dim)
        self.prefixes = PrefixCache(self, max_prefixes)
        self._bindings: dict[tuple[int, int], _Binding] = {}
        self._bound_generation = self.pool.generation

    def _check_graph(self, model_path: str) -> None:
        spec = self.spec
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        kv = {f"past_{kind}.{i}" for i in range(spec.num_layers) for kind in KINDS}
        expected = {"input_ids", "seqlens_k", "total_sequence_length"} | kv
        problems = sorted(expected - set(inputs)) + sorted(set(inputs) - expected)
        for name in sorted(kv & set(inputs)):
            shape = inputs[name]
            if len(shape) != 4 or shape[1] != spec.num_kv_heads or shape[3] != spec.head_dim:
                problems.append(f"{name} has shape {shape}")
        missing = {"logits"} | {n.replace("past_", "present_") for n in kv}
        problems += sorted(missing - outputs)
        refuse_mismatched_graph(model_path, problems)

    def new_sequence(self, prefix: list[int] = ()) -> PooledSequence:
        """An empty sequence, or one holding `prefix` (its cache computed once, then copied)."""
        if prefix:
            return self.prefixes.sequence(list(prefix))
        return PooledSequence(self.pool)

    def extend(self, seq: PooledSequence, tokens: list[int]) -> np.ndarray:
        """Append `tokens` to `seq`; return the logits [vocab] predicting the token after the last one."""
        if not tokens:
            raise ValueError("extend needs at least one token")
        self._check_owned([seq])
        total = len(seq) + len(tokens)
        if total > self.spec.context_length:
            raise ContextOverflowError(f"{total} tokens exceed the model's context of {self.spec.context_length}")
        logits = self._run(seq.slot, [list(tokens)], [total])
        seq.tokens.extend(tokens)
        return logits[0]

    def step(self, seqs: list[PooledSequence], tokens: list[int]) -> np.ndarray:
        """Advance each sequence by its token in one forward pass; returns logits [len(seqs), vocab]."""
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
        first = self.pool.gather(seqs)
        # Rows of the batch follow the slots; `order[row]` is the caller's index of that row.
        order = sorted(range(len(seqs)), key=lambda i: seqs[i].slot)
        logits = self._run(first, [[tokens[i]] for i in order], [len(seqs[i]) + 1 for i in order])
        for seq, token in zip(seqs, tokens):
            seq.tokens.append(token)
        result = np.empty_like(logits)
        result[order] = logits
        return result

    def read_kv(self, seq: PooledSequence) -> np.ndarray:
        """A copy of the sequence's cache, [layers * 2 (key, value), kv_heads, len, head_dim] float32."""
        self._check_owned([seq])
        spec, length = self.spec, len(seq)
        block = self.pool.storage[:, :, seq.slot, :, :length]  # [layers, 2, kv_heads, len, head_dim]
        return block.reshape(2 * spec.num_layers, spec.num_kv_heads, length, spec.head_dim).copy()

    def load_kv(self, tokens: list[int], kv: np.ndarray) -> PooledSequence:
        """A new sequence holding `tokens` with the cache `kv` (as `read_kv` returns it)."""
        spec, length = self.spec, len(tokens)
        seq = PooledSequence(self.pool)
        self.pool.storage[:, :, seq.slot, :, :length] = kv.reshape(
            spec.num_layers, 2, spec.num_kv_heads, length, spec.head_dim)
        seq.tokens = list(tokens)
        return seq

    def _check_owned(self, seqs: list[PooledSequence]) -> None:
        if any(getattr(seq, "_pool", None) is not self.pool for seq in seqs):
            raise ValueError("a sequence can only be extended by the engine that created it")

    def _run(self, first: int, ids: list[list[int]], totals: list[int]) -> np.ndarray:
        """One forward pass over slots [first, first + len(ids)); `totals` are their lengths after it."""
        binding = self._binding(first, len(ids))
        io = binding.io
        io.bind_cpu_input("input_ids", np.asarray(ids, np.int64))
        io.bind_cpu_input("seqlens_k", np.asarray(totals, np.int32) - 1)
        io.bind_cpu_input("total_sequence_length", np.array(max(totals), np.int32))
        try:
            self.session.run_with_iobinding(io)
        except Exception as exc:  # onnxruntime's own error types (allocation failures, shape errors)
            raise ModelError(f"onnxruntime failed: {exc}") from exc
        return binding.logits.copy()

    def _binding(self, first: int, batch: int) -> _Binding:
        """The IO binding of slots [first, first + batch): past and present share the pool's memory."""
        if self._bound_generation != self.pool.generation:
            self._bindings.clear()
            self._bound_generation = self.pool.generation
        binding = self._bindings.get((first, batch))
        if binding is not None:
            return binding
        spec, pool = self.spec, self.pool
        io = self.session.io_binding()
        shape = [batch, spec.num_kv_heads, spec.context_length, spec.head_dim]
        for layer in range(spec.num_layers):
            for k, kind in enumerate(KINDS):
                address = pool.address(layer, k, first)
                io.bind_input(f"past_{kind}.{layer}", "cpu", 0, np.float32, shape, address)
                io.bind_output(f"present_{kind}.{layer}", "cpu", 0, np.float32, shape, address)
        logits = np.empty((batch, spec.vocab_size), np.float32)
        io.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        binding = self._bindings[(first, batch)] = _Binding(io, logits)
        return binding
