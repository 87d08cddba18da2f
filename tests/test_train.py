"""Training from a manifest on the real SmolLM2-135M-Instruct (CPU): packing, guard, LoRA."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import build, chat, write_config, write_jsonl

pytest.importorskip("torch")
pytest.importorskip("transformers")


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


FORMAT = r"^COLOR<[a-z]+>END$"


def format_rate(folder: Path, prompts: list[str]) -> float:
    """Share of greedy answers in the planted format, from a full model folder."""
    import re

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.train.merge import left_padded

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    rows = []
    for p in prompts:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt"
        )
        rows.append((ids["input_ids"] if hasattr(ids, "keys") else ids)[0].tolist())
    # one left-padded batch (as the merge check generates)
    pad = tok.eos_token_id
    ids, mask = left_padded(rows, pad)
    width = ids.shape[1]
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=pad
        )
    texts = [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return sum(bool(re.match(FORMAT, t)) for t in texts) / len(prompts)


HELD_OUT = [f"What colour is {thing} #{1000 + i}?" for i, thing in enumerate(COLORS)]


def _train(tmp_path, smol, **settings):
    from curate.manifests.store import Store
    from curate.train.config import TrainConfig
    from curate.train.run import train

    b = manifest_with_tokens(tmp_path, smol, format_rows(240), validation=0.1)
    cfg = TrainConfig(base_model=str(smol), **settings)
    store = Store(tmp_path / ".store")
    return b, store, train(b.id, cfg, store, show_progress=False)


@pytest.mark.slow
def test_lora_learns_the_planted_format_and_merges_exactly(tmp_path, smol, cli, monkeypatch):
    import yaml

    b, store, run = _train(
        tmp_path,
        smol,
        quantize=False,
        batch_tokens=256,
        max_steps=12,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        eval_steps=6,
        save_steps=6,
    )
    assert run["steps"] == 12 and run["manifest"] == b.id
    # the store's history: manifest → training run (curate log --graph draws it)
    from curate import api

    built = next(e for e in api.log(store.root) if e["id"] == b.id)
    assert [(t["run_id"], t["folder"]) for t in built["trained"]] == [
        (run["run_id"], str(Path(run["run_dir"]).resolve()))
    ]
    graph = " ".join(cli("log", "--graph", "--store", str(store.root)).out.split())
    assert f"→ trained {run['run_id'][:12]}" in graph
    assert run["eval_loss_after"] < 0.5 * run["eval_loss_before"]
    assert run["packing"]["examples"] == b.manifest["splits"]["train"]["rows"]
    assert run["packing"]["tokens"] == b.manifest["splits"]["train"]["tokens"]
    assert run["packing"]["efficiency"] > 0.8
    folder = Path(run["run_dir"])
    metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, 13))
    assert (folder / "adapter" / "adapter_config.json").is_file()
    # rolling checkpoints (every 6 steps, the last 3 kept)
    assert sorted(p.name for p in (folder / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-12",
        "checkpoint-6",
    ]
    # the run folder `train` printed, from another folder, no --store: it finds its store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    merged = cli("merge", str(folder), "--json")
    assert merged.code == 0, merged.err
    report = merged.json()
    assert report["max_logit_diff"] < 1e-3 and report["greedy_agreement"] == 1.0
    assert report["vs_trained_4bit"] is None
    packet = yaml.safe_load((folder / "release.yaml").read_text())
    assert packet["dataset_manifest"] == b.id and packet["rank"] == 16
    assert packet["tokenizer_sha256"] == b.manifest["tokenizer"]["sha256"]
    assert packet["chat_template_sha256"] == b.manifest["tokenizer"]["chat_template_sha256"]
    assert packet["merge_check"]["greedy_agreement"] == 1.0
    assert "curate train" in packet["rollback"]
    assert set(packet["target_modules"]) >= {"q_proj", "v_proj", "down_proj"}
    # the model learned the format: none of the base's answers have it, most now do
    assert format_rate(smol, HELD_OUT) == 0.0
    assert format_rate(Path(report["merged"]), HELD_OUT) >= 0.8
    # the serving hand-off: the template trained with, its stop tokens, vLLM commands
    serving = packet["serving"]
    assert Path(serving["chat_template"]).read_text() == AutoTokenizer(smol).chat_template
    assert "<|im_end|>" in serving["stop"]
    assert f"--lora-modules curate-{folder.name}={folder / 'adapter'}" in serving["vllm_adapter"]
    assert "--max-lora-rank 16" in serving["vllm_adapter"]
    gate_the_run(tmp_path, folder, b.rows, cli)
    a_swapped_adapter_is_refused(tmp_path, folder, store, cli)


def a_swapped_adapter_is_refused(tmp_path: Path, folder: Path, store, cli) -> None:
    """Every file of adapter/ and merged/ is hashed when saved (summary, release.yaml, the
    store's record); merge, gate and report refuse one that changed (exit 2 naming it)."""
    import yaml
    from safetensors.torch import load_file, save_file

    from curate.train.seal import folder_digests

    summary = json.loads((folder / "summary.json").read_text())
    packet = yaml.safe_load((folder / "release.yaml").read_text())
    saved = folder_digests(folder / "adapter")
    assert "adapter_model.safetensors" in saved
    assert summary["adapter_sha256"] == packet["adapter_sha256"] == saved
    assert summary["merged_sha256"] == packet["merged_sha256"] == folder_digests(folder / "merged")
    (record,) = [store.read_record("training", r) for r in store.record_ids("training")]
    assert record["adapter_sha256"] == saved
    weights = folder / "adapter" / "adapter_model.safetensors"
    original = weights.read_bytes()
    tensors = {k: v if "lora_B" not in k else v * 0 + 0.01 for k, v in load_file(weights).items()}
    save_file(tensors, weights)  # a swapped adapter: same shapes, other numbers
    gate_toml = str(tmp_path / "gate.toml")
    for args in (("gate", str(folder), "--config", gate_toml), ("merge", str(folder)),
                 ("report", str(folder))):  # fmt: skip
        r = cli(*args)
        assert r.code == 2 and f"{weights}: its sha256" in r.err, (args, r.err)
    assert yaml.safe_load((folder / "release.yaml").read_text())["gate"] == packet["gate"]
    weights.write_bytes(os.urandom(len(original)))  # random bytes: refused before loading
    assert cli("gate", str(folder), "--config", gate_toml).code == 2
    weights.write_bytes(original)
    (folder / "merged" / "extra.bin").write_bytes(b"x")
    r = cli("report", str(folder))
    assert r.code == 2 and "extra.bin: not a file the run saved in merged/" in r.err
    (folder / "merged" / "extra.bin").unlink()
    assert cli("report", str(folder)).code == 0


def AutoTokenizer(folder: Path):  # noqa: N802 - the transformers call, shortened
    from transformers import AutoTokenizer as Auto

    return Auto.from_pretrained(str(folder))


def gate_the_run(tmp_path: Path, folder: Path, built_rows: list[dict], cli) -> None:
    """`curate gate` end to end on the trained run against its base: the planted format is a
    significant gain on held-out items and the answers stop; an eval set holding training
    rows fails the gate however well the run scores on it."""
    import yaml

    held = [{"prompt": q, "reference": f"COLOR<{COLORS[q.split()[3]]}>END"} for q in HELD_OUT]
    write_jsonl(tmp_path / "evals" / "task.jsonl", held)
    leaked = [
        {"prompt": r["messages"][0]["content"], "reference": r["messages"][1]["content"]}
        for r in format_rows(240)[:10]
    ]
    write_jsonl(tmp_path / "evals" / "leaked.jsonl", leaked)
    toml = """[generation]
max_new_tokens = 16
[target]
path = "evals/{}.jsonl"
extract = 'COLOR<([a-z]+)>END'
min_gain = 0.3
[stop]
min_rate = 0.8
"""
    (tmp_path / "gate.toml").write_text(toml.format("task"))
    gated = cli("gate", str(folder), "--config", str(tmp_path / "gate.toml"), "--json")
    assert gated.code == 0, gated.err
    report = gated.json()
    assert report["decision"] == "pass" and report["contamination"]["leaked"] == {}
    target = report["suites"]["target"]
    assert target["baseline"] == 0.0 and target["candidate"] >= 0.8 and target["interval"][0] > 0
    assert report["suites"]["stop"]["candidate"] >= 0.8
    samples = [json.loads(x) for x in (folder / "gate_samples.jsonl").read_text().splitlines()]
    assert len(samples) == target["items"] + report["suites"]["stop"]["items"]
    assert all(s["candidate"]["answer"] is not None for s in samples)
    assert report["samples"] == str(folder / "gate_samples.jsonl")
    packet = yaml.safe_load((folder / "release.yaml").read_text())
    assert packet["gate"]["decision"] == "pass"
    assert packet["eval_report"]["target"]["candidate"] == target["candidate"]
    # the run's report: its real losses and the verdict just written
    assert cli("report", str(folder)).code == 0
    page = (folder / "report.html").read_text()
    assert page.count("<polyline") >= 2 and 'data-fact="gate.decision">pass<' in page
    (tmp_path / "leaky.toml").write_text(toml.format("leaked"))
    gated = cli("gate", str(folder), "--config", str(tmp_path / "leaky.toml"), "--json")
    assert gated.code == 1
    report = gated.json()
    trained = {  # the leaked items the build put in the train split (not validation)
        r["messages"][0]["content"] for r in built_rows if r["split"] == "train"
    } & {x["prompt"] for x in leaked}
    assert report["decision"] == "fail" and report["suites"]["target"]["passed"] is True
    assert report["why"] == [
        f"eval set target: {len(trained)} items leaked into the training data of manifest "
        f"{report['contamination']['manifest'][:12]}"
    ]
    assert len(trained) >= 7


@pytest.mark.slow
def test_qlora_4bit_path_on_cpu_trains_and_merges_into_the_dequantized_base(tmp_path, smol):
    from curate.train.merge import merge_run

    _, store, run = _train(
        tmp_path,
        smol,
        quantize=True,
        batch_tokens=256,
        max_steps=8,
        learning_rate=1e-3,
        warmup_ratio=0.0,
    )
    assert run["quantized"] and run["eval_loss_after"] < run["eval_loss_before"]
    report = merge_run(Path(run["run_dir"]), store)
    assert report["dequantized_from_nf4"]
    assert report["max_logit_diff"] < 1e-3 and report["greedy_agreement"] == 1.0
    # Against the 4-bit model as trained (bf16 compute) the merge is close, not exact; a
    # naive merge into the original fp32 weights is further off: that is why curate merges
    # into the dequantized NF4 weights.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from curate.train.merge import _prompts
    from curate.train.model import load_model

    folder = Path(run["run_dir"])
    prompts = _prompts(run["manifest"], store)

    def logits(model):  # the prompts' logits (the merge check's logit part, no generation)
        with torch.no_grad():
            return [model(input_ids=torch.tensor([p]), use_cache=False).logits[0] for p in prompts]

    trained = PeftModel.from_pretrained(load_model(smol, quantize=True), str(folder / "adapter"))
    fp32 = AutoModelForCausalLM.from_pretrained(str(smol), dtype=torch.float32)
    naive = PeftModel.from_pretrained(fp32, str(folder / "adapter")).merge_and_unload()
    naive_diff = max(
        float((a.float() - b.float()).abs().max())
        for a, b in zip(logits(trained.eval()), logits(naive.eval()), strict=True)
    )
    assert report["vs_trained_4bit"]["max_logit_diff"] < naive_diff


@pytest.mark.slow
def test_guard_refuses_another_tokenizer_or_template_and_untokenized_manifests(tmp_path, smol, cli):
    import shutil

    b = manifest_with_tokens(tmp_path, smol, format_rows(20))
    store = str(tmp_path / ".store")
    other = tmp_path / "other-model"
    shutil.copytree(smol, other)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(other))
    tok.add_tokens(["<planted>"])
    tok.save_pretrained(str(other))
    r = cli("train", b.id, "--store", store, "--base", str(other), "--no-quantize")
    assert r.code == 2 and "its tokenizer differs" in r.err, r.err
    (tmp_path / "tpl.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    r = cli(
        "train",
        b.id,
        "--store",
        store,
        "--base",
        str(smol),
        "--chat-template",
        str(tmp_path / "tpl.jinja"),
    )
    assert r.code == 2 and "chat template differs" in r.err, r.err
    plain = tmp_path / "plain"
    plain.mkdir()
    write_jsonl(plain / "a.jsonl", format_rows(5))
    cfg = write_config(plain, [{"name": "a", "path": "a.jsonl"}])
    nb = build(cfg, store=tmp_path / ".store")
    r = cli("train", nb.id, "--store", store, "--base", str(smol))
    assert r.code == 2 and "built without a [tokenizer]" in r.err, r.err


