"""Nothing corrupted, tampered or outside the store is served; nothing a user owns is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import curate
from tests.conftest import build, chat, write_config, write_jsonl

READERS = [
    ("show", "{ref}"),
    ("query", "{ref}", "SELECT count(*) FROM rows"),
    ("query", "{ref}", "SELECT count(*) FROM ledger"),
    ("export", "{ref}", "--out", "{out}"),
    ("review", "{ref}"),
]


@pytest.fixture
def built(tmp_path):
    write_jsonl(
        tmp_path / "a.jsonl",
        [chat(f"question {i} about omega", f"answer {i}") for i in range(40)]
        + [chat("question 1 about omega", "answer 1")] * 3,
    )
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra="[split]\nvalidation = 0.1\n"
    )
    b = build(cfg)
    return cfg, tmp_path / ".store", b


def _run_all(cli, store: Path, ref: str, out: Path) -> list[tuple[tuple[str, ...], int, str]]:
    results = []
    for k, command in enumerate(READERS):
        args = [a.format(ref=ref, out=out / str(k)) for a in command]
        r = cli(*args, "--store", store)
        results.append((tuple(args), r.code, r.err))
    return results


def _object(store: Path, sha: str) -> Path:
    return store / "objects" / sha[:2] / sha


def _flip(path: Path, offset: int, bit: int = 1) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= bit
    path.write_bytes(bytes(data))


def test_an_edited_manifest_is_refused_by_every_read_command(built, cli, tmp_path):
    _, store, b = built
    path = store / "manifests" / f"{b.id}.json"
    path.write_bytes(path.read_bytes().replace(b'"rows_in":43', b'"rows_in":44'))
    for args, code, err in _run_all(cli, store, b.id, tmp_path / "out"):
        assert code == 2, args
        assert "corrupt" in err and "curate verify" in err, (args, err)
    with pytest.raises(curate.errors.IntegrityError):
        curate.load(b.id, store=store)


def test_a_flipped_byte_in_the_ledger_or_a_shard_is_never_served(built, cli, tmp_path):
    _, store, b = built
    ledger = b.manifest["ledger"]["parts"][0]["object"]
    shard = b.manifest["splits"]["train"]["shards"][0]["object"]
    size = _object(store, shard).stat().st_size
    pristine = {s: _object(store, s).read_bytes() for s in (ledger, shard)}
    for offset in [*range(4, size - 8, max(1, size // 10))][:10]:
        _flip(_object(store, shard), offset)
        out = cli("export", b.id, "--out", tmp_path / f"x{offset}", "--store", store)
        assert out.code == 2 and shard in out.err and "curate verify" in out.err
        _object(store, shard).write_bytes(pristine[shard])
    _flip(_object(store, ledger), _object(store, ledger).stat().st_size // 2)
    r = cli("query", b.id, "SELECT detail FROM ledger", "--store", store)
    assert r.code == 2 and ledger in r.err
    assert cli("verify", b.id, "--store", store).code == 2


def test_an_edited_block_cache_entry_is_recomputed(built):
    cfg, store, b = built
    blocks = [p for p in (store / "cache" / "blocks").rglob("*.arrow")]
    assert blocks
    for p in blocks:
        p.write_bytes(p.read_bytes().replace(b"omega", b"OMEGA"))
    again = build(cfg)
    assert again.id == b.id  # the edited text never reaches the output
    assert not any("OMEGA" in json.dumps(r) for r in again.rows)


def test_a_tag_or_object_name_cannot_point_outside_the_store(built, cli, tmp_path):
    _, store, b = built
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (store / "refs").mkdir(exist_ok=True)
    (store / "refs" / "evil").write_text(f"../../{outside.name}/m\n")
    for args, code, err in _run_all(cli, store, "evil", tmp_path / "out"):
        assert code == 2 and "not the id of a manifest" in err, (args, err)
    with pytest.raises(curate.errors.IntegrityError):
        curate.load("evil", store=store)
    assert list(outside.iterdir()) == []
    # a manifest rewritten to name a file outside the store, stored under its new hash
    import hashlib

    from curate.manifests.store import canonical_json

    pq.write_table(
        pq.read_table(_object(store, b.manifest["splits"]["train"]["shards"][0]["object"])),
        tmp_path / "outside.parquet",
    )
    data = json.loads((store / "manifests" / f"{b.id}.json").read_text())
    data["splits"]["train"]["shards"][0]["object"] = "../../../outside.parquet"
    blob = canonical_json(data)
    forged = hashlib.sha256(blob).hexdigest()
    (store / "manifests" / f"{forged}.json").write_bytes(blob)
    for args, code, err in _run_all(cli, store, forged, tmp_path / "out2"):
        if args[0] == "show":
            continue  # shows the manifest as it is; reads no object
        assert code == 2 and "is not a sha256 digest" in err, (args, err)


def test_a_flipped_tag_file_is_a_clear_error_everywhere(built, cli, tmp_path):
    _, store, b = built
    assert cli("tag", "v1", b.id, "--store", store).code == 0
    tag = store / "refs" / "v1"
    _flip(tag, 3, 0x40)
    for args, code, err in [
        *_run_all(cli, store, "v1", tmp_path / "o"),
        (("verify",), cli("verify", "v1", "--store", store).code, "not the id of a manifest"),
    ]:
        assert code == 2, (args, err)
        assert "not the id of a manifest" in err, (args, err)


def test_export_never_overwrites_a_used_folder_unless_asked(built, cli, tmp_path):
    _, store, b = built
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "train.jsonl").write_text("my own train file")
    r = cli("export", b.id, "--out", out, "--store", store)
    assert r.code == 2 and "--overwrite" in r.err
    assert (out / "train.jsonl").read_text() == "my own train file"
    r = cli("export", b.id, "--out", out, "--overwrite", "--store", store)
    assert r.code == 0
    assert (out / "notes.txt").read_text() == "my notes"  # not curate's: untouched
    assert len((out / "train.jsonl").read_text().splitlines()) == len(
        [x for x in b.rows if x["split"] == "train"]
    )
    for fmt in ("parquet", "hf", "hf"):  # hf twice: its folder replaced in place
        assert (
            cli("export", b.id, "--format", fmt, "--out", out, "--overwrite", "--store", store).code
            == 0
        )
    assert (out / "notes.txt").read_text() == "my notes"
    assert not [p for p in out.iterdir() if p.name.startswith(".curate-tmp-")]


def test_train_refuses_a_used_out_folder_before_any_work(built, cli, tmp_path):
    _, store, b = built
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = cli("train", b.id, "--base", "no-such-model", "--out", out, "--store", store)
    assert r.code == 2 and "not empty" in r.err and "--overwrite" in r.err
    assert (out / "keep.txt").read_text() == "precious"


def test_stale_temps_of_killed_writers_are_swept_live_ones_kept(tmp_path, monkeypatch):
    import fcntl

    from curate import fsio

    monkeypatch.setattr(fsio, "SWEEP_MIN_AGE_SECONDS", 0.0)
    dead = tmp_path / f"{fsio.TEMP_MARK}x.1.aa"
    dead.write_text("half")
    live = tmp_path / f"{fsio.TEMP_MARK}y.2.bb"
    live.write_text("being written")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    (tmp_path / "user.txt").write_text("mine")
    try:
        assert fsio.sweep_stale(tmp_path) == [dead]
    finally:
        os.close(fd)
    assert live.exists() and (tmp_path / "user.txt").exists()


def test_inspect_takes_trust_remote_code_from_the_user_never_the_manifest(tmp_path, monkeypatch):
    from tests.test_hang import _qwen

    write_jsonl(tmp_path / "a.jsonl", [chat("hi", "hello")])
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra=f'[tokenizer]\npath = "{_qwen()}"\ntrust_remote_code = true\n',
    )
    b = build(cfg)
    assert b.manifest["tokenizer"]["trust_remote_code"] is True
    import curate.validators.target as target
    from curate.review.inspect import inspect_manifest

    seen: list[bool] = []
    real = target.load_tokenizer_dir

    def spy(folder: str, trust_remote_code: bool = False):
        seen.append(trust_remote_code)
        return real(folder, False)

    monkeypatch.setattr(target, "load_tokenizer_dir", spy)
    assert inspect_manifest(b.id, tmp_path / ".store", 1, None)
    assert seen and not any(seen)
    inspect_manifest(b.id, tmp_path / ".store", 1, None, trust_remote_code=True)
    assert seen[-1] is True


WRITER = """
import os, sys, time
from pathlib import Path
import pyarrow as pa
from curate import fsio
from curate.engines.passes import write_ipc

