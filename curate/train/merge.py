"""`curate merge RUN`: fold the adapter into the base weights and check the result.

The base is loaded in fp32 on CPU. An adapter trained on a 4-bit base is merged into the
NF4-dequantized weights it was trained against (loaded 4-bit exactly as in training, then
dequantized), so the merged model computes what training saw, not what the full-precision
base would. The check runs the unmerged (base + adapter) and merged models on the prompts of
the validation rows (else the first training rows): the largest logit difference and the
share of greedy tokens that agree go into the release packet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import UserError
from curate.fsio import atomic_path, write_bytes
from curate.manifests.store import Store
from curate.train.model import quiet_loading
from curate.train.seal import folder_digests, read_run

PROMPTS = 8
NEW_TOKENS = 16


def _prompts(manifest_id: str, store: Store) -> list[list[int]]:
    """Up to PROMPTS prompts: each row's tokens before its first trained token."""
    from curate.manifests.manifest import Manifest
    from curate.train.data import IGNORE, read_examples

    manifest = Manifest(manifest_id, store.read_manifest(manifest_id), store)
    splits = manifest.data["splits"]
    split = "validation" if splits.get("validation", {}).get("rows") else "train"
    ex = read_examples(manifest.shard_paths(split))
    prompts = []
    for i in range(min(len(ex), PROMPTS)):
        ids, labels = ex.row(i)
        trained = np.flatnonzero(labels != IGNORE)
        cut = int(trained[0]) if len(trained) else len(ids)
        if cut > 0:
            prompts.append(ids[:cut].tolist())
    return prompts


def load_for_merge(folder: Path, quantized: bool) -> Any:
    """The base in fp32: plain, or the NF4-dequantized weights a QLoRA adapter saw."""
    import torch
    from transformers import AutoModelForCausalLM

    from curate.train.model import load_model, quiet_loading

    if not quantized:
        with quiet_loading():
            return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)

    model = load_model(folder, quantize=True)
    model = model.dequantize()
    return model.to(torch.float32)


def left_padded(prompts: list[list[int]], pad: int) -> tuple[Any, Any]:
    """(input ids, attention mask) of token-id prompts padded on the left into one batch,
    so that every prompt's continuation starts at the same column."""
    import torch

    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def _run(model: Any, prompts: list[list[int]]) -> tuple[list[Any], list[list[int]]]:
    """Each prompt's logits (run alone, unpadded), and its greedy continuation: all prompts
    in one left-padded batch, each continuation cut after its first end-of-sequence token
    (the rest is padding)."""
    import torch

    logits: list[Any] = []
    greedy: list[list[int]] = []
    eos = model.config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    pad = min(stops) if stops != {None} else 0
    with torch.no_grad():
        for p in prompts:
            logits.append(model(input_ids=torch.tensor([p]), use_cache=False).logits[0].float())
        if not prompts:
            return logits, greedy
        ids, mask = left_padded(prompts, pad)
        width = ids.shape[1]
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            use_cache=True,
            pad_token_id=pad,
        )
    for row in out[:, width:].tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        greedy.append(row[:end])
    return logits, greedy


def _compare(
    logits_a: list[Any], logits_b: list[Any], greedy_a: list[list[int]], greedy_b: list[list[int]]
) -> tuple[float, float]:
    """(largest logit difference, share of greedy tokens that agree)."""
    diff = max(
        (float((a - b).abs().max()) for a, b in zip(logits_a, logits_b, strict=True)), default=0.0
    )
    same = sum(
        sum(x == y for x, y in zip(a, b, strict=False))
        for a, b in zip(greedy_a, greedy_b, strict=True)
    )
    total = sum(max(len(a), len(b)) for a, b in zip(greedy_a, greedy_b, strict=True))
    return diff, same / total if total else 1.0


def merge_run(run_dir: Path, store: Store | None = None) -> dict[str, Any]:
    """Merge a run's adapter; the manifest is read from `store`, else from the store the
    run was trained from (recorded in its summary), else the one the run folder lies in."""
    import yaml
    from peft import PeftModel

    if not (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir} is not a curate run folder (no summary.json)")
    summary = read_run(
        run_dir, merged=False
    )  # the adapter as trained, or exit 2 naming the changed file
    if store is None:
        recorded = summary.get("store")
        inside = (
            run_dir.resolve().parent.parent if run_dir.resolve().parent.name == "runs" else None
        )
        store = Store(recorded if recorded else inside if inside else Path(".curate"))
    settings = yaml.safe_load((run_dir / "release.yaml").read_text())["settings"]
    folder = Path(summary["base_folder"])
    prompts = _prompts(summary["manifest"], store)
    base = load_for_merge(folder, settings["quantize"])
    with quiet_loading():
        model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    model.eval()
    before_logits, before_greedy = _run(model, prompts)
    merged = model.merge_and_unload()
    merged.eval()
    after_logits, after_greedy = _run(merged, prompts)
    diff, agreement = _compare(before_logits, after_logits, before_greedy, after_greedy)
    vs_trained: tuple[float, float] | None = None
    if settings["quantize"]:  # against what training ran: the 4-bit base + the adapter
        from curate.train.model import load_model

        trained = PeftModel.from_pretrained(
            load_model(folder, quantize=True), str(run_dir / "adapter")
        )
        trained.eval()
        trained_logits, trained_greedy = _run(trained, prompts)
        vs_trained = _compare(trained_logits, after_logits, trained_greedy, after_greedy)
        del trained
    target = run_dir / "merged"  # a run's own folder: a new merge replaces it whole
    with atomic_path(target, is_dir=True, replace=True) as tmp, quiet_loading():
        merged.save_pretrained(str(tmp))
        for f in (run_dir / "tokenizer").iterdir():
            (tmp / f.name).write_bytes(f.read_bytes())
    sample = after_greedy[0] if after_greedy else []  # token ids of the first greedy answer
    report = {
        "merged": str(target),
        "dtype": "float32",
        "dequantized_from_nf4": bool(settings["quantize"]),
        "prompts": len(prompts),
        "max_logit_diff": diff,
        "greedy_agreement": agreement,
        # merged (fp32) against the model as trained (NF4 base, bf16 compute, + adapter)
        "vs_trained_4bit": None
        if vs_trained is None
        else {"max_logit_diff": vs_trained[0], "greedy_agreement": vs_trained[1]},
        "greedy_sample_ids": sample,
    }
    summary["merged_sha256"] = folder_digests(target)  # what gate and report check
    write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True).encode())
    packet = yaml.safe_load((run_dir / "release.yaml").read_text())
    packet["merge_check"] = {k: v for k, v in report.items() if k != "greedy_sample_ids"}
    packet["merged_sha256"] = summary["merged_sha256"]
    write_bytes(run_dir / "release.yaml", yaml.safe_dump(packet, sort_keys=False).encode())
    return report


def sample_text(run_dir: Path, report: dict[str, Any]) -> str:
    """The merge check's first greedy answer as text, in the run's own tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    return str(tokenizer.decode(report.get("greedy_sample_ids") or [], skip_special_tokens=True))