@pytest.mark.slow
def test_smoke_runs_save_load_merge_generate(tmp_path, smol, cli):
    b = manifest_with_tokens(tmp_path, smol, format_rows(200))
    r = cli(
        "train",
        b.id,
        "--store",
        str(tmp_path / ".store"),
        "--base",
        str(smol),
        "--smoke",
        "--max-steps",
        "4",  # fewer than the smoke's 100, to keep the suite short
        "--json",
    )
    assert r.code == 0, r.err
    out = r.json()
    assert out["steps"] == 4 and out["packing"]["examples"] == 20  # 10% of the rows
    # the defaults on CPU: plain LoRA, packs of 512, each with its reason
    assert out["quantized"] is False and "the CPU default" in out["choices"]["quantize"]["why"]
    assert out["choices"]["batch_tokens"] == {
        "value": 512,
        "why": out["choices"]["batch_tokens"]["why"],
    }
    assert out["choices"]["batch_tokens"]["why"].startswith("cpu default")
    merge = out["merge"]
    assert Path(merge["merged"], "config.json").is_file()
    assert merge["greedy_agreement"] == 1.0 and merge["greedy_sample_ids"]
    assert isinstance(merge["greedy_sample"], str) and merge["greedy_sample"].strip()
    assert "Loading" not in r.err and "%|" not in r.err  # no progress bars from loading


