"""Benchmark: seconds per video of the paper's text-to-video targets (CogVideoX-2B, CogVideoX-5B) on one GPU.

Prices GPU-hours per video for `vpo estimate`. Each target is built with RANDOM weights from its published
architecture (no hub access, no checkpoints): the CogVideoX transformer, the CogVideoX 3D VAE and a T5 v1.1
XXL text encoder, in the dtype the release recommends, all resident on the GPU (no CPU offload, no VAE
tiling unless asked). Random weights change no shape, so the kernels and their times are those of the real
model; only the pixels are noise.

Per target: build (construction on the GPU, then cast), one warm-up video at `--warmup-steps` steps (CUDA
context, cuBLAS/cuDNN algorithm choice, allocator growth), then one timed video at `--steps` steps, split
into text encoding (T5 on random token ids, prompt + negative prompt, as the pipeline does), denoising (the
`CogVideoXPipeline` loop with `output_type="latent"`, classifier-free guidance, dynamic CFG) and decoding
(VAE decode + post-processing to uint8 frames on the host). If `--budget-s` would be exceeded, fewer steps
are timed (at least `--min-steps`) and the denoising time is scaled to `--steps`; the row says so.

Columns: steps = steps timed (-> steps priced); s/video = text + denoise + decode; published = the model
card's single-H100 time at 50 steps; ratio = measured / published; peak GiB = torch.cuda.max_memory_allocated
over the timed video (models included).

Run on a GPU machine (full size, both targets: about 3 min on one H200, 50 steps each):

    python bench/bench_t2v_gpu.py --out results/bench_t2v_gpu.json

CPU smoke test (tiny shapes, a few seconds):

    .venv/bin/python bench/bench_t2v_gpu.py --tiny --out /tmp/bench_t2v_tiny.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# --- Published architectures ---
# CogVideoX-2B transformer: THUDM/CogVideoX-2b transformer/config.json on the Hugging Face hub
# (huggingface.co/THUDM/CogVideoX-2b/blob/main/transformer/config.json): 30 heads x 64, 30 layers,
# sincos positions (no rotary); the remaining keys equal diffusers' CogVideoXTransformer3DModel defaults.
TRANSFORMER_2B: dict[str, Any] = {
    "num_attention_heads": 30,
    "attention_head_dim": 64,
    "num_layers": 30,
    "in_channels": 16,
    "out_channels": 16,
    "text_embed_dim": 4096,
    "time_embed_dim": 512,
    "sample_height": 60,
    "sample_width": 90,
    "sample_frames": 49,
    "patch_size": 2,
    "temporal_compression_ratio": 4,
    "max_text_seq_length": 226,
    "activation_fn": "gelu-approximate",
    "timestep_activation_fn": "silu",
    "norm_eps": 1e-5,
    "spatial_interpolation_scale": 1.875,
    "temporal_interpolation_scale": 1.0,
    "use_rotary_positional_embeddings": False,
    "use_learned_positional_embeddings": False,
}
# CogVideoX-5B transformer: THUDM/CogVideoX-5b transformer/config.json (as copied in
# huggingface.co/thu-ml/CogVideoX-RIFLEx-diffusers transformer/config.json, whose _name_or_path is the
# THUDM/CogVideoX-5b snapshot): 48 heads x 64 (hidden 3072), 42 layers, 3D rotary positions; every other
# key is the same as the 2B's.
TRANSFORMER_5B: dict[str, Any] = {
    **TRANSFORMER_2B,
    "num_attention_heads": 48,
    "num_layers": 42,
    "use_rotary_positional_embeddings": True,
}
# VAE: diffusers' AutoencoderKLCogVideoX defaults equal THUDM/CogVideoX-2b vae/config.json (block_out_channels
# 128/256/256/512, 3 layers per block, 16 latent channels, temporal compression 4, scaling 1.15258426).
# The 5B's vae/config.json (mirrored in diffusers/CogVideoX-5b-nf4) differs only in scaling_factor 0.7.
VAE_2B: dict[str, Any] = {}
VAE_5B: dict[str, Any] = {"scaling_factor": 0.7}
# Scheduler: THUDM/CogVideoX-2b scheduler/scheduler_config.json (CogVideoXDDIMScheduler, v-prediction,
# zero-SNR rescale, trailing spacing, snr_shift_scale 3.0). For the 5B snr_shift_scale 1.0 is used (from a
# CogVideoX-5b-derived config; not checked against the 5B card); the scheduler's cost is a few element-wise
# ops per step and does not move the timing.
SCHEDULER_2B: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "snr_shift_scale": 3.0,
}
SCHEDULER_5B: dict[str, Any] = {**SCHEDULER_2B, "snr_shift_scale": 1.0}
# Text encoder: T5 v1.1 XXL encoder (google/t5-v1_1-xxl config.json; CogVideoX's text_encoder folder):
# d_model 4096, d_ff 10240, 24 layers, 64 heads x d_kv 64, vocabulary 32128, gated-GELU feed-forward.
T5_XXL: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.0,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
    "use_cache": False,
}

# --- Published speed ---
# The CogVideoX model-card table "Inference Speed (Step = 50, FP/BF16)" (THUDM/CogVideo README and the
# THUDM/CogVideoX-2b / -5b model cards; e.g. the copy at replicate.com/cuuupid/cogvideox-5b/readme):
#   CogVideoX-2B: single A100 ~90 s, single H100 ~45 s;   CogVideoX-5B: single A100 ~180 s, single H100 ~90 s.
# An earlier revision of the card (huggingface.co/THUDM/CogVideoX-5b commit a190ef4) gave "single A100,
# 50 steps: FP16 ~90 s (2B), BF16 ~200 s (5B)". So ~90 s / ~180 s are A100 figures; on an H100 the card
# says ~45 s / ~90 s. The card's notes say its diffusers tests ran with the memory optimisations on
# (enable_model_cpu_offload / VAE tiling), which this benchmark does not use.
PUBLISHED_S = {
    "cogvideox-2b": {"h100": 45.0, "a100": 90.0},
    "cogvideox-5b": {"h100": 90.0, "a100": 180.0},
}

# --- Tiny shapes for the CPU test path ---
TINY_TRANSFORMER: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 1,
    "in_channels": 4,
    "out_channels": 4,
    "text_embed_dim": 32,
    "time_embed_dim": 8,
    "sample_height": 4,
    "sample_width": 4,
    "sample_frames": 9,
    "patch_size": 2,
    "max_text_seq_length": 8,
}
TINY_VAE: dict[str, Any] = {
    "block_out_channels": (8, 8, 8, 8),
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 2,
}
TINY_T5: dict[str, Any] = {
    **T5_XXL,
    "vocab_size": 1000,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
}


@dataclass
class Target:
    name: str
    dtype: torch.dtype
    transformer: dict[str, Any]
    vae: dict[str, Any]
    scheduler: dict[str, Any]
    text_encoder: dict[str, Any] = field(default_factory=lambda: dict(T5_XXL))


def targets(tiny: bool) -> dict[str, Target]:
    """The two targets; 2B in fp16 and 5B in bf16, the precisions each model card recommends."""
    full = {
        "cogvideox-2b": Target("cogvideox-2b", torch.float16, TRANSFORMER_2B, VAE_2B, SCHEDULER_2B),
        "cogvideox-5b": Target("cogvideox-5b", torch.bfloat16, TRANSFORMER_5B, VAE_5B, SCHEDULER_5B),
    }
    if not tiny:
        return full
    out = {}
    for name, t in full.items():
        rotary = t.transformer["use_rotary_positional_embeddings"]
        tr = {**TINY_TRANSFORMER, "use_rotary_positional_embeddings": rotary}
        # fp16 matmuls are poorly supported on CPU; the tiny path checks the plumbing, not the numbers.
        out[name] = Target(name, torch.float32, tr, {**t.vae, **TINY_VAE}, t.scheduler, dict(TINY_T5))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def gib(n_bytes: float) -> float:
    return n_bytes / 2**30


def transformer_tflop_per_step(cfg: dict, frames: int, height: int, width: int, batch: int) -> float:
    """Matmul FLOPs of one transformer call (QKV/out projections, 4x MLP, full joint attention)."""
    lat_t = (frames - 1) // cfg["temporal_compression_ratio"] + 1
    p = cfg["patch_size"]
    tokens = cfg["max_text_seq_length"] + lat_t * (height // 8 // p) * (width // 8 // p)
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    per_layer = 2 * tokens * 12 * d * d + 4 * tokens * tokens * d
    return per_layer * cfg["num_layers"] * batch / 1e12


def build(target: Target, device: torch.device, with_text_encoder: bool, vae_tiling: bool = False):
    """Construct the pipeline with random weights directly on `device`, then cast to the target dtype."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(0)
    # Parameters are created (and randomly initialised) on the device itself: initialising ~10 B parameters
    # on the host would take minutes. The final .to() also moves buffers made on the host (position tables).
    with torch.device(device):
        transformer = CogVideoXTransformer3DModel(**target.transformer)
        transformer = transformer.to(device=device, dtype=target.dtype).eval()
        vae = AutoencoderKLCogVideoX(**target.vae).to(device=device, dtype=target.dtype).eval()
        text_encoder = None
        if with_text_encoder:
            from transformers import T5Config, T5EncoderModel

            text_encoder = T5EncoderModel(T5Config(**target.text_encoder))
            text_encoder = text_encoder.to(device=device, dtype=target.dtype).eval()
    scheduler = CogVideoXDDIMScheduler(**target.scheduler)
    pipe = CogVideoXPipeline(
        tokenizer=None, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.inference_mode()
def make_video(pipe, target: Target, device: torch.device, args, steps: int) -> dict[str, Any]:
    """One video: text encode, denoise `steps` steps, VAE decode + post-process; times in seconds."""
    cfg = target.transformer
    seq, dim = cfg["max_text_seq_length"], cfg["text_embed_dim"]
    out: dict[str, Any] = {"steps": steps}

    # Text: the pipeline encodes prompt and negative prompt in two batch-1 T5 calls.
    sync(device)
    t0 = time.perf_counter()
    if pipe.text_encoder is not None:
        vocab = pipe.text_encoder.config.vocab_size
        for _ in range(2):
            ids = torch.randint(0, vocab, (1, seq), device=device)
            pipe.text_encoder(ids)
    sync(device)
    out["text_s"] = time.perf_counter() - t0
    # Random embeddings go into the transformer (random-weight T5 outputs can overflow in fp16).
    gen = torch.Generator(device=device).manual_seed(0)
    prompt_embeds = torch.randn((1, seq, dim), generator=gen, device=device).to(target.dtype)
    negative_embeds = torch.randn((1, seq, dim), generator=gen, device=device).to(target.dtype)

    stamps: list[float] = []

    def on_step(_pipe, _i, _t, kwargs):
        sync(device)
        stamps.append(time.perf_counter())
        return kwargs

    sync(device)
    t0 = time.perf_counter()
    latents = pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_embeds,
        height=args.height,
        width=args.width,
        num_frames=args.frames,
        num_inference_steps=steps,
        guidance_scale=args.guidance,
        use_dynamic_cfg=args.dynamic_cfg,
        generator=gen,
        output_type="latent",
        callback_on_step_end=on_step,
    ).frames
    sync(device)
    t1 = time.perf_counter()
    out["denoise_s"] = t1 - t0
    out["step_s"] = [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]
    if device.type == "cuda":
        out["peak_denoise_gib"] = gib(torch.cuda.max_memory_allocated(device))

    frames = pipe.decode_latents(latents)
    sync(device)
    t2 = time.perf_counter()
    video = pipe.video_processor.postprocess_video(video=frames, output_type="np")
    t3 = time.perf_counter()
    out["vae_decode_s"] = t2 - t1
    out["postprocess_s"] = t3 - t2
    out["decode_s"] = t3 - t1
    out["video_shape"] = list(video.shape)
    return out


