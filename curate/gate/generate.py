"""Answers for the gate: batched, left-padded, greedy (seeded where sampling is asked), on
CPU or CUDA, each with whether it stopped — ended with an end-of-turn token before
`max_new_tokens` (the classic never-stops fine-tune fails the stop suite)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curate.train.merge import left_padded
from curate.train.serving import stop_ids


@dataclass(frozen=True)
class Generation:
    text: str
    stopped: bool  # an end-of-turn token came before max_new_tokens
    tokens: int  # generated, the end-of-turn token included


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    seed: int = 0,
) -> list[Generation]:
    """Each prompt as a user turn through the chat template, answered greedily."""
    import torch

    torch.manual_seed(seed)
    stops = stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    out: list[Generation] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        rows = [_chat_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        ids, mask = left_padded(rows, pad)
        with torch.no_grad():
            made = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad,
                use_cache=True,
            )
        for row in made[:, ids.shape[1] :].tolist():
            end = next((i for i, t in enumerate(row) if t in stops), None)
            kept = row if end is None else row[:end]
            text = tokenizer.decode(kept, skip_special_tokens=True)
            out.append(Generation(text, end is not None, len(kept) + (end is not None)))
    return out


def _chat_ids(tokenizer: Any, prompt: str) -> list[int]:
    """`prompt` as a user turn through the chat template, ready for the answer."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def option_logprobs(model: Any, tokenizer: Any, prompt: str, options: list[str]) -> list[float]:
    """Per option, the log-probability of its tokens as the assistant's answer to `prompt`
    (summed: multiple-choice items are scored without generating anything)."""
    import torch

    context = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    start = len(_chat_ids(tokenizer, prompt))
    rows = [tokenizer(context + o, add_special_tokens=False)["input_ids"] for o in options]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids(tokenizer)[0]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]
    # token t is predicted at position t - 1; an option's tokens are rows[i][start:]
    return [float(logp[i, start - 1 : len(r) - 1].sum()) for i, r in enumerate(rows)]
