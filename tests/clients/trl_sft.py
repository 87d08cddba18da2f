"""Plain TRL on a curate export, written as a user would: load the export with `datasets`,
hand it to `SFTTrainer` as it is, train a few steps. Run as a script (so the hash seed is
the interpreter's own); prints one JSON object:
- `prepared`: the tokens TRL's prepared train set trains (labels other than -100 at
  positions a causal LM predicts, i.e. after each row's first token);
- `epoch`: the same count over every batch of one epoch of the trainer's own dataloader;
- `steps`, `loss`: the steps trained and the last logged loss.

Usage: python trl_sft.py FORMAT EXPORT_DIR MODEL_DIR [STEPS] [MAX_LENGTH] [--assistant-only]
"""

from __future__ import annotations

import json
import math
import sys
import tempfile


def load_train(fmt: str, folder: str):
    import datasets

    if fmt == "hf":
        return datasets.load_from_disk(f"{folder}/dataset")["train"]
    kind = "json" if fmt == "jsonl" else "parquet"
    return datasets.load_dataset(kind, data_files=f"{folder}/train.{fmt}", split="train")


def trained(labels) -> int:
    """Labels a causal LM trains on: every one but the first of a row, other than -100."""
    return sum(1 for label in labels[1:] if label != -100)


def main(argv: list[str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    fmt, folder, model_dir = argv[:3]
    steps = int(argv[3]) if len(argv) > 3 else 2
    max_length = int(argv[4]) if len(argv) > 4 else 1024
    torch.manual_seed(0)
    train = load_train(fmt, folder)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=4,
            learning_rate=1e-5,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            max_length=max_length,
            assistant_only_loss="--assistant-only" in argv,
            dataloader_num_workers=0,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=train, processing_class=tokenizer
        )
        prepared = sum(trained(row) for row in trainer.train_dataset["labels"])
        epoch = 0
        for batch in trainer.get_train_dataloader():
            epoch += int((batch["labels"][:, 1:] != -100).sum())
        result = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    print(
        json.dumps(
            {
                "rows": len(train),
                "prepared": prepared,
                "epoch": epoch,
                "steps": result.global_step,
                "loss": losses[-1] if losses and math.isfinite(losses[-1]) else None,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
