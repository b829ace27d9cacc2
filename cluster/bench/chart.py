"""The load benchmark's chart: throughput, TTFT and inter-token latency against concurrency."""

from __future__ import annotations

from pathlib import Path


def write_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    levels = report["levels"]
    series = [("cluster", report["cluster"], "-o"), ("1 process", report["single_process"], "--o")]
    if "pinned" in report:
        series += [("cluster, pinned", report["pinned"]["cluster"], "-s"),
                   ("1 process, pinned", report["pinned"]["single_process"], "--s")]
    panels = [("tokens_per_s", "aggregate tokens/s"), ("ttft_ms_p50", "TTFT p50 (ms)"), ("itl_ms_p50", "ITL p50 (ms)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (key, label) in zip(axes, panels):
        for name, figures, style in series:
            ax.plot(levels, [figures[str(c)][key] for c in levels], style, label=name)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(label)
        ax.set_xticks(levels)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"boltpipe: {report['stages']} stages vs one mlx-lm process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
