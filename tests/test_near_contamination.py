"""Near-duplicates (MinHash) and eval contamination on planted cases, against exact Jaccard."""

from __future__ import annotations

import json
import random
import re
import unicodedata

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import build, chat, write_config, write_jsonl

WORDS = [
    "river",
    "stone",
    "maple",
    "copper",
    "lantern",
    "orbit",
    "velvet",
    "harbor",
    "meadow",
    "cipher",
    "falcon",
    "amber",
    "prism",
    "tundra",
    "willow",
    "ember",
    "quartz",
    "saddle",
    "glacier",
    "thistle",
    "beacon",
    "canyon",
    "juniper",
    "marble",
    "nectar",
    "oasis",
    "pepper",
    "quiver",
    "raven",
    "summit",
    "tango",
    "umbra",
    "violet",
    "walnut",
    "yonder",
    "zephyr",
    "anchor",
    "bramble",
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    words = re.sub(r"[^\w]+|_", " ", text).split()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def exact_jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def edit(rng: random.Random, text: str, kind: str, k: int) -> str:
    w = text.split()
    for _ in range(k):
        i = rng.randrange(len(w))
        if kind == "delete":
            del w[i]
        elif kind == "insert":
            w.insert(i, rng.choice(WORDS))
        else:
            w[i] = rng.choice(WORDS)
    return " ".join(w)


def test_planted_near_duplicates_counted_exactly(tmp_path):
    rng = random.Random(5)
    originals = [sentence(rng, 60) for _ in range(40)]
    rows, expected, exact = [chat(f"Q{i}", t) for i, t in enumerate(originals)], 0, 0
    for i, text in enumerate(originals[:30]):
        kind = ("delete", "insert", "substitute")[i % 3]
        copy = edit(rng, text, kind, 1 if i < 20 else 8)  # light edits, and hard negatives
        sim = exact_jaccard(f"Q{i}\n{text}", f"Q{i}\n{copy}")
        if copy == text:  # a substitution that changed nothing: exact dedup's
            exact += 1
        else:
            expected += sim >= 0.8
        rows.append(chat(f"Q{i}", copy))
    write_jsonl(tmp_path / "a.jsonl", rows)
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra="[dedup]\nnear = { threshold = 0.8 }\n"
    )
    b = build(cfg)
    assert 15 <= expected < 30  # the plant has both sides of the threshold
    assert b.manifest["counts"]["rejected"] == {
        "near_duplicate": expected,
        **({"exact_duplicate": exact} if exact else {}),
    }
    kept = {r["id"]: r for r in b.rows}
    for rec in b.rejected("near_duplicate"):
        d = b.detail(rec)
        twin = kept[d["duplicate_of"]]
        mine = "\n".join(m["content"] for m in rec["messages"])
        theirs = "\n".join(m["content"] for m in twin["messages"])
        assert abs(d["jaccard"] - exact_jaccard(mine, theirs)) < 1e-3
        assert d["jaccard"] >= 0.8 and d["cluster"] == d["duplicate_of"]


def test_near_dedup_keeps_the_longer_answer_then_source_order(tmp_path):
    rng = random.Random(9)
    text = sentence(rng, 50)
    longer = text + " " + "amber"
    write_jsonl(tmp_path / "a.jsonl", [chat("q", text)])
    write_jsonl(tmp_path / "b.jsonl", [chat("q", longer)])
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}],
        extra="[dedup]\nnear = { threshold = 0.8 }\n",
    )
    b = build(cfg)
    (rejected,) = b.rejected("near_duplicate")
    assert rejected["source"] == "b"  # source order comes before answer length
    write_jsonl(tmp_path / "a.jsonl", [chat("q", text), chat("q", longer)])
    cfg = write_config(
        tmp_path, [{"name": "a", "path": "a.jsonl"}], extra="[dedup]\nnear = { threshold = 0.8 }\n"
    )
    b = build(cfg, store=tmp_path / "s2")
    (rejected,) = b.rejected("near_duplicate")
    assert rejected["messages"][1]["content"] == text  # the longer answer is kept


def eval_items(rng: random.Random, n: int) -> list[dict]:
    return [
        {
            "id": f"e{i}",
            "question": sentence(rng, 30) + f" costs 1,{i:03d} dollars?",
            "answer": sentence(rng, 20),
        }
        for i in range(n)
    ]


