"""How the gate scores answers: exact match after normalization, the extractor, refusals."""

from __future__ import annotations

from curate.gate.score import exact_match, normalize, refused

GSM8K = r"#### *(-?[0-9.,]+)"


def test_normalization_makes_the_same_answer_equal():
    assert normalize("  $1,000. ") == normalize("1000") == "1000"
    assert normalize("Paris") == normalize("paris!") == "paris"
    assert normalize("ﬁve  apples") == "five apples"  # NFKC folds the ligature
    assert normalize("1,5") == "1,5"  # not a thousands separator
    assert normalize(None) == ""


def test_the_extractor_compares_what_it_captures_last():
    refs = ["Natalia sold 48 + 24 = 72 clips.\n#### 72", "#### 1,200", "#### 5"]
    outs = [
        "She sold 48 in April and 24 in May.\n#### 72",
        "First #### 12 then the total is #### 1200.",  # the last one counts
        "The answer is 5.",  # no '####': no answer
    ]
    assert exact_match(outs, refs, GSM8K).tolist() == [True, True, False]
    assert exact_match(["Paris."], ["paris"]).tolist() == [True]
    assert exact_match([None], ["paris"]).tolist() == [False]


def test_refusals_are_the_phrase_rule_mining_uses():
    answers = ["I’m sorry, but I can’t help with that.", "Sure: here it is.", None, ""]
    assert refused(answers).tolist() == [True, False, False, False]
    assert refused(["Nope."], ("nope",)).tolist() == [True]
