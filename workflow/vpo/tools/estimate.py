"""`vpo estimate`: what the judge and teacher calls of a config will cost, before anything is sent.

Counts come from the query files (raw lines, capped by `curation.max_queries`; curation only removes
queries, so this is an upper bound). Each request's prompt is the real template rendered with the
set's average query, and a judged prompt as long as the generation's `max_new_tokens` allows; tokens
are characters / 4, the rule of thumb for English. Two figures per stage:

- first attempts: every item asked once, every prompt refined (the judge says No to all);
- worst case: also every parse retry (`max_parse_retries`), and every answer as long as `max_new_tokens`.

Only models in `prices` cost money; local models (hf, `serve`) are listed with their token counts.
The ledger's spending so far (results/state/ledger) is printed beside `budget_usd`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vpo.config.resolve import is_remote
from vpo.config.validate import ConfigError, load_config
from vpo.core.layout import CACHE_DIR, ledger_dir
from vpo.core.queries import read_raw_queries
from vpo.core.suites import suite_prompts
from vpo.core.templates import conversation, judge_conversation, load_template, refine_conversation
from vpo.llm.ledger import Price, read_ledger, spent_usd
from vpo.llm.ratelimit import CHARS_PER_TOKEN, estimate_tokens


@dataclass
class Line:
    stage: str
    phase: str
    model: str
    mode: str
    requests: int
    attempts: int  # requests including every parse retry
    prompt_tokens: int  # per request
    max_new_tokens: int
    price: Price | None

    def cost(self, worst: bool) -> float | None:
        if self.price is None:
            return None
        n = self.attempts if worst else self.requests
        completion = self.max_new_tokens if worst else self.max_new_tokens // 2
        return self.price.cost(n * self.prompt_tokens, n * completion, self.mode == "batch")


def _tokens(messages: list[dict[str, str]]) -> int:
    return estimate_tokens(sum(len(m["content"]) for m in messages), 0)


def _queries(config: dict[str, Any], set_name: str) -> tuple[int, str]:
    """(how many queries, a query of average length) of one set."""
    rows = [text for _, text in read_raw_queries(config["queries"][set_name])]
    cap = config["curation"]["max_queries"]
    rows = rows[:cap] if cap else rows
    mean = sum(len(q) for q in rows) // max(1, len(rows))
    return len(rows), "q" * mean


def estimate(config: dict[str, Any]) -> list[Line]:
    lines = []
    n_sft, query_sft = _queries(config, "sft")
    n_dpo, query_dpo = _queries(config, "dpo")
    k = config["sample"]["k"]

    def llm_of(name: str) -> tuple[str, str, Price | None]:
        entry = config["llms"][name]
        remote = is_remote(entry)
        price = config["prices"].get(entry["model"]) if remote else None
        if price is not None:
            price = Price(**price)
        label = entry["model"] if remote else f"{entry['model']} (local)"
        return label, entry["mode"] if remote else "local", price

    def add(
        stage: str, phase: str, n: int, messages: list[dict[str, str]], section: dict | None = None
    ) -> None:
        section = section or config[stage]
        name = section["llm"]
        if phase.startswith("dpo") and section.get("dpo_llm"):
            name = section["dpo_llm"]
        model, mode, price = llm_of(name)
        retries = section.get("max_parse_retries", 0)
        max_new = section["generation"]["max_new_tokens"]
        lines.append(Line(stage, phase, model, mode, n, n * (1 + retries), _tokens(messages), max_new, price))

    templates = {s: load_template(config[s]["template"]) for s in ("draft", "critique", "refine")}
    sample_tokens = config["sample"]["generation"]["max_new_tokens"]
    # Round 1's candidates are judged once for every target; later rounds' once per target.
    dpo_phases = [
        (f"dpo round {r}" + ("" if r == 1 else f" x{len(config['targets'])} targets"),
         n_dpo * k * (1 if r == 1 else len(config["targets"])), query_dpo, sample_tokens)
        for r in range(1, config["rounds"]["count"] + 1)
    ]  # fmt: skip
    for phase, n, query, prompt_tokens in (
        ("sft", n_sft, query_sft, config["draft"]["generation"]["max_new_tokens"]),
        *dpo_phases,
    ):
        prompt = "p" * (prompt_tokens * CHARS_PER_TOKEN)
        critique = "c" * (config["critique"]["generation"]["max_new_tokens"] * CHARS_PER_TOKEN)
        if phase == "sft":
            add("draft", phase, n, conversation(templates["draft"], query=query))
        add("critique", phase, n, judge_conversation(templates["critique"], query, prompt))
        refine = refine_conversation(templates["critique"], templates["refine"], query, prompt, critique)
        add("refine", phase, n, refine)
    if config.get("eval", {}).get("enabled"):
        _add_eval_lines(config, add)
    return lines


def _add_eval_lines(config: dict[str, Any], add: Callable[..., None]) -> None:
    """The evaluation's LLM calls: the few-shot rewriter, endpoint methods, and the judge on every method,
    on the held-out files' queries and the benchmark suites' prompts."""
    section = config["eval"]
    files = [section["queries"], section["unsafe_queries"]]
    rows = [text for path in files if path for _, text in read_raw_queries(path)]
    rows += [p.text for name in section["suites"] for p in suite_prompts(name, section["suite_limit"])]
    n = len(rows)
    query = "q" * (sum(len(q) for q in rows) // max(1, n))
    judge = {**section["judge"], "llm": section["judge"]["llm"] or config["critique"]["llm"]}
    policy = load_template(section["template"])
    if "fewshot" in section["methods"]:
        fewshot = {**section["fewshot"], "llm": section["fewshot"]["llm"] or config["critique"]["llm"]}
        add("eval_fewshot", "eval", n, conversation(load_template(fewshot["template"]), query=query), fewshot)
    for name, extra in section["extra_methods"].items():
        if "llm" in extra:
            method = {"llm": extra["llm"], "generation": section["generation"]}
            add(f"eval_{name}", "eval", n, conversation(policy, query=query), method)
    checkpoints = config["rounds"]["count"] * len(config["targets"])  # one DPO method per round and target
    builtin = {"original", *section["methods"]}
    methods = (
        len(builtin - {"dpo"}) + (checkpoints if "dpo" in builtin else 0) + len(section["extra_methods"])
    )
    prompt = "p" * (section["generation"]["max_new_tokens"] * CHARS_PER_TOKEN)
    judged = judge_conversation(load_template(judge["template"]), query, prompt)
    add("eval_judge", "eval", n * methods, judged, judge)


@dataclass
class GpuLine:
    stage: str
    target: str
    videos: int
    seconds_per_video: float | None

    @property
    def hours(self) -> float | None:
        return None if self.seconds_per_video is None else self.videos * self.seconds_per_video / 3600


def _eval_prompts(config: dict[str, Any]) -> tuple[int, int]:
    """(held-out queries, benchmark prompts) of the evaluation."""
    section = config["eval"]
    files = [f for f in (section["queries"], section["unsafe_queries"]) if f]
    held_out = sum(len(read_raw_queries(f)) for f in files)
    return held_out, sum(len(suite_prompts(s, section["suite_limit"])) for s in section["suites"])


def gpu_estimate(config: dict[str, Any]) -> list[GpuLine]:
    """Videos rendered and scored per stage and target, priced at each target's `gpu_seconds_per_video`."""
    if not config["pairs"]["video"]:
        return []
    n_dpo, _ = _queries(config, "dpo")
    lines = []
    evaluation = config.get("eval", {}).get("enabled")
    if evaluation:
        section = config["eval"]
        held_out, benchmark = _eval_prompts(config)
        scored = held_out * section["videos_per_prompt"]  # the checklist skips the benchmark prompts' videos
        rendered = scored + benchmark * section["vbench"]["videos_per_prompt"]
        shared = len({"original", *section["methods"]} - {"dpo"}) + len(section["extra_methods"])
        own = config["rounds"]["count"] if "dpo" in section["methods"] else 0
    for name, target in config["targets"].items():
        t2v, reward = target["t2v"], target["reward"]
        videos = config["rounds"]["count"] * n_dpo * config["sample"]["k"] * t2v["videos_per_prompt"]
        stages = [("generate_videos", videos, t2v), ("score_videos", videos, reward)]
        if evaluation:
            methods = shared + own
            stages += [("eval_videos", methods * rendered, t2v), ("eval_rewards", methods * scored, reward)]
        lines += [GpuLine(stage, name, n, part.get("gpu_seconds_per_video")) for stage, n, part in stages]
    return lines


