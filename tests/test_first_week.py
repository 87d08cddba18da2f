"""A new user's first week (issue 32): config mistakes answered with the right key, output
readable in a terminal and a pipe, `--version`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.conftest import build, chat, write_config, write_jsonl


@pytest.mark.parametrize(
    ("file", "text", "said"),
    [
        ("mixture.toml", '[[sources]]\nname = "a"\npath = "a.jsonl"\nweigth = 1\n',
         "sources[0] ('a').weigth: unknown key; did you mean 'weight'? valid here: columns,"),
        ("mixture.toml", '[[sources]]\nname = "a"\npath = "a.jsonl"\n[dedup]\nexcat = true\n',
         "dedup.excat: unknown key; did you mean 'exact'? valid here: exact, near, semantic"),
        ("mine.toml", "[rules]\ntruncated_min_word = 5\n",
         "rules.truncated_min_word: unknown key; did you mean 'truncated_min_words'?"),
        ("gate.toml", '[stop]\nmin_rat = 0.8\n', "stop.min_rat: unknown key; did you mean"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_answered_with_the_closest_and_the_valid_ones(
    tmp_path, cli, file, text, said
):
    write_jsonl(tmp_path / "a.jsonl", [chat("q", "a")])
    (tmp_path / "logs.jsonl").write_text('{"prompt": "q", "response": "a"}\n')
    (tmp_path / file).write_text(text)
    command = {
        "mixture.toml": ("build", tmp_path / file),
        "mine.toml": ("mine", tmp_path / "logs.jsonl", "--config", tmp_path / file,
                      "--store", tmp_path / "s"),
        "gate.toml": ("gate", tmp_path, "--config", tmp_path / file),
    }[file]  # fmt: skip
    r = cli(*command)
    assert r.code == 2 and said in r.err, r.err


def test_train_toml_unknown_key_names_the_closest(tmp_path):
    from curate.errors import ConfigError
    from curate.train.config import load_train_config

    (tmp_path / "train.toml").write_text("[train]\nlearning_rat = 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_train_config(tmp_path / "train.toml")


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.strip().startswith("curate 0.")


def test_piped_tables_are_not_cut_and_the_review_prompt_reads(tmp_path, cli, monkeypatch):
    name = "customer_support_tickets_from_the_helpdesk_export_2026"
    rows = [chat(f"question {i}", f"answer {i}") for i in range(4)] + [
        chat("question 1", "answer 1")
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    built = build(write_config(tmp_path, [{"name": name, "path": "a.jsonl"}]))
    store = tmp_path / ".store"
    stats = cli("review", built.id, "--stats", "--store", store)
    assert name in stats.out and "…" not in stats.out  # not cut at 80 columns
    monkeypatch.setattr("sys.stdin", io.StringIO("q\n"))
    loop = cli("review", built.id, "--decide", "--store", store)
    assert "[k]eep [r]eject [s]kip [u]ndo [q]uit" in loop.out
    kept = next(r["id"] for r in built.rows)
    r = cli("review", built.id, "--decide", "--id", kept, "--reject", "--store", store)
    assert r.code == 0 and "(None)" not in r.out and "(a row the build kept)" in r.out


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _labelled_logs(n: int = 400) -> tuple[list[dict], dict[str, set[int]]]:
    """Log rows from ../shared/data with the truth known: GSM8K answers whole (they end
    `#### N`) and cut mid-way (half saying so in `finish_reason`, half in flat rows that
    do not), AdvBench requests refused (correct), XSTest's safe prompts refused (wrong)."""
    import csv
    import random

    rng = random.Random(5)
    lines = (SHARED / "instruct/gsm8k/train.jsonl").read_text().splitlines()[:n]
    gsm = [json.loads(line) for line in lines]
    with open(SHARED / "safety/advbench_harmful_behaviors.csv", newline="") as fh:
        harmful = [r["goal"] for r in csv.DictReader(fh)][:100]
    with open(SHARED / "safety/xstest_prompts.csv", newline="") as fh:
        safe = [r["prompt"] for r in csv.DictReader(fh) if r["label"] == "safe"][:100]
    rows: list[dict] = []
    truth: dict[str, set[int]] = {"truncated": set(), "unexpected_refusal": set()}
    for i, d in enumerate(gsm):
        answer = d["answer"]
        words = answer.split()
        # cut mid-sentence: after a word (not a number or a sentence's end), 20 words in
        cuts = [k for k in range(20, len(words) - 2) if words[k - 1][-1:].isalpha()]
        if i % 4 == 0 and cuts:
            answer = " ".join(words[: rng.choice(cuts)])
            truth["truncated"].add(len(rows))
        row = {"request_id": f"g{i}", "prompt": d["question"], "response": answer}
        if i % 8 == 0 and len(rows) in truth["truncated"]:  # the log says why it stopped
            row = {"input": {"messages": [{"role": "user", "content": d["question"]}]},
                   "output": {"choices": [{"message": {"role": "assistant", "content": answer},
                                           "finish_reason": "length"}]}}  # fmt: skip
        rows.append(row)
    for i, prompt in enumerate(harmful):
        rows.append(
            {"request_id": f"h{i}", "prompt": prompt, "response": "I can't help with that."}
        )
    for i, prompt in enumerate(safe):
        truth["unexpected_refusal"].add(len(rows))
        rows.append({"request_id": f"s{i}", "prompt": prompt, "response": "I'm sorry, but I can't help with that."})  # fmt: skip
    return rows, truth


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data absent")
def test_mining_rules_are_precise_on_labelled_real_traffic(tmp_path):
    """Complete GSM8K answers (`#### 18`) are not `truncated`; refusals of harmful requests
    are not queued without a harmful list, and with one only the safe prompts' refusals are."""
    import pyarrow as pa

    from curate.mining.logs import read_logs
    from curate.mining.rules import RuleSettings, judge

    rows, truth = _labelled_logs()
    (tmp_path / "logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    logs = read_logs([tmp_path / "logs.jsonl"]).rows
    assert logs.num_rows == len(rows)

    def fired(settings: RuleSettings, rule: str) -> set[int]:
        judged = judge(logs, settings)
        return {i for i, rs in enumerate(judged["reasons"].to_list()) if rs and rule in rs}

    truncated = fired(RuleSettings(), "truncated")
    assert truncated == truth["truncated"]  # precision and recall 1.0
    assert fired(RuleSettings(), "unexpected_refusal") == set()  # no list: not judged
    import csv

    with open(SHARED / "safety/advbench_harmful_behaviors.csv", newline="") as fh:
        listed = tuple(r["goal"].lower() for r in csv.DictReader(fh))
    assert fired(RuleSettings(harmful=listed), "unexpected_refusal") == truth["unexpected_refusal"]
    # or with the safe prompts (XSTest's) alone: refusals of those, and only those
    with open(SHARED / "safety/xstest_prompts.csv", newline="") as fh:
        safe = tuple(r["prompt"] for r in csv.DictReader(fh) if r["label"] == "safe")
    assert fired(RuleSettings(safe=safe), "unexpected_refusal") == truth["unexpected_refusal"]
    assert isinstance(logs, pa.Table)


def test_mine_forget_and_fresh_queue_a_run_s_failures_again(tmp_path, cli):
    rows = [{"request_id": f"r{i}", "prompt": f"question {i}", "response": "no",
             "user_feedback": "thumbs_down"} for i in range(5)]  # fmt: skip
    (tmp_path / "logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "s"
    first = cli("mine", tmp_path / "logs.jsonl", "--store", store, "--json").json()
    again = cli("mine", tmp_path / "logs.jsonl", "--store", store, "--json").json()
    assert (first["candidates"]["new"], again["candidates"]["new"]) == (5, 0)
    refused = cli("mine", "forget", first["mining_run"][:12], "--store", store)
    assert refused.code == 2 and "not the latest" in refused.err
    assert cli("mine", "forget", again["mining_run"][:12], "--store", store).code == 0
    forgot = cli("mine", "forget", first["mining_run"][:12], "--store", store)
    assert forgot.code == 0 and "5 new candidates are out of the index" in forgot.out
    requeued = cli("mine", tmp_path / "logs.jsonl", "--store", store, "--json").json()
    assert requeued["candidates"]["new"] == 5 and requeued["candidates"]["seen_before"] == 0
    fresh = cli("mine", tmp_path / "logs.jsonl", "--store", store, "--fresh", "--json").json()
    assert fresh["candidates"] == {**fresh["candidates"], "new": 5, "previous_index": None}


def test_transcripts_are_split_into_turns_and_one_read_as_an_answer_is_refused(tmp_path):
    """hh-rlhf's shape: a pair of transcripts is the shared conversation and each side's
    last answer; a text transcript is a chat; a row with no user turn, or an answer holding
    `\\n\\nHuman:`, is rejected with a reason of its own."""
    convo = "\n\nHuman: How do I bake bread?\n\nAssistant: With flour.\n\nHuman: And then?"
    rows = [
        {"chosen": convo + "\n\nAssistant: Knead and bake it.",
         "rejected": convo + "\n\nAssistant: No idea."},
        {"text": "Human: Hi there\n\nAssistant: Hello! How can I help?"},
        {"prompt": None, "chosen": "just an answer", "rejected": "another"},
        {"messages": [{"role": "user", "content": "q"},
                      {"role": "assistant", "content": "a\n\nHuman: more?\n\nAssistant: yes"}]},
        {"chosen": convo + "\n\nAssistant: A.", "rejected": "\n\nHuman: other\n\nAssistant: B."},
    ]  # fmt: skip
    write_jsonl(tmp_path / "a.jsonl", rows)
    import re

    import curate
    from curate.errors import UserError
    from curate.ledger import query

    # 2 of 5 rows (> 1%) misread under `format = "auto"`: an error, the manifest stored
    with pytest.raises(UserError, match=r"source 'a' \(format auto\) reads 2 of 5 rows") as err:
        build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}]))
    mid = re.search(r"build ([0-9a-f]{12})", str(err.value)).group(1)  # type: ignore[union-attr]
    manifest = curate.open_manifest(mid, store=tmp_path / ".store")
    seen = query(manifest, "SELECT * FROM rows").to_pylist()
    seen += query(manifest, "SELECT * FROM ledger").to_pylist()
    by_line = {r["origin"].split(":")[1]: r for r in seen}
    assert {k: r.get("reason") for k, r in by_line.items()} == {
        "1": None, "2": None, "3": "no_user_turn", "4": "role_marker_in_answer",
        "5": "invalid_schema",
    }  # fmt: skip
    pair = by_line["1"]
    assert pair["kind"] == "preference" and [m["role"] for m in pair["messages"]] == [
        "user", "assistant", "user"
    ]  # fmt: skip
    assert pair["messages"][2]["content"] == "And then?"
    assert pair["chosen"] == [{"role": "assistant", "content": "Knead and bake it."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "No idea."}]
    text = by_line["2"]
    assert text["kind"] == "chat" and text["messages"] == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]
    assert "differ before their last answer" in by_line["5"]["detail"]


