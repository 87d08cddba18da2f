"""Incremental rebuilds: step outputs cached per block, reused only where nothing they
depend on changed, and the result always the manifest a fresh store gives."""

from __future__ import annotations

import json
import random
from pathlib import Path

import curate
from curate.ledger import query
from curate.review.decisions import append
from tests.conftest import chat, write_config, write_jsonl

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda"]
NEAR = "[dedup]\nexact = true\nnear = { threshold = 0.8 }\n"


def _sources(folder: Path, rows: int = 300) -> list[dict]:
    """Four sources of one block each; every source repeats five of its own rows, and
    s1's first row is s0's (an exact duplicate across sources)."""
    rng = random.Random(3)
    first = None
    for s in range(4):
        data = [
            chat(
                " ".join(rng.choice(WORDS) for _ in range(12)) + f" s{s} q{i}",
                " ".join(rng.choice(WORDS) for _ in range(30)),
            )
            for i in range(rows)
        ]
        if first is not None and s == 1:
            data[0] = first
        first = data[0]
        data += data[1:6]
        write_jsonl(folder / f"s{s}.jsonl", data)
    return [{"name": f"s{s}", "path": f"s{s}.jsonl", "format": "chat"} for s in range(4)]


def _build(config: Path, store: Path) -> curate.pipeline.BuildResult:
    return curate.build(config, store=store, workers=2)


def _same_as_fresh(built: curate.pipeline.BuildResult, config: Path, tmp_path: Path) -> bool:
    """The manifest a fresh store gives for `config`, but for the parent: a rebuild's is
    the build before it."""
    fresh = _build(config, tmp_path / f"fresh-{built.manifest_id}").manifest
    assert fresh["parent"] is None and built.manifest["parent"] is not None
    return {**built.manifest, "parent": None} == fresh


def test_rebuild_reads_only_the_changed_source(tmp_path):
    config = write_config(tmp_path, _sources(tmp_path), NEAR)
    store = tmp_path / "store"
    cold = _build(config, store)
    # 4 blocks, 2 segments each: the row steps with exact dedup's keys, then near dedup's
    assert cold.run["cache"] == {
        "blocks_read": 4,
        "segments_cached": 0,
        "segments_run": 8,
        "outputs_reused": 0,
    }
    again = _build(config, store)
    assert again.manifest_id == cold.manifest_id
    assert again.run["cache"] == {
        "blocks_read": 0,
        "segments_cached": 8,
        "segments_run": 0,
        "outputs_reused": 1,
    }

    # one row of s2 changes (to a text found nowhere else): only s2 is read and run again
    path = tmp_path / "s2.jsonl"
    lines = path.read_text().splitlines()
    row = json.loads(lines[10])
    row["messages"][1]["content"] = "a new answer nobody else gave " * 3
    lines[10] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    changed = _build(config, store)
    assert changed.run["cache"] == {
        "blocks_read": 1,
        "segments_cached": 6,
        "segments_run": 2,
        "outputs_reused": 0,
    }
    assert changed.manifest_id != cold.manifest_id
    assert _same_as_fresh(changed, config, tmp_path)


def test_a_changed_step_reruns_its_segment_and_what_follows(tmp_path):
    sources = _sources(tmp_path)
    config = write_config(tmp_path, sources, NEAR)
    store = tmp_path / "store"
    _build(config, store)
    write_config(tmp_path, sources, NEAR.replace("0.8", "0.7"))
    tuned = _build(config, store)
    # what the exact segment made of every block is reused; near dedup's keys are not
    assert tuned.run["cache"] == {
        "blocks_read": 0,
        "segments_cached": 4,
        "segments_run": 4,
        "outputs_reused": 0,
    }
    assert _same_as_fresh(tuned, config, tmp_path)


