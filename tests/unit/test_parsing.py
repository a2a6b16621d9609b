import pytest

from vpo.judge.parsing import clean_prompt, parse_refinement, parse_verdict


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Analysis: fine.\nFinal Judgement (Yes or No): Yes", "yes"),
        ("Analysis: bad.\nFinal Judgement (Yes or No): No", "no"),
        ("final judgement (yes or no): no.", "no"),
        ("**Final Judgement (Yes or No):** **Yes**", "yes"),
        ("Final Judgment: No", "no"),  # American spelling
        ("FINAL JUDGEMENT - YES", "yes"),
        ("Final Judgement (No): No", "no"),  # a small model mangling the marker
        ("Final Judgement (Yes or No):\nNo", "no"),
        ("Final Judgement (Yes or No): No\nSo: Final Judgement (Yes or No): No", "no"),  # the same twice
        ("Final Judgement (Yes or No): Yes, the prompt follows every rule.", "yes"),
    ],
)
def test_verdicts_are_read_case_insensitively(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "The prompt is fine. Yes.",  # no marker: upstream's silent drop; here it is unparsed
        "Final Judgement (Yes or No):",  # marker without an answer
        "Final Judgement (Yes or No): Yes or No",  # the model echoing the question
        "Final Judgement (Yes or No): Maybe",
        "Final Judgement (Yes or No): Yesterday it was fine",
    ],
)
def test_missing_or_ambiguous_verdicts_are_none(text):
    assert parse_verdict(text) is None


def test_refinement_block_is_extracted_and_normalized():
    text = "Reflection: too vague.\n[[start]]A red fox\nruns through   snow.\n[[end]]"
    assert parse_refinement(text) == ("A red fox runs through snow.", "too vague.")


def test_last_refinement_block_wins_and_markers_are_tolerant():
    text = "[[start]]draft one[[end]] then [[ START ]]draft two[[End]]"
    assert parse_refinement(text)[0] == "draft two"
    assert parse_refinement("[start]A cat.[end]")[0] == "A cat."


def test_missing_end_marker_accepted_only_when_not_truncated():
    text = "Reflection: x\n[[start]]A cat sleeps on a sofa.\nFinal Judgement (Yes or No): Yes"
    assert parse_refinement(text, truncated=False)[0] == "A cat sleeps on a sofa."
    assert parse_refinement(text, truncated=True) == (None, None)


@pytest.mark.parametrize("text", [None, "", "No markers here.", "[[start]]   [[end]]", "[[end]] only"])
def test_unusable_refinements_are_none(text):
    assert parse_refinement(text)[0] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Prompt: A cat.", "A cat."),
        ('"A cat on a sofa."', "A cat on a sofa."),
        ("**Video Prompt:**  A dog\n\nrunning.", "A dog running."),
        ("   ", None),
        (None, None),
    ],
)
def test_clean_prompt(text, expected):
    assert clean_prompt(text) == expected
