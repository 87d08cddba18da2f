"""Properties: builds are deterministic (runs, worker counts, stores) and conserve every row."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import build, write_config, write_jsonl

WORDS = ["alpha", "Beta", "gamma  ", "DELTA", "eps\tilon", "zeta", "ηta", "ｔｈｅｔａ"]

text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
good_row = st.one_of(
    st.builds(
        lambda q, a: {
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        },
        text,
        text,
    ),
    st.builds(lambda q, a: {"instruction": q, "output": a}, text, text),
    st.builds(lambda t: {"text": t}, text),
)
bad_row = st.sampled_from(
    [
        '{"messages": [',
        "[1, 2]",
        '{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
        '{"text": "   "}',
        '{"text": 5}',
    ]
)
source_rows = st.lists(st.one_of(good_row, good_row, good_row, bad_row), min_size=1, max_size=25)


@st.composite
def mixtures(draw):
    n = draw(st.integers(1, 3))
    sources = [draw(source_rows) for _ in range(n)]
    weighted = draw(st.booleans())
    weights = [draw(st.sampled_from([0.5, 1.0, 2.0])) for _ in range(n)] if weighted else None
    repeats = [draw(st.integers(1, 3)) for _ in range(n)]
    total = draw(st.one_of(st.none(), st.integers(1, 60))) if weighted else None
    validation = draw(st.sampled_from([0.0, 0.1, 0.3]))
    seed = draw(st.integers(0, 3))
    return sources, weights, repeats, total, validation, seed


def write_case(folder: Path, case) -> Path:
    sources, weights, repeats, total, validation, seed = case
    entries = []
    for i, rows in enumerate(sources):
        write_jsonl(folder / f"s{i}.jsonl", rows)
        entry = {"name": f"s{i}", "path": f"s{i}.jsonl", "max_repeats": repeats[i]}
        if weights:
            entry["weight"] = weights[i]
        entries.append(entry)
    extra = (
        f"[mixture]\ntotal = {total}\n" if total else ""
    ) + f"[split]\nvalidation = {validation}\n"
    return write_config(folder, entries, extra=extra, seed=seed)


def manifest_bytes(store: Path, mid: str) -> bytes:
    return (store / "manifests" / f"{mid}.json").read_bytes()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixtures())
def test_builds_are_byte_identical_across_runs_workers_and_stores(case):
    root = Path(tempfile.mkdtemp(prefix="curate-prop-"))
    try:
        cfg = write_case(root / "data", case)
        one = build(cfg, store=root / "store1", workers=1)
        two = build(cfg, store=root / "store2", workers=2)
        again = build(cfg, store=root / "store1", workers=1)  # from the block cache
        assert one.id == two.id == again.id
        assert manifest_bytes(root / "store1", one.id) == manifest_bytes(root / "store2", two.id)
        assert one.rows == two.rows and one.ledger == two.ledger  # same rows, same order
        assert_conserved(one)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixtures())
def test_every_row_is_in_the_output_or_the_ledger_exactly_once(case):
    root = Path(tempfile.mkdtemp(prefix="curate-prop-"))
    try:
        b = build(write_case(root / "data", case), store=root / "store", allow_empty=True)
        assert b.manifest["counts"]["rows_in"] == sum(len(rows) for rows in case[0])
        assert_conserved(b)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def assert_conserved(b) -> None:
    total_in = b.manifest["counts"]["rows_in"]
    out_ids = {r["id"] for r in b.rows}
    ledger_ids = [r["id"] for r in b.ledger]
    assert len(set(ledger_ids)) == len(ledger_ids)
    assert not out_ids & set(ledger_ids)
    assert len(out_ids) + len(ledger_ids) == total_in
    origins = sorted(
        [r["origin"] for r in b.ledger] + list({r["id"]: r["origin"] for r in b.rows}.values())
    )
    assert len(set(origins)) == total_in  # each input line accounted for once
    for src in b.manifest["sources"]:
        assert src["rows_in"] == src["rows_kept"] + src["rows_rejected"]
        assert src["rows_emitted"] == sum(1 for r in b.rows if r["source"] == src["name"])
    splits = {}
    for r in b.rows:
        splits.setdefault(r["id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert all(json.loads(r["detail"]) is not None for r in b.ledger)


extra_value = st.one_of(
    st.none(), st.integers(-5, 5), st.booleans(), text, st.lists(text, max_size=2)
)
rich_row = st.builds(
    lambda row, extras: {**row, **extras},
    good_row,
    st.dictionaries(st.sampled_from(["tag", "n", "z_last", "a_first"]), extra_value, max_size=3),
)


def comparable(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k != "split"} for r in rows),
        key=lambda r: (r["origin"], r["id"]),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rich_row, min_size=1, max_size=15))
def test_fast_and_row_by_row_paths_give_the_same_rows(rows):
    """A block with one broken line is read row by row; its good rows must not change."""
    root = Path(tempfile.mkdtemp(prefix="curate-prop-"))
    try:
        write_jsonl(root / "fast" / "s.jsonl", rows)
        write_jsonl(root / "slow" / "s.jsonl", [*rows, "{broken"])
        fast = build(
            write_config(
                root / "fast", [{"name": "s", "path": "s.jsonl"}], extra="[dedup]\nexact = false\n"
            )
        )
        slow = build(
            write_config(
                root / "slow", [{"name": "s", "path": "s.jsonl"}], extra="[dedup]\nexact = false\n"
            )
        )
        assert comparable(fast.rows) == comparable(slow.rows)
        assert comparable(fast.ledger) == comparable(
            [r for r in slow.ledger if r["reason"] != "malformed"]
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


FOLD_PIECES = [
    *"aBéÉｆ1",
    *[" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\u3000", "\xa0"],
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.sampled_from(FOLD_PIECES)).map("".join))))
def test_exact_dedup_folding_matches_its_definition(values):
    """NFKC, lower case, every run of whitespace one space, trimmed; only the rows that
    need it are rewritten, and the others come back as they were lowered."""
    import re
    import unicodedata

    import pyarrow as pa

    from curate.identity import fold_text

    def folded(v: str) -> str:
        v = unicodedata.normalize("NFKC", v).lower()
        return re.sub("[\t\n\v\f\r \x85\u2028\u2029]+", " ", v).strip(" ")

    got = fold_text(pa.array(values, pa.string())).to_pylist()
    assert got == [None if v is None else folded(v) for v in values]
