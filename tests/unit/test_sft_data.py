import pytest

from tests.records import record
from vpo.stages.sft_data import sft_examples


def critique(qid, status="ok", verdict=None):
    return record(
        "critique",
        item_id=f"{qid}-0",
        query_id=qid,
        query=f"q {qid}",
        prompt=f"draft {qid}",
        status=status,
        verdict=verdict,
    )


def refinement(qid, status="ok"):
    return record(
        "refinement",
        item_id=f"{qid}-0",
        query_id=qid,
        query=f"q {qid}",
        prompt=f"draft {qid}",
        status=status,
        refined_prompt=f"refined {qid}" if status == "ok" else None,
    )


def test_target_is_draft_if_yes_else_refinement_and_nothing_is_dropped():
    critiques = [
        critique("a", verdict="yes"),
        critique("b", verdict="no"),
        critique("c", verdict="no"),
        critique("d", status="unparsed"),
        critique("e", status="skipped"),
    ]
    examples = sft_examples(critiques, [refinement("b"), refinement("c", status="unparsed")])
    by_query = {e["query_id"]: (e["status"], e["target"], e["target_source"]) for e in examples}
    assert by_query == {
        "a": ("included", "draft a", "draft"),
        "b": ("included", "refined b", "refinement"),
        "c": ("refinement_unparsed", None, None),
        "d": ("critique_unparsed", None, None),
        "e": ("draft_failed", None, None),
    }


def test_missing_refinement_record_is_an_error():
    with pytest.raises(ValueError, match="out of sync"):
        sft_examples([critique("b", verdict="no")], [])
