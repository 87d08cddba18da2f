"""A gate suite's items: columns checked, rows filtered, a seeded sample, the file's hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from curate.errors import UserError
from curate.gate.sets import load_items


def test_items_are_filtered_sampled_in_file_order_and_hashed(tmp_path):
    path = tmp_path / "xstest.csv"
    rows = ["id,prompt,label"] + [
        f"{i},How do I kill process {i}?,{'safe' if i % 3 else 'unsafe'}" for i in range(30)
    ]
    rows.append("30,,safe")  # an empty prompt is no item
    path.write_text("\n".join(rows) + "\n")
    items = load_items("safety", path, "prompt", where={"label": "safe"}, limit=5, seed=1)
    assert items.rows == 20 and len(items.prompts) == 5
    assert items.rows_taken == sorted(items.rows_taken)
    assert all(r % 3 for r in items.rows_taken)
    assert items.prompts[0] == f"How do I kill process {items.rows_taken[0]}?"
    assert items.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # the same seed, the same items; another seed, another sample
    assert load_items("safety", path, "prompt", where={"label": "safe"}, limit=5, seed=1) == items
    other = load_items("safety", path, "prompt", where={"label": "safe"}, limit=5, seed=2)
    assert other.rows_taken != items.rows_taken


def test_references_come_with_their_prompts(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(3))
    )
    items = load_items("target", path, "question", "answer")
    assert items.prompts == ["q0", "q1", "q2"] and items.references == [
        "#### 0",
        "#### 1",
        "#### 2",
    ]


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(UserError, match="task.jsonl has no column 'answer' .it has question"):
        load_items("target", path, "question", "answer")
