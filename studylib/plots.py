"""Figures the pruning notebooks share: AVG % against the achieved ratio, and criteria at one ratio."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def ratio_curves(by_ratio: pd.DataFrame, per_benchmark: pd.DataFrame, title: str, chance_avg: float):
    """Left: AVG % against the achieved LM ratio (from the teacher at 0 %, 100 %), with its 95 % interval as
    a band (columns "AVG % lo" and "AVG % hi", when present) and a blind guesser's AVG % dashed; right: each benchmark's % of the teacher. `by_ratio` has columns "achieved LM ratio" and
    "AVG %"; `per_benchmark` has "ratio" (achieved), "benchmark" and "relative"."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    curve = pd.concat([pd.DataFrame([{"achieved LM ratio": 0.0, "AVG %": 100.0}]), by_ratio])
    sns.lineplot(data=curve, x="achieved LM ratio", y="AVG %", marker="o", ax=axes[0])
    if {"AVG % lo", "AVG % hi"} <= set(by_ratio):  # the 95 % paired-bootstrap interval over items
        axes[0].fill_between(by_ratio["achieved LM ratio"], by_ratio["AVG % lo"], by_ratio["AVG % hi"], alpha=0.2,
                             label="95 % interval")
    axes[0].axhline(0 if pd.isna(chance_avg) else chance_avg, ls="--", color="k", label="blind guesser")
    axes[0].set(title=title, ylim=(0, 110))
    axes[0].legend()
    sns.lineplot(data=per_benchmark, x="ratio", y="relative", hue="benchmark", marker="o", ax=axes[1])
    axes[1].set(title="per benchmark", xlabel="achieved LM ratio", ylabel="% of teacher")
    return fig, axes


def criteria_bars(ax, compare: pd.DataFrame, ratio: float, chance_avg: float) -> None:
    """AVG % of each criterion at one ratio (no recovery), with its 95 % interval (when present) and a blind
    guesser's AVG % dashed."""
    sns.barplot(data=compare, x="criterion", y="AVG %", ax=ax)
    if {"AVG % lo", "AVG % hi"} <= set(compare):  # the 95 % paired-bootstrap interval over items
        ax.errorbar(range(len(compare)), compare["AVG %"], fmt="none", ecolor="k", capsize=3,
                    yerr=[compare["AVG %"] - compare["AVG % lo"], compare["AVG % hi"] - compare["AVG %"]])
    ax.axhline(0 if pd.isna(chance_avg) else chance_avg, ls="--", color="k")
    ax.set(title=f"AVG % at ratio {ratio} (no recovery)", ylim=(0, 110))
    ax.tick_params(axis="x", rotation=30)
