"""`curate train ID`: guard, packed data, TRL SFTTrainer + PEFT, run folder, release packet.

The run id is the sha256 of the manifest id, the training settings and the base model's
fingerprint: the same three give the same folder. The folder holds the adapter (PEFT
format), a copy of the tokenizer, `metrics.jsonl` (every logged step and eval), `packing.json`
and `release.yaml`; `curate merge RUN` adds the merged model and the merge check.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import UserError
from curate.fsio import claim_output_dir, write_bytes
from curate.manifests.store import Store
from curate.train.config import TrainConfig
from curate.train.data import Examples, build_packs, collate, read_examples
from curate.train.seal import folder_digests
from curate.train.serving import handoff


@dataclass
class Base:
    """The base model as a local folder, with its tokenizer and the fingerprints checked."""

    name: str
    folder: Path
    tokenizer: Any
    template: str
    tokenizer_sha256: str
    template_sha256: str


# what a run folder holds: the only entries `curate train` ever replaces in one
RUN_FILES = [
    "adapter",
    "tokenizer",
    "checkpoints",
    "merged",
    "metrics.jsonl",
    "packing.json",
    "summary.json",
    "release.yaml",
    "chat_template.jinja",
    "gate.json",
    "report.html",
]


def check_base(manifest: dict[str, Any], base: str, cfg: TrainConfig, store: Store) -> Base:
    """Refuse a base whose tokenizer or effective chat template is not the one the
    manifest validated (exit 2), or a manifest built without a [tokenizer]."""
    from curate.train.model import resolve_base
    from curate.validators.target import _content_sha256, sha256_text

    expected = manifest.get("tokenizer")
    if not expected:
        raise UserError(
            "this manifest was built without a [tokenizer]: it stores no token ids or trained "
            "spans to train on. Add [tokenizer] (the base model's tokenizer) and build again."
        )
    folder = resolve_base(base, store.root / "cache")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=cfg.trust_remote_code)
    if cfg.chat_template is not None:
        tok.chat_template = Path(cfg.chat_template).read_text(encoding="utf-8")
    template = tok.chat_template
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()))
    problems = []
    content = _content_sha256(tok)
    if content != expected["sha256"]:
        problems.append(
            f"its tokenizer differs from the one the manifest validated (sha256 {content[:12]} "
            f"vs {expected['sha256'][:12]}, vocab {len(tok)} vs {expected.get('vocab_size')})"
        )
    template_sha = sha256_text(template or "")
    if template_sha != expected["chat_template_sha256"]:
        how = (
            " (the build used a chat_template override: pass the same file with "
            "--chat-template or chat_template in train.toml)"
            if expected.get("chat_template_source") == "override"
            else ""
        )
        problems.append(
            f"its effective chat template differs from the validated one (sha256 "
            f"{template_sha[:12]} vs {expected['chat_template_sha256'][:12]}){how}"
        )
    if problems:
        raise UserError(
            f"base model {base}: refusing to train: "
            + "; ".join(problems)
            + ". The stored token ids and loss masks are only right for the validated tokenizer."
        )
    return Base(base, folder, tok, template or "", content, template_sha)


SMOKE_EVAL_ROWS = 8  # validation rows a --smoke run evaluates on (a bounded check)
SMOKE_STEPS = 100


def run_id(manifest_id: str, cfg: TrainConfig, base: Base, smoke: bool) -> str:
    blob = json.dumps(
        {
            "manifest": manifest_id,
            "train": cfg.fingerprint_fields() | {"base_model": None},
            "base": base.tokenizer_sha256 + ":" + _weights_sha256(base.folder),
            "smoke": smoke,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _weights_sha256(folder: Path) -> str:
    """Content fingerprint of the model's weights and config (sizes + sha of the index/config
    files, sha of small weight files; large files by size and their first and last MiB)."""
    digest = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if not f.is_file() or f.suffix not in (".safetensors", ".bin", ".json"):
            continue
        size = f.stat().st_size
        digest.update(f"{f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()


def _subsample(ex: Examples, share: float, seed: int) -> Examples:
    import numpy as np

    keep = max(1, int(round(len(ex) * share)))
    rows = np.sort(np.random.default_rng(seed).choice(len(ex), keep, replace=False))
    return ex.subset(rows)


class _Reporter:
    """TrainerCallback: metrics.jsonl, and a progress line with tokens/s and loss."""

    def __init__(self, path: Path, total_steps: int, tokens_per_step: list[int], show: bool):
        from transformers import TrainerCallback

        reporter = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
                reporter.step(state.global_step)

            def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
                reporter.log(state.global_step, logs or {})

        self.callback = Callback()
        self.path = path
        self.total = total_steps
        self.tokens = tokens_per_step
        self.show = show
        self.started = time.perf_counter()
        self.done_tokens = 0
        self.loss: float | None = None
        self.bar: Any = None
        from curate.progress import is_interactive

        if show and is_interactive():  # else plain lines (not a TTY, or CI=true)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                transient=False,
            )
            self.task = self.bar.add_task("train", total=total_steps, stats="")
            self.bar.start()

    def step(self, step: int) -> None:
        if step - 1 < len(self.tokens):
            self.done_tokens += self.tokens[step - 1]
        rate = self.done_tokens / max(time.perf_counter() - self.started, 1e-9)
        stats = f"{rate:,.0f} tok/s" + (f" loss {self.loss:.4f}" if self.loss is not None else "")
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=stats)
        elif self.show and (step % max(1, self.total // 10) == 0 or step == self.total):
            print(f"train: {step}/{self.total} {stats}", file=sys.stderr)

    def log(self, step: int, logs: dict[str, Any]) -> None:
        if "loss" in logs:
            self.loss = float(logs["loss"])
        record = {"step": step, "time": round(time.perf_counter() - self.started, 3), **logs}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(
    ref: str,
    cfg: TrainConfig,
    store: Store,
    out: Path | None = None,
    smoke: bool = False,
    show_progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train an adapter on exactly what manifest `ref` validated; returns the run summary.

    `out` (default: the store's runs/RUN_ID) must be new or empty unless `overwrite`, and
    then only the run's own files (RUN_FILES) are replaced there.
    """

    from curate import api
    from curate.manifests.manifest import Manifest

    if out is not None:  # refused before any work is done
        claim_output_dir(out, RUN_FILES, overwrite)
    mid = store.resolve(ref)
    check = api.verify(mid, store.location)
    if check["problems"]:
        raise UserError(
            f"manifest {mid[:12]} does not verify; refusing to train on it:\n  - "
            + "\n  - ".join(check["problems"])
        )
    manifest = Manifest(mid, store.read_manifest(mid), store)
    manifest.checked.update(manifest.objects())  # verify just re-hashed every one
    if cfg.base_model is None:
        raise UserError("no base model: pass --base or set base_model in train.toml")
    base = check_base(manifest.data, cfg.base_model, cfg, store)
    train_ex = read_examples(manifest.shard_paths("train"))
    val_ex = (
        read_examples(manifest.shard_paths("validation"))
        if manifest.data["splits"].get("validation", {}).get("rows")
        else None
    )
    if smoke:
        train_ex = _subsample(train_ex, 0.1, cfg.seed)
        if val_ex is not None:  # a smoke run checks the path works: a bounded evaluation
            val_ex = _subsample(val_ex, min(1.0, SMOKE_EVAL_ROWS / max(len(val_ex), 1)), cfg.seed)
    if len(train_ex) == 0:
        raise UserError(f"manifest {mid[:12]} has no training rows")
    longest = max(
        int(train_ex.lengths.max()),
        int(val_ex.lengths.max()) if val_ex is not None and len(val_ex) else 0,
    )
    cfg, choices = _resolve_defaults(cfg, base.folder, longest)
    pack_tokens, quantize = int(choices["batch_tokens"].value), bool(choices["quantize"].value)
    if longest > pack_tokens:
        raise UserError(
            f"batch_tokens {pack_tokens} is smaller than the longest row ({longest} tokens): "
            "rows are never cut, so a pack must hold the longest one"
        )
    rid = run_id(mid, cfg, base, smoke)
    run_dir = out or store.root / "runs" / rid
    # a run folder in the store is curate's own: rerunning the same run replaces it
    claim_output_dir(run_dir, RUN_FILES, True)
    for name in RUN_FILES:
        entry = run_dir / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)

    packs, packing = build_packs(train_ex, pack_tokens)
    val_packs = build_packs(val_ex, pack_tokens)[0] if val_ex is not None and len(val_ex) else []
    write_bytes(run_dir / "packing.json", json.dumps(packing, indent=2).encode())

    steps_per_epoch = math.ceil(len(packs) / cfg.grad_accum)
    max_steps = cfg.max_steps
    if smoke:  # 100 steps, or fewer when max_steps says so
        max_steps = min(SMOKE_STEPS, max_steps) if max_steps > 0 else SMOKE_STEPS
    total = max_steps if max_steps > 0 else math.ceil(steps_per_epoch * cfg.epochs)
    tokens_per_step = [
        sum(
            len(packs[(s * cfg.grad_accum + k) % len(packs)].input_ids)
            for k in range(cfg.grad_accum)
        )
        for s in range(total)
    ]

    from curate.train.model import device, load_model

    where = device()
    model = load_model(base.folder, quantize, cfg.trust_remote_code)
    checkpointing = (
        cfg.gradient_checkpointing
        if cfg.gradient_checkpointing != "auto"
        else _needs_checkpointing(model, pack_tokens)
    )
    reporter = _Reporter(run_dir / "metrics.jsonl", total, tokens_per_step, show_progress)
    trainer = _trainer(model, base, cfg, packs, val_packs, run_dir, max_steps, total, checkpointing)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # stdout is for --json; we report
        trainer.remove_callback(noisy)
    trainer.add_callback(reporter.callback)
    before = trainer.evaluate()["eval_loss"] if val_packs else None
    started = time.perf_counter()
    try:
        result = trainer.train()
    finally:
        reporter.close()
    # training time: the evaluations the Trainer ran meanwhile are not training
    evaluating = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)
    seconds = time.perf_counter() - started - evaluating
    after = _final_eval_loss(trainer, result.global_step) if val_packs else None
    trainer.model.save_pretrained(str(run_dir / "adapter"))
    base.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    adapter_sha256 = folder_digests(run_dir / "adapter")  # what merge, gate and report check
    tokens = sum(tokens_per_step[: result.global_step])
    summary = {
        "run_id": rid,
        "run_dir": str(run_dir),
        "store": store.name,
        "manifest": mid,
        "base_folder": str(base.folder),
        "steps": result.global_step,
        "train_loss": round(float(result.training_loss), 6),
        "eval_loss_before": None if before is None else round(float(before), 6),
        "eval_loss_after": None if after is None else round(float(after), 6),
        "tokens": tokens,
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 2),
        "packing": packing,
        "device": where,
        "quantized": cfg.quantize,
        "choices": {name: {"value": c.value, "why": c.why} for name, c in choices.items()},
        "gradient_checkpointing": bool(checkpointing),
        "peak_memory_gib": _peak_memory(where),
        "adapter_sha256": adapter_sha256,
    }
    write_release(run_dir, summary, cfg, base, manifest.data, store)
    # the store's history names each run (wherever --out put it): manifest → training run
    store.put_record(
        "training",
        {
            "kind": "training",
            "run_id": rid,
            "manifest": mid,
            "folder": str(run_dir.resolve()),
            "smoke": smoke,
            "steps": summary["steps"],
            "adapter_sha256": adapter_sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return summary


def _resolve_defaults(cfg: TrainConfig, folder: Path, longest: int) -> tuple[TrainConfig, dict]:
    """The settings the user left to curate (quantization, pack size), chosen for this
    device and its free memory; the run id and the release packet record the values."""
    from transformers import AutoConfig

    from curate.train.model import device
    from curate.train.sizing import choose_pack_size, choose_quantization

    where = device()
    choices = {
        "quantize": choose_quantization(cfg.quantize, where),
        "batch_tokens": choose_pack_size(
            cfg.batch_tokens, where, AutoConfig.from_pretrained(str(folder)), longest
        ),
    }
    resolved = cfg.model_copy(update={name: c.value for name, c in choices.items()})
    return resolved, choices


def _final_eval_loss(trainer: Any, step: int) -> float:
    """The validation loss after training: the Trainer's own evaluation at the last step
    when it ran one (it does, with evaluation on), else one more evaluation."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return float(entry["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def _needs_checkpointing(model: Any, batch_tokens: int) -> bool:
    """On when activations (~ layers × tokens × hidden × 34 bytes) would not fit beside the
    model in 80% of the GPU's free memory; never on CPU, where memory is the host's."""
    import torch

    if not torch.cuda.is_available():
        return False
    c = model.config
    activations = c.num_hidden_layers * batch_tokens * c.hidden_size * 34
    free, _ = torch.cuda.mem_get_info()
    return activations > 0.8 * free


def _peak_memory(where: str) -> float | None:
    import torch

    if where == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    except ImportError:  # pragma: no cover - not on Linux
        return None


def _trainer(
    model: Any,
    base: Base,
    cfg: TrainConfig,
    packs: list[Any],
    val_packs: list[Any],
    run_dir: Path,
    max_steps: int,
    total_steps: int,
    checkpointing: bool,
) -> Any:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    train_ds = datasets.Dataset.from_list([p.__dict__ for p in packs])
    val_ds = datasets.Dataset.from_list([p.__dict__ for p in val_packs]) if val_packs else None
    evaluate = val_ds is not None
    args = SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=math.ceil(total_steps * cfg.warmup_ratio),
        num_train_epochs=cfg.epochs,
        max_steps=max_steps,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=bool(evaluate and cfg.early_stopping_patience),
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to,
        bf16=cuda,
        gradient_checkpointing=checkpointing,
        optim="paged_adamw_8bit" if cuda and cfg.quantize else "adamw_torch",
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    callbacks: list[TrainerCallback] = (
        [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)]
        if evaluate and cfg.early_stopping_patience
        else []
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collate,
        peft_config=peft_config,
        processing_class=base.tokenizer,
        callbacks=callbacks,
    )


def write_release(
    run_dir: Path,
    summary: dict[str, Any],
    cfg: TrainConfig,
    base: Base,
    manifest: dict[str, Any],
    store: Store,
    merge: dict[str, Any] | None = None,
) -> None:
    """release.yaml: what was trained, on what, how well, and how to roll it back."""
    import yaml

    adapter_cfg = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    modules = adapter_cfg.get("target_modules")
    packet = {
        "run_id": summary["run_id"],
        "adapter": str(run_dir / "adapter"),
        "adapter_sha256": summary["adapter_sha256"],
        "base_model": base.name,
        "base_revision": _weights_sha256(base.folder),
        "tokenizer_sha256": base.tokenizer_sha256,
        "chat_template_sha256": base.template_sha256,
        "quantized": cfg.quantize,
        "target_modules": sorted(modules) if isinstance(modules, list) else modules,
        "rank": cfg.r,
        "alpha": cfg.alpha,
        "dataset_manifest": summary["manifest"],
        "eval": {
            "validation_loss_before": summary["eval_loss_before"],
            "validation_loss_after": summary["eval_loss_after"],
            "train_loss": summary["train_loss"],
            "steps": summary["steps"],
        },
        "packing": summary["packing"],
        "merge_check": merge or "not run (curate merge " + summary["run_id"] + ")",
        "rollback": (
            f"serve the base model {base.name} without this adapter, or the previous "
            f"release's adapter; rebuild this one with: curate train {summary['manifest'][:12]} "
            f"--base {base.name} --store {store.location}"
        ),
        "settings": cfg.model_dump(),
        "serving": handoff(run_dir, base.name, base.folder, base.tokenizer, cfg.r),
    }
    write_bytes(run_dir / "chat_template.jinja", base.template.encode("utf-8"))
    write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True).encode())
    write_bytes(run_dir / "release.yaml", yaml.safe_dump(packet, sort_keys=False).encode("utf-8"))
