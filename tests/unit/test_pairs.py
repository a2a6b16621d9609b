from tests.records import record
from vpo.stages.build_pairs import merge_pairs, text_pairs


def refinement(qid, index, status="ok", prompt="sampled", refined="refined"):
    return record(
        "refinement",
        item_id=f"{qid}-{index}",
        query_id=qid,
        query=f"query {qid}",
        sample_index=index,
        prompt=prompt,
        refined_prompt=refined if status == "ok" else None,
        status=status,
    )


def video_pair(qid, name):
    return record(
        "pair",
        pair_id=f"v-{qid}-{name}",
        query_id=qid,
        query=f"query {qid}",
        source="video",
        chosen_id=f"{qid}-0",
        chosen_kind="candidate",
        rejected_id=f"{qid}-1",
        score_margin=0.7,
        score_convention="vpo_sum",
        chosen_video_id=f"{qid}-0-v",
        rejected_video_id=f"{qid}-1-v",
    )


def test_one_text_pair_per_query_from_the_first_refined_candidate():
    pairs, skipped = text_pairs(
        [
            refinement("q1", 2),
            refinement("q1", 0, status="unparsed"),
            refinement("q1", 1),
            refinement("q2", 0, refined="sampled"),
        ]
    )
    assert [(p["query_id"], p["rejected_id"]) for p in pairs] == [("q1", "q1-1")]
    assert pairs[0]["chosen"] == "refined" and pairs[0]["rejected"] == "sampled"
    assert pairs[0]["source"] == "text" and pairs[0]["chosen_kind"] == "refinement"
    assert skipped == {"refinement_unparsed": 1, "query_has_pair": 1, "refinement_identical": 1}


def test_text_pairs_take_precedence_and_one_pair_per_query():
    text, _ = text_pairs([refinement("q1", 0)])
    merged, superseded = merge_pairs(
        text, [video_pair("q1", "a"), video_pair("q2", "a"), video_pair("q2", "b")], 7
    )
    assert superseded == {"video_superseded_by_text": 1, "video_second_pair_for_query": 1}
    assert sorted((p["query_id"], p["source"]) for p in merged) == [("q1", "text"), ("q2", "video")]
    assert next(p for p in merged if p["query_id"] == "q2")["pair_id"] == "v-q2-a"


def test_shuffle_is_seeded_and_independent_of_input_order():
    text, _ = text_pairs([refinement(f"q{i}", 0) for i in range(20)])
    a, _ = merge_pairs(text, [], 3)
    b, _ = merge_pairs(list(reversed(text)), [], 3)
    c, _ = merge_pairs(text, [], 4)
    assert [p["pair_id"] for p in a] == [p["pair_id"] for p in b]
    assert [p["pair_id"] for p in a] != [p["pair_id"] for p in c]
