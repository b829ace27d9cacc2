"""`cluster bench`: the cluster against one mlx-lm process on the same model, in one run.

Figures: prefill and decode tokens/s of both, their ratios, and the per-hop overhead
(a decode step's time at the coordinator minus the stages' compute time, divided by
the hops: coordinator -> stage 0 -> ... -> last stage -> coordinator).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from cluster.bench.bench_blas import baseline_env, blas_summary
from cluster.bench.prompt import bench_prompt_ids
from cluster.launch.bring_up import RunningCluster
from cluster.pipeline.engine import GenerationParams, TokenStep


@dataclass
class ClusterFigures:
    stages: int
    prefill_tokens: int
    prefill_s: float
    prefill_tps: float
    decode_tokens: int
    decode_s: float
    decode_tps: float
    hop_overhead_ms_median: float
    hop_overhead_ms_mean: float
    compute_ms_per_token: float
    step_ms_per_token: float


async def _run(cluster: RunningCluster, prompt: list[int], max_tokens: int) -> list[TokenStep]:
    params = GenerationParams(max_tokens=max_tokens, ignore_eos=True)
    return [step async for step in cluster.engine.tokens(prompt, params)]


async def measure_cluster(cluster: RunningCluster, prompt_tokens: int, gen_tokens: int) -> ClusterFigures:
    tokenizer = cluster.engine.tokenizer
    long_prompt = bench_prompt_ids(tokenizer, prompt_tokens)
    short_prompt = bench_prompt_ids(tokenizer, 16)
    await _run(cluster, short_prompt, 4)  # warm-up, as the baseline does
    started = time.perf_counter()
    await _run(cluster, long_prompt, 1)
    prefill_s = time.perf_counter() - started
    steps = await _run(cluster, short_prompt, gen_tokens)
    decode = steps[1:]  # the first step also finishes the prompt
    decode_s = (decode[-1].received_ns - steps[0].received_ns) / 1e9
    hops = len(cluster.plan) + 1
    overheads = [(s.received_ns - s.sent_ns - s.compute_ns) / hops / 1e6 for s in decode]
    return ClusterFigures(
        stages=len(cluster.plan),
        prefill_tokens=len(long_prompt),
        prefill_s=prefill_s,
        prefill_tps=len(long_prompt) / prefill_s,
        decode_tokens=len(decode),
        decode_s=decode_s,
        decode_tps=len(decode) / decode_s,
        hop_overhead_ms_median=statistics.median(overheads),
        hop_overhead_ms_mean=statistics.fmean(overheads),
        compute_ms_per_token=statistics.fmean(s.compute_ns for s in decode) / 1e6,
        step_ms_per_token=statistics.fmean(s.received_ns - s.sent_ns for s in decode) / 1e6,
    )


def measure_baseline(model_dir, prompt_tokens: int, gen_tokens: int, prefill_chunk: int) -> dict:
    """mlx-lm in its own process, so neither side shares an interpreter with the other (on the BLAS
    a worker here uses, one thread: bench_blas.py)."""
    out = subprocess.run(
        [sys.executable, "-m", "cluster.bench.baseline", str(model_dir), "--prompt-tokens", str(prompt_tokens),
         "--gen-tokens", str(gen_tokens), "--prefill-chunk", str(prefill_chunk)],
        check=True, capture_output=True, text=True, env=baseline_env(),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(cluster: ClusterFigures, baseline: dict, *, dtype: str = "", blas: dict | None = None) -> dict:
    return {
        "cluster": asdict(cluster),
        "single_process": baseline,
        "decode_ratio": cluster.decode_tps / baseline["decode_tps"],
        "prefill_ratio": cluster.prefill_tps / baseline["prefill_tps"],
        "hop_overhead_ms": cluster.hop_overhead_ms_median,
        "dtype": dtype,
        "blas": {"cluster": dict(blas or {}), "single_process": baseline.get("blas", "not reported")},
    }


def format_table(result: dict) -> str:
    c, b = result["cluster"], result["single_process"]
    rows = [
        ("", f"cluster ({c['stages']} stages)", "mlx-lm, 1 process", "ratio"),
        (f"prefill tok/s ({c['prefill_tokens']} tokens)", f"{c['prefill_tps']:.1f}", f"{b['prefill_tps']:.1f}",
         f"{result['prefill_ratio']:.3f}"),
        (f"decode tok/s ({c['decode_tokens']} tokens)", f"{c['decode_tps']:.2f}", f"{b['decode_tps']:.2f}",
         f"{result['decode_ratio']:.3f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.append(
        f"per-hop overhead: {c['hop_overhead_ms_median']:.3f} ms median, {c['hop_overhead_ms_mean']:.3f} ms mean "
        f"({c['stages'] + 1} hops; step {c['step_ms_per_token']:.2f} ms, compute {c['compute_ms_per_token']:.2f} ms per token)"
    )
    lines.append(f"model: {result.get('dtype') or '?'}; {blas_summary(result.get('blas', {}))}")
    return "\n".join(lines)
