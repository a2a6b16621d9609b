"""The run report's plots, and the video page's reward histogram, as SVG files that are identical across
rebuilds (no date, element ids from a fixed salt per plot), so that an unchanged run rewrites the same
bytes."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from vpo.core.io import atomic_write_bytes
from vpo.pages.jobs import SETS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The run report's plots, by name (each a --plot-NAME argument and a file), with the caption on the page.
PLOT_CAPTIONS = {
    "query_lengths": (
        "Words per query in each raw query file (grey; empty entries count as 0) and in the curated set "
        "(blue). Curation drops empty, too short or too long, symbol-heavy and duplicate queries; the "
        "table of drop reasons above says how many of each."
    ),
    "prompt_lengths": (
        "Words per prompt. SFT: the teacher's drafts (with status ok) vs the judge's refinements of the "
        "drafts it judged No. DPO: the SFT policy's K sampled candidates vs the judge's refinements. "
        "Refinements are the chosen side of text-level pairs."
    ),
    "pairs_by_source": (
        "DPO preference pairs by source: text (judge refinement ≻ sampled prompt) and video (checklist-"
        "reward winner ≻ loser, only for queries without a text pair)."
    ),
    "loss_curves": (
        "Training loss per logged step, read from LLaMA-Factory's trainer_log.jsonl (train.logging_steps). "
        "DPO loss starts near ln 2 ≈ 0.693 for the sigmoid loss, where policy and reference agree."
    ),
    "rounds": (
        "Per preference round and text-to-video target: the share of the round's sampled candidates the "
        "judge passed (verdict Yes; round 1's candidates come from the SFT checkpoint and are shared by "
        "every target), and the mean reward of the round's candidate videos under the run's score "
        "convention. Rising lines mean each round's checkpoint writes prompts the judge and the reward "
        "model prefer."
    ),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median(values: Sequence[int]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _histograms(ax: Any, series: Mapping[str, Sequence[int]], xlabel: str, colors: Sequence[str]) -> None:
    """Overlaid histograms on shared integer-aligned bins, n and median in the legend."""
    values = [v for vs in series.values() for v in vs]
    if not values:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#777")
        ax.set_xlabel(xlabel)
        return
    top = max(values) + 1
    width = max(1, -(-top // 30))  # at most ~30 bins, each a whole number of words
    bins = list(range(0, top + width, width))
    for (label, vs), color in zip(series.items(), colors, strict=False):
        if not vs:
            continue
        text = f"{label} (n={len(vs)}, median {_median(vs):g})"
        ax.hist(vs, bins=bins, alpha=0.35, color=color)
        # An outline on top keeps a series visible where a later one covers it.
        ax.hist(vs, bins=bins, histtype="step", color=color, linewidth=1.6, label=text)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    _integer_axes(ax)
    ax.legend(fontsize=8)


def _integer_axes(ax: Any, y: bool = True) -> None:
    """Whole-number ticks: words, counts and steps have no fractions."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


_COLORS = ("#777777", "#4477aa", "#ee6677", "#228833")


def plot_query_lengths(lengths: Mapping[str, Mapping[str, Sequence[int]]]) -> Figure:
    """One panel per query set: words per query in the raw file vs after curation."""
    plt = _pyplot()
    sets = list(lengths) or list(SETS)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.3), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        _histograms(ax, lengths.get(name, {}), "words per query", _COLORS)
        ax.set_title(f"{name.upper()} queries")
    fig.suptitle("Query length before and after curation")
    fig.tight_layout()
    return fig


def plot_prompt_lengths(groups: Mapping[str, Mapping[str, Sequence[int]]]) -> Figure:
    """One panel per phase: words per prompt of what was generated vs what the judge rewrote."""
    plt = _pyplot()
    names = list(groups)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.6 * max(1, len(names)), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        _histograms(ax, groups[name], "words per prompt", _COLORS[1:])
        ax.set_title(name)
    fig.suptitle("Prompt length: generated vs refined by the judge")
    fig.tight_layout()
    return fig


def plot_pairs_by_source(pairs: Sequence[Mapping[str, Any]], video_enabled: bool) -> Figure:
    plt = _pyplot()
    sources = ("text", "video")
    counts = [sum(1 for p in pairs if p.get("source") == s) for s in sources]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    bars = ax.bar(sources, counts, color=["#4477aa", "#ee6677"], width=0.6)
    ax.bar_label(bars, labels=[str(c) for c in counts])
    if not video_enabled:
        ax.text(1, max([*counts, 1]) * 0.1, "off", ha="center", color="#777")
    ax.set_ylabel("DPO pairs")
    ax.set_ylim(0, max([*counts, 1]) * 1.2)
    ax.set_title(f"{len(pairs)} preference pairs by source")
    fig.tight_layout()
    return fig


def plot_loss_curves(curves: Mapping[str, Sequence[tuple[float, float]] | None]) -> Figure:
    """One panel per training stage; a stage without a log says so in its panel."""
    plt = _pyplot()
    names = list(curves)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.6 * max(1, len(names)), 3.1), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        points = curves[name]
        ax.set_title(f"{name.upper() if name == 'sft' else name} training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if not points:
            ax.text(
                0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes, color="#777"
            )
            continue
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, color="#4477aa")
        _integer_axes(ax, y=False)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_rounds(
    pass_rates: Mapping[str, Mapping[int, float | None]], rewards: Mapping[str, Mapping[int, float | None]],
    convention: str,
) -> Figure:  # fmt: skip
    """Judge pass rate and mean video reward by round, one line per target."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    panels = ((axes[0], pass_rates, "judge pass rate"), (axes[1], rewards, f"mean reward ({convention})"))
    for ax, series, label in panels:
        for target, by_round in series.items():
            points = sorted((r, v) for r, v in by_round.items() if v is not None)
            ax.plot([r for r, _ in points], [v for _, v in points], marker="o", label=target)
        if not any(v is not None for by_round in series.values() for v in by_round.values()):
            ax.text(
                0.5, 0.5, "nothing scored", ha="center", va="center", transform=ax.transAxes, color="#777"
            )
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        _integer_axes(ax, y=False)
        ax.grid(alpha=0.3)
    if any(pass_rates.values()):
        axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_rewards(rewards: Sequence[Mapping[str, Any]]) -> Figure:
    """The video page's histogram: reward of every rendered candidate under both score conventions."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, convention in zip(axes, ("vpo_sum", "visionreward_mean"), strict=True):
        ax.hist([r[f"score_{convention}"] for r in rewards], bins=20, color="#4477aa")
        ax.set_xlabel(convention)
        ax.set_ylabel("videos")
    invalid = sum(1 for r in rewards if r["invalid_count"])
    fig.suptitle(f"Reward of {len(rewards)} candidate videos ({invalid} with invalid answers)")
    fig.tight_layout()
    return fig


def save_svg(fig: Figure, path: str | os.PathLike, salt: str) -> Markup:
    """Write the figure as SVG and return the markup to inline. A fixed salt per plot keeps the file
    identical across rebuilds and keeps element ids distinct between the plots inlined on one page."""
    import matplotlib

    buffer = io.StringIO()
    # Text stays text (searchable, small files) rather than glyph outlines.
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    _pyplot().close(fig)
    svg = buffer.getvalue()
    atomic_write_bytes(path, svg.encode("utf-8"))
    return inline_svg(svg)


def inline_svg(svg: str) -> Markup:
    """An SVG file's markup without its XML prolog and doctype, to place inside an HTML page (as is:
    matplotlib wrote it and escaped the text in it)."""
    start = svg.find("<svg")
    return Markup(svg[start:] if start >= 0 else "")
