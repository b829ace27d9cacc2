"""How much a decode step costs as it carries more sequences: one model's step timed at several batch
sizes with mlx-lm's own caches, in one process. The figure batching rests on (issue 17): on hardware
bound by memory bandwidth a step of 8 costs little more than a step of 1.

    python -m cluster.bench.batch_probe MODEL_DIR [--float32] [--batches 1,2,4,8,16] [--json]

On Linux, run it with the system OpenBLAS to see the regime that resembles Apple GPUs:
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 OPENBLAS_NUM_THREADS=1 \\
        python -m cluster.bench.batch_probe MODEL_DIR --float32
The report names the BLAS library that answers MLX's calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import dequantize_model, load_model

from node.blas import blas_in_use

PROMPT_TOKENS = 64
WARMUP_STEPS, TIMED_STEPS = 2, 8


def step_ms(model, batch: int, vocab: int) -> float:
    """Median milliseconds of one decode step of `batch` sequences, each after a 64-token prompt."""
    prompt = mx.random.randint(0, vocab, (batch, PROMPT_TOKENS), key=mx.random.key(batch))
    cache = make_prompt_cache(model)
    logits = model(prompt, cache=cache)
    mx.eval(logits)
    token = mx.argmax(logits[:, -1:, :], axis=-1)
    times = []
    for i in range(WARMUP_STEPS + TIMED_STEPS):
        start = time.perf_counter()
        logits = model(token, cache=cache)
        token = mx.argmax(logits[:, -1:, :], axis=-1)
        mx.eval(token)
        if i >= WARMUP_STEPS:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def probe(model_dir: Path, batches: list[int], float32: bool) -> dict:
    model, config = load_model(model_dir)
    if float32:
        model = dequantize_model(model)
        model.set_dtype(mx.float32)
    vocab = int(config.get("vocab_size") or config.get("text_config", {}).get("vocab_size"))
    rows = []
    for batch in batches:
        ms = step_ms(model, batch, vocab)
        rows.append({"batch": batch, "step_ms": ms, "tokens_per_s": batch * 1000 / ms})
    for row in rows:
        row["speedup_vs_batch_1"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
    return {"model": str(model_dir), "float32": float32, "blas": blas_in_use(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--float32", action="store_true", help="dequantize the model to float32 first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if not batches or min(batches) < 1 or batches[0] != 1:
        parser.error("--batches: positive sizes, starting with 1 (the baseline)")
    report = probe(args.model_dir, batches, args.float32)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['model']} ({'float32' if args.float32 else 'as stored'}), BLAS: {report['blas']}")
    print(f"{'batch':>5} {'ms/step':>9} {'tokens/s':>9} {'x batch 1':>9}")
    for row in report["rows"]:
        print(f"{row['batch']:>5} {row['step_ms']:>9.1f} {row['tokens_per_s']:>9.1f} {row['speedup_vs_batch_1']:>9.2f}")


if __name__ == "__main__":
    main()
