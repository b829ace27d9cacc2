"""`cluster bench INVENTORY`: cluster vs one mlx-lm process, measured in the same run.

Without --concurrency: one stream, decode and prefill tokens/s and the per-hop overhead.
With --concurrency 1,2,4,8: several streams at once at each level (aggregate tokens/s, TTFT,
inter-token latency), optionally also with every process pinned to its own core; writes
JSON and a PNG chart.
With --speculative: one stream, speculation on against off in the same cluster, by prompt class
(cluster/bench/speculative.py).
With --chat-turns N: one chat behind a long system prompt, time to first token of each turn with the
prefix cache on and off (cluster/bench/chat_turns.py).
With --structured: inter-token latency of answers held to a JSON schema against free ones
(cluster/bench/structured.py).
With --float32: both sides serve a float32 copy of the model (made once, cluster/bench/float32_model.py),
so every matrix product goes through the BLAS. Both sides use the same BLAS (bench_blas.py), one
OpenBLAS thread per process, and the report names it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

from cluster.bench.bench_blas import cluster_blas, one_thread_each
from cluster.bench.chart import write_chart
from cluster.bench.float32_model import float32_copy, model_dtype
from cluster.bench.chat_turns import format_chat_turns, measure_chat_turns
from cluster.bench.speculative import format_speculative, measure_speculative
from cluster.bench.structured import format_structured, measure_structured
from cluster.bench.load import format_load_table, load_report, measure_baseline_load, measure_cluster_load, pin_cluster
from cluster.bench.versus_mlx_lm import format_table, measure_baseline, measure_cluster, report
from cluster.inventory import Inventory, ModelSpec, load_inventory
from cluster.launch.bring_up import RunningCluster, bring_up
from cluster.launch.model_source import resolve_model, served_model_name
from cluster.pipeline.speculation import plan_speculation
from cluster.pipeline.tokenizer import PromptTokenizer


def _levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4,8, got {text!r}") from None
    if not levels or levels[0] < 1 or levels[-1] > 256:
        raise argparse.ArgumentTypeError(f"concurrency levels must lie in 1-256, got {text!r}")
    return levels


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the cluster against one mlx-lm process")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="prompt length (default 512 for the single-stream prefill figure, 64 with --concurrency)")
    p.add_argument("--gen-tokens", type=int, default=None, help="tokens generated per stream (default 64, 32 with --concurrency)")
    p.add_argument("--concurrency", type=_levels, default=None, metavar="1,2,4,8",
                   help="measure several streams at once at each of these levels")
    p.add_argument("--pinned", action="store_true",
                   help="with --concurrency: also measure with stage i pinned to core i and the baseline on one core")
    p.add_argument("--stages", type=int, default=None, help="use only the first N nodes of the inventory")
    p.add_argument("--float32", action="store_true",
                   help="serve a float32 copy of the model on both sides (made once in the model cache), so every "
                        "matrix product goes through the BLAS")
    p.add_argument("--speculative", action="store_true",
                   help="one stream, speculative decoding on against off, for prompts that copy their input and one "
                        "that does not")
    p.add_argument("--draft-model", action="store_true",
                   help="with --speculative: also measure the draft-model drafter (the inventory's model.draft; with "
                        "--float32 and none named, the served model itself at its own precision)")
    p.add_argument("--chat-turns", type=int, default=None, metavar="N",
                   help="one chat of N turns behind a long system prompt, prefix cache on against off")
    p.add_argument("--system-tokens", type=int, default=1500, help="with --chat-turns: system prompt length")
    p.add_argument("--structured", action="store_true",
                   help="inter-token latency with a JSON schema (response_format) and without, in one cluster")
    p.add_argument("--repeats", type=int, default=3,
                   help="with --speculative or --structured: runs of each prompt each way (median)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="with --concurrency: directory for bench.json and bench.png (default ./bench-results)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(run=run)


def _inventory(args: argparse.Namespace) -> Inventory:
    inventory = load_inventory(args.inventory)
    if args.stages is not None:
        if not 1 <= args.stages <= len(inventory.nodes):
            raise SystemExit(f"error: --stages must lie in 1-{len(inventory.nodes)} (the inventory's nodes)")
        inventory = dataclasses.replace(inventory, nodes=inventory.nodes[: args.stages])
    if args.float32:
        inventory = float32_inventory(inventory)
    if args.concurrency is not None:
        # The load runs measure batching: a prompt seen in an earlier run must not start from a kept
        # prefix, and a lone stream must not draft (the one-process baseline does neither).
        inventory = dataclasses.replace(inventory, prefix_cache=False, speculation="off")
    return inventory


def float32_inventory(inventory: Inventory) -> Inventory:
    """The same cluster serving the float32 copy of its model, under the same name; every node is
    sent the copy's own shard (a node's `model_path` holds the stored model, not this one)."""
    info = resolve_model(inventory.model)
    model = ModelSpec(path=float32_copy(info.path), name=served_model_name(inventory.model, info),
                      draft=inventory.model.draft)
    return dataclasses.replace(inventory, model=model,
                               nodes=[dataclasses.replace(n, model_path=None) for n in inventory.nodes])


def _sides(cluster: RunningCluster) -> tuple[str, dict[str, str]]:
    """The served model's dtype and each node's BLAS, as the report states them."""
    return model_dtype(cluster.model.path), cluster_blas([s.node for s in cluster.plan], cluster.infos)


@contextlib.asynccontextmanager
async def _serving(args: argparse.Namespace):
    """The inventory (as the flags change it) and its cluster, brought up, closed afterwards."""
    inventory = await asyncio.to_thread(_inventory, args)
    print("bringing the cluster up...", file=sys.stderr)
    cluster = await bring_up(inventory, show_progress=False)
    try:
        yield inventory, cluster
    finally:
        await cluster.close()


async def _bench_single(args: argparse.Namespace) -> dict:
    async with _serving(args) as (inventory, cluster):
        dtype, blas = _sides(cluster)
        print(f"measuring the cluster ({len(cluster.plan)} stages)...", file=sys.stderr)
        figures = await measure_cluster(cluster, args.prompt_tokens, args.gen_tokens)
    print("measuring mlx-lm in one process...", file=sys.stderr)
    baseline = await asyncio.to_thread(
        measure_baseline, cluster.model.path, args.prompt_tokens, args.gen_tokens, inventory.prefill_chunk
    )
    return report(figures, baseline, dtype=dtype, blas=blas)


async def _bench_speculative(args: argparse.Namespace) -> dict:
    async with _serving(args) as (inventory, cluster):
        dtype, blas = _sides(cluster)
        if not cluster.engine.speculation.on:
            raise SystemExit(f"error: this cluster does not speculate: "
                             f"{cluster.engine.speculation.problem or 'pipeline.speculation is off'}")
        print(f"measuring {len(cluster.plan)} stages, speculation off and on...", file=sys.stderr)
        results = [await measure_speculative(cluster, args.gen_tokens, args.repeats)]
        if args.draft_model:
            results.append(await _measure_draft_model(args, inventory, cluster))
    return {"runs": results, "dtype": dtype, "blas": blas}


async def _measure_draft_model(args: argparse.Namespace, inventory: Inventory, cluster: RunningCluster) -> dict:
    """The same measurement with the draft-model drafter in place of the cluster's own."""
    draft = await _bench_draft_model(args, cluster)
    own, cluster.engine.speculation = cluster.engine.speculation, plan_speculation(
        "draft_model", inventory.max_draft_tokens, cluster.infos, draft)
    try:
        print(f"measuring the draft model {draft.path}...", file=sys.stderr)
        return await measure_speculative(cluster, args.gen_tokens, args.repeats) | {"draft_model": str(draft.path)}
    finally:
        cluster.engine.speculation = own
        draft.close()