def test_planted_leaks_verbatim_and_edited_clean_rows_untouched(tmp_path, cli):
    rng = random.Random(3)
    items = eval_items(rng, 20)
    write_jsonl(tmp_path / "eval.jsonl", items)
    clean = [chat(sentence(rng, 30), sentence(rng, 30)) for _ in range(50)]
    verbatim = [chat(it["question"], it["answer"]) for it in items[:5]]
    edited = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": "Question: " + it["question"].upper().replace("1,", "1"),
                },
                {"role": "user", "content": "(continued)"},
                {
                    "role": "assistant",
                    "content": "Answer:  " + it["answer"].replace(" ", "  ") + "!",
                },
            ]
        }
        for it in items[5:10]
    ]
    write_jsonl(tmp_path / "a.jsonl", clean + verbatim + edited)
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra='[[evals]]\nname = "toy"\npath = "eval.jsonl"\nfields = ["question", "answer"]\n',
    )
    b = build(cfg)
    assert b.manifest["counts"]["rejected"] == {"contaminated": 10}
    leaked = sorted(b.detail(r)["eval_id"] for r in b.rejected("contaminated"))
    assert leaked == [f"e{i}" for i in range(10)]
    overlap = {b.detail(r)["eval_id"]: b.detail(r)["overlap"] for r in b.rejected("contaminated")}
    assert all(overlap[f"e{i}"] == 1.0 for i in range(5))  # verbatim
    # edited: only the n-grams across the question/answer seam are lost to the inserted turn
    assert all(0.5 <= overlap[f"e{i}"] < 1.0 for i in range(5, 10))
    report = b.manifest["contamination"]["toy"]
    assert report["leaked_items"] == 10 and report["by_source"] == {"a": 10}
    mid = b.id
    shown = cli(
        "review", mid[:10], "--reason", "contaminated", "--json", "--store", tmp_path / ".store"
    ).json()
    assert shown[0]["twin"]["status"] == "eval item"


def test_evals_without_matching_fields_are_an_error(tmp_path, cli):
    write_jsonl(tmp_path / "eval.jsonl", [{"q": "x"}])
    write_jsonl(tmp_path / "a.jsonl", [chat("a", "b")])
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra='[[evals]]\nname = "toy"\npath = "eval.jsonl"\nfields = ["question"]\n',
    )
    r = cli("build", cfg)
    assert r.code == 2 and "none of fields ['question']" in r.err


def test_partial_overlap_below_threshold_is_clean(tmp_path):
    rng = random.Random(4)
    items = eval_items(rng, 3)
    write_jsonl(tmp_path / "eval.jsonl", items)
    # a third of the question, with the rest of the row new: under threshold 0.5
    row = chat(" ".join(items[0]["question"].split()[:12]) + " " + sentence(rng, 40), "ok fine")
    write_jsonl(tmp_path / "a.jsonl", [row])
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}],
        extra='[[evals]]\nname = "toy"\npath = "eval.jsonl"\nfields = ["question", "answer"]\n',
    )
    assert build(cfg).manifest["counts"]["rejected"] == {}