def test_a_keep_decision_reruns_only_the_block_it_names(tmp_path):
    sources = _sources(tmp_path)
    config = write_config(tmp_path, sources, NEAR)
    store = tmp_path / "store"
    first = _build(config, store)
    sql = (
        "SELECT id FROM ledger WHERE reason = 'exact_duplicate' AND source = 's1' "
        "AND id NOT LIKE '%#%'"
    )
    twins = query(curate.open_manifest(first.manifest_id, store=store), sql).column(0)
    (twin,) = twins.to_pylist()  # s1's first row, the twin of s0's
    decisions = tmp_path / "review" / "decisions.jsonl"
    append(decisions, [{"id": twin, "decision": "keep", "manifest": first.manifest_id}])
    write_config(tmp_path, sources, NEAR + '[[overrides]]\npath = "review/decisions.jsonl"\n')
    kept = _build(config, store)
    assert kept.manifest["overrides"]["overridden"] == [{"id": twin, "reason": "exact_duplicate"}]
    # s1's block: both of its segments (the decision names one of its rows); the others:
    # neither (the spared row changes no other block's alive rows)
    assert kept.run["cache"] == {
        "blocks_read": 0,
        "segments_cached": 6,
        "segments_run": 2,
        "outputs_reused": 0,
    }
    assert _same_as_fresh(kept, config, tmp_path)


def test_a_damaged_or_unfinished_entry_is_recomputed_never_read(tmp_path):
    config = write_config(tmp_path, _sources(tmp_path), NEAR)
    store = tmp_path / "store"
    cold = _build(config, store)
    records = sorted((store / "cache" / "steps").rglob("*.json"))
    # the segments' entries (the others: global steps' verdicts, the write's objects)
    records = [r for r in records if r.with_name(r.name[:-5] + ".index.arrow").exists()]
    assert len(records) == 8
    records[0].unlink()  # a kill -9 before the record: the parts are there, unnamed
    part = records[1].with_name(records[1].name.replace(".json", ".index.arrow"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in a part the record names
    part.write_bytes(bytes(data))
    again = _build(config, store)
    assert again.run["cache"]["segments_run"] == 2
    assert again.run["cache"]["segments_cached"] == 6
    assert again.manifest_id == cold.manifest_id


def test_a_redacting_build_caches_its_redacted_step_outputs_only(tmp_path):
    """The PII step runs in the first segment, so what a redacting build caches (each
    segment's block and index) holds redacted text: its rebuild after a review round
    reuses every segment, and no secret is in the store's caches. Rows as read are never
    cached (no `cache/blocks`)."""
    secret = "jane.doe@example.com"
    sources = _sources(tmp_path, rows=20)
    lines = (tmp_path / "s0.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["messages"][1]["content"] += f" Mail {secret} for more."
    lines[3] = json.dumps(row)
    (tmp_path / "s0.jsonl").write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path, sources, NEAR + '[validate]\npii = "redact"\n')
    store = tmp_path / "store"
    first = _build(config, store)
    again = _build(config, store)
    assert again.manifest_id == first.manifest_id
    assert again.run["cache"] == {
        "blocks_read": 0,
        "segments_cached": 8,
        "segments_run": 0,
        "outputs_reused": 1,
    }
    assert not (store / "cache" / "blocks").exists()
    cached = [p.read_bytes() for p in (store / "cache").rglob("*") if p.is_file()]
    assert cached and not any(secret.encode() in b for b in cached)


def test_an_edited_write_record_is_not_reused(tmp_path):
    """The write phase's cached record (which shards make which split) is sealed: with two
    shard names swapped in it, a rebuild writes the splits again and keeps its id."""
    config = write_config(tmp_path, _sources(tmp_path), "[split]\nvalidation = 0.2\n")
    store = tmp_path / "store"
    first = _build(config, store)
    (path,) = (store / "cache" / "steps").glob("*/*.outputs.json")
    entry = json.loads(path.read_text())
    splits = entry["record"]["splits"]
    train, validation = splits["train"]["shards"][0], splits["validation"]["shards"][0]
    train["object"], validation["object"] = validation["object"], train["object"]
    path.write_text(json.dumps(entry))
    again = _build(config, store)
    assert again.manifest_id == first.manifest_id
    assert again.manifest["splits"] == first.manifest["splits"]