async def _bench_chat_turns(args: argparse.Namespace) -> dict:
    async with _serving(args) as (_, cluster):
        dtype, blas = _sides(cluster)
        print(f"a {args.chat_turns}-turn chat through {len(cluster.plan)} stages, prefix cache on, then off...",
              file=sys.stderr)
        result = await measure_chat_turns(cluster, args.chat_turns, args.system_tokens, args.gen_tokens)
    return result | {"dtype": dtype, "blas": blas}


async def _bench_structured(args: argparse.Namespace) -> dict:
    async with _serving(args) as (_, cluster):
        dtype, blas = _sides(cluster)
        print(f"answers with a JSON schema and without, through {len(cluster.plan)} stages...", file=sys.stderr)
        result = await measure_structured(cluster, args.repeats, args.gen_tokens)
    return result | {"dtype": dtype, "blas": blas}


async def _bench_draft_model(args: argparse.Namespace, cluster: RunningCluster):
    from cluster.pipeline.draft_model import DraftModel

    original = (await asyncio.to_thread(load_inventory, args.inventory)).model
    if original.draft is not None:
        spec = original.draft
    elif args.float32:
        spec = dataclasses.replace(original, name=None)  # what the float32 copy was made from
    else:
        raise SystemExit("error: --draft-model needs model.draft in the inventory (or --float32, to draft with "
                         "the served model at its own precision)")
    info = await asyncio.to_thread(resolve_model, spec)
    vocabulary = cluster.engine.tokenizer.vocabulary()
    draft_vocabulary = (await asyncio.to_thread(PromptTokenizer, info.path)).vocabulary()
    return await asyncio.to_thread(DraftModel, info.path, vocabulary, draft_vocabulary)


