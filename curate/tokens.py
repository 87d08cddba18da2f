"""A row's trained tokens in the forms trainers read, from the spans a build stored.

A tokenized build stores, per kept row, `input_ids` and `mask_spans` (token ranges
[start, end) that are trained). Trainers read the same fact in other forms:
- `labels`: the id where the token is trained, -100 elsewhere (transformers' loss ignores
  -100; TRL ≥ 0.20 uses a `labels` column as it is, so do Axolotl's pre-tokenized datasets
  and `transformers.Trainer` with `DataCollatorForSeq2Seq`);
- `assistant_masks`: 1 where trained, 0 elsewhere (what `apply_chat_template(...,
  return_assistant_tokens_mask=True)` returns, and the column older TRL collators read
  instead of `labels`).
All conversions are vectorized over a whole column (no loop per row).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

IGNORE = -100  # transformers' ignore_index: a label the loss skips


def labels_from_spans(
    ids: np.ndarray,
    offsets: np.ndarray,
    span_rows: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
) -> np.ndarray:
    """Labels: the ids inside each row's [start, end) spans, IGNORE elsewhere (vectorized)."""
    return np.where(trained_flags(len(ids), offsets, span_rows, starts, ends), ids, IGNORE)


def trained_flags(
    n: int, offsets: np.ndarray, span_rows: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Per token of the flattened rows: is it inside one of its row's trained spans."""
    mark = np.zeros(n + 1, dtype=np.int64)
    base = offsets[span_rows]
    np.add.at(mark, base + starts, 1)
    np.add.at(mark, base + ends, -1)
    return np.cumsum(mark[:-1]) > 0


def flat_spans(
    ids_col: pa.ListArray, spans_col: pa.ListArray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, row offsets, span row, span start, span end) of two list columns, flattened;
    offsets start at 0 whatever slice of a larger array the columns are."""
    offsets = np.asarray(ids_col.offsets.to_numpy(), dtype=np.int64)
    ids = np.asarray(ids_col.values.to_numpy(), dtype=np.int64)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    span_offsets = np.asarray(spans_col.offsets.to_numpy(), dtype=np.int64)
    span_rows = np.repeat(np.arange(len(ids_col)), np.diff(span_offsets))
    values = spans_col.values.slice(span_offsets[0], span_offsets[-1] - span_offsets[0])
    starts = np.asarray(values.field("start").to_numpy(), dtype=np.int64)
    ends = np.asarray(values.field("end").to_numpy(), dtype=np.int64)
    return ids, offsets, span_rows, starts, ends


def mask_columns(
    ids_col: pa.ChunkedArray, spans_col: pa.ChunkedArray
) -> tuple[pa.ListArray, pa.ListArray]:
    """(`labels`, `assistant_masks`) for the rows of `input_ids` / `mask_spans` columns."""
    from curate.steps import whole

    ids_col, spans_col = whole(ids_col), whole(spans_col)
    ids, offsets, span_rows, starts, ends = flat_spans(ids_col, spans_col)
    flags = trained_flags(len(ids), offsets, span_rows, starts, ends)
    row_offsets = pa.array(offsets, pa.int32())
    labels = pa.ListArray.from_arrays(
        row_offsets, pa.array(np.where(flags, ids, IGNORE), pa.int64())
    )
    masks = pa.ListArray.from_arrays(row_offsets, pa.array(flags.astype(np.int8), pa.int8()))
    return labels, masks
