"""`cluster bench --structured`: what a JSON schema costs a token. For each of a few schemas, one
greedy answer held to the schema by the grammar (node/grammar.py), then the same prompt free for as
many tokens, in the same cluster; inter-token latency both ways (the time between tokens after the
first, median of --repeats runs). Speculation is off in both, so the figure is the mask's cost
alone. Ratio: free ms per token / constrained ms per token (1.0: the grammar costs nothing).
"""

from __future__ import annotations

import json
import statistics

from cluster.api.structured_output import response_format_grammar
from cluster.launch.bring_up import RunningCluster
from cluster.pipeline.engine import GenerationParams

NAME = {"type": "string", "maxLength": 40}
CASES = [
    ("Describe a person called Ada who is 36.",
     {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                       "city": NAME}, "required": ["name", "age", "city"]}),
    ("Write a shopping list.",
     {"type": "object", "properties": {"items": {"type": "array", "maxItems": 4, "items": {
         "type": "object", "properties": {"item": NAME, "quantity": {"type": "integer", "minimum": 1}},
         "required": ["item", "quantity"]}}}, "required": ["items"]}),
    ("Tell me about a famous novel.",
     {"type": "object", "properties": {"title": NAME, "author": NAME, "year": {"type": "integer"},
                                       "genres": {"type": "array", "maxItems": 3, "items": {"enum": ["drama", "romance", "crime",
                                                                                     "adventure", "satire"]}}},
      "required": ["title", "author", "year", "genres"]}),
]


def _grammar(schema: dict) -> str:
    return response_format_grammar({"type": "json_schema", "json_schema": {"name": "bench", "schema": schema,
                                                                            "strict": True}})


async def _answer(cluster: RunningCluster, ids: list[int], params: GenerationParams) -> tuple[list[int], float]:
    """The tokens and the median time between them (seconds)."""
    tokens, arrivals = [], []
    async for step in cluster.engine.tokens(ids, params):
        tokens.append(step.token_id)
        arrivals.append(step.received_ns)
    gaps = [(b - a) / 1e9 for a, b in zip(arrivals, arrivals[1:])]
    return tokens, statistics.median(gaps) if gaps else 0.0


async def measure_structured(cluster: RunningCluster, repeats: int, max_tokens: int) -> dict:
    tokenizer = cluster.engine.tokenizer
    rows = []
    for prompt, schema in CASES:
        ids = tokenizer.encode_user_prompt(prompt)
        grammar = _grammar(schema)
        held, free, text = [], [], ""
        for _ in range(repeats):
            tokens, itl = await _answer(cluster, ids, GenerationParams(max_tokens=max_tokens, grammar=grammar,
                                                                       speculate=False))
            held.append(itl)
            text = tokenizer.decode([t for t in tokens if t not in tokenizer.eos_token_ids])
            _, itl = await _answer(cluster, ids, GenerationParams(max_tokens=len(tokens), ignore_eos=True,
                                                                  speculate=False))
            free.append(itl)
        try:
            json.loads(text)
            valid = True
        except json.JSONDecodeError:
            valid = False
        constrained_s, free_s = statistics.median(held), statistics.median(free)
        rows.append({"prompt": prompt, "tokens": len(tokens), "constrained_ms": constrained_s * 1000,
                     "free_ms": free_s * 1000, "ratio": free_s / constrained_s if constrained_s else 0.0,
                     "answer": text, "parses": valid})
    return {"stages": len(cluster.plan), "repeats": repeats, "rows": rows,
            "ratio": statistics.median(r["ratio"] for r in rows)}


def format_structured(result: dict) -> str:
    lines = [f"inter-token latency with a JSON schema and without, {result['stages']} stages, speculation off, "
             f"median of {result['repeats']} runs", "",
             "| prompt | tokens | with schema | free | free / with schema | answer parses |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['prompt']} | {r['tokens']} | {r['constrained_ms']:.1f} ms | {r['free_ms']:.1f} ms | "
                     f"{r['ratio']:.2f} | {'yes' if r['parses'] else 'NO'} |")
    lines += ["", f"median ratio: {result['ratio']:.2f} (1.0: the grammar costs nothing)"]
    return "\n".join(lines)
