"""Build a tiny random-weight CogVideoX pipeline from configs: the embedded default's T2V model.

The component sizes follow the shape of diffusers' own CogVideoX test fixtures; the T5 tokenizer is
trained here on a small built-in corpus, so nothing comes from a model hub. The result is saved with
`save_pretrained` and loaded back with `from_pretrained`, exactly like CogVideoX-2B/5B.
Usage: python -m vpo.t2v.tiny_cogvideox --out resources/models/tiny-cogvideox
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

from vpo.core.stage import setup_logging

log = logging.getLogger(__name__)

# Subjects x actions x settings: enough text for a small unigram vocabulary of video words.
_SUBJECTS = ["a cat", "a dog", "a robot", "an astronaut", "a red car", "a horse", "two children", "a bird"]
_ACTIONS = ["running", "surfing", "dancing", "flying", "walking slowly", "jumping", "swimming", "driving"]
_SETTINGS = [
    "on the beach at sunset",
    "in a neon city at night",
    "through a forest in the rain",
    "over snowy mountains",
    "in a park with green grass",
    "under water near a coral reef",
    "on the moon, cinematic lighting",
    "in a small kitchen, close-up shot",
]
MAX_TEXT_TOKENS = 226  # CogVideoX's T5 context; longer prompts are truncated (recorded by the T2V stage)


def _corpus() -> list[str]:
    return [f"{s} {a} {p}" for s, a, p in itertools.product(_SUBJECTS, _ACTIONS, _SETTINGS)]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=256, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    backend.train_from_iterator(_corpus(), trainer)
    # The trainer's scores differ in their last bits from one run (and thread count) to the next, and
    # the folder's content hash is the model's fingerprint (the video cache key): round them, and order
    # the learned pieces by (rounded score, piece), since two pieces of equal rounded score came out in
    # either order (about one build in a hundred). <pad>, </s>, <unk> keep ids 0, 1, 2.
    trained = json.loads(backend.to_str())["model"]
    vocab = [(piece, round(score, 8)) for piece, score in trained["vocab"]]
    vocab = vocab[:3] + sorted(vocab[3:], key=lambda item: (-item[1], item[0]))
    backend.model = models.Unigram(vocab, trained["unk_id"])
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return T5TokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def build_tiny_cogvideox(out_dir: str | Path) -> Path:
    import torch
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_heads=4,
            num_layers=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=4,  # latent size of a 32 x 32 video (the VAE downsamples by 8)
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=MAX_TEXT_TOKENS,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    for module in (text_encoder, transformer, vae):
        module.eval()  # constructed modules start in train mode; T5 dropout would make runs differ
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )
    out = Path(out_dir)
    pipe.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m vpo.t2v.tiny_cogvideox", description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the pipeline to")
    args = parser.parse_args(argv)
    log.info("built tiny CogVideoX at %s", build_tiny_cogvideox(args.out))


if __name__ == "__main__":
    main()
