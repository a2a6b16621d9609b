from vpo.core.ids import candidate_id, derive_seed, normalize_text, query_id, shard_of


def test_query_id_ignores_whitespace_and_case():
    assert query_id("A cute  dog\non the grass ") == query_id("a cute dog on the grass")
    assert query_id("a cute dog") != query_id("a cute cat")


def test_normalize_keeps_flags():
    assert normalize_text("  a  cat -ar 16:9\t-neg blur ") == "a cat -ar 16:9 -neg blur"


def test_candidate_ids_differ_by_policy_and_index():
    q = query_id("a cat")
    ids = {candidate_id(q, "hf|a", 0), candidate_id(q, "hf|a", 1), candidate_id(q, "hf|b", 0)}
    assert len(ids) == 3
    assert candidate_id(q, "hf|a", 0) == candidate_id(q, "hf|a", 0)


def test_seeds_are_stable_and_in_range():
    seeds = [derive_seed(0, "critique", f"item{i}", 0) for i in range(200)]
    assert seeds == [derive_seed(0, "critique", f"item{i}", 0) for i in range(200)]
    assert len(set(seeds)) == 200
    assert all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(1, "critique", "item0", 0) != seeds[0]


def test_shard_depends_only_on_id():
    q = query_id("a cat on a sofa")
    assert shard_of(q, 7) == shard_of(q, 7)
    assert {shard_of(query_id(f"query {i}"), 4) for i in range(100)} == {0, 1, 2, 3}
