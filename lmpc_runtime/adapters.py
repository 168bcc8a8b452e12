"""Per-NPC LoRA adapters applied at run time, on one shared copy of the base model's weights.

A model exported with a LoRA rank r (`ModelSpec.lora_rank`, see export/fused_graph.py) takes, for each
layer i and linear group g of n packed projections, the low-rank update ((x · aᵀ) ⊙ mask) · b added to the
base product: a = lora_a.{i}.{g} [T·n·r, K], b = lora_b.{i}.{g} [T·n·r, N], the tables of T adapters one
after another, and lora_mask.{n} [B, 1, T·n·r] picking each batch row's own. An adapter file (written by
export/adapters.py) holds one adapter's tables, [n·r, K] and [n·r, N] for each input:

    b"LMPCLORA", header length (uint32, little-endian), header (msgpack: {"format_version": 1,
    "tables": [[name, rows, columns], ...]}), zeros up to a multiple of 64 bytes, then the tables'
    float32 values (little-endian), one after another in the header's order.

Flat, so that attaching an adapter is a read of each table from the file into the pool (an .npz took a
third of an NPC's load to parse and check). Read table by table, not mapped: a mapped file's pages count
in the game's memory while they are mapped, and with the pool's copy that was twice the adapter at
each NPC's load (the peak the village's memory is measured by).

`LoraPool` keeps the tables of every adapter attached to an engine in one array per input, an adapter
to a slot, so that the adapters of any batch are a run of consecutive slots: a view bound to the session
by address, never a copy. One NPC's steps bind its own slot alone; a batch mixing adapters binds the run
from the lowest slot to the highest (rows compute the adapters between too, masked out). Slot 0 is zeros:
what a sequence without an adapter uses. The arrays start with room for several adapters: their pages
cost nothing until an adapter is written there, while growing them later copies every live adapter.
"""

from __future__ import annotations

import mmap
import struct
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import sha256_checked, unpack_limited
from .errors import AdapterError

MAGIC = b"LMPCLORA"
FORMAT_VERSION = 1
ALIGN = 64
MAX_HEADER_BYTES = 1 << 20
FIRST_SLOTS = 8  # the pool's arrays at the first adapter: slot 0 and room for 7 adapters

_TABLE_PREFIX = ("lora_a.", "lora_b.")
MASK_PREFIX = "lora_mask."


def is_lora_input(name: str) -> bool:
    return name.startswith(_TABLE_PREFIX) or name.startswith(MASK_PREFIX)


def lora_layer(name: str) -> int:
    """The layer a lora_{a,b}.{i}.{g} input belongs to."""
    return int(name.split(".")[1])


@dataclass
class AdapterTables:
    """An adapter's tables: `tables` maps lora_{a,b}.{i}.{g} to float32 [n·r, K or N], or, for a file,
    yields them one at a time (`read_adapter`), so that attaching one never holds two copies."""

    name: str
    fingerprint: str  # sha256 of the file: names the adapter in save games and caches
    tables: Mapping[str, np.ndarray]

    def names(self) -> list[str]:
        return list(self.tables)


class Adapter:
    """An adapter attached to an engine: which slot of its pool holds the tables. NPCs with the same
    adapter file share one (and batch as one); when the last is gone, its slot is free again."""

    def __init__(self, name: str, fingerprint: str, slot: int):
        self.name, self.fingerprint, self.slot = name, fingerprint, slot

    def __repr__(self) -> str:
        return f"Adapter({self.name!r}, {self.fingerprint[:12]}, slot {self.slot})"


class _AdapterFile(Mapping):
    """The tables of an adapter file, each read from the file when asked for and checked for NaN and
    infinities."""

    def __init__(self, path: Path, index: dict[str, tuple[int, int, int]], first: int):
        # name → (offset in values, rows, columns); the values start `first` bytes into the file
        self.path, self._index, self._first = path, index, first

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __getitem__(self, name: str) -> np.ndarray:
        offset, rows, columns = self._index[name]
        try:
            table = np.fromfile(self.path, dtype="<f4", count=rows * columns, offset=self._first + 4 * offset)
        except OSError as exc:
            raise AdapterError(f"{self.path}: cannot read the adapter: {exc.strerror or exc}") from exc
        if table.size != rows * columns:
            raise AdapterError(f"{self.path}: '{name}' is cut short (the file changed since it was opened?)")
        table = table.reshape(rows, columns)
        if not np.isfinite(table).all():
            raise AdapterError(f"{self.path}: '{name}' holds NaN or infinite values")
        return table


