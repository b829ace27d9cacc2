"""The benchmark's baseline: mlx-lm generating in one process on the same model.

    python -m cluster.bench.baseline MODEL_DIR --prompt-tokens 512 --gen-tokens 64

Prints one JSON object: prefill and decode tokens/s, and the BLAS library that answered MLX.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

from cluster.bench.prompt import bench_prompt_ids
from node.blas import blas_in_use


def measure(model_dir: Path, prompt_tokens: int, gen_tokens: int, prefill_chunk: int) -> dict:
    model, _ = load_model(model_dir)
    from cluster.pipeline.tokenizer import PromptTokenizer

    tokenizer = PromptTokenizer(model_dir)
    long_prompt = bench_prompt_ids(tokenizer, prompt_tokens)
    short_prompt = bench_prompt_ids(tokenizer, 16)
    # Warm-up: first calls compile and allocate.
    for _ in generate_step(mx.array(short_prompt), model, max_tokens=4, prefill_step_size=prefill_chunk):
        pass
    started = time.perf_counter()
    for _ in generate_step(mx.array(long_prompt), model, max_tokens=1, prefill_step_size=prefill_chunk):
        break
    prefill_s = time.perf_counter() - started
    stamps = []
    for _ in generate_step(mx.array(short_prompt), model, max_tokens=gen_tokens, prefill_step_size=prefill_chunk):
        stamps.append(time.perf_counter())
    decode_s = stamps[-1] - stamps[0]
    return {
        "prefill_tokens": len(long_prompt),
        "prefill_s": prefill_s,
        "prefill_tps": len(long_prompt) / prefill_s,
        "decode_tokens": len(stamps) - 1,
        "decode_s": decode_s,
        "decode_tps": (len(stamps) - 1) / decode_s,
        "blas": blas_in_use(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--prefill-chunk", type=int, default=512)
    args = parser.parse_args()
    print(json.dumps(measure(args.model_dir, args.prompt_tokens, args.gen_tokens, args.prefill_chunk)))


if __name__ == "__main__":
    main()
