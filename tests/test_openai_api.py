"""The OpenAI API of a real 3-worker cluster, through the official `openai` client (sync and
async, streaming and not), raw HTTP for malformed requests and disconnects, and admission."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster
from tests.reference import reference_ids, reference_text, tokenizer_for

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

MAX_CONCURRENT = 8
CONTEXT = 1024
QUESTION = "What is the capital of France?"
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    "Who wrote Hamlet?",
    "Give me a synonym for happy.",
    "Describe a cat in one sentence.",
    "What does a compiler do?",
]


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_dir: Path):
    cluster = start_api_cluster(
        tmp_path_factory.mktemp("api"), smollm2_dir,
        serve={"max_concurrent": MAX_CONCURRENT, "max_queue": 0, "context_length": CONTEXT},
    )
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


def chat_reference(model_dir: Path, prompt: str, max_tokens: int) -> str:
    ids = tokenizer_for(model_dir).encode_chat([{"role": "user", "content": prompt}])
    return reference_text(model_dir, ids, max_tokens)


def sessions_drain(api: ApiCluster, within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while True:
        counts = api.worker_sessions()
        if not any(counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_sync_chat_equals_single_process(api: ApiCluster, smollm2_dir: Path) -> None:
    client = openai.OpenAI(base_url=api.base_url, api_key="unused")
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": QUESTION}], max_tokens=32, temperature=0,
    )
    expected = chat_reference(smollm2_dir, QUESTION, 32)
    assert "Paris" in expected
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].message.role == "assistant"
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.created > 0
    assert reply.model == "smollm2-135m-instruct"
    prompt_len = len(tokenizer_for(smollm2_dir).encode_chat([{"role": "user", "content": QUESTION}]))
    assert reply.usage.prompt_tokens == prompt_len
    assert reply.usage.total_tokens == prompt_len + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason in ("stop", "length")
    # The same request without speculation (boltpipe's extension, through the client's extra_body).
    plain = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": QUESTION}], max_tokens=32, temperature=0,
        extra_body={"speculation": False})
    assert plain.choices[0].message.content == expected


def test_sync_chat_stream_with_usage(api: ApiCluster, smollm2_dir: Path) -> None:
    client = openai.OpenAI(base_url=api.base_url, api_key="unused")
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": QUESTION}], max_tokens=24,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat_reference(smollm2_dir, QUESTION, 24)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert len({c.id for c in chunks}) == 1


def test_async_completions_raw_prompt_stream_and_not(api: ApiCluster, smollm2_dir: Path) -> None:
    prompt = "The three largest cities of Germany are"
    prompt_ids = tokenizer_for(smollm2_dir).encode_text(prompt)
    expected = reference_text(smollm2_dir, prompt_ids, 20)
    expected_reason = "length" if len(reference_ids(smollm2_dir, prompt_ids, 20)) == 20 else "stop"

    async def scenario() -> tuple[str, str, str]:
        client = openai.AsyncOpenAI(base_url=api.base_url, api_key="unused")
        whole = await client.completions.create(model="smollm2-135m-instruct", prompt=prompt, max_tokens=20,
                                                temperature=0)
        pieces = []
        async for chunk in await client.completions.create(model="smollm2-135m-instruct", prompt=prompt,
                                                           max_tokens=20, temperature=0, stream=True):
            pieces.append(chunk.choices[0].text)
        await client.close()
        return whole.choices[0].text, "".join(pieces), whole.choices[0].finish_reason

    whole, streamed, reason = asyncio.run(scenario())
    assert whole == expected == streamed
    assert reason == expected_reason


def test_async_chat_stream(api: ApiCluster, smollm2_dir: Path) -> None:
    async def scenario() -> str:
        client = openai.AsyncOpenAI(base_url=api.base_url, api_key="unused")
        text = []
        async for chunk in await client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": PROMPTS[4]}], max_tokens=20,
            temperature=0, stream=True,
        ):
            text.append(chunk.choices[0].delta.content or "")
        await client.close()
        return "".join(text)

    assert asyncio.run(scenario()) == chat_reference(smollm2_dir, PROMPTS[4], 20)


def test_logprobs_stop_and_seed(api: ApiCluster, smollm2_dir: Path) -> None:
    client = openai.OpenAI(base_url=api.base_url, api_key="unused")
    reply = client.chat.completions.create(
        messages=[{"role": "user", "content": QUESTION}], model="smollm2-135m-instruct", max_tokens=8, temperature=0,
        logprobs=True, top_logprobs=3,
    )
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob, abs=1e-4)

    full = chat_reference(smollm2_dir, QUESTION, 32)
    stop_at = full.index("Paris")
    stopped = client.chat.completions.create(
        messages=[{"role": "user", "content": QUESTION}], model="smollm2-135m-instruct", max_tokens=32,
        temperature=0, stop=["Paris"],
    )
    assert stopped.choices[0].message.content == full[:stop_at]
    assert stopped.choices[0].finish_reason == "stop"

    def sampled() -> str:
        return client.chat.completions.create(
            messages=[{"role": "user", "content": "Tell me a story."}], model="smollm2-135m-instruct", max_tokens=16,
            temperature=0.9, top_p=0.9, seed=7, user="ignored",
        ).choices[0].message.content

    assert sampled() == sampled()


def test_models_and_health(api: ApiCluster) -> None:
    client = openai.OpenAI(base_url=api.base_url, api_key="unused")
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2-135m-instruct"]
    assert client.models.retrieve("smollm2-135m-instruct").id == "smollm2-135m-instruct"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    health = httpx.get(f"{api.inventory.url}/health").json()
    assert health["status"] == "ok" and health["max_running"] == MAX_CONCURRENT


def test_eight_concurrent_streams_each_get_their_own_answer(api: ApiCluster, smollm2_dir: Path) -> None:
    async def one(client: openai.AsyncOpenAI, prompt: str) -> str:
        text = []
        async for chunk in await client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": prompt}], max_tokens=16,
            temperature=0, stream=True,
        ):
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
        return "".join(text)

    async def scenario() -> list[str]:
        client = openai.AsyncOpenAI(base_url=api.base_url, api_key="unused")
        try:
            return list(await asyncio.gather(*(one(client, p) for p in PROMPTS)))
        finally:
            await client.close()

    answers = asyncio.run(scenario())
    assert answers == [chat_reference(smollm2_dir, p, 16) for p in PROMPTS]
    assert sessions_drain(api, 2.0) == [0, 0, 0]


def test_client_disconnect_frees_the_session_on_every_worker(api: ApiCluster) -> None:
    body = {"messages": [{"role": "user", "content": "Write a very long essay about rivers."}], "max_tokens": 400,
            "temperature": 0, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{api.base_url}/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            events = [next(lines) for _ in range(8)]
            assert any(e.startswith("data: ") for e in events)
            assert sum(api.worker_sessions()) >= 1, "the stream is open on the workers"
        # Leaving the block closes the connection mid-stream.
    left = sessions_drain(api, 2.0)
    assert left == [0, 0, 0], f"sessions still open 2 s after the client left: {left}"


MALFORMED = [
    ("chat/completions", b"{not json", "not valid JSON"),
    ("chat/completions", b'["a list"]', "must be a JSON object"),
    ("chat/completions", json.dumps({"messages": []}).encode(), "'messages' must be a non-empty list"),
    ("chat/completions", json.dumps({"messages": "hi"}).encode(), "'messages' must be a non-empty list"),
    ("chat/completions", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), "role must be one of"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), "content must be a string"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode(),
     "'max_tokens' must be a positive integer"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}).encode(),
     "'max_tokens' must be a positive integer"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(),
     "'temperature' must be a number"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 2}).encode(),
     "only n=1 is supported"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(),
     "'stream' must be a boolean"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": "word " * (CONTEXT + 50)}]}).encode(),
     f"this model's context is {CONTEXT} tokens"),
    ("chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "speculation": "no"}).encode(),
     "'speculation' must be a boolean"),
    ("completions", json.dumps({"prompt": ""}).encode(), "'prompt' must be a non-empty string"),
    ("completions", json.dumps({"prompt": [10**9]}).encode(), "prompt token ids must lie in"),
    ("completions", json.dumps({"prompt": "x", "logprobs": 9}).encode(), "'logprobs' must be an integer 0-5"),
]


@pytest.mark.parametrize("path, body, message", MALFORMED, ids=[m[2][:30] for m in MALFORMED])
def test_malformed_requests_get_openai_errors(api: ApiCluster, path: str, body: bytes, message: str) -> None:
    response = httpx.post(f"{api.base_url}/{path}", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


def test_unknown_model_route_and_method_are_openai_errors(api: ApiCluster) -> None:
    wrong_model = httpx.post(f"{api.base_url}/chat/completions",
                             json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    assert wrong_model.status_code == 404 and wrong_model.json()["error"]["code"] == "model_not_found"
    assert httpx.get(f"{api.base_url}/nothing").json()["error"]["type"] == "not_found_error"
    wrong_method = httpx.get(f"{api.base_url}/chat/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_official_client_raises_on_bad_request_and_the_server_keeps_serving(api: ApiCluster, smollm2_dir) -> None:
    client = openai.OpenAI(base_url=api.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": "x"}], n=3)
    reply = client.chat.completions.create(model="smollm2-135m-instruct",
                                           messages=[{"role": "user", "content": QUESTION}], max_tokens=12, temperature=0)
    assert reply.choices[0].message.content == chat_reference(smollm2_dir, QUESTION, 12)


def test_full_server_refuses_fast_and_admitted_requests_finish(api: ApiCluster) -> None:
    """max_queue is 0: beyond MAX_CONCURRENT running requests, the answer is an immediate 429 (it
    comes back while every admitted request is still generating: it waited for no slot)."""
    body = {"prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 24, "temperature": 0}

    async def scenario() -> list[tuple[int, float, dict, dict]]:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=300) as http:
            async def one() -> tuple[int, float, dict, dict]:
                response = await http.post("/completions", json=body)
                return response.status_code, time.monotonic(), dict(response.headers), response.json()

            async def all_slots_taken() -> None:
                while (await http.get(f"{api.inventory.url}/health")).json()["running"] < MAX_CONCURRENT:
                    await asyncio.sleep(0.02)

            admitted = [asyncio.create_task(one()) for _ in range(MAX_CONCURRENT)]
            await asyncio.wait_for(all_slots_taken(), 120)   # the extra ones only once those run
            extra = [asyncio.create_task(one()) for _ in range(3)]
            return list(await asyncio.gather(*admitted, *extra))

    results = asyncio.run(scenario())
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert len(admitted) == MAX_CONCURRENT and len(refused) == 3
    first_admitted_done = min(r[1] for r in admitted)
    for status, done_at, headers, error in refused:
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert error["error"]["code"] == "server_busy"
        assert done_at < first_admitted_done, "a refusal waited for a slot instead of coming back at once"
    assert all(r[3]["usage"]["completion_tokens"] == 24 for r in admitted)
    assert sessions_drain(api, 2.0) == [0, 0, 0]


def test_a_six_turn_chat_reuses_its_history_and_gives_mlx_lm_tokens(api: ApiCluster, smollm2_dir: Path) -> None:
    """Prefix caching (on by default): each turn resends the conversation; the stages keep what the
    last turn computed, so each turn starts from it (the metrics count the hits and the positions
    reused), and every answer is still mlx-lm's greedy answer to the whole conversation."""
    client = openai.OpenAI(base_url=api.base_url, api_key="unused")
    tokenizer = tokenizer_for(smollm2_dir)
    before = httpx.get(f"{api.base_url.removesuffix('/v1')}/metrics").text
    messages = [{"role": "system", "content": "You are a helpful assistant who answers briefly."}]
    for question in ("Hi!", "What is the capital of France?", "And of Italy?", "Name a river there.",
                     "How long is it?", "Thank you."):
        messages.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, max_tokens=10,
                                               temperature=0)
        answer = reply.choices[0].message.content
        assert answer == reference_text(smollm2_dir, tokenizer.encode_chat(messages), 10), question
        messages.append({"role": "assistant", "content": answer})
    after = httpx.get(f"{api.base_url.removesuffix('/v1')}/metrics").text

    def value(text: str, name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))

    assert value(after, "boltpipe_coordinator_prefix_hits_total") - value(before, "boltpipe_coordinator_prefix_hits_total") >= 5
    reused = value(after, "boltpipe_coordinator_prefix_tokens_reused_total") - value(
        before, "boltpipe_coordinator_prefix_tokens_reused_total")
    assert reused >= 5 * 20  # each later turn skips at least the system prompt and the first turn
    assert all(n > 0 for n in api.worker_prefixes())