def format_gpu_table(lines: list[GpuLine]) -> str:
    header = ["stage", "target", "videos", "GPU s/video", "GPU-hours"]
    rows = [
        [g.stage, g.target, str(g.videos), "-" if g.seconds_per_video is None else f"{g.seconds_per_video:g}",
         "-" if g.hours is None else f"{g.hours:,.1f}"]
        for g in lines
    ]  # fmt: skip
    priced = [g.hours for g in lines if g.hours is not None]
    rows.append(
        ["total", "", str(sum(g.videos for g in lines)), "", f"{sum(priced):,.1f}" if priced else "-"]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    out.insert(1, "-+-".join("-" * w for w in widths))
    out.append("")
    out.append(
        "GPU time of the video stages, all rounds: each target's t2v/reward `gpu_seconds_per_video` times "
        "its videos (upper bound: curation only removes queries). '-': not set in the config. LLM stages on "
        "local GPUs and training are not priced here."
    )
    return "\n".join(out)


def format_table(lines: list[Line], budget: float | None, spent: float) -> str:
    def usd(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    header = ["stage", "phase", "model", "mode", "requests", "worst requests", "prompt tok/req",
              "max out tok", "USD first attempts", "USD worst case"]  # fmt: skip
    rows = [
        [line.stage, line.phase, line.model, line.mode, str(line.requests), str(line.attempts),
         str(line.prompt_tokens), str(line.max_new_tokens), usd(line.cost(False)), usd(line.cost(True))]
        for line in lines
    ]  # fmt: skip
    first = sum(line.cost(False) or 0.0 for line in lines)
    worst = sum(line.cost(True) or 0.0 for line in lines)
    requests = sum(line.requests for line in lines)
    attempts = sum(line.attempts for line in lines)
    rows.append(["total", "", "", "", str(requests), str(attempts), "", "", usd(first), usd(worst)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    out.insert(1, "-+-".join("-" * w for w in widths))
    out.append("")
    out.append("first attempts assumes answers half as long as max_new_tokens; worst case, as long.")
    out.append(f"spent so far (ledger): {spent:,.4f} USD; budget_usd: {usd(budget)}")
    if budget is not None and spent + worst > budget:
        out.append("the worst case exceeds budget_usd: the run stops when the next request could cross it")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vpo estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "config", nargs="*", default=["config/config.yaml"],
        help="config file, or layered files (later override earlier, as with snakemake --configfile a b)",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", default=CACHE_DIR, help="item cache root; the ledger is in state/ beside it"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(*args.config)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    ledger = ledger_dir(args.cache_dir)
    spent = spent_usd(ledger) if ledger.exists() else 0.0
    sys.stdout.write(format_table(estimate(config), config["budget_usd"], spent) + "\n")
    gpu = gpu_estimate(config)
    if gpu:
        sys.stdout.write("\n" + format_gpu_table(gpu) + "\n")
    if ledger.exists():
        sys.stdout.write("\n" + format_spending(read_ledger(ledger)) + "\n")


def format_spending(entries: list[dict[str, Any]]) -> str:
    """The ledger so far, per stage, model and mode: answers, tokens and cost."""
    totals: dict[tuple[str, str, str], list[float]] = {}
    for e in entries:
        row = totals.setdefault((e["stage"], e["model"], e["mode"]), [0, 0, 0, 0.0])
        row[0] += 1
        row[1] += e["prompt_tokens"]
        row[2] += e["completion_tokens"]
        row[3] += e["cost_usd"]
    lines = [
        "spent so far, from the ledger:",
        "stage | model | mode | answers | prompt tokens | completion tokens | USD",
    ]
    for (stage, model, mode), (n, prompt, completion, usd) in sorted(totals.items()):
        lines.append(f"{stage} | {model} | {mode} | {n:.0f} | {prompt:.0f} | {completion:.0f} | {usd:,.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