def run_target(target: Target, device: torch.device, args, deadline: float) -> dict[str, Any]:
    row: dict[str, Any] = {"target": target.name, "dtype": str(target.dtype).removeprefix("torch.")}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    pipe = build(target, device, args.text_encoder, args.vae_tiling)
    sync(device)
    row["build_s"] = time.perf_counter() - t0
    row["params_b"] = {
        "transformer": n_params(pipe.transformer) / 1e9,
        "vae": n_params(pipe.vae) / 1e9,
        "text_encoder": n_params(pipe.text_encoder) / 1e9 if pipe.text_encoder is not None else 0.0,
    }
    if device.type == "cuda":
        row["weights_gib"] = gib(torch.cuda.memory_allocated(device))
    print(f"[{target.name}] built in {row['build_s']:.1f}s  params(B)={row['params_b']}", flush=True)

    warm = make_video(pipe, target, device, args, args.warmup_steps)
    row["warmup"] = warm
    # The first step carries one-time costs; later warm-up steps estimate a steady step.
    steady = warm["step_s"][1:] or warm["step_s"]
    est_step = statistics.median(steady)
    print(
        f"[{target.name}] warm-up {args.warmup_steps} steps: denoise {warm['denoise_s']:.2f}s "
        f"(steady step ~{est_step:.3f}s), decode {warm['decode_s']:.2f}s",
        flush=True,
    )

    steps = args.steps
    left = deadline - time.monotonic()
    need = steps * est_step + warm["decode_s"] + warm["text_s"] + 10.0
    if need > left:
        fit = int((left - warm["decode_s"] - warm["text_s"] - 10.0) / est_step)
        steps = max(args.min_steps, min(args.steps, fit))
        print(f"[{target.name}] budget: {left:.0f}s left, {need:.0f}s needed -> {steps} steps", flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = make_video(pipe, target, device, args, steps)
    row["timed"] = timed
    scale = args.steps / steps
    row["steps_timed"] = steps
    row["steps_priced"] = args.steps
    row["scaled"] = steps != args.steps
    row["text_s"] = timed["text_s"]
    row["denoise_s"] = timed["denoise_s"] * scale
    row["step_s_median"] = statistics.median(timed["step_s"])
    row["decode_s"] = timed["decode_s"]
    row["s_per_video"] = row["text_s"] + row["denoise_s"] + row["decode_s"]
    if device.type == "cuda":
        row["peak_gib"] = gib(torch.cuda.max_memory_allocated(device))
        row["peak_reserved_gib"] = gib(torch.cuda.max_memory_reserved(device))
    pub = PUBLISHED_S[target.name]
    row["published_h100_s"] = pub["h100"]
    row["published_a100_s"] = pub["a100"]
    row["ratio_vs_h100"] = row["s_per_video"] / pub["h100"]
    row["ratio_vs_a100"] = row["s_per_video"] / pub["a100"]
    model_cfg = dict(pipe.transformer.config)
    tflop = transformer_tflop_per_step(model_cfg, args.frames, args.height, args.width, batch=2)
    row["transformer_tflop_per_step"] = tflop
    row["achieved_tflops"] = tflop / row["step_s_median"] if row["step_s_median"] > 0 else None

    del pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def environment(device: torch.device) -> dict[str, Any]:
    import diffusers
    import transformers

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_mem_gib"] = gib(props.total_memory)
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def sec(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    head = "target | steps | s/video (denoise + decode) | published s/video (H100) | ratio | peak GiB"
    lines = [head, "-" * len(head)]
    for r in rows:
        steps = f"{r['steps_timed']}->{r['steps_priced']}" if r["scaled"] else str(r["steps_priced"])
        split = f"{sec(r['s_per_video'])} ({sec(r['denoise_s'])} + {sec(r['decode_s'])}"
        split += f" + text {r['text_s']:.2f})" if r["text_s"] >= 0.005 else ")"
        peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "n/a"
        lines.append(
            f"{r['target']} | {steps} | {split} | {r['published_h100_s']:.0f} | "
            f"{r['ratio_vs_h100']:.3g} | {peak}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="cogvideox-2b,cogvideox-5b", help="comma-separated, in run order")
    ap.add_argument("--steps", type=int, default=50, help="denoising steps priced (published: 50)")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--min-steps", type=int, default=10, help="fewest steps timed when the budget is short")
    ap.add_argument("--budget-s", type=float, default=1e9, help="wall-clock budget for the whole run")
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--guidance", type=float, default=6.0)
    ap.add_argument("--no-dynamic-cfg", dest="dynamic_cfg", action="store_false")
    ap.add_argument("--no-text-encoder", dest="text_encoder", action="store_false")
    ap.add_argument("--vae-tiling", action="store_true", help="decode with VAE tiling (slower, less memory)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes for a CPU smoke test")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args(argv)

    deadline = time.monotonic() + args.budget_s
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.tiny:
        args.frames, args.height, args.width = 9, 32, 32
        args.steps = min(args.steps, 3)
        args.min_steps = min(args.min_steps, args.steps)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False

    import diffusers

    # Casting freshly built models with .to() logs a harmless "keep in float32: []" warning each time.
    diffusers.utils.logging.set_verbosity_error()
    env = environment(device)
    print(json.dumps(env), flush=True)
    all_targets = targets(args.tiny)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    result: dict[str, Any] = {
        "env": env,
        "settings": {
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "guidance_scale": args.guidance,
            "use_dynamic_cfg": args.dynamic_cfg,
            "text_encoder": args.text_encoder,
            "vae_tiling": args.vae_tiling,
            "tiny": args.tiny,
            "weights": "random",
        },
        "published_s": PUBLISHED_S,
        "rows": [],
        "errors": {},
    }

    def save() -> None:
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))

    for name in names:
        target = all_targets[name]
        if time.monotonic() > deadline:
            result["errors"][name] = "skipped: budget spent"
            continue
        try:
            row = run_target(target, device, args, deadline)
        except Exception as exc:  # keep the other target's numbers
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"[{name}] FAILED: {result['errors'][name]}", flush=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            save()
            continue
        result["rows"].append(row)
        save()
        print(table(result["rows"]), flush=True)

    result["table"] = table(result["rows"])
    save()
    print("\n" + result["table"])
    for name, err in result["errors"].items():
        print(f"{name}: {err}")
    return 0 if result["rows"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
