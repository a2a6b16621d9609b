"""Text-to-video backends (`t2v.backend`): diffusers pipelines configured from the workflow config, and
the tiny embedded model."""

from __future__ import annotations

from vpo.core.fingerprints import fingerprint as weights_fingerprint
from vpo.core.registry import Backend, lookup

# A fingerprint is part of every video's cache key; the diffusers one keeps its original form ("t2v|"),
# so the videos cached before the table existed stay valid.
T2V_BACKENDS: dict[str, Backend] = {
    "diffusers": Backend(
        "vpo.t2v.pipeline:DiffusersT2V",
        "envs/t2v.yaml",
        lambda spec: f"t2v|{weights_fingerprint(spec['model_path'], spec.get('revision'))}",
    ),
}


def t2v_backend(name: str) -> Backend:
    return lookup(T2V_BACKENDS, "t2v.backend", name)
