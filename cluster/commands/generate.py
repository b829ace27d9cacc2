"""`cluster generate INVENTORY PROMPT`: stream one answer to stdout."""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

from cluster.api.api_keys import client_key
from cluster.commands.text_sources import HttpSource, LocalSource, Stats
from cluster.inventory import Inventory, load_inventory
from cluster.launch.bring_up import bring_up
from cluster.pipeline.engine import GenerationParams


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)


def sampling_params(args: argparse.Namespace) -> GenerationParams:
    if args.max_tokens < 1:
        raise SystemExit("error: --max-tokens must be at least 1")
    return GenerationParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.seed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text for one prompt")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("prompt", help="the prompt (a user message through the chat template unless --raw)")
    p.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    add_sampling_arguments(p)
    p.set_defaults(run=run)


@asynccontextmanager
async def text_source(inventory: Inventory) -> AsyncIterator[HttpSource | LocalSource]:
    """The running cluster of this inventory if there is one, else one brought up
    for this command and stopped after it."""
    from cluster.commands.up import is_serving

    state = is_serving(inventory)
    if state is not None:
        yield HttpSource(state.url, client_key(inventory))
        return
    print(f"(no cluster of {inventory.source.name} is up: starting one for this command; "
          f"`cluster up {inventory.source.name} --detach` keeps one running)", file=sys.stderr)
    cluster = await bring_up(inventory, show_progress=sys.stderr.isatty())
    try:
        yield LocalSource(cluster)
    finally:
        await cluster.close()


async def _generate(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    params = sampling_params(args)
    stats = Stats()
    async with text_source(inventory) as source:
        if args.raw:
            stream = source.stream(params, stats, prompt=args.prompt)
        else:
            stream = source.stream(params, stats, messages=[{"role": "user", "content": args.prompt}])
        async for text in stream:
            sys.stdout.write(text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    print(stats.line(), file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_generate(args))
