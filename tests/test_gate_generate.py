"""Generation for the gate on the real SmolLM2-135M-Instruct (CPU)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_batched_greedy_answers_match_one_by_one_and_say_whether_they_stopped(smol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.gate.generate import generate, stop_ids

    tokenizer = AutoTokenizer.from_pretrained(str(smol))
    model = AutoModelForCausalLM.from_pretrained(str(smol))
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_ids(tokenizer)
    prompts = ["What is 2 + 2? Answer with a number.", "Say hi.", "Write a long story about a cat."]
    batched = generate(model, tokenizer, prompts, max_new_tokens=24, batch_size=3)
    alone = [generate(model, tokenizer, [p], max_new_tokens=24)[0] for p in prompts]
    # left padding: a prompt's answer does not depend on the prompts beside it
    assert [g.text for g in batched] == [g.text for g in alone]
    short, _, story = batched
    assert "4" in short.text and short.stopped and short.tokens < 24
    assert not story.stopped and story.tokens == 24  # cut at max_new_tokens
