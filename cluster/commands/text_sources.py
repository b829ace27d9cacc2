"""Where `cluster generate` and `cluster chat` get text from: the running cluster's
HTTP API, or a cluster brought up just for this command."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import AsyncIterator

import aiohttp

from cluster.launch.bring_up import RunningCluster
from cluster.pipeline.engine import Finish, GenerationParams, TextDelta
from cluster.pipeline.pipeline_client import PipelineError


@dataclass
class Stats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str = ""

    def line(self) -> str:
        rate = self.completion_tokens / self.seconds if self.seconds else 0.0
        return (f"[{self.prompt_tokens} prompt tokens, {self.completion_tokens} generated, "
                f"{rate:.1f} tokens/s, finish: {self.finish_reason}]")


def _payload(params: GenerationParams) -> dict:
    body = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "stream": True, "stream_options": {"include_usage": True}}
    if params.top_k:
        body["top_k"] = params.top_k
    if params.seed is not None:
        body["seed"] = params.seed
    return body


class HttpSource:
    def __init__(self, url: str, api_key: str | None = None):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def stream(self, params: GenerationParams, stats: Stats, *, messages: list[dict] | None = None,
                     prompt: str | None = None) -> AsyncIterator[str]:
        body = _payload(params)
        if messages is not None:
            body["messages"], path = messages, "/v1/chat/completions"
        else:
            body["prompt"], path = prompt, "/v1/completions"
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.post(self.url + path, json=body, headers=self.headers) as response:
                if response.status != 200:
                    detail = await response.text()
                    raise PipelineError(f"the cluster answered {response.status}: {detail}")
                async for raw in response.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise PipelineError(event["error"]["message"])
                    if event.get("usage"):
                        stats.prompt_tokens = event["usage"]["prompt_tokens"]
                        stats.completion_tokens = event["usage"]["completion_tokens"]
                    for choice in event.get("choices", []):
                        text = choice.get("delta", {}).get("content") if messages is not None else choice.get("text")
                        if text:
                            yield text
                        if choice.get("finish_reason"):
                            stats.finish_reason = choice["finish_reason"]
        stats.seconds = time.monotonic() - started


class LocalSource:
    def __init__(self, cluster: RunningCluster):
        self.cluster = cluster

    async def stream(self, params: GenerationParams, stats: Stats, *, messages: list[dict] | None = None,
                     prompt: str | None = None) -> AsyncIterator[str]:
        tokenizer = self.cluster.engine.tokenizer
        if messages is not None and tokenizer.has_chat_template:
            ids = tokenizer.encode_chat(messages)
        else:
            ids = tokenizer.encode_text(prompt if prompt is not None else "\n".join(m["content"] for m in messages or []))
        started = time.monotonic()
        async for event in self.cluster.engine.text(ids, params):
            if isinstance(event, TextDelta):
                yield event.text
            elif isinstance(event, Finish):
                stats.prompt_tokens, stats.completion_tokens = event.prompt_tokens, event.completion_tokens
                stats.finish_reason = event.reason
        stats.seconds = time.monotonic() - started
