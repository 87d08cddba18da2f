"""A build's history: diff of two builds, and gc that never removes a named object."""

from __future__ import annotations

import fcntl
import os
import shutil

import curate
from curate.manifests.lineage import latest_named
from curate.manifests.manifest import manifest_objects
from tests.conftest import build, chat, write_config, write_jsonl


def rows(prefix: str, n: int) -> list[dict]:
    return [chat(f"{prefix} question {i}", f"{prefix} answer {i}") for i in range(n)]


def two_builds(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", rows("a", 10))
    write_jsonl(tmp_path / "b.jsonl", rows("b", 6))
    sources = [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}]
    first = build(write_config(tmp_path, sources))
    write_jsonl(tmp_path / "b.jsonl", rows("b", 4) + rows("c", 2))  # 2 rows replaced
    second = build(write_config(tmp_path, sources, extra="[split]\nvalidation = 0.25\n"))
    return first, second


def test_diff_names_config_sources_splits_and_rows(tmp_path, cli):
    first, second = two_builds(tmp_path)
    store = str(tmp_path / ".store")
    r = cli("diff", first.id, second.id, "--store", store, "--json")
    assert r.code == 1
    out = r.json()
    assert out["config"] == [{"key": "split.validation", "a": 0.0, "b": 0.25}]
    assert set(out["sources"]) == {"b"}  # same counts, but b's file changed
    b_files = out["sources"]["b"]
    assert b_files["a"]["files"]["b.jsonl"] != b_files["b"]["files"]["b.jsonl"]
    assert out["rows"]["added"] == 2 and out["rows"]["removed"] == 2
    assert out["splits"]["validation"] == {"a": 0, "b": 4}
    added = {r["id"] for r in second.rows} - {r["id"] for r in first.rows}
    assert set(out["rows"]["added_ids"]) == added
    same = cli("diff", first.id, first.id, "--store", store, "--json")
    assert same.code == 0 and same.json() == {"a": first.id, "b": first.id, "identical": True}
    shown = cli("diff", first.id, second.id, "--store", store, "--rows", "1")
    assert "config split.validation: 0.0 → 0.25" in shown.out and "+ " in shown.out


def test_gc_removes_only_what_no_manifest_names(tmp_path, cli):
    first, second = two_builds(tmp_path)
    store = curate.api.store_for(tmp_path / ".store")
    orphan = store.put_bytes(b"the shard of a build that was killed before its manifest")
    named = set(manifest_objects(first.manifest)) | set(manifest_objects(second.manifest))
    dry = cli("gc", "--store", str(store.root), "--json").json()
    assert dry["unreferenced"] == [orphan] and dry["deleted"] is False
    assert store.object_path(orphan).exists()
    done = cli("gc", "--store", str(store.root), "--delete", "--json").json()
    assert done["unreferenced"] == [orphan] and not store.object_path(orphan).exists()
    assert all(store.object_path(sha).exists() for sha in named)
    for mid in (first.id, second.id):
        assert cli("verify", mid, "--store", str(store.root)).code == 0
    # the caches a rebuild recomputes: listed by kind, removed only with --delete
    cache = store.root / "cache"
    dry = cli("gc", "--store", str(store.root), "--cache", "--json").json()
    assert set(dry["cache"]) == {"blocks", "steps", "decompressed"} and dry["cache"]["steps"] > 0
    assert (cache / "steps").exists()
    assert "and caches of" in cli("gc", "--store", str(store.root), "--cache").out
    cli("gc", "--store", str(store.root), "--cache", "--delete")
    assert not (cache / "steps").exists() and not (cache / "blocks").exists()
    again = curate.build(tmp_path / "mixture.toml", store=store.root, workers=1)
    assert again.manifest_id == second.id and again.run["cache"]["blocks_read"] == 2


def test_gc_waits_for_a_running_build(tmp_path, cli):
    first, _ = two_builds(tmp_path)
    store = curate.api.store_for(tmp_path / ".store")
    with store.writing():  # what a build holds while it writes objects
        r = cli("gc", "--store", str(store.root), "--delete")
    assert r.code == 2 and "a build is writing to the store" in r.err
    lock = os.open(store.root / "locks" / "objects", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: gc may take it now
    os.close(lock)


_GC_LOOP = """
import sys, time
from curate.errors import UserError
from curate.manifests.gc import collect
from curate.manifests.store import Store
store, deleted = Store(sys.argv[1]), 0
while True:
    try:
        deleted += len(collect(store, delete=True)["unreferenced"])
    except UserError:
        pass  # a build holds the lock
    time.sleep(0.001)
"""


def test_gc_in_a_loop_never_removes_what_a_finishing_build_names(tmp_path):
    """gc --delete over and over while 20 builds finish: each build's objects are named by
    its manifest before the lock lets gc in, so every manifest verifies."""
    import subprocess
    import sys

    store = tmp_path / ".store"
    write_jsonl(tmp_path / "a.jsonl", rows("seed", 3))
    build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}]))
    loop = subprocess.Popen([sys.executable, "-c", _GC_LOOP, str(store)])
    ids = []
    try:
        for k in range(20):  # new rows each time: new shards, ledgers, reports
            write_jsonl(tmp_path / "a.jsonl", rows(f"b{k}", 8))
            ids.append(curate.build(tmp_path / "mixture.toml", store=store, workers=1).manifest_id)
    finally:
        loop.kill()
        loop.wait()
    handle = curate.api.store_for(store)
    missing = {
        mid[:12]: [
            s for s in manifest_objects(handle.read_manifest(mid)) if handle.verify_object(s)
        ]
        for mid in ids
    }
    assert missing == {mid[:12]: [] for mid in ids}


