"""Import of SillyTavern Character Cards (V1, V2 `chara_card_v2`, V3 `chara_card_v3`) as character sheets.

A card comes as JSON or as a PNG whose `tEXt` chunk `chara` (V2) or `ccv3` (V3) holds the card's JSON in
base64. Card fields map onto the sheet where they mean the same thing, text kept verbatim:

    name → name            personality → summary       description → backstory
    first_mes → greeting   scenario → world.description mes_example → [[examples]]
The lorebook (`character_book`) becomes the sheet's `[lorebook]` (`lorebook_from_card`). `{{user}}` stays
in the text: the runtime resolves it with the player's name (`lmpc_runtime.macros`). Everything else
(creator notes, alternate greetings, tags, the card's own `extensions`, V3 assets…) is kept under the
sheet's `extensions.chara_card`, with the raw `mes_example`, so nothing the card held is lost. The
imported sheet builds and talks as it is; a card has no place for much of what makes a sheet's NPC
better (title, values, objectives, facts, the world's order, opinions, ten examples), and
`SheetImport.advice` lists it, most useful first (`lmpc check` says the same). `SheetImport.problems`
holds what would stop a build (a broken lorebook entry, say).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpc_runtime.errors import SheetError
from lmpc_runtime.macros import CHAR_MACRO
from lmpc_runtime.sheet import SHEET_FORMAT, advice, parse_sheet

from .toml_writer import dumps, strip_nulls

MAX_CARD_BYTES = 32 * 1024 * 1024
MAX_FIELD_CHARS = 100_000  # far beyond any real card's field, and far beyond what a prompt can hold
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_SPECS = {"chara_card_v2": 2, "chara_card_v3": 3}
EXTENSION_KEY = "chara_card"
# Card fields whose text becomes a sheet field verbatim (after {{char}} is replaced by the name).
_MAPPED = {"name", "personality", "description", "first_mes", "scenario"}
_START = re.compile(r"<START>", re.IGNORECASE)
# Lorebook fields a card's book and its entries share with the sheet's `[lorebook]`.
_BOOK_FIELDS = {"name", "description", "scan_depth", "token_budget", "recursive_scanning"}
_ENTRY_FIELDS = {"keys", "secondary_keys", "content", "enabled", "constant", "selective", "insertion_order",
                 "priority", "case_sensitive", "name", "comment", "id", "position"}
# SillyTavern's `extensions.selectiveLogic` codes.
_SELECTIVE_LOGIC = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}
# A card written from a sheet keeps what only the sheet has under this key of its `extensions`.
SHEET_EXTENSION = "lmpc"
_ENTRY_ONLY = {"requires", "match_whole_words"}  # lorebook entry fields a card has no name for


@dataclass
class SheetImport:
    """An imported card: the sheet as plain data, what it still lacks, and notes for the writer."""

    sheet: dict[str, Any]
    spec: str
    problems: list[str] = field(default_factory=list)  # what stops `lmpc build` until fixed
    advice: list[str] = field(default_factory=list)  # what would make a better NPC, most useful first
    notes: list[str] = field(default_factory=list)

    def toml(self) -> str:
        header = [f"# Imported from a Character Card ({self.spec}) by `lmpc import`."]
        if self.problems:
            header.append("# To fix before `lmpc build`:")
            header += [f"#   {problem}" for problem in self.problems]
        if self.advice:
            header.append("# It builds as it is; these would make a better NPC (see docs/character-sheet.md):")
            header += [f"#   {item}" for item in self.advice]
        header += [f"# Note: {note}" for note in self.notes]
        return "\n".join(header) + "\n\n" + dumps(self.sheet)


def read_card(path: str | Path) -> dict[str, Any]:
    """The card's JSON object from a .json file or a PNG with a `ccv3`/`chara` chunk. Raises SheetError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise SheetError(str(path), [f"the file is {size} bytes; a card may be at most {MAX_CARD_BYTES}"])
        raw = path.read_bytes()
    except OSError as exc:
        raise SheetError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    text = _png_card_text(raw, str(path)) if raw.startswith(PNG_SIGNATURE) else raw
    try:
        card = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SheetError(str(path), [f"the card is not valid JSON: {exc}"]) from exc
    if not isinstance(card, dict):
        raise SheetError(str(path), ["the card must be a JSON object"])
    return card


