"""Convert a model's layer slices to Core ML and report the figures: conversion time, package
size, and (with --check) the MIL program's largest error against MLX on the same slice, executed
with the interpreter (Linux) for a prefill chunk followed by decode steps.

    python -m node.coreml.measure MODEL_DIR [--slices 0:15,15:30] [--context 512] [--chunk 64] [--check]

A measurement, not a test: it converts into a fresh temporary cache every time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from node.coreml.package import convert_slice
from node.coreml.settings import AneSettings
from node.model_config import read_model_info


def _slices(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        start, _, end = part.partition(":")
        out.append((int(start), int(end)))
    return out


def _check(model_dir: Path, converted, prompt: int, steps: int) -> float:
    """Largest error, over the largest magnitude of each step, of the slice run by the interpreter
    against mlx-lm's layers on real hidden states of the model."""
    import mlx.core as mx
    from mlx_lm.models.base import create_attention_mask
    from mlx_lm.models.cache import KVCache
    from mlx_lm.utils import load_model

    from node.coreml.executors import InterpreterExecutor
    from node.coreml.stage import AneStage

    model, _ = load_model(model_dir)
    layers = model.model.layers
    rng = np.random.default_rng(0)
    ids = mx.array(rng.integers(100, 20000, size=(1, prompt + steps)))
    h = model.model.embed_tokens(ids)
    mask = create_attention_mask(h, None)
    for layer in layers[:converted.start]:
        h = layer(h, mask, cache=None)
    caches = [KVCache() for _ in range(converted.start, converted.end)]
    stage = AneStage(_NoEnds(converted), converted, InterpreterExecutor(converted))
    session = stage.make_cache()
    worst = 0.0
    for a, b in [(0, prompt)] + [(prompt + i, prompt + i + 1) for i in range(steps)]:
        x = h[:, a:b]
        m = create_attention_mask(x, caches[0])
        want = x
        for layer, cache in zip(layers[converted.start:converted.end], caches):
            want = layer(want, m, cache=cache)
        got = stage.run_layers(x.astype(mx.float32), session)
        want = np.array(want.astype(mx.float32))
        worst = max(worst, float(np.abs(np.array(got) - want).max() / np.abs(want).max()))
    return worst


class _NoEnds:
    """Stands in for the MLX embedding / head a middle stage does not have."""

    def __init__(self, converted):
        from node.stage_model import LayerRange

        self.layer_range = LayerRange(converted.start, converted.end)
        self.is_first = self.is_last = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.coreml.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--slices", default=None, help="layer ranges START:END,... (default: the whole model)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--check", action="store_true", help="also run each slice against MLX (interpreter)")
    parser.add_argument("--prompt", type=int, default=24, help="prefill tokens of the check")
    parser.add_argument("--steps", type=int, default=4, help="decode steps of the check")
    args = parser.parse_args(argv)
    info = read_model_info(args.model_dir)
    slices = _slices(args.slices) if args.slices else [(0, info.num_layers)]
    settings = AneSettings(context_length=args.context, prefill_chunk=args.chunk)
    print(f"{info.path.name}: context {args.context}, prefill chunk {args.chunk}")
    with tempfile.TemporaryDirectory() as cache:
        for start, end in slices:
            with tqdm(total=1, desc=f"convert [{start},{end})", file=sys.stderr, leave=False) as bar:
                def progress(phase: str, done: int, total: int) -> None:
                    if phase == "convert":
                        bar.total, bar.n = max(total, 1), done
                        bar.refresh()
                began = time.monotonic()
                converted = convert_slice(info.path, info.config, start, end, settings, cache_dir=Path(cache),
                                          progress=progress)
                seconds = time.monotonic() - began
            line = (f"layers [{start},{end}): converted in {seconds:.1f} s, {len(converted.chunks)} package(s), "
                    f"{converted.package_bytes() / 1e6:.1f} MB")
            if args.check:
                line += f", max error vs MLX {_check(info.path, converted, args.prompt, args.steps):.5f} of the largest magnitude"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