def test_two_concurrent_conversations_sharing_a_system_prompt_do_not_disturb_each_other(
        api: ApiCluster, smollm2_dir: Path) -> None:
    """Both start from the kept prefix of the shared system prompt (and later from their own turns)
    at the same time; each still gets mlx-lm's answers to its own conversation."""
    client = openai.AsyncOpenAI(base_url=api.base_url, api_key="unused")
    tokenizer = tokenizer_for(smollm2_dir)
    system = {"role": "system", "content": "You are a terse assistant. Answer in one short sentence."}

    async def conversation(questions: list[str]) -> list[tuple[list[dict], str]]:
        messages, turns = [system], []
        for question in questions:
            messages.append({"role": "user", "content": question})
            reply = await client.chat.completions.create(model="smollm2-135m-instruct", messages=messages,
                                                         max_tokens=8, temperature=0)
            answer = reply.choices[0].message.content
            turns.append((list(messages), answer))
            messages.append({"role": "assistant", "content": answer})
        return turns

    async def both():
        return await asyncio.gather(conversation(["What is rain?", "And snow?"]),
                                    conversation(["Name a fruit.", "Name a vegetable."]))

    for turns in asyncio.run(both()):
        for messages, answer in turns:
            assert answer == reference_text(smollm2_dir, tokenizer.encode_chat(messages), 8), messages[-1]
