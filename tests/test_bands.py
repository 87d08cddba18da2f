"""Near dedup resolved band by band from the workers' key files (`resolve_spread`, what the
Ray engine runs) gives the verdicts of `resolve` over every key on the driver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.dedup.minhash import NearDedup, SplitClusters
from curate.engines.local import LocalEngine
from curate.engines.passes import _apply, keep_keys
from curate.engines.spread import KeyParts
from curate.engines.stepcache import SegmentOut
from curate.rows import ROW_SCHEMA
from curate.steps import GlobalStep, Verdicts

WORDS = [f"w{i}" for i in range(60)]


def texts(seed: int, n: int) -> list[str]:
    """n texts of 12-30 words; about a third are a copy of an earlier one with a word or
    two changed (near twins, chained at times), a few are empty (no shingle at all)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for i in range(n):
        if i and rng.random() < 0.35:
            words = out[rng.integers(i)].split()
            for _ in range(rng.integers(1, 3)):
                if words:
                    words[rng.integers(len(words))] = WORDS[rng.integers(len(WORDS))]
            out.append(" ".join(words))
        elif rng.random() < 0.05:
            out.append("")
        else:
            out.append(" ".join(rng.choice(WORDS, rng.integers(12, 31))))
    return out


def both_ways(
    step: GlobalStep, blocks: list[list[str]], alive: list[np.ndarray], folder: Path
) -> tuple[Verdicts, Verdicts]:
    keys, files = [], []
    for b, (block, mask) in enumerate(zip(blocks, alive, strict=True)):
        table = pa.Table.from_pylist([{"kind": "text", "text": t} for t in block], ROW_SCHEMA)
        _, found, _ = _apply(table, mask, [], step)  # what a worker sends back
        assert found is not None
        spilled = keep_keys(
            SegmentOut(table, found, None, None), step, (str(folder / f"{b}.arrow"), 1)
        )
        assert spilled.keys is not None and "shingles" not in spilled.keys.column_names
        keys.append((found.filter(pa.array(mask)), spilled.keys.filter(pa.array(mask))))
        files.append(spilled.spilled)
    ranks = np.concatenate([np.full(m.sum(), b % 2) for b, m in enumerate(alive)])
    head = {
        "id": pa.array([f"r{i}" for i in range(len(ranks))]),
        "source_rank": pa.array(ranks, pa.int32()),
    }

    def promised(tables: list[pa.Table]) -> pa.Table:
        joined = pa.concat_tables(tables).combine_chunks()
        return pa.table({**head, **{c: joined.column(c) for c in joined.column_names}})

    whole = step.resolve(promised([k for k, _ in keys]))
    parts = KeyParts(files, [np.nonzero(m)[0] for m in alive])
    with LocalEngine(1) as engine:
        spread = step.resolve_spread(engine, promised([s for _, s in keys]), parts)
    return whole, spread


def same(a: Verdicts, b: Verdicts) -> None:
    assert a.rows.tolist() == b.rows.tolist()
    assert a.reason.to_pylist() == b.reason.to_pylist()
    assert a.detail.to_pylist() == b.detail.to_pylist()
    assert (a.columns is None) == (b.columns is None)
    if a.columns is not None and b.columns is not None:
        assert a.columns.equals(b.columns)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31),
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=5),
    dead=st.floats(0, 0.5),
    loose=st.booleans(),
)
def test_spread_resolve_gives_the_verdicts_of_resolve(tmp_path, seed, sizes, dead, loose):
    words = texts(seed, sum(sizes))
    cuts = np.cumsum([0, *sizes])
    blocks = [words[a:z] for a, z in zip(cuts[:-1], cuts[1:], strict=True)]
    rng = np.random.default_rng(seed + 1)
    alive = [rng.random(len(b)) >= dead for b in blocks]
    step = NearDedup(0.7, 64, 3, cluster_threshold=0.4 if loose else None)
    whole, spread = both_ways(step, blocks, alive, tmp_path)
    same(whole, spread)


def test_planted_twins_are_found_from_files_and_clusters_for_the_split(tmp_path):
    blocks = [texts(3, 80), texts(4, 50), texts(5, 70)]
    alive = [np.ones(len(b), dtype=bool) for b in blocks]
    alive[1][::3] = False  # rows an earlier step rejected: null keys in the file
    whole, spread = both_ways(NearDedup(0.7, 64, 3), blocks, alive, tmp_path)
    assert len(whole.rows) > 20  # the twins planted were found
    same(whole, spread)
    whole, spread = both_ways(SplitClusters(0.4, 64, 3), blocks, alive, tmp_path)
    assert whole.columns is not None and len(set(whole.columns.column("cluster").to_pylist())) < 150
    same(whole, spread)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**31),
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=5),
    dead=st.floats(0, 0.5),
    parts=st.integers(1, 7),
)
def test_exact_dedup_by_parts_gives_the_verdicts_of_resolve(tmp_path, seed, sizes, dead, parts):
    """Rows drawn from a few contents (copies across blocks, within blocks), some dead; the
    copies found part by part are the copies found over every hash at once."""
    from curate.dedup.exact import ExactDedup

    rng = np.random.default_rng(seed)
    contents = [f"content {i} " * 3 for i in range(max(2, sum(sizes) // 3))]
    step = ExactDedup()
    keys, files, alive = [], [], []
    for b, size in enumerate(sizes):
        block = [contents[rng.integers(len(contents))] for _ in range(size)]
        mask = rng.random(size) >= dead
        table = pa.Table.from_pylist([{"kind": "text", "text": t} for t in block], ROW_SCHEMA)
        _, found, _ = _apply(table, mask, [], step)
        assert found is not None
        out = keep_keys(SegmentOut(table, found, None, None), step, (str(tmp_path / f"{b}"), parts))
        keys.append(found.filter(pa.array(mask)))
        files.append(out.spilled)
        alive.append(mask)
    joined = pa.concat_tables(keys).combine_chunks()
    ids = pa.array([f"r{i}" for i in range(joined.num_rows)])
    whole = step.resolve(joined.append_column("id", ids))
    kept = KeyParts(files, [np.nonzero(m)[0] for m in alive], parts)
    with LocalEngine(1) as engine:
        spread = step.resolve_spread(engine, pa.table({"id": ids}), kept)
    same(whole, spread)
    # and both are what a plain reading says: every later copy names the first one
    first: dict[str, int] = {}
    h = list(zip(joined.column("h1").to_pylist(), joined.column("h2").to_pylist(), strict=True))
    expected = []
    for i, key in enumerate(h):
        if key in first:
            expected.append((i, f'{{"duplicate_of": "r{first[key]}"}}'))
        else:
            first[key] = i
    assert list(zip(whole.rows.tolist(), whole.detail.to_pylist(), strict=True)) == expected
