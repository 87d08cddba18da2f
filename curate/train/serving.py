"""The serving hand-off a release packet carries: how to serve the run with vLLM (merged,
or base + adapter), with the exact chat template and stop tokens training used. A model
served with another template or without its end-of-turn token answers differently from the
one the gate passed (the classic never-stops deployment)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

# end-of-turn tokens of common chat templates, besides the tokenizer's eos
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the sizes vLLM's --max-lora-rank accepts


def stop_ids(tokenizer: Any) -> list[int]:
    """The ids that end a turn: eos and the template's end-of-turn tokens in the vocab."""
    vocab = tokenizer.get_vocab()
    found = {vocab[t] for t in END_OF_TURN if t in vocab}
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return sorted(found)


def handoff(run_dir: Path, base_name: str, base_folder: Path, tokenizer: Any, rank: int) -> dict:
    """The commands and settings to serve this run as trained: its chat template is written
    beside the adapter (`chat_template.jinja`) and every command points at it."""
    template = run_dir / "chat_template.jinja"
    name = f"curate-{run_dir.name}"
    lora_rank = next((r for r in LORA_RANKS if r >= rank), rank)
    ids = stop_ids(tokenizer)
    q = shlex.quote
    base_arg = base_name if not Path(base_name).exists() else str(base_folder)
    return {
        "chat_template": str(template),
        "stop_token_ids": ids,
        "stop": [tokenizer.convert_ids_to_tokens(i) for i in ids],
        "vllm_merged": (
            f"vllm serve {q(str(run_dir / 'merged'))} --served-model-name {q(name)} "
            f"--chat-template {q(str(template))}"
        ),
        "vllm_adapter": (
            f"vllm serve {q(base_arg)} --tokenizer {q(str(run_dir / 'tokenizer'))} "
            f"--chat-template {q(str(template))} --enable-lora "
            f"--lora-modules {q(name + '=' + str(run_dir / 'adapter'))} "
            f"--max-lora-rank {lora_rank}"
        ),
        "request": {"model": name, "stop_token_ids": ids},
        "note": "vllm_merged needs `curate merge` first; send stop_token_ids with each "
        "request where the server's generation config does not already stop on them",
    }