kind, target = sys.argv[1], Path(sys.argv[2])
table = pa.table({"x": list(range(1000))})
if kind == "bytes":
    with fsio.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        print("writing", flush=True); time.sleep(60)
elif kind == "folder":
    with fsio.atomic_path(target, is_dir=True, replace=True) as tmp:
        (tmp / "a").write_text("half")
        print("writing", flush=True); time.sleep(60)
else:
    import pyarrow.ipc as ipc
    orig = ipc.new_file
    def slow(sink, schema):
        print("writing", flush=True); time.sleep(60)
    ipc.new_file = slow
    write_ipc(table, target)
"""


@pytest.mark.parametrize("kind", ["bytes", "folder", "ipc"])
def test_a_writer_killed_mid_write_leaves_the_old_file_and_a_temp_the_next_run_removes(
    tmp_path, monkeypatch, kind
):
    import signal
    import subprocess
    import sys

    from curate import fsio

    target = tmp_path / ("out" if kind == "folder" else "out.bin")
    if kind == "folder":
        target.mkdir()
        (target / "old").write_text("old")
    else:
        target.write_text("old")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, kind, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if kind == "folder":
        assert [p.name for p in target.iterdir()] == ["old"]
    else:
        assert target.read_text() == "old"
    temps = [p for p in tmp_path.iterdir() if p.name.startswith(fsio.TEMP_MARK)]
    assert len(temps) == 1
    monkeypatch.setattr(fsio, "SWEEP_MIN_AGE_SECONDS", 0.0)
    assert fsio.sweep_stale(tmp_path) == temps
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
