"""`cluster bench --concurrency`: several streams at once through the cluster and through one
mlx-lm process, at each concurrency level; optionally with every process pinned to its own core."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cluster.bench.bench_blas import baseline_env, blas_summary
from cluster.bench.load_prompts import load_prompts
from cluster.bench.load_stats import StreamTimes, summarize
from cluster.launch.bring_up import RunningCluster
from cluster.pipeline.engine import GenerationParams


async def _stream(cluster: RunningCluster, prompt: list[int], gen_tokens: int) -> StreamTimes:
    times = StreamTimes(time.perf_counter(), [])
    async for _ in cluster.engine.tokens(prompt, GenerationParams(max_tokens=gen_tokens, ignore_eos=True)):
        times.tokens.append(time.perf_counter())
    return times


async def measure_cluster_load(cluster: RunningCluster, levels: list[int], prompt_tokens: int, gen_tokens: int) -> dict:
    tokenizer = cluster.engine.tokenizer
    await _stream(cluster, load_prompts(tokenizer, 1, 8)[0], 4)  # warm-up
    figures = {}
    for level in levels:
        prompts = load_prompts(tokenizer, level, prompt_tokens)
        streams = await asyncio.gather(*(_stream(cluster, p, gen_tokens) for p in prompts))
        figures[str(level)] = summarize(list(streams))
    return figures


def measure_baseline_load(model_dir: Path, levels: list[int], prompt_tokens: int, gen_tokens: int,
                          prefill_chunk: int, cpus: list[int] | None = None) -> tuple[dict, str]:
    """The baseline in its own process, on the BLAS a worker here uses (one thread): its figures by
    concurrency, and the BLAS library that answered it."""
    cmd = [sys.executable, "-m", "cluster.bench.baseline_load", str(model_dir), "--concurrency", ",".join(map(str, levels)),
           "--prompt-tokens", str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--prefill-chunk", str(prefill_chunk)]
    if cpus:
        cmd += ["--cpus", ",".join(map(str, cpus))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=baseline_env())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["levels"], result["blas"]


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pins every thread of a running process (affinity is per thread on Linux; threads
    started later inherit it from the thread that starts them)."""
    tasks = Path(f"/proc/{pid}/task")
    for tid in (int(t.name) for t in tasks.iterdir()) if tasks.is_dir() else [pid]:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


def pin_cluster(cluster: RunningCluster) -> dict[str, int]:
    """Stage i on core i (mod the cores there are); returns node -> core."""
    cores = sorted(os.sched_getaffinity(0))
    placement = {}
    for i, worker in enumerate(cluster.local_workers):
        core = cores[i % len(cores)]
        pin_process(worker.pid, {core})
        placement[worker.name] = core
    return placement


RATIO_LEVEL = 8  # issue 17: what 8 streams at once give against 1, and against one process


def batching_ratios(levels: list[int], cluster: dict, single: dict) -> dict:
    """Cluster tokens/s at concurrency 8 (the highest level, without 8) over the cluster's at 1, and
    over the one-process baseline's at the same level."""
    level = RATIO_LEVEL if RATIO_LEVEL in levels else max(levels)
    tps = cluster[str(level)]["tokens_per_s"]
    return {
        "level": level,
        "cluster_vs_cluster_at_1": tps / cluster["1"]["tokens_per_s"] if "1" in cluster else None,
        "cluster_vs_single_process": tps / single[str(level)]["tokens_per_s"],
    }


def load_report(levels: list[int], cluster: dict, single: dict, stages: int, pinned: dict | None, *,
                dtype: str = "", blas: dict | None = None) -> dict:
    report: dict = {"stages": stages, "levels": levels, "dtype": dtype, "blas": blas or {}, "cluster": cluster,
                    "single_process": single, "ratios": batching_ratios(levels, cluster, single)}
    if pinned:
        base = pinned["single_process"]["1"]["tokens_per_s"]
        pinned["throughput_vs_pinned_single_stream"] = {
            level: figures["tokens_per_s"] / base for level, figures in pinned["cluster"].items()
        }
        pinned["ratios"] = batching_ratios(levels, pinned["cluster"], pinned["single_process"])
        report["pinned"] = pinned
    one = cluster.get("1"), single.get("1")
    if all(one):
        report["ttft_p50_ratio_at_1"] = one[0]["ttft_ms_p50"] / one[1]["ttft_ms_p50"]
    return report


def format_load_table(report: dict) -> str:
    lines = []

    def table(title: str, cluster: dict, single: dict, extra: dict | None, ratios: dict) -> None:
        lines.append(title)
        lines.append(f"{'conc':>4}  {'side':<14} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} {'ITL p95':>8}")
        for level in report["levels"]:
            for side, figures in (("cluster", cluster[str(level)]), ("1 process", single[str(level)])):
                lines.append(f"{level:>4}  {side:<14} {figures['tokens_per_s']:>8.2f} {figures['ttft_ms_p50']:>7.0f}ms "
                             f"{figures['ttft_ms_p95']:>7.0f}ms {figures['itl_ms_p50']:>6.0f}ms {figures['itl_ms_p95']:>6.0f}ms")
            if extra:
                lines.append(f"{'':>4}  cluster / pinned single stream: {extra[str(level)]:.2f}x")
        at, vs_one = ratios["level"], ratios["cluster_vs_cluster_at_1"]
        lines.append(f"cluster at {at} / cluster at 1: " + (f"{vs_one:.2f}x" if vs_one is not None else "-")
                     + f"; cluster at {at} / one process at {at}: {ratios['cluster_vs_single_process']:.2f}x")
        lines.append("")

    lines.append(f"model: {report.get('dtype') or '?'}; {blas_summary(report.get('blas', {}))}")
    lines.append("prefix cache and speculation off in the cluster, so that every level measures batching alone")
    lines.append("")
    table(f"unpinned: cluster of {report['stages']} stages vs mlx-lm in one process (BatchGenerator)",
          report["cluster"], report["single_process"], None, report["ratios"])
    if "pinned" in report:
        p = report["pinned"]
        cores = ", ".join(f"{n}->cpu{c}" for n, c in p["placement"].items())
        table(f"pinned ({cores}; one process on cpu{p['baseline_cpu']})", p["cluster"], p["single_process"],
              p["throughput_vs_pinned_single_stream"], p["ratios"])
    if "ttft_p50_ratio_at_1" in report:
        lines.append(f"TTFT p50 at concurrency 1, cluster / one process: {report['ttft_p50_ratio_at_1']:.3f}")
    return "\n".join(lines)
