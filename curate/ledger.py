"""The rejection ledger and SQL over a build: DuckDB views `rows` and `ledger`.

`rows` is the output (every split's shards, with a `split` column); `ledger` holds one row
per rejected input row: id, source, stage, reason, detail (JSON), the payload and origin.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curate.errors import UserError
from curate.manifests.manifest import Manifest
from curate.rows import ROW_SCHEMA


def connect(manifest: Manifest) -> Any:
    """A DuckDB connection with the views `rows` and `ledger` over the build's objects."""
    import duckdb

    con = duckdb.connect()
    splits = [
        (name, [str(p) for p in manifest.shard_paths(name)]) for name in manifest.split_names()
    ]
    _view(
        con,
        "rows",
        [(paths, name) for name, paths in splits if paths],
        ROW_SCHEMA.append(pa.field("split", pa.string())),
    )
    from curate.engines.passes import LEDGER_SCHEMA

    _view(con, "ledger", [([str(p) for p in manifest.ledger_paths()], None)], LEDGER_SCHEMA)
    return con


def _view(
    con: Any, name: str, parts: list[tuple[list[str], str | None]], schema: pa.Schema
) -> None:
    """`name` as the union of Parquet file lists (each tagged with a split, if given).

    Paths go through DuckDB's relation API, never into SQL text, so no store path can break
    the statement.
    """
    relations = []
    for paths, split in parts:
        if not paths:
            continue
        relation = con.read_parquet(paths)
        if split is not None:
            relation = relation.select("*", duckdb_constant(split).alias("split"))
        relations.append(relation)
    if not relations:
        relations.append(con.from_arrow(schema.empty_table()))
    union = relations[0]
    for other in relations[1:]:
        union = union.union(other)
    union.create_view(name)


def duckdb_constant(value: str) -> Any:
    import duckdb

    return duckdb.ConstantExpression(value)


def query(manifest: Manifest, sql: str) -> pa.Table:
    import duckdb

    con = connect(manifest)
    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise UserError(
            f"query failed: {exc}\n(views: rows — the output with a `split` column; ledger — rejected rows with stage, reason, detail)"
        ) from exc
    finally:
        con.close()
