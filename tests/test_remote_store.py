"""A store named by an S3 URI (a moto server on 127.0.0.1): the build's manifest, objects
and ledger are the local store's, byte for byte, and live in the bucket; reads check every
object's bytes against its name, whichever machine wrote it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curate import api
from curate.errors import IntegrityError
from curate.manifests.manifest import manifest_objects
from curate.manifests.store import Store
from tests.conftest import build
from tests.see import planted_build


def _bucket_bytes(s3, uri: str, rel: str) -> bytes:
    key = uri.split("://", 1)[1].split("?", 1)[0] + "/" + rel
    with s3.fs().open_input_stream(key) as fh:
        return bytes(fh.read())


def test_build_to_s3_gives_the_local_store_bytes(s3, tmp_path):
    cfg, local = planted_build(tmp_path)
    uri = s3.store("planted")
    remote = build(cfg, store=uri, workers=2)
    assert (remote.id, remote.ledger, remote.rows) == (local.id, local.ledger, local.rows)
    here = Store(tmp_path / ".store")
    shas = manifest_objects(remote.manifest)
    assert len(shas) >= 4  # shards, ledger part, split index, report
    for sha in shas:
        assert _bucket_bytes(s3, uri, f"objects/{sha[:2]}/{sha}") == (
            here.object_path(sha).read_bytes()
        )
    assert _bucket_bytes(s3, uri, f"manifests/{local.id}.json") == here.manifest_bytes(local.id)
    run = json.loads(_bucket_bytes(s3, uri, f"manifests/{local.id}.run.json"))
    assert run["store"] == uri
    # the bucket is the store: a machine with none of its local copies reads and checks it
    shutil.rmtree(Store(uri).root)
    assert api.verify(remote.id[:10], uri)["problems"] == []
    assert Store(uri).object_path(shas[0]).is_file()  # verified copy, read from here on
    again = build(cfg, store=uri, workers=1)
    assert again.id == local.id


def test_a_damaged_bucket_object_is_never_read(s3, tmp_path):
    cfg, local = planted_build(tmp_path, report=False)
    uri = s3.store("damaged")
    build(cfg, store=uri, report=False)
    shard = local.manifest["splits"]["train"]["shards"][0]["object"]
    key = uri.split("://", 1)[1].split("?", 1)[0] + f"/objects/{shard[:2]}/{shard}"
    body = _bucket_bytes(s3, uri, f"objects/{shard[:2]}/{shard}")
    with s3.fs().open_output_stream(key) as out:
        out.write(body[:-1] + bytes([body[-1] ^ 1]))
    store = Store(uri)
    shutil.rmtree(store.root)
    problems = api.verify(local.id, uri)["problems"]
    assert problems == [
        f"object {shard} in {uri} is corrupt: its bytes hash to " + problems[0][-64:]
    ]
    with pytest.raises(IntegrityError, match="corrupt"):
        store.verified_object(shard)
    assert not store.object_path(shard).exists()  # no local copy under a name it lacks


def test_a_failed_upload_leaves_no_object(s3):
    store = Store(s3.store("failed"))

    def half(out):
        out.write(b"half of it")
        raise OSError("connection reset")

    with pytest.raises(Exception, match="connection reset"):
        store.files._put("objects/ab/" + "ab" * 32, half)
    assert store.files.size("objects/ab/" + "ab" * 32) is None


def test_cli_on_an_s3_store(s3, cli, tmp_path):
    cfg, local = planted_build(tmp_path, report=False)
    uri = s3.store("cli")
    built = cli("build", cfg, "--store", uri, "--json", "--workers", "2", "--no-report")
    assert built.code == 0, built.err
    assert built.json()["manifest_id"] == local.id
    assert cli("tag", "v1", local.id[:12], "--store", uri).code == 0
    listed = cli("log", "--store", uri, "--json").json()
    assert [(e["id"], e["tags"]) for e in listed] == [(local.id, ["v1"])]
    assert cli("verify", "v1", "--store", uri).code == 0
    exported = cli("export", "v1", "--format", "jsonl", "--out", tmp_path / "out", "--store", uri)
    assert exported.code == 0, exported.err
    rows = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    assert len(rows) == sum(1 for r in local.rows if r["split"] == "train")
    gc = cli("gc", "--store", uri)
    assert gc.code == 2 and "does not run on a remote store" in gc.err


def test_store_uri_refusals(s3, cli, tmp_path):
    cfg, _ = planted_build(tmp_path, report=False)
    secret = "s3://curate-x/store?endpoint_override=127.0.0.1:1&access_key=A&secret_key=B"
    refused = cli("build", cfg, "--store", secret)
    assert (
        refused.code == 2
        and "holds credentials" in refused.err
        and "secret_key=…" in refused.err  # the key is named, its value never shown
        and "=A" not in refused.err
        and "=B" not in refused.err
    )
    missing = s3.store("exists").replace("s3://exists/", "s3://no-such-bucket/")
    nobucket = cli("build", cfg, "--store", missing)
    assert nobucket.code == 2 and "bucket 'no-such-bucket' does not exist" in nobucket.err
    assert "write: " not in nobucket.err  # refused before any work
    other = cli("log", "--store", "gs://bucket/store")
    assert other.code == 2 and "gs:// stores are not supported" in other.err
    closed = cli("log", "--store", "s3://b/x?endpoint_override=127.0.0.1:9&scheme=http")
    assert closed.code == 2 and "cannot list" in closed.err


def test_a_store_path_is_still_a_folder(tmp_path):
    assert Store(tmp_path / "s").root == tmp_path / "s"
    assert Store(f"file://{tmp_path}/s").root == Path(f"{tmp_path}/s")
    assert not Store(tmp_path).remote


def test_workers_see_the_environment_of_the_build(monkeypatch):
    """The forkserver keeps the environment of its first start: a variable set since (AWS
    credentials in a notebook) still reaches the workers of a later build."""
    import os

    from curate.engines.local import LocalEngine, prestart

    prestart()
    monkeypatch.setenv("CURATE_TEST_PROBE", "set after the forkserver started")
    with LocalEngine(2, pool_only=True) as engine:
        seen = engine.map(os.getenv, [("CURATE_TEST_PROBE",)] * 4, "probe")
    assert seen == ["set after the forkserver started"] * 4