def read_adapter(path: Path, expected_sha256: str = "") -> AdapterTables:
    """Open an adapter file (see the module's docstring): its hash, header and size are checked now, each
    table's values when attached. A corrupt or foreign file raises AdapterError; nothing is executed from it."""
    try:
        fingerprint = sha256_checked(path)  # hashed once per process: the bundle's check did it already
        size = path.stat().st_size
        with open(path, "rb") as f:
            start = f.read(len(MAGIC) + 4)
            if len(start) < len(MAGIC) + 4 or not start.startswith(MAGIC):
                raise AdapterError(f"{path}: not an LMPC adapter file")
            (header_bytes,) = struct.unpack("<I", start[len(MAGIC):])
            if header_bytes > MAX_HEADER_BYTES:
                raise AdapterError(f"{path}: an adapter header of {header_bytes} bytes (at most {MAX_HEADER_BYTES})")
            header = unpack_limited(f.read(header_bytes), str(path), MAX_HEADER_BYTES, error=AdapterError)
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read the adapter: {exc.strerror or exc}") from exc
    if expected_sha256 and fingerprint != expected_sha256:
        raise AdapterError(f"{path}: the adapter does not match the sha256 its bundle records")
    index = _table_index(path, header)
    first = -(-(len(MAGIC) + 4 + header_bytes) // ALIGN) * ALIGN
    values = sum(rows * columns for _, rows, columns in index.values())
    if size != first + 4 * values:
        raise AdapterError(f"{path}: {size} bytes, where its header announces {first + 4 * values} (truncated?)")
    return AdapterTables(path.stem, fingerprint, _AdapterFile(path, index, first))


def _table_index(path: Path, header) -> dict[str, tuple[int, int, int]]:
    """name → (offset in values, rows, columns), from a header checked field by field."""
    if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION \
            or not isinstance(header.get("tables"), list) or not header["tables"]:
        raise AdapterError(f"{path}: not an adapter header of format {FORMAT_VERSION}")
    index, offset = {}, 0
    for entry in header["tables"]:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and entry[0].startswith(_TABLE_PREFIX) and entry[0] not in index
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20 for d in entry[1:])):
            raise AdapterError(f"{path}: not a LoRA table: {str(entry)[:80]}")
        name, rows, columns = entry
        index[name] = (offset, rows, columns)
        offset += rows * columns
    return index


