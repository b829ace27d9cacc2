"""The load benchmark's baseline: mlx-lm in one process serving several streams at once with
its own BatchGenerator (how mlx-lm's server batches), optionally pinned to chosen cores.

    python -m cluster.bench.baseline_load MODEL_DIR --concurrency 1,2,4 --prompt-tokens 64 --gen-tokens 32 [--cpus 0]

Prints one JSON object: {"blas": the BLAS library that answered MLX, "levels": {concurrency: figures}}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from cluster.bench.load_stats import StreamTimes, summarize
from node.blas import blas_in_use


def run_level(model, prompts: list[list[int]], gen_tokens: int, prefill_chunk: int) -> dict:
    from mlx_lm.generate import BatchGenerator

    generator = BatchGenerator(model, max_tokens=gen_tokens, stop_tokens=[], prefill_step_size=prefill_chunk,
                               completion_batch_size=max(1, len(prompts)), prefill_batch_size=max(1, len(prompts)))
    started = time.perf_counter()
    uids = generator.insert(prompts, max_tokens=[gen_tokens] * len(prompts))
    times = {uid: StreamTimes(started, []) for uid in uids}
    done = 0
    while done < len(uids):
        _, responses = generator.next()
        now = time.perf_counter()
        for r in responses:
            times[r.uid].tokens.append(now)
            if r.finish_reason is not None:
                done += 1
    if hasattr(generator, "close"):
        generator.close()
    return summarize(list(times.values()))


def measure(model_dir: Path, levels: list[int], prompt_tokens: int, gen_tokens: int, prefill_chunk: int) -> dict:
    from mlx_lm.utils import load_model

    from cluster.bench.load_prompts import load_prompts
    from cluster.pipeline.tokenizer import PromptTokenizer

    model, _ = load_model(model_dir)
    tokenizer = PromptTokenizer(model_dir)
    run_level(model, load_prompts(tokenizer, 1, 8), 4, prefill_chunk)  # warm-up
    return {str(c): run_level(model, load_prompts(tokenizer, c, prompt_tokens), gen_tokens, prefill_chunk)
            for c in levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--prefill-chunk", type=int, default=512)
    parser.add_argument("--cpus", default="", help="comma-separated cores to pin this process to")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    levels = [int(c) for c in args.concurrency.split(",")]
    figures = measure(args.model_dir, levels, args.prompt_tokens, args.gen_tokens, args.prefill_chunk)
    print(json.dumps({"blas": blas_in_use(), "levels": figures}))


if __name__ == "__main__":
    main()
