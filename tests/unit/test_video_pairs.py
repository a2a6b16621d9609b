"""Golden tests of the video-level pair rule, one per clause, on hand-made answer vectors."""

import pytest

from tests.records import record
from vpo.reward.checklist import Checklist, Question
from vpo.stages.build_pairs import merge_pairs, text_pairs
from vpo.stages.video_pairs import dominates, video_pairs

CHECKLIST = Checklist("golden", tuple(Question(f"q{i}", f"question {i}", w) for i, w in enumerate([1, 1, 1])))


def video(qid, index, labels, prompt=None, score=None):
    scores = CHECKLIST.scores(labels)
    return record(
        "reward",
        video_id=f"{qid}-v{index}",
        candidate_id=f"{qid}-c{index}",
        query_id=qid,
        query=f"query {qid}",
        prompt=prompt or f"prompt {qid} {index}",
        sample_index=index,
        question_ids=[q.id for q in CHECKLIST.questions],
        raw_answers=list(labels),
        labels=labels,
        p_yes=[None] * len(labels),
        invalid_count=labels.count("invalid"),
        score_vpo_sum=scores["vpo_sum"] if score is None else score,
        score_visionreward_mean=scores["visionreward_mean"],
    )


def test_dominance_needs_never_worse_and_once_better():
    assert dominates(["yes", "yes", "no"], ["yes", "no", "no"])
    assert not dominates(["yes", "no", "no"], ["yes", "no", "no"])  # equal: clause (b) fails
    assert not dominates(["yes", "yes", "no"], ["no", "no", "yes"])  # says no where j says yes: (a)


def test_at_least_one_clause_alone_is_not_enough():
    # i is better on two questions but worse on one: no dominance, whatever the scores say
    pairs, counts = video_pairs(
        [video("q", 0, ["yes", "yes", "no"]), video("q", 1, ["no", "no", "yes"])], margin=0.5
    )
    assert pairs == [] and counts["queries_without_pair"] == 1


def test_margin_is_strict():
    a = video("q", 0, ["yes", "yes", "no"])  # vpo_sum 2
    b = video("q", 1, ["yes", "no", "no"])  # vpo_sum 1
    assert video_pairs([a, b], margin=1.0)[0] == []  # gap 1.0 is not > 1.0
    pairs, _ = video_pairs([a, b], margin=0.99)
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("q-c0", "q-c1")]
    assert pairs[0]["score_margin"] == pytest.approx(1.0) and pairs[0]["score_convention"] == "vpo_sum"


def test_zero_weight_questions_count_for_dominance_but_not_the_margin():
    a = video("q", 0, ["yes", "no", "no"], score=1.0)
    b = video("q", 1, ["no", "no", "no"], score=1.0)  # same score: e.g. the differing question weighs 0
    assert video_pairs([a, b], margin=0.0)[0] == []


def test_invalid_answers_keep_a_video_out_and_are_counted():
    a = video("q", 0, ["yes", "yes", "invalid"])
    b = video("q", 1, ["no", "no", "no"])
    pairs, counts = video_pairs([a, b], margin=0.5)
    assert pairs == [] and counts["videos_with_invalid_answers"] == 1
    # the same vectors with "invalid" read as "no" would have made a pair (the upstream silent failure)
    assert video_pairs([video("q", 0, ["yes", "yes", "no"]), b], margin=0.5)[0]


def test_ties_and_identical_prompts_make_no_pair():
    tie = [video("q", 0, ["yes", "no", "no"]), video("q", 1, ["yes", "no", "no"])]
    assert video_pairs(tie, margin=0.0)[0] == []
    same_text = [
        video("q", 0, ["yes", "yes", "yes"], prompt="p"),
        video("q", 1, ["no", "no", "no"], prompt="p"),
    ]
    assert video_pairs(same_text, margin=0.5)[0] == []


def test_one_pair_per_query_the_first_in_candidate_order():
    videos = [
        video("q", 2, ["yes", "yes", "yes"]),
        video("q", 0, ["yes", "yes", "no"]),
        video("q", 1, ["no", "no", "no"]),
    ]
    pairs, _ = video_pairs(videos, margin=0.5)
    # candidate 0 is the first winner in order; its first loser in order is candidate 1
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("q-c0", "q-c1")]
    assert pairs[0]["chosen_video_id"] == "q-v0" and pairs[0]["source"] == "video"


def test_pairs_per_query_are_independent():
    videos = [video("a", 0, ["yes", "yes", "yes"]), video("a", 1, ["no", "no", "no"])]
    videos += [video("b", 0, ["no", "no", "no"]), video("b", 1, ["yes", "no", "no"])]
    pairs, _ = video_pairs(videos, margin=0.5)
    assert sorted((p["query_id"], p["chosen_id"]) for p in pairs) == [("a", "a-c0"), ("b", "b-c1")]


def test_text_pairs_take_precedence_over_video_pairs():
    refinement = {
        "item_id": "a-c1",
        "query_id": "a",
        "query": "query a",
        "sample_index": 1,
        "prompt": "sampled",
        "refined_prompt": "refined",
        "status": "ok",
    }
    text, _ = text_pairs([refinement])
    vids, _ = video_pairs(
        [
            video("a", 0, ["yes"] * 3),
            video("a", 1, ["no"] * 3),
            video("b", 0, ["yes"] * 3),
            video("b", 1, ["no"] * 3),
        ],
        margin=0.5,
    )
    merged, skipped = merge_pairs(text, vids, shuffle_seed=0)
    assert sorted((p["query_id"], p["source"]) for p in merged) == [("a", "text"), ("b", "video")]
    assert skipped == {"video_superseded_by_text": 1}


def test_score_conventions():
    weights = Checklist("w", (Question("a", "x", 0.5), Question("b", "y", 0.0), Question("c", "z", 1.5)))
    scores = weights.scores(["yes", "yes", "no"])
    assert scores["vpo_sum"] == pytest.approx(0.5)
    # (2 * 0.5 - 2.0) / 2 non-zero weights
    assert scores["visionreward_mean"] == pytest.approx(-0.5)
    assert weights.scores(["invalid", "no", "yes"])["vpo_sum"] == pytest.approx(1.5)
