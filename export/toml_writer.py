"""Writing TOML: a character sheet (or any plain data) as a file a writer can read and edit.

Python reads TOML but cannot write it, and an imported card must come out as a sheet a person will edit
by hand, so this writer favours readability: long text as multi-line strings, lists of sentences one
item a line, tables in the order given. TOML has no null: `strip_nulls` removes them first and says where.
"""

from __future__ import annotations

import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# Characters a TOML basic string must escape (besides the backslash and the quote).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def strip_nulls(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """`value` without None anywhere inside, and the paths where one was removed."""
    dropped: list[str] = []
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if item is None:
                dropped.append(where)
                continue
            out[key], inner = strip_nulls(item, where)
            dropped += inner
        return out, dropped
    if isinstance(value, list):
        out_list = []
        for i, item in enumerate(value):
            if item is None:
                dropped.append(f"{path}[{i}]")
                continue
            cleaned, inner = strip_nulls(item, f"{path}[{i}]")
            out_list.append(cleaned)
            dropped += inner
        return out_list, dropped
    return value, dropped


def drop_empty(value: Any) -> Any:
    """`value` without the table entries that are None, "", [] or {} (after their own cleaning): a sheet
    refuses empty strings and reads an absent key as its default, so a sheet's `to_dict()` goes through
    this before `dumps`."""
    if isinstance(value, dict):
        cleaned = {k: drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v != "" and v != [] and v != {}}
    if isinstance(value, (list, tuple)):
        return [drop_empty(v) for v in value]
    return value


def dumps(data: dict[str, Any]) -> str:
    """TOML text for `data` (str keys; str, int, float, bool, list and dict values; no None)."""
    lines: list[str] = []
    _table(lines, data, [])
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(lines: list[str], table: dict[str, Any], path: list[str]) -> None:
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            lines.append(f"{_key(key)} = {_value(value, top=True)}")
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", f"[{_dotted(path + [key])}]"]
            _table(lines, value, path + [key])
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{_dotted(path + [key])}]]"]
                _table(lines, item, path + [key])


def _dotted(path: list[str]) -> str:
    return ".".join(_key(k) for k in path)


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"TOML keys must be strings, not {type(key).__name__}")
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any, top: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _multiline(value) if top and "\n" in value else _string(value)
    if isinstance(value, list):
        items = [_value(v) for v in value]
        if top and items and sum(len(i) for i in items) > 80:
            return "[\n" + "".join(f"  {i},\n" for i in items) + "]"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"TOML cannot hold a {type(value).__name__}")


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return _CONTROL.sub(lambda m: _SHORT_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def _string(text: str) -> str:
    return '"' + _escape(text).replace("\n", "\\n") + '"'


def _multiline(text: str) -> str:
    # A newline right after the opening quotes is dropped by TOML readers, so it costs nothing and reads well.
    return '"""\n' + _escape(text) + '"""'