async def _bench_load(args: argparse.Namespace) -> dict:
    levels = args.concurrency
    pinned = None
    async with _serving(args) as (inventory, cluster):
        dtype, blas = _sides(cluster)
        print(f"measuring the cluster ({len(cluster.plan)} stages) at concurrency {levels}...", file=sys.stderr)
        figures = await measure_cluster_load(cluster, levels, args.prompt_tokens, args.gen_tokens)
        if args.pinned:
            placement = pin_cluster(cluster)
            print(f"measuring the pinned cluster ({placement})...", file=sys.stderr)
            pinned = {"placement": placement,
                      "cluster": await measure_cluster_load(cluster, levels, args.prompt_tokens, args.gen_tokens)}
    model_dir, chunk = cluster.model.path, inventory.prefill_chunk
    print("measuring mlx-lm in one process...", file=sys.stderr)
    single, single_blas = await asyncio.to_thread(
        measure_baseline_load, model_dir, levels, args.prompt_tokens, args.gen_tokens, chunk)
    if pinned is not None:
        core = min(os.sched_getaffinity(0))
        print(f"measuring mlx-lm in one process pinned to cpu{core}...", file=sys.stderr)
        pinned["baseline_cpu"] = core
        pinned["single_process"], _ = await asyncio.to_thread(
            measure_baseline_load, model_dir, levels, args.prompt_tokens, args.gen_tokens, chunk, [core])
    return load_report(levels, figures, single, len(cluster.plan), pinned, dtype=dtype,
                       blas={"cluster": blas, "single_process": single_blas})


def _what_ran(result: dict) -> str:
    """The report's last line: the served dtype and the BLAS the nodes used."""
    return f"\nmodel {result['dtype']}, BLAS {', '.join(sorted(set(result['blas'].values())))}"


def _one_stream_run(args: argparse.Namespace, conflict: str, conflicting: bool) -> None:
    """The checks and defaults the one-stream comparisons (--speculative, --structured) share."""
    if conflicting:
        raise SystemExit(f"error: {conflict}")
    if args.repeats < 1:
        raise SystemExit("error: --repeats must be at least 1")
    args.gen_tokens = args.gen_tokens or 96
    one_thread_each()


def run(args: argparse.Namespace) -> int:
    load = args.concurrency is not None
    if args.pinned and not load:
        raise SystemExit("error: --pinned goes with --concurrency")
    if args.chat_turns is not None:
        if load or args.speculative:
            raise SystemExit("error: --chat-turns measures one chat; leave out --concurrency and --speculative")
        if not 1 <= args.chat_turns <= 50 or args.system_tokens < 1:
            raise SystemExit("error: --chat-turns must lie in 1-50 and --system-tokens be positive")
        args.gen_tokens = args.gen_tokens or 24
        one_thread_each()
        result = asyncio.run(_bench_chat_turns(args))
        print(json.dumps(result, indent=2) if args.json else format_chat_turns(result))
        return 0
    if args.structured:
        _one_stream_run(args, "--structured measures one stream at a time; leave out --concurrency and --speculative",
                        load or args.speculative)
        result = asyncio.run(_bench_structured(args))
        print(json.dumps(result, indent=2) if args.json else format_structured(result) + _what_ran(result))
        return 0
    if args.speculative:
        _one_stream_run(args, "--speculative measures one stream; leave out --concurrency", load)
        result = asyncio.run(_bench_speculative(args))
        text = "\n\n".join(format_speculative(run) for run in result["runs"])
        print(json.dumps(result, indent=2) if args.json else text + _what_ran(result))
        return 0
    args.prompt_tokens = args.prompt_tokens or (64 if load else 512)
    args.gen_tokens = args.gen_tokens or (32 if load else 64)
    if args.prompt_tokens < 2 or args.gen_tokens < 2:
        raise SystemExit("error: --prompt-tokens and --gen-tokens must be at least 2")
    one_thread_each()  # the workers and the baseline alike: one OpenBLAS thread per process
    if not load:
        result = asyncio.run(_bench_single(args))
        print(json.dumps(result, indent=2) if args.json else format_table(result))
        return 0
    result = asyncio.run(_bench_load(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    write_chart(result, args.out / "bench.png")
    print(json.dumps(result, indent=2) if args.json else format_load_table(result))
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}", file=sys.stderr)
    return 0