def _png_card_text(raw: bytes, where: str) -> bytes:
    """The decoded JSON bytes of the PNG's card chunk; `ccv3` wins over `chara` when both are present."""
    chunks: dict[str, bytes] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind = raw[pos + 4:pos + 8]
        data = raw[pos + 8:pos + 8 + length]
        if len(data) != length or pos + 12 + length > len(raw):
            raise SheetError(where, ["the PNG is truncated"])
        (crc,) = struct.unpack(">I", raw[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + data) != crc:
            raise SheetError(where, [f"the PNG's {kind.decode('latin-1')} chunk is damaged (CRC mismatch)"])
        if kind == b"tEXt" and b"\0" in data:
            keyword, _, value = data.partition(b"\0")
            chunks[keyword.decode("latin-1").lower()] = value
        if kind == b"IEND":
            break
        pos += 12 + length
    encoded = chunks.get("ccv3") or chunks.get("chara")
    if encoded is None:
        raise SheetError(where, ["the PNG holds no character card (no 'ccv3' or 'chara' tEXt chunk)"])
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SheetError(where, [f"the PNG's card chunk is not valid base64: {exc}"]) from exc


def card_data(card: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """(spec name, the card's `data` object); a V1 card (no `spec`) is its own data."""
    spec = card.get("spec")
    if spec is None:
        data, spec = card, "chara_card_v1"
    elif spec in CARD_SPECS:
        data = card.get("data")
    else:
        raise SheetError(where, [f"spec: unknown card spec {spec!r} (expected one of {sorted(CARD_SPECS)})"])
    if not isinstance(data, dict):
        raise SheetError(where, ["data: expected an object"])
    problems = []
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        problems.append("data.name: the card has no name")
    for key in sorted(_MAPPED | {"mes_example"}):
        if data.get(key) is not None and not isinstance(data[key], str):
            problems.append(f"data.{key}: expected a string")
        elif isinstance(data.get(key), str) and len(data[key]) > MAX_FIELD_CHARS:
            problems.append(f"data.{key}: {len(data[key]):,} characters; a card's text field may hold at most "
                            f"{MAX_FIELD_CHARS:,} (the whole persona must fit a 2,048-token context)")
    if data.get("character_book") is not None and not isinstance(data["character_book"], dict):
        problems.append("data.character_book: expected an object")
    if problems:
        raise SheetError(where, problems)
    return spec, data


def parse_examples(mes_example: str, name: str) -> tuple[list[dict[str, str]], int]:
    """Player/NPC pairs from a card's `mes_example` (`<START>` blocks of `{{user}}:`/`{{char}}:` lines).

    Returns the pairs and the number of NPC lines that had no player line before them (left out).
    """
    examples: list[dict[str, str]] = []
    orphans = 0
    char_prefixes = ("{{char}}:", "<bot>:", f"{name.lower()}:")
    user_prefixes = ("{{user}}:", "<user>:")
    for block in _START.split(mes_example):
        turns: list[list[str]] = []  # [speaker, text]
        for line in block.splitlines():
            low = line.strip().lower()
            speaker = ("user" if low.startswith(user_prefixes) else "char" if low.startswith(char_prefixes)
                       else None)
            if speaker is not None:
                turns.append([speaker, line.split(":", 1)[1].strip()])
            elif turns and line.strip():
                turns[-1][1] += "\n" + line.strip()
        player = None
        for speaker, text in turns:
            if speaker == "user":
                player = text if player is None else f"{player}\n{text}"
            elif player is None:
                orphans += 1
            else:
                examples.append({"player": player, "npc": CHAR_MACRO.sub(lambda _: name, text)})
                player = None
    return examples, orphans


def lorebook_from_card(book: dict[str, Any]) -> dict[str, Any]:
    """The card's `character_book` as the sheet's `[lorebook]`: every field the sheet knows mapped, what
    SillyTavern keeps in an entry's `extensions` (selective logic, sticky, cooldown, delay) read from
    there, and anything else kept under `extensions.chara_card` of the book or of its entry."""
    lore = {k: book[k] for k in _BOOK_FIELDS if book.get(k) not in (None, "")}
    lore["entries"] = [_lore_entry(entry) for entry in book.get("entries") or [] if isinstance(entry, dict)]
    extra = {k: v for k, v in book.items() if k not in _BOOK_FIELDS | {"entries", "extensions"}}
    extensions = {**(book.get("extensions") or {}), **({EXTENSION_KEY: extra} if extra else {})}
    if extensions:
        lore["extensions"] = extensions
    return lore


def _lore_entry(card_entry: dict[str, Any]) -> dict[str, Any]:
    # Cards write "" for a name or comment left blank; the sheet leaves such a field out.
    entry = {k: card_entry[k] for k in _ENTRY_FIELDS
             if card_entry.get(k) is not None and (card_entry[k] != "" or k == "content")}
    extensions = dict(card_entry.get("extensions") or {})
    entry.update(_sheet_only(extensions.pop(SHEET_EXTENSION, None), _ENTRY_ONLY))
    logic = extensions.pop("selectiveLogic", None)
    if logic in _SELECTIVE_LOGIC:
        entry["selective_logic"] = _SELECTIVE_LOGIC[logic]
    for key in ("sticky", "cooldown", "delay"):
        value = extensions.pop(key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            entry[key] = value
    extra = {k: v for k, v in card_entry.items() if k not in _ENTRY_FIELDS | {"extensions"}}
    if extra:  # e.g. V3's use_regex: kept, not applied
        extensions[EXTENSION_KEY] = extra
    if extensions:
        entry["extensions"] = extensions
    return entry


def _sheet_only(fields: Any, allowed: set[str]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in allowed} if isinstance(fields, dict) else {}


# Sheet fields a card has no place for (a card written from a sheet carries them under extensions.lmpc).
_SHEET_ONLY = {"title", "alignment", "speech_style", "values", "objectives", "catchphrases", "facts",
               "fallback_lines", "avoid_phrases", "opinions", "extensions", "actions", "emotions"}
_WORLD_ONLY = {"name", "political_order", "powers", "marginalised_groups", "important_people",
               "marginalised_important_people"}


def _merge_sheet_fields(sheet: dict[str, Any], written: dict[str, Any]) -> None:
    sheet.update(_sheet_only(written, _SHEET_ONLY))
    world = _sheet_only(written.get("world"), _WORLD_ONLY)
    if world:
        sheet["world"] = {**world, **sheet.get("world", {})}
    contexts = written.get("example_contexts")
    if isinstance(contexts, list) and len(contexts) == len(sheet.get("examples", [])):
        for example, context in zip(sheet["examples"], contexts):
            if isinstance(context, str) and context:
                example["context"] = context


def sheet_to_card(sheet: dict[str, Any]) -> dict[str, Any]:
    """A Character Card V2 from a sheet (plain data, as read from TOML): the fields a card has mapped back
    (the reverse of `card_to_sheet`), what an earlier import kept of a card restored, and every field only
    a sheet has under `extensions.lmpc`, so that importing the card gives the sheet again."""
    kept = dict((sheet.get("extensions") or {}).get(EXTENSION_KEY) or {})
    for key in ("spec", "spec_version", "mes_example"):  # the card written here has its own
        kept.pop(key, None)
    world = sheet.get("world") or {}
    examples = sheet.get("examples") or []
    own = {k: v for k, v in sheet.items() if k in _SHEET_ONLY}
    own["extensions"] = {k: v for k, v in (sheet.get("extensions") or {}).items() if k != EXTENSION_KEY}
    own["world"] = _sheet_only(world, _WORLD_ONLY)
    if any(ex.get("context") for ex in examples):
        own["example_contexts"] = [ex.get("context", "") for ex in examples]
    own = {k: v for k, v in own.items() if v not in ({}, [], "")}
    data = {
        "name": sheet["name"],
        "description": sheet.get("backstory", ""),
        "personality": sheet.get("summary", ""),
        "scenario": world.get("description", ""),
        "first_mes": sheet.get("greeting", ""),
        "mes_example": "".join(f"<START>\n{{{{user}}}}: {ex['player']}\n{{{{char}}}}: {ex['npc']}\n"
                               for ex in examples),
        **kept,
    }
    data["extensions"] = {**(kept.get("extensions") or {}), **({SHEET_EXTENSION: own} if own else {})}
    if sheet.get("lorebook"):
        data["character_book"] = lorebook_to_card(sheet["lorebook"])
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def lorebook_to_card(lore: dict[str, Any]) -> dict[str, Any]:
    """The reverse of `lorebook_from_card`."""
    extensions = dict(lore.get("extensions") or {})
    book = {**extensions.pop(EXTENSION_KEY, {}), **{k: lore[k] for k in _BOOK_FIELDS if k in lore}}
    book["extensions"] = extensions
    book["entries"] = []
    for entry in lore.get("entries", []):
        extensions = dict(entry.get("extensions") or {})
        card_entry = {**extensions.pop(EXTENSION_KEY, {}), **{k: entry[k] for k in _ENTRY_FIELDS if k in entry}}
        if "selective_logic" in entry:
            extensions["selectiveLogic"] = {v: k for k, v in _SELECTIVE_LOGIC.items()}[entry["selective_logic"]]
        extensions.update({k: entry[k] for k in ("sticky", "cooldown", "delay") if entry.get(k)})
        only = _sheet_only(entry, _ENTRY_ONLY)
        if only:
            extensions[SHEET_EXTENSION] = only
        card_entry["extensions"] = extensions
        card_entry.setdefault("keys", [])
        card_entry.setdefault("enabled", True)
        card_entry.setdefault("insertion_order", 100)
        book["entries"].append(card_entry)
    return book


def write_card(card: dict[str, Any], out: str | Path) -> None:
    """A card as JSON (`.json`) or as a 1x1 PNG carrying it in a `chara` tEXt chunk (`.png`)."""
    out = Path(out)
    text = json.dumps(card, ensure_ascii=False, indent=1)
    if out.suffix.lower() != ".png":
        out.write_text(text + "\n", encoding="utf-8")
        return
    pixel = zlib.compress(b"\x00\x5a\x4a\x3c")  # one row: no filter, one dark amber pixel
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    chunks = [(b"IHDR", header), (b"tEXt", b"chara\0" + base64.b64encode(text.encode("utf-8"))),
              (b"IDAT", pixel), (b"IEND", b"")]
    out.write_bytes(PNG_SIGNATURE + b"".join(struct.pack(">I", len(body)) + kind + body
                                             + struct.pack(">I", zlib.crc32(kind + body)) for kind, body in chunks))


def card_to_sheet(card: dict[str, Any], where: str = "<card>") -> SheetImport:
    """Map a card onto a sheet (plain data, in the sheet's field order). Raises SheetError on a bad card."""
    spec, data = card_data(card, where)
    name = data["name"].strip()

    def text(key: str) -> str:
        return CHAR_MACRO.sub(lambda _: name, data.get(key) or "").strip()

    sheet: dict[str, Any] = {"format": SHEET_FORMAT, "name": name}
    if text("personality"):
        sheet["summary"] = text("personality")
    if text("first_mes"):
        sheet["greeting"] = text("first_mes")
    if text("description"):
        sheet["backstory"] = text("description")
    if text("scenario"):
        sheet["world"] = {"description": text("scenario")}
    examples, orphans = parse_examples(data.get("mes_example") or "", name)
    if examples:
        sheet["examples"] = examples

    written = (data.get("extensions") or {}).get(SHEET_EXTENSION)
    if isinstance(written, dict):  # a card LMPC wrote from a sheet: the sheet's own fields come back
        _merge_sheet_fields(sheet, written)
    kept = {k: v for k, v in data.items()
            if k not in _MAPPED | {"mes_example", "character_book"} and v not in (None, "", [], {})}
    if isinstance(written, dict):
        kept["extensions"] = {k: v for k, v in kept["extensions"].items() if k != SHEET_EXTENSION}
        kept = {k: v for k, v in kept.items() if v != {}}
    if data.get("mes_example") and not isinstance(written, dict):
        kept["mes_example"] = data["mes_example"]  # the parse into pairs drops the blocks' grouping
    card_extra = {"spec": spec, **({"spec_version": card["spec_version"]} if "spec_version" in card else {}),
                  **kept}
    card_extra, dropped = strip_nulls(card_extra, f"extensions.{EXTENSION_KEY}")
    sheet["extensions"] = {EXTENSION_KEY: card_extra}

    notes = []
    if data.get("character_book"):
        sheet["lorebook"] = lorebook_from_card(data["character_book"])
    if orphans:
        notes.append(f"{orphans} example line(s) of the character with no player line before them "
                     "were left out")
    if dropped:
        notes.append(f"null values dropped (TOML has none): {', '.join(dropped[:5])}")
    try:
        return SheetImport(sheet=sheet, spec=spec, advice=advice(parse_sheet(sheet, where)), notes=notes)
    except SheetError as exc:
        return SheetImport(sheet=sheet, spec=spec, problems=exc.problems, notes=notes)


def import_card(card_path: str | Path, out: str | Path) -> SheetImport:
    """Read a card (JSON or PNG) and write it as a TOML character sheet at `out`."""
    result = card_to_sheet(read_card(card_path), str(card_path))
    Path(out).write_text(result.toml(), encoding="utf-8")
    return result
