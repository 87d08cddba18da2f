"""Other trainers on a curate export, written as their users write them: load the export
with `datasets`, hand it over as it is, train a few steps. Run as a script, so that the hash
seed is this interpreter's own. For each export it prints, in one JSON object by export:
- `prepared`: tokens the trainer's prepared train set trains (labels other than -100 at
  positions a causal LM predicts: after each row's first token);
- `epoch`: the same count over every batch of one epoch of the trainer's own dataloader;
- `steps`, `loss`: steps trained and the last logged loss.

Usage: python trl_sft.py MODEL_DIR MAX_LENGTH STEPS KIND=FOLDER [KIND=FOLDER ...]
KIND: jsonl | parquet | hf (TRL's SFTTrainer on `curate export --format KIND`), or
trainer (transformers.Trainer + DataCollatorForSeq2Seq on `--format jsonl --columns tokens`).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile


def load_train(kind: str, folder: str):
    import datasets

    if kind == "hf":
        return datasets.load_from_disk(f"{folder}/dataset")["train"]
    fmt = "parquet" if kind == "parquet" else "jsonl"
    builder = "parquet" if fmt == "parquet" else "json"
    return datasets.load_dataset(builder, data_files=f"{folder}/train.{fmt}", split="train")


def trained(labels) -> int:
    """Labels a causal LM trains on: every one but the first of a row, other than -100."""
    return sum(1 for label in labels[1:] if label != -100)


def common_args(out: str, steps: int) -> dict:
    """The settings both trainers share: a few cheap steps on the CPU, nothing saved."""
    return {
        "output_dir": out,
        "max_steps": steps,
        "per_device_train_batch_size": 2,
        "optim": "sgd",
        "learning_rate": 1e-5,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "dataloader_num_workers": 0,
    }


def trl_trainer(model, tokenizer, train, out: str, steps: int, max_length: int):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common_args(out, steps), max_length=max_length)
    return SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)


def plain_trainer(model, tokenizer, train, out: str, steps: int):
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    args = TrainingArguments(**common_args(out, steps))
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return Trainer(model=model, args=args, train_dataset=train, data_collator=collator)


def run(kind: str, folder: str, model_dir: str, steps: int, max_length: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    train = load_train(kind, folder)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        if kind == "trainer":
            trainer = plain_trainer(model, tokenizer, train, out, steps)
        else:
            trainer = trl_trainer(model, tokenizer, train, out, steps, max_length)
        prepared = sum(trained(row) for row in trainer.train_dataset["labels"])
        epoch = 0
        for batch in trainer.get_train_dataloader():
            epoch += int((batch["labels"][:, 1:] != -100).sum())
        result = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "rows": len(train),
        "columns": sorted(train.column_names),
        "prepared": prepared,
        "epoch": epoch,
        "steps": result.global_step,
        "loss": losses[-1] if losses and math.isfinite(losses[-1]) else None,
    }


def main(argv: list[str]) -> None:
    model_dir, max_length, steps = argv[0], int(argv[1]), int(argv[2])
    results = {}
    for spec in argv[3:]:
        kind, folder = spec.split("=", 1)
        results[kind] = run(kind, folder, model_dir, steps, max_length)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