def test_words_normalization():
    import pyarrow as pa

    from curate.dedup.shingles import words

    texts = [
        "Total: 1,000 apples.",  # trailing punctuation leaves no empty word
        "  Hello,\u2003WORLD!\u3000ok\u2028fine  ",  # Unicode spaces split like ASCII ones
        "12,345,678 and 1,234,567,890 but 3,45 and 1, 2",  # separators, not lists
        "",
        None,
        "Ｆｕｌｌ　ｗｉｄｔｈ",  # NFKC
    ]
    _, offsets, flat = words(pa.array(texts, pa.string()))
    got = [flat.slice(a, b - a).to_pylist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    assert got == [
        ["total", "1000", "apples"],
        ["hello", "world", "ok", "fine"],
        ["12345678", "and", "1234567890", "but", "3", "45", "and", "1", "2"],
        [],
        [],
        ["full", "width"],
    ]


def _reference_words(texts: list[str]) -> list[list[str]]:
    """Words as the Unicode path defines them for every row: `normalize` (NFKC, lower case,
    thousands separators, punctuation) on the whole text, then a split on whitespace."""
    import pyarrow as pa

    from curate.dedup.shingles import normalize

    return [t.split() for t in normalize(pa.array(texts, pa.large_string())).to_pylist()]


def _tokenized(texts: list[str]) -> list[list[str]]:
    import pyarrow as pa

    from curate.dedup.shingles import words

    _, offsets, flat = words(pa.array(texts, pa.string()))
    return [
        flat.slice(a, b - a).to_pylist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]


def test_every_code_point_the_tokenizer_takes_as_it_is_agrees_with_normalize():
    """Each BMP character the compiled tokenizer classifies itself (not sent through
    `normalize`), between letters, digits and thousands separators, splits as `normalize`
    splits it."""
    from curate.dedup.kernels import COMPLEX
    from curate.dedup.shingles import code_point_classes

    classes = code_point_classes()
    taken = [chr(cp) for cp in np.nonzero(classes != COMPLEX)[0] if cp >= 0x80]
    assert len(taken) > 40_000 and "\u2019" in taken and "é" in taken and "É" not in taken
    texts = [f"Ab{c}cd {c}{c}x 1,{c}000 2{c},345 {c}1,234 1{c}000 \u30ab{c}" for c in taken]
    assert _tokenized(texts) == _reference_words(texts)


PIECES = (
    list("aZ9 0,.-_\t\n")
    + ["1,000", ",000", "12,345,678", "3,45"]
    + list(
        "\u2019\u201c\u2013\u2014\xa0\u2026éÉß中²\uff9e\u30ab\uff0c\u0301\u0130\u03a3\u1100\u3131\ufb01"
    )
    + ["\U0001d400", "\U0001f600"]
)


@given(st.lists(st.lists(st.sampled_from(PIECES), max_size=30).map("".join), max_size=6))
@settings(max_examples=300, deadline=None)
def test_tokenizer_agrees_with_normalize_on_mixed_text(texts):
    """ASCII, plain non-ASCII and complex rows mixed in one batch: every row splits as
    the Unicode normalization splits it."""
    assert _tokenized(texts) == _reference_words(texts)


def test_pair_jaccard_is_exact():
    import pyarrow as pa

    from curate.dedup.minhash import jaccard

    rng = random.Random(7)
    sets = [sorted(set(rng.sample(range(400), rng.randrange(0, 120)))) for _ in range(60)]
    rng.shuffle(sets[5])  # order within a row does not matter
    lists = pa.array([list(x) for x in sets], pa.large_list(pa.uint32()))
    pairs = np.array([(i, j) for i in range(60) for j in range(60)])
    got = jaccard(lists, pairs)
    want = [
        len(set(sets[i]) & set(sets[j])) / len(set(sets[i]) | set(sets[j]))
        if sets[i] or sets[j]
        else 0.0
        for i, j in pairs
    ]
    assert got.tolist() == want


def test_contamination_index_is_stored_once_and_read_memory_mapped(tmp_path):
    import pickle

    import pyarrow as pa

    from curate.contamination.index import ContaminationStep, EvalSet
    from curate.rows import MESSAGES

    rng = random.Random(3)
    items = [sentence(rng, 30) for _ in range(2000)]
    ev = EvalSet("toy", [f"item-{i}" for i in range(len(items))], items, 0)
    plain = ContaminationStep([ev], 13, 0.5)
    stored = ContaminationStep([ev], 13, 0.5, str(tmp_path / "cache"))
    # what every task carries: the whole index, or a folder name
    assert len(pickle.dumps(stored)) < 5_000 < 100 * 1024 < len(pickle.dumps(plain))
    copy = pickle.loads(pickle.dumps(stored))
    rows = [[{"role": "user", "content": sentence(rng, 40)}] for _ in range(50)]
    rows += [[{"role": "user", "content": "Question: " + items[i].upper()}] for i in (7, 900)]
    n = len(rows)
    batch = pa.table(
        {
            "messages": pa.array(rows, MESSAGES),
            "chosen": pa.nulls(n, MESSAGES),
            "text": pa.nulls(n, pa.string()),
        }
    )
    want, got = plain(batch), copy(batch)
    assert want.rows.tolist() == got.rows.tolist() == [50, 51]
    assert want.detail.to_pylist() == got.detail.to_pylist()
    assert [json.loads(d)["eval_id"] for d in got.detail.to_pylist()] == ["item-7", "item-900"]
    assert plain.params() == copy.params()


def test_duplicate_details_are_the_json_the_ledger_promises():
    """Built column-wise, the evidence is byte for byte `json.dumps(..., sort_keys=True)`,
    for either measure, and for ids JSON has to escape."""
    import pyarrow as pa

    from curate.dedup.clusters import _details

    values = np.array([0.8, 1.0, 0.8571, 0.0001, 0.0])
    for ids in (["a1", "b2", "c3", "d4", "e5"], ['q"uote', "back\\slash", "é", "x", "y"]):
        for measure in ("jaccard", "cosine"):
            got = _details(pa.array(ids), measure, values).to_pylist()
            want = [
                json.dumps({"duplicate_of": k, "cluster": k, measure: v}, sort_keys=True)
                for k, v in zip(ids, values.tolist(), strict=True)
            ]
            assert got == want
