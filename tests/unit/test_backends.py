"""The backend tables (`reward.backend`, `t2v.backend`): one entry per schema enum value, an env that
exists, a class that builds from a spec, and fingerprints in the form the item caches were keyed with."""

from __future__ import annotations

import importlib

import pytest

from tests.conftest import REPO
from vpo.core.fingerprints import fingerprint as weights_fingerprint
from vpo.core.schemas import load_schema
from vpo.reward.factory import REWARD_BACKENDS, LazyScorer, reward_backend
from vpo.t2v import T2V_BACKENDS, t2v_backend

TABLES = {"reward": REWARD_BACKENDS, "t2v": T2V_BACKENDS}


@pytest.mark.parametrize("section", TABLES)
def test_the_table_has_exactly_the_schemas_backends(section):
    enum = load_schema("config.schema.yaml")["properties"][section]["properties"]["backend"]["enum"]
    assert sorted(TABLES[section]) == sorted(enum)


@pytest.mark.parametrize(("section", "name"), [(s, n) for s, table in TABLES.items() for n in table])
def test_every_backend_names_an_env_and_a_class_that_builds_from_a_spec(section, name):
    backend = TABLES[section][name]
    assert (REPO / backend.env).is_file()
    module, cls = backend.target.split(":")
    assert callable(getattr(importlib.import_module(module), cls).from_spec)


def test_fingerprints_keep_the_form_the_caches_were_keyed_with(tmp_path, monkeypatch):
    monkeypatch.setenv("VPO_CACHE_DIR", str(tmp_path / "memos"))  # weight-hash memos
    (tmp_path / "model").mkdir()
    (tmp_path / "model/config.json").write_text("{}")
    weights = weights_fingerprint(str(tmp_path / "model"))
    spec = {"model_path": str(tmp_path / "model"), "revision": None, "answer_mode": "free"}
    assert LazyScorer({**spec, "backend": "hf-vlm"}).fingerprint == f"hf-vlm|free|{weights}"
    assert LazyScorer({**spec, "backend": "visionreward"}).fingerprint == f"visionreward|generate|{weights}"
    assert t2v_backend("diffusers").fingerprint(spec) == f"t2v|{weights}"


def test_an_unknown_backend_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"reward\.backend: unknown backend 'clip'.*hf-vlm, visionreward"):
        reward_backend("clip")
    with pytest.raises(ValueError, match=r"t2v\.backend: unknown backend 'sora'.*Fix: use one of diffusers"):
        t2v_backend("sora")
