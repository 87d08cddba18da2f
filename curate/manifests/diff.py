"""`curate diff A B`: what changed between two builds.

Config key by key (sources by name), per source rows in / kept / rejected by reason, the
mixture's shares, split sizes, tokenizer and template fingerprints, and the output rows added
and removed (by id, read off the shards). Empty sections are left out, so two builds of the
same inputs, config and code (one manifest id) give an empty diff.
"""

from __future__ import annotations

from typing import Any

from curate.manifests.manifest import Manifest


def diff_manifests(a: Manifest, b: Manifest, show_rows: int = 0) -> dict[str, Any]:
    """The differences of `b` from `a`; `show_rows`: how many added / removed rows to give
    whole (0: ids only)."""
    out: dict[str, Any] = {"a": a.id, "b": b.id, "identical": a.id == b.id}
    if a.id == b.id:
        return out
    sections = {
        "config": config_changes(a.data["config"], b.data["config"]),
        "sources": _sources(a.data, b.data),
        "mixture": _mixture(a.data, b.data),
        "splits": {
            name: {"a": a.data["splits"].get(name, {}).get("rows", 0), "b": entry}
            for name in sorted({*a.data["splits"], *b.data["splits"]})
            if (entry := b.data["splits"].get(name, {}).get("rows", 0))
            != a.data["splits"].get(name, {}).get("rows", 0)
        },
        "tokenizer": _changed(
            _fingerprints(a.data.get("tokenizer")), _fingerprints(b.data.get("tokenizer"))
        ),
        "rows": _rows(a, b, show_rows),
    }
    out.update({k: v for k, v in sections.items() if v})
    return out


def config_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """[{key, a, b}] for every leaf that differs; a key absent on one side has None there."""
    left, right = _flatten(a), _flatten(b)
    return [
        {"key": key, "a": left.get(key), "b": right.get(key)}
        for key in sorted({*left, *right})
        if left.get(key) != right.get(key)
    ]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys; a list of named tables (sources, evals) keyed by name, other lists whole."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(node, list) and node and all(isinstance(x, dict) and "name" in x for x in node):
        out = {}
        for item in node:
            out.update(_flatten(item, f"{prefix}[{item['name']}]"))
        return out
    return {prefix: node}


def _sources(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    keys = ("rows_in", "rows_kept", "rows_rejected", "rows_emitted", "rejected")

    def summary(src: dict[str, Any]) -> dict[str, Any]:
        files = {f["path"]: f["sha256"] for f in src["files"]}
        return {**{k: src.get(k) for k in keys}, "files": files}

    left = {s["name"]: summary(s) for s in a["sources"]}
    right = {s["name"]: summary(s) for s in b["sources"]}
    return {
        name: {"a": left.get(name), "b": right.get(name)}
        for name in sorted({*left, *right})
        if left.get(name) != right.get(name)
    }


def _mixture(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    keys = ("requested_share", "solved_share", "realized_share", "realized_rows")
    left = {n: {k: e.get(k) for k in keys} for n, e in a["mixture"]["sources"].items()}
    right = {n: {k: e.get(k) for k in keys} for n, e in b["mixture"]["sources"].items()}
    return {
        name: {"a": left.get(name), "b": right.get(name)}
        for name in sorted({*left, *right})
        if left.get(name) != right.get(name)
    }


def _fingerprints(tok: dict[str, Any] | None) -> dict[str, Any]:
    if not tok:
        return {}
    template = tok.get("template") or {}
    return {
        "tokenizer_sha256": tok.get("sha256"),
        "chat_template_sha256": tok.get("chat_template_sha256"),
        "max_length": tok.get("max_length"),
        "end_of_turn": template.get("end_of_turn"),
    }


def _changed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: {"a": a.get(k), "b": b.get(k)} for k in sorted({*a, *b}) if a.get(k) != b.get(k)}


def _rows(a: Manifest, b: Manifest, show: int) -> dict[str, Any]:
    """Output rows (all splits) added in b and removed from a, by id."""
    left, right = _output_ids(a), _output_ids(b)
    added, removed = sorted(right - left), sorted(left - right)
    if not added and not removed:
        return {}
    out: dict[str, Any] = {
        "added": len(added),
        "removed": len(removed),
        "added_ids": added[:20],
        "removed_ids": removed[:20],
    }
    if show:
        out["added_rows"] = _row_content(b, added[:show])
        out["removed_rows"] = _row_content(a, removed[:show])
    return out


def _output_ids(m: Manifest) -> set[str]:
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for split in m.split_names():
        for path in m.shard_paths(split):
            ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def _row_content(m: Manifest, ids: list[str]) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = pa.array(ids, pa.string())
    found: dict[str, dict[str, Any]] = {}
    for split in m.split_names():
        for path in m.shard_paths(split):
            table = pq.read_table(path, columns=["id", "source", "messages", "text"])
            for row in table.filter(pc.is_in(table.column("id"), wanted)).to_pylist():
                found.setdefault(row["id"], row)
    return [found[i] for i in ids if i in found]