def test_a_kept_row_is_drawn_first_and_one_that_does_not_land_is_warned(tmp_path):
    """Rows a reviewer kept are drawn before the rest of their source by the mixture's
    sample; the manifest says how many reached the output, and warns about the others."""
    from curate.review.decisions import append

    rows = [
        chat(f"question {i} about topic {i * 31}", f"the answer {i} is {i * 17}") for i in range(10)
    ]
    rows += [
        chat(f"question {i} about topic {i * 31}", f"the answer {i} is {i * 17}") for i in (1, 2, 3)
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [chat(f"other {i}", f"reply {i}") for i in range(60)])
    sources = [{"name": "a", "path": "a.jsonl", "weight": 0.04},
               {"name": "b", "path": "b.jsonl", "weight": 0.96}]  # fmt: skip
    first = build(write_config(tmp_path, sources))
    copies = first.rejected("exact_duplicate")
    decisions = tmp_path / "review" / "decisions.jsonl"
    append(decisions, [{"id": r["id"], "decision": "keep", "manifest": first.id} for r in copies])
    extra = '[[overrides]]\npath = "review/decisions.jsonl"\n'
    second = build(write_config(tmp_path, sources, extra=extra))
    out = {r["id"] for r in second.rows}
    landed = second.manifest["overrides"]["landed"]
    a_rows = second.manifest["mixture"]["sources"]["a"]["realized_rows"]
    assert a_rows == 2 and landed | {"ids_not_in_output": None} == {
        "kept": 3, "in_output": 2, "not_in_output": {"not_sampled": 1}, "ids_not_in_output": None,
    }  # fmt: skip
    # source a's two rows in the output are both rows the reviewer kept: drawn first
    a_out = {r["id"] for r in second.rows if r["source"] == "a"}
    assert a_out <= {r["id"] for r in copies} and len(a_out) == 2
    (warned,) = [w for w in curate_warnings(second.manifest) if w.startswith("overrides:")]
    assert "3 rows kept by reviewers, 2 in the output" in warned and "not_sampled 1" in warned
    assert out & a_out == a_out


