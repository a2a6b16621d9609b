"""The whole-frame record check (`validate_frame`, and `write_records` through it) against the row validator:
the same records pass, the same records fail, with the same message."""

import random
from pathlib import Path

import polars as pl
import pytest

from tests.records import record
from vpo.core.frame_checks import UnsupportedSchema, frame_checks, validate_frame
from vpo.core.io import polars_schema, read_records, records_frame, write_records
from vpo.core.layout import SCHEMA_DIR
from vpo.core.schemas import RecordError, record_schema, validate_records

RECORD_TYPES = sorted(p.name.removesuffix(".schema.yaml") for p in (SCHEMA_DIR / "records").glob("*.yaml"))
QID = "0123456789abcdef"
COMMON = {"query_id": QID, "query": "a query"}

# One schema-valid record of every type, nulls included where allowed.
VALID = {
    "critique": record("critique", item_id="c", query_id=QID, verdict="yes", error=None),
    "dropped_query": {
        "query": "q",
        "set": "dpo",
        "source_file": "raw.txt",
        "source_line": 3,
        "reason": "near_duplicate",
        "duplicate_of": 1,
    },
    "eval_dropped": {
        "query": "q",
        "subset": "general",
        "suite": None,
        "source_file": "raw.txt",
        "source_line": 1,
        "reason": "in_training_set",
        "match_file": None,
        "match_line": None,
    },
    "eval_judgement": {
        "method": "sft",
        "item_id": "i",
        "query_id": QID,
        "subset": "unsafe",
        "prompt": "p",
        "verdict": None,
        "unsafe": True,
        "imprecise": False,
        "category": "unsafe",
        "safety_category": None,
        "status": "ok",
        "attempts": 1,
        "critique": None,
        "finish_reason": "stop",
        "seed": 3,
        "model_fingerprint": "m",
        "error": None,
    },
    "eval_prompt": {
        **COMMON,
        "method": "dpo",
        "item_id": "i",
        "subset": "general",
        "sample_index": 0,
        "prompt": None,
        "status": "failed",
        "raw": None,
        "finish_reason": None,
        "seed": 0,
        "model_fingerprint": "m",
        "prompt_tokens": 0,
        "completion_tokens": 5,
        "cost_usd": 0.25,
        "error": "timeout",
    },
    "eval_query": {**COMMON, "subset": "general", "suites": [], "source_file": "eval.txt", "source_line": 1},
    "generation": record("generation", item_id="g", query_id=QID),
    "pair": record("pair", pair_id="p", query_id=QID, chosen_id="c", rejected_id="r"),
    "query": {**COMMON, "set": "sft", "source_file": "raw.txt", "source_line": 1},
    "refinement": record("refinement", item_id="r", query_id=QID, refined_prompt="better"),
    "reward": record(
        "reward",
        video_id="v",
        candidate_id="c",
        query_id=QID,
        question_ids=["a", "b"],
        raw_answers=["Yes", "hm"],
        labels=["yes", "invalid"],
        p_yes=[0.9, None],
        invalid_count=1,
        score_vpo_sum=1.5,
        score_visionreward_mean=-0.5,
    ),
    "sft_example": {**COMMON, "target": "t", "target_source": "draft", "status": "included"},
    "video": {
        **COMMON,
        "video_id": "v",
        "candidate_id": "c",
        "prompt": "p",
        "sample_index": 1,
        "video_index": 0,
        "seed": 7,
        "video_path": "results/state/videos/v.mp4",
        "video_sha256": "0" * 64,
        "num_frames": 49,
        "height": 480,
        "width": 720,
        "fps": 8,
        "prompt_tokens": 12,
        "truncated": False,
        "model_fingerprint": "m",
    },
}

# Values to put in any field: of every JSON type, within and outside the usual enums and bounds.
MUTATIONS = [
    None,
    "",
    "x",
    "yes",
    "ok",
    "video",
    "vpo_sum",
    "0123456789ABCDEF",
    QID + "\n",
    -1,
    0,
    2,
    2.0,
    2.5,
    -0.5,
    True,
    False,
    [],
    ["yes"],
    ["maybe"],
    [None],
    [1],
    [0.5, None],
    [True],
    ["a", 2],
]


def row_message(rows, record_type):
    """The message of the row validator, or None when every row is valid."""
    try:
        validate_records(rows, record_type, "f.parquet")
    except RecordError as err:
        return str(err)
    return None


def frame_message(frame, record_type, rows=None):
    try:
        validate_frame(frame, record_type, "f.parquet", rows=rows)
    except RecordError as err:
        return str(err)
    return None


def test_every_record_type_has_a_valid_example():
    assert sorted(VALID) == RECORD_TYPES
    for record_type, row in VALID.items():
        assert row_message([row], record_type) is None, record_type


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_valid_records_pass(record_type, tmp_path):
    rows = [VALID[record_type]] * 3
    frame = pl.DataFrame(rows, schema=polars_schema(record_type))
    assert frame_message(frame, record_type) is None
    assert write_records(tmp_path / "out.parquet", rows, record_type) == 3
    assert read_records(tmp_path / "out.parquet") == rows


