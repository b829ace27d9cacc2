"""`cluster bench --chat-turns N`: one chat of N turns behind a long system prompt, with the prefix
cache on and then off in the same cluster, and the time to first token of every turn both ways. Each
turn sends the whole conversation (as chat clients do); with the cache on, a turn starts from what
the previous one left on the stages. Greedy, so both runs give the same answers (checked). Memory:
what the workers hold afterwards (sessions and kept prefixes) against the KV budget the plan gave.
"""

from __future__ import annotations

import time

from cluster.launch.bring_up import RunningCluster
from cluster.pipeline.engine import GenerationParams

RULES = [
    "Answer in plain English and keep each answer short.",
    "Never invent facts; say so when you do not know.",
    "Prefer concrete examples over general statements.",
    "When asked for a list, give at most five items.",
    "Use metric units unless the user asks otherwise.",
    "Keep a friendly and calm tone.",
]
QUESTIONS = ["Hello! Who are you?", "What is the capital of France?", "What river runs through it?",
             "Name a famous museum there.", "What can I see in it?", "Thank you, goodbye."]


def system_prompt(tokenizer, target_tokens: int) -> str:
    """Numbered house rules, repeated with their numbers until the prompt is about `target_tokens` long."""
    lines, n = ["You are the assistant of a small museum. Follow these rules."], 0
    while len(tokenizer.encode_text("\n".join(lines), add_special_tokens=False)) < target_tokens:
        n += 1
        lines.append(f"Rule {n}: {RULES[n % len(RULES)]}")
    return "\n".join(lines)


async def _chat(cluster: RunningCluster, system: str, turns: int, gen_tokens: int) -> list[dict]:
    engine, tokenizer = cluster.engine, cluster.engine.tokenizer
    messages, out = [{"role": "system", "content": system}], []
    for turn in range(turns):
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        ids = tokenizer.encode_chat(messages)
        started, first, tokens = time.monotonic(), None, []
        async for step in engine.tokens(ids, GenerationParams(max_tokens=gen_tokens)):
            first = first or time.monotonic()
            tokens.append(step.token_id)
        eos = tokenizer.eos_token_ids
        answer = tokenizer.decode([t for t in tokens if t not in eos])
        out.append({"turn": turn + 1, "prompt_tokens": len(ids), "ttft_s": first - started, "tokens": tokens})
        messages.append({"role": "assistant", "content": answer})
    return out


async def measure_chat_turns(cluster: RunningCluster, turns: int, system_tokens: int, gen_tokens: int) -> dict:
    cache = cluster.engine.prefix_cache
    if cache is None:
        raise SystemExit("error: this cluster's prefix cache is off (pipeline.prefix_cache: false)")
    system = system_prompt(cluster.engine.tokenizer, system_tokens)
    hits_before = cache.figures.hits
    cached = await _chat(cluster, system, turns, gen_tokens)
    hits = cache.figures.hits - hits_before
    infos = await cluster.client.infos()
    held = [{"node": stage.node, "kv_bytes": info.kv_cache_bytes, "prefix_bytes": info.prefix_bytes,
             "planned_kv_bytes": stage.placement.kv_bytes} for stage, info in zip(cluster.plan, infos)]
    cluster.engine.prefix_cache = None
    try:
        uncached = await _chat(cluster, system, turns, gen_tokens)
    finally:
        cluster.engine.prefix_cache = cache
    rows = [{"turn": c["turn"], "prompt_tokens": c["prompt_tokens"], "cached_ttft_s": c["ttft_s"],
             "uncached_ttft_s": u["ttft_s"], "ratio": c["ttft_s"] / u["ttft_s"], "same_tokens": c["tokens"] == u["tokens"]}
            for c, u in zip(cached, uncached)]
    return {"stages": len(cluster.plan), "turns": turns, "system_tokens": system_tokens, "gen_tokens": gen_tokens,
            "hits": hits, "rows": rows, "memory": held}


def format_chat_turns(result: dict) -> str:
    lines = [f"chat of {result['turns']} turns, {result['system_tokens']}-token system prompt, {result['stages']} stages, "
             f"up to {result['gen_tokens']} tokens an answer; prefix cache on, then off ({result['hits']} hits)", "",
             "| turn | prompt tokens | TTFT cached | TTFT uncached | cached / uncached | same answer |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['turn']} | {r['prompt_tokens']} | {r['cached_ttft_s'] * 1000:.0f} ms | "
                     f"{r['uncached_ttft_s'] * 1000:.0f} ms | {r['ratio']:.2f} | {'yes' if r['same_tokens'] else 'NO'} |")
    lines += ["", "memory after the cached run (KV bytes held, of which kept prefixes, against the planned KV budget):"]
    for m in result["memory"]:
        lines.append(f"  {m['node']}: {m['kv_bytes'] / 1e6:.1f} MB held, {m['prefix_bytes'] / 1e6:.1f} MB in prefixes; "
                     f"plan {m['planned_kv_bytes'] / 1e6:.1f} MB")
    return "\n".join(lines)
