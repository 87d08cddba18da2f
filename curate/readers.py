"""Readers: one block of a source → canonical rows, with bad rows quarantined.

Each block is read the fast way first (Arrow's C++ JSON/CSV/Parquet readers, vectorized
normalization); if anything in it does not fit (a broken line, invalid UTF-8, a number where
a string belongs), the block is read again row by row so that exactly the offending rows
land in the ledger with their file, line and field, and every other row is kept. Nothing is
ever unpickled: only JSON, CSV, Parquet and Arrow IPC.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import jsontext
from curate.errors import InputError
from curate.identity import row_ids
from curate.jsontext import text_of_bytes, too_deep_lines
from curate.rows import BUILD_SCHEMA, CoerceError, coerce, fields_of, normalize
from curate.sources import ORDER_FILE_SHIFT, BlockTask, arrow_files, read_ipc_file

BOM = b"\xef\xbb\xbf"


def read_block(task: BlockTask) -> pa.Table:
    """The block's rows in BUILD_SCHEMA, in file order, with their (base) ids."""
    if task.kind == "jsonl":
        table = _read_jsonl(task)
    elif task.kind == "json":
        table = _read_json_list(task)
    elif task.kind == "csv":
        table = _read_csv(task)
    else:
        raw = _read_columnar(task)
        numbers = np.arange(task.start, task.stop) + 1
        table = _fast_or_slow(
            task,
            raw,
            numbers,
            lambda: [
                (n, text_of_bytes(obj))
                for n, obj in zip(numbers.tolist(), raw.to_pylist(), strict=True)
            ],
        )
    if task.strict:
        _raise_first_rejection(task, table)
    return table


def _read_columnar(task: BlockTask) -> pa.Table:
    try:
        return _read_columnar_rows(task)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{task.shown}: cannot be read as {task.kind} ({exc})") from exc


def _read_columnar_rows(task: BlockTask) -> pa.Table:
    if task.kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(task.path)
        tables, seen = [], 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if seen + n > task.start and seen < task.stop:
                t = pf.read_row_group(g)
                tables.append(t.slice(max(task.start - seen, 0), task.stop - max(task.start, seen)))
            seen += n
        return pa.concat_tables(tables) if tables else pf.schema_arrow.empty_table()
    whole = pa.concat_tables(read_ipc_file(f) for f in arrow_files(Path(task.path)))
    return whole.slice(task.start, task.stop - task.start)


def _read_jsonl(task: BlockTask) -> pa.Table:
    import pyarrow.json as pj

    with open(task.path, "rb") as fh:
        fh.seek(task.start)
        data = fh.read(task.stop - task.start)
    if task.start == 0 and data.startswith(BOM):
        data = b"   " + data[3:]  # blanks keep every offset; JSON allows them
    starts, ends, lines = _nonblank_lines(data, task.first_line)
    try:
        if too_deep_lines(data, starts, ends):  # Arrow's reader crashes on such nesting
            raise CoerceError("nested too deep for the fast reader")
        raw = pj.read_json(
            io.BytesIO(data), read_options=pj.ReadOptions(block_size=max(len(data), 1 << 16) + 1)
        )
        if raw.num_rows != len(lines):
            raise CoerceError("line count differs")  # e.g. two objects on one line
        raw.validate(full=True)  # Arrow's JSON reader lets invalid UTF-8 through
    except (pa.ArrowInvalid, UnicodeDecodeError, CoerceError):
        raw = None

    def parsed() -> list[tuple[int, Any]]:
        return [
            (line, _parse_line(data[a:b]))
            for a, b, line in zip(starts.tolist(), ends.tolist(), lines.tolist(), strict=True)
        ]

    return _fast_or_slow(task, raw, lines, parsed, jsontext.may_hold_surrogates(data))