def curate_warnings(manifest: dict) -> list[str]:
    from curate.manifests.manifest import warnings

    return warnings(manifest)


def test_a_mined_correction_wins_its_tie_and_one_that_is_lost_is_warned(tmp_path):
    """A correction identical to a task row is kept and the task row goes (mined rows win
    exact-duplicate ties, whatever the source order); a correction that does not reach the
    output is named in the warnings with its reason."""
    task = [chat(f"question {i}", f"answer {i}") for i in range(20)]
    mined = [chat("question 1", "answer 1"), chat("question 2", "answer 2"), chat("new", "")]
    write_jsonl(tmp_path / "task.jsonl", task)
    write_jsonl(tmp_path / "mined.jsonl", mined)
    built = build(write_config(tmp_path, [{"name": "task", "path": "task.jsonl"},
                                          {"name": "fixes", "path": "mined.jsonl", "role": "mined"}]))  # fmt: skip
    gone = built.rejected("exact_duplicate")
    assert sorted((r["source"], r["origin"].split(":")[1]) for r in gone) == [
        ("task", "2"), ("task", "3")
    ]  # fmt: skip
    kept = {r["id"] for r in built.rows if r["source"] == "fixes"}
    assert {json.loads(r["detail"])["duplicate_of"] for r in gone} == kept
    (warning,) = [w for w in curate_warnings(built.manifest) if "(mined)" in w]
    assert "1 of 3 corrections did not reach the output (empty_response 1)" in warning


