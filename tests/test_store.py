"""The store: content addressing, resolution of ids, prefixes and tags, crash leftovers."""

from __future__ import annotations

import hashlib

import pytest

from curate.errors import UnknownIdError, UserError
from curate.manifests.store import Store, canonical_json
from tests.conftest import build, chat, write_config, write_jsonl


def test_objects_are_named_by_their_sha256_and_read_only(tmp_path):
    store = Store(tmp_path)
    sha = store.put_bytes(b"hello")
    assert sha == hashlib.sha256(b"hello").hexdigest()
    path = store.object_path(sha)
    assert path.read_bytes() == b"hello" and oct(path.stat().st_mode)[-3:] == "444"
    assert store.verify_object(sha) is None
    assert "missing" in store.verify_object("0" * 64)


def test_a_half_written_object_left_by_a_crash_is_replaced(tmp_path):
    store = Store(tmp_path)
    sha = hashlib.sha256(b"complete bytes").hexdigest()
    store.object_path(sha).parent.mkdir(parents=True)
    store.object_path(sha).write_bytes(b"compl")  # what a crash before write-back leaves
    src = tmp_path / "new"
    src.write_bytes(b"complete bytes")
    assert store.put_file(src, durable=False) == sha
    assert store.object_path(sha).read_bytes() == b"complete bytes"


def test_manifest_ids_prefixes_and_tags_resolve(tmp_path):
    store = Store(tmp_path)
    mid = store.put_manifest({"b": 1, "a": [1, 2]}, {"created": "now"})
    assert mid == hashlib.sha256(canonical_json({"a": [1, 2], "b": 1})).hexdigest()
    assert store.manifest_bytes(mid) == b'{"a":[1,2],"b":1}\n'
    assert store.resolve(mid) == store.resolve(mid[:8]) == mid
    store.tag("prod", mid)
    assert store.resolve("prod") == mid
    with pytest.raises(UnknownIdError, match="at least 8 hex digits"):
        store.resolve(mid[:6])
    with pytest.raises(UserError):
        store.tag(mid[:10], mid)


def test_an_ambiguous_prefix_is_refused(tmp_path):
    folder = tmp_path / "manifests"
    folder.mkdir()
    for tail in ("0" * 56, "1" * 56):  # two builds whose ids share their first 8 digits
        (folder / f"abcdef01{tail}.json").write_text("{}")
    with pytest.raises(UnknownIdError, match="ambiguous"):
        Store(tmp_path).resolve("abcdef01")
    assert Store(tmp_path).resolve("abcdef010") == "abcdef01" + "0" * 56


def test_a_damaged_cache_block_is_read_again(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a"), chat("q2", "a2")])
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}])
    first = build(cfg)
    (block,) = (tmp_path / ".store" / "cache" / "blocks").rglob("*.arrow")
    block.write_bytes(block.read_bytes()[:100])  # truncated by a crash
    assert build(cfg).id == first.id


def test_objects_are_made_durable_before_the_manifest_names_them(tmp_path, monkeypatch):
    import curate

    events: list[tuple[str, object]] = []
    real_sync, real_put = Store.sync_objects, Store.put_manifest
    monkeypatch.setattr(
        Store,
        "sync_objects",
        lambda self, shas: (events.append(("sync", sorted(shas))), real_sync(self, shas))[1],
    )
    monkeypatch.setattr(
        Store,
        "put_manifest",
        lambda self, m, r: (events.append(("manifest", None)), real_put(self, m, r))[1],
    )
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a"), chat("q", "a"), "{bad"])
    result = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}]))
    assert [e for e, _ in events] == ["sync", "manifest"]
    manifest = curate.open_manifest(result.id, store=tmp_path / ".store")
    # the build's outputs in one sync; the report is written after them, fsynced by put_bytes
    report = manifest.data["report"]["object"]
    assert events[0][1] == sorted(o for o in manifest.objects() if o != report)
    assert (tmp_path / ".store" / "objects" / report[:2] / report).stat().st_mode & 0o222 == 0


def test_prescan_leaves_out_what_it_cannot_scan(tmp_path):
    from curate.sources import Prescan, scan_file

    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    jobs = [(str(tmp_path / "a.jsonl"), None), (str(tmp_path / "gone.jsonl"), None)]
    found = Prescan(jobs).results()
    assert found == {jobs[0]: scan_file(*jobs[0])}
