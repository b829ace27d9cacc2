"""Structured output, tool calls and the sampling surface (issue 20) on a real 3-worker demo cluster,
through the official `openai` client: every answer to twenty varied JSON schemas validates
(streaming and not), `tool_choice: required` always gives a well-formed call with valid arguments
(streamed deltas assemble to the same call, the `tool` result is accepted back), and logit bias and
penalties give mlx-lm's own tokens with its processors. The requests of each test go at once, so the
cluster batches them (constrained rows in a batch, each with its own grammar)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from mlx_lm.sample_utils import make_logits_processors

from cluster.bench.float32_model import float32_copy
from node.grammar import GrammarState, build_tokenizer
from cluster.api.structured_output import response_format_grammar
from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster
from tests.reference import processed_greedy_text, reference_ids, tokenizer_for
from tests.structured_cases import SCHEMAS, TOOL_PROMPTS, TOOLS, response_format

pytestmark = pytest.mark.cluster

MODEL = "smollm2-135m-instruct"
MAX_TOKENS = 160


@pytest.fixture(scope="module")
def model_dir(smollm2_dir: Path) -> Path:
    """The demo model dequantized to float32: the regime that resembles the target, and faster here."""
    return float32_copy(smollm2_dir)


@pytest.fixture(scope="module")
def api(tmp_path_factory, model_dir: Path):
    cluster = start_api_cluster(tmp_path_factory.mktemp("structured"), model_dir,
                                serve={"max_concurrent": 16, "max_queue": 64, "queue_timeout_s": 600})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


def client(api: ApiCluster) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=api.base_url, api_key="unused", max_retries=0, timeout=600)


async def _streamed_text(stream) -> tuple[str, str]:
    text, reason = [], None
    async for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            reason = choice.finish_reason or reason
    return "".join(text), reason


def test_every_answer_validates_against_its_schema_streaming_and_not(api: ApiCluster) -> None:
    async def ask(prompt: str, schema: dict, stream: bool) -> tuple[str, str]:
        request = dict(model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0,
                       max_tokens=MAX_TOKENS, response_format=response_format(schema))
        reply = await client(api).chat.completions.create(**request, stream=stream)
        if stream:
            return await _streamed_text(reply)
        return reply.choices[0].message.content, reply.choices[0].finish_reason

    async def all_of_them():
        return await asyncio.gather(*(ask(p, s, stream) for p, s in SCHEMAS for stream in (False, True)))

    answers = asyncio.run(all_of_them())
    for i, (prompt, schema) in enumerate(SCHEMAS):
        plain, streamed = answers[2 * i], answers[2 * i + 1]
        for text, reason in (plain, streamed):
            assert reason == "stop", (prompt, text)
            jsonschema.validate(json.loads(text), schema)
        assert plain[0] == streamed[0], prompt  # greedy either way
        print(f"{prompt!r}: {plain[0]}")


def test_json_object_mode_gives_an_object_and_bad_schemas_are_refused(api: ApiCluster, model_dir: Path) -> None:
    async def run():
        c = client(api)
        reply = await c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Give the name and the age of a cat as JSON."}],
            temperature=0, max_tokens=MAX_TOKENS, response_format={"type": "json_object"})
        with pytest.raises(openai.BadRequestError, match="Unknown format"):
            await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}],
                response_format=response_format({"type": "string", "format": "no-such-format"}))
        with pytest.raises(openai.BadRequestError, match="response_format.type"):
            await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                            response_format={"type": "yaml"})
        return reply

    reply = asyncio.run(run())
    text, reason = reply.choices[0].message.content, reply.choices[0].finish_reason
    # Any object is allowed, so a small model may go on adding keys until max_tokens: whatever it
    # wrote is an object's beginning (its tokens all pass the grammar), and a finished one parses.
    tokenizer = build_tokenizer(model_dir, 49152)
    GrammarState(tokenizer, response_format_grammar({"type": "json_object"}), tokenizer.tokenize_str(text))
    assert text.startswith("{") and reason in ("stop", "length"), text
    if reason == "stop":
        assert isinstance(json.loads(text), dict), text


def _valid_call(name: str, arguments: str) -> dict:
    tool = next(t for t in TOOLS if t["function"]["name"] == name)
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, tool["function"]["parameters"])
    return parsed


def test_required_tool_calls_always_parse_stream_the_same_and_take_the_result_back(api: ApiCluster) -> None:
    async def ask(prompt: str):
        c = client(api)
        request = dict(model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0,
                       max_tokens=MAX_TOKENS, tools=TOOLS, tool_choice="required")
        plain = await c.chat.completions.create(**request)
        calls: dict[int, dict] = {}
        reason = None
        async for chunk in await c.chat.completions.create(**request, stream=True):
            for choice in chunk.choices:
                reason = choice.finish_reason or reason
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += delta.id or ""
                    call["name"] += delta.function.name or "" if delta.function else ""
                    call["arguments"] += delta.function.arguments or "" if delta.function else ""
        return plain, [calls[i] for i in sorted(calls)], reason

    async def all_of_them():
        return await asyncio.gather(*(ask(p) for p in TOOL_PROMPTS))

    results = asyncio.run(all_of_them())
    for prompt, (plain, streamed, reason) in zip(TOOL_PROMPTS, results):
        choice = plain.choices[0]
        assert choice.finish_reason == "tool_calls" and reason == "tool_calls", prompt
        assert choice.message.tool_calls, (prompt, choice.message.content)
        for call in choice.message.tool_calls:
            _valid_call(call.function.name, call.function.arguments)
        assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == [
            (c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls], prompt
        print(f"{prompt!r}: {[(c.function.name, c.function.arguments) for c in choice.message.tool_calls]}")

    # The follow-up turn: the call and its result go back, and the model answers.
    prompt, (plain, _, _) = TOOL_PROMPTS[0], results[0]
    call = plain.choices[0].message.tool_calls[0]
    follow_up = asyncio.run(client(api).chat.completions.create(
        model=MODEL, temperature=0, max_tokens=40, tools=TOOLS,
        messages=[{"role": "user", "content": prompt},
                  {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                  {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21, "sky": "clear"})}]))
    answer = follow_up.choices[0]
    assert answer.finish_reason in ("stop", "tool_calls", "length")
    assert answer.message.content or answer.message.tool_calls


def _coordinator_counter(api: ApiCluster, name: str) -> float:
    text = httpx.get(f"{api.inventory.url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f"{name}_total{{") and 'drafter="prompt_lookup"' in line)


def test_a_named_tool_is_the_one_called_and_none_leaves_tools_out(api: ApiCluster) -> None:
    async def run():
        c = client(api)
        named = await c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "What is the weather in Lisbon?"}], temperature=0,
            max_tokens=MAX_TOKENS, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}})
        none = await c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0,
            max_tokens=12, tools=TOOLS, tool_choice="none")
        with pytest.raises(openai.BadRequestError, match="not one of the tools"):
            await c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=TOOLS,
                                            tool_choice={"type": "function", "function": {"name": "fly"}})
        return named, none

    drafted_before = _coordinator_counter(api, "boltpipe_coordinator_drafted_tokens")
    accepted_before = _coordinator_counter(api, "boltpipe_coordinator_accepted_tokens")
    named, none = asyncio.run(run())
    # Alone, the constrained request speculated (prompt lookup copies the call's shape from the tools'
    # description), drafts were judged by the grammar and the model, and some were kept.
    assert _coordinator_counter(api, "boltpipe_coordinator_drafted_tokens") > drafted_before
    assert _coordinator_counter(api, "boltpipe_coordinator_accepted_tokens") > accepted_before
    (call,) = named.choices[0].message.tool_calls  # a named function: exactly one call, to it
    assert call.function.name == "add"
    _valid_call("add", call.function.arguments)
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


def _chat_ids(model_dir: Path, prompt: str) -> list[int]:
    return tokenizer_for(model_dir).encode_chat([{"role": "user", "content": prompt}])


def test_logit_bias_and_penalties_give_mlx_lm_tokens_with_its_processors(api: ApiCluster, model_dir: Path) -> None:
    prompt = "Repeat the word 'go' ten times."
    ids = _chat_ids(model_dir, prompt)
    greedy_first = reference_ids(model_dir, ids, 1)[0]
    cases = [
        ({"logit_bias": {str(greedy_first): -100}}, make_logits_processors(logit_bias={greedy_first: -100.0})),
        ({"frequency_penalty": 2.0}, make_logits_processors(frequency_penalty=2.0)),
        ({"presence_penalty": 1.5}, make_logits_processors(presence_penalty=1.5)),
        ({"extra_body": {"repetition_penalty": 1.8}}, make_logits_processors(repetition_penalty=1.8)),
    ]

    async def ask(extra: dict) -> str:
        reply = await client(api).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=30, **extra)
        return reply.choices[0].message.content

    async def all_of_them():
        return await asyncio.gather(ask({}), *(ask(extra) for extra, _ in cases))

    plain, *answers = asyncio.run(all_of_them())
    tokenizer = tokenizer_for(model_dir)
    assert plain == tokenizer.decode(reference_ids(model_dir, ids, 30))
    for (extra, processors), answer in zip(cases, answers):
        assert answer == processed_greedy_text(model_dir, ids, 30, processors), extra
    assert answers[0] != plain and answers[1] != plain and answers[3] != plain
    # A bias of -100 on the greedy first token removes it.
    assert tokenizer.encode_text(answers[0], add_special_tokens=False)[0] != greedy_first


def test_a_strong_frequency_penalty_stops_a_repetition(api: ApiCluster, model_dir: Path) -> None:
    sentence = "The cat sat on the mat."
    prompt = " ".join([sentence] * 3)
    ids = tokenizer_for(model_dir).encode_text(prompt)

    async def complete(**extra) -> str:
        reply = await client(api).completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=24,
                                                     **extra)
        return reply.choices[0].text

    async def both():
        return await asyncio.gather(complete(), complete(frequency_penalty=2.0))

    plain, penalized = asyncio.run(both())
    assert plain == processed_greedy_text(model_dir, ids, 24, [])
    assert penalized == processed_greedy_text(model_dir, ids, 24, make_logits_processors(frequency_penalty=2.0))
    assert plain.strip().startswith(sentence)  # left alone, the model says it a fourth time
    assert sentence not in penalized


def test_unknown_parameters_are_refused_and_the_server_keeps_serving(api: ApiCluster) -> None:
    def post(body: dict) -> httpx.Response:
        return httpx.post(f"{api.base_url}/chat/completions", json={
            "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, **body}, timeout=120)

    for body, message in [({"mirostat": 2}, "unrecognized request argument supplied: 'mirostat'"),
                          ({"prompt": "x"}, "it belongs to /v1/completions"),
                          ({"min_p": 2}, "'min_p' must be between 0 and 1"),
                          ({"logit_bias": {"99999999": 5}}, "logit_bias token ids must lie in"),
                          ({"logit_bias": {"1": 500}}, "from -100 to 100"),
                          ({"tool_choice": "required"}, "'tool_choice' needs 'tools'"),
                          ({"tools": [{"type": "function", "function": {"name": "f"}}],
                            "response_format": {"type": "json_object"}}, "cannot offer tools and ask for")]:
        response = post(body)
        assert response.status_code == 400 and message in response.json()["error"]["message"], (body, response.text)
    assert post({"min_p": 0.05, "temperature": 0.7, "seed": 1, "user": "me"}).status_code == 200
