"""A dataset card for an exported build: README.md with the Hub's YAML front matter.

The front matter carries what the Hub indexes (license, size category, task categories,
languages); the body what a reader of the data needs: the mixture per source with its
license, dedup and contamination, validation findings, splits, and the manifest id that
reproduces it all.
"""

from __future__ import annotations

from typing import Any

# licenses the Hub knows by these ids (lower case); anything else is `other`
HUB_LICENSES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
    "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-3.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0",
    "odc-by", "odbl", "openrail", "llama2", "llama3", "unknown",
}  # fmt: skip
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZES if rows < limit), "1M<n<10M")


def dataset_card(
    manifest_id: str,
    data: dict[str, Any],
    warnings: list[str],
    notes: dict[str, Any] | None = None,
) -> str:
    """The card; `notes` (`manifests.export.export_notes`): what training on it needs."""
    import yaml

    sources = data["sources"]
    licenses = sorted({(s["license"] or "unknown").lower() for s in sources})
    known = len(licenses) == 1 and licenses[0] in HUB_LICENSES
    languages = sorted(
        {
            lang
            for entry in data.get("validation", {}).values()
            for lang in entry.get("languages", {})
            if lang != "none"
        }
    )
    front: dict[str, Any] = {
        "license": licenses[0] if known else "other",
        "size_categories": [size_category(data["counts"]["rows_out"])],
        "task_categories": ["text-generation"],
        "tags": ["curate", "fine-tuning"],
    }
    if not known:
        front["license_name"] = "mixed" if len(licenses) > 1 else licenses[0]
        front["license_details"] = "per source, below"
    if languages:
        front["language"] = languages
    mix = data["mixture"]["sources"]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=True).strip(),
        "---",
        "",
        f"# {data['config']['build']['name']}",
        "",
        f"Built by curate from manifest `{manifest_id}`: `curate show {manifest_id[:12]}` "
        "shows it, `curate verify` checks every object, and the same inputs and config "
        "rebuild it byte for byte.",
        "",
        "## Mixture",
        "",
        "| source | role | license | rows in | kept | rejected | share of output |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sources:
        share = mix.get(s["name"], {}).get("realized_share", 0)
        lines.append(
            f"| {s['name']} | {s['role']} | {s['license'] or 'unknown'} | {s['rows_in']} | "
            f"{s['rows_kept']} | {s['rows_rejected']} | {share:.1%} |"
        )
    lines += ["", "## Deduplication and contamination", ""]
    rejected = data["counts"]["rejected"]
    lines += [f"- {reason}: {n} rows" for reason, n in sorted(rejected.items())] or ["- none"]
    for name, entry in sorted(data.get("contamination", {}).items()):
        lines.append(
            f"- eval set {name}: {entry.get('leaked_items', 0)} of {entry.get('items', 0)} "
            f"items found in {entry.get('rows', 0)} rows (removed)"
        )
    lines += ["", "## Splits", ""]
    skipped = (notes or {}).get("skipped", [])
    lines += [
        f"- {name}: {e['rows']} rows"
        + (" (not written: a split without rows)" if name in skipped else "")
        for name, e in data["splits"].items()
    ]
    if notes and notes.get("tokenized"):
        lines += ["", "## Training on it", ""] + training_notes(notes)
    lines += ["", "## Validation findings", ""]
    lines += [f"- {w}" for w in warnings] or ["- none"]
    return "\n".join(lines) + "\n"


def training_notes(notes: dict[str, Any]) -> list[str]:
    """How to train exactly the tokens the build validated, as card lines."""
    eot, pad = notes.get("end_of_turn"), notes.get("pad_token")
    rule = (
        "the template's `{% generation %}` blocks (as transformers' `return_assistant_tokens_mask`)"
        if notes.get("generation_markers")
        else "each assistant turn up to and including its end-of-turn token"
    )
    lines = [
        "Each row carries `input_ids` and `labels`: the ids of the trained tokens, -100 "
        f"elsewhere. Trained: {rule}. Use `labels` as they are: TRL's `SFTTrainer` does "
        "(it skips its own tokenization for rows with `input_ids`), so do Axolotl's "
        "pre-tokenized datasets and `transformers.Trainer` with `DataCollatorForSeq2Seq` "
        "(which pads labels with -100). `assistant_masks` (1 = trained) is the same mask "
        "for collators that read it instead.",
        "",
        "Do not rebuild labels from `input_ids` (e.g. transformers' "
        "`DataCollatorForLanguageModeling`): that trains prompts and masks every pad token.",
    ]
    if eot and pad and eot == pad:
        lines += [
            "",
            f"**The tokenizer's pad token is its end-of-turn token ({eot!r}).** A collator "
            "that masks padding by token id then never trains the end of turn, and the "
            "model never learns to stop: keep these labels, or set a distinct pad token.",
        ]
    return lines
