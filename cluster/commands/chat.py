"""`cluster chat INVENTORY`: a conversation in the terminal (the history is kept)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from cluster.commands.generate import add_sampling_arguments, sampling_params, text_source
from cluster.commands.text_sources import Stats
from cluster.inventory import load_inventory

HELP = "Type a message; /reset forgets the conversation, /exit (or Ctrl-D) leaves."


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with the model in the terminal")
    p.add_argument("inventory", help="inventory.yaml")
    p.add_argument("--system", default=None, help="a system prompt")
    add_sampling_arguments(p)
    p.set_defaults(run=run)


async def _read_line(prompt: str) -> str | None:
    try:
        return await asyncio.to_thread(input, prompt)
    except EOFError:
        return None


async def _chat(args: argparse.Namespace) -> int:
    inventory = load_inventory(args.inventory)
    params = sampling_params(args)
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    async with text_source(inventory) as source:
        print(HELP, file=sys.stderr)
        while (line := await _read_line(">> ")) is not None:
            line = line.strip()
            if not line:
                continue
            if line in ("/exit", "/quit"):
                break
            if line == "/reset":
                messages = list(start)
                print("(conversation cleared)", file=sys.stderr)
                continue
            messages.append({"role": "user", "content": line})
            stats = Stats()
            reply = []
            async for text in source.stream(params, stats, messages=messages):
                reply.append(text)
                sys.stdout.write(text)
                sys.stdout.flush()
            sys.stdout.write("\n")
            messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_chat(args))
