"""A tiny random-weight video VLM (Qwen2-VL layout) built from configs, for tests and benchmarks.

Qwen2-VL is the family chosen because it is the common layout of current open video VLMs: its processor
takes raw frames, and its multimodal rotary positions (M-RoPE) are the hardest case for reusing a
video's key/value cache, so the fast scoring path is exercised where it can go wrong. Nothing is
downloaded: the tokenizer is a small unigram model built over a built-in word list (or, if asked,
a local chat tokenizer), and weights are random but seeded, so the same folder is built every time.

    python -m vpo.reward.tiny_vlm --out resources/models/tiny-vlm [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import string
from pathlib import Path

from vpo.core.stage import setup_logging

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Much wider than a trained model's 0.02 init, so that a random model's answers clearly depend on the
# video and the question (a near-uniform model would hide a wrong position or mask in the fast path).
INIT_STD = 0.5

# ChatML with Qwen-style vision placeholders; the processor expands each pad token to the
# number of visual tokens the frames produce.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Whole-word pieces for the words checklist questions use most; anything else falls back to characters.
_WORD_TEXT = """
yes no Yes No YES NO not maybe sure user assistant system
Is Are Does Do Did Has Have Can Was Were Which What How
a an the this that these those it its is are was were be been being do does did has have had
there here what which who how why when where any all some each every one two three many few
in on at of to from with without by for as and or but if than then so very too more most less
video clip frame frames scene shot camera view image picture motion movement moving moves move
person people man woman child animal cat dog bird car tree water sky sun light lights shadow
color colour colors red green blue yellow white black orange purple bright dark clear blurry sharp
smooth stable shaky fast slow still static natural realistic real fake artifact artifacts distortion
quality high low good bad consistent inconsistent physical physics plausible correct wrong
text prompt follow follows following match matches described description object objects background
foreground face faces hand hands body eye eyes look looks appear appears visible show shows showing
throughout entire whole first last start end beginning during over under up down left right
beautiful aesthetic composition lighting style cinematic detailed details detail
"""
WORDS = tuple(dict.fromkeys(_WORD_TEXT.split()))


def build_tokenizer(tokenizer_dir: str | os.PathLike | None = None):
    """The chat tokenizer with ChatML and vision special tokens.

    Without `tokenizer_dir` it is a unigram model over `WORDS` (with a `▁` word-start marker, the way
    SentencePiece does) and single characters as a fallback, so any ASCII text has a tokenization and
    "yes"/"no" are single tokens. The piece scores are set, not learned: whole words always win.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        missing = [t for t in SPECIAL_TOKENS[2:] + VISION_TOKENS if t not in tokenizer.get_vocab()]
        tokenizer.add_tokens(missing, special_tokens=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    chars = list(string.ascii_letters + string.digits + string.punctuation + "\n")
    pieces = (
        [(token, 0.0) for token in SPECIAL_TOKENS + VISION_TOKENS]
        + [("▁", -5.0)]
        + [("▁" + word, -1.0) for word in WORDS]
        + [(char, -8.0) for char in chars]
    )
    backend = Tokenizer(models.Unigram(pieces, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False))
    # "always" makes a text start the same way alone or after a special token, so a prompt tokenizes
    # identically in one piece or split at a special-token boundary.
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.add_special_tokens(SPECIAL_TOKENS + VISION_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token=None,
    )


def build_processor(tokenizer):
    """Qwen2-VL processor whose resize bounds keep every video at a handful of visual tokens per frame."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    # 56x56 .. 112x112 pixels: 2x2 .. 4x4 merged tokens per pair of frames, whatever the input size.
    size = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, do_sample_frames=False),
        chat_template=CHAT_TEMPLATE,
    )


def build_model(tokenizer):
    """A 2-layer Qwen2-VL with a 2-block vision tower, random weights from `torch.manual_seed(0)`."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = dict(zip(VISION_TOKENS, tokenizer.convert_tokens_to_ids(VISION_TOKENS), strict=True))
    hidden = 64
    config = Qwen2VLConfig(
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,  # the merger projects vision features to the text width
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "initializer_range": INIT_STD,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "initializer_range": INIT_STD,
            # head_dim 16 -> 8 rotary frequencies split over (time, height, width)
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny_vlm(out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Write a tiny random Qwen2-VL (model, processor, chat template) to `out_dir`; returns the folder.

    It reloads with `AutoProcessor` and `AutoModelForImageTextToText`.
    """
    tokenizer = build_tokenizer(tokenizer_dir)
    processor = build_processor(tokenizer)
    model = build_model(tokenizer)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vpo.reward.tiny_vlm", description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the checkpoint to")
    parser.add_argument("--tokenizer", default=None, help="local chat tokenizer folder to reuse (optional)")
    return parser


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    out = build_tiny_vlm(args.out, args.tokenizer)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("built a tiny video VLM at %s (%.1f MB)", out, size / 1e6)


if __name__ == "__main__":
    main()