def test_mine_report_shows_where_the_unreadable_rows_are(tmp_path, cli):
    lines = [json.dumps({"prompt": "q", "response": "a", "user_feedback": "thumbs_down"}),
             "{not json", json.dumps({"prompt": "q"})]  # fmt: skip
    (tmp_path / "logs.jsonl").write_text("\n".join(lines) + "\n")
    store = tmp_path / "s"
    run = cli("mine", tmp_path / "logs.jsonl", "--store", store, "--json").json()
    shown = cli("mine", "report", run["mining_run"][:12], "--store", store).out
    assert f"unreadable {tmp_path / 'logs.jsonl'}:2: not JSON" in shown
    assert f"unreadable {tmp_path / 'logs.jsonl'}:3" in shown


def test_a_twin_left_out_by_the_mixture_is_shown_with_its_reason(tmp_path):
    from curate import api
    from curate.review.sample import sample_rejections

    rows = [chat(f"question {i}", f"answer {i}") for i in range(30)] + [
        chat("question 3", "answer 3")
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [chat(f"other {i}", f"reply {i}") for i in range(60)])
    sources = [{"name": "a", "path": "a.jsonl", "weight": 0.05},
               {"name": "b", "path": "b.jsonl", "weight": 0.95}]  # fmt: skip
    built = build(write_config(tmp_path, sources))
    manifest = api.open_manifest(built.id, tmp_path / ".store")
    (item,) = sample_rejections(manifest, "exact_duplicate", None, 5, 0)
    assert item["twin"]["status"] == "rejected: not_sampled"  # was "rejected"


def test_the_offline_model_is_listed_and_named_by_base(cli, monkeypatch, tmp_path):
    import curate.train.model as model

    listed = cli("models", "--json").json()
    (smol,) = [m for m in listed if m["name"] == "smollm2"]
    assert smol["path"] and Path(smol["path"]).is_file()
    copied = []
    monkeypatch.setattr(model, "plain_copy", lambda src, dst: copied.append(src) or dst)
    model.resolve_base("smollm2", tmp_path)
    assert copied == [Path(smol["path"])]


def test_the_example_mine_toml_and_logs_run_as_the_readme_says(tmp_path, cli):
    examples = Path(__file__).resolve().parents[1] / "examples"
    r = cli("mine", examples / "logs.jsonl", "--config", examples / "mine.toml",
            "--store", tmp_path / "s", "--json")  # fmt: skip
    assert r.code == 0, r.err
    counts = r.json()["counts"]
    assert counts["by_reason"] == {
        "schema_violation": 1, "thumbs_down": 1, "truncated": 2, "unexpected_refusal": 1
    }  # fmt: skip
    assert (counts["rows"], counts["positives"], counts["refusals"]) == (7, 1, 2)
