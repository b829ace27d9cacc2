"""`cluster bench --speculative`: one stream, speculation on against off in the same cluster and the
same run (a request's `speculate` switch), for prompt classes that copy their input (repeat, rewrite
and edit a given passage or code) and one that does not (free writing). Greedy, so both runs give
the same tokens (checked); the figure is decode tokens/s (first token to last, so the prompt's
prefill, which speculation does not touch, is left out), with acceptance and tokens per trip.
"""

from __future__ import annotations

import statistics
import time

from cluster.launch.bring_up import RunningCluster
from cluster.pipeline.engine import GenerationParams

PASSAGE = ("The old lighthouse stood at the end of the harbour wall. Every evening the keeper climbed the "
           "ninety steps, lit the lamp and wrote the weather in a small green book. Ships passing in the night "
           "saw the light turn once every ten seconds and knew they were close to home.")
CODE = ("def total_price(items, tax):\n"
        "    result = 0\n"
        "    for item in items:\n"
        "        result = result + item.price * item.count\n"
        "    return result * (1 + tax)\n")
PROMPTS = {
    "repeat": f"Repeat the following passage exactly.\n\n{PASSAGE}",
    "rewrite": f"Rewrite the following passage in the present tense.\n\n{PASSAGE}",
    "code edit": f"Rename the variable `result` to `subtotal` in this function and show the whole function.\n\n{CODE}",
    "free": "Write a short story about a dragon who is afraid of the dark.",
}
GROUNDED = ("repeat", "rewrite", "code edit")


async def _run(cluster: RunningCluster, ids: list[int], gen_tokens: int, speculate: bool) -> dict:
    trips: list[tuple[int, int]] = []
    previous = cluster.engine.on_speculated

    def note(drafter: str, drafted: int, kept: int) -> None:
        trips.append((drafted, kept))
        if previous is not None:
            previous(drafter, drafted, kept)

    cluster.engine.on_speculated = note
    try:
        params = GenerationParams(max_tokens=gen_tokens, speculate=speculate)
        arrivals, tokens = [], []
        async for step in cluster.engine.tokens(ids, params):
            arrivals.append(time.monotonic())
            tokens.append(step.token_id)
    finally:
        cluster.engine.on_speculated = previous
    decode_s = arrivals[-1] - arrivals[0]
    return {"tokens": tokens, "decode_tok_s": (len(tokens) - 1) / decode_s if decode_s > 0 else 0.0,
            "trips": len(trips), "drafted": sum(d for d, _ in trips), "kept": sum(k for _, k in trips)}


async def measure_speculative(cluster: RunningCluster, gen_tokens: int, repeats: int = 3) -> dict:
    """Each class `repeats` times with speculation off and on, alternating (drift hits both)."""
    tokenizer = cluster.engine.tokenizer
    classes = {}
    for name, text in PROMPTS.items():
        ids = tokenizer.encode_user_prompt(text)
        off, on = [], []
        for _ in range(repeats):
            off.append(await _run(cluster, ids, gen_tokens, False))
            on.append(await _run(cluster, ids, gen_tokens, True))
        same = all(r["tokens"] == off[0]["tokens"] for r in off + on)
        tokens = len(on[-1]["tokens"])
        drafted, kept, trips = (sum(r[k] for r in on) for k in ("drafted", "kept", "trips"))
        off_rate = statistics.median(r["decode_tok_s"] for r in off)
        on_rate = statistics.median(r["decode_tok_s"] for r in on)
        # Each trip gives one token and the drafts it kept.
        ring_trips = statistics.mean(len(r["tokens"]) - r["kept"] for r in on)
        classes[name] = {
            "prompt_tokens": len(ids), "tokens": tokens, "same_tokens": same,
            "off_tok_s": off_rate, "on_tok_s": on_rate, "ratio": on_rate / off_rate if off_rate else 0.0,
            "acceptance": kept / drafted if drafted else 0.0,
            "tokens_per_trip": tokens / ring_trips if ring_trips else 1.0,
            "speculative_trips": trips / repeats,
        }
    return {"stages": len(cluster.plan), "gen_tokens": gen_tokens, "repeats": repeats,
            "drafter": cluster.engine.speculation.drafter, "max_draft": cluster.engine.speculation.max_draft,
            "classes": classes}


def format_speculative(result: dict) -> str:
    drafter = result["drafter"] + (f" ({result['draft_model']})" if result.get("draft_model") else "")
    lines = [f"speculative decoding, {result['stages']} stages, one stream, drafter {drafter} "
             f"(up to {result['max_draft']} drafts a trip), {result['gen_tokens']} tokens at most, "
             f"median of {result['repeats']}",
             "",
             "| prompt | tokens | off tok/s | on tok/s | on / off | acceptance | tokens per trip | same tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for name, c in result["classes"].items():
        lines.append(f"| {name} | {c['tokens']} | {c['off_tok_s']:.2f} | {c['on_tok_s']:.2f} | {c['ratio']:.2f}x | "
                     f"{c['acceptance']:.0%} | {c['tokens_per_trip']:.2f} | {'yes' if c['same_tokens'] else 'NO'} |")
    return "\n".join(lines)
