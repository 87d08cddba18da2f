"""Hashing of Arrow string columns."""

from __future__ import annotations

import hashlib

import pyarrow as pa


def sha256_hex(values: pa.Array, length: int = 64) -> pa.Array:
    """sha256 of each value's UTF-8 bytes, as hex truncated to `length` characters (nulls stay null).

    A comprehension over hashlib on purpose: OpenSSL's SHA extensions hash about twice as fast
    as the vectorized kernels at hand (DuckDB's `sha256`), and the loop costs under 10% of it.
    """
    blobs = values.cast(pa.binary()).to_pylist()
    return pa.array([None if b is None else hashlib.sha256(b).hexdigest()[:length] for b in blobs], pa.string())


def hash128(values: pa.Array) -> pa.Table:
    """A 128-bit non-cryptographic hash per value (two seeded 64-bit hashes, vectorized).

    Stable within one version of polars: for keys that live within a build, never stored.
    """
    import polars as pl

    series = pl.Series(values)
    return pa.table({"h1": series.hash(0x5EED).to_arrow(), "h2": series.hash(0xC0FFEE).to_arrow()})