def _nonblank_lines(data: bytes, first_line: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start/end offsets and 1-based numbers of the lines holding more than whitespace."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.nonzero(buf == 10)[0]
    ends = np.append(newlines, len(buf)) if (len(buf) and buf[-1] != 10) else newlines
    starts = (
        np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        if len(ends)
        else np.array([], dtype=np.int64)
    )
    # A line whose first byte is not whitespace has ink; only the rare others are scanned.
    keep = ends > starts
    heads = np.nonzero(keep)[0]
    first = buf[starts[heads]]
    doubtful = heads[np.isin(first, (9, 13, 32))]
    for i in doubtful.tolist():
        keep[i] = bool(data[starts[i] : ends[i]].strip())
    numbers = np.arange(len(ends), dtype=np.int64) + first_line
    return starts[keep], ends[keep], numbers[keep]


class _Bad:
    """A line that is not a JSON object, with why and its raw text."""

    def __init__(self, error: str, raw: str):
        self.error, self.raw = error, raw


def _parse_line(blob: bytes) -> Any:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Bad(f"invalid UTF-8 at byte {exc.start}", blob.decode("utf-8", errors="replace"))
    try:
        obj = jsontext.loads(text)
    except json.JSONDecodeError as exc:
        return _Bad(f"broken JSON at column {exc.colno}: {exc.msg}", text)
    except ValueError as exc:  # too deep
        return _Bad(str(exc), text[:1000])
    if not isinstance(obj, dict):
        return _Bad(f"expected a JSON object, got {_json_type(obj)}", text)
    return obj


def _read_json_list(task: BlockTask) -> pa.Table:
    """A JSON list file, one row per record: a record that is broken, too deep or not valid
    text is one `malformed` row, and its neighbours are kept."""
    blob = Path(task.path).read_bytes().removeprefix(BOM)
    # undecodable bytes survive as lone surrogates, caught per record (invalid text)
    text = blob.decode("utf-8", errors="surrogateescape")
    if not text.strip():
        return BUILD_SCHEMA.empty_table()
    records = jsontext.list_records(text)
    if records is None:
        shown = text[:1000].encode("utf-8", "replace").decode()
        return _rows_from_objects(task, [(1, _Bad("expected a JSON list of objects", shown))])
    items: list[tuple[int, Any]] = []
    for number, obj in records:
        if isinstance(obj, jsontext.Broken):
            shown = obj.text.encode("utf-8", "replace").decode()  # invalid bytes shown as '?'
            items.append((number, _Bad(obj.error, shown)))
        elif not isinstance(obj, dict):
            shown = json.dumps(obj, ensure_ascii=True)[:1000]
            items.append((number, _Bad(f"expected a JSON object, got {_json_type(obj)}", shown)))
        else:
            items.append((number, obj))
    return _rows_from_objects(task, items, jsontext.may_hold_surrogates(text))


def _read_csv(task: BlockTask) -> pa.Table:
    """A CSV file, read from disk once: Arrow parses the bytes; the row-by-row path reuses them."""
    import csv

    import pyarrow.csv as pcsv

    blob = Path(task.path).read_bytes().removeprefix(BOM)
    if not blob.strip():
        return BUILD_SCHEMA.empty_table()
    names = next(csv.reader([blob.split(b"\n", 1)[0].decode("utf-8", errors="replace")]), [])
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(
            f"{task.shown} line 1: column {twice[0]!r} appears "
            f"{names.count(twice[0])} times in the header; rename one of them "
            "(or map it with `columns = {...}`) so each field has one column"
        )
    try:
        raw = pcsv.read_csv(
            pa.BufferReader(blob),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
        )
        raw.validate(full=True)  # invalid UTF-8 is answered row by row
        numbers = np.arange(raw.num_rows, dtype=np.int64) + 2  # the header is line 1
        if blob.rstrip(b"\r\n").count(b"\n") != raw.num_rows:
            # quoted newlines or blank lines: record k is not line k + 1, and origins
            # must name real lines, so read it row by row
            raw = None
    except (pa.ArrowInvalid, UnicodeDecodeError):
        raw, numbers = None, np.array([], dtype=np.int64)
    return _fast_or_slow(task, raw, numbers, lambda: _csv_rows(blob))


def _csv_rows(blob: bytes) -> list[tuple[int, Any]]:
    import csv

    text = blob.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    items: list[tuple[int, Any]] = []
    line = reader.line_num
    for values in reader:
        start, line = line + 1, reader.line_num
        if not any(v.strip() for v in values):
            continue
        joined = ",".join(values)
        if "\ufffd" in joined:
            items.append((start, _Bad("invalid UTF-8", joined)))
        elif len(values) != len(header):
            items.append((start, _Bad(f"expected {len(header)} fields, got {len(values)}", joined)))
        else:
            items.append((start, dict(zip(header, values, strict=True))))
    return items


def _fast_or_slow(
    task: BlockTask, raw: pa.Table | None, numbers: np.ndarray, parsed, check_text: bool = False
) -> pa.Table:
    renames = dict(task.columns)
    if raw is not None:
        try:
            if renames:
                raw = raw.rename_columns([renames.get(c, c) for c in raw.column_names])
            cols, meta = coerce(raw, task.fmt)
            table = normalize(cols, meta, task.fmt, task.source)
            return _finish(task, table, numbers, pa.nulls(table.num_rows, pa.string()))
        except CoerceError:
            pass
    items = parsed()
    if renames:
        items = [
            (n, {renames.get(k, k): v for k, v in obj.items()} if isinstance(obj, dict) else obj)
            for n, obj in items
        ]
    return _rows_from_objects(task, items, check_text)


def _rows_from_objects(
    task: BlockTask, items: list[tuple[int, Any]], check_text: bool = False
) -> pa.Table:
    """Row-by-row path: type-check each object, normalize the good ones, quarantine the rest.

    `check_text`: the objects may hold lone surrogates (JSON text that can decode to one).
    """
    fields = fields_of(task.fmt)
    good: list[dict[str, Any]] = []
    good_numbers: list[int] = []
    metas: list[str | None] = []
    bad_numbers: list[int] = []
    bad_rows: list[dict[str, Any]] = []
    for number, obj in items:
        if isinstance(obj, _Bad):
            bad_numbers.append(number)
            bad_rows.append({"raw": obj.raw, "reason": "malformed", "detail": {"error": obj.error}})
            continue
        field = jsontext.invalid_text_field(obj) if check_text else None
        if field is not None:  # it would fail every later encode: kept out, with where
            bad_numbers.append(number)
            error = "text that is not valid UTF-8 (a lone surrogate or an invalid byte)"
            bad_rows.append(
                {
                    "raw": json.dumps(obj, ensure_ascii=True, default=jsontext.plain),
                    "reason": "malformed",
                    "detail": {"error": error, "field": field},
                }
            )
            continue
        problem = next(
            (p for name, typ in fields.items() if (p := _type_problem(obj.get(name), typ, name))),
            None,
        )
        if problem:
            bad_numbers.append(number)
            bad_rows.append(
                {
                    "raw": json.dumps(obj, ensure_ascii=False, default=jsontext.plain),
                    "reason": "invalid_schema",
                    "detail": problem,
                }
            )
            continue
        good.append({name: obj.get(name) for name in fields})
        extra = {k: obj[k] for k in sorted(obj) if k not in fields and obj[k] is not None}
        metas.append(
            json.dumps(extra, ensure_ascii=False, separators=(",", ":"), default=jsontext.plain)
            if extra
            else None
        )
        good_numbers.append(number)
    parts: list[pa.Table] = []
    if good:
        cols = pa.Table.from_pylist(good, schema=pa.schema(list(fields.items())))
        table = normalize(cols, pa.array(metas, pa.string()), task.fmt, task.source)
        parts.append(
            _finish(
                task,
                table,
                np.array(good_numbers, dtype=np.int64),
                pa.nulls(len(good), pa.string()),
            )
        )
    if bad_rows:
        n = len(bad_rows)
        table = pa.table(
            {
                "source": pa.array([task.source] * n, pa.string()),
                "stage": pa.array(["read"] * n, pa.string()),
                "reason": pa.array([b["reason"] for b in bad_rows], pa.string()),
                "detail": pa.array(
                    [json.dumps(b["detail"], ensure_ascii=False, sort_keys=True) for b in bad_rows]
                ),
            }
        )
        parts.append(
            _finish(
                task,
                table,
                np.array(bad_numbers, dtype=np.int64),
                pa.array([b["raw"] for b in bad_rows], pa.string()),
            )
        )
    if not parts:
        return BUILD_SCHEMA.empty_table()
    merged = pa.concat_tables(parts)
    return merged.take(pc.sort_indices(merged, [("order", "ascending")]))


def _finish(task: BlockTask, table: pa.Table, numbers: np.ndarray, raw: pa.Array) -> pa.Table:
    """Add origin, order, raw text and id; cast to BUILD_SCHEMA."""
    n = table.num_rows
    columns: dict[str, pa.Array] = {}
    for field in BUILD_SCHEMA:
        if field.name in table.column_names:
            columns[field.name] = table.column(field.name).combine_chunks()
        else:
            columns[field.name] = pa.nulls(n, field.type)
    prefix = task.shown + ":"
    columns["origin"] = pc.binary_join_element_wise(
        pa.scalar(prefix), pa.array(numbers).cast(pa.string()), ""
    )
    columns["order"] = pa.array(
        (np.int64(task.file_index) << ORDER_FILE_SHIFT) + numbers, pa.int64()
    )
    columns["raw"] = raw
    out = pa.table(columns, schema=BUILD_SCHEMA)
    return out.set_column(0, "id", row_ids(out, task.source))


def _type_problem(value: Any, typ: pa.DataType, path: str) -> dict[str, Any] | None:
    """The first place where a JSON value does not have the expected type, or None."""
    if value is None:
        return None
    if pa.types.is_string(typ):
        if isinstance(value, str):
            return None
        return {
            "field": path,
            "error": f"expected a string, got {_json_type(value)}",
            "value": _short(value),
        }
    if not isinstance(value, list):
        return {
            "field": path,
            "error": f"expected a list, got {_json_type(value)}",
            "value": _short(value),
        }
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return {
                "field": f"{path}[{i}]",
                "error": f"expected an object, got {_json_type(item)}",
                "value": _short(item),
            }
        for field in typ.value_type:
            if problem := _type_problem(
                item.get(field.name), field.type, f"{path}[{i}].{field.name}"
            ):
                return problem
        known = {f.name for f in typ.value_type}
        extra = next((k for k, v in item.items() if k not in known and v is not None), None)
        if extra is not None:
            return {
                "field": f"{path}[{i}].{extra}",
                "error": f"turns may only hold {' and '.join(sorted(known))}; this version "
                "would lose the rest (tool calls, names, per-turn weights), so the row is kept out",
                "value": _short(item[extra]),
            }
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        type(None): "null",
        bytes: "bytes that are not UTF-8 text",
    }.get(type(value), type(value).__name__)


def _short(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=False, default=jsontext.plain)
    if isinstance(value, bytes):
        return text[:80]
    return value if len(text) <= 80 else text[:77] + "..."


def _raise_first_rejection(task: BlockTask, table: pa.Table) -> None:
    rejected = table.filter(pc.is_valid(table.column("reason")))
    if rejected.num_rows:
        first = rejected.slice(0, 1).to_pylist()[0]
        detail = json.loads(first["detail"])
        field = f", field {detail['field']}" if "field" in detail else ""
        raise InputError(
            f"{first['origin']}{field}: {first['reason']}: {detail.get('error')} "
            f"(source {task.source!r}; {rejected.num_rows} bad rows in this block; run without --strict to quarantine them in the ledger)"
        )