@pytest.mark.parametrize(
    ("record_type", "field", "value"),
    [
        ("query", "query", None),  # null where the type allows none
        ("pair", "source", "audio"),  # enum
        ("critique", "verdict", "maybe"),  # enum with null, no type
        ("critique", "verdict", None),  # ... whose null is fine
        ("pair", "chosen", ""),  # minLength
        ("video", "num_frames", 0),  # minimum
        ("query", "query_id", "0123456789ABCDEF"),  # pattern
        ("query", "query_id", QID + "\n"),  # Python's `$` matches before a final newline: valid
        ("reward", "labels", ["yes", "maybe"]),  # enum of list items
        ("reward", "question_ids", ["a", None]),  # null list item where the items' type has none
        ("reward", "p_yes", [None, 0.5]),  # ... and where it has
        ("reward", "labels", None),  # null list
    ],
)
def test_each_violation_gives_the_row_validators_message(record_type, field, value):
    rows = [VALID[record_type], VALID[record_type], {**VALID[record_type], field: value}]
    frame = pl.DataFrame(rows, schema=polars_schema(record_type))
    assert frame_message(frame, record_type) == row_message(rows, record_type)


@pytest.mark.parametrize(
    ("record_type", "field", "values", "dtype"),
    [
        ("query", "source_line", ["1", "2"], pl.String),  # a string column for an integer field
        ("query", "source_line", [1.0, 2.5], pl.Float64),  # jsonschema: 1.0 is an integer, 2.5 is not
        ("query", "source_line", [True, False], pl.Boolean),  # a bool is no integer
        ("query", "query", [1, 2], pl.Int64),
        ("eval_prompt", "cost_usd", [1, -2], pl.Int32),  # any integer is a number
        ("eval_judgement", "unsafe", [1, 0], pl.Int8),
        ("reward", "p_yes", [["0.5"], ["x"]], pl.List(pl.String)),  # wrong item type
        ("reward", "labels", ["yes", "no"], pl.String),  # not a list at all
        ("reward", "labels", [["yes", "no"], ["no", "oops"]], pl.Array(pl.String, 2)),
        ("pair", "source", ["text", "nope"], pl.Categorical),
        ("reward", "labels", [["yes"], ["nope"]], pl.List(pl.Categorical)),
    ],
)
def test_column_types_are_judged_as_their_python_values(record_type, field, values, dtype):
    base = pl.DataFrame([VALID[record_type]] * len(values), schema=polars_schema(record_type))
    frame = base.with_columns(pl.Series(field, values).cast(dtype, strict=False))
    assert frame_message(frame, record_type) == row_message(frame.to_dicts(), record_type)


def test_missing_and_extra_columns():
    frame = pl.DataFrame([VALID["query"]], schema=polars_schema("query"))
    assert frame_message(frame.drop("set"), "query") == row_message(frame.drop("set").to_dicts(), "query")
    extra = frame.with_columns(note=pl.lit("x"))
    assert frame_message(extra, "query") == row_message(extra.to_dicts(), "query")
    assert "are not its fields" in frame_message(extra.clear(), "query")


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_write_records_rejects_what_the_row_validator_rejects(record_type):
    """Random one-field mutations, through `records_frame` (the exact frame or its fallback)."""
    rng = random.Random(record_type)
    valid = VALID[record_type]
    for _ in range(60):
        field = rng.choice([*valid, "unknown_field"])
        rows = [valid, {**valid, field: rng.choice(MUTATIONS)}]
        if rng.random() < 0.1:
            rows[1] = {k: v for k, v in valid.items() if k != field}
        expected = row_message(rows, record_type)
        try:
            records_frame(rows, record_type, "f.parquet")
            got = None
        except RecordError as err:
            got = str(err)
        assert got == expected, rows[1]


def test_messages_quote_the_records_as_given():
    rows = [{**VALID["eval_prompt"], "prompt_tokens": -3}]
    with pytest.raises(RecordError) as err:
        records_frame(rows, "eval_prompt", "f.parquet")
    assert str(err.value) == row_message(rows, "eval_prompt")
    assert "record 0 (eval_prompt) field prompt_tokens: -3 is less than the minimum of 0" in str(err.value)


def test_integral_floats_and_ints_for_numbers_are_written_as_before(tmp_path):
    rows = [{**VALID["query"], "source_line": 2.0}, {**VALID["eval_prompt"]}]
    assert records_frame(rows[:1], "query", "f")["source_line"].to_list() == [2]
    frame = records_frame([{**rows[1], "cost_usd": 1}], "eval_prompt", "f")
    assert frame.schema["cost_usd"] == pl.Float64 and frame["cost_usd"].to_list() == [1.0]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda s: s["properties"]["query"].update(maxLength=5), "maxLength"),
        (lambda s: s["properties"]["query"].update(format="uri"), "format"),
        (lambda s: s.update(patternProperties={}), "patternProperties"),
        (lambda s: s["properties"]["set"].update(enum=["sft", 1]), "enum"),
        (lambda s: s["properties"]["query"].update(type="object"), "object"),
        (lambda s: s["properties"]["query"].update(items={"type": "string"}), "items"),
        (lambda s: s.update(required=["query"]), "required"),
        (lambda s: s.pop("additionalProperties"), "additionalProperties"),
    ],
)
def test_an_unsupported_schema_raises_when_the_checks_are_built(change, complaint):
    schema = {
        **record_schema("query"),
        "properties": {k: dict(v) for k, v in record_schema("query")["properties"].items()},
    }
    change(schema)
    with pytest.raises(UnsupportedSchema, match=complaint):
        frame_checks(schema)


def test_item_keywords_beyond_type_and_enum_are_unsupported():
    schema = {**record_schema("reward"), "properties": dict(record_schema("reward")["properties"])}
    schema["properties"]["labels"] = {"type": "array", "items": {"enum": ["yes"], "minLength": 1}}
    with pytest.raises(UnsupportedSchema, match="labels/items"):
        frame_checks(schema)


@pytest.mark.parametrize("path", sorted((SCHEMA_DIR / "records").glob("*.yaml")), ids=lambda p: Path(p).name)
def test_every_record_schema_is_fully_checkable(path):
    frame_checks(record_schema(path.name.removesuffix(".schema.yaml")))
