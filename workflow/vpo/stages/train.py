"""Stages `train_sft` / `train_dpo`: a LLaMA-Factory YAML generated from config, run by `llamafactory-cli`.

LoRA runs are merged (`llamafactory-cli export`) so that every stage hands the next a full checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from vpo.core.stage import job_report, setup_logging
from vpo.models.provision import offline_hub_env

log = logging.getLogger(__name__)


def training_yaml(
    stage: str,
    model: str,
    dataset_dir: str,
    dataset: str,
    out: str,
    train: dict[str, Any],
    seed: int,
    ref_model: str | None = None,
) -> dict[str, Any]:
    """The LLaMA-Factory arguments for one run; `train` is a validated `train_sft`/`train_dpo` section.
    DPO's frozen reference is a copy of `model` unless `ref_model` names another checkpoint."""
    args: dict[str, Any] = {
        "model_name_or_path": model,
        "stage": stage,
        "do_train": True,
        "finetuning_type": train["finetuning_type"],
        "dataset_dir": dataset_dir,
        "dataset": dataset,
        "template": train["template"],
        "cutoff_len": train["cutoff_len"],
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": out,
        "overwrite_output_dir": True,
        "logging_steps": train["logging_steps"],
        "save_strategy": "no",
        "plot_loss": True,
        "report_to": "none",
        "per_device_train_batch_size": train["per_device_train_batch_size"],
        "gradient_accumulation_steps": train["gradient_accumulation_steps"],
        "learning_rate": train["learning_rate"],
        "num_train_epochs": train["num_train_epochs"],
        "lr_scheduler_type": train["lr_scheduler_type"],
        "warmup_ratio": train["warmup_ratio"],
        "seed": seed,
        "data_seed": seed,
    }
    if train["max_steps"] is not None:
        args["max_steps"] = train["max_steps"]
    if train["precision"] == "bf16":
        args["bf16"] = True
    elif train["precision"] == "fp16":
        args["fp16"] = True
    if train["finetuning_type"] == "lora":
        args.update(lora_rank=train["lora_rank"], lora_target="all")
    if train.get("deepspeed"):
        args["deepspeed"] = train["deepspeed"]
    if stage == "dpo":
        args.update(pref_beta=train["pref_beta"], pref_loss=train["pref_loss"])
        if ref_model and ref_model != model:
            args["ref_model"] = ref_model
    return args


def run_cli(command: str, config_path: Path, threads: int | None) -> None:
    env = offline_hub_env()  # LLaMA-Factory loads the snapshot folder; the hub is never contacted
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    exe = shutil.which("llamafactory-cli") or str(Path(sys.executable).with_name("llamafactory-cli"))
    log.info("running %s %s %s", exe, command, config_path)
    subprocess.run([exe, command, str(config_path)], check=True, env=env)


def train(
    stage: str,
    model: str,
    dataset_dir: str,
    dataset: str,
    out: Path,
    train_cfg: dict[str, Any],
    seed: int,
    threads: int | None,
    ref_model: str | None = None,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    lora = train_cfg["finetuning_type"] == "lora"
    run_dir = out / "adapter" if lora else out
    args = training_yaml(stage, model, dataset_dir, dataset, str(run_dir), train_cfg, seed, ref_model)
    config_path = out / f"llamafactory_{stage}.yaml"
    config_path.write_text(yaml.safe_dump(args, sort_keys=False))
    run_cli("train", config_path, threads)
    if lora:
        export = {
            "model_name_or_path": model,
            "adapter_name_or_path": str(run_dir),
            "template": train_cfg["template"],
            "finetuning_type": "lora",
            "export_dir": str(out),
            "export_size": 5,
            "export_device": "cpu",
            "export_legacy_format": False,
        }
        export_path = out / "llamafactory_export.yaml"
        export_path.write_text(yaml.safe_dump(export, sort_keys=False))
        run_cli("export", export_path, threads)
    if not any(out.glob("*.safetensors")):
        raise RuntimeError(f"training finished but {out} holds no *.safetensors weights")
    results = json.loads((run_dir / "train_results.json").read_text())
    return results


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vpo.stages.train", description=__doc__)
    p.add_argument("--stage", required=True, choices=["sft", "dpo"])
    p.add_argument("--model", required=True, help="starting checkpoint (folder or hub id)")
    p.add_argument(
        "--ref-model", default=None, help="DPO: the frozen reference checkpoint (default: a copy of --model)"
    )
    p.add_argument("--dataset-dir", required=True, help="folder with dataset_info.json")
    p.add_argument("--dataset", required=True, help="dataset name in dataset_info.json")
    p.add_argument(
        "--train", type=json.loads, required=True, help="train_sft/train_dpo config section as JSON"
    )
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="output checkpoint folder")
    p.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = make_parser().parse_args(argv)
    report = job_report(f"train_{args.stage}", args)
    report.add_inputs(Path(args.dataset_dir).glob("*.json"))
    report.add_models([args.model, *([args.ref_model] if args.ref_model else [])])
    results = train(
        args.stage,
        args.model,
        args.dataset_dir,
        args.dataset,
        Path(args.out),
        args.train,
        args.seed,
        args.threads,
        args.ref_model,
    )
    report.counts = results
    log_file = (
        Path(args.out) / ("adapter" if args.train["finetuning_type"] == "lora" else "") / "trainer_log.jsonl"
    )
    if log_file.exists():
        report.extra["loss_curve"] = [json.loads(line) for line in log_file.read_text().splitlines() if line]
    report.write(args.report)
    log.info("train_%s: %s", args.stage, results)


if __name__ == "__main__":
    main()
