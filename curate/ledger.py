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
    import duckdb

    con = duckdb.connect()
    parts = []
    for split in manifest.split_names():
        paths = [str(p) for p in manifest.shard_paths(split)]
        if paths:
            parts.append(f"SELECT *, '{split}' AS split FROM read_parquet({paths!r})")
    if parts:
        con.execute("CREATE VIEW rows AS " + " UNION ALL ".join(parts))
    else:
        empty = ROW_SCHEMA.append(pa.field("split", pa.string())).empty_table()
        con.register("empty_rows", empty)
        con.execute("CREATE VIEW rows AS SELECT * FROM empty_rows")
    ledger_parts = [str(p) for p in manifest.ledger_paths()]
    if ledger_parts:
        con.execute(f"CREATE VIEW ledger AS SELECT * FROM read_parquet({ledger_parts!r})")
    else:
        from curate.engines.passes import LEDGER_SCHEMA

        con.register("empty_ledger", LEDGER_SCHEMA.empty_table())
        con.execute("CREATE VIEW ledger AS SELECT * FROM empty_ledger")
    return con


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
