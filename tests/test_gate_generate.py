"""Generation for the gate on the real SmolLM2-135M-Instruct (CPU)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def lm(smol):
    """The model and its tokenizer, loaded once for this file's tests."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(smol)), AutoTokenizer.from_pretrained(str(smol))


@pytest.mark.slow
def test_batched_greedy_answers_match_one_by_one_and_say_whether_they_stopped(lm):
    from curate.gate.generate import generate, stop_ids

    model, tokenizer = lm
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_ids(tokenizer)
    prompts = ["What is 2 + 2? Answer with a number.", "Say hi.", "Write a long story about a cat."]
    batched = generate(model, tokenizer, prompts, max_new_tokens=24, batch_size=3)
    alone = [generate(model, tokenizer, [p], max_new_tokens=24)[0] for p in prompts]
    # left padding: a prompt's answer does not depend on the prompts beside it
    assert [g.text for g in batched] == [g.text for g in alone]
    short, _, story = batched
    assert "4" in short.text and short.stopped and short.tokens < 24
    assert not story.stopped and story.tokens == 24  # cut at max_new_tokens


@pytest.mark.slow
def test_multiple_choice_items_are_scored_by_the_options_likelihood(lm):
    import math

    from curate.gate.generate import option_logprobs

    model, tokenizer = lm
    scores = option_logprobs(
        model, tokenizer, "What is the capital of France?", ["Paris", "Banana"]
    )
    assert scores[0] > scores[1] and all(s < 0 for s in scores)
    # one option alone scores what it scores beside another (padding does not leak in)
    alone = option_logprobs(model, tokenizer, "What is the capital of France?", ["Paris"])
    assert math.isclose(alone[0], scores[0], rel_tol=1e-4)