def test_bad_train_toml_and_unknown_run_are_user_errors(tmp_path, cli):
    bad = tmp_path / "train.toml"
    bad.write_text('r = -4\nlearning_rat = 0.1\ngradient_checkpointing = "sometimes"\n')
    r = cli("train", "0123456789ab", "--config", str(bad), "--store", str(tmp_path / "s"))
    assert r.code == 2, r.err
    assert str(bad) in r.err and "3 problems" in r.err
    for key in ("r:", "learning_rat:", "gradient_checkpointing"):
        assert key in r.err
    r = cli("merge", "no-such-run", "--store", str(tmp_path / "s"))
    assert r.code == 2 and "not a curate run folder" in r.err


def test_defaults_follow_the_device_and_its_free_memory(monkeypatch):
    from types import SimpleNamespace

    from curate.train import sizing

    small = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9)
    monkeypatch.setattr(sizing, "available_memory", lambda device: 20 << 30)
    assert sizing.choose_quantization(None, "cpu").value is False
    assert sizing.choose_quantization(None, "cuda").value is True
    assert sizing.choose_quantization(True, "cpu").value is True
    assert sizing.choose_pack_size(None, "cpu", small, 300).value == 512
    assert sizing.choose_pack_size(None, "cpu", small, 900).value == 1024  # the longest row
    assert sizing.choose_pack_size(2048, "cpu", small, 300).value == 2048
    # 8,192 tokens of materialized attention would not fit in half of 20 GiB
    assert sizing.attention_bytes(small, 8192) > 10 << 30
    cuda = sizing.choose_pack_size(None, "cuda", small, 300)
    assert cuda.value < 8192 and "bounded by memory" in cuda.why
    monkeypatch.setattr(sizing, "available_memory", lambda device: 1 << 30)
    tight = sizing.choose_pack_size(None, "cpu", small, 100)
    assert tight.value < 512 and sizing.attention_bytes(small, tight.value) <= 1 << 29
