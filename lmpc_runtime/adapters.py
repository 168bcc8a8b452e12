"""Per-NPC LoRA adapters applied at run time, on one shared copy of the base model's weights.

A model exported with a LoRA rank (`ModelSpec.lora_rank`, see export/fused_graph.py) takes, for each
layer i and linear group g, two inputs lora_a.{i}.{g} [A, n·r, K] and lora_b.{i}.{g} [A, n·r, N]: the
low-rank update x · aᵀ · b added to the base product. An adapter is a set of those tables (written by
export/adapters.py as a float32 .npz, held here as [1, n·r, ·] arrays that bind without a copy).

For each forward pass the engine asks `LoraFeeds.feed` for the tables of the batch's rows: the adapter's
own arrays when every row uses the same one (A = 1, broadcast over the batch), else the rows' tables
stacked (A = batch), made when the mix of adapters changes and kept for the next steps of that mix.
Rows without an adapter get zeros.
"""

from __future__ import annotations

import hashlib
import weakref
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import AdapterError

_PREFIX = ("lora_a.", "lora_b.")


def is_lora_input(name: str) -> bool:
    return name.startswith(_PREFIX)


def lora_layer(name: str) -> int:
    """The layer a lora_{a,b}.{i}.{g} input belongs to."""
    return int(name.split(".")[1])


class Adapter:
    """One loaded adapter. `fingerprint` (sha256 of its file) names it in save games and caches."""

    def __init__(self, name: str, fingerprint: str, tables: dict[str, np.ndarray]):
        self.name, self.fingerprint, self.tables = name, fingerprint, tables

    def __repr__(self) -> str:
        return f"Adapter({self.name!r}, {self.fingerprint[:12]})"


def read_adapter(path: Path, expected_sha256: str = "") -> Adapter:
    """Read an adapter file (.npz of float32 tables). A corrupt or foreign file raises
    AdapterError; nothing is executed from it (no pickles)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read the adapter: {exc.strerror or exc}") from exc
    fingerprint = hashlib.sha256(raw).hexdigest()
    if expected_sha256 and fingerprint != expected_sha256:
        raise AdapterError(f"{path}: the adapter does not match the sha256 its bundle records")
    tables = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                value = npz[name]
                if not is_lora_input(name) or value.ndim != 2 or value.dtype != np.float32:
                    raise AdapterError(f"{path}: '{name}' ({value.dtype}, {value.ndim}-D) is not a LoRA table")
                table = value[None]  # [1, n·r, K or N]
                if not np.isfinite(table).all():
                    raise AdapterError(f"{path}: '{name}' holds NaN or infinite values")
                tables[name] = np.ascontiguousarray(table)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise AdapterError(f"{path}: not a readable adapter file: {exc}") from exc
    if not tables:
        raise AdapterError(f"{path}: the adapter holds no tables")
    return Adapter(path.stem, fingerprint, tables)


class LoraFeeds:
    """The LoRA inputs of one engine's graph, and the arrays bound to them for each mix of adapters.

    `shapes` maps each input to [n·r, K or N], as the graph declares it."""

    MIXES_KEPT = 4  # stacked tables of recent mixes (each costs the batch size × one adapter's tables)

    def __init__(self, shapes: dict[str, tuple[int, int]]):
        self.shapes = shapes
        self._zeros: dict[str, np.ndarray] | None = None
        self._mixes: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._adapters: weakref.WeakValueDictionary[str, Adapter] = weakref.WeakValueDictionary()

    def attach(self, adapter: Adapter) -> Adapter:
        """Check that `adapter` fits the graph; returns the engine's copy of it (one per fingerprint, so two
        NPCs with the same adapter share its tables and batch as one)."""
        if not self.shapes:
            raise AdapterError(f"adapter {adapter.name}: this model was exported without LoRA inputs "
                               "(merge the adapter at export, or export the base with a LoRA rank)")
        known = self._adapters.get(adapter.fingerprint)
        if known is not None:
            return known
        missing = sorted(set(self.shapes) - set(adapter.tables))
        extra = sorted(set(adapter.tables) - set(self.shapes))
        wrong = [f"{name} is {list(table.shape[1:])}, the model takes {list(self.shapes[name])}"
                 for name, table in adapter.tables.items()
                 if name in self.shapes and tuple(table.shape[1:]) != tuple(self.shapes[name])]
        if missing or extra or wrong:
            problems = ([f"missing {missing[:3]}"] if missing else []) + (
                [f"unknown {extra[:3]}"] if extra else []) + wrong[:3]
            raise AdapterError(f"adapter {adapter.name} does not fit this model (another base model or rank?): "
                               + "; ".join(problems))
        self._adapters[adapter.fingerprint] = adapter
        return adapter

    def feed(self, adapters: list[Adapter | None]) -> tuple[tuple, dict[str, np.ndarray]]:
        """(a key naming the mix, the arrays to bind) for batch rows using `adapters` (None: no adapter)."""
        key = tuple(a.fingerprint if a is not None else "" for a in adapters)
        if len(set(key)) == 1:
            return key[:1], adapters[0].tables if adapters[0] is not None else self.zeros()
        tables = self._mixes.pop(key, None)
        if tables is None:
            rows = [a.tables if a is not None else self.zeros() for a in adapters]
            tables = {name: np.concatenate([row[name] for row in rows]) for name in self.shapes}
        self._mixes[key] = tables
        while len(self._mixes) > self.MIXES_KEPT:
            self._mixes.popitem(last=False)
        return key, tables

    def zeros(self) -> dict[str, np.ndarray]:
        """The tables of no adapter (np.zeros: pages the OS zero-fills, shared until written)."""
        if self._zeros is None:
            self._zeros = {name: np.zeros((1, *shape), np.float32) for name, shape in self.shapes.items()}
        return self._zeros