def test_gc_keeps_objects_younger_than_a_running_writer(tmp_path):
    """Should the lock ever fail to hold (a store on a filesystem without flock), an object
    written after the oldest running writer started is kept."""
    from curate.manifests.gc import _collect

    two_builds(tmp_path)
    store = curate.api.store_for(tmp_path / ".store")
    with store.writing():
        orphan = store.put_bytes(b"written by a build with no manifest yet")
        assert store.oldest_live_writer() is not None
        assert orphan not in _collect(store, delete=True, cache=False)["unreferenced"]
    assert store.oldest_live_writer() is None  # gone with its writer
    assert _collect(store, delete=True, cache=False)["unreferenced"] == [orphan]


def test_gc_stops_on_a_manifest_it_cannot_read(tmp_path, cli):
    first, _ = two_builds(tmp_path)
    path = tmp_path / ".store" / "manifests" / f"{first.id}.json"
    os.chmod(path, 0o644)
    path.write_text("{not json")
    r = cli("gc", "--store", str(tmp_path / ".store"), "--delete")
    assert r.code == 2 and f"manifest {first.id} cannot be read" in r.err


def test_lineage_links_builds_of_one_name_and_a_rebuild_keeps_its_id(tmp_path, cli):
    first, second = two_builds(tmp_path)
    assert first.manifest["parent"] is None and second.manifest["parent"] == first.id
    again = build(tmp_path / "mixture.toml")  # unchanged inputs: the same build
    assert again.id == second.id
    third = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}]))
    assert third.manifest["parent"] == second.id
    # the latest build of a name is kept beside the manifests; without it (a store of an
    # earlier version), every manifest is read, with the same result
    names = tmp_path / ".store" / "names"
    assert [p.read_text() for p in names.iterdir()] == [third.id]
    shutil.rmtree(names)
    assert latest_named(curate.api.store_for(tmp_path / ".store"), "test")[0] == third.id
    explicit = curate.build(
        tmp_path / "mixture.toml", store=tmp_path / ".store", parent=first.id[:12]
    )
    assert explicit.manifest["parent"] == first.id
    r = cli("log", "--graph", "--store", str(tmp_path / ".store"))
    lines = [line for line in r.out.splitlines() if line.strip()]
    assert lines[0].startswith(first.id[:12])
    assert lines[1].startswith(f"└─ {second.id[:12]}") or lines[1].strip().startswith("└─")
    depth = {
        line.strip().removeprefix("└─ ")[:12]: len(line) - len(line.lstrip()) for line in lines
    }
    assert depth[first.id[:12]] == 0 and depth[second.id[:12]] == 2 and depth[third.id[:12]] == 4


def test_hf_export_carries_a_dataset_card_the_hub_parser_reads(tmp_path, cli):
    import datasets
    from huggingface_hub import DatasetCard

    write_jsonl(tmp_path / "a.jsonl", rows("a", 30))
    write_jsonl(tmp_path / "s.jsonl", rows("s", 10))
    sources = [
        {"name": "a", "path": "a.jsonl", "license": "MIT", "role": "task"},
        {"name": "s", "path": "s.jsonl", "license": "internal", "role": "safety"},
    ]
    b = build(write_config(tmp_path, sources, extra="[split]\nvalidation = 0.1\n"))
    out = tmp_path / "out"
    r = cli(
        "export", b.id, "--format", "hf", "--out", str(out), "--store", str(tmp_path / ".store")
    )
    assert r.code == 0
    card = DatasetCard.load(out / "dataset" / "README.md")
    assert card.data.license == "other" and card.data.license_name == "mixed"
    assert card.data.size_categories == ["n<1K"]
    assert card.data.task_categories == ["text-generation"]
    assert f"`{b.id}`" in card.text
    assert "| s | safety | internal | 10 | 10 | 0 | 25.0% |" in card.text
    loaded = datasets.load_from_disk(str(out / "dataset"))
    assert loaded["train"].num_rows + loaded["validation"].num_rows == 40
