"""Build a tiny random-weight Wan 2.1 pipeline from configs: a second T2V family for tests.

The component sizes follow the shape of diffusers' own Wan test fixtures; the text encoder is a UMT5
encoder (as in Wan 2.1) reading the T5 tokenizer of `vpo.t2v.tiny_cogvideox` (trained here on a small
built-in corpus), so nothing comes from a model hub. The
result is saved with `save_pretrained` and loaded back with `WanPipeline.from_pretrained`, exactly like
Wan2.1-T2V-1.3B-Diffusers.
Render settings: height and width multiples of 16, num_frames with (num_frames - 1) % 4 == 0.
Usage: python -m vpo.t2v.tiny_wan --out resources/models/tiny-wan
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vpo.core.stage import setup_logging
from vpo.t2v.tiny_cogvideox import build_tokenizer

log = logging.getLogger(__name__)

MAX_TEXT_TOKENS = 512  # Wan's UMT5 context (the pipeline's default max_sequence_length)
FLOW_SHIFT = 7.0  # the timestep shift of diffusers' Wan tests (Wan 2.1 itself uses 3.0 at 480p)


def build_tiny_wan(out_dir: str | Path) -> Path:
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
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
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),  # with the VAE's 8x: height and width in multiples of 16
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,  # the text encoder's d_model
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,  # Wan's latent channels: the default latents_mean/std have 16 entries
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # (sic) 4x in time: num_frames = 4k + 1
    )
    for module in (text_encoder, transformer, vae):
        module.eval()  # constructed modules start in train mode; dropout would make runs differ
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT),
    )
    out = Path(out_dir)
    pipe.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m vpo.t2v.tiny_wan", description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the pipeline to")
    args = parser.parse_args(argv)
    log.info("built tiny Wan at %s", build_tiny_wan(args.out))


if __name__ == "__main__":
    main()