class LoraPool:
    """The tables of every adapter attached to one engine: for each input, an array [slots · rows, last]
    (`shapes[name]` = (rows, last): n·r and K or N), slot s at rows [s · rows, (s + 1) · rows)."""

    def __init__(self):
        self.shapes: dict[str, tuple[int, int]] = {}
        self.masks: dict[str, int] = {}  # lora_mask.{n} → rows of one adapter for it (n · r)
        self._tables: dict[str, np.ndarray] = {}
        self._owners: list[weakref.ref | None] = [None]  # slot 0: zeros, no adapter
        self._by_fingerprint: weakref.WeakValueDictionary[str, Adapter] = weakref.WeakValueDictionary()
        # Bumped whenever the arrays are reallocated: addresses bound to a session are then stale.
        self.generation = 0

    @property
    def slots(self) -> int:
        return len(self._owners)

    def attach(self, read: AdapterTables) -> Adapter:
        """Copy an adapter's tables into a free slot (AdapterError if they do not fit the model); returns
        the handle sequences name. The same file attached twice is one adapter."""
        if not self.shapes:
            raise AdapterError(f"adapter {read.name}: this model was exported without LoRA inputs "
                               "(merge the adapter at export, or export the base with a LoRA rank)")
        known = self._by_fingerprint.get(read.fingerprint)
        if known is not None:
            return known
        self._check_names(read)
        slot = next((s for s in range(1, self.slots) if self._owners[s] is None or self._owners[s]() is None), None)
        if slot is None:
            slot = self.slots
            self._grow()  # the first new slot is free
        # The slot is free until the adapter is returned: a table that fails its checks half way leaves
        # nothing any sequence reads.
        for name, (rows, last) in self.shapes.items():
            table = read.tables[name]
            if table.shape != (rows, last):
                raise AdapterError(f"adapter {read.name} does not fit this model (another base model or rank?): "
                                   f"{name} is {list(table.shape)}, the model takes {[rows, last]}")
            self._tables[name][slot * rows:(slot + 1) * rows] = table
        adapter = Adapter(read.name, read.fingerprint, slot)
        self._owners[slot] = weakref.ref(adapter)
        self._by_fingerprint[read.fingerprint] = adapter
        return adapter

    def _check_names(self, read: AdapterTables) -> None:
        missing = sorted(set(self.shapes) - set(read.names()))
        extra = sorted(set(read.names()) - set(self.shapes))
        if missing or extra:
            problems = ([f"missing {missing[:3]}"] if missing else []) + ([f"unknown {extra[:3]}"] if extra else [])
            raise AdapterError(f"adapter {read.name} does not fit this model (another base model or rank?): "
                               + "; ".join(problems))

    def _grow(self) -> None:
        """Twice the slots (FIRST_SLOTS at the first adapter); only the live adapters' slots are copied over.
        Slot 0 and free slots commit no memory until written (`_zeros`)."""
        live = [s for s in range(1, self.slots) if self._owners[s] is not None and self._owners[s]() is not None]
        slots = max(2 * self.slots, FIRST_SLOTS)
        arrays = _zeros([(slots * rows, last) for rows, last in self.shapes.values()])
        for (name, (rows, last)), grown in zip(self.shapes.items(), arrays):
            for s in live:
                grown[s * rows:(s + 1) * rows] = self._tables[name][s * rows:(s + 1) * rows]
            self._tables[name] = grown
        self._owners += [None] * (slots - self.slots)
        self.generation += 1

    def run(self, adapters: list[Adapter | None]) -> tuple[int, int]:
        """The run of slots [first, end) a batch of rows using `adapters` binds."""
        slots = [a.slot for a in adapters if a is not None] or [0]
        return min(slots), max(slots) + 1

    def tables(self, first: int, end: int) -> dict[str, np.ndarray]:
        """Views of slots [first, end) of every input's array (no copy)."""
        if not self._tables:  # slot 0 alone, for a model none of whose NPCs has an adapter yet
            self._tables = {name: np.zeros((rows, last), np.float32) for name, (rows, last) in self.shapes.items()}
        return {name: self._tables[name][first * rows:end * rows] for name, (rows, _) in self.shapes.items()}

    def masks_for(self, adapters: list[Adapter | None], first: int, end: int) -> dict[str, np.ndarray]:
        """lora_mask.{n} [rows of the batch, 1, (end - first) · n · r]: ones over each row's own slot."""
        out = {}
        for name, rows in self.masks.items():
            mask = np.zeros((len(adapters), 1, (end - first) * rows), np.float32)
            for row, adapter in enumerate(adapters):
                if adapter is not None:
                    start = (adapter.slot - first) * rows
                    mask[row, 0, start:start + rows] = 1.0
            out[name] = mask
        return out


def _zeros(shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """float32 arrays of `shapes`, zero, carved from one anonymous mapping: its pages take memory only
    once written. np.zeros gives that for a large array alone, but arrays of a few hundred KB come from
    the heap, zeroed and so committed at once (8 slots of a village's tables: 22 MB more at load)."""
    sizes = [-(-4 * rows * last // ALIGN) * ALIGN for rows, last in shapes]
    memory = mmap.mmap(-1, max(sum(sizes), 1))
    arrays, offset = [], 0
    for (rows, last), size in zip(shapes, sizes):
        arrays.append(np.frombuffer(memory, np.float32, rows * last, offset).reshape(rows, last))
        offset += size
    return arrays
