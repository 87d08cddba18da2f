"""`curate inspect`: rows exactly as the trainer sees them — tokens, trained spans, counts.

From a manifest id: the stored token ids and mask spans of output rows (what `curate train`
reads), decoded in segments, trained or not. From a config: the first rows of its sources
read, normalized and run through the template step as a build would (no dedup, no mixture),
rejected rows shown with their reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.errors import UserError


def segments(tokenizer: Any, ids: list[int], spans: list[dict[str, int]]) -> list[dict[str, Any]]:
    """The decoded text cut at the span edges: [{"trained": bool, "text": ...}, ...]."""
    out: list[dict[str, Any]] = []
    pos = 0
    for span in spans:
        a, b = span["start"], span["end"]
        if a > pos:
            out.append({"trained": False, "text": tokenizer.decode(ids[pos:a])})
        out.append({"trained": True, "text": tokenizer.decode(ids[a:b])})
        pos = b
    if pos < len(ids):
        out.append({"trained": False, "text": tokenizer.decode(ids[pos:])})
    return out


def _view(tokenizer: Any, rec: dict[str, Any]) -> dict[str, Any]:
    ids = rec["input_ids"]
    spans = rec["mask_spans"]
    return {
        "id": rec["id"],
        "source": rec["source"],
        "n_tokens": rec["n_tokens"],
        "n_trained": rec["n_trained"],
        "tokens_cut": rec["tokens_cut"],
        "mask_spans": [[s["start"], s["end"]] for s in spans],
        "segments": segments(tokenizer, ids, spans),
    }


def inspect_manifest(
    ref: str, store: str | Path | None, n: int, source: str | None, trust_remote_code: bool = False
) -> list[dict[str, Any]]:
    """Rows of a build as the trainer sees them.

    `trust_remote_code` comes from the user's flag only, never from the manifest: stored data
    must not decide whether code found beside it runs.
    """
    from curate.api import open_manifest
    from curate.ledger import connect
    from curate.validators.target import load_tokenizer_dir

    manifest = open_manifest(ref, store)
    entry = manifest.data.get("tokenizer")
    if not entry:
        raise UserError(
            f"manifest {manifest.id[:12]} was built without a [tokenizer]: it holds no tokens to "
            "inspect; add [tokenizer] to the config, or run `curate inspect CONFIG`"
        )
    tokenizer = manifest_tokenizer(manifest, entry, load_tokenizer_dir, trust_remote_code)
    con = connect(manifest)
    try:
        rows = (
            con.sql(
                "SELECT id, source, input_ids, mask_spans, n_tokens, n_trained, tokens_cut "
                "FROM rows WHERE ($source IS NULL OR source = $source) "
                "ORDER BY split, id LIMIT $n",
                params={"source": source, "n": n},
            )
            .to_arrow_table()
            .to_pylist()
        )
    finally:
        con.close()
    return [_view(tokenizer, rec) for rec in rows]


def manifest_tokenizer(manifest: Any, entry: dict[str, Any], load: Any, trust: bool) -> Any:
    """The manifest's tokenizer: the store's cached copy, else its path beside the config."""
    from curate.manifests.store import HEX64

    if not HEX64.match(str(entry.get("sha256", ""))):
        raise UserError(f"manifest {manifest.id[:12]}: its tokenizer sha256 is not a digest")
    cached = manifest.store.root / "cache" / "tokenizers" / entry["sha256"]
    candidates = [cached]
    run = manifest.store.read_run(manifest.id)
    path = Path(entry["path"])
    if not path.is_absolute() and run.get("config_dir"):
        path = Path(run["config_dir"]) / path
    candidates.append(path)
    for folder in candidates:
        if folder.is_dir():
            from curate.validators.target import _content_sha256

            tok = load(str(folder), trust)
            if _content_sha256(tok) == entry["sha256"]:
                return tok
    raise UserError(
        f"cannot find the tokenizer manifest {manifest.id[:12]} was built with "
        f"(sha256 {entry['sha256'][:12]}; looked in {', '.join(str(c) for c in candidates)})"
    )


def inspect_config(config_path: str | Path, n: int, source: str | None) -> list[dict[str, Any]]:
    from curate.config import load_config
    from curate.manifests.store import Store, default_store
    from curate.pipeline import build_steps, load_build_target
    from curate.readers import read_block
    from curate.sources import plan_blocks, scan_file, scratch_dir
    from curate.validators.template import TemplateStep

    cfg = load_config(config_path)
    if cfg.tokenizer is None:
        raise UserError(f"{config_path}: inspect needs a [tokenizer] section in the config")
    store = Store(default_store(config_path))
    target = load_build_target(cfg, store)
    assert target is not None
    step = next(s for s in build_steps(cfg, target) if isinstance(s, TemplateStep))
    out: list[dict[str, Any]] = []
    for src in cfg.sources:
        if source is not None and src.name != source:
            continue
        files = cfg.source_files(src)
        scans = [scan_file(str(f), scratch_dir(store.root)) for f in files]
        tasks, _ = plan_blocks(
            src.name, src.format, [f.name for f in files], scans, False, src.columns
        )
        for task in tasks:
            if len(out) >= n:
                return out
            block = read_block(task).slice(0, n - len(out))
            verdicts = step(block)
            cols = verdicts.columns
            rejected = {
                int(r): (reason, detail)
                for r, reason, detail in zip(
                    verdicts.rows,
                    verdicts.reason.to_pylist(),
                    verdicts.detail.to_pylist(),
                    strict=True,
                )
            }
            for r in range(block.num_rows):
                rec = block.slice(r, 1).to_pylist()[0]
                if rec["reason"] is not None:
                    out.append(_rejected(rec, rec["reason"], rec["detail"]))
                elif r in rejected:
                    out.append(_rejected(rec, *rejected[r]))
                else:
                    assert cols is not None
                    rec.update(cols.slice(r, 1).to_pylist()[0])
                    out.append(_view(target.tokenizer, rec))
    return out


def _rejected(rec: dict[str, Any], reason: str, detail: str | None) -> dict[str, Any]:
    return {
        "id": rec["id"],
        "source": rec["source"],
        "rejected": reason,
        "detail": json.loads(detail) if detail else {},
    }
